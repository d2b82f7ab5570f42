//! What is started ahead of a dump or a restore, so that the frozen window starts no
//! process: a `criu swrk` waiting for the next dump of each running function, and one
//! holding a prepared function's namespace and stdio pipe for its restore.
use super::*;

/// The NFQUEUE queue number of a prepared function's hold (one per namespace).
const HOLD_QUEUE: u16 = 0;

impl Agent {
    /// Starts the CRIU of `name`'s next dump (after a run, a restore, a leave-running dump:
    /// the function is running, so this is outside any frozen window).
    /// Started from a thread of its own: the answer to the restore that resumed the
    /// function must not wait for a process start.
    pub(super) fn warm_dump(&self, name: &str) {
        let (containers, warm, name) =
            (self.containers.clone(), self.warm.clone(), name.to_string());
        std::thread::spawn(move || match containers.warm_dump() {
            Ok(s) => lock(&warm).entry(name).or_default().dump = Some(s),
            Err(e) => tracing::warn!("{name}: cannot start CRIU for its next dump: {e:#}"),
        });
    }

    /// The CRIU for a dump of `name`: the warm one, or (if none) one started now.
    pub(super) fn take_dump_swrk(&self, name: &str) -> Result<runtime::criu_rpc::Swrk> {
        match lock(&self.warm).get_mut(name).and_then(|w| w.dump.take()) {
            Some(s) => Ok(s),
            None => self.containers.warm_dump(),
        }
    }

    /// A prepared `name`: its CRIU for the restore, holding the namespace, a log pipe and
    /// the rootfs mounted where CRIU wants it.
    pub(super) fn warm_restore(&self, name: &str, dir: &Path) -> Result<()> {
        let w = self.new_restore(name, dir)?;
        if let Some(old) = lock(&self.warm)
            .entry(name.into())
            .or_default()
            .restore
            .replace(w)
        {
            old.discard();
        }
        Ok(())
    }

    /// The CRIU for a restore of `name`: the warm one, or (a recovery, a rollback at the
    /// source) one started now.
    pub(super) fn take_restore(
        &self,
        name: &str,
        dir: &Path,
    ) -> Result<runtime::containers::WarmRestore> {
        match lock(&self.warm)
            .get_mut(name)
            .and_then(|w| w.restore.take())
        {
            Some(w) => Ok(w),
            None => self.new_restore(name, dir),
        }
    }

    fn new_restore(&self, name: &str, dir: &Path) -> Result<runtime::containers::WarmRestore> {
        let (log, _first) = runtime::runc::log_pipe(&dir.join("log"))?;
        self.containers.warm_restore(
            &dir.join("bundle").join("rootfs"),
            &dir.join("criu-root"),
            &self.netns_path(name),
            std::fs::File::from(std::os::fd::OwnedFd::from(log)),
        )
    }

    /// Holds what arrives for a prepared `name` (NFQUEUE queue 0 of its namespace; the rule
    /// lets packets pass when nothing holds them).
    pub(super) fn hold(&self, name: &str) -> Result<()> {
        let ns = self.netns(name);
        lab::hold::install_rule(&ns, runtime::sgi::SERVICE_IF, HOLD_QUEUE)?;
        let h = lab::hold::Hold::start(&ns, HOLD_QUEUE)?;
        lock(&self.warm).entry(name.into()).or_default().hold = Some(h);
        Ok(())
    }

    /// Hands what was held for `name` to its (now restored) sockets; `None` if nothing held.
    pub(super) fn release(&self, name: &str) -> Result<Option<u64>> {
        let Some(h) = lock(&self.warm).get_mut(name).and_then(|w| w.hold.take()) else {
            return Ok(None);
        };
        let st = h.release()?;
        if st.overrun {
            tracing::warn!("{name}: the hold overflowed; some packets passed before the restore");
        }
        Ok(Some(st.packets as u64))
    }

    /// Stops whatever was started ahead for `name`.
    pub(super) fn discard_warm(&self, name: &str) {
        if let Some(w) = lock(&self.warm).remove(name) {
            if let Some(r) = w.restore {
                r.discard();
            }
        }
    }
}
