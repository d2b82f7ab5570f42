//! S11 transport: the GTPv2-C socket toward the SPGW, sequence numbers and the
//! retransmission of requests (TS 29.274 §7.6: T3/N3). What the messages mean is
//! `core::s11`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::{Config, MmeCore};

/// One S11 transaction waiting for its response (TS 29.274 §7.6: T3/N3).
struct S11Pending {
    ue: u32,
    bytes: Vec<u8>,
    tries: u32,
    deadline: Instant,
}

/// The S11 socket and the requests still waiting for their response.
pub(crate) struct S11 {
    pub(crate) sock: UdpSocket,
    peer: SocketAddr,
    next_seq: u32,
    pending: HashMap<u32, S11Pending>,
    t3: Duration,
    n3: u32,
}

impl S11 {
    pub(crate) fn new(sock: UdpSocket, cfg: &Config) -> S11 {
        S11 {
            sock,
            peer: cfg.spgw_s11,
            next_seq: 1,
            pending: HashMap::new(),
            t3: Duration::from_millis(cfg.s11_t3_ms),
            n3: cfg.s11_n3,
        }
    }

    pub(crate) async fn send(
        &mut self,
        ue: u32,
        teid: u32,
        msg: proto_gtpv2c::Message,
    ) -> Result<(), String> {
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

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Retransmits due requests; returns the UEs whose request ran out of tries.
    pub(crate) async fn on_timer(&mut self) -> Vec<u32> {
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

    /// A datagram from the SPGW: an echo to answer or the response to a pending request.
    pub(crate) async fn on_datagram(&mut self, core: &mut MmeCore, data: &[u8], from: SocketAddr) {
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
                    let _ = self.sock.send_to(&b, from).await;
                }
            }
            msg if !msg.is_request() => match self.pending.remove(&m.seq) {
                Some(p) => core.on_s11(p.ue, Ok(msg)),
                None => debug!(
                    seq = m.seq,
                    "S11 response to no pending request (duplicate?)"
                ),
            },
            other => warn!(%from, "unexpected S11 request {}", other.name()),
        }
    }
}
