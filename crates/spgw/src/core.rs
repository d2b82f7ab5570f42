//! The S-GW/P-GW state machine without I/O: sessions, TEIDs, the UE address pool
//! and the reaction to each S11 / S1-U datagram and each SGi packet. The I/O loop
//! in `lib.rs` only moves bytes between sockets, the TUN device and this type, so
//! all protocol behaviour is testable without root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proto_gtpu::{icmp::ipv4_destination, icmp::ipv4_source, Gtpu, GTPU_PORT};
use proto_gtpv2c::transaction::{Incoming, Responder, Timers};
use proto_gtpv2c::{
    cause, iface, pdn_type, BearerContext, CreateSessionRequest, CreateSessionResponse,
    DeleteSessionRequest, DeleteSessionResponse, Echo, Fteid, Message, ModifyBearerRequest,
    ModifyBearerResponse, Paa, ReleaseAccessBearersResponse,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// One PDN connection with its default bearer: what the operator (and the GTP
/// Tunnel List Handler during migration) needs to see or restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub imsi: String,
    pub apn: String,
    /// EPS bearer id of the default bearer.
    pub ebi: u8,
    pub ue_ip: Ipv4Addr,
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
}

/// Addresses and constants the state machine puts into messages.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub s11_addr: Ipv4Addr,
    pub s1u_addr: Ipv4Addr,
    /// Our restart counter (Recovery IE).
    pub recovery: u8,
    pub pool: IpPool,
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

#[derive(Debug, Clone)]
pub struct Core {
    cfg: CoreConfig,
    /// Sessions keyed by our S11 TEID.
    sessions: BTreeMap<u32, Tunnel>,
    by_s1u: HashMap<u32, u32>,
    by_ue: HashMap<Ipv4Addr, u32>,
    next_teid: u32,
    /// Answers a retransmitted request (same MME, sequence number and bytes) with the
    /// response already sent instead of, say, creating a second session (§7.6).
    responses: Responder,
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
        }
    }

    /// The active tunnels, ordered by S11 TEID.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.sessions.values().cloned().collect()
    }

    /// Re-creates sessions saved by a previous instance (after a migration or a
    /// restart); rejects files whose addresses or TEIDs collide or fall outside the pool.
    pub fn restore(&mut self, tunnels: Vec<Tunnel>) -> Result<(), String> {
        for t in tunnels {
            if self.sessions.contains_key(&t.sgw_s11_teid)
                || self.by_s1u.contains_key(&t.sgw_s1u_teid)
                || t.sgw_s11_teid == 0
                || t.sgw_s1u_teid == 0
            {
                return Err(format!(
                    "duplicate or zero TEID in tunnel of IMSI {}",
                    t.imsi
                ));
            }
            if !self.cfg.pool.reserve(t.ue_ip) {
                return Err(format!(
                    "UE address {} of IMSI {} is outside the pool or used twice",
                    t.ue_ip, t.imsi
                ));
            }
            self.next_teid = self.next_teid.max(t.sgw_s11_teid.max(t.sgw_s1u_teid) + 1);
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
        *self = next;
        Ok(())
    }

    fn insert(&mut self, t: Tunnel) {
        self.by_s1u.insert(t.sgw_s1u_teid, t.sgw_s11_teid);
        self.by_ue.insert(t.ue_ip, t.sgw_s11_teid);
        self.sessions.insert(t.sgw_s11_teid, t);
    }

    fn remove(&mut self, s11_teid: u32) -> Option<Tunnel> {
        let t = self.sessions.remove(&s11_teid)?;
        self.by_s1u.remove(&t.sgw_s1u_teid);
        self.by_ue.remove(&t.ue_ip);
        self.cfg.pool.release(t.ue_ip);
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
        let (id, m) = match self.responses.on_request(now, from, buf) {
            Ok(Incoming::Fresh(id, m)) => (id, m),
            Ok(Incoming::Duplicate(r)) => {
                debug!(%from, "retransmitted request, resending cached response");
                return S11Outcome {
                    reply: Some(r.to_vec()),
                    changed: false,
                };
            }
            Err(e) => {
                warn!(%from, error = %e, "dropping S11 datagram");
                return S11Outcome::default();
            }
        };
        let teid = m.teid.unwrap_or(0);
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
            Message::ModifyBearerRequest(r) => self.modify_bearer(teid, r),
            Message::DeleteSessionRequest(r) => self.delete_session(teid, r),
            Message::ReleaseAccessBearersRequest(_) => self.release_access_bearers(teid),
            other => {
                debug!(%from, msg = other.name(), "ignoring unexpected S11 message");
                return S11Outcome::default();
            }
        };
        match self.responses.respond(now, id, resp.teid, resp.msg) {
            Ok(bytes) => S11Outcome {
                reply: Some(bytes.to_vec()),
                changed,
            },
            Err(e) => {
                // Only reachable with values we produced ourselves; keep running.
                warn!(error = %e, "cannot encode S11 response");
                S11Outcome {
                    reply: None,
                    changed,
                }
            }
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
        // Only IPv4 PDN connections: the SGi side is an IPv4 TUN with IPv4 NAT.
        if r.pdn_type == Some(pdn_type::IPV6) {
            warn!(imsi = %r.imsi, "IPv6-only PDN requested, rejecting");
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
        let Some(ue_ip) = self.cfg.pool.allocate() else {
            warn!(imsi = %r.imsi, "UE address pool exhausted");
            let (resp, _) = reject(cause::ALL_DYNAMIC_ADDRESSES_OCCUPIED);
            return (resp, changed);
        };
        let t = Tunnel {
            imsi: r.imsi.clone(),
            apn: r.apn.clone(),
            ebi: bearer.ebi,
            ue_ip,
            mme_s11_teid: mme_teid,
            mme_s11_addr: r.sender_fteid.ipv4,
            sgw_s11_teid: self.alloc_teid(),
            sgw_s1u_teid: self.alloc_teid(),
            enb_teid: None,
            enb_addr: None,
        };
        info!(imsi = %t.imsi, %ue_ip, s11 = t.sgw_s11_teid, s1u = t.sgw_s1u_teid, "session created");
        let (s11, s1u) = (self.cfg.s11_addr, self.cfg.s1u_addr);
        // IPv4v6 asked, IPv4 given: tell the MME so it can inform the UE (ESM #50).
        let cause = if r.pdn_type == Some(pdn_type::IPV4V6) {
            cause::NEW_PDN_TYPE_NETWORK_PREFERENCE
        } else {
            cause::REQUEST_ACCEPTED
        };
        let resp = CreateSessionResponse {
            cause,
            sender_fteid: Some(Fteid::v4(iface::S11S4_SGW, t.sgw_s11_teid, s11)),
            // Combined gateway: the P-GW side lives at the same address and TEID.
            pgw_s5s8_fteid: Some(Fteid::v4(iface::S5S8_PGW_GTPC, t.sgw_s11_teid, s11)),
            paa: Some(Paa::Ipv4(ue_ip)),
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
        info!(imsi = %t.imsi, ue_ip = %t.ue_ip, "session deleted");
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

    /// S1 release (UE goes idle): forget the eNB F-TEID; downlink packets are then
    /// dropped until the next Modify Bearer (no paging/buffering in this core).
    fn release_access_bearers(&mut self, teid: u32) -> (Reply, bool) {
        let (cause, resp_teid, changed) = match self.sessions.get_mut(&teid) {
            Some(t) => {
                info!(imsi = %t.imsi, "access bearers released");
                t.enb_teid = None;
                t.enb_addr = None;
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
                // Anti-spoofing: a UE may only send from the address it was given.
                if ipv4_source(payload) != Some(t.ue_ip) {
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

    /// A packet read from the SGi TUN device: the G-PDU and where to send it, if
    /// the destination is a UE with an established downlink.
    pub fn handle_sgi(&self, packet: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
        let dst = ipv4_destination(packet)?;
        let t = self.by_ue.get(&dst).and_then(|s| self.sessions.get(s))?;
        // No paging/buffering here: without an eNB F-TEID the packet is dropped.
        let (teid, addr) = (t.enb_teid?, t.enb_addr?);
        let g = proto_gtpu::encode_gpdu(teid, packet).ok()?;
        Some((g, SocketAddr::new(IpAddr::V4(addr), GTPU_PORT)))
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
