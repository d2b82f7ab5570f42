//! Table 1, destination failure during restore: what an interrupted restore left is removed.
use super::*;

/// Marks a container whose restore has begun but not finished on this host.
pub(super) const RESTORING: &str = "restoring";

impl Agent {
    /// When this agent died mid-restore, the controller resumed the function at its source.
    /// Whatever the interrupted restore left here (a process, its service IP) must not run
    /// beside it: remove it before serving.
    pub(super) fn fence_interrupted_restores(&self) {
        let Ok(list) = std::fs::read_dir(self.cfg.state.join("containers")) else {
            return;
        };
        for e in list.flatten() {
            if e.path().join(RESTORING).exists() {
                let name = e.file_name().to_string_lossy().into_owned();
                tracing::warn!(
                    "{name}: its restore here was interrupted; removing it (the source has it)"
                );
                // Off the fabric before it is killed: its FIN or RST would reach the peers
                // the source now serves and end their connections.
                net::unplug(&self.cfg.host, &port(&name));
                if let Err(err) = self.remove(&name) {
                    tracing::error!("{name}: cannot remove the interrupted restore: {err:#}");
                }
            }
        }
    }
}
