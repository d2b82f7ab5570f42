//! Dedicated bearers the P-GW side asks for (TS 23.401 §5.4.1, network-initiated):
//! a Create Bearer Request to the MME with the bearer's QoS, TFT and our S1-U F-TEID;
//! the accepting Create Bearer Response gives its EBI and the eNB's F-TEID. The bearer
//! then lives in the tunnel list next to the default one: uplink on its TEID reaches
//! SGi, downlink matching one of its filters takes it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use proto_gtpv2c::{
    cause, iface, tft, BearerContext, BearerQos, CreateBearerRequest, CreateBearerResponse, Fteid,
    Message, PacketFilter, Tft, GTPC_PORT,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{BearerArp, Core, S11Context};

/// What an operator or a test asks for: a dedicated bearer for the UE `imsi`, on its
/// PDN connection to `apn` (any, when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerRequest {
    pub imsi: String,
    #[serde(default)]
    pub apn: Option<String>,
    pub qci: u8,
    pub arp: BearerArp,
    /// Maximum and guaranteed bit rates, kbit/s (the GBR ones 0 for a non-GBR QCI).
    #[serde(default)]
    pub mbr_uplink_kbps: u64,
    #[serde(default)]
    pub mbr_downlink_kbps: u64,
    #[serde(default)]
    pub gbr_uplink_kbps: u64,
    #[serde(default)]
    pub gbr_downlink_kbps: u64,
    /// The TFT's packet filters, 1..=15.
    pub filters: Vec<Filter>,
}

/// One packet filter of a TFT (TS 24.008 §10.5.6.12) as the tunnel list and the
/// request file spell it: the network side's IPv4 address/mask, protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub id: u8,
    /// 1 downlink, 2 uplink, 3 both.
    pub direction: u8,
    pub precedence: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_mask: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
}

impl From<Filter> for PacketFilter {
    fn from(f: Filter) -> Self {
        PacketFilter {
            id: f.id,
            direction: f.direction,
            precedence: f.precedence,
            remote: f
                .remote_addr
                .map(|a| (a, f.remote_mask.unwrap_or(Ipv4Addr::BROADCAST))),
            protocol: f.protocol,
            remote_port: f.remote_port,
        }
    }
}

impl Filter {
    /// Whether a downlink packet (from the network side) matches: every component
    /// present must (TS 23.060 §15.3.2).
    fn matches_downlink(&self, packet: &[u8]) -> bool {
        if self.direction & tft::direction::DOWNLINK == 0 {
            return false;
        }
        let Some(d) = Datagram::parse(packet) else {
            return false;
        };
        let mask = u32::from(self.remote_mask.unwrap_or(Ipv4Addr::BROADCAST));
        self.remote_addr
            .map_or(true, |a| u32::from(a) & mask == u32::from(d.src) & mask)
            && self.protocol.map_or(true, |p| p == d.protocol)
            && self.remote_port.map_or(true, |p| Some(p) == d.src_port)
    }
}

/// The fields of an IPv4 packet a filter looks at.
struct Datagram {
    src: Ipv4Addr,
    protocol: u8,
    /// TCP or UDP source port, when the header is there.
    src_port: Option<u16>,
}

impl Datagram {
    fn parse(p: &[u8]) -> Option<Datagram> {
        let (&first, _) = p.split_first()?;
        let ihl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || ihl < 20 || p.len() < ihl {
            return None;
        }
        let protocol = p[9];
        let src_port = matches!(protocol, 6 | 17)
            .then(|| p.get(ihl..ihl + 2))
            .flatten()
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        Some(Datagram {
            src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            protocol,
            src_port,
        })
    }
}

/// A dedicated bearer of a PDN connection, as the tunnel list keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedicatedBearer {
    /// The EBI the MME assigned.
    pub ebi: u8,
    pub qci: u8,
    /// Our S1-U TEID of this bearer.
    pub sgw_s1u_teid: u32,
    pub enb_teid: u32,
    pub enb_addr: Ipv4Addr,
    pub filters: Vec<Filter>,
}

/// A Create Bearer Request waiting for its response.
#[derive(Debug, Clone)]
pub(super) struct PendingBearer {
    s11: u32,
    qci: u8,
    sgw_s1u_teid: u32,
    filters: Vec<Filter>,
}

impl Core {
    /// Starts a dedicated bearer for `req`: the Create Bearer Request to send to the
    /// UE's MME, and where. Retransmitted on T3 like a DDN ([`Core::on_timeout`]).
    pub fn create_bearer(
        &mut self,
        req: &BearerRequest,
        now: Instant,
    ) -> Result<(Vec<u8>, SocketAddr), String> {
        let s11 = self
            .sessions
            .values()
            .find(|t| t.imsi == req.imsi && req.apn.as_ref().map_or(true, |a| *a == t.apn))
            .map(|t| t.sgw_s11_teid)
            .ok_or_else(|| format!("no session of IMSI {}", req.imsi))?;
        let tft = Tft {
            filters: req.filters.iter().map(|f| PacketFilter::from(*f)).collect(),
        };
        let sgw_s1u_teid = self.alloc_teid();
        let s1u = self.cfg.s1u_addr;
        let t = &self.sessions[&s11];
        let mme = t
            .mme_s11_addr
            .ok_or_else(|| format!("the session of IMSI {} has no MME address", t.imsi))?;
        let msg = Message::CreateBearerRequest(CreateBearerRequest {
            linked_ebi: t.ebi,
            bearer_contexts: vec![BearerContext {
                // The MME assigns the EBI.
                ebi: 0,
                fteids: vec![
                    (0, Fteid::v4(iface::S1U_SGW, sgw_s1u_teid, s1u)),
                    // Combined gateway: the P-GW's user plane is the same endpoint.
                    (1, Fteid::v4(iface::S5S8_PGW_GTPU, sgw_s1u_teid, s1u)),
                ],
                qos: Some(BearerQos {
                    pci: req.arp.pci,
                    priority_level: req.arp.priority_level,
                    pvi: req.arp.pvi,
                    qci: req.qci,
                    mbr_uplink: req.mbr_uplink_kbps,
                    mbr_downlink: req.mbr_downlink_kbps,
                    gbr_uplink: req.gbr_uplink_kbps,
                    gbr_downlink: req.gbr_downlink_kbps,
                }),
                charging_id: Some(sgw_s1u_teid),
                tft: Some(tft),
                cause: None,
            }],
        });
        let peer = SocketAddr::new(IpAddr::V4(mme), GTPC_PORT);
        let pending = S11Context::Bearer(PendingBearer {
            s11,
            qci: req.qci,
            sgw_s1u_teid,
            filters: req.filters.clone(),
        });
        let (seq, bytes) = self
            .requests
            .send(now, peer, Some(t.mme_s11_teid), msg, pending)
            .map_err(|e| e.to_string())?;
        info!(imsi = %req.imsi, seq, qci = req.qci, "Create Bearer Request sent");
        Ok((bytes.to_vec(), peer))
    }

    /// The MME's Create Bearer Response: an accepted bearer joins its session (returns
    /// true: the tunnel list changed).
    pub(super) fn on_create_bearer_response(&mut self, p: PendingBearer, m: Message) -> bool {
        let Message::CreateBearerResponse(r) = m else {
            warn!(teid = p.s11, "Create Bearer answered with {}", m.name());
            return false;
        };
        let Some(bearer) = accepted_bearer(&r) else {
            warn!(teid = p.s11, cause = r.cause, "dedicated bearer refused");
            return false;
        };
        let Some(t) = self.sessions.get_mut(&p.s11) else {
            warn!(
                teid = p.s11,
                "dedicated bearer for a session deleted meanwhile"
            );
            return false;
        };
        let (ebi, enb) = bearer;
        info!(imsi = %t.imsi, ebi, enb_teid = enb.teid, "dedicated bearer active");
        t.dedicated.push(DedicatedBearer {
            ebi,
            qci: p.qci,
            sgw_s1u_teid: p.sgw_s1u_teid,
            enb_teid: enb.teid,
            enb_addr: enb.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
            filters: p.filters,
        });
        self.by_s1u.insert(p.sgw_s1u_teid, p.s11);
        true
    }
}

/// The EBI and eNB F-TEID of an accepted bearer in a Create Bearer Response.
fn accepted_bearer(r: &CreateBearerResponse) -> Option<(u8, Fteid)> {
    if !cause::is_accepted(r.cause) {
        return None;
    }
    let b = r.bearer_contexts.first()?;
    let enb = *b.fteid(0).filter(|f| f.ipv4.is_some())?;
    (b.cause.map_or(true, cause::is_accepted) && (5..=15).contains(&b.ebi)).then_some((b.ebi, enb))
}

/// The eNB end of the bearer a downlink packet of `t` takes: the dedicated bearer of
/// the first matching filter by precedence, else none (the default bearer).
pub(super) fn downlink_bearer(
    dedicated: &[DedicatedBearer],
    packet: &[u8],
) -> Option<(u32, Ipv4Addr)> {
    dedicated
        .iter()
        .flat_map(|b| b.filters.iter().map(move |f| (f, b)))
        .filter(|(f, _)| f.matches_downlink(packet))
        .min_by_key(|(f, _)| f.precedence)
        .map(|(_, b)| (b.enb_teid, b.enb_addr))
}
