//! The MME's state: the eNBs it has an association with, the UE contexts (ids, NAS
//! security, subscription, TEIDs) and the views of both the JSON state dump shows.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proto_nas::{Direction, Guti, NasSecurity, PdnConnectivity};
use proto_s1ap::{Ecgi, Tai};
use proto_sctp::AssocId;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::handover::{HandoverPhase, HoState};
use super::timers::{EmmProcedure, Timers};
use super::MmeCore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UeState {
    /// ATTACH REQUEST with a GUTI this MME cannot resolve: IDENTITY REQUEST sent.
    WaitIdentity,
    WaitAuthInfo,
    WaitAuthResponse,
    WaitSecurityModeComplete,
    WaitUpdateLocation,
    WaitCreateSession,
    WaitContextSetup,
    WaitAttachComplete,
    Attached,
    /// EMM-REGISTERED, ECM-IDLE (S1 released by the eNB).
    Idle,
    /// A SERVICE REQUEST from ECM-IDLE passed: INITIAL CONTEXT SETUP sent, the eNB's
    /// S1-U F-TEID awaited.
    WaitServiceSetup,
    Detaching,
    /// UE Context Release Command sent; the context goes when the eNB completes.
    Releasing,
}

/// ECM state (TS 23.401 §4.6.3): whether the UE has an S1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EcmState {
    Idle,
    Connected,
}

#[derive(Debug, Clone)]
pub(super) struct Vector {
    pub(super) rand: [u8; 16],
    pub(super) xres: Vec<u8>,
    pub(super) kasme: [u8; 32],
}

#[derive(Debug, Clone)]
pub(super) struct Subscription {
    pub(super) msisdn: Option<String>,
    pub(super) apn: String,
    pub(super) qci: u8,
    pub(super) arp_priority: u8,
    pub(super) ambr_ul: u32,
    pub(super) ambr_dl: u32,
}

#[derive(Debug)]
pub(super) struct Ue {
    pub(super) mme_ue_id: u32,
    pub(super) enb_ue_id: Option<u32>,
    pub(super) assoc: Option<AssocId>,
    /// Empty until the UE has given it (identification).
    pub(super) imsi: String,
    pub(super) guti: Guti,
    /// A GUTI sent in a GUTI REALLOCATION COMMAND or TAU ACCEPT and not yet confirmed:
    /// the old and the new one both identify the UE until the UE completes or uses the
    /// new one (TS 24.301 §5.4.1.4).
    pub(super) new_guti: Option<Guti>,
    pub(super) state: UeState,
    pub(super) ue_net_cap: Vec<u8>,
    pub(super) pdn: PdnConnectivity,
    /// Where the eNB last saw the UE.
    pub(super) tai: Tai,
    pub(super) ecgi: Ecgi,
    /// The TAI of the last attach or tracking area update.
    pub(super) registered_tai: Tai,
    pub(super) vector: Option<Vector>,
    pub(super) ksi: u8,
    pub(super) sec: Option<NasSecurity>,
    pub(super) sub: Option<Subscription>,
    pub(super) mme_s11_teid: u32,
    pub(super) sgw_s11_teid: Option<u32>,
    pub(super) ue_ip: Option<Ipv4Addr>,
    /// The UE's IPv6 address from the PAA (its /64 and interface identifier).
    pub(super) ue_ipv6: Option<Ipv6Addr>,
    pub(super) sgw_s1u: Option<(Ipv4Addr, u32)>,
    pub(super) enb_s1u: Option<(Ipv4Addr, u32)>,
    pub(super) bearer_active: bool,
    /// Remove the context once the eNB confirms the release.
    pub(super) remove_on_release: bool,
    pub(super) timers: Timers,
    /// A network-initiated detach waits for the paged UE; re-attach required or not.
    pub(super) pending_detach: Option<bool>,
    /// The TAU came from ECM-IDLE without the active flag: the S1 connection goes
    /// once the TAU is complete.
    pub(super) release_after_tau: bool,
    /// A Downlink Data Notification came while the UE had an S1 connection without its
    /// user plane (a TAU from idle): the SGW, answered, sends no second one, so the UE is
    /// paged as soon as that connection is released.
    pub(super) downlink_waiting: bool,
    /// NH/NCC and the handover in progress, if any.
    pub(super) ho: HoState,
    /// Dedicated bearers of the PDN connection, being set up or active.
    pub(super) dedicated: Vec<super::esm::DedicatedBearer>,
}

/// One UE context as the JSON state dump shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UeView {
    pub imsi: String,
    pub guti: String,
    pub m_tmsi: u32,
    pub mme_ue_s1ap_id: u32,
    pub enb_ue_s1ap_id: Option<u32>,
    pub enb: Option<String>,
    /// The eNB ID (S1 Setup) of the eNB the UE is on.
    pub enb_id: Option<u32>,
    /// The UE's last reported cell (E-UTRAN cell identity) and TAC.
    #[serde(default)]
    pub cell_id: u32,
    #[serde(default)]
    pub tac: u16,
    /// A handover in progress.
    pub handover: Option<HandoverPhase>,
    /// The MME's next-hop chaining count (TS 33.401 §7.2.8): 1 after an INITIAL
    /// CONTEXT SETUP, one more per handover, modulo 8.
    pub ncc: Option<u8>,
    pub state: UeState,
    pub ecm_state: EcmState,
    /// The MME is paging the UE (T3413 running).
    pub paging: bool,
    /// The network-initiated EMM procedure waiting for the UE, and its timer.
    pub emm_procedure: Option<EmmProcedure>,
    pub nas_timer: Option<String>,
    /// Expiries of that timer so far (each sent the message again).
    #[serde(default)]
    pub nas_timer_expiries: u32,
    /// The GUTI sent and not yet confirmed (it and `guti` both identify the UE).
    pub new_guti: Option<String>,
    /// The mobile reachable timer runs (ECM-IDLE).
    #[serde(default)]
    pub mobile_reachable: bool,
    /// A network-initiated detach waits for the paged UE.
    #[serde(default)]
    pub detach_pending: bool,
    pub ue_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ue_ipv6: Option<Ipv6Addr>,
    pub apn: Option<String>,
    pub mme_s11_teid: u32,
    pub sgw_s11_teid: Option<u32>,
    pub sgw_s1u_teid: Option<u32>,
    pub sgw_s1u_addr: Option<Ipv4Addr>,
    pub enb_s1u_teid: Option<u32>,
    pub enb_s1u_addr: Option<Ipv4Addr>,
    pub bearer_active: bool,
    /// EBIs of the active dedicated bearers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dedicated_ebis: Vec<u8>,
    pub ul_nas_count: Option<u32>,
    pub dl_nas_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnbView {
    pub peer: SocketAddr,
    pub enb_id: Option<u32>,
    pub name: Option<String>,
}

#[derive(Debug)]
pub(super) struct Enb {
    pub(super) peer: SocketAddr,
    pub(super) enb_id: Option<u32>,
    pub(super) name: Option<String>,
    /// TACs it serves (S1 Setup): where a UE of those TAIs is paged.
    pub(super) tacs: Vec<u16>,
}

impl Ue {
    /// An S1 connection exists (or is being set up) for the UE.
    pub(super) fn ecm_state(&self) -> EcmState {
        match self.enb_ue_id {
            Some(_) => EcmState::Connected,
            None => EcmState::Idle,
        }
    }

    /// Whether the UE is known by this M-TMSI: its GUTI or the one it was just sent.
    pub(super) fn has_m_tmsi(&self, m_tmsi: u32) -> bool {
        self.guti.m_tmsi == m_tmsi || self.new_guti.is_some_and(|g| g.m_tmsi == m_tmsi)
    }

    /// The UE proved it holds the GUTI of `m_tmsi` (a verified message used it, or it
    /// completed the reallocation): if it is the new one, the old is no longer valid.
    pub(super) fn confirm_guti(&mut self, m_tmsi: u32) {
        if let Some(g) = self.new_guti.filter(|g| g.m_tmsi == m_tmsi) {
            info!(
                ue = self.mme_ue_id,
                m_tmsi, "new GUTI in use, the old one released"
            );
            self.guti = g;
            self.new_guti = None;
        }
    }

    /// EMM-REGISTERED: attached, idle, going idle (the release is in flight, while the UE
    /// may already speak through another eNB) or coming back from idle.
    pub(super) fn registered(&self) -> bool {
        let going_idle = self.state == UeState::Releasing && !self.remove_on_release;
        (going_idle
            || matches!(
                self.state,
                UeState::Attached | UeState::Idle | UeState::WaitServiceSetup
            ))
            && self.sec.is_some()
    }
}

fn guti_string(g: &Guti) -> String {
    format!(
        "{:02x}{:02x}{:02x}-{:04x}-{:02x}-{:08x}",
        g.plmn[0], g.plmn[1], g.plmn[2], g.mme_group_id, g.mme_code, g.m_tmsi
    )
}

impl MmeCore {
    /// The UE a GUTI identifies (its current one, or the one just sent to it).
    pub(super) fn ue_by_guti(&self, g: &Guti) -> Option<u32> {
        self.ues
            .values()
            .find(|u| u.guti == *g || u.new_guti == Some(*g))
            .map(|u| u.mme_ue_id)
    }

    /// The one place where a UE context is finally removed: detach (either way,
    /// implicit too), an attach that failed or was aborted, or a context that a new
    /// attach of the same IMSI replaces. Returns the context.
    pub(super) fn forget_ue(&mut self, ue: u32) -> Option<Ue> {
        let u = self.ues.remove(&ue)?;
        info!(ue, imsi = %u.imsi, "UE context removed");
        self.changed = true;
        Some(u)
    }

    pub fn enbs(&self) -> Vec<EnbView> {
        self.enbs
            .values()
            .map(|e| EnbView {
                peer: e.peer,
                enb_id: e.enb_id,
                name: e.name.clone(),
            })
            .collect()
    }

    pub fn ues(&self) -> Vec<UeView> {
        self.ues
            .values()
            .map(|u| UeView {
                imsi: u.imsi.clone(),
                guti: guti_string(&u.guti),
                m_tmsi: u.guti.m_tmsi,
                mme_ue_s1ap_id: u.mme_ue_id,
                enb_ue_s1ap_id: u.enb_ue_id,
                enb: u
                    .assoc
                    .and_then(|a| self.enbs.get(&a))
                    .map(|e| e.peer.to_string()),
                enb_id: u
                    .assoc
                    .and_then(|a| self.enbs.get(&a))
                    .and_then(|e| e.enb_id),
                cell_id: u.ecgi.cell_id,
                tac: u.tai.tac,
                handover: u.ho.phase(),
                ncc: u.ho.ncc(),
                state: u.state,
                ecm_state: u.ecm_state(),
                paging: u.timers.paging.is_some(),
                emm_procedure: u.timers.nas.as_ref().map(|r| r.procedure),
                nas_timer: u.timers.nas.as_ref().map(|r| r.procedure.timer().into()),
                nas_timer_expiries: u.timers.nas.as_ref().map_or(0, |r| r.expiries),
                new_guti: u.new_guti.as_ref().map(guti_string),
                mobile_reachable: u.timers.mobile_reachable.is_some(),
                detach_pending: u.pending_detach.is_some(),
                ue_ip: u.ue_ip,
                ue_ipv6: u.ue_ipv6,
                apn: u.sub.as_ref().map(|s| s.apn.clone()),
                mme_s11_teid: u.mme_s11_teid,
                sgw_s11_teid: u.sgw_s11_teid,
                sgw_s1u_teid: u.sgw_s1u.map(|x| x.1),
                sgw_s1u_addr: u.sgw_s1u.map(|x| x.0),
                enb_s1u_teid: u.enb_s1u.map(|x| x.1),
                enb_s1u_addr: u.enb_s1u.map(|x| x.0),
                bearer_active: u.bearer_active,
                dedicated_ebis: u
                    .dedicated
                    .iter()
                    .filter(|d| d.active())
                    .map(|d| d.ebi)
                    .collect(),
                ul_nas_count: u.sec.as_ref().and_then(|s| s.count(Direction::Uplink)),
                dl_nas_count: u.sec.as_ref().and_then(|s| s.count(Direction::Downlink)),
            })
            .collect()
    }
}
