//! PostCopy's memory in flight: the source's page server and the destination's pull.
use super::*;

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

    /// Ends whatever PostCopy of `name` is still in flight here: a source's page server gets
    /// a moment to finish serving (the destination may still be pulling), then is stopped.
    pub(super) fn end_lazy(&self, name: &str) {
        match lock(&self.lazy).remove(name) {
            Some(Lazy::Serving(thread, criu)) => {
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
