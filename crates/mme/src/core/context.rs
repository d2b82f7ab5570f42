//! The MME's state: the eNBs it has an association with, the UE contexts (ids, NAS
//! security, subscription, TEIDs) and the views of both the JSON state dump shows.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use proto_nas::{Direction, Guti, NasSecurity, PdnConnectivity};
use proto_s1ap::{Ecgi, Tai};
use proto_sctp::AssocId;
use serde::Serialize;

use super::MmeCore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UeState {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EcmState {
    Idle,
    Connected,
}

/// A paging in progress (network-triggered service request, TS 23.401 §5.3.4.3).
#[derive(Debug, Clone, Copy)]
pub(super) struct Paging {
    /// T3413 expiry.
    pub(super) deadline: Instant,
    pub(super) retries_left: u32,
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
    pub(super) imsi: String,
    pub(super) guti: Guti,
    pub(super) state: UeState,
    pub(super) ue_net_cap: Vec<u8>,
    pub(super) pdn: PdnConnectivity,
    pub(super) tai: Tai,
    pub(super) ecgi: Ecgi,
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
    pub(super) paging: Option<Paging>,
    /// Dedicated bearers of the PDN connection, being set up or active.
    pub(super) dedicated: Vec<super::esm::DedicatedBearer>,
}

/// One UE context as the JSON state dump shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UeView {
    pub imsi: String,
    pub guti: String,
    pub m_tmsi: u32,
    pub mme_ue_s1ap_id: u32,
    pub enb_ue_s1ap_id: Option<u32>,
    pub enb: Option<String>,
    pub state: UeState,
    pub ecm_state: EcmState,
    /// The MME is paging the UE (T3413 running).
    pub paging: bool,
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
}

impl MmeCore {
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
                guti: format!(
                    "{:02x}{:02x}{:02x}-{:04x}-{:02x}-{:08x}",
                    u.guti.plmn[0],
                    u.guti.plmn[1],
                    u.guti.plmn[2],
                    u.guti.mme_group_id,
                    u.guti.mme_code,
                    u.guti.m_tmsi
                ),
                m_tmsi: u.guti.m_tmsi,
                mme_ue_s1ap_id: u.mme_ue_id,
                enb_ue_s1ap_id: u.enb_ue_id,
                enb: u
                    .assoc
                    .and_then(|a| self.enbs.get(&a))
                    .map(|e| e.peer.to_string()),
                state: u.state,
                ecm_state: u.ecm_state(),
                paging: u.paging.is_some(),
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
