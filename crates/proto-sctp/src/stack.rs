//! Sans-IO SCTP endpoint for S1AP: `sctp-proto` associations plus what S1AP needs
//! on top (PPID 18 on the wire, tuned RTO, HEARTBEAT path monitoring, ABORT on close).
//! The caller feeds datagrams and time in and takes datagrams and events out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sctp_proto::{
    AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    PayloadProtocolIdentifier, ServerConfig, StreamEvent, TransportConfig,
};
use thiserror::Error;

use crate::wire;

/// S1AP's payload protocol identifier (IANA; TS 36.412 §7).
pub const PPID_S1AP: u32 = 18;
/// S1AP's SCTP port (TS 36.412 §7), used for the SCTP ports inside the UDP encapsulation.
pub const SCTP_PORT_S1AP: u16 = 36412;
/// The PPID sctp-proto writes for binary messages; we swap it with the configured one
/// on the wire (sctp-proto has no way to send an arbitrary PPID: its enum only knows
/// WebRTC values and encodes anything else as 58).
const PPID_INTERNAL: u32 = PayloadProtocolIdentifier::Binary as u32;

/// Tunables. Defaults follow 3GPP practice for S1-MME (RTO.min/initial in the
/// 50–200 ms range) so that an association recovers within a few hundred ms after
/// its peer was paused (e.g. a CRIU checkpoint), instead of sctp-proto's 1 s/3 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SctpConfig {
    /// PPID put on every outgoing DATA chunk and reported on incoming ones.
    pub ppid: u32,
    /// SCTP source/destination port used when connecting.
    pub sctp_port: u16,
    pub rto_initial_ms: u64,
    pub rto_min_ms: u64,
    pub rto_max_ms: u64,
    /// INIT retransmissions before a connect fails (`None`: forever).
    pub max_init_retransmits: Option<usize>,
    /// HEARTBEAT interval while the path is idle; 0 disables path monitoring.
    pub heartbeat_interval_ms: u64,
    /// Consecutive unanswered HEARTBEATs (with no other packet from the peer) after
    /// which the association is declared lost (RFC 4960 Path.Max.Retrans).
    pub max_missed_heartbeats: u32,
    /// UDP driver only: write every datagram sent or received to this pcap file
    /// (IPv4/UDP records that Wireshark decodes as SCTP on port 9899).
    pub pcap: Option<std::path::PathBuf>,
}

impl Default for SctpConfig {
    fn default() -> Self {
        SctpConfig {
            ppid: PPID_S1AP,
            sctp_port: SCTP_PORT_S1AP,
            rto_initial_ms: 200,
            rto_min_ms: 100,
            rto_max_ms: 400,
            max_init_retransmits: Some(8),
            heartbeat_interval_ms: 2000,
            max_missed_heartbeats: 5,
            pcap: None,
        }
    }
}

/// The tunables an operator sets in a function's config file (the `[sctp]` table of the
/// MME's and the eNB's TOML); the rest of [`SctpConfig`] is fixed by S1AP or per run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SctpTuning {
    pub rto_initial_ms: u64,
    pub rto_min_ms: u64,
    pub rto_max_ms: u64,
    /// HEARTBEAT interval in ms while the path is idle; 0 disables path monitoring.
    pub heartbeat_interval_ms: u64,
    pub max_missed_heartbeats: u32,
}

impl Default for SctpTuning {
    fn default() -> Self {
        let d = SctpConfig::default();
        SctpTuning {
            rto_initial_ms: d.rto_initial_ms,
            rto_min_ms: d.rto_min_ms,
            rto_max_ms: d.rto_max_ms,
            heartbeat_interval_ms: d.heartbeat_interval_ms,
            max_missed_heartbeats: d.max_missed_heartbeats,
        }
    }
}

impl SctpTuning {
    /// Rejects values the stack cannot work with, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rto_min_ms == 0 || self.rto_initial_ms == 0 {
            return Err("sctp.rto_min_ms and sctp.rto_initial_ms must be > 0".into());
        }
        Ok(())
    }

    /// The S1AP endpoint configuration with these tunables.
    pub fn config(&self) -> SctpConfig {
        SctpConfig {
            rto_initial_ms: self.rto_initial_ms,
            rto_min_ms: self.rto_min_ms,
            rto_max_ms: self.rto_max_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            max_missed_heartbeats: self.max_missed_heartbeats,
            ..SctpConfig::default()
        }
    }
}

impl SctpConfig {
    fn transport(&self) -> Arc<TransportConfig> {
        Arc::new(
            TransportConfig::default()
                .with_rto_initial_ms(self.rto_initial_ms)
                .with_rto_min_ms(self.rto_min_ms)
                .with_rto_max_ms(self.rto_max_ms.max(self.rto_min_ms))
                .with_max_init_retransmits(self.max_init_retransmits)
                // DATA is retransmitted until the heartbeat monitor gives up: a peer
                // that is only paused (migrating) must not lose the association.
                .with_max_data_retransmits(None)
                .with_local_port(self.sctp_port)
                .with_remote_port(self.sctp_port),
        )
    }
}

/// Our own association id: stable for the association's life and never reused
/// (sctp-proto's handles are slab indices that are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssocId(pub u64);

impl std::fmt::Display for AssocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "assoc#{}", self.0)
    }
}

/// One user message received on an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SctpMessage {
    pub assoc: AssocId,
    pub stream: u16,
    pub ppid: u32,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SctpEvent {
    /// The association is established (either side).
    Up {
        assoc: AssocId,
        peer: SocketAddr,
    },
    Message(SctpMessage),
    /// The association is gone (ABORT, handshake failure, heartbeat failure, close).
    Down {
        assoc: AssocId,
        reason: String,
    },
}

#[derive(Debug, Error)]
pub enum SctpError {
    #[error("unknown or closed association {0}")]
    UnknownAssociation(AssocId),
    #[error("association {0} is not established yet")]
    NotEstablished(AssocId),
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, String),
    #[error("SCTP send on {0}: {1}")]
    Send(AssocId, String),
}

/// HEARTBEAT bookkeeping of one association (RFC 4960 §8.3, single path).
#[derive(Debug)]
struct PathMonitor {
    last_rx: Instant,
    next_check: Instant,
    missed: u32,
    sent: u64,
}

struct Assoc {
    id: AssocId,
    inner: sctp_proto::Association,
    peer: SocketAddr,
    up: bool,
    /// (our SCTP port, peer SCTP port, peer's verification tag), learned from the
    /// packets sctp-proto sends once it knows them; needed to build HEARTBEAT/ABORT.
    tags: Option<(u16, u16, u32)>,
    path: PathMonitor,
}

/// A set of SCTP associations on one UDP socket, without the socket.
pub struct SctpStack {
    cfg: SctpConfig,
    endpoint: Endpoint,
    assocs: HashMap<AssociationHandle, Assoc>,
    next_id: u64,
    events: VecDeque<SctpEvent>,
    transmits: VecDeque<(SocketAddr, Bytes)>,
}

impl SctpStack {
    /// `accept`: whether INITs from new peers create associations (server role).
    pub fn new(cfg: SctpConfig, accept: bool) -> Self {
        // sctp-proto unwraps its server config on any INIT that matches no association
        // (endpoint/mod.rs, handle_first_packet), so a client-only endpoint would panic
        // on a stray INIT. Give every endpoint a server config and make a client one
        // refuse new associations instead.
        let mut server = ServerConfig::new();
        server.transport = cfg.transport();
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::new()), Some(Arc::new(server)));
        if !accept {
            endpoint.reject_new_associations();
        }
        SctpStack {
            endpoint,
            cfg,
            assocs: HashMap::new(),
            next_id: 1,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &SctpConfig {
        &self.cfg
    }

    fn add(
        &mut self,
        now: Instant,
        ch: AssociationHandle,
        inner: sctp_proto::Association,
    ) -> AssocId {
        let id = AssocId(self.next_id);
        self.next_id += 1;
        let peer = inner.remote_addr();
        self.assocs.insert(
            ch,
            Assoc {
                id,
                inner,
                peer,
                up: false,
                tags: None,
                path: PathMonitor {
                    last_rx: now,
                    next_check: now + self.hb_interval(),
                    missed: 0,
                    sent: 0,
                },
            },
        );
        id
    }

    fn hb_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_interval_ms.max(1))
    }

    /// Starts an association towards `remote` (client role). `Up` follows when the
    /// handshake completes, `Down` if it fails.
    pub fn connect(&mut self, now: Instant, remote: SocketAddr) -> Result<AssocId, SctpError> {
        let mut cc = ClientConfig::new();
        cc.transport = self.cfg.transport();
        let (ch, inner) = self
            .endpoint
            .connect(cc, remote)
            .map_err(|e| SctpError::Connect(remote, e.to_string()))?;
        let id = self.add(now, ch, inner);
        self.drive(now);
        Ok(id)
    }

    /// Feeds one received UDP datagram. Bad packets are dropped (and logged).
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) {
        if !wire::checksum_ok(data) {
            tracing::debug!(%remote, len = data.len(), "SCTP packet with bad checksum dropped");
            return;
        }
        let view = match wire::parse(data) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(%remote, "malformed SCTP packet dropped: {e}");
                return;
            }
        };
        // Liveness: any valid packet from a known peer counts (RFC 4960 §8.3 allows
        // clearing the error counter on any acknowledged traffic).
        if let Some(a) = self
            .assocs
            .values_mut()
            .find(|a| a.peer == remote && a.tags.is_some_and(|t| t.0 == view.dst_port))
        {
            a.path.last_rx = now;
            a.path.missed = 0;
        }
        // sctp-proto fails a whole packet on a chunk it does not handle (HEARTBEAT ACK,
        // CWR, ECNE, unknown types) and turns an ERROR chunk into an abort. Keep only
        // what it handles; HEARTBEAT ACKs were already counted as liveness above.
        let mut keep = Vec::with_capacity(view.chunks.len());
        for c in &view.chunks {
            match c.chunk_type {
                0..=4 | 6..=8 | 10 | 11 | 14 | 130 | 192 | 194 => keep.push(*c),
                wire::CT_HEARTBEAT_ACK => {}
                wire::CT_ERROR => tracing::info!(%remote, "SCTP ERROR chunk from peer ignored"),
                // RFC 4960 §3.2: the two high bits say whether to skip an unknown
                // chunk (1x) or to stop processing the packet (0x).
                t if t & 0x80 != 0 => {}
                _ => break,
            }
        }
        if keep.is_empty() {
            return;
        }
        let filtered;
        let data = if keep.len() == view.chunks.len() {
            data
        } else {
            filtered = wire::retain_chunks(data, &view, &keep);
            &filtered[..]
        };
        let mut pkt = data.to_vec();
        if let Err(e) = wire::rewrite_data_ppid(&mut pkt, self.cfg.ppid, PPID_INTERNAL) {
            tracing::debug!(%remote, "malformed SCTP DATA dropped: {e}");
            return;
        }
        match self
            .endpoint
            .handle(now, remote, None, None, Bytes::from(pkt))
        {
            Some((ch, DatagramEvent::NewAssociation(inner))) => {
                let id = self.add(now, ch, inner);
                tracing::debug!(%remote, %id, "new SCTP association");
            }
            Some((ch, DatagramEvent::AssociationEvent(ev))) => {
                if let Some(a) = self.assocs.get_mut(&ch) {
                    a.inner.handle_event(ev);
                }
            }
            None => {}
        }
        self.drive(now);
    }

    /// Earliest time at which [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let hb = self.cfg.heartbeat_interval_ms > 0;
        self.assocs
            .values()
            .flat_map(|a| {
                let p = (hb && a.up).then_some(a.path.next_check);
                a.inner.poll_timeout().into_iter().chain(p)
            })
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let interval = self.hb_interval();
        let mut failed = Vec::new();
        for (ch, a) in self.assocs.iter_mut() {
            a.inner.handle_timeout(now);
            if self.cfg.heartbeat_interval_ms == 0 || !a.up || now < a.path.next_check {
                continue;
            }
            if now < a.path.last_rx + interval {
                // Traffic seen recently: the path is confirmed, no HEARTBEAT needed.
                a.path.next_check = a.path.last_rx + interval;
                continue;
            }
            if a.path.missed >= self.cfg.max_missed_heartbeats {
                failed.push(*ch);
                continue;
            }
            if let Some((src, dst, tag)) = a.tags {
                a.path.sent += 1;
                a.path.missed += 1;
                let info = a.path.sent.to_be_bytes();
                let hb = wire::heartbeat_packet(src, dst, tag, &info);
                self.transmits.push_back((a.peer, Bytes::from(hb)));
            }
            a.path.next_check = now + interval;
        }
        for ch in failed {
            self.remove(
                ch,
                "path failure: peer did not answer HEARTBEATs".into(),
                true,
            );
        }
        self.drive(now);
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SctpEvent> {
        self.events.pop_front()
    }

    fn handle_of(&self, id: AssocId) -> Result<AssociationHandle, SctpError> {
        self.assocs
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(ch, _)| *ch)
            .ok_or(SctpError::UnknownAssociation(id))
    }

    /// Queues one message on `stream` (opened on first use).
    pub fn send(
        &mut self,
        now: Instant,
        id: AssocId,
        stream: u16,
        payload: &[u8],
    ) -> Result<(), SctpError> {
        let ch = self.handle_of(id)?;
        let a = self
            .assocs
            .get_mut(&ch)
            .ok_or(SctpError::UnknownAssociation(id))?;
        if !a.up {
            return Err(SctpError::NotEstablished(id));
        }
        let binary = PayloadProtocolIdentifier::Binary;
        if a.inner.stream(stream).is_err() {
            a.inner
                .open_stream(stream, binary)
                .map_err(|e| SctpError::Send(id, e.to_string()))?;
        }
        a.inner
            .stream(stream)
            .and_then(|mut s| s.write_with_ppi(payload, binary))
            .map_err(|e| SctpError::Send(id, e.to_string()))?;
        self.drive(now);
        Ok(())
    }

    /// Aborts the association (sends ABORT, reports `Down`).
    pub fn close(&mut self, now: Instant, id: AssocId) -> Result<(), SctpError> {
        let ch = self.handle_of(id)?;
        self.drive(now);
        self.remove(ch, "closed locally".into(), true);
        Ok(())
    }

    /// Established associations and their peers.
    pub fn associations(&self) -> Vec<(AssocId, SocketAddr)> {
        let mut v: Vec<_> = self
            .assocs
            .values()
            .filter(|a| a.up)
            .map(|a| (a.id, a.peer))
            .collect();
        v.sort();
        v
    }

    fn remove(&mut self, ch: AssociationHandle, reason: String, abort: bool) {
        let Some(mut a) = self.assocs.remove(&ch) else {
            return;
        };
        if abort {
            if let Some((src, dst, tag)) = a.tags {
                self.transmits
                    .push_back((a.peer, Bytes::from(wire::abort_packet(src, dst, tag))));
            }
        }
        let _ = a.inner.close();
        // Let the endpoint forget the association's ids.
        let _ = self
            .endpoint
            .handle_event(ch, sctp_proto::EndpointEvent::drained());
        tracing::info!(id = %a.id, peer = %a.peer, "SCTP association down: {reason}");
        self.events.push_back(SctpEvent::Down {
            assoc: a.id,
            reason,
        });
    }

    /// Moves everything sctp-proto produced into our queues.
    fn drive(&mut self, now: Instant) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.push_transmit(t, None);
        }
        let hb_interval = self.hb_interval();
        let handles: Vec<_> = self.assocs.keys().copied().collect();
        for ch in handles {
            let mut lost = None;
            let mut drained = false;
            let Some(a) = self.assocs.get_mut(&ch) else {
                continue;
            };
            while let Some(ev) = a.inner.poll_endpoint_event() {
                drained |= ev.is_drained();
            }
            while let Some(ev) = a.inner.poll() {
                match ev {
                    Event::Connected if !a.up => {
                        a.up = true;
                        a.path.last_rx = now;
                        a.path.next_check = now + hb_interval;
                        self.events.push_back(SctpEvent::Up {
                            assoc: a.id,
                            peer: a.peer,
                        });
                    }
                    Event::HandshakeFailed { reason } | Event::AssociationLost { reason } => {
                        lost = Some(reason.to_string());
                    }
                    Event::Stream(StreamEvent::Opened { id } | StreamEvent::Readable { id }) => {
                        // Pop the accept queue so it does not grow; we read by id.
                        while a.inner.accept_stream().is_some() {}
                        Self::read_stream(a, id, self.cfg.ppid, &mut self.events);
                    }
                    _ => {}
                }
            }
            let mut out = Vec::new();
            while let Some(t) = a.inner.poll_transmit(now) {
                out.push(t);
            }
            for t in out {
                self.push_transmit(t, Some(ch));
            }
            if let Some(reason) = lost {
                self.remove(ch, reason, false);
            } else if drained {
                // sctp-proto reports Drained on (quirky) shutdown; treat as gone.
                self.remove(ch, "association shut down".into(), false);
            }
        }
    }

    fn read_stream(a: &mut Assoc, id: u16, ppid: u32, events: &mut VecDeque<SctpEvent>) {
        loop {
            let chunks = match a.inner.stream(id).and_then(|mut s| s.read_sctp()) {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => return,
            };
            let mut buf = vec![0u8; chunks.len()];
            let n = chunks.read(&mut buf).unwrap_or(0);
            buf.truncate(n);
            let wire_ppid = match chunks.ppi {
                PayloadProtocolIdentifier::Binary => ppid,
                PayloadProtocolIdentifier::Unknown => 0,
                other => other as u32,
            };
            events.push_back(SctpEvent::Message(SctpMessage {
                assoc: a.id,
                stream: id,
                ppid: wire_ppid,
                payload: Bytes::from(buf),
            }));
        }
    }

    fn push_transmit(&mut self, t: sctp_proto::Transmit, ch: Option<AssociationHandle>) {
        let sctp_proto::Payload::RawEncode(packets) = t.payload else {
            return;
        };
        for p in packets {
            let mut pkt = p.to_vec();
            if let Err(e) = wire::rewrite_data_ppid(&mut pkt, PPID_INTERNAL, self.cfg.ppid) {
                tracing::warn!("sctp-proto produced an unparsable packet: {e}");
                continue;
            }
            if let (Some(ch), Ok(view)) = (ch, wire::parse(&pkt)) {
                if view.verification_tag != 0 {
                    if let Some(a) = self.assocs.get_mut(&ch) {
                        a.tags = Some((view.src_port, view.dst_port, view.verification_tag));
                    }
                }
            }
            self.transmits.push_back((t.remote, Bytes::from(pkt)));
        }
    }
}
