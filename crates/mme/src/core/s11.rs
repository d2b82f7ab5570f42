//! S11: the SPGW's answers to our GTPv2-C requests, and the builders of those
//! requests. Sequence numbers and retransmission (T3/N3) are the I/O shell's.

use std::net::Ipv4Addr;
use std::time::Instant;

use proto_gtpv2c::{self as gtp, BearerContext, BearerQos, Fteid, Paa};
use proto_nas::cause as emm;
use proto_s1ap::{Ecgi, Tai};
use tracing::{debug, info, warn};

use super::context::{Subscription, Ue, UeState};
use super::esm::{requested_pdn, DEFAULT_EBI};
use super::{Action, MmeCore};
use crate::Config;

impl MmeCore {
    /// The SPGW's answer to a request sent for `ue` (or the error if none came).
    pub fn on_s11(&mut self, now: Instant, ue: u32, resp: Result<gtp::Message, String>) {
        self.now = now;
        if self.on_path_switch_answer(ue, &resp) {
            return;
        }
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let m = match resp {
            Ok(m) => m,
            Err(e) => {
                warn!(ue, state = ?u.state, "S11 request failed: {e}");
                return match u.state {
                    UeState::WaitCreateSession => self.reject(ue, emm::NETWORK_FAILURE),
                    UeState::Detaching => self.detach_complete(ue),
                    _ => {}
                };
            }
        };
        match m {
            gtp::Message::CreateSessionResponse(r) if u.state == UeState::WaitCreateSession => {
                let s1u = r.bearer_contexts.first().and_then(|b| b.fteid(0)).copied();
                let (ip, ipv6) = match r.paa {
                    Some(Paa::Ipv4(a)) => (Some(a), None),
                    Some(Paa::Ipv6 { addr, .. }) => (None, Some(addr)),
                    Some(Paa::Ipv4v6 { v6, v4, .. }) => (Some(v4), Some(v6)),
                    None => (None, None),
                };
                let (true, Some(sgw), true, Some(s1u)) = (
                    gtp::cause::is_accepted(r.cause),
                    r.sender_fteid,
                    ip.is_some() || ipv6.is_some(),
                    s1u.and_then(|f| f.ipv4.map(|a| (a, f.teid))),
                ) else {
                    warn!(ue, cause = r.cause, "Create Session refused or incomplete");
                    return self.reject(ue, emm::NETWORK_FAILURE);
                };
                u.sgw_s11_teid = Some(sgw.teid);
                u.ue_ip = ip;
                u.ue_ipv6 = ipv6;
                u.sgw_s1u = Some(s1u);
                info!(ue, imsi = %u.imsi, ?ip, ?ipv6, sgw_s1u_teid = s1u.1, "session created");
                self.send_context_setup(ue);
            }
            gtp::Message::ModifyBearerResponse(r) => {
                if gtp::cause::is_accepted(r.cause) {
                    u.bearer_active = true;
                    debug!(ue, "bearer modified: S1-U active");
                } else {
                    warn!(ue, cause = r.cause, "Modify Bearer refused");
                }
                self.changed = true;
            }
            gtp::Message::DeleteSessionResponse(r) => {
                debug!(ue, cause = r.cause, "session deleted");
                u.sgw_s11_teid = None;
                u.bearer_active = false;
                if u.state == UeState::Detaching {
                    self.detach_complete(ue);
                }
                self.changed = true;
            }
            other => warn!(ue, state = ?u.state, "unexpected S11 message {}", other.name()),
        }
    }

    /// DELETE SESSION REQUEST for the UE's one PDN connection, named by its default bearer.
    pub(super) fn delete_session(&mut self, ue: u32, teid: u32) {
        self.actions.push(Action::S11 {
            ue,
            teid,
            msg: gtp::Message::DeleteSessionRequest(gtp::DeleteSessionRequest {
                linked_ebi: Some(DEFAULT_EBI),
                ..Default::default()
            }),
        });
    }
}

/// CREATE SESSION REQUEST for the UE's default bearer; it goes to SGW TEID 0.
pub(super) fn create_session_request(
    cfg: &Config,
    u: &Ue,
    sub: &Subscription,
) -> gtp::CreateSessionRequest {
    let (pdn_type, paa) = requested_pdn(u);
    gtp::CreateSessionRequest {
        imsi: u.imsi.clone(),
        msisdn: sub.msisdn.clone(),
        uli: Some(uli(cfg, u.tai, u.ecgi)),
        serving_network: Some(gtp_plmn(cfg)),
        rat_type: gtp::rat_type::EUTRAN,
        sender_fteid: Fteid::v4(gtp::iface::S11_MME, u.mme_s11_teid, cfg.s11_address),
        pgw_s5s8_fteid: match cfg.spgw_s11.ip() {
            std::net::IpAddr::V4(a) => Some(Fteid::v4(gtp::iface::S5S8_PGW_GTPC, 0, a)),
            std::net::IpAddr::V6(_) => None,
        },
        apn: sub.apn.clone(),
        selection_mode: Some(0),
        pdn_type: Some(pdn_type),
        paa: Some(paa),
        apn_restriction: Some(0),
        ambr: Some(gtp::Ambr {
            uplink_kbps: sub.ambr_ul / 1000,
            downlink_kbps: sub.ambr_dl / 1000,
        }),
        pco: None,
        bearer_contexts: vec![BearerContext {
            ebi: DEFAULT_EBI,
            qos: Some(BearerQos {
                qci: sub.qci,
                priority_level: sub.arp_priority,
                ..BearerQos::default_bearer()
            }),
            ..Default::default()
        }],
        recovery: None,
        ..Default::default()
    }
}

/// MODIFY BEARER REQUEST: the eNB's end of the default bearer's S1-U tunnel.
pub(super) fn modify_bearer_request(enb_addr: Ipv4Addr, enb_teid: u32) -> gtp::ModifyBearerRequest {
    gtp::ModifyBearerRequest {
        bearer_contexts: vec![BearerContext {
            ebi: DEFAULT_EBI,
            fteids: vec![(0, Fteid::v4(gtp::iface::S1U_ENODEB, enb_teid, enb_addr))],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// User Location Information: the UE's TAI and cell.
pub(super) fn uli(cfg: &Config, tai: Tai, ecgi: Ecgi) -> gtp::Uli {
    let plmn = gtp_plmn(cfg);
    gtp::Uli {
        tai: Some(gtp::Tai { plmn, tac: tai.tac }),
        ecgi: Some(gtp::Ecgi {
            plmn,
            eci: ecgi.cell_id,
        }),
    }
}

fn gtp_plmn(cfg: &Config) -> gtp::Plmn {
    gtp::Plmn {
        mcc: cfg.mcc.parse().unwrap_or(1),
        mnc: cfg.mnc.parse().unwrap_or(1),
        mnc_3_digits: cfg.mnc.len() == 3,
    }
}
