//! Sans-IO Diameter client peer (RFC 6733 5, watchdog per RFC 3539), as used by the MME
//! towards the HSS. The owner moves bytes and time in and out:
//!
//! ```text
//! connect TCP; peer.connect(now)
//! loop {
//!     while let Some(bytes) = peer.poll_transmit() { write_all(bytes) }
//!     while let Some(ev) = peer.poll_event() { ... }        // Open, Answer, Failed, ...
//!     select! { read => peer.handle_input(&buf, now),
//!               sleep_until(peer.poll_timeout()) => peer.handle_timeout(now),
//!               app request => { let hbh = peer.request(msg, now)?; ... } }
//! }
//! ```
//!
//! It runs the CER/CEA exchange, answers DWR and DPR from the server, sends DWR when the link
//! is idle for the watchdog interval and reports failure when no answer comes, assigns
//! hop-by-hop and end-to-end ids and matches answers to requests (with a timeout per request).

use crate::base::{self, Identity, PeerCapabilities, SessionIds};
use crate::codes::*;
use crate::link::Link;
use crate::outstanding::Outstanding;
use crate::Message;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub identity: Identity,
    /// Tw of RFC 3539: idle time before a DWR, and how long to wait for its answer.
    pub watchdog_interval: Duration,
    /// How long an application request waits for its answer.
    pub request_timeout: Duration,
    /// How long to wait for CEA (and DPA).
    pub handshake_timeout: Duration,
}

impl PeerConfig {
    /// Lab defaults: a 6 s watchdog detects an HSS outage (or a long migration freeze) quickly
    /// without flooding the link; RFC 3539 allows Tw down to 6 s.
    pub fn new(identity: Identity) -> Self {
        PeerConfig {
            identity,
            watchdog_interval: Duration::from_secs(6),
            request_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// No transport, or it failed.
    Closed,
    /// CER sent, waiting for CEA.
    WaitCea,
    /// Capabilities exchanged; application requests may flow.
    Open,
    /// DPR sent, waiting for DPA.
    Closing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// CEA received with success and S6a support.
    Open(PeerCapabilities),
    /// The answer to the request `request()` returned `hop_by_hop` for.
    Answer { hop_by_hop: u32, message: Message },
    /// An application request from the server (e.g. Cancel-Location); reply with `answer()`.
    Request(Message),
    /// A request got no answer in time, or the connection went away before it.
    RequestFailed {
        hop_by_hop: u32,
        command_code: u32,
        reason: String,
    },
    /// The connection is unusable (CEA rejected, watchdog expired, garbage received): the owner
    /// should close the transport and may reconnect.
    Failed(String),
    /// Orderly close finished (DPA received, or the server's DPR answered).
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("Diameter peer is not open (state {0:?}); wait for PeerEvent::Open")]
    NotOpen(PeerState),
}

/// The base-protocol request of ours in flight: its answer drives the state machine.
#[derive(Debug, Clone, Copy)]
enum Handshake {
    Cer(u32),
    Dpr(u32),
}

/// Client side of one Diameter connection.
#[derive(Debug)]
pub struct ClientPeer {
    cfg: PeerConfig,
    state: PeerState,
    link: Link,
    events: VecDeque<PeerEvent>,
    handshake: Option<Handshake>,
    requests: Outstanding,
    /// CEA / DPA deadline.
    handshake_deadline: Option<Instant>,
    remote: Option<PeerCapabilities>,
    sessions: SessionIds,
}

impl ClientPeer {
    pub fn new(cfg: PeerConfig, now: Instant) -> Self {
        let seed = cfg.identity.origin_state_id;
        let sessions = SessionIds::new(&cfg.identity.origin_host, seed);
        ClientPeer {
            state: PeerState::Closed,
            link: Link::new(seed, cfg.watchdog_interval, now),
            events: VecDeque::new(),
            handshake: None,
            requests: Outstanding::default(),
            handshake_deadline: None,
            remote: None,
            sessions,
            cfg,
        }
    }

    pub fn state(&self) -> PeerState {
        self.state
    }

    /// Capabilities the server announced in its CEA.
    pub fn remote(&self) -> Option<&PeerCapabilities> {
        self.remote.as_ref()
    }

    pub fn identity(&self) -> &Identity {
        &self.cfg.identity
    }

    /// A fresh Session-Id for a new S6a transaction.
    pub fn new_session_id(&mut self) -> String {
        self.sessions.next_id()
    }

    /// The transport is connected: start the capabilities exchange. Also used to reconnect,
    /// which forgets everything about the previous connection.
    pub fn connect(&mut self, now: Instant) {
        self.fail_pending("connection replaced");
        self.link.reset(now);
        self.remote = None;
        let cer = base::cer(&self.cfg.identity);
        self.handshake = Some(Handshake::Cer(self.link.send_request(cer)));
        self.state = PeerState::WaitCea;
        self.handshake_deadline = Some(now + self.cfg.handshake_timeout);
    }

    /// Sends an application request (ids are assigned here); returns its hop-by-hop id, which
    /// the matching [`PeerEvent::Answer`] carries.
    pub fn request(&mut self, msg: Message, now: Instant) -> Result<u32, PeerError> {
        if self.state != PeerState::Open {
            return Err(PeerError::NotOpen(self.state));
        }
        let code = msg.command_code;
        let hbh = self.link.send_request(msg);
        self.requests
            .insert(hbh, code, now + self.cfg.request_timeout);
        Ok(hbh)
    }

    /// Sends an answer to a [`PeerEvent::Request`] (build it with `Message::answer_to`).
    pub fn answer(&mut self, msg: Message) {
        self.link.send_answer(msg);
    }

    /// Starts an orderly close with DPR; [`PeerEvent::Closed`] follows.
    pub fn disconnect(&mut self, now: Instant) {
        if matches!(self.state, PeerState::Open | PeerState::WaitCea) {
            let dpr = base::dpr(&self.cfg.identity, DISCONNECT_CAUSE_REBOOTING);
            self.handshake = Some(Handshake::Dpr(self.link.send_request(dpr)));
            self.state = PeerState::Closing;
            self.handshake_deadline = Some(now + self.cfg.handshake_timeout);
        }
    }

    /// The transport closed or failed underneath us.
    pub fn transport_closed(&mut self) {
        self.state = PeerState::Closed;
        self.handshake_deadline = None;
        self.fail_pending("connection closed");
    }

    /// Next bytes to write to the transport.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.link.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Bytes read from the transport (any fragmentation).
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.state == PeerState::Closed {
            return;
        }
        self.link.push(data);
        while self.state != PeerState::Closed {
            match self.link.next_message(now) {
                Ok(Some(m)) => self.on_message(m),
                Ok(None) => return,
                Err(e) => self.fail(format!("undecodable data from Diameter server: {e}")),
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let watchdog = (self.state == PeerState::Open).then(|| self.link.watchdog_deadline());
        watchdog
            .into_iter()
            .chain(self.handshake_deadline)
            .chain(self.requests.next_deadline())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.handshake_deadline {
            if now >= d {
                match self.state {
                    PeerState::WaitCea => return self.fail("no CEA from Diameter server".into()),
                    PeerState::Closing => {
                        self.transport_closed();
                        self.events.push_back(PeerEvent::Closed);
                        return;
                    }
                    _ => self.handshake_deadline = None,
                }
            }
        }
        if self.state == PeerState::Open && self.link.watchdog_timeout(now, &self.cfg.identity) {
            return self.fail("Diameter watchdog expired: no DWA from server".into());
        }
        for (hop_by_hop, command_code) in self.requests.expire(now) {
            self.events.push_back(PeerEvent::RequestFailed {
                hop_by_hop,
                command_code,
                reason: "no answer in time".into(),
            });
        }
    }

    fn on_message(&mut self, m: Message) {
        if m.is_request() {
            return self.on_request(m);
        }
        match self.handshake {
            Some(Handshake::Cer(h)) if h == m.hop_by_hop => {
                self.handshake = None;
                self.on_cea(&m)
            }
            Some(Handshake::Dpr(h)) if h == m.hop_by_hop => {
                self.transport_closed();
                self.events.push_back(PeerEvent::Closed);
            }
            _ if self.requests.take(m.hop_by_hop) => self.events.push_back(PeerEvent::Answer {
                hop_by_hop: m.hop_by_hop,
                message: m,
            }),
            // RFC 6733 6.2: answers that match no request are discarded.
            _ => {
                tracing::debug!(hop_by_hop = m.hop_by_hop, cmd = %m.name(), "unexpected Diameter answer dropped")
            }
        }
    }

    fn on_cea(&mut self, m: &Message) {
        self.handshake_deadline = None;
        let caps = match PeerCapabilities::from_message(m) {
            Ok(c) => c,
            Err(e) => return self.fail(format!("bad CEA: {e}")),
        };
        if caps.result_code != Some(DIAMETER_SUCCESS) {
            return self.fail(format!(
                "CEA from {} rejected us: Result-Code {:?}",
                caps.origin_host, caps.result_code
            ));
        }
        if !caps.supports_s6a() {
            return self.fail(format!("peer {} does not support S6a", caps.origin_host));
        }
        self.state = PeerState::Open;
        self.remote = Some(caps.clone());
        self.events.push_back(PeerEvent::Open(caps));
    }

    fn on_request(&mut self, m: Message) {
        let id = &self.cfg.identity;
        match m.command_code {
            CMD_DEVICE_WATCHDOG => self.answer(base::dwa(&m, id)),
            CMD_DISCONNECT_PEER => {
                let dpa = base::dpa(&m, id);
                self.answer(dpa);
                self.state = PeerState::Closed;
                self.fail_pending("server disconnected");
                self.events.push_back(PeerEvent::Closed);
            }
            CMD_CAPABILITIES_EXCHANGE => {
                // We are the initiator; a CER from the server is a protocol violation.
                let ans =
                    base::error_answer(&m, id, DIAMETER_UNABLE_TO_COMPLY, "CER from responder");
                self.answer(ans);
            }
            _ if self.state == PeerState::Open => self.events.push_back(PeerEvent::Request(m)),
            _ => {
                let ans = base::error_answer(&m, id, DIAMETER_UNABLE_TO_DELIVER, "peer not open");
                self.answer(ans);
            }
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::warn!(%reason, "Diameter peer failed");
        self.transport_closed();
        self.events.push_back(PeerEvent::Failed(reason));
    }

    fn fail_pending(&mut self, reason: &str) {
        self.handshake = None;
        for (hop_by_hop, command_code) in self.requests.drain() {
            self.events.push_back(PeerEvent::RequestFailed {
                hop_by_hop,
                command_code,
                reason: reason.to_string(),
            });
        }
    }
}
