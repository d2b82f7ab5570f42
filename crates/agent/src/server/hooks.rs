//! Function-specific steps around a dump and a restore, for the SPGW (its TUN file moves
//! with it without its help, see runtime::tun): its GTP tunnel list is recorded while
//! frozen, and handed to an SPGW recovered from that image.
use super::*;

/// File in an image round holding the tunnel list at checkpoint time.
const TUNNELS_META: &str = "corehop-tunnels.json";
/// Makes the function adopt a tunnel list left in its sync file (see crates/spgw).
const ADOPT_SIGNAL: &str = "HUP";

impl Agent {
    /// Frozen, before CRIU dumps: the local reactive Tunnel List Handler records the list
    /// with the image, read now so that it matches the memory being dumped.
    pub(super) fn while_frozen(
        &self,
        name: &str,
        spec: &ContainerSpec,
        images: &Path,
    ) -> Result<()> {
        let Some(tl) = &spec.tunnel_list else {
            return Ok(());
        };
        let pid = self.containers.state(name).map(|s| s.pid).unwrap_or(0);
        match std::fs::read(TunnelListSpec::host_path(pid, &tl.file)) {
            Ok(b) => std::fs::write(images.join(TUNNELS_META), b)?,
            Err(e) => tracing::warn!("{name}: no tunnel list to record: {e}"),
        }
        Ok(())
    }

    /// At CRIU's `network-unlock` of a restore: the sockets exist, the tasks `pid` has
    /// not run yet. The SGi namespace's conntrack is flushed (CRIU restores the UE flows'
    /// entries without their NAT bindings: packets matching them would leave
    /// un-masqueraded; flushed, each flow is NATed afresh). On a recovery from an older
    /// image the current tunnel list is handed over (a migrated function's restored memory
    /// already holds the list it had at the freeze), with the signal that makes the
    /// function adopt it queued, so it does first thing. Returns the list handed over.
    pub(super) fn before_resume(
        &self,
        name: &str,
        spec: &ContainerSpec,
        images: &Path,
        pid: i64,
        recovery: bool,
    ) -> Result<Option<serde_json::Value>> {
        if let Some(sgi) = &spec.sgi {
            lab::nl::flush_conntrack(&self.netns(name))
                .with_context(|| format!("cannot flush conntrack for {}", sgi.name))?;
        }
        let handed = match (&spec.tunnel_list, recovery) {
            (Some(tl), true) => self.hand_tunnel_list(name, tl, images, pid)?,
            _ => None,
        };
        if handed.is_some() {
            runtime::containers::signal_pid(pid, ADOPT_SIGNAL)?;
        }
        Ok(handed)
    }

    /// After the restore: waits (briefly) until a handed tunnel list is adopted.
    pub(super) fn after_resume(
        &self,
        name: &str,
        spec: &ContainerSpec,
        handed: Option<serde_json::Value>,
    ) {
        if let (Some(tl), Some(list)) = (&spec.tunnel_list, handed) {
            self.await_tunnel_list(name, tl, &list);
        }
    }

    /// Leaves the list a recovered function must adopt in its sync file: the master's, which
    /// is current (global proactive), or else the one recorded at checkpoint (local reactive).
    fn hand_tunnel_list(
        &self,
        name: &str,
        tl: &TunnelListSpec,
        images: &Path,
        pid: i64,
    ) -> Result<Option<serde_json::Value>> {
        let from_master =
            self.cfg
                .master
                .and_then(|m| match crate::master::get(m, &self.cfg.tls, name) {
                    Ok(e) => e.map(|e| e.tunnels),
                    Err(e) => {
                        tracing::warn!(
                            "{name}: tunnel master unreachable, using the checkpoint's list: {e:#}"
                        );
                        None
                    }
                });
        let (list, source) = match from_master {
            Some(l) => (l, "the tunnel master"),
            None => match std::fs::read(images.join(TUNNELS_META)) {
                Ok(b) => (
                    serde_json::from_slice(&b).context("corrupt tunnel list in the checkpoint")?,
                    "the checkpoint",
                ),
                Err(_) => return Ok(None),
            },
        };
        std::fs::write(
            TunnelListSpec::host_path(pid, &tl.sync_file),
            serde_json::to_vec(&list)?,
        )?;
        tracing::info!(
            "{name}: tunnel list of {} tunnels from {source}",
            list.as_array().map_or(0, |a| a.len())
        );
        Ok(Some(list))
    }

    /// Waits (briefly) until the function's own list equals the one it was handed.
    fn await_tunnel_list(&self, name: &str, tl: &TunnelListSpec, want: &serde_json::Value) {
        let Some(pid) = self.containers.state(name).map(|s| s.pid) else {
            return;
        };
        let path = TunnelListSpec::host_path(pid, &tl.file);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let now: Option<serde_json::Value> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if now.as_ref() == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!("{name} has not adopted the tunnel list it was handed within 2 s");
    }
}
