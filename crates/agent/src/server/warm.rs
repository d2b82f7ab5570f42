//! What is started ahead of a dump or a restore, so that the frozen window starts no
//! process: a `criu swrk` waiting for the next dump of each running function, and one
//! holding a prepared function's namespace and stdio pipe for its restore.
use super::*;
use runtime::tun::TunDevice;

/// The NFQUEUE queue number of a prepared function's hold (one per namespace).
const HOLD_QUEUE: u16 = 0;

/// A `corehop hold` process and its answers.
pub(super) struct HoldProcess {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for HoldProcess {
    /// A hold not released (the migration was abandoned): what it held is dropped.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Agent {
    /// Starts the CRIU of `name`'s next dump (after a run, a restore, a leave-running dump:
    /// the function is running, so this is outside any frozen window; see `handle`).
    pub(super) fn warm_dump(&self, name: &str) {
        match self.containers.warm_dump() {
            Ok(s) => lock(&self.warm).entry(name.into()).or_default().dump = Some(s),
            Err(e) => tracing::warn!("{name}: cannot start CRIU for its next dump: {e:#}"),
        }
    }

    /// The CRIU for a dump of `name`: the warm one, or (if none, or it died) one started now.
    pub(super) fn take_dump_swrk(&self, name: &str) -> Result<runtime::criu_rpc::Swrk> {
        let warm = lock(&self.warm).get_mut(name).and_then(|w| w.dump.take());
        if let Some(mut s) = warm {
            if s.alive() {
                return Ok(s);
            }
        }
        self.containers.warm_dump()
    }

    /// A prepared `name`: its CRIU for the restore, holding the namespace, a log pipe, the
    /// files of the TUN devices it holds (`tuns`, made already) and the rootfs mounted
    /// where CRIU wants it.
    pub(super) fn warm_restore(&self, name: &str, dir: &Path, tuns: &[TunDevice]) -> Result<()> {
        let w = self.new_restore(name, dir, tuns)?;
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

    /// The CRIU for a restore of `name` whose images hold the TUN devices `tuns`: the warm
    /// one if it has their files, or (a recovery, a rollback at the source, devices other
    /// than those it was prepared with) one started now, after the devices are made.
    pub(super) fn take_restore(
        &self,
        name: &str,
        dir: &Path,
        tuns: &[TunDevice],
    ) -> Result<runtime::containers::WarmRestore> {
        let ns = self.netns(name);
        let warm = lock(&self.warm)
            .get_mut(name)
            .and_then(|w| w.restore.take());
        if let Some(mut w) = warm {
            let held = w.tun_devices();
            let same_files = held.len() == tuns.len()
                && tuns.iter().all(|d| held.iter().any(|h| h.same_file(d)));
            if w.alive() && same_files {
                // Addresses or routes changed since it was prepared: netlink only.
                if !tuns.iter().all(|d| held.contains(d)) {
                    for d in tuns {
                        runtime::tun::recreate(&ns, d)?;
                    }
                }
                return Ok(w);
            }
            if !same_files {
                tracing::warn!("{name}: its TUN devices are not those it was prepared with; its CRIU starts now, inside the frozen window");
            }
            w.discard();
        }
        for d in tuns {
            runtime::tun::recreate(&ns, d)?;
        }
        self.new_restore(name, dir, tuns)
    }

    fn new_restore(
        &self,
        name: &str,
        dir: &Path,
        tuns: &[TunDevice],
    ) -> Result<runtime::containers::WarmRestore> {
        let ns = self.netns(name);
        let files = tuns
            .iter()
            .map(|d| Ok((d.clone(), runtime::tun::open(&ns, d)?)))
            .collect::<Result<Vec<_>>>()?;
        let (log, _first) = runtime::runc::log_pipe(&dir.join("log"))?;
        self.containers.warm_restore(
            &dir.join("bundle").join("rootfs"),
            &dir.join("criu-root"),
            &self.netns_path(name),
            std::fs::File::from(std::os::fd::OwnedFd::from(log)),
            files,
        )
    }

    /// Holds what arrives for a prepared `name` (NFQUEUE queue 0 of its namespace; the rule
    /// lets packets pass when nothing holds them).
    pub(super) fn hold(&self, name: &str) -> Result<()> {
        use std::io::BufRead;
        let ns = self.netns(name);
        lab::hold::install_rule(&ns, runtime::sgi::SERVICE_IF, HOLD_QUEUE)?;
        // A process of its own (`corehop hold`), which outlives this agent: see
        // `lab::hold::serve`.
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["hold", &ns, &HOLD_QUEUE.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start the packet hold")?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("no hold stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the packet hold did not start");
        }
        let h = HoldProcess { child, out };
        lock(&self.warm).entry(name.into()).or_default().hold = Some(h);
        Ok(())
    }

    /// Hands what was held for `name` to its (now restored) sockets; `None` if nothing held.
    pub(super) fn release(&self, name: &str) -> Result<Option<u64>> {
        use std::io::{BufRead, Write};
        let Some(mut h) = lock(&self.warm).get_mut(name).and_then(|w| w.hold.take()) else {
            return Ok(None);
        };
        let stdin = h.child.stdin.as_mut().context("no hold stdin")?;
        stdin.write_all(b"release\n")?;
        let mut line = String::new();
        h.out.read_line(&mut line)?;
        let mut words = line.split_whitespace().skip(1);
        let packets = words
            .next()
            .and_then(|p| p.parse().ok())
            .context("the hold answered nothing")?;
        if words.next() == Some("true") {
            tracing::warn!("{name}: the hold overflowed; some packets passed before the restore");
        }
        let _ = h.child.wait();
        Ok(Some(packets))
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
