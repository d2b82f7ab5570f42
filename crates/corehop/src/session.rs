//! Work the controller runs on a lab host while a migration happens: probes and an attached
//! UE, each on a thread that has entered that host's network namespace.
use anyhow::{bail, Result};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside lab host `host`'s network namespace.
pub fn on_host<T: Send + 'static>(
    host: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> JoinHandle<Result<T>> {
    let ns = lab::net::host_ns(host);
    std::thread::spawn(move || {
        lab::net::enter_netns(&ns)?;
        f()
    })
}

pub fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?
}

/// One UE attached from host `ran` through the lab's EPC, pinging the `pdn` host and probing
/// S1AP every 10 ms until [`UeSession::finish`].
pub struct UeSession {
    stop: tokio::sync::oneshot::Sender<()>,
    ran: JoinHandle<Result<ran::Report>>,
}

impl UeSession {
    /// Returns once the UE is attached.
    pub fn start(spec: &lab::spec::LabSpec) -> Result<UeSession> {
        UeSession::start_many(spec, 1, 10, Duration::from_secs(20))
    }

    /// `ues` UEs pinging every `ping_ms` (the S1AP probe every 100 ms with more than one);
    /// returns once all are attached, or fails after `within`.
    pub fn start_many(
        spec: &lab::spec::LabSpec,
        ues: usize,
        ping_ms: u64,
        within: Duration,
    ) -> Result<UeSession> {
        let subscribers = lab::paths::host_run_dir("ran").join("subscribers.csv");
        std::fs::write(&subscribers, crate::nf::default_subscribers_csv())?;
        let cfg = ran::Config {
            s1u_address: spec.host("ran")?.addr,
            ues,
            subscribers,
            ping_target: spec.host("pdn")?.addr,
            ping_interval_ms: ping_ms,
            cp_probe_interval_ms: if ues == 1 { 10 } else { 100 },
            duration_ms: None,
            ..Default::default()
        };
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let (ptx, mut prx) = tokio::sync::watch::channel(ran::Progress::default());
        let ran = on_host("ran", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(ran::run_with_progress(
                cfg,
                async {
                    let _ = rx.await;
                },
                ptx,
            ))
        });
        let session = UeSession { stop, ran };
        let deadline = Instant::now() + within;
        loop {
            let p = prx.borrow_and_update().clone();
            if p.attach_phase_over() && p.attached == p.ues {
                return Ok(session);
            }
            if p.attach_phase_over() || session.ran.is_finished() || Instant::now() > deadline {
                let r = session.finish();
                bail!("the UEs did not attach: {:?}", r.map(|r| r.attach_failures));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Detaches the UE and returns what it saw.
    pub fn finish(self) -> Result<ran::Report> {
        let _ = self.stop.send(());
        join(self.ran)
    }
}
