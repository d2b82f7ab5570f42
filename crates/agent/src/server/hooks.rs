//! Function-specific steps around a dump and a restore, for the SPGW: CRIU cannot carry a
//! TUN fd in a namespace runc treats as external, so the function lets go of it before the
//! freeze and re-attaches to the device the GTP Module Initializer pre-created; its GTP
//! tunnel list is recorded while frozen, for a recovery from that image.
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
            .runc
            .state(name)
            .map(|s| s.pid)
            .with_context(|| format!("{name} is not running"))?;
        self.runc.kill(name, release)?;
        let deadline = Instant::now() + Duration::from_secs(3);
        // The fd table has no change notification; the function closes it within a few ms.
        while holds_tun(pid) {
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
        let pid = self.runc.state(name).map(|s| s.pid).unwrap_or(0);
        match std::fs::read(TunnelListSpec::host_path(pid, &tl.file)) {
            Ok(b) => std::fs::write(images.join(TUNNELS_META), b)?,
            Err(e) => tracing::warn!("{name}: no tunnel list to record: {e}"),
        }
        Ok(())
    }

    /// After a restore (or a leave-running dump, or a failed one): the function takes back
    /// its TUN device (the second checkpoint signal). On a recovery from an older image it
    /// is first handed the current tunnel list, which it adopts on that signal; a migrated
    /// function's restored memory already holds the list it had at the freeze.
    pub(super) fn after_restore(
        &self,
        name: &str,
        spec: &ContainerSpec,
        images: &Path,
        recovery: bool,
    ) -> Result<()> {
        if let Some(sgi) = &spec.sgi {
            // The restored namespace holds conntrack entries of the UE flows (seen with
            // CRIU 4.2 through runc) without their NAT bindings: packets matching them would
            // leave un-masqueraded. Flushed, the next packet of each flow is NATed afresh.
            lab::nl::flush_conntrack(&self.netns(name))
                .with_context(|| format!("cannot flush conntrack for {}", sgi.name))?;
        }
        let handed = match (&spec.tunnel_list, recovery) {
            (Some(tl), true) => self.hand_tunnel_list(name, tl, images)?,
            _ => None,
        };
        self.after_thaw(name, spec);
        if let (Some(tl), Some(list)) = (&spec.tunnel_list, handed) {
            self.await_tunnel_list(name, tl, &list);
        }
        Ok(())
    }

    /// The function runs again where it was dumped: it takes back what it let go.
    pub(super) fn after_thaw(&self, name: &str, spec: &ContainerSpec) {
        if let Some((_, reattach)) = &spec.checkpoint_signals {
            if let Err(e) = self.runc.kill(name, reattach) {
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
    ) -> Result<Option<serde_json::Value>> {
        let from_master =
            self.cfg
                .master
                .and_then(|m| match crate::master::get(m, &self.cfg.token, name) {
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
        let pid = self
            .runc
            .state(name)
            .map(|s| s.pid)
            .context("restored function is not running")?;
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
        let Some(pid) = self.runc.state(name).map(|s| s.pid) else {
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

fn holds_tun(pid: i64) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new("/dev/net/tun")))
}
