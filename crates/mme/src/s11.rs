//! S11 transport: the GTPv2-C socket toward the SPGW. Sequence numbers and the
//! retransmission of requests (TS 29.274 §7.6: T3/N3) are
//! `proto_gtpv2c::transaction::Requester`'s, the answers to the SPGW's requests
//! (cached for its retransmissions) `Responder`'s; what the messages mean is the core's.
//!
//! One request per UE is outstanding at a time; later ones wait for its answer (or its
//! last retransmission). Otherwise a request lost on the way (an SPGW migrating: its old
//! host drops what arrives during the final dump) would reach the SPGW on its
//! retransmission after a later one: a Modify Bearer after the Release Access Bearers that
//! followed it leaves the SPGW sending downlink to the eNB of a UE the MME has idle.

use std::collections::{HashMap, VecDeque};
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
    /// The UEs with a request outstanding, each with the requests waiting behind it.
    waiting: HashMap<u32, VecDeque<(u32, proto_gtpv2c::Message)>>,
}

impl S11 {
    pub(crate) fn new(sock: UdpSocket, cfg: &Config) -> S11 {
        S11 {
            sock,
            peer: cfg.spgw_s11,
            requests: Requester::new(timers(cfg), MAX_PENDING),
            answers: S11Answers::new(cfg),
            next_indication_seq: 1,
            waiting: HashMap::new(),
        }
    }

    /// Sends a request of `ue`'s now, or once the one it has outstanding is settled.
    async fn request(
        &mut self,
        ue: u32,
        teid: u32,
        msg: proto_gtpv2c::Message,
    ) -> Result<(), String> {
        if let Some(queue) = self.waiting.get_mut(&ue) {
            queue.push_back((teid, msg));
            return Ok(());
        }
        let bytes = self
            .requests
            .send(Instant::now(), self.peer, Some(teid), msg, ue)
            .map_err(|e| e.to_string())?
            .1
            .to_vec();
        self.waiting.insert(ue, VecDeque::new());
        if let Err(e) = self.sock.send_to(&bytes, self.peer).await {
            warn!(peer = %self.peer, "S11 send failed: {e}");
        }
        Ok(())
    }

    /// `ue`'s outstanding request is settled: the next one waiting goes out. One that
    /// cannot be sent is failed to the core, and the one after it tried.
    async fn settled(&mut self, core: &mut MmeCore, ue: u32) {
        let Some(mut queue) = self.waiting.remove(&ue) else {
            return;
        };
        while let Some((teid, msg)) = queue.pop_front() {
            match self.request(ue, teid, msg).await {
                Ok(()) => {
                    if let Some(q) = self.waiting.get_mut(&ue) {
                        q.extend(queue);
                    }
                    return;
                }
                Err(e) => core.on_s11(Instant::now(), ue, Err(e)),
            }
        }
    }

    pub(crate) async fn send(
        &mut self,
        ue: u32,
        teid: u32,
        msg: proto_gtpv2c::Message,
    ) -> Result<(), String> {
        if msg.is_request() {
            return self.request(ue, teid, msg).await;
        }
        let seq = self.next_indication_seq;
        // 23-bit numbers with the top bit clear, as for other initial messages.
        self.next_indication_seq = (seq + 1) & 0x7f_ffff;
        let indication = proto_gtpv2c::Gtpv2 {
            teid: Some(teid),
            seq,
            msg,
        }
        .encode()
        .map_err(|e| e.to_string())?;
        if let Err(e) = self.sock.send_to(&indication, self.peer).await {
            warn!(peer = %self.peer, "S11 send failed: {e}");
        }
        Ok(())
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.requests.poll_timeout()
    }

    /// Retransmits due requests; a request out of tries is failed to the core.
    pub(crate) async fn on_timer(&mut self, core: &mut MmeCore) {
        for t in self.requests.on_timeout(Instant::now()) {
            match t {
                Timeout::Retransmit { peer, seq, bytes } => {
                    debug!(seq, "S11 retransmission");
                    let _ = self.sock.send_to(&bytes, peer).await;
                }
                Timeout::Expired { context: ue, .. } => {
                    core.on_s11(Instant::now(), ue, Err("no response from the SPGW".into()));
                    self.settled(core, ue).await;
                }
            }
        }
    }

    /// A datagram from the SPGW: an echo to answer or the response to a pending request.
    pub(crate) async fn on_datagram(&mut self, core: &mut MmeCore, data: &[u8], from: SocketAddr) {
        let is_request = proto_gtpv2c::decode_header(data)
            .is_ok_and(|h| proto_gtpv2c::msg_type::is_request(h.msg_type));
        if !is_request {
            match self.requests.on_response(from, data) {
                Ok(Some((ue, m))) => {
                    core.on_s11(Instant::now(), ue, Ok(m.msg));
                    self.settled(core, ue).await;
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proto_gtpv2c::{Gtpv2, Message};

    async fn next(sock: &UdpSocket) -> Option<Gtpv2> {
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(proto_gtpv2c::decode(&buf[..n]).unwrap())
    }

    #[tokio::test]
    async fn a_ues_second_request_waits_for_the_answer_to_its_first() {
        let spgw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg = Config {
            spgw_s11: spgw.local_addr().unwrap(),
            ..Config::default()
        };
        let mut core = MmeCore::new(cfg.clone()).unwrap();
        let mut s11 = S11::new(UdpSocket::bind("127.0.0.1:0").await.unwrap(), &cfg);
        let mbr = Message::ModifyBearerRequest(Default::default());
        let rab = Message::ReleaseAccessBearersRequest(Default::default());
        s11.send(7, 0x10, mbr).await.unwrap();
        s11.send(7, 0x10, rab).await.unwrap();
        // Another UE's request does not wait.
        s11.send(
            8,
            0x20,
            Message::ReleaseAccessBearersRequest(Default::default()),
        )
        .await
        .unwrap();
        let first = next(&spgw).await.expect("the first request goes out");
        assert!(matches!(first.msg, Message::ModifyBearerRequest(_)));
        let other = next(&spgw).await.expect("the other UE's request goes out");
        assert_eq!(other.teid, Some(0x20));
        assert!(next(&spgw).await.is_none(), "UE 7's second request waits");
        let answer = Gtpv2 {
            teid: Some(1),
            seq: first.seq,
            msg: Message::ModifyBearerResponse(Default::default()),
        }
        .encode()
        .unwrap();
        let mme = s11.sock.local_addr().unwrap();
        spgw.send_to(&answer, mme).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = s11.sock.recv_from(&mut buf).await.unwrap();
        s11.on_datagram(&mut core, &buf[..n], from).await;
        let second = next(&spgw).await.expect("then the second");
        assert!(matches!(
            second.msg,
            Message::ReleaseAccessBearersRequest(_)
        ));
        assert_eq!(second.teid, Some(0x10));
    }
}
