//! Work the controller runs on a lab host while a migration happens: probes and an attached
//! UE, each on a thread that has entered that host's network namespace.
use anyhow::{bail, Context, Result};
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
    quiet: tokio::sync::watch::Sender<bool>,
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
        let cfg = ran::Config {
            ping_interval_ms: ping_ms,
            cp_probe_interval_ms: if ues == 1 { 10 } else { 100 },
            ..ran_config(spec, ues)?
        };
        UeSession::start_with(cfg, within)
    }

    /// `ues` UEs running the traffic model `traffic` (a built-in name or a file) with
    /// `seed`, with downlink data sent from the `pdn` host; returns once all attached.
    pub fn start_traffic(
        spec: &lab::spec::LabSpec,
        ues: usize,
        traffic: &str,
        seed: u64,
        within: Duration,
    ) -> Result<UeSession> {
        let pdn = lab::net::host_ns("pdn");
        route_downlink(&pdn)?;
        let cfg = ran::Config {
            ping_interval_ms: 1000,
            traffic: traffic.to_string(),
            seed,
            downlink_from_netns: Some(pdn),
            ..ran_config(spec, ues)?
        };
        UeSession::start_with(cfg, within)
    }

    fn start_with(cfg: ran::Config, within: Duration) -> Result<UeSession> {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let (ptx, mut prx) = tokio::sync::watch::channel(ran::Progress::default());
        let (quiet, quiet_rx) = tokio::sync::watch::channel(false);
        let ran = on_host("ran", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(ran::run_with_control(
                cfg,
                async {
                    let _ = rx.await;
                },
                ptx,
                quiet_rx,
            ))
        });
        let session = UeSession { stop, quiet, ran };
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

    /// From now on the UEs start nothing new; what runs completes (see
    /// `ran::run_with_control`).
    pub fn quiesce(&self) {
        let _ = self.quiet.send(true);
    }

    /// Detaches the UE and returns what it saw.
    pub fn finish(self) -> Result<ran::Report> {
        let _ = self.stop.send(());
        join(self.ran)
    }
}

/// The RAN on the lab's `ran` host towards its EPC, with the HSS's test USIMs.
fn ran_config(spec: &lab::spec::LabSpec, ues: usize) -> Result<ran::Config> {
    let subscribers = lab::paths::host_run_dir("ran").join("subscribers.csv");
    std::fs::write(&subscribers, crate::nf::default_subscribers_csv())?;
    Ok(ran::Config {
        s1u_address: spec.host("ran")?.addr,
        ues,
        subscribers,
        ping_target: spec.host("pdn")?.addr,
        duration_ms: None,
        ..Default::default()
    })
}

/// Uplink needs no route back to the UE pool (the SGi masquerades); downlink sent from the
/// host of namespace `ns` does: towards the SPGW's service IP.
pub fn route_downlink(ns: &str) -> Result<()> {
    let spgw = spgw::Config::default();
    let via = spgw.s11_address.to_string();
    lab::sh::run(
        "ip",
        &["-n", ns, "route", "replace", &spgw.ue_pool, "via", &via],
    )
    .with_context(|| format!("route from {ns} to the UE pool"))?;
    Ok(())
}
