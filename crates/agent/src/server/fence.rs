//! What a dead agent left behind, dealt with before its successor serves: an interrupted
//! restore is removed (Table 1, destination failure during restore), the packet holds it
//! started are ended, and the migration targets it had prepared are removed.
use super::*;

/// Marks a container whose restore has begun but not finished on this host.
pub(super) const RESTORING: &str = "restoring";

impl Agent {
    pub(super) fn fence(&self) {
        // Off the fabric first, whatever does not run here (a migration target, prepared
        // or holding its images): once its hold ends, a packet reaching such a namespace
        // would draw a reset from a namespace without sockets.
        for c in self.ps().unwrap_or_default() {
            let restoring = self.dir(&c.name).is_ok_and(|d| d.join(RESTORING).exists());
            if c.state != "running" || restoring {
                let _ = self.link(&c.name, false);
            }
        }
        self.end_orphan_holds();
        self.fence_interrupted_restores();
        self.remove_stale_targets();
        self.resume_orphan_lazy_dumps();
    }

    /// PostCopy sources whose CRIU still holds them frozen for a page server nobody will
    /// read from (the migration failed with this agent): they run here again.
    fn resume_orphan_lazy_dumps(&self) {
        let Ok(all) = self.ps() else { return };
        for c in all {
            let Ok(dir) = self.dir(&c.name) else { continue };
            if !dir.join(lazy::PAGE_SERVER).exists() {
                continue;
            }
            if !self.containers.traced_by_criu(&c.name) {
                let _ = std::fs::remove_file(dir.join(lazy::PAGE_SERVER));
                continue;
            }
            tracing::warn!(
                "{}: CRIU still holds it for a PostCopy that failed; resuming it",
                c.name
            );
            if let Err(e) = self.resume_orphan_lazy(&c.name, &dir) {
                tracing::error!("{}: cannot resume it: {e:#}", c.name);
            }
        }
    }

    /// A hold is a process of its own so that it outlives its agent (`lab::hold::serve`),
    /// but nothing will release what it holds now: it would keep whatever reaches its
    /// namespace forever (a client's packets, once that link is up again).
    fn end_orphan_holds(&self) {
        let ours = self.netns("");
        let holds = lab::pids_where(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                args.get(1) == Some(&&b"hold"[..])
                    && args
                        .get(2)
                        .is_some_and(|ns| ns.starts_with(ours.as_bytes()))
            })
        });
        for pid in holds {
            tracing::warn!("ending the packet hold (pid {pid}) a previous agent left");
            // SAFETY: kill(2) on a pid just read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// A target prepared by a dead agent: the migration it was for failed with that agent
    /// (its controller lost the connection), and a retry prepares afresh.
    fn remove_stale_targets(&self) {
        let Ok(all) = self.ps() else { return };
        for c in all.into_iter().filter(|c| c.state == "prepared") {
            tracing::warn!("{}: prepared here by a previous agent; removing it", c.name);
            if let Err(e) = self.remove(&c.name) {
                tracing::error!("{}: cannot remove it: {e:#}", c.name);
            }
        }
    }

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
