//! ESM: the one PDN connection an attach sets up and its default bearer
//! (TS 24.301 §6): the APN and QoS it gets, the session the SPGW is asked for (of
//! the PDN type the UE requested) and the PDN address the UE is given; and the
//! dedicated bearers the P-GW side asks for (TS 23.401 §5.4.1: Create Bearer Request,
//! E-RAB SETUP with ACTIVATE DEDICATED EPS BEARER CONTEXT REQUEST, Create Bearer
//! Response once the eNB and the UE both accepted).

use std::net::Ipv4Addr;

use proto_diameter::s6a::SubscriptionData;
use proto_gtpv2c::transaction::RequestId;
use proto_gtpv2c::{self as gtp, cause, BearerContext, Fteid};
use proto_nas::msg::{self, EpsQos, PdnAddress};
use proto_nas::SecurityHeader;
use proto_s1ap::{self as s1ap, S1ap};
use tracing::{info, warn};

use super::context::{Subscription, Ue, UeState};
use super::emm::protect;
use super::s11::create_session_request;
use super::{Action, MmeCore};

/// EPS bearer id of the default bearer.
pub(super) const DEFAULT_EBI: u8 = 5;

impl MmeCore {
    /// The attach's PDN connectivity once the HSS has answered the ULR: the APN and QoS
    /// from the subscription, then CREATE SESSION to the SPGW.
    pub(super) fn connect_pdn(&mut self, ue: u32, sd: Option<&SubscriptionData>) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let sub = subscription(sd, u.pdn.apn.as_deref(), &self.cfg.default_apn);
        let csr = create_session_request(&self.cfg, u, &sub);
        u.sub = Some(sub);
        u.state = UeState::WaitCreateSession;
        self.changed = true;
        self.actions.push(Action::S11 {
            ue,
            teid: 0,
            msg: gtp::Message::CreateSessionRequest(csr),
        });
    }
}

/// The PDN address IE of the ACTIVATE DEFAULT EPS BEARER CONTEXT REQUEST (TS 24.301
/// §9.9.4.9): the IPv4 address, the IPv6 interface identifier (the UE gets its /64 by
/// router advertisement), or both, as the SPGW allocated them.
pub(super) fn pdn_address(u: &Ue) -> Option<PdnAddress> {
    let iid = u.ue_ipv6.map(|a| (u128::from(a) as u64).to_be_bytes());
    match (u.ue_ip, iid) {
        (Some(v4), Some(iid)) => Some(PdnAddress::Ipv4v6 {
            ipv6_interface_id: iid,
            ipv4: v4.octets(),
        }),
        (None, Some(iid)) => Some(PdnAddress::Ipv6InterfaceId(iid)),
        (Some(v4), None) => Some(PdnAddress::Ipv4(v4.octets())),
        (None, None) => None,
    }
}

/// The PDN type the UE asked for in its PDN CONNECTIVITY REQUEST, and the PAA the
/// Create Session Request carries for it (addresses unspecified: the P-GW allocates).
pub(super) fn requested_pdn(u: &Ue) -> (u8, gtp::Paa) {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match u.pdn.pdn_type {
        gtp::pdn_type::IPV6 => (
            gtp::pdn_type::IPV6,
            gtp::Paa::Ipv6 {
                prefix_len: 64,
                addr: Ipv6Addr::UNSPECIFIED,
            },
        ),
        gtp::pdn_type::IPV4V6 => (
            gtp::pdn_type::IPV4V6,
            gtp::Paa::Ipv4v6 {
                prefix_len: 64,
                v6: Ipv6Addr::UNSPECIFIED,
                v4: Ipv4Addr::UNSPECIFIED,
            },
        ),
        // IPv4, and anything else (24.301 §9.9.4.10: other values are IPv4v6 on the
        // receiving side, but a UE sending them gets the safest, IPv4).
        _ => (gtp::pdn_type::IPV4, gtp::Paa::Ipv4(Ipv4Addr::UNSPECIFIED)),
    }
}

/// The APN and QoS to use: the UE's APN if subscribed, else the default context.
fn subscription(
    sd: Option<&SubscriptionData>,
    requested: Option<&str>,
    default_apn: &str,
) -> Subscription {
    let chosen = sd.and_then(|sd| {
        requested
            .and_then(|r| sd.apns.iter().find(|a| a.apn.eq_ignore_ascii_case(r)))
            .or_else(|| {
                sd.apns
                    .iter()
                    .find(|a| a.context_identifier == sd.default_context_identifier)
            })
            .or(sd.apns.first())
    });
    Subscription {
        msisdn: sd.and_then(|s| s.msisdn.clone()),
        apn: chosen
            .map(|a| a.apn.clone())
            .unwrap_or_else(|| default_apn.to_string()),
        qci: chosen.map(|a| a.qci as u8).unwrap_or(9),
        arp_priority: chosen
            .map(|a| a.arp.priority_level.clamp(1, 15) as u8)
            .unwrap_or(8),
        ambr_ul: sd.map(|s| s.ambr.uplink).unwrap_or(50_000_000),
        ambr_dl: sd.map(|s| s.ambr.downlink).unwrap_or(100_000_000),
    }
}

/// A dedicated bearer of the UE's PDN connection.
#[derive(Debug, Clone)]
pub(super) struct DedicatedBearer {
    pub(super) ebi: u8,
    pub(super) qci: u8,
    pub(super) sgw_s1u: (Ipv4Addr, u32),
    /// The eNB's end, from its E-RAB SETUP RESPONSE.
    enb_s1u: Option<(Ipv4Addr, u32)>,
    /// The UE's ACTIVATE DEDICATED EPS BEARER CONTEXT ACCEPT came.
    accepted: bool,
    /// The Create Bearer Request still to answer.
    request: Option<RequestId>,
}

impl DedicatedBearer {
    pub(super) fn active(&self) -> bool {
        self.request.is_none()
    }
}

/// First EBI of a dedicated bearer: the default one has 5 (TS 24.007 §11.2.3.1.5).
const FIRST_DEDICATED_EBI: u8 = DEFAULT_EBI + 1;

impl MmeCore {
    /// CREATE BEARER REQUEST from the SGW for the UE whose S11 TEID (its MME UE id) is
    /// `teid`: E-RAB SETUP REQUEST toward its eNB carrying the ACTIVATE DEDICATED EPS
    /// BEARER CONTEXT REQUEST; the answer waits for both ([`Action::S11Answer`]). A
    /// retransmission of a request in progress is ignored; a UE without an S1
    /// connection or a request that cannot be served is answered at once.
    pub fn on_create_bearer_request(
        &mut self,
        teid: u32,
        req: gtp::CreateBearerRequest,
        id: RequestId,
    ) {
        let Some(u) = self.ues.get(&teid) else {
            warn!(teid, "Create Bearer for an unknown TEID");
            return self.answer_create_bearer(id, 0, cause::CONTEXT_NOT_FOUND, None);
        };
        if u.dedicated.iter().any(|d| d.request == Some(id)) {
            return;
        }
        let sgw_teid = u.sgw_s11_teid.unwrap_or(0);
        let checked = match (&u.sec, u.assoc, u.enb_ue_id, req.bearer_contexts.first()) {
            _ if req.linked_ebi != DEFAULT_EBI => Err(cause::CONTEXT_NOT_FOUND),
            // Paging for a bearer is not done here: the SGW may try again later.
            (_, None, _, _) | (_, _, None, _) => Err(cause::UNABLE_TO_PAGE_UE),
            _ if u.state != UeState::Attached => Err(cause::UNABLE_TO_PAGE_UE),
            (None, ..) => Err(cause::CONTEXT_NOT_FOUND),
            (.., None) => Err(cause::MANDATORY_IE_MISSING),
            (Some(_), Some(assoc), Some(enb_ue_id), Some(b)) => {
                match (
                    b.qos,
                    b.tft.as_ref(),
                    b.fteid(0).and_then(|f| Some((f.ipv4?, f.teid))),
                ) {
                    (Some(q), Some(t), Some(sgw)) => Ok((assoc, enb_ue_id, q, t.clone(), sgw)),
                    _ => Err(cause::MANDATORY_IE_MISSING),
                }
            }
        };
        let (assoc, enb_ue_id, qos, tft, sgw_s1u) = match checked {
            Ok(v) => v,
            Err(c) => {
                warn!(ue = teid, cause = c, "Create Bearer refused");
                return self.answer_create_bearer(id, sgw_teid, c, None);
            }
        };
        let used: Vec<u8> = u.dedicated.iter().map(|d| d.ebi).collect();
        let Some(ebi) = (FIRST_DEDICATED_EBI..=15).find(|e| !used.contains(e)) else {
            return self.answer_create_bearer(id, sgw_teid, cause::NO_RESOURCES_AVAILABLE, None);
        };
        let eps_qos = EpsQos {
            qci: qos.qci,
            mbr_uplink_kbps: qos.mbr_uplink,
            mbr_downlink_kbps: qos.mbr_downlink,
            gbr_uplink_kbps: qos.gbr_uplink,
            gbr_downlink_kbps: qos.gbr_downlink,
        };
        let plain = tft
            .to_bytes()
            .map_err(|e| proto_nas::NasError::Value(e.to_string()))
            .and_then(|t| msg::activate_dedicated_bearer_request(ebi, DEFAULT_EBI, &eps_qos, t));
        let Some(u) = self.ues.get_mut(&teid) else {
            return;
        };
        let nas = match protect(u.sec.as_mut(), plain, SecurityHeader::IntegrityCiphered) {
            Ok(n) => n,
            Err(e) => {
                warn!(
                    ue = teid,
                    "cannot build ACTIVATE DEDICATED EPS BEARER CONTEXT REQUEST: {e}"
                );
                return self.answer_create_bearer(
                    id,
                    sgw_teid,
                    cause::MANDATORY_IE_INCORRECT,
                    None,
                );
            }
        };
        u.dedicated.push(DedicatedBearer {
            ebi,
            qci: qos.qci,
            sgw_s1u,
            enb_s1u: None,
            accepted: false,
            request: Some(id),
        });
        info!(
            ue = teid,
            ebi,
            qci = qos.qci,
            "dedicated bearer: E-RAB setup"
        );
        self.send(
            assoc,
            &S1ap::ErabSetupRequest {
                mme_ue_id: teid,
                enb_ue_id,
                erabs: vec![s1ap::ErabToSetup {
                    erab_id: ebi,
                    qci: qos.qci,
                    arp_priority: qos.priority_level,
                    sgw_addr: sgw_s1u.0,
                    sgw_teid: sgw_s1u.1,
                    nas: Some(nas),
                    // GTP gives kbit/s, S1AP bit/s (TS 36.413 §9.2.1.18).
                    gbr: (1..=4).contains(&qos.qci).then(|| s1ap::GbrQos {
                        mbr_downlink: qos.mbr_downlink * 1000,
                        mbr_uplink: qos.mbr_uplink * 1000,
                        gbr_downlink: qos.gbr_downlink * 1000,
                        gbr_uplink: qos.gbr_uplink * 1000,
                    }),
                }],
            },
        );
    }

    /// E-RAB SETUP RESPONSE: the eNB's F-TEID of each bearer set up; a failed one is
    /// refused to the SGW and forgotten.
    pub(super) fn on_erab_setup_response(
        &mut self,
        ue: u32,
        erabs: &[s1ap::ErabSetup],
        failed: &[s1ap::ErabFailed],
    ) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        for e in erabs {
            if let Some(d) = u.dedicated.iter_mut().find(|d| d.ebi == e.erab_id) {
                d.enb_s1u = Some((e.enb_addr, e.enb_teid));
            }
        }
        let mut refused = Vec::new();
        for f in failed {
            warn!(ue, ebi = f.erab_id, cause = ?f.cause, "eNB could not set up the dedicated bearer");
            if let Some(i) = u.dedicated.iter().position(|d| d.ebi == f.erab_id) {
                refused.extend(u.dedicated.remove(i).request);
            }
        }
        let sgw_teid = u.sgw_s11_teid.unwrap_or(0);
        for id in refused {
            // TS 29.274 §7.2.4: the bearer could not be set up on the radio side.
            self.answer_create_bearer(id, sgw_teid, cause::UE_NOT_RESPONDING, None);
        }
        for e in erabs {
            self.complete_dedicated_bearer(ue, e.erab_id);
        }
    }

    /// ACTIVATE DEDICATED EPS BEARER CONTEXT ACCEPT from the UE.
    pub(super) fn on_dedicated_bearer_accept(&mut self, ue: u32, ebi: u8) {
        let Some(d) = self
            .ues
            .get_mut(&ue)
            .and_then(|u| u.dedicated.iter_mut().find(|d| d.ebi == ebi))
        else {
            warn!(
                ue,
                ebi, "ACTIVATE DEDICATED EPS BEARER CONTEXT ACCEPT for no such bearer"
            );
            return;
        };
        d.accepted = true;
        self.complete_dedicated_bearer(ue, ebi);
    }

    /// Once the eNB and the UE both have the bearer: CREATE BEARER RESPONSE with its
    /// EBI and both S1-U F-TEIDs.
    fn complete_dedicated_bearer(&mut self, ue: u32, ebi: u8) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let sgw_teid = u.sgw_s11_teid.unwrap_or(0);
        let Some(d) = u.dedicated.iter_mut().find(|d| d.ebi == ebi) else {
            return;
        };
        let (true, Some(enb), Some(id)) = (d.accepted, d.enb_s1u, d.request) else {
            return;
        };
        d.request = None;
        let bearer = BearerContext {
            ebi,
            cause: Some(cause::REQUEST_ACCEPTED),
            fteids: vec![
                (0, Fteid::v4(gtp::iface::S1U_ENODEB, enb.1, enb.0)),
                (1, Fteid::v4(gtp::iface::S1U_SGW, d.sgw_s1u.1, d.sgw_s1u.0)),
            ],
            ..Default::default()
        };
        info!(ue, ebi, qci = d.qci, "dedicated bearer active");
        self.changed = true;
        self.answer_create_bearer(id, sgw_teid, cause::REQUEST_ACCEPTED, Some(bearer));
    }

    fn answer_create_bearer(
        &mut self,
        id: RequestId,
        sgw_teid: u32,
        c: u8,
        bearer: Option<BearerContext>,
    ) {
        // A refusal still names the bearer (EBI 0: none was assigned) with the cause.
        let bearer = bearer.unwrap_or(BearerContext {
            ebi: 0,
            cause: Some(c),
            ..Default::default()
        });
        self.actions.push(Action::S11Answer {
            id,
            teid: sgw_teid,
            msg: gtp::Message::CreateBearerResponse(gtp::CreateBearerResponse {
                cause: c,
                bearer_contexts: vec![bearer],
                recovery: None,
            }),
        });
    }
}
