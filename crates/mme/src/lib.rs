//! The corehop MME.
//!
//! - S1-MME: S1AP over SCTP over UDP (RFC 6951, port 9899), see `proto-sctp`.
//! - NAS EMM/ESM: attach (authentication, security mode, default bearer), detach.
//! - S6a: Diameter client to the HSS (AIR/ULR, PUR after a detach; CLR from the HSS
//!   removes the UE), one long-lived TCP connection.
//! - S11: GTPv2-C client to the SPGW (Create Session, Modify Bearer, Delete Session,
//!   Release Access Bearers), and server of its Downlink Data Notifications.
//! - ECM-IDLE: S1 release, service request, tracking area update, paging; the NAS
//!   timers (T3450, T3460, T3470, T3422, T3413, mobile reachable) are kept by the core,
//!   the time given by this shell with every input.
//! - Handover between its eNBs: X2 (PATH SWITCH REQUEST) and S1 (HANDOVER REQUIRED ..
//!   HANDOVER NOTIFY, TS1RELOCoverall), with the NH/NCC chain.
//!
//! All state lives in this process (the association, UE contexts with NAS security
//! contexts and COUNTs, TEIDs): a CRIU checkpoint of the process carries it. The UE
//! contexts are also written as JSON to `state_file` within [`STATE_COALESCE`] of every
//! change, and at once on SIGHUP.
//!
//! The protocol logic is `core`, without I/O (one file per concern); `s6a` and `s11`
//! are the transports toward the HSS and the SPGW, and `serve` wires them together.

pub mod config;
pub mod core;
pub mod s11;
pub mod s6a;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use proto_sctp::{SctpEvent, SctpServer, PPID_S1AP};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use crate::config::Config;
pub use crate::core::{
    Action, EcmState, EmmProcedure, EnbView, HandoverPhase, MmeCore, TimerStats, UeState, UeView,
};
use crate::s11::S11;
use crate::s6a::{S6aAnswer, S6aConfig, S6aRequest};

/// Aborts a spawned task when dropped, so dropping `serve` stops everything.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long UE changes are gathered before `state_file` is written again: the whole table
/// is serialised each time, which once per change took the MME's one core at a thousand
/// busy UEs (50 procedures/s), and procedures then took seconds.
pub const STATE_COALESCE: Duration = Duration::from_millis(200);

/// Writes the UE contexts as JSON, atomically (temp file + rename).
pub fn write_state(path: &Path, ues: &[UeView]) -> anyhow::Result<()> {
    let json = serde_json::to_vec(ues)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Runs the MME until the future is dropped.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let mut core = MmeCore::new(cfg.clone())?;
    let mut sctp = SctpServer::bind(cfg.s1_bind, cfg.sctp_config())
        .await
        .with_context(|| format!("cannot bind S1-MME (SCTP over UDP) on {}", cfg.s1_bind))?;
    let sctp_tx = sctp.sender();
    let sock = UdpSocket::bind(cfg.s11_bind)
        .await
        .with_context(|| format!("cannot bind S11 on {}", cfg.s11_bind))?;
    let mut s11 = S11::new(sock, &cfg);
    let (s6a_tx, s6a_rx) = mpsc::unbounded_channel();
    let (ans_tx, mut ans_rx) = mpsc::unbounded_channel();
    let _s6a = AbortOnDrop(tokio::spawn(s6a::run(
        S6aConfig {
            hss: cfg.hss,
            origin_host: cfg.origin_host.clone(),
            origin_realm: cfg.origin_realm.clone(),
            advertised_ip: cfg.advertised_ip,
            hss_realm: cfg.hss_realm.clone(),
            visited_plmn: cfg.plmn()?,
            watchdog: Duration::from_secs(cfg.diameter_watchdog_s.max(1)),
        },
        s6a_rx,
        ans_tx,
    )));
    info!(s1 = %sctp.local_addr(), hss = %cfg.hss, spgw = %cfg.spgw_s11, "MME running");
    let dump = |core: &MmeCore| {
        if let Some(path) = &cfg.state_file {
            if let Err(e) = write_state(path, &core.ues()) {
                warn!("cannot write UE state: {e:#}");
            }
        }
    };
    dump(&core);
    // SIGHUP writes the dump again from memory: how a checker reads this process's own
    // view, not a copy of the file that moved with a checkpoint.
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut buf = vec![0u8; 65536];
    let mut dump_due: Option<Instant> = None;
    loop {
        // The earliest of S11's retransmissions, the core's timers (NAS, paging, mobile
        // reachable) and the state file's next write.
        let deadline = [s11.next_deadline(), core.next_deadline(), dump_due]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = sctp.recv() => match ev {
                None => anyhow::bail!("the SCTP driver stopped"),
                Some(SctpEvent::Up { assoc, peer }) => {
                    info!(%assoc, %peer, "eNB association up");
                    core.on_sctp_up(assoc, peer);
                }
                Some(SctpEvent::Message(m)) => {
                    if m.ppid != PPID_S1AP {
                        warn!(assoc = %m.assoc, ppid = m.ppid, "non-S1AP PPID, message dropped");
                    } else {
                        core.on_s1ap(Instant::now(), m.assoc, &m.payload);
                    }
                }
                Some(SctpEvent::Down { assoc, reason }) => {
                    info!(%assoc, "eNB association down: {reason}");
                    core.on_sctp_down(Instant::now(), assoc);
                }
            },
            a = ans_rx.recv() => match a {
                None => anyhow::bail!("the S6a client stopped"),
                Some(S6aAnswer::Aia { ue, result }) => core.on_aia(Instant::now(), ue, result),
                Some(S6aAnswer::Ula { ue, result }) => core.on_ula(Instant::now(), ue, result),
                Some(S6aAnswer::CancelLocation { imsi, cancellation_type }) => {
                    core.on_cancel_location(Instant::now(), &imsi, cancellation_type);
                }
            },
            r = s11.sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => s11.on_datagram(&mut core, &buf[..n], from).await,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("S11 receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            _ = hup.recv() => {
                dump(&core);
                dump_due = None;
            }
            _ = tokio::time::sleep_until(deadline) => {
                s11.on_timer(&mut core).await;
                core.on_timer(Instant::now());
            }
        }
        // Actions may produce more actions only through new input, so one pass is enough.
        for action in core.take_actions() {
            match action {
                Action::S1ap { assoc, stream, pdu } => {
                    if sctp_tx.send(assoc, stream, Bytes::from(pdu)).is_err() {
                        anyhow::bail!("the SCTP driver stopped");
                    }
                }
                Action::Air { ue, imsi, resync } => {
                    let _ = s6a_tx.send(S6aRequest::Air { ue, imsi, resync });
                }
                Action::Ulr { ue, imsi } => {
                    let _ = s6a_tx.send(S6aRequest::Ulr { ue, imsi });
                }
                Action::Pur { imsi } => {
                    let _ = s6a_tx.send(S6aRequest::Pur { imsi });
                }
                Action::S11 { ue, teid, msg } => {
                    if let Err(e) = s11.send(ue, teid, msg).await {
                        core.on_s11(Instant::now(), ue, Err(e));
                    }
                }
                Action::S11Answer { id, teid, msg } => s11.answer(id, teid, msg).await,
            }
        }
        if core.take_changed() && dump_due.is_none() {
            dump_due = Some(Instant::now() + STATE_COALESCE);
        }
        if dump_due.is_some_and(|d| d <= Instant::now()) {
            dump(&core);
            dump_due = None;
        }
    }
}
