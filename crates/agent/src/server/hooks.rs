//! Function-specific steps around a dump and a restore, for the SPGW: with checkpoint
//! signals the function lets go of its TUN fd before the freeze and re-attaches to the
//! device the GTP Module Initializer pre-created (without them its TUN file moves with it,
//! see runtime::tun); its GTP tunnel list is recorded while frozen, for a recovery from
//! that image.
use super::*;

/// File in an image round holding the tunnel list at checkpoint time.
const TUNNELS_META: &str = "corehop-tunnels.json";

impl Agent {
    /// Before the freeze, the function still running: it lets go of its TUN fd (the first of
    /// its checkpoint signals) and this waits until it has, since a dump that meets one fails.
    pub(super) fn before_freeze(&self, name: &str, spec: &ContainerSpec) -> Result<()> {
        let Some((release, _)) = &spec.checkpoint_signals else {
            return Ok(());
        };
        let pid = self
            .containers
            .state(name)
            .map(|s| s.pid)
            .with_context(|| format!("{name} is not running"))?;
        self.containers.kill(name, release)?;
        let deadline = Instant::now() + Duration::from_secs(3);
        // The fd table has no change notification; the function closes it within a few ms.
        while !runtime::tun::tun_fds(pid).is_empty() {
            if Instant::now() > deadline {
                bail!("{name} did not release its TUN device within 3 s of {release}");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

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
    /// already holds the list it had at the freeze). The re-attach signal is queued, so
    /// the function takes its TUN device back first thing. Returns the list handed over.
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
        if let Some((_, reattach)) = &spec.checkpoint_signals {
            runtime::containers::signal_pid(pid, reattach)?;
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

    /// The function runs again where it was dumped: it takes back what it let go.
    pub(super) fn after_thaw(&self, name: &str, spec: &ContainerSpec) {
        if let Some((_, reattach)) = &spec.checkpoint_signals {
            if let Err(e) = self.containers.kill(name, reattach) {
                tracing::warn!("could not tell {name} to re-attach: {e:#}");
            }
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
