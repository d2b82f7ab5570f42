//! GTPv2-C transactions (TS 29.274 §7.6), without I/O: bytes and time in, bytes
//! and events out. [`Requester`] numbers requests, retransmits them every T3 up to
//! N3 times and matches their responses; [`Responder`] answers a retransmitted
//! request from its cache instead of processing it again.
//!
//! Written here rather than taken from crates.io: no published crate offers
//! GTPv2-C transactions (`gtp-rs` has codecs only and is not on crates.io; the
//! transaction layers there are SIP's and STUN's).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::{decode, decode_header, msg_type, Error, Gtpv2, Message};

/// Sequence numbers of initial messages other than Commands have the most
/// significant of their 24 bits clear (TS 29.274 §7.6); S11 here sends no Commands.
const SEQ_MASK: u32 = 0x007f_ffff;

/// T3-RESPONSE and N3-REQUESTS (TS 29.274 §7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How long to wait for a response before retransmitting.
    pub t3: Duration,
    /// How many times a request is retransmitted before it is given up.
    pub n3: u32,
}

impl Timers {
    /// From the first transmission until the requester gives up: the original and N3
    /// retransmissions, T3 apart, and one T3 for the last one's answer.
    pub fn window(&self) -> Duration {
        self.t3.saturating_mul(self.n3.saturating_add(1))
    }
}

/// What [`Requester::on_timeout`] asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timeout<C> {
    /// Send these bytes to `peer` again: exactly those of the first transmission (§7.6).
    Retransmit {
        peer: SocketAddr,
        seq: u32,
        bytes: Vec<u8>,
    },
    /// No response after N3 retransmissions; a response arriving later is ignored.
    Expired {
        peer: SocketAddr,
        seq: u32,
        context: C,
    },
}

#[derive(Debug, Clone)]
struct Pending<C> {
    peer: SocketAddr,
    context: C,
    bytes: Vec<u8>,
    retransmissions: u32,
    deadline: Instant,
}

/// The requests this endpoint sent and still waits for, each with the caller's
/// context `C` (e.g. which UE it is for). Clone, so that an owner's state can be
/// changed all or nothing on a copy.
#[derive(Debug, Clone)]
pub struct Requester<C> {
    timers: Timers,
    capacity: usize,
    next_seq: u32,
    /// By sequence number: unique among outstanding requests from one endpoint (§7.6).
    pending: BTreeMap<u32, Pending<C>>,
}

impl<C> Requester<C> {
    /// At most `capacity` requests wait at once; `send` refuses more.
    pub fn new(timers: Timers, capacity: usize) -> Self {
        Requester {
            timers,
            capacity: capacity.min(SEQ_MASK as usize),
            next_seq: 1,
            pending: BTreeMap::new(),
        }
    }

    /// Numbers and encodes a request to `peer`; returns its sequence number and the
    /// bytes to send now. It is retransmitted until its response or N3.
    pub fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        teid: Option<u32>,
        msg: Message,
        context: C,
    ) -> Result<(u32, &[u8]), Error> {
        if !msg.is_request() {
            return Err(Error::Unexpected(msg.msg_type(), "a request to send"));
        }
        if self.pending.len() >= self.capacity {
            return Err(Error::TooManyPending(self.capacity));
        }
        // Skip numbers still outstanding after a wrap; there is a free one since
        // capacity < 2^23.
        let mut seq = self.next_seq;
        while self.pending.contains_key(&seq) {
            seq = (seq + 1) & SEQ_MASK;
        }
        let bytes = Gtpv2 { teid, seq, msg }.encode()?;
        self.next_seq = (seq + 1) & SEQ_MASK;
        let p = self.pending.entry(seq).or_insert(Pending {
            peer,
            context,
            bytes,
            retransmissions: 0,
            deadline: now + self.timers.t3,
        });
        Ok((seq, &p.bytes))
    }

    /// A datagram from `peer` that should be a response: the context of its request
    /// and the decoded response, or `None` if no request waits for it (unknown or
    /// given-up sequence number, another peer, or a duplicate response).
    pub fn on_response(
        &mut self,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<Option<(C, Gtpv2)>, Error> {
        let m = decode(bytes)?;
        if m.msg.is_request() {
            return Err(Error::Unexpected(m.msg.msg_type(), "a response"));
        }
        if self.pending.get(&m.seq).map(|p| p.peer) != Some(peer) {
            return Ok(None);
        }
        Ok(self.pending.remove(&m.seq).map(|p| (p.context, m)))
    }

    /// When `on_timeout` next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Retransmits the requests whose T3 ran out and gives up those already
    /// retransmitted N3 times.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Timeout<C>> {
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (&seq, p) in self.pending.iter_mut().filter(|(_, p)| p.deadline <= now) {
            if p.retransmissions >= self.timers.n3 {
                expired.push(seq);
                continue;
            }
            p.retransmissions += 1;
            p.deadline = now + self.timers.t3;
            out.push(Timeout::Retransmit {
                peer: p.peer,
                seq,
                bytes: p.bytes.clone(),
            });
        }
        out.extend(expired.into_iter().filter_map(|seq| {
            let p = self.pending.remove(&seq)?;
            Some(Timeout::Expired {
                peer: p.peer,
                seq,
                context: p.context,
            })
        }));
        out
    }
}

/// A request as the responder knows it: who sent it, its sequence number and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    pub peer: SocketAddr,
    pub seq: u32,
    pub msg_type: u8,
    /// Hash of the request's bytes: a retransmission is byte-identical (§7.6), so
    /// the same peer, number and type with other content is a new request (e.g.
    /// from a peer that restarted its numbering), not a duplicate.
    content: u64,
}

impl RequestId {
    fn key(&self) -> (SocketAddr, u32, u8) {
        (self.peer, self.seq, self.msg_type)
    }
}

/// What [`Responder::on_request`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A request not answered yet: process it, then [`Responder::respond`].
    Fresh(RequestId, Box<Gtpv2>),
    /// A retransmission of a request already answered: send these bytes back to its
    /// peer, without processing it again.
    Duplicate(&'a [u8]),
}

#[derive(Debug, Clone)]
struct Cached {
    content: u64,
    expires: Instant,
    response: Vec<u8>,
}

/// The responses sent recently, kept for the peers' retransmission window.
#[derive(Debug, Clone)]
pub struct Responder {
    hold: Duration,
    capacity: usize,
    cache: HashMap<(SocketAddr, u32, u8), Cached>,
    /// Cache keys oldest first, each once; with one hold time for all, also by expiry.
    order: VecDeque<(SocketAddr, u32, u8)>,
}

impl Responder {
    /// Keeps each response for the peers' whole retransmission window
    /// (`peer_timers.window()`), and at most `capacity` of them (the oldest go first).
    pub fn new(peer_timers: Timers, capacity: usize) -> Self {
        Responder {
            hold: peer_timers.window(),
            capacity: capacity.max(1),
            cache: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A datagram from `peer` that should be a request.
    pub fn on_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<Incoming<'_>, Error> {
        self.expire(now);
        let h = decode_header(bytes)?;
        if !msg_type::is_request(h.msg_type) {
            return Err(Error::Unexpected(h.msg_type, "a request"));
        }
        let id = RequestId {
            peer,
            seq: h.seq,
            msg_type: h.msg_type,
            content: hash(&bytes[..h.end]),
        };
        // Checked before decoding: a retransmission is not worth decoding again.
        if let Some(c) = self
            .cache
            .get(&id.key())
            .filter(|c| c.content == id.content)
        {
            return Ok(Incoming::Duplicate(&c.response));
        }
        Ok(Incoming::Fresh(id, Box::new(decode(bytes)?)))
    }

    /// Encodes the response to the request `id` with that request's sequence number
    /// (a triggered message copies it, §7.6), caches it and returns the bytes to send.
    pub fn respond(
        &mut self,
        now: Instant,
        id: RequestId,
        teid: Option<u32>,
        msg: Message,
    ) -> Result<&[u8], Error> {
        if msg.is_request() {
            return Err(Error::Unexpected(msg.msg_type(), "a response"));
        }
        let response = Gtpv2 {
            teid,
            seq: id.seq,
            msg,
        }
        .encode()?;
        self.expire(now);
        let key = id.key();
        if self.cache.remove(&key).is_some() {
            // A new request reusing a cached number: its answer replaces the old one
            // and goes to the back, so `order` stays sorted by expiry.
            self.order.retain(|k| *k != key);
        }
        while self.cache.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.cache.remove(&old);
        }
        self.order.push_back(key);
        self.cache.insert(
            key,
            Cached {
                content: id.content,
                expires: now + self.hold,
                response,
            },
        );
        Ok(&self.cache[&key].response)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(key) = self.order.front() {
            if self.cache.get(key).is_some_and(|c| c.expires > now) {
                break;
            }
            self.cache.remove(key);
            self.order.pop_front();
        }
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
