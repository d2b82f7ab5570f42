//! PostCopy's memory in flight: the source's page server and the destination's pull.
use super::*;

/// A PostCopy source's page server address, in the function's folder while it serves.
pub(super) const PAGE_SERVER: &str = "page-server";

/// How long a lazily restored function may take to pull its last page.
const LAZY_TIMEOUT: Duration = Duration::from_secs(120);

impl Agent {
    /// Waits (up to `LAZY_TIMEOUT`) until a lazily restored function has all its memory.
    pub(super) fn await_pages(&self, name: &str) -> Result<OpStats> {
        let done = match lock(&self.lazy).get(name) {
            Some(Lazy::Pulling { restored, done }) => (*restored, done.clone()),
            _ => bail!("{name} was not restored lazily on {}", self.cfg.host),
        };
        let deadline = Instant::now() + LAZY_TIMEOUT;
        loop {
            if let Some((at, outcome)) = lock(&done.1).take() {
                lock(&self.lazy).remove(name);
                outcome.map_err(anyhow::Error::msg)?;
                return Ok(OpStats {
                    ms: at.duration_since(done.0).as_secs_f64() * 1e3,
                    bytes: 0,
                    ..Default::default()
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} still misses pages {} s after its restore",
                    LAZY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets the source of a PostCopy that failed before any destination pulled its memory
    /// run again: CRIU's page server gets a request cut short, serving fails, and CRIU
    /// resumes the tasks it holds frozen instead of killing them (`cr_dump_finish`).
    pub(super) fn resume_lazy(&self, name: &str) -> Result<()> {
        let (thread, at) = match lock(&self.lazy).remove(name) {
            Some(Lazy::Serving(thread, _, at)) => (thread, at),
            other => {
                if let Some(o) = other {
                    lock(&self.lazy).insert(name.into(), o);
                }
                bail!("{name} has no PostCopy page server on {}", self.cfg.host)
            }
        };
        self.resume_from_page_server(name, at, || match thread.join() {
            Ok(Ok(())) => bail!(
                "{name}'s memory had gone to the destination already (its page server finished)"
            ),
            Ok(Err(e)) => {
                tracing::info!("{name}: CRIU's page server gave up as asked: {e:#}");
                Ok(())
            }
            Err(_) => bail!("{name}: the thread serving its pages panicked"),
        })
    }

    /// A PostCopy source whose agent died after the lazy dump: its CRIU still serves the
    /// frozen tasks' pages to nobody. It is told to give up, as [`Agent::resume_lazy`] does.
    pub(super) fn resume_orphan_lazy(&self, name: &str, dir: &Path) -> Result<()> {
        let at: SocketAddr = std::fs::read_to_string(dir.join(PAGE_SERVER))?
            .trim()
            .parse()?;
        self.resume_from_page_server(name, at, || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.containers.traced_by_criu(name) {
                if Instant::now() > deadline {
                    bail!("CRIU still holds {name} 10 s after its page server was told to give up");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    }

    /// Frozen before CRIU lets them go, so their TCP sockets leave repair mode before they
    /// run (a socket read in repair mode fails, and the function closes it); `released`
    /// returns once CRIU has let go. Then thawed, and back on the fabric.
    fn resume_from_page_server(
        &self,
        name: &str,
        at: SocketAddr,
        released: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let (dir, spec) = self.existing(name)?;
        self.containers.freeze(name)?;
        let resumed = (|| {
            use std::io::Write;
            if let Ok(mut s) = TcpStream::connect_timeout(&at, Duration::from_secs(2)) {
                // One byte of a page-server header, then EOF: a short read fails the serve.
                s.write_all(&[0])?;
            }
            released()?;
            if self
                .containers
                .state(name)
                .is_none_or(|s| s.status == "stopped")
            {
                bail!("{name} did not survive its page server giving up");
            }
            let sockets = self.containers.end_tcp_repair(name);
            tracing::info!("{name}: {sockets} TCP sockets out of repair mode; it runs again");
            Ok(())
        })();
        let thawed = self.containers.thaw(name);
        resumed?;
        thawed?;
        let _ = std::fs::remove_file(dir.join(PAGE_SERVER));
        self.plug(name)?;
        self.apply_quota(name, &spec);
        Ok(())
    }

    /// Ends whatever PostCopy of `name` is still in flight here: a source's page server gets
    /// a moment to finish serving (the destination may still be pulling), then is stopped.
    pub(super) fn end_lazy(&self, name: &str) {
        match lock(&self.lazy).remove(name) {
            Some(Lazy::Serving(thread, criu, _)) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !thread.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if !thread.is_finished() {
                    // SAFETY: kill(2) of the CRIU this agent started for the dump.
                    unsafe { libc::kill(criu as i32, libc::SIGKILL) };
                }
                if let Ok(Err(e)) = thread.join() {
                    tracing::warn!("{name}: CRIU's page server ended with: {e:#}");
                }
            }
            Some(Lazy::Pulling { .. }) | None => {}
        }
    }
}
