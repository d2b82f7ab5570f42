//! The corehop MME.
//!
//! - S1-MME: S1AP over SCTP over UDP (RFC 6951, port 9899), see `proto-sctp`.
//! - NAS EMM/ESM: attach (authentication, security mode, default bearer), detach.
//! - S6a: Diameter client to the HSS (AIR/ULR), one long-lived TCP connection.
//! - S11: GTPv2-C client to the SPGW (Create Session, Modify Bearer, Delete Session).
//!
//! All state lives in this process (the association, UE contexts with NAS security
//! contexts and COUNTs, TEIDs): a CRIU checkpoint of the process carries it. The UE
//! contexts are also written as JSON to `state_file` on every change.

pub mod config;
pub mod core;
pub mod s6a;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use proto_sctp::{SctpEvent, SctpServer, PPID_S1AP};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use crate::config::Config;
pub use crate::core::{Action, EnbView, MmeCore, UeState, UeView};
use crate::s6a::{S6aAnswer, S6aConfig, S6aRequest};

/// Aborts a spawned task when dropped, so dropping `serve` stops everything.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One S11 transaction waiting for its response (TS 29.274 §7.6: T3/N3).
struct S11Pending {
    ue: u32,
    bytes: Vec<u8>,
    tries: u32,
    deadline: Instant,
}

struct S11 {
    sock: UdpSocket,
    peer: SocketAddr,
    next_seq: u32,
    pending: HashMap<u32, S11Pending>,
    t3: Duration,
    n3: u32,
}

impl S11 {
    async fn send(&mut self, ue: u32, teid: u32, msg: proto_gtpv2c::Message) -> Result<(), String> {
        // Sequence numbers are 24 bits.
        let seq = self.next_seq;
        self.next_seq = (self.next_seq + 1) & 0x00ff_ffff;
        let bytes = proto_gtpv2c::Gtpv2 {
            teid: Some(teid),
            seq,
            msg,
        }
        .encode()
        .map_err(|e| e.to_string())?;
        if let Err(e) = self.sock.send_to(&bytes, self.peer).await {
            warn!(peer = %self.peer, "S11 send failed: {e}");
        }
        self.pending.insert(
            seq,
            S11Pending {
                ue,
                bytes,
                tries: 1,
                deadline: Instant::now() + self.t3,
            },
        );
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Retransmits due requests; returns the UEs whose request ran out of tries.
    async fn on_timer(&mut self) -> Vec<u32> {
        let now = Instant::now();
        let mut failed = Vec::new();
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            if p.tries > self.n3 {
                failed.push(p.ue);
                self.pending.remove(&seq);
                continue;
            }
            p.tries += 1;
            p.deadline = now + self.t3;
            debug!(seq, ue = p.ue, "S11 retransmission");
            let _ = self.sock.send_to(&p.bytes, self.peer).await;
        }
        failed
    }
}

/// Writes the UE contexts as JSON, atomically (temp file + rename).
pub fn write_state(path: &Path, ues: &[UeView]) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(ues)?;
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
    let mut s11 = S11 {
        sock,
        peer: cfg.spgw_s11,
        next_seq: 1,
        pending: HashMap::new(),
        t3: Duration::from_millis(cfg.s11_t3_ms),
        n3: cfg.s11_n3,
    };
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
    let mut buf = vec![0u8; 65536];
    loop {
        let s11_deadline = s11
            .next_deadline()
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
                        core.on_s1ap(m.assoc, &m.payload);
                    }
                }
                Some(SctpEvent::Down { assoc, reason }) => {
                    info!(%assoc, "eNB association down: {reason}");
                    core.on_sctp_down(assoc);
                }
            },
            a = ans_rx.recv() => match a {
                None => anyhow::bail!("the S6a client stopped"),
                Some(S6aAnswer::Aia { ue, result }) => core.on_aia(ue, result),
                Some(S6aAnswer::Ula { ue, result }) => core.on_ula(ue, result),
            },
            r = s11.sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => on_s11_datagram(&mut s11, &mut core, &buf[..n], from).await,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("S11 receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            _ = tokio::time::sleep_until(s11_deadline) => {
                for ue in s11.on_timer().await {
                    core.on_s11(ue, Err("no response from the SPGW".into()));
                }
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
                Action::S11 { ue, teid, msg } => {
                    if let Err(e) = s11.send(ue, teid, msg).await {
                        core.on_s11(ue, Err(e));
                    }
                }
            }
        }
        if core.take_changed() {
            dump(&core);
        }
    }
}

async fn on_s11_datagram(s11: &mut S11, core: &mut MmeCore, data: &[u8], from: SocketAddr) {
    let m = match proto_gtpv2c::decode(data) {
        Ok(m) => m,
        Err(e) => {
            warn!(%from, "dropping malformed GTPv2-C datagram: {e}");
            return;
        }
    };
    match m.msg {
        proto_gtpv2c::Message::EchoRequest(_) => {
            let resp = proto_gtpv2c::Gtpv2 {
                teid: None,
                seq: m.seq,
                msg: proto_gtpv2c::Message::EchoResponse(proto_gtpv2c::Echo { recovery: 0 }),
            };
            if let Ok(b) = resp.encode() {
                let _ = s11.sock.send_to(&b, from).await;
            }
        }
        msg if !msg.is_request() => match s11.pending.remove(&m.seq) {
            Some(p) => core.on_s11(p.ue, Ok(msg)),
            None => debug!(
                seq = m.seq,
                "S11 response to no pending request (duplicate?)"
            ),
        },
        other => warn!(%from, "unexpected S11 request {}", other.name()),
    }
}
