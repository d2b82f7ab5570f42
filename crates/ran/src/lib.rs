//! corehop's RAN emulator: one or several eNBs with N UEs, what the UEs of the paper's
//! testbed do and what they notice when a core function migrates.
//!
//! [`run`] brings up one S1-MME association per eNB (SCTP over UDP, S1 Setup once each;
//! `enbs` in the config, UEs spread over them), attaches the
//! UEs (Initial UE Message with ATTACH REQUEST + PDN CONNECTIVITY REQUEST, EPS AKA on
//! the USIM side, security mode, Initial Context Setup with the eNB's S1-U TEID, ATTACH
//! COMPLETE), then
//! - pings from every UE's IP to the ping target through its GTP-U tunnel (one UDP
//!   socket on 2152, replies demultiplexed by TEID; GTP-U Echo answered), and
//! - probes S1-MME with eNB Configuration Update → Acknowledge round trips,
//!
//! until the `stop` future completes or `duration_ms` passes; then every UE detaches.
//! With `idle_after_ms` a UE without signalling that long is released to ECM-IDLE
//! (UE Context Release Request, user inactivity); its next ping, or a PAGING for its
//! S-TMSI, brings it back with a SERVICE REQUEST; after a SERVICE REJECT it attaches
//! again. The report counts these in [`Idle`].
//! A traffic model ([`traffic::Model`], config `traffic`) makes a busy RAN: per UE,
//! uplink and downlink data (the downlink sent from the pdn host's netns,
//! `downlink_from_netns`, so that idle UEs are paged), TAUs, handovers between the eNBs
//! (`mobility.rs`), detach and re-attach, each procedure recorded with its latency in
//! [`Procedures`] ([`Procedures::within`] splits them by a migration's window). The
//! UE's NAS timers (T3410, T3417, T3421, T3430) retransmit or restart a procedure, so a
//! frozen core function delays procedures instead of failing them.
//! The [`Report`] carries per-UE results, the probe, failures (an Attach or
//! Authentication Reject is a per-UE result, not an error), and [`report::Recovery`]:
//! DP_GTP per UE and CP_S1-MME outages with run-relative and UNIX timestamps;
//! [`Recovery::within`] picks those overlapping a migration's downtime window.
//! [`run_with_progress`] also publishes live [`Progress`] (e.g. to start a migration
//! once every UE is attached).
//!
//! The UE's NAS and USIM are `proto_nas::UeNas` (keys from the subscriber CSV, read
//! with `hss::read_csv`); S1AP, SCTP over UDP and GTP-U are the proto crates. If the
//! association is lost the eNB re-establishes it with a new S1 Setup (counted in
//! `s1_setups`); the UEs are not re-attached then (their MME contexts belong to the old
//! association, so their detach is reported as failed).
//!
//! Malformed S1AP/NAS/GTP-U from the network is logged, counted and dropped.

pub mod config;
mod dataplane;
mod downlink;
mod idle;
mod mobility;
mod procedure;
pub mod report;
mod s1;
pub mod traffic;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info};

pub use config::{Config, EnbConfig, S1Transport};
pub use report::{
    AttachFailure, Clock, CpProbeReport, EnbReport, FailureKind, Idle, Outage, Percentiles,
    ProcedureKind, ProcedureRecord, ProcedureStats, ProcedureWindow, Procedures, Progress,
    Recovery, RecoveryWindow, Report, Series, UeRecovery, UeReport,
};

use dataplane::DataPlane;
use downlink::Downlink;
use procedure::{Log, Outcome, Shared};
use s1::{ProbeAnswer, S1};

/// Aborts the background tasks however `run` ends (error, cancellation).
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Runs the eNB and its UEs until `stop` completes (or `cfg.duration_ms` after the
/// attaches), detaches the UEs and reports. Errors are only for what makes the whole run
/// impossible: bad config or CSV, sockets, no association or S1 Setup.
pub async fn run(cfg: Config, stop: impl Future<Output = ()>) -> anyhow::Result<Report> {
    run_with_progress(cfg, stop, watch::channel(Progress::default()).0).await
}

/// [`run`], publishing [`Progress`] on `progress` as UEs attach (and when it stops).
pub async fn run_with_progress(
    cfg: Config,
    stop: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
) -> anyhow::Result<Report> {
    let (_quiet_tx, quiet) = watch::channel(false);
    run_with_control(cfg, stop, progress, quiet).await
}

/// [`run_with_progress`]; while `quiet` is true the UEs start nothing new: no model
/// events, no release for inactivity, a detached UE re-attaches. Procedures already
/// running complete, so the functions' views of the UEs can be compared meanwhile.
pub async fn run_with_control(
    cfg: Config,
    stop: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
    quiet: watch::Receiver<bool>,
) -> anyhow::Result<Report> {
    cfg.validate()?;
    progress.send_replace(Progress {
        ues: cfg.ues,
        ..Default::default()
    });

    let subs = hss::read_csv(&cfg.subscribers)
        .with_context(|| format!("subscribers file {}", cfg.subscribers.display()))?;
    let rows = subs
        .get(cfg.first_imsi_index..cfg.first_imsi_index.saturating_add(cfg.ues))
        .with_context(|| {
            format!(
                "{} has {} subscribers; ues = {} from first_imsi_index = {} needs {}",
                cfg.subscribers.display(),
                subs.len(),
                cfg.ues,
                cfg.first_imsi_index,
                cfg.first_imsi_index + cfg.ues
            )
        })?;
    let usims: Vec<proto_nas::Usim> = rows
        .iter()
        .map(|s| proto_nas::Usim {
            imsi: s.imsi.clone(),
            k: s.k,
            opc: s.opc,
            // The HSS hands out SQNs above the CSV's value; anything at or below it
            // is a replay to the USIM.
            sqn_ms: Some(s.sqn),
        })
        .collect();
    let plmn = cfg.plmn()?;
    let model = traffic::Model::resolve(&cfg.traffic).context("traffic")?;
    let clock = Clock::new();
    let ping_interval = Config::ms(cfg.ping_interval_ms);
    let enb_cfgs = cfg.enb_list(&model);
    let addrs: Vec<SocketAddr> = enb_cfgs
        .iter()
        .map(|e| SocketAddr::new(e.bind(), e.gtpu_port))
        .collect();
    let dp = DataPlane::bind(
        &addrs,
        clock,
        cfg.ping_target,
        cfg.ping_payload,
        ping_interval,
    )
    .await?;
    let downlink = match &cfg.downlink_from_netns {
        Some(ns) => Some(Arc::new(Downlink::start(ns, cfg.downlink_port)?)),
        None => None,
    };
    let mut enbs = Vec::new();
    let ids = Arc::new(std::sync::atomic::AtomicU32::new(1));
    for e in enb_cfgs {
        enbs.push(Arc::new(S1::new(&cfg, e, ids.clone())?));
    }
    tokio::pin!(stop);
    let mut clients = Vec::new();
    for s1 in &enbs {
        clients.push(tokio::select! {
            c = s1.connect(&cfg) => c?,
            _ = &mut stop => anyhow::bail!(
                "stopped before the S1 Setup of {} with {} completed", s1.enb.name, cfg.mme
            ),
        });
    }
    // The CP probe runs on the first eNB's association.
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let mut tasks = Tasks(vec![
        tokio::spawn(dp.clone().ping_loop(ping_interval)).abort_handle()
    ]);
    // Every dispatcher may pass probe answers on; only the first eNB's gets any.
    for (s1, client) in enbs.iter().zip(clients) {
        let probe = probe_tx.clone();
        tasks
            .0
            .push(tokio::spawn(s1.clone().dispatch(cfg.clone(), client, probe)).abort_handle());
    }
    for i in 0..dp.sockets() {
        tasks
            .0
            .push(tokio::spawn(dp.clone().recv_loop(i)).abort_handle());
    }
    drop(probe_tx);
    let s1 = enbs[0].clone();

    let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
    let probe = (cfg.cp_probe_interval_ms > 0).then(|| {
        tokio::spawn(cp_probe(
            s1.clone(),
            clock,
            Config::ms(cfg.cp_probe_interval_ms),
            Config::ms(cfg.cp_probe_timeout_ms),
            probe_rx,
            stop_rx.clone(),
        ))
    });
    if let Some(p) = &probe {
        tasks.0.push(p.abort_handle());
    }

    let progress = Arc::new(progress);
    let mut attempts = progress.subscribe();
    let log = Arc::new(Log::default());
    let enbs = Arc::new(enbs);
    let sh = Shared {
        progress: progress.clone(),
        cfg: Arc::new(cfg.clone()),
        model: Arc::new(model),
        enbs: enbs.clone(),
        dp: dp.clone(),
        downlink,
        log: log.clone(),
        clock,
        plmn,
        attach_slots: Arc::new(Semaphore::new(cfg.attach_concurrency)),
        stop: stop_rx,
        quiet,
    };
    let mut ues = JoinSet::new();
    for (i, u) in usims.into_iter().enumerate() {
        ues.spawn(procedure::run_ue(sh.clone(), u, i));
    }

    // Run: until stop, or `duration_ms` after every UE has finished its attach attempt.
    let stopped_early = tokio::select! {
        _ = &mut stop => true,
        _ = attempts.wait_for(Progress::attach_phase_over) => false,
    };
    if !stopped_early {
        info!("attach phase over");
        if let Some(d) = cfg.duration_ms {
            tokio::select! {
                _ = &mut stop => {}
                _ = tokio::time::sleep(Duration::from_millis(d)) => {}
            }
        } else {
            stop.await;
        }
    }
    let stopped_at = Instant::now();
    info!("stopping: detaching the UEs");
    dp.stop_pinging();
    let _ = stop_tx.send(Some(stopped_at));
    progress.send_modify(|p| p.stopping = true);
    // Nothing waits for attach slots any more: UEs not yet started fail at once.
    sh.attach_slots.close();

    let mut report = Report {
        started_unix_ms: clock.start_unix_ms(),
        recovery: Recovery {
            started_unix_ms: clock.start_unix_ms(),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(p) = probe {
        if let Ok((cp, series)) = p.await {
            report.cp_probe = cp;
            report.recovery.cp_s1_mme = series;
        }
    }
    while let Some(r) = ues.join_next().await {
        match r {
            Ok(Outcome::Done {
                imsi,
                attached: a,
                pings,
                downlink_sent,
                detach_error,
            }) => {
                let p = pings.unwrap_or(dataplane::PingStats {
                    sent: 0,
                    received: 0,
                    rtt_ms_avg: None,
                    rtt_ms_max: None,
                    series: Series::default(),
                    downlink_received: 0,
                });
                report.procedures.downlink_received += p.downlink_received;
                let longest = p.series.longest;
                report.recovery.dp_gtp.push(UeRecovery {
                    imsi: imsi.clone(),
                    ue_ip: a.ue_ip,
                    series: p.series,
                });
                report.ues.push(UeReport {
                    imsi,
                    ue_ip: a.ue_ip,
                    enb_teid: a.enb_teid,
                    sgw_teid: a.sgw_teid,
                    sgw_addr: a.sgw_addr,
                    mme_ue_s1ap_id: a.mme_ue_id,
                    enb_ue_s1ap_id: a.enb_ue_id,
                    attach_ms: a.attach_ms,
                    attached_at_ms: a.attached_at_ms,
                    pings_sent: p.sent,
                    pings_received: p.received,
                    max_ping_gap_ms: longest.map_or(0.0, |o| o.duration_ms),
                    ping_gap_at_ms: longest.map_or(0.0, |o| o.start_ms),
                    rtt_ms_avg: p.rtt_ms_avg,
                    rtt_ms_max: p.rtt_ms_max,
                    kenb_match: a.kenb_match,
                    downlink_sent,
                    downlink_received: p.downlink_received,
                    detached: detach_error.is_none(),
                    detach_error,
                });
            }
            Ok(Outcome::Failed(f)) => report.attach_failures.push(f),
            Err(e) => debug!("UE task ended abnormally: {e}"),
        }
    }
    report.ues.sort_by_key(|u| u.enb_ue_s1ap_id);
    report.recovery.dp_gtp.sort_by(|a, b| a.imsi.cmp(&b.imsi));
    report.attach_failures.sort_by_key(|f| f.enb_ue_s1ap_id);
    let n = |a: &std::sync::atomic::AtomicU32| a.load(Ordering::Relaxed);
    report.enbs = enbs
        .iter()
        .map(|s| EnbReport {
            enb_id: s.enb.enb_id,
            name: s.enb.name.clone(),
            tac: s.enb.tac,
            s1_setups: n(&s.s1_setups),
            association_losses: n(&s.association_losses),
        })
        .collect();
    report.s1_setups = report.enbs.iter().map(|e| e.s1_setups).sum();
    report.association_losses = report.enbs.iter().map(|e| e.association_losses).sum();
    report.dropped = dp.dropped();
    report.dropped.s1ap = enbs.iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum();
    for s in enbs.iter() {
        report.idle.add(&s.idle_counts.report());
    }
    let received = report.procedures.downlink_received;
    report.procedures = Procedures::new(take(&log.records), take(&log.skipped));
    report.procedures.downlink_sent = log.downlink_sent.load(Ordering::Relaxed);
    report.procedures.downlink_received = received;
    report.duration_ms = clock.ms(Instant::now());
    for s in enbs.iter() {
        s.close();
    }
    // Let the driver send the ABORT before the tasks go.
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(tasks);
    Ok(report)
}

/// The contents of a shared collection, the mutex left empty.
fn take<T: Default>(m: &std::sync::Mutex<T>) -> T {
    std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The CP_S1-MME probe: one eNB Configuration Update at a time, every `interval`; an
/// answer within `wait` counts as answered. Late answers still count as signs of life.
async fn cp_probe(
    s1: Arc<S1>,
    clock: Clock,
    interval: Duration,
    wait: Duration,
    mut answers: mpsc::UnboundedReceiver<(ProbeAnswer, Instant)>,
    mut stop: watch::Receiver<Option<Instant>>,
) -> (CpProbeReport, Series) {
    let request = s1::enb_configuration_update().ok();
    let threshold = (interval * 3).max(Duration::from_millis(10));
    let mut gaps = report::GapTracker::new(clock, Instant::now(), threshold);
    let mut r = CpProbeReport::default();
    let mut rtt_sum = Duration::ZERO;
    let mut rtt_n = 0u64;
    let mut next = tokio::time::Instant::now();
    let end = loop {
        if let Some(t) = *stop.borrow_and_update() {
            break t;
        }
        // Answers to earlier, timed-out probes: the MME is alive, but not "answered".
        while let Ok((_, at)) = answers.try_recv() {
            gaps.ok(at);
        }
        let sent_at = Instant::now();
        let sent = match &request {
            Some(req) => s1.send_raw(0, req.clone()).is_ok(),
            None => false,
        };
        if sent {
            r.sent += 1;
            let deadline = tokio::time::Instant::from_std(sent_at + wait);
            tokio::select! {
                a = answers.recv() => if let Some((a, at)) = a {
                    r.answered += 1;
                    if a == ProbeAnswer::Failure {
                        r.failures += 1;
                    }
                    rtt_sum += at.saturating_duration_since(sent_at);
                    rtt_n += 1;
                    gaps.ok(at);
                },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stop.changed() => {}
            }
        }
        next += interval;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => {}
        }
    };
    let series = gaps.finish(end);
    if let Some(l) = series.longest {
        r.max_gap_ms = l.duration_ms;
        r.gap_at_ms = l.start_ms;
    }
    r.rtt_ms_avg = (rtt_n > 0).then(|| rtt_sum.as_secs_f64() * 1e3 / rtt_n as f64);
    (r, series)
}
