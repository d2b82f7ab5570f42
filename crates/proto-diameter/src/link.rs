//! What both ends of a Diameter connection do alike, whoever opened it: reassembling messages
//! from the byte stream, queueing output, numbering our own requests (RFC 6733 3) and the
//! watchdog of RFC 3539 (a DWR after Tw of silence; a connection whose DWR stays unanswered
//! for another Tw is dead). [`ClientPeer`](crate::ClientPeer) and
//! [`ServerPeer`](crate::ServerPeer) differ only in the handshake and in what they accept.

use crate::base::{self, Identity};
use crate::codes::CMD_DEVICE_WATCHDOG;
use crate::{Framer, Message, Result};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Link {
    framer: Framer,
    outbox: VecDeque<Vec<u8>>,
    next_hop_by_hop: u32,
    next_end_to_end: u32,
    /// Tw of RFC 3539.
    watchdog_interval: Duration,
    last_rx: Instant,
    /// When our outstanding DWR was sent; any message from the peer clears it.
    dwr_sent: Option<Instant>,
    /// Hop-by-hop id of our last DWR, so its DWA is recognised even when other traffic
    /// already proved the peer alive.
    dwr_hop_by_hop: Option<u32>,
}

impl Link {
    pub(crate) fn new(origin_state_id: u32, watchdog_interval: Duration, now: Instant) -> Self {
        // RFC 6733 3: end-to-end ids start with the low 12 bits of a time value in the high
        // bits; Origin-State-Id is our restart time, so ids differ across restarts.
        Link {
            framer: Framer::new(),
            outbox: VecDeque::new(),
            next_hop_by_hop: origin_state_id.wrapping_mul(2_654_435_761),
            next_end_to_end: (origin_state_id & 0xfff) << 20,
            watchdog_interval,
            last_rx: now,
            dwr_sent: None,
            dwr_hop_by_hop: None,
        }
    }

    /// A new transport: nothing buffered, queued or outstanding carries over; ids keep
    /// counting so a late answer from the old connection cannot match a new request.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.framer = Framer::new();
        self.outbox.clear();
        self.last_rx = now;
        self.dwr_sent = None;
        self.dwr_hop_by_hop = None;
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.framer.push(data);
    }

    /// Next complete message from the peer. Any message restarts the watchdog (RFC 3539
    /// 3.4.1); the DWA to our own DWR is consumed here.
    pub(crate) fn next_message(&mut self, now: Instant) -> Result<Option<Message>> {
        while let Some(m) = self.framer.next_message()? {
            self.last_rx = now;
            self.dwr_sent = None;
            let ours = !m.is_request()
                && m.command_code == CMD_DEVICE_WATCHDOG
                && self.dwr_hop_by_hop == Some(m.hop_by_hop);
            if !ours {
                return Ok(Some(m));
            }
            self.dwr_hop_by_hop = None;
        }
        Ok(None)
    }

    /// Queues a request with fresh hop-by-hop and end-to-end ids; returns the hop-by-hop id.
    pub(crate) fn send_request(&mut self, mut msg: Message) -> u32 {
        let hbh = self.next_hop_by_hop;
        self.next_hop_by_hop = self.next_hop_by_hop.wrapping_add(1);
        msg.hop_by_hop = hbh;
        msg.end_to_end = self.next_end_to_end;
        self.next_end_to_end = self.next_end_to_end.wrapping_add(1);
        self.outbox.push_back(msg.encode());
        hbh
    }

    /// Queues an answer as built (its ids are the request's, from `Message::answer_to`).
    pub(crate) fn send_answer(&mut self, msg: Message) {
        self.outbox.push_back(msg.encode());
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// When the watchdog next needs [`watchdog_timeout`](Self::watchdog_timeout).
    pub(crate) fn watchdog_deadline(&self) -> Instant {
        self.dwr_sent.unwrap_or(self.last_rx) + self.watchdog_interval
    }

    /// Sends a DWR after Tw of silence. Returns true when the previous DWR went unanswered
    /// for Tw: the connection is dead and the caller closes it.
    #[must_use]
    pub(crate) fn watchdog_timeout(&mut self, now: Instant, id: &Identity) -> bool {
        if now < self.watchdog_deadline() {
            return false;
        }
        if self.dwr_sent.is_some() {
            return true;
        }
        let hbh = self.send_request(base::dwr(id));
        self.dwr_hop_by_hop = Some(hbh);
        self.dwr_sent = Some(now);
        false
    }
}
