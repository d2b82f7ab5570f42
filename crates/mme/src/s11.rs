//! S11 transport: the GTPv2-C socket toward the SPGW. Sequence numbers and the
//! retransmission of requests (TS 29.274 §7.6: T3/N3) are
//! `proto_gtpv2c::transaction::Requester`'s, the answers to the SPGW's requests
//! (cached for its retransmissions) `Responder`'s; what the messages mean is the core's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto_gtpv2c::transaction::{Incoming, RequestId, Requester, Responder, Timeout, Timers};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::{Config, MmeCore};

/// Requests waiting for the SPGW at once: one or two per attaching UE; beyond, a
/// request fails at once rather than growing memory without bound.
const MAX_PENDING: usize = 16384;
/// Answers kept for the SPGW's retransmissions: one per notification in its window.
const MAX_ANSWERS: usize = 4096;

/// The S11 socket and the requests still waiting for their response, each with its UE.
pub(crate) struct S11 {
    pub(crate) sock: UdpSocket,
    peer: SocketAddr,
    requests: Requester<u32>,
    answers: S11Answers,
    /// Sequence numbers of messages nothing answers (Failure Indication): the
    /// Requester numbers only requests, and a number shared with one of those is
    /// still told apart by the message type.
    next_indication_seq: u32,
}

impl S11 {
    pub(crate) fn new(sock: UdpSocket, cfg: &Config) -> S11 {
        S11 {
            sock,
            peer: cfg.spgw_s11,
            requests: Requester::new(timers(cfg), MAX_PENDING),
            answers: S11Answers::new(cfg),
            next_indication_seq: 1,
        }
    }

    pub(crate) async fn send(
        &mut self,
        ue: u32,
        teid: u32,
        msg: proto_gtpv2c::Message,
    ) -> Result<(), String> {
        let indication;
        let bytes = if msg.is_request() {
            self.requests
                .send(Instant::now(), self.peer, Some(teid), msg, ue)
                .map_err(|e| e.to_string())?
                .1
        } else {
            let seq = self.next_indication_seq;
            // 23-bit numbers with the top bit clear, as for other initial messages.
            self.next_indication_seq = (seq + 1) & 0x7f_ffff;
            indication = proto_gtpv2c::Gtpv2 {
                teid: Some(teid),
                seq,
                msg,
            }
            .encode()
            .map_err(|e| e.to_string())?;
            &indication[..]
        };
        if let Err(e) = self.sock.send_to(bytes, self.peer).await {
            warn!(peer = %self.peer, "S11 send failed: {e}");
        }
        Ok(())
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.requests.poll_timeout()
    }

    /// Retransmits due requests; returns the UEs whose request ran out of tries.
    pub(crate) async fn on_timer(&mut self) -> Vec<u32> {
        let mut failed = Vec::new();
        for t in self.requests.on_timeout(Instant::now()) {
            match t {
                Timeout::Retransmit { peer, seq, bytes } => {
                    debug!(seq, "S11 retransmission");
                    let _ = self.sock.send_to(&bytes, peer).await;
                }
                Timeout::Expired { context: ue, .. } => failed.push(ue),
            }
        }
        failed
    }

    /// A datagram from the SPGW: an echo to answer or the response to a pending request.
    pub(crate) async fn on_datagram(&mut self, core: &mut MmeCore, data: &[u8], from: SocketAddr) {
        let is_request = proto_gtpv2c::decode_header(data)
            .is_ok_and(|h| proto_gtpv2c::msg_type::is_request(h.msg_type));
        if !is_request {
            match self.requests.on_response(from, data) {
                Ok(Some((ue, m))) => core.on_s11(Instant::now(), ue, Ok(m.msg)),
                Ok(None) => {
                    debug!(%from, "S11 response to no pending request (late or duplicate?)")
                }
                Err(e) => warn!(%from, "dropping malformed GTPv2-C datagram: {e}"),
            }
            return;
        }
        if let Some(b) = self.answers.on_request(core, Instant::now(), from, data) {
            let _ = self.sock.send_to(&b, from).await;
        }
    }

    /// Sends the core's late answer to the SPGW's request `id` (Create Bearer Response).
    pub(crate) async fn answer(&mut self, id: RequestId, teid: u32, msg: proto_gtpv2c::Message) {
        if let Some(b) = self.answers.answer(Instant::now(), id, teid, msg) {
            if let Err(e) = self.sock.send_to(&b, id.peer).await {
                warn!(peer = %id.peer, "S11 send failed: {e}");
            }
        }
    }
}

fn timers(cfg: &Config) -> Timers {
    Timers {
        t3: Duration::from_millis(cfg.s11_t3_ms),
        n3: cfg.s11_n3,
    }
}

/// The answers to the SPGW's requests (Echo, Downlink Data Notification, Create Bearer),
/// without the socket: the bytes in, the bytes to send back out. A retransmitted request
/// gets its cached answer and is not processed again (TS 29.274 §7.6); a Create Bearer
/// Request is answered later, through [`S11Answers::answer`].
pub struct S11Answers {
    responder: Responder,
}

impl S11Answers {
    pub fn new(cfg: &Config) -> S11Answers {
        // The SPGW's T3/N3 are taken to be ours: they give its retransmission window.
        S11Answers {
            responder: Responder::new(timers(cfg), MAX_ANSWERS),
        }
    }

    /// A request datagram from the SPGW at `from`; returns what to send back.
    pub fn on_request(
        &mut self,
        core: &mut MmeCore,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        let (id, m) = match self.responder.on_request(now, from, data) {
            Ok(Incoming::Fresh(id, m)) => (id, m),
            Ok(Incoming::Duplicate(bytes)) => return Some(bytes.to_vec()),
            Err(e) => {
                warn!(%from, "dropping malformed GTPv2-C datagram: {e}");
                return None;
            }
        };
        let (teid, msg) = match m.msg {
            // Echo is stateless: answered afresh, never cached.
            proto_gtpv2c::Message::EchoRequest(_) => {
                let resp = proto_gtpv2c::Gtpv2 {
                    teid: None,
                    seq: m.seq,
                    msg: proto_gtpv2c::Message::EchoResponse(proto_gtpv2c::Echo { recovery: 0 }),
                };
                return resp.encode().ok();
            }
            proto_gtpv2c::Message::CreateBearerRequest(r) => {
                core.on_create_bearer_request(m.teid.unwrap_or(0), r, id);
                return None;
            }
            msg => core.on_s11_request(now, m.teid.unwrap_or(0), msg)?,
        };
        self.answer(now, id, teid, msg)
    }

    /// The answer to the request `id`, numbered and cached for its retransmissions.
    pub fn answer(
        &mut self,
        now: Instant,
        id: RequestId,
        teid: u32,
        msg: proto_gtpv2c::Message,
    ) -> Option<Vec<u8>> {
        match self.responder.respond(now, id, Some(teid), msg) {
            Ok(b) => Some(b.to_vec()),
            Err(e) => {
                warn!(peer = %id.peer, "cannot encode S11 answer: {e}");
                None
            }
        }
    }
}
