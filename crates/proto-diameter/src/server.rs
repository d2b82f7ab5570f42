//! Sans-IO Diameter server peer (RFC 6733 5, watchdog per RFC 3539): one per accepted
//! connection, as the HSS runs it towards each MME. The owner moves bytes and time in and out:
//!
//! ```text
//! accept TCP; let mut peer = ServerPeer::new(cfg, now)
//! loop {
//!     while let Some(ev) = peer.poll_event() { ... }      // Open, Request => peer.answer(..), Closed
//!     while let Some(bytes) = peer.poll_transmit() { write_all(bytes) }
//!     if peer.state() == ServerState::Closed { close TCP; break }
//!     select! { read => peer.handle_input(&buf, now),
//!               sleep_until(peer.poll_timeout()) => peer.handle_timeout(now) }
//! }
//! ```
//!
//! It answers the CER (the connection opens when S6a is common to both), DWR and DPR, sends
//! its own DWR to a silent client, answers requests for other applications with an error and
//! hands S6a requests to the owner. The owner may also send S6a requests toward the client
//! ([`ServerPeer::request`], e.g. the HSS's Cancel-Location): their answers, or their
//! failure, come back as events. Everything that ends the connection is a
//! [`ServerEvent::Closed`] with the reason; the owner closes the transport after writing what
//! is queued (the CEA with 5010, the DPA).

use crate::base::{self, Identity, PeerCapabilities};
use crate::codes::*;
use crate::link::Link;
use crate::outstanding::Outstanding;
use crate::Message;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub identity: Identity,
    /// Tw of RFC 3539 toward the client. Clients (the MME: 6 s) normally probe first, so this
    /// only catches a client gone silent.
    pub watchdog_interval: Duration,
    /// How long a new connection may stay silent before its CER, so sockets that never
    /// speak Diameter do not pile up (RFC 6733 5.6.1 leaves the value to us).
    pub cer_timeout: Duration,
    /// How long a request of ours (CLR) waits for its answer.
    pub request_timeout: Duration,
}

impl ServerConfig {
    /// RFC 3539's default Tw of 30 s, and 10 s for the CER.
    pub fn new(identity: Identity) -> Self {
        ServerConfig {
            identity,
            watchdog_interval: Duration::from_secs(30),
            cer_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Connected, waiting for the client's CER.
    WaitCer,
    /// Capabilities exchanged; S6a requests flow.
    Open,
    /// Done; the owner writes what is queued and closes the transport.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// CER accepted (CEA with DIAMETER_SUCCESS queued): the client's capabilities.
    Open(PeerCapabilities),
    /// An S6a request; reply with [`ServerPeer::answer`] (build it with `Message::answer_to`
    /// or a typed answer's `to_message(&request)`, which keep the request's ids).
    Request(Message),
    /// The answer to the request [`ServerPeer::request`] returned `hop_by_hop` for.
    Answer { hop_by_hop: u32, message: Message },
    /// A request of ours got no answer in time, or the connection ended before it.
    RequestFailed {
        hop_by_hop: u32,
        command_code: u32,
        reason: String,
    },
    /// The connection is over, and why.
    Closed(String),
}

/// Server side of one Diameter connection.
#[derive(Debug)]
pub struct ServerPeer {
    cfg: ServerConfig,
    state: ServerState,
    link: Link,
    events: VecDeque<ServerEvent>,
    cer_deadline: Instant,
    remote: Option<PeerCapabilities>,
    requests: Outstanding,
}

/// [`ServerPeer::request`] outside the open state: the client cannot take requests yet (or
/// any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Diameter connection is not open (state {0:?})")]
pub struct NotOpen(pub ServerState);

impl ServerPeer {
    /// A connection just accepted at `now`.
    pub fn new(cfg: ServerConfig, now: Instant) -> Self {
        ServerPeer {
            state: ServerState::WaitCer,
            link: Link::new(cfg.identity.origin_state_id, cfg.watchdog_interval, now),
            events: VecDeque::new(),
            cer_deadline: now + cfg.cer_timeout,
            remote: None,
            requests: Outstanding::default(),
            cfg,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Capabilities the client announced in its CER, once accepted.
    pub fn remote(&self) -> Option<&PeerCapabilities> {
        self.remote.as_ref()
    }

    /// Queues the answer to a [`ServerEvent::Request`]. Also after `Closed` (a DPR right
    /// behind the request), so requests already taken are still answered before the close.
    pub fn answer(&mut self, msg: Message) {
        self.link.send_answer(msg);
    }

    /// Sends an S6a request to the client (ids assigned here); returns its hop-by-hop id,
    /// which the matching [`ServerEvent::Answer`] or [`ServerEvent::RequestFailed`] carries.
    pub fn request(&mut self, msg: Message, now: Instant) -> Result<u32, NotOpen> {
        if self.state != ServerState::Open {
            return Err(NotOpen(self.state));
        }
        let code = msg.command_code;
        let hbh = self.link.send_request(msg);
        self.requests
            .insert(hbh, code, now + self.cfg.request_timeout);
        Ok(hbh)
    }

    /// Next bytes to write to the transport.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.link.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Bytes read from the transport (any fragmentation, any number of messages).
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.state == ServerState::Closed {
            return;
        }
        self.link.push(data);
        while self.state != ServerState::Closed {
            match self.link.next_message(now) {
                Ok(Some(m)) => self.on_message(m),
                Ok(None) => return,
                // The stream is out of sync; nothing after this can be trusted.
                Err(e) => self.close(format!("undecodable data from Diameter client: {e}")),
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ServerState::WaitCer => Some(self.cer_deadline),
            ServerState::Open => Some(
                self.requests
                    .next_deadline()
                    .map_or(self.link.watchdog_deadline(), |d| {
                        d.min(self.link.watchdog_deadline())
                    }),
            ),
            ServerState::Closed => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            ServerState::WaitCer => {
                if now >= self.cer_deadline {
                    self.close(format!("no CER within {:?}", self.cfg.cer_timeout));
                }
            }
            ServerState::Open => {
                for (hop_by_hop, command_code) in self.requests.expire(now) {
                    self.events.push_back(ServerEvent::RequestFailed {
                        hop_by_hop,
                        command_code,
                        reason: "no answer in time".into(),
                    });
                }
                if self.link.watchdog_timeout(now, &self.cfg.identity) {
                    self.close("Diameter watchdog expired: no DWA from client".into());
                }
            }
            ServerState::Closed => {}
        }
    }

    fn on_message(&mut self, m: Message) {
        let is_cer = m.is_request() && m.command_code == CMD_CAPABILITIES_EXCHANGE;
        if self.state == ServerState::WaitCer && !is_cer {
            // RFC 6733 5.6.1: until its CER a connection belongs to no peer, and anything else
            // closes it unanswered.
            return self.close(format!("{} before CER", m.name()));
        }
        if !m.is_request() {
            if self.requests.take(m.hop_by_hop) {
                return self.events.push_back(ServerEvent::Answer {
                    hop_by_hop: m.hop_by_hop,
                    message: m,
                });
            }
            // RFC 6733 6.2: an answer matching no request of ours is discarded (the DWA to our
            // DWR never gets here).
            tracing::debug!(hop_by_hop = m.hop_by_hop, cmd = %m.name(), "unexpected Diameter answer dropped");
            return;
        }
        let id = &self.cfg.identity;
        match (m.command_code, m.application_id) {
            // Also in the open state: RFC 6733 5.6, R-Open + R-Rcv-CER answers with a CEA.
            (CMD_CAPABILITIES_EXCHANGE, _) => self.on_cer(&m),
            (CMD_DEVICE_WATCHDOG, _) => self.link.send_answer(base::dwa(&m, id)),
            (CMD_DISCONNECT_PEER, _) => {
                self.link.send_answer(base::dpa(&m, id));
                self.close("client sent DPR".into());
            }
            (_, APP_S6A) => self.events.push_back(ServerEvent::Request(m)),
            (_, APP_COMMON) => {
                let text = format!("base protocol command {} not supported", m.command_code);
                let ans = base::error_answer(&m, id, DIAMETER_COMMAND_UNSUPPORTED, &text);
                self.link.send_answer(ans);
            }
            (app, _) => {
                // Not advertised in our CEA, so the client should not have sent it.
                let text = format!("application {app} not supported");
                let ans = base::error_answer(&m, id, DIAMETER_APPLICATION_UNSUPPORTED, &text);
                self.link.send_answer(ans);
            }
        }
    }

    fn on_cer(&mut self, m: &Message) {
        let id = &self.cfg.identity;
        let caps = match PeerCapabilities::from_message(m) {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                let cea = base::cea(m, id, e.result_code()).with(base::error_message(&text));
                self.link.send_answer(cea);
                return self.close(format!("invalid CER: {e}"));
            }
        };
        // RFC 6733 5.3: no application in common is a CEA with 5010, then the transport
        // SHOULD be closed. S6a is the only application this crate speaks.
        if !caps.supports_s6a() {
            let cea = base::cea(m, id, DIAMETER_NO_COMMON_APPLICATION);
            self.link.send_answer(cea);
            return self.close(format!("CER from {} without S6a", caps.origin_host));
        }
        self.link.send_answer(base::cea(m, id, DIAMETER_SUCCESS));
        self.state = ServerState::Open;
        self.remote = Some(caps.clone());
        self.events.push_back(ServerEvent::Open(caps));
    }

    fn close(&mut self, reason: String) {
        self.state = ServerState::Closed;
        for (hop_by_hop, command_code) in self.requests.drain() {
            self.events.push_back(ServerEvent::RequestFailed {
                hop_by_hop,
                command_code,
                reason: format!("connection closed: {reason}"),
            });
        }
        self.events.push_back(ServerEvent::Closed(reason));
    }
}
