//! The S-GW/P-GW state machine without I/O: sessions, TEIDs, the UE address pool
//! and the reaction to each S11 / S1-U datagram and each SGi packet. The I/O loop
//! in `lib.rs` only moves bytes between sockets, the TUN device and this type, so
//! all protocol behaviour is testable without root.

mod dedicated;
mod ipv6_pool;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use proto_gtpu::icmp::{self, ip_destination, ip_source};
use proto_gtpu::{Gtpu, GTPU_PORT};
use proto_gtpv2c::transaction::{Incoming, Requester, Responder, Timeout, Timers};
use proto_gtpv2c::{
    cause, iface, msg_type, pdn_type, Arp, BearerContext, CreateSessionRequest,
    CreateSessionResponse, DeleteSessionRequest, DeleteSessionResponse, DownlinkDataNotification,
    Echo, Fteid, Message, ModifyBearerRequest, ModifyBearerResponse, Paa,
    ReleaseAccessBearersResponse, GTPC_PORT,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

pub use dedicated::{BearerRequest, DedicatedBearer, Filter};
pub use ipv6_pool::{prefix64, Ipv6Pool, UE_PREFIX_LEN};

/// One PDN connection with its default bearer: what the operator (and the GTP
/// Tunnel List Handler during migration) needs to see or restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub imsi: String,
    pub apn: String,
    /// EPS bearer id of the default bearer.
    pub ebi: u8,
    /// The UE's IPv4 address (PDN type IPv4 or IPv4v6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ue_ip: Option<Ipv4Addr>,
    /// The UE's /64 (PDN type IPv6 or IPv4v6): downlink to any address in it takes this
    /// tunnel, and a restored SPGW routes it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ue_ipv6_prefix: Option<Ipv6Addr>,
    /// The MME's S11 TEID (we send responses with it).
    pub mme_s11_teid: u32,
    /// The MME's S11 address from its F-TEID.
    pub mme_s11_addr: Option<Ipv4Addr>,
    /// Our S11 TEID (the MME addresses this session with it).
    pub sgw_s11_teid: u32,
    /// Our S1-U TEID (the eNB sends uplink G-PDUs with it).
    pub sgw_s1u_teid: u32,
    /// The eNB's S1-U TEID and address, known after Modify Bearer.
    pub enb_teid: Option<u32>,
    pub enb_addr: Option<Ipv4Addr>,
    /// Released by Release Access Bearers (ECM-IDLE): downlink is buffered and the MME
    /// notified, where before the first Modify Bearer or after an eNB's Error
    /// Indication it is dropped. Left out of the list while false, so a connected UE's
    /// entry reads as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
    /// The default bearer's ARP from Create Session: the paging priority a Downlink
    /// Data Notification carries (none in lists written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp: Option<BearerArp>,
    /// Dedicated bearers of this PDN connection (Create Bearer), in creation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedicated: Vec<DedicatedBearer>,
}

/// Allocation/Retention Priority (TS 29.274 §8.86) as the tunnel list keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BearerArp {
    /// 1 (highest) ..= 15.
    pub priority_level: u8,
    /// Pre-emption capability indicator: true means the bearer may NOT pre-empt.
    pub pci: bool,
    /// Pre-emption vulnerability indicator: true means it may NOT be pre-empted.
    pub pvi: bool,
}

impl From<Arp> for BearerArp {
    fn from(a: Arp) -> Self {
        BearerArp {
            priority_level: a.priority_level,
            pci: a.pci,
            pvi: a.pvi,
        }
    }
}

impl From<BearerArp> for Arp {
    fn from(a: BearerArp) -> Self {
        Arp {
            pci: a.pci,
            priority_level: a.priority_level,
            pvi: a.pvi,
        }
    }
}

/// Addresses and constants the state machine puts into messages.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub s11_addr: Ipv4Addr,
    pub s1u_addr: Ipv4Addr,
    /// Our restart counter (Recovery IE).
    pub recovery: u8,
    pub pool: IpPool,
    /// UE IPv6 prefixes; without it, IPv6 PDN connections are refused and IPv4v6 ones
    /// get IPv4 only.
    pub pool6: Option<Ipv6Pool>,
    /// DNS servers and link MTU offered to UEs that ask in their PCO.
    pub dns: Vec<Ipv4Addr>,
    pub mtu: u16,
}

/// Dynamic IPv4 pool: a prefix minus its network, broadcast and excluded addresses.
#[derive(Debug, Clone)]
pub struct IpPool {
    first: u32,
    last: u32,
    excluded: HashSet<u32>,
    used: HashSet<u32>,
    cursor: u32,
}

impl IpPool {
    /// `prefix_len` must be 8..=30 so the pool has usable addresses.
    pub fn new(net: Ipv4Addr, prefix_len: u8, excluded: &[Ipv4Addr]) -> Result<Self, String> {
        if !(8..=30).contains(&prefix_len) {
            return Err(format!(
                "UE pool prefix /{prefix_len} must be between /8 and /30"
            ));
        }
        let mask = u32::MAX << (32 - prefix_len);
        let base = u32::from(net) & mask;
        let (first, last) = (base + 1, (base | !mask) - 1);
        Ok(IpPool {
            first,
            last,
            excluded: excluded.iter().map(|a| u32::from(*a)).collect(),
            used: HashSet::new(),
            cursor: first,
        })
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        (self.first..=self.last).contains(&a) && !self.excluded.contains(&a)
    }

    /// Next free address after the last one handed out (next-fit, so a freed
    /// address is not reused at once by a different UE).
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = self.last - self.first + 1;
        for _ in 0..size {
            let a = self.cursor;
            self.cursor = if a >= self.last { self.first } else { a + 1 };
            if !self.used.contains(&a) && !self.excluded.contains(&a) {
                self.used.insert(a);
                return Some(Ipv4Addr::from(a));
            }
        }
        None
    }

    /// Marks an address used (restoring sessions); false if outside or taken.
    pub fn reserve(&mut self, a: Ipv4Addr) -> bool {
        self.contains(a) && self.used.insert(u32::from(a))
    }

    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&u32::from(a));
    }
}

/// How long the MME may retransmit a request: TS 29.274 leaves T3 and N3 to
/// configuration; corehop's MME retransmits every 1 s up to 3 times, this covers
/// an MME three times slower.
const MME_TIMERS: Timers = Timers {
    t3: Duration::from_secs(3),
    n3: 3,
};

/// Responses kept for retransmitted requests: a burst of attaches within the MME's
/// window (a few hundred bytes each).
const S11_RESPONSE_CACHE: usize = 4096;

/// Our T3/N3 for our requests to the MME (Downlink Data Notification, Create Bearer):
/// the values corehop's MME uses towards us, so a lost DDN or Acknowledge costs a
/// second of paging delay, not the page.
const DDN_TIMERS: Timers = Timers {
    t3: Duration::from_secs(1),
    n3: 3,
};

/// Downlink packets buffered for one idle UE while it is paged: a few round trips of
/// a TCP window or a ping train (TS 23.401 leaves the amount to the S-GW). Beyond,
/// its oldest packet is dropped.
pub(crate) const MAX_BUFFERED_PER_UE: usize = 32;

/// Downlink packets buffered for all idle UEs together (at most ~6 MB at the SGi MTU);
/// beyond, the oldest packet of any UE is dropped.
pub(crate) const MAX_BUFFERED: usize = 4096;

/// Downlink Data Notifications waiting for their Acknowledge (one per UE being
/// paged, for at most T3 x (N3 + 1)); beyond, a newly idle UE's downlink is dropped
/// rather than growing memory.
const MAX_DDN_PENDING: usize = MAX_BUFFERED;

/// Counters of the idle-mode downlink path, since the SPGW started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleStats {
    /// Downlink packets buffered for an idle UE.
    pub buffered: u64,
    /// Buffered (or bufferable) packets dropped: over a bound, the paging refused,
    /// failed or unanswered, or the session gone.
    pub dropped: u64,
    /// Downlink Data Notifications sent (retransmissions not counted).
    pub ddn_sent: u64,
    /// Packets buffered now, all UEs.
    pub buffered_now: u64,
}

/// The downlink packets of one idle UE, waiting for its eNB's new S1-U F-TEID.
#[derive(Debug, Clone)]
struct Buffer {
    /// Oldest first, each with its arrival number (for the total bound's oldest-first).
    packets: VecDeque<(u64, Vec<u8>)>,
    /// The sequence number of the DDN this buffer waits on: an Acknowledge or expiry
    /// of an older DDN of the same session says nothing about this one.
    ddn_seq: u32,
}

/// A response to an S11 request; the sequence number is the request's, set by the
/// `Responder`.
struct Reply {
    teid: Option<u32>,
    msg: Message,
}

/// Result of one S11 datagram.
#[derive(Debug, Default)]
pub struct S11Outcome {
    /// Bytes to send back to the sender.
    pub reply: Option<Vec<u8>>,
    /// Whether the tunnel list changed (the tunnels file must be rewritten).
    pub changed: bool,
    /// G-PDUs to send on S1-U after the reply, in order: the downlink buffered while
    /// the UE was idle, now that its eNB is known again.
    pub downlink: Vec<(Vec<u8>, SocketAddr)>,
}

/// What to do with one S1-U datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum S1uAction<'a> {
    /// Uplink user packet to write to the SGi TUN device.
    ToSgi(&'a [u8]),
    /// A GTP-U message to send to the given address.
    Reply(Vec<u8>, SocketAddr),
    /// Nothing to send, but the tunnel list changed.
    Changed,
    /// Nothing to do.
    Nothing,
}

/// What to do with one packet read from SGi.
#[derive(Debug, PartialEq, Eq)]
pub enum SgiAction {
    /// A G-PDU to send on S1-U to the UE's eNB.
    ToEnb(Vec<u8>, SocketAddr),
    /// The UE is idle: the packet is buffered and this Downlink Data Notification is
    /// to be sent on S11 to its MME.
    Notify(Vec<u8>, SocketAddr),
    /// The UE is idle and already being paged: the packet is buffered.
    Buffered,
    /// Dropped: no such UE, no downlink yet, or the paging could not start.
    Nothing,
}

/// What one of our S11 requests was for.
#[derive(Debug, Clone)]
enum S11Context {
    /// A Downlink Data Notification for the session with this S11 TEID.
    Ddn(u32),
    Bearer(dedicated::PendingBearer),
}

#[derive(Debug, Clone)]
pub struct Core {
    cfg: CoreConfig,
    /// Sessions keyed by our S11 TEID.
    sessions: BTreeMap<u32, Tunnel>,
    by_s1u: HashMap<u32, u32>,
    /// S11 TEID by the UE's IPv4 address and by its IPv6 /64.
    by_ue: HashMap<IpAddr, u32>,
    next_teid: u32,
    /// Answers a retransmitted request (same MME, sequence number and bytes) with the
    /// response already sent instead of, say, creating a second session (§7.6).
    responses: Responder,
    /// Our requests to MMEs (Downlink Data Notifications, Create Bearer Requests): one
    /// numbering, so their responses cannot be mistaken for each other's.
    requests: Requester<S11Context>,
    /// Downlink for idle UEs, by S11 TEID; one exists exactly while a DDN is
    /// outstanding or acknowledged and the eNB not back.
    buffers: BTreeMap<u32, Buffer>,
    next_arrival: u64,
    stats: IdleStats,
}

impl Core {
    pub fn new(cfg: CoreConfig) -> Self {
        Core {
            cfg,
            sessions: BTreeMap::new(),
            by_s1u: HashMap::new(),
            by_ue: HashMap::new(),
            next_teid: 1,
            responses: Responder::new(MME_TIMERS, S11_RESPONSE_CACHE),
            requests: Requester::new(DDN_TIMERS, MAX_DDN_PENDING),
            buffers: BTreeMap::new(),
            next_arrival: 0,
            stats: IdleStats::default(),
        }
    }

    /// The idle-mode downlink counters.
    pub fn idle_stats(&self) -> IdleStats {
        self.stats
    }

    /// The active tunnels, ordered by S11 TEID.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.sessions.values().cloned().collect()
    }

    /// Re-creates sessions saved by a previous instance (after a migration or a
    /// restart); rejects files whose addresses or TEIDs collide or fall outside the pool.
    pub fn restore(&mut self, tunnels: Vec<Tunnel>) -> Result<(), String> {
        for t in tunnels {
            let s1u_teids: Vec<u32> = t.s1u_teids().collect();
            let distinct = s1u_teids.iter().collect::<HashSet<_>>().len() == s1u_teids.len();
            if self.sessions.contains_key(&t.sgw_s11_teid)
                || s1u_teids
                    .iter()
                    .any(|s| self.by_s1u.contains_key(s) || *s == 0)
                || !distinct
                || t.sgw_s11_teid == 0
            {
                return Err(format!(
                    "duplicate or zero TEID in tunnel of IMSI {}",
                    t.imsi
                ));
            }
            if let Some(ip) = t.ue_ip {
                if !self.cfg.pool.reserve(ip) {
                    return Err(format!(
                        "UE address {ip} of IMSI {} is outside the pool or used twice",
                        t.imsi
                    ));
                }
            }
            if let Some(prefix) = t.ue_ipv6_prefix {
                if !self.cfg.pool6.as_mut().is_some_and(|p| p.reserve(prefix)) {
                    return Err(format!(
                        "UE prefix {prefix}/64 of IMSI {} is outside ue_ipv6_pool or used twice",
                        t.imsi
                    ));
                }
            }
            let highest = s1u_teids.into_iter().fold(t.sgw_s11_teid, u32::max);
            self.next_teid = self.next_teid.max(highest + 1);
            self.insert(t);
        }
        Ok(())
    }

    /// Makes the session table exactly `tunnels`, all or nothing: the GTP Tunnel List
    /// Handler's way of making a restored SPGW whole (its checkpoint may predate tunnels).
    pub fn sync(&mut self, tunnels: Vec<Tunnel>) -> Result<(), String> {
        let mut next = self.clone();
        let teids: Vec<u32> = next.sessions.keys().copied().collect();
        for teid in teids {
            next.remove(teid);
        }
        next.restore(tunnels)?;
        next.next_teid = next.next_teid.max(self.next_teid);
        next.retain_buffers();
        *self = next;
        Ok(())
    }

    fn insert(&mut self, t: Tunnel) {
        for s1u in t.s1u_teids() {
            self.by_s1u.insert(s1u, t.sgw_s11_teid);
        }
        for a in t.addresses() {
            self.by_ue.insert(a, t.sgw_s11_teid);
        }
        self.sessions.insert(t.sgw_s11_teid, t);
    }

    fn remove(&mut self, s11_teid: u32) -> Option<Tunnel> {
        let t = self.sessions.remove(&s11_teid)?;
        for s1u in t.s1u_teids() {
            self.by_s1u.remove(&s1u);
        }
        for a in t.addresses() {
            self.by_ue.remove(&a);
        }
        if let Some(ip) = t.ue_ip {
            self.cfg.pool.release(ip);
        }
        if let (Some(prefix), Some(pool6)) = (t.ue_ipv6_prefix, self.cfg.pool6.as_mut()) {
            pool6.release(prefix);
        }
        Some(t)
    }

    /// A fresh non-zero TEID not used by any session (S11 and S1-U share the space).
    fn alloc_teid(&mut self) -> u32 {
        loop {
            let t = self.next_teid;
            self.next_teid = self.next_teid.wrapping_add(1).max(1);
            if !self.sessions.contains_key(&t) && !self.by_s1u.contains_key(&t) {
                return t;
            }
        }
    }

    // ------------------------------------------------------------ S11

    /// Handles one datagram received on S11 from `from` at `now`.
    pub fn handle_s11(&mut self, buf: &[u8], from: SocketAddr, now: Instant) -> S11Outcome {
        // The MME's answers to our DDNs arrive on the same socket as its requests.
        match proto_gtpv2c::decode_header(buf).map(|h| h.msg_type) {
            Ok(msg_type::DOWNLINK_DATA_NOTIFICATION_FAILURE_INDICATION) => {
                self.ddn_failure(buf, from);
                return S11Outcome::default();
            }
            Ok(t) if !msg_type::is_request(t) => {
                return S11Outcome {
                    changed: self.s11_response(buf, from),
                    ..Default::default()
                };
            }
            _ => {}
        }
        let (id, m) = match self.responses.on_request(now, from, buf) {
            Ok(Incoming::Fresh(id, m)) => (id, m),
            Ok(Incoming::Duplicate(r)) => {
                debug!(%from, "retransmitted request, resending cached response");
                // A retransmitted Modify Bearer flushed the buffer the first time.
                return S11Outcome {
                    reply: Some(r.to_vec()),
                    ..Default::default()
                };
            }
            Err(e) => {
                warn!(%from, error = %e, "dropping S11 datagram");
                return S11Outcome::default();
            }
        };
        let teid = m.teid.unwrap_or(0);
        let mut downlink = Vec::new();
        let (resp, changed) = match m.msg {
            Message::EchoRequest(_) => (
                Reply {
                    teid: None,
                    msg: Message::EchoResponse(Echo {
                        recovery: self.cfg.recovery,
                    }),
                },
                false,
            ),
            Message::CreateSessionRequest(r) => self.create_session(r),
            Message::ModifyBearerRequest(r) => {
                let out = self.modify_bearer(teid, r);
                downlink = self.flush(teid);
                out
            }
            Message::DeleteSessionRequest(r) => self.delete_session(teid, r),
            Message::ReleaseAccessBearersRequest(_) => self.release_access_bearers(teid),
            other => {
                debug!(%from, msg = other.name(), "ignoring unexpected S11 message");
                return S11Outcome::default();
            }
        };
        if changed {
            // A deleted or replaced session takes its buffered downlink with it.
            self.retain_buffers();
        }
        let reply = match self.responses.respond(now, id, resp.teid, resp.msg) {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(e) => {
                // Only reachable with values we produced ourselves; keep running.
                warn!(error = %e, "cannot encode S11 response");
                None
            }
        };
        S11Outcome {
            reply,
            changed,
            downlink,
        }
    }

    fn create_session(&mut self, r: CreateSessionRequest) -> (Reply, bool) {
        let mme_teid = r.sender_fteid.teid;
        let reject = |c: u8| {
            let resp = CreateSessionResponse {
                cause: c,
                ..Default::default()
            };
            (
                Reply {
                    teid: Some(mme_teid),
                    msg: Message::CreateSessionResponse(resp),
                },
                false,
            )
        };
        let requested = r.pdn_type.unwrap_or(pdn_type::IPV4);
        if !matches!(
            requested,
            pdn_type::IPV4 | pdn_type::IPV6 | pdn_type::IPV4V6
        ) {
            return reject(cause::PREFERRED_PDN_TYPE_NOT_SUPPORTED);
        }
        // IPv6 needs the prefix pool; IPv4v6 without it falls back to IPv4 (below).
        if requested == pdn_type::IPV6 && self.cfg.pool6.is_none() {
            warn!(imsi = %r.imsi, "IPv6 PDN requested without ue_ipv6_pool, rejecting");
            return reject(cause::PREFERRED_PDN_TYPE_NOT_SUPPORTED);
        }
        let Some(bearer) = r.bearer_contexts.first() else {
            return reject(cause::MANDATORY_IE_MISSING);
        };
        // A new Create Session for an IMSI+APN we already serve means the UE
        // re-attached (the MME lost the old context): drop the stale one.
        let stale: Vec<u32> = self
            .sessions
            .values()
            .filter(|t| t.imsi == r.imsi && t.apn == r.apn)
            .map(|t| t.sgw_s11_teid)
            .collect();
        let mut changed = false;
        for s in stale {
            info!(imsi = %r.imsi, teid = s, "replacing existing session of re-attaching UE");
            self.remove(s);
            changed = true;
        }
        let Some((ue_ip, ue_ipv6_prefix)) = self.allocate_addresses(requested) else {
            warn!(imsi = %r.imsi, "UE address pool exhausted");
            let (resp, _) = reject(cause::ALL_DYNAMIC_ADDRESSES_OCCUPIED);
            return (resp, changed);
        };
        let t = Tunnel {
            imsi: r.imsi.clone(),
            apn: r.apn.clone(),
            ebi: bearer.ebi,
            ue_ip,
            ue_ipv6_prefix,
            mme_s11_teid: mme_teid,
            mme_s11_addr: r.sender_fteid.ipv4,
            sgw_s11_teid: self.alloc_teid(),
            sgw_s1u_teid: self.alloc_teid(),
            enb_teid: None,
            enb_addr: None,
            idle: false,
            arp: bearer.qos.map(|q| q.arp().into()),
            dedicated: Vec::new(),
        };
        info!(imsi = %t.imsi, ?ue_ip, ?ue_ipv6_prefix, s11 = t.sgw_s11_teid, s1u = t.sgw_s1u_teid, "session created");
        let (s11, s1u) = (self.cfg.s11_addr, self.cfg.s1u_addr);
        // IPv4v6 asked, IPv4 given: tell the MME so it can inform the UE (ESM #50).
        let cause = if requested == pdn_type::IPV4V6 && ue_ipv6_prefix.is_none() {
            cause::NEW_PDN_TYPE_NETWORK_PREFERENCE
        } else {
            cause::REQUEST_ACCEPTED
        };
        let iid = interface_id(r.paa.as_ref());
        let resp = CreateSessionResponse {
            cause,
            sender_fteid: Some(Fteid::v4(iface::S11S4_SGW, t.sgw_s11_teid, s11)),
            // Combined gateway: the P-GW side lives at the same address and TEID.
            pgw_s5s8_fteid: Some(Fteid::v4(iface::S5S8_PGW_GTPC, t.sgw_s11_teid, s11)),
            paa: paa(ue_ip, ue_ipv6_prefix, iid),
            apn_restriction: Some(0),
            ambr: r.ambr,
            pco: r
                .pco
                .as_ref()
                .map(|p| p.answer(&self.cfg.dns, Some(self.cfg.mtu))),
            bearer_contexts: vec![BearerContext {
                ebi: t.ebi,
                cause: Some(cause::REQUEST_ACCEPTED),
                fteids: vec![
                    (0, Fteid::v4(iface::S1U_SGW, t.sgw_s1u_teid, s1u)),
                    (2, Fteid::v4(iface::S5S8_PGW_GTPU, t.sgw_s1u_teid, s1u)),
                ],
                qos: bearer.qos,
                charging_id: Some(t.sgw_s11_teid),
                tft: None,
            }],
            recovery: Some(self.cfg.recovery),
        };
        self.insert(t);
        (
            Reply {
                teid: Some(mme_teid),
                msg: Message::CreateSessionResponse(resp),
            },
            true,
        )
    }

    /// The UE's IPv4 address and /64 for a PDN connection of type `requested` (IPv4v6
    /// without an IPv6 pool: IPv4 only); `None` when a pool is exhausted.
    fn allocate_addresses(
        &mut self,
        requested: u8,
    ) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let v4 = match requested {
            pdn_type::IPV6 => None,
            _ => Some(self.cfg.pool.allocate()?),
        };
        let v6 = match (requested, self.cfg.pool6.as_mut()) {
            (pdn_type::IPV6 | pdn_type::IPV4V6, Some(pool6)) => match pool6.allocate() {
                Some(p) => Some(p),
                None => {
                    if let Some(ip) = v4 {
                        self.cfg.pool.release(ip);
                    }
                    return None;
                }
            },
            _ => None,
        };
        Some((v4, v6))
    }

    fn modify_bearer(&mut self, teid: u32, r: ModifyBearerRequest) -> (Reply, bool) {
        let s1u_addr = self.cfg.s1u_addr;
        let Some(t) = self.sessions.get_mut(&teid) else {
            warn!(teid, "Modify Bearer for unknown TEID");
            return (context_not_found_mb(), false);
        };
        if let Some(f) = r.sender_fteid {
            // The MME changed (e.g. it moved): answer the new one from now on.
            t.mme_s11_teid = f.teid;
            t.mme_s11_addr = f.ipv4.or(t.mme_s11_addr);
        }
        let mut changed = r.sender_fteid.is_some();
        let mut bcs = Vec::new();
        for bc in &r.bearer_contexts {
            let mut out = BearerContext {
                ebi: bc.ebi,
                ..Default::default()
            };
            if bc.ebi != t.ebi {
                out.cause = Some(cause::CONTEXT_NOT_FOUND);
            } else if let Some(enb) = bc.fteid(0) {
                match enb.ipv4 {
                    Some(addr) => {
                        t.enb_teid = Some(enb.teid);
                        t.enb_addr = Some(addr);
                        t.idle = false;
                        changed = true;
                        info!(imsi = %t.imsi, enb_teid = enb.teid, %addr, "S1-U downlink set");
                        out.cause = Some(cause::REQUEST_ACCEPTED);
                        out.fteids = vec![(0, Fteid::v4(iface::S1U_SGW, t.sgw_s1u_teid, s1u_addr))];
                        out.charging_id = Some(t.sgw_s11_teid);
                    }
                    // Our user plane is IPv4 only.
                    None => out.cause = Some(cause::MANDATORY_IE_INCORRECT),
                }
            } else {
                out.cause = Some(cause::REQUEST_ACCEPTED);
            }
            bcs.push(out);
        }
        let any_ok = bcs.is_empty() || bcs.iter().any(|b| b.cause == Some(cause::REQUEST_ACCEPTED));
        let resp = ModifyBearerResponse {
            cause: if any_ok {
                cause::REQUEST_ACCEPTED
            } else {
                bcs.first()
                    .and_then(|b| b.cause)
                    .unwrap_or(cause::CONTEXT_NOT_FOUND)
            },
            msisdn: None,
            bearer_contexts: bcs,
            recovery: None,
        };
        (
            Reply {
                teid: Some(t.mme_s11_teid),
                msg: Message::ModifyBearerResponse(resp),
            },
            changed,
        )
    }

    fn delete_session(&mut self, teid: u32, r: DeleteSessionRequest) -> (Reply, bool) {
        let ebi_matches = self
            .sessions
            .get(&teid)
            .is_some_and(|t| r.linked_ebi.map_or(true, |e| e == t.ebi));
        let removed = if ebi_matches { self.remove(teid) } else { None };
        let Some(t) = removed else {
            warn!(teid, "Delete Session for unknown TEID/EBI");
            // TS 29.274 §5.5.2: TEID 0 when the context is not found.
            return (
                Reply {
                    teid: Some(0),
                    msg: Message::DeleteSessionResponse(DeleteSessionResponse {
                        cause: cause::CONTEXT_NOT_FOUND,
                        recovery: None,
                    }),
                },
                false,
            );
        };
        info!(imsi = %t.imsi, ue_ip = ?t.ue_ip, ue_ipv6_prefix = ?t.ue_ipv6_prefix, "session deleted");
        (
            Reply {
                teid: Some(t.mme_s11_teid),
                msg: Message::DeleteSessionResponse(DeleteSessionResponse {
                    cause: cause::REQUEST_ACCEPTED,
                    recovery: None,
                }),
            },
            true,
        )
    }

    /// S1 release (UE goes idle, TS 23.401 §5.3.5): forget the eNB F-TEID; downlink
    /// packets are then buffered and the MME notified until the next Modify Bearer.
    fn release_access_bearers(&mut self, teid: u32) -> (Reply, bool) {
        let (cause, resp_teid, changed) = match self.sessions.get_mut(&teid) {
            Some(t) => {
                info!(imsi = %t.imsi, "access bearers released, UE idle");
                t.enb_teid = None;
                t.enb_addr = None;
                t.idle = true;
                (cause::REQUEST_ACCEPTED, t.mme_s11_teid, true)
            }
            None => {
                warn!(teid, "Release Access Bearers for unknown TEID");
                (cause::CONTEXT_NOT_FOUND, 0, false)
            }
        };
        let msg = Message::ReleaseAccessBearersResponse(ReleaseAccessBearersResponse {
            cause,
            recovery: None,
        });
        (
            Reply {
                teid: Some(resp_teid),
                msg,
            },
            changed,
        )
    }

    // ------------------------------------------------------------ S1-U

    /// Handles one datagram received on S1-U from `from`.
    pub fn handle_s1u<'a>(&mut self, buf: &'a [u8], from: SocketAddr) -> S1uAction<'a> {
        let msg = match proto_gtpu::decode(buf) {
            Ok(m) => m,
            Err(e) => {
                warn!(%from, error = %e, "dropping malformed GTP-U datagram");
                return S1uAction::Nothing;
            }
        };
        match msg {
            Gtpu::GPdu { teid, payload, .. } => {
                let Some(t) = self.by_s1u.get(&teid).and_then(|s| self.sessions.get(s)) else {
                    debug!(%from, teid, "G-PDU for unknown TEID, sending Error Indication");
                    return self.error_indication(teid, from);
                };
                // An IPv6 UE's Router Solicitation (from its link-local address) is
                // the P-GW's to answer, with its /64.
                if let Some(ra) = self.router_advertisement(t, payload) {
                    return ra;
                }
                // Anti-spoofing: a UE may only send from the address it was given, or
                // from its /64.
                if !t.owns(ip_source(payload)) {
                    debug!(%from, teid, "uplink packet not from the UE's address, dropped");
                    return S1uAction::Nothing;
                }
                S1uAction::ToSgi(payload)
            }
            Gtpu::EchoRequest { seq } => match (Gtpu::EchoResponse { seq, recovery: 0 }).encode() {
                Ok(b) => S1uAction::Reply(b, from),
                Err(_) => S1uAction::Nothing,
            },
            Gtpu::ErrorIndication { teid, peer } => {
                // The eNB lost this bearer: stop sending downlink to it until the
                // MME sets a new S1-U F-TEID (TS 23.007 error handling).
                let hit = self
                    .sessions
                    .values_mut()
                    .find(|t| t.enb_teid == Some(teid) && t.enb_addr.map(IpAddr::V4) == Some(peer));
                match hit {
                    Some(t) => {
                        warn!(imsi = %t.imsi, teid, %peer, "Error Indication from eNB, downlink released");
                        t.enb_teid = None;
                        t.enb_addr = None;
                        S1uAction::Changed
                    }
                    None => S1uAction::Nothing,
                }
            }
            Gtpu::EchoResponse { .. } | Gtpu::EndMarker { .. } => S1uAction::Nothing,
        }
    }

    /// The Router Advertisement answering a Router Solicitation of `t`'s UE, in a G-PDU
    /// to its eNB (TS 29.061 §11.2.1.3.2: how the UE learns its /64); `None` for any
    /// other packet, nothing before the UE has a /64 and an eNB.
    fn router_advertisement(&self, t: &Tunnel, packet: &[u8]) -> Option<S1uAction<'static>> {
        let src = icmp::router_solicitation_source(packet)?;
        let (Some(prefix), Some(teid), Some(addr)) = (t.ue_ipv6_prefix, t.enb_teid, t.enb_addr)
        else {
            return Some(S1uAction::Nothing);
        };
        // From the unspecified address the answer goes to all nodes (RFC 4861 §6.2.6).
        let dst = if src.is_unspecified() {
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
        } else {
            src
        };
        let adv = icmp::router_advertisement(dst, prefix, self.cfg.mtu).ok()?;
        debug!(imsi = %t.imsi, %prefix, "Router Advertisement for the UE's /64");
        let g = proto_gtpu::encode_gpdu(teid, &adv).ok()?;
        Some(S1uAction::Reply(
            g,
            SocketAddr::new(IpAddr::V4(addr), GTPU_PORT),
        ))
    }

    fn error_indication(&self, teid: u32, from: SocketAddr) -> S1uAction<'static> {
        let ei = Gtpu::ErrorIndication {
            teid,
            peer: IpAddr::V4(self.cfg.s1u_addr),
        };
        match ei.encode() {
            // Sent to the sender's address on the GTP-U port, not to its source port.
            Ok(b) => S1uAction::Reply(b, SocketAddr::new(from.ip(), GTPU_PORT)),
            Err(_) => S1uAction::Nothing,
        }
    }

    // ------------------------------------------------------------ SGi

    /// A packet read from the SGi TUN device at `now`: to the UE's eNB if it has one,
    /// buffered (and the MME notified) if the UE is idle, dropped otherwise.
    pub fn handle_sgi(&mut self, packet: &[u8], now: Instant) -> SgiAction {
        let key = ip_destination(packet).map(|dst| match dst {
            IpAddr::V6(a) => IpAddr::V6(prefix64(a)),
            v4 => v4,
        });
        let Some(&s11) = key.and_then(|k| self.by_ue.get(&k)) else {
            return SgiAction::Nothing;
        };
        let t = &self.sessions[&s11];
        let bearer = match (t.enb_teid, t.enb_addr) {
            (Some(teid), Some(addr)) => {
                Some(dedicated::downlink_bearer(&t.dedicated, packet).unwrap_or((teid, addr)))
            }
            _ => None,
        };
        if let Some((teid, addr)) = bearer {
            return match proto_gtpu::encode_gpdu(teid, packet) {
                Ok(g) => SgiAction::ToEnb(g, SocketAddr::new(IpAddr::V4(addr), GTPU_PORT)),
                Err(_) => SgiAction::Nothing,
            };
        }
        if !t.idle {
            return SgiAction::Nothing;
        }
        self.buffer(s11, packet, now)
    }

    /// Buffers a downlink packet of the idle session `s11`; the first one starts its
    /// paging with a Downlink Data Notification (TS 23.401 §5.3.4.3 step 2).
    fn buffer(&mut self, s11: u32, packet: &[u8], now: Instant) -> SgiAction {
        let mut action = SgiAction::Buffered;
        if !self.buffers.contains_key(&s11) {
            let t = &self.sessions[&s11];
            let Some(mme) = t.mme_s11_addr else {
                warn!(imsi = %t.imsi, "idle UE without an MME address, downlink dropped");
                self.stats.dropped += 1;
                return SgiAction::Nothing;
            };
            let peer = SocketAddr::new(IpAddr::V4(mme), GTPC_PORT);
            let ddn = Message::DownlinkDataNotification(DownlinkDataNotification {
                cause: None,
                ebis: vec![t.ebi],
                arp: t.arp.map(Arp::from),
            });
            let (imsi, mme_teid) = (t.imsi.clone(), t.mme_s11_teid);
            match self
                .requests
                .send(now, peer, Some(mme_teid), ddn, S11Context::Ddn(s11))
            {
                Ok((seq, bytes)) => {
                    info!(%imsi, seq, "downlink for idle UE, Downlink Data Notification sent");
                    action = SgiAction::Notify(bytes.to_vec(), peer);
                    self.stats.ddn_sent += 1;
                    self.buffers.insert(
                        s11,
                        Buffer {
                            packets: VecDeque::new(),
                            ddn_seq: seq,
                        },
                    );
                }
                Err(e) => {
                    warn!(%imsi, error = %e, "cannot notify the MME, downlink dropped");
                    self.stats.dropped += 1;
                    return SgiAction::Nothing;
                }
            }
        }
        if self.buffers[&s11].packets.len() >= MAX_BUFFERED_PER_UE {
            self.drop_oldest_of(s11);
        } else if self.stats.buffered_now >= MAX_BUFFERED as u64 {
            self.drop_oldest();
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        if let Some(b) = self.buffers.get_mut(&s11) {
            b.packets.push_back((arrival, packet.to_vec()));
            self.stats.buffered_now += 1;
            self.stats.buffered += 1;
        }
        action
    }

    fn drop_oldest_of(&mut self, s11: u32) {
        if let Some(b) = self.buffers.get_mut(&s11) {
            if b.packets.pop_front().is_some() {
                self.stats.buffered_now -= 1;
                self.stats.dropped += 1;
            }
        }
    }

    /// Over the total bound: drops the oldest buffered packet of any UE. A scan of the
    /// buffering UEs, paid only while the buffer is full.
    fn drop_oldest(&mut self) {
        let oldest = self
            .buffers
            .iter()
            .filter_map(|(s11, b)| b.packets.front().map(|(arrival, _)| (*arrival, *s11)))
            .min();
        if let Some((_, s11)) = oldest {
            self.drop_oldest_of(s11);
        }
    }

    /// Drops a session's buffered downlink (its paging is over without the UE).
    fn drop_buffer(&mut self, s11: u32, why: &str) {
        if let Some(b) = self.buffers.remove(&s11) {
            let n = b.packets.len();
            self.stats.buffered_now -= n as u64;
            self.stats.dropped += n as u64;
            info!(teid = s11, packets = n, why, "buffered downlink dropped");
        }
    }

    /// Drops the buffers of sessions that are gone or no longer idle.
    fn retain_buffers(&mut self) {
        let orphans: Vec<u32> = self
            .buffers
            .keys()
            .copied()
            .filter(|s| !self.sessions.get(s).is_some_and(|t| t.idle))
            .collect();
        for s11 in orphans {
            self.drop_buffer(s11, "session deleted or changed");
        }
    }

    /// The buffered downlink of session `s11` as G-PDUs to its eNB, oldest first, once
    /// Modify Bearer gave it an eNB again (TS 23.401 §5.3.4.1 step 17).
    fn flush(&mut self, s11: u32) -> Vec<(Vec<u8>, SocketAddr)> {
        let Some(t) = self.sessions.get(&s11) else {
            return Vec::new();
        };
        let (Some(teid), Some(addr)) = (t.enb_teid, t.enb_addr) else {
            return Vec::new();
        };
        let Some(b) = self.buffers.remove(&s11) else {
            return Vec::new();
        };
        self.stats.buffered_now -= b.packets.len() as u64;
        let to = SocketAddr::new(IpAddr::V4(addr), GTPU_PORT);
        if !b.packets.is_empty() {
            info!(imsi = %t.imsi, packets = b.packets.len(), "buffered downlink sent to the eNB");
        }
        b.packets
            .into_iter()
            .filter_map(|(_, p)| proto_gtpu::encode_gpdu(teid, &p).ok().map(|g| (g, to)))
            .collect()
    }

    // ------------------------------------------------------------ DDN

    /// The MME's response to one of our requests; true when the tunnel list changed.
    fn s11_response(&mut self, buf: &[u8], from: SocketAddr) -> bool {
        let (context, m) = match self.requests.on_response(from, buf) {
            Ok(Some(r)) => r,
            Ok(None) => {
                debug!(%from, "S11 response to no outstanding request, ignored");
                return false;
            }
            Err(e) => {
                warn!(%from, error = %e, "dropping S11 datagram");
                return false;
            }
        };
        match context {
            S11Context::Ddn(s11) => {
                self.ddn_response(s11, m.seq, m.msg);
                false
            }
            S11Context::Bearer(p) => self.on_create_bearer_response(p, m.msg),
        }
    }

    /// The MME's answer to one of our DDNs: an accepting Acknowledge means it pages
    /// the UE (keep buffering); any other cause means it will not (drop the buffer).
    fn ddn_response(&mut self, s11: u32, seq: u32, msg: Message) {
        if self.buffers.get(&s11).map(|b| b.ddn_seq) != Some(seq) {
            return;
        }
        match msg {
            Message::DownlinkDataNotificationAcknowledge(a) if cause::is_accepted(a.cause) => {
                debug!(
                    teid = s11,
                    "Downlink Data Notification acknowledged, UE paged"
                );
            }
            Message::DownlinkDataNotificationAcknowledge(a) => {
                self.drop_buffer(s11, &format!("DDN rejected (cause {})", a.cause));
            }
            other => {
                self.drop_buffer(s11, &format!("DDN answered with {}", other.name()));
            }
        }
    }

    /// DDN Failure Indication (TS 29.274 §7.2.11.3): the paging the MME acknowledged
    /// failed. An initial message without response, so the Responder is not involved.
    fn ddn_failure(&mut self, buf: &[u8], from: SocketAddr) {
        match proto_gtpv2c::decode(buf) {
            Ok(m) => {
                let s11 = m.teid.unwrap_or(0);
                if let Message::DownlinkDataNotificationFailureIndication(f) = m.msg {
                    self.drop_buffer(s11, &format!("paging failed (cause {})", f.cause));
                }
            }
            Err(e) => warn!(%from, error = %e, "dropping S11 datagram"),
        }
    }

    /// When `on_timeout` next has something to do (a request to retransmit or give up).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.requests.poll_timeout()
    }

    /// Retransmissions (DDN, Create Bearer) due at `now`, to send on S11; a DDN
    /// unanswered after N3 retransmissions drops its buffer, a Create Bearer its bearer.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        for t in self.requests.on_timeout(now) {
            match t {
                Timeout::Retransmit { peer, bytes, .. } => out.push((bytes, peer)),
                Timeout::Expired {
                    seq,
                    context: S11Context::Ddn(s11),
                    ..
                } => {
                    if self.buffers.get(&s11).map(|b| b.ddn_seq) == Some(seq) {
                        self.drop_buffer(s11, "DDN unanswered");
                    }
                }
                Timeout::Expired { peer, .. } => {
                    warn!(%peer, "Create Bearer Request unanswered, bearer not created")
                }
            }
        }
        out
    }
}

impl Tunnel {
    /// Our S1-U TEIDs: the default bearer's, then the dedicated ones'.
    fn s1u_teids(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.sgw_s1u_teid).chain(self.dedicated.iter().map(|d| d.sgw_s1u_teid))
    }

    /// What downlink is routed by: the IPv4 address and the /64.
    fn addresses(&self) -> impl Iterator<Item = IpAddr> {
        self.ue_ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ue_ipv6_prefix.map(IpAddr::V6))
    }

    /// Whether an uplink source address is the UE's.
    fn owns(&self, src: Option<IpAddr>) -> bool {
        match src {
            Some(IpAddr::V4(a)) => self.ue_ip == Some(a),
            Some(IpAddr::V6(a)) => self.ue_ipv6_prefix == Some(prefix64(a)),
            None => false,
        }
    }
}

/// The interface identifier the UE gets with its /64 (TS 23.401 §5.3.1.2.2: the P-GW
/// provides it; the UE builds its link-local address from it, so never zero): the one
/// in the request's PAA when the MME set one, else 1.
fn interface_id(requested: Option<&Paa>) -> u64 {
    let iid = match requested {
        Some(Paa::Ipv6 { addr, .. }) | Some(Paa::Ipv4v6 { v6: addr, .. }) => {
            u128::from(*addr) as u64
        }
        _ => 0,
    };
    iid.max(1)
}

/// The PAA of a Create Session Response: the prefix with the interface identifier.
fn paa(v4: Option<Ipv4Addr>, prefix: Option<Ipv6Addr>, iid: u64) -> Option<Paa> {
    let v6 = prefix.map(|p| Ipv6Addr::from(u128::from(p) | u128::from(iid)));
    match (v4, v6) {
        (Some(v4), Some(v6)) => Some(Paa::Ipv4v6 {
            prefix_len: UE_PREFIX_LEN,
            v6,
            v4,
        }),
        (None, Some(addr)) => Some(Paa::Ipv6 {
            prefix_len: UE_PREFIX_LEN,
            addr,
        }),
        (Some(v4), None) => Some(Paa::Ipv4(v4)),
        (None, None) => None,
    }
}

fn context_not_found_mb() -> Reply {
    Reply {
        teid: Some(0),
        msg: Message::ModifyBearerResponse(ModifyBearerResponse {
            cause: cause::CONTEXT_NOT_FOUND,
            msisdn: None,
            bearer_contexts: vec![],
            recovery: None,
        }),
    }
}

#[cfg(test)]
mod tests;
