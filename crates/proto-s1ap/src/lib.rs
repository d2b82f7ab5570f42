//! S1AP (TS 36.413) for both ends of S1-MME, as one enum of plain structs.
//!
//! The APER codec and the generated ASN.1 types are `oxirush-s1ap`, re-exported as
//! [`asn`] for anything this crate does not cover. [`decode`] never panics: bad octets,
//! missing mandatory IEs or undecodable IEs are [`S1apError`]s, and a well-formed PDU of
//! a procedure that is not modelled here is [`S1ap::Other`] (so an MME can answer it
//! with an ERROR INDICATION instead of dropping the association).
//!
//! SCTP streams (TS 36.412 §7): non-UE-associated signalling (S1 Setup, Error
//! Indication without UE ids) uses stream 0; UE-associated signalling uses a non-zero
//! stream, see [`ue_stream`].

use std::net::Ipv4Addr;

use oxirush_s1ap::helpers::{self, EnbKind};
use oxirush_s1ap::s1ap::*;
use oxirush_s1ap::{
    build_s1ap, build_s1ap_ie, extract_s1ap_ies, ie, BitString, Octets, S1apPduKind,
};

pub use oxirush_s1ap as asn;
pub use oxirush_s1ap::s1ap::{
    CNDomain, Cause, CauseMisc, CauseNas, CauseProtocol, CauseRadioNetwork, CauseTransport,
    RRCEstablishmentCause,
};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum S1apError {
    #[error("S1AP: {0}")]
    Codec(String),
    #[error("S1AP: bad value: {0}")]
    Value(String),
}

impl From<oxirush_s1ap::Error> for S1apError {
    fn from(e: oxirush_s1ap::Error) -> Self {
        S1apError::Codec(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, S1apError>;

/// Tracking area identity: PLMN (3 octets, TS 24.008 coding) and TAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tai {
    pub plmn: [u8; 3],
    pub tac: u16,
}

/// E-UTRAN cell global identity: PLMN and the 28-bit cell identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ecgi {
    pub plmn: [u8; 3],
    pub cell_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S1SetupRequest {
    pub plmn: [u8; 3],
    /// Macro eNB ID (20 bits).
    pub enb_id: u32,
    pub enb_name: Option<String>,
    /// Supported TACs, all broadcasting `plmn`.
    pub tacs: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S1SetupResponse {
    pub mme_name: Option<String>,
    pub plmn: [u8; 3],
    pub mme_group_id: u16,
    pub mme_code: u8,
    pub relative_capacity: u8,
}

/// S-TMSI (TS 23.003 §2.9): MME code and M-TMSI of the UE's GUTI, the name of an
/// idle UE in INITIAL UE MESSAGE (Service Request, TAU) and PAGING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct STmsi {
    pub mme_code: u8,
    pub m_tmsi: u32,
}

/// Whom a PAGING is for (TS 36.413 §9.2.3.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagingIdentity {
    STmsi(STmsi),
    /// IMSI as its TBCD octets (3..=8), for an MME that pages without a GUTI.
    Imsi(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// IMSI mod 1024 (TS 36.304 §7), 10 bits: the eNB derives the paging occasion.
    pub ue_identity_index: u16,
    pub identity: PagingIdentity,
    pub cn_domain: CNDomain,
    pub tais: Vec<Tai>,
}

/// The target of an intra-LTE handover: a macro eNB and the TAI it serves the UE in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetEnb {
    pub plmn: [u8; 3],
    pub enb_id: u32,
    pub tai: Tai,
}

/// NH and NCC from which the target eNB derives its KeNB (TS 33.401 §7.2.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecurityContext {
    /// Next-hop chaining count, 0..=7.
    pub ncc: u8,
    pub nh: [u8; 32],
}

/// One E-RAB's PDCP COUNTs (12-bit SN form) in eNB/MME STATUS TRANSFER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BearerStatus {
    pub erab_id: u8,
    pub ul_pdcp_sn: u16,
    pub ul_hfn: u32,
    pub dl_pdcp_sn: u16,
    pub dl_hfn: u32,
}

/// ENB STATUS TRANSFER (source eNB to MME) and MME STATUS TRANSFER (MME to target
/// eNB) carry the same container; the ids are those of the sender's S1 connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTransfer {
    pub mme_ue_id: u32,
    pub enb_ue_id: u32,
    pub bearers: Vec<BearerStatus>,
}

/// One E-RAB an eNB could not set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErabFailed {
    pub erab_id: u8,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverRequired {
    pub mme_ue_id: u32,
    pub enb_ue_id: u32,
    pub cause: Cause,
    pub target: TargetEnb,
    /// Source eNB to Target eNB Transparent Container (TS 36.413 §9.2.1.56), opaque.
    pub source_to_target: Vec<u8>,
}

/// HANDOVER REQUEST to the target eNB; it has no eNB UE S1AP ID yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverRequest {
    pub mme_ue_id: u32,
    pub cause: Cause,
    pub ambr_dl: u64,
    pub ambr_ul: u64,
    /// The E-RABs with their S-GW S1-U F-TEIDs; `nas` must be `None`.
    pub erabs: Vec<ErabToSetup>,
    pub source_to_target: Vec<u8>,
    pub ue_sec_enc: u8,
    pub ue_sec_int: u8,
    pub security: SecurityContext,
}

/// PATH SWITCH REQUEST from the target eNB after an X2 handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSwitchRequest {
    /// The target eNB's id for the UE.
    pub enb_ue_id: u32,
    /// The MME UE S1AP ID of the source eNB's connection.
    pub source_mme_ue_id: u32,
    /// The E-RABs with the target eNB's S1-U F-TEIDs.
    pub erabs: Vec<ErabSetup>,
    pub tai: Tai,
    pub ecgi: Ecgi,
    pub ue_sec_enc: u8,
    pub ue_sec_int: u8,
}

/// One E-RAB of an INITIAL CONTEXT SETUP REQUEST, E-RAB SETUP REQUEST (`nas`
/// mandatory there) or HANDOVER REQUEST (no `nas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErabToSetup {
    pub erab_id: u8,
    pub qci: u8,
    /// ARP priority level (1..=15).
    pub arp_priority: u8,
    /// S-GW S1-U F-TEID.
    pub sgw_addr: Ipv4Addr,
    pub sgw_teid: u32,
    /// The NAS PDU for the UE (ATTACH ACCEPT), if any.
    pub nas: Option<Vec<u8>>,
    /// Bit rates of a GBR bearer (QCI 1..=4), which TS 36.413 §9.2.1.15 requires for it.
    pub gbr: Option<GbrQos>,
}

/// GBR QoS Information (TS 36.413 §9.2.1.18), bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GbrQos {
    pub mbr_downlink: u64,
    pub mbr_uplink: u64,
    pub gbr_downlink: u64,
    pub gbr_uplink: u64,
}

/// One E-RAB and the eNB's S1-U F-TEID: INITIAL CONTEXT SETUP RESPONSE, E-RAB SETUP
/// RESPONSE, HANDOVER REQUEST ACKNOWLEDGE (admitted), PATH SWITCH REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErabSetup {
    pub erab_id: u8,
    pub enb_addr: Ipv4Addr,
    pub enb_teid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialContextSetupRequest {
    pub mme_ue_id: u32,
    pub enb_ue_id: u32,
    pub ambr_dl: u64,
    pub ambr_ul: u64,
    pub erabs: Vec<ErabToSetup>,
    /// First octet of the S1AP encryption / integrity algorithm bit strings
    /// (bit 8 = 128-EEA1/EIA1, bit 7 = 128-EEA2/EIA2, bit 6 = 128-EEA3/EIA3).
    pub ue_sec_enc: u8,
    pub ue_sec_int: u8,
    pub kenb: [u8; 32],
}

/// The S1AP messages of the lab. Ids are the eNB/MME UE S1AP IDs of TS 36.413 §9.2.3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S1ap {
    S1SetupRequest(S1SetupRequest),
    S1SetupResponse(S1SetupResponse),
    S1SetupFailure {
        cause: Cause,
    },
    InitialUeMessage {
        enb_ue_id: u32,
        nas: Vec<u8>,
        tai: Tai,
        ecgi: Ecgi,
        /// Present when an idle UE comes back (Service Request, TAU) with its GUTI.
        s_tmsi: Option<STmsi>,
        rrc_cause: RRCEstablishmentCause,
    },
    DownlinkNasTransport {
        mme_ue_id: u32,
        enb_ue_id: u32,
        nas: Vec<u8>,
    },
    UplinkNasTransport {
        mme_ue_id: u32,
        enb_ue_id: u32,
        nas: Vec<u8>,
        tai: Tai,
        ecgi: Ecgi,
    },
    InitialContextSetupRequest(Box<InitialContextSetupRequest>),
    InitialContextSetupResponse {
        mme_ue_id: u32,
        enb_ue_id: u32,
        erabs: Vec<ErabSetup>,
    },
    InitialContextSetupFailure {
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: Cause,
    },
    UeContextReleaseRequest {
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: Cause,
    },
    UeContextReleaseCommand {
        mme_ue_id: u32,
        /// `None` sends only the MME UE S1AP ID.
        enb_ue_id: Option<u32>,
        cause: Cause,
    },
    UeContextReleaseComplete {
        mme_ue_id: u32,
        enb_ue_id: u32,
    },
    ErrorIndication {
        mme_ue_id: Option<u32>,
        enb_ue_id: Option<u32>,
        cause: Option<Cause>,
    },
    Paging(Paging),
    /// A dedicated bearer: `nas` of each E-RAB is its ACTIVATE DEDICATED EPS BEARER
    /// CONTEXT REQUEST.
    ErabSetupRequest {
        mme_ue_id: u32,
        enb_ue_id: u32,
        erabs: Vec<ErabToSetup>,
    },
    ErabSetupResponse {
        mme_ue_id: u32,
        enb_ue_id: u32,
        erabs: Vec<ErabSetup>,
        failed: Vec<ErabFailed>,
    },
    /// S1 handover, intra-LTE only: another handover type does not decode.
    HandoverRequired(Box<HandoverRequired>),
    HandoverCommand {
        mme_ue_id: u32,
        enb_ue_id: u32,
        /// Target eNB to Source eNB Transparent Container (§9.2.1.57), opaque.
        target_to_source: Vec<u8>,
    },
    HandoverPreparationFailure {
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: Cause,
    },
    HandoverRequest(Box<HandoverRequest>),
    HandoverRequestAcknowledge {
        mme_ue_id: u32,
        /// The target eNB's id for the UE.
        enb_ue_id: u32,
        admitted: Vec<ErabSetup>,
        target_to_source: Vec<u8>,
    },
    HandoverFailure {
        mme_ue_id: u32,
        cause: Cause,
    },
    /// The UE arrived at the target eNB, in this cell.
    HandoverNotify {
        mme_ue_id: u32,
        enb_ue_id: u32,
        tai: Tai,
        ecgi: Ecgi,
    },
    EnbStatusTransfer(StatusTransfer),
    MmeStatusTransfer(StatusTransfer),
    HandoverCancel {
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: Cause,
    },
    HandoverCancelAcknowledge {
        mme_ue_id: u32,
        enb_ue_id: u32,
    },
    PathSwitchRequest(Box<PathSwitchRequest>),
    PathSwitchRequestAcknowledge {
        mme_ue_id: u32,
        enb_ue_id: u32,
        security: SecurityContext,
        /// The MME's stored UE security capabilities (encryption, integrity first
        /// octets), sent when the target eNB's differ (TS 33.401 §7.2.4.2.2).
        ue_sec: Option<(u8, u8)>,
    },
    PathSwitchRequestFailure {
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: Cause,
    },
    /// A well-formed PDU of another procedure or direction.
    Other {
        procedure_code: u8,
        name: String,
    },
}

impl S1ap {
    /// The SCTP stream to send this message on (TS 36.412 §7).
    pub fn stream(&self) -> u16 {
        match self {
            S1ap::S1SetupRequest(_)
            | S1ap::S1SetupResponse(_)
            | S1ap::S1SetupFailure { .. }
            | S1ap::Paging(_)
            | S1ap::Other { .. } => 0,
            S1ap::ErrorIndication {
                mme_ue_id,
                enb_ue_id,
                ..
            } => match (mme_ue_id, enb_ue_id) {
                (None, None) => 0,
                (m, e) => ue_stream(m.or(*e).unwrap_or(0)),
            },
            S1ap::InitialUeMessage { enb_ue_id, .. } => ue_stream(*enb_ue_id),
            S1ap::DownlinkNasTransport { enb_ue_id, .. }
            | S1ap::UplinkNasTransport { enb_ue_id, .. }
            | S1ap::InitialContextSetupResponse { enb_ue_id, .. }
            | S1ap::InitialContextSetupFailure { enb_ue_id, .. }
            | S1ap::UeContextReleaseRequest { enb_ue_id, .. }
            | S1ap::UeContextReleaseComplete { enb_ue_id, .. }
            | S1ap::ErabSetupRequest { enb_ue_id, .. }
            | S1ap::ErabSetupResponse { enb_ue_id, .. }
            | S1ap::HandoverCommand { enb_ue_id, .. }
            | S1ap::HandoverPreparationFailure { enb_ue_id, .. }
            | S1ap::HandoverRequestAcknowledge { enb_ue_id, .. }
            | S1ap::HandoverNotify { enb_ue_id, .. }
            | S1ap::EnbStatusTransfer(StatusTransfer { enb_ue_id, .. })
            | S1ap::MmeStatusTransfer(StatusTransfer { enb_ue_id, .. })
            | S1ap::HandoverCancel { enb_ue_id, .. }
            | S1ap::HandoverCancelAcknowledge { enb_ue_id, .. }
            | S1ap::PathSwitchRequestAcknowledge { enb_ue_id, .. }
            | S1ap::PathSwitchRequestFailure { enb_ue_id, .. } => ue_stream(*enb_ue_id),
            S1ap::InitialContextSetupRequest(r) => ue_stream(r.enb_ue_id),
            S1ap::HandoverRequired(r) => ue_stream(r.enb_ue_id),
            S1ap::PathSwitchRequest(r) => ue_stream(r.enb_ue_id),
            // The target eNB has no id for the UE before it answers.
            S1ap::HandoverRequest(r) => ue_stream(r.mme_ue_id),
            S1ap::HandoverFailure { mme_ue_id, .. } => ue_stream(*mme_ue_id),
            S1ap::UeContextReleaseCommand {
                mme_ue_id,
                enb_ue_id,
                ..
            } => ue_stream(enb_ue_id.unwrap_or(*mme_ue_id)),
        }
    }
}

/// Non-zero stream for UE-associated signalling: spread UEs over 1..=15, keeping a
/// UE's messages on one stream so they stay in order.
pub fn ue_stream(ue_id: u32) -> u16 {
    1 + (ue_id % 15) as u16
}

fn plmn_id(p: [u8; 3]) -> PLMNidentity {
    PLMNidentity(TBCDSTRING(p))
}

fn tai_ie(t: Tai) -> TAI {
    helpers::tai(plmn_id(t.plmn), t.tac.to_be_bytes())
}

fn tai_of(t: &TAI) -> Tai {
    Tai {
        plmn: t.plmn_identity.0 .0,
        tac: u16::from_be_bytes(t.tac.0),
    }
}

fn ecgi_ie(e: Ecgi) -> EUTRANCGI {
    EUTRANCGI::new(
        plmn_id(e.plmn),
        CellIdentity(asn::aper::Bits::low(u64::from(e.cell_id), 28)),
        None,
    )
}

fn ecgi_of(e: &EUTRANCGI) -> Ecgi {
    Ecgi {
        plmn: e.plmn_identity.0 .0,
        cell_id: e.cell_id.0.value() as u32,
    }
}

fn ipv4_of(a: &TransportLayerAddress<'_>) -> Result<Ipv4Addr> {
    // IPv4 is 32 bits; an IPv4v6 address (160 bits) starts with the IPv4 one.
    let o = a.0.as_octets();
    match (a.0.len(), o) {
        (32 | 160, [a, b, c, d, ..]) => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
        (n, _) => Err(S1apError::Value(format!(
            "transport layer address of {n} bits is not IPv4"
        ))),
    }
}

fn erab_id(v: u64) -> Result<u8> {
    // E-RAB ID is 0..15 in the ASN.1 (extensible, hence u64 in the bindings).
    u8::try_from(v).map_err(|_| S1apError::Value(format!("E-RAB ID {v}")))
}

fn tla(a: Ipv4Addr) -> TransportLayerAddress<'static> {
    TransportLayerAddress(BitString::from(a.octets()))
}

fn enb_id_of(e: &GlobalENBID) -> u32 {
    match &e.enb_id {
        ENBID::macroENB_ID(b)
        | ENBID::homeENB_ID(b)
        | ENBID::short_macroENB_ID(b)
        | ENBID::long_macroENB_ID(b) => b.value() as u32,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

fn s_tmsi_ie(s: STmsi) -> STMSI {
    STMSI::new(MMECode([s.mme_code]), MTMSI(s.m_tmsi.to_be_bytes()), None)
}

fn s_tmsi_of(s: &STMSI) -> STmsi {
    STmsi {
        mme_code: s.mmec.0[0],
        m_tmsi: u32::from_be_bytes(s.m_tmsi.0),
    }
}

/// First octets of the encryption and integrity algorithm bit strings.
fn sec_caps_of(c: &UESecurityCapabilities) -> (u8, u8) {
    let first = |b: &BitString| b.as_octets().first().copied().unwrap_or(0);
    (
        first(&c.encryption_algorithms.0),
        first(&c.integrity_protection_algorithms.0),
    )
}

fn key256(k: &SecurityKey) -> Result<[u8; 32]> {
    k.0.as_octets()
        .try_into()
        .map_err(|_| S1apError::Value("security key is not 256 bits".into()))
}

fn security_context_ie(s: &SecurityContext) -> asn::s1ap::SecurityContext<'static> {
    asn::s1ap::SecurityContext::new(s.ncc, SecurityKey(BitString::from(s.nh)), None)
}

fn security_context_of(s: &asn::s1ap::SecurityContext) -> Result<SecurityContext> {
    Ok(SecurityContext {
        ncc: s.next_hop_chaining_count,
        nh: key256(&s.next_hop_parameter)?,
    })
}

fn qos_ie(e: &ErabToSetup) -> ERABLevelQoSParameters {
    let arp = AllocationAndRetentionPriority::new(
        PriorityLevel(e.arp_priority),
        PreEmptionCapability::shall_not_trigger_pre_emption,
        PreEmptionVulnerability::not_pre_emptable,
        None,
    );
    let gbr = e.gbr.map(|g| {
        GBRQosInformation::new(
            BitRate(g.mbr_downlink),
            BitRate(g.mbr_uplink),
            BitRate(g.gbr_downlink),
            BitRate(g.gbr_uplink),
            None,
        )
    });
    ERABLevelQoSParameters::new(QCI(e.qci), arp, gbr, None)
}

/// The E-RAB to set up from the fields every such list item has.
fn erab_to_setup(
    id: &ERABID,
    qos: &ERABLevelQoSParameters,
    addr: &TransportLayerAddress<'_>,
    teid: &GTPTEID,
    nas: Option<&NASPDU<'_>>,
) -> Result<ErabToSetup> {
    Ok(ErabToSetup {
        erab_id: erab_id(id.0)?,
        qci: qos.qci.0,
        arp_priority: qos.allocation_retention_priority.priority_level.0,
        sgw_addr: ipv4_of(addr)?,
        sgw_teid: u32::from_be_bytes(teid.0),
        nas: nas.map(|n| n.0.to_vec()),
        gbr: qos.gbr_qos_information.as_ref().map(|g| GbrQos {
            mbr_downlink: g.e_rab_maximum_bitrate_dl.0,
            mbr_uplink: g.e_rab_maximum_bitrate_ul.0,
            gbr_downlink: g.e_rab_guaranteed_bitrate_dl.0,
            gbr_uplink: g.e_rab_guaranteed_bitrate_ul.0,
        }),
    })
}

fn erab_setup(id: &ERABID, addr: &TransportLayerAddress<'_>, teid: &GTPTEID) -> Result<ErabSetup> {
    Ok(ErabSetup {
        erab_id: erab_id(id.0)?,
        enb_addr: ipv4_of(addr)?,
        enb_teid: u32::from_be_bytes(teid.0),
    })
}

/// Only intra-LTE handovers are modelled (TS 36.413 §9.2.1.13).
fn intra_lte(t: HandoverType) -> Result<()> {
    match t {
        HandoverType::intralte => Ok(()),
        t => Err(S1apError::Value(format!(
            "handover type {t:?} is not intra-LTE"
        ))),
    }
}

fn status_container(
    bearers: &[BearerStatus],
) -> Result<ENBStatusTransferTransparentContainer<'static>> {
    let count = |sn: u16, hfn: u32| COUNTvalue::new(PDCPSN(sn), HFN(hfn), None);
    let mut items = Vec::with_capacity(bearers.len());
    for b in bearers {
        let item = BearersSubjectToStatusTransferItem::new(
            ERABID(u64::from(b.erab_id)),
            count(b.ul_pdcp_sn, b.ul_hfn),
            count(b.dl_pdcp_sn, b.dl_hfn),
            None,
            None,
        );
        items.push(build_s1ap_ie!(IGNORE Bearers_SubjectToStatusTransfer_Item(item))?);
    }
    Ok(ENBStatusTransferTransparentContainer::new(
        BearersSubjectToStatusTransferList(items),
        None,
    ))
}

fn status_bearers(c: &ENBStatusTransferTransparentContainer<'_>) -> Result<Vec<BearerStatus>> {
    c.bearers_subject_to_status_transfer_list
        .0
        .iter()
        .map(|f| {
            let b: BearersSubjectToStatusTransferItem = decode_open_type(&f.value)?;
            Ok(BearerStatus {
                erab_id: erab_id(b.e_rab_id.0)?,
                ul_pdcp_sn: b.ul_count_value.pdcp_sn.0,
                ul_hfn: b.ul_count_value.hfn.0,
                dl_pdcp_sn: b.dl_count_value.pdcp_sn.0,
                dl_hfn: b.dl_count_value.hfn.0,
            })
        })
        .collect()
}

/// The IEs of both status transfers, which have the same ones (TS 36.413 §9.1.5.13-14).
fn status_transfer_pdu(empty: S1AP_PDU, t: &StatusTransfer) -> Result<S1AP_PDU> {
    let container = status_container(&t.bearers)?;
    append(
        empty,
        vec![
            build_s1ap_ie!(REJECT MME_UE_S1AP_ID(t.mme_ue_id))?,
            build_s1ap_ie!(REJECT eNB_UE_S1AP_ID(t.enb_ue_id))?,
            build_s1ap_ie!(REJECT eNB_StatusTransfer_TransparentContainer(container))?,
        ],
    )
}

fn status_transfer_of(pdu: &S1AP_PDU) -> Result<StatusTransfer> {
    let missing = |what: &str| S1apError::Value(format!("status transfer without {what}"));
    let mme_ue_id = pdu
        .ie::<ie::MME_UE_S1AP_ID>()
        .ok_or_else(|| missing("MME UE S1AP ID"))??;
    let enb_ue_id = pdu
        .ie::<ie::eNB_UE_S1AP_ID>()
        .ok_or_else(|| missing("eNB UE S1AP ID"))??;
    let container = pdu
        .ie::<ie::eNB_StatusTransfer_TransparentContainer>()
        .ok_or_else(|| missing("its container"))??;
    Ok(StatusTransfer {
        mme_ue_id: mme_ue_id.0,
        enb_ue_id: enb_ue_id.0,
        bearers: status_bearers(&container)?,
    })
}

/// `pdu` with `extra` IEs after its own: how optional IEs are added, as
/// `build_s1ap!` takes a fixed list.
fn append(mut pdu: S1AP_PDU, extra: Vec<ProtocolIEField<'static>>) -> Result<S1AP_PDU> {
    if !extra.is_empty() {
        let mut ies = pdu.protocol_ies()?.into_owned();
        ies.0.extend(extra);
        pdu.set_protocol_ies(ies)?;
    }
    Ok(pdu)
}

/// Encodes one message as an S1AP-PDU.
pub fn encode(msg: &S1ap) -> Result<Vec<u8>> {
    let pdu = match msg {
        S1ap::S1SetupRequest(r) => {
            let plmn = plmn_id(r.plmn);
            let enb = helpers::global_enb_id(plmn, EnbKind::Macro, r.enb_id)?;
            let tas = r
                .tacs
                .iter()
                .map(|t| SupportedTAsItem::new(TAC(t.to_be_bytes()), BPLMNs(vec![plmn]), None))
                .collect();
            match &r.enb_name {
                Some(name) => build_s1ap!(
                    InitiatingMessage,
                    S1Setup,
                    S1SetupRequest,
                    Global_ENB_ID(enb),
                    eNBname(name.clone()),
                    SupportedTAs(SupportedTAs(tas)),
                    DefaultPagingDRX(PagingDRX::v128),
                )?,
                None => build_s1ap!(
                    InitiatingMessage,
                    S1Setup,
                    S1SetupRequest,
                    Global_ENB_ID(enb),
                    SupportedTAs(SupportedTAs(tas)),
                    DefaultPagingDRX(PagingDRX::v128),
                )?,
            }
        }
        S1ap::S1SetupResponse(r) => {
            let served = ServedGUMMEIsItem::new(
                ServedPLMNs(vec![plmn_id(r.plmn)]),
                ServedGroupIDs(vec![MMEGroupID(r.mme_group_id.to_be_bytes())]),
                ServedMMECs(vec![MMECode([r.mme_code])]),
                None,
            );
            match &r.mme_name {
                Some(name) => build_s1ap!(
                    SuccessfulOutcome,
                    S1Setup,
                    S1SetupResponse,
                    MMEname(name.clone()),
                    ServedGUMMEIs(ServedGUMMEIs(vec![served])),
                    RelativeMMECapacity(RelativeMMECapacity(r.relative_capacity)),
                )?,
                None => build_s1ap!(
                    SuccessfulOutcome,
                    S1Setup,
                    S1SetupResponse,
                    ServedGUMMEIs(ServedGUMMEIs(vec![served])),
                    RelativeMMECapacity(RelativeMMECapacity(r.relative_capacity)),
                )?,
            }
        }
        S1ap::S1SetupFailure { cause } => build_s1ap!(
            UnsuccessfulOutcome,
            S1Setup,
            S1SetupFailure,
            Cause(cause.clone()),
        )?,
        S1ap::InitialUeMessage {
            enb_ue_id,
            nas,
            tai,
            ecgi,
            s_tmsi,
            rrc_cause,
        } => {
            let pdu = build_s1ap!(
                InitiatingMessage,
                initialUEMessage,
                InitialUEMessage,
                eNB_UE_S1AP_ID(*enb_ue_id),
                NAS_PDU(nas.clone()),
                TAI(tai_ie(*tai)),
                EUTRAN_CGI(ecgi_ie(*ecgi)),
                RRC_Establishment_Cause(*rrc_cause),
            )?;
            let mut extra = Vec::new();
            if let Some(t) = s_tmsi {
                extra.push(build_s1ap_ie!(InitialUEMessage, S_TMSI(s_tmsi_ie(*t)))?);
            }
            append(pdu, extra)?
        }
        S1ap::DownlinkNasTransport {
            mme_ue_id,
            enb_ue_id,
            nas,
        } => build_s1ap!(
            InitiatingMessage,
            downlinkNASTransport,
            DownlinkNASTransport,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            NAS_PDU(nas.clone()),
        )?,
        S1ap::UplinkNasTransport {
            mme_ue_id,
            enb_ue_id,
            nas,
            tai,
            ecgi,
        } => build_s1ap!(
            InitiatingMessage,
            uplinkNASTransport,
            UplinkNASTransport,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            NAS_PDU(nas.clone()),
            EUTRAN_CGI(ecgi_ie(*ecgi)),
            TAI(tai_ie(*tai)),
        )?,
        S1ap::InitialContextSetupRequest(r) => {
            let mut items = Vec::with_capacity(r.erabs.len());
            for e in &r.erabs {
                let bearer = ERABToBeSetupItemCtxtSUReq::new(
                    ERABID(u64::from(e.erab_id)),
                    qos_ie(e),
                    tla(e.sgw_addr),
                    GTPTEID(e.sgw_teid.to_be_bytes()),
                    e.nas.clone().map(NASPDU::from),
                    None,
                );
                items.push(build_s1ap_ie!(REJECT E_RABToBeSetupItemCtxtSUReq(bearer))?);
            }
            let ambr = UEAggregateMaximumBitrate::new(BitRate(r.ambr_dl), BitRate(r.ambr_ul), None);
            build_s1ap!(
                InitiatingMessage,
                InitialContextSetup,
                InitialContextSetupRequest,
                MME_UE_S1AP_ID(r.mme_ue_id),
                eNB_UE_S1AP_ID(r.enb_ue_id),
                uEaggregateMaximumBitrate(ambr),
                E_RABToBeSetupListCtxtSUReq(ERABToBeSetupListCtxtSUReq(items)),
                UESecurityCapabilities(helpers::ue_security_capabilities(
                    r.ue_sec_enc,
                    r.ue_sec_int
                )),
                SecurityKey(r.kenb),
            )?
        }
        S1ap::InitialContextSetupResponse {
            mme_ue_id,
            enb_ue_id,
            erabs,
        } => {
            let mut items = Vec::with_capacity(erabs.len());
            for e in erabs {
                let item = ERABSetupItemCtxtSURes::new(
                    ERABID(u64::from(e.erab_id)),
                    tla(e.enb_addr),
                    GTPTEID(e.enb_teid.to_be_bytes()),
                    None,
                );
                items.push(build_s1ap_ie!(IGNORE E_RABSetupItemCtxtSURes(item))?);
            }
            build_s1ap!(
                SuccessfulOutcome,
                InitialContextSetup,
                InitialContextSetupResponse,
                MME_UE_S1AP_ID(*mme_ue_id),
                eNB_UE_S1AP_ID(*enb_ue_id),
                E_RABSetupListCtxtSURes(ERABSetupListCtxtSURes(items)),
            )?
        }
        S1ap::InitialContextSetupFailure {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => build_s1ap!(
            UnsuccessfulOutcome,
            InitialContextSetup,
            InitialContextSetupFailure,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            Cause(cause.clone()),
        )?,
        S1ap::UeContextReleaseRequest {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => build_s1ap!(
            InitiatingMessage,
            UEContextReleaseRequest,
            UEContextReleaseRequest,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            Cause(cause.clone()),
        )?,
        S1ap::UeContextReleaseCommand {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => {
            let ids = match enb_ue_id {
                Some(e) => UES1APIDs::uE_S1AP_ID_pair(UES1APIDPair::new(
                    MMEUES1APID(*mme_ue_id),
                    ENBUES1APID(*e),
                    None,
                )),
                None => UES1APIDs::mME_UE_S1AP_ID(MMEUES1APID(*mme_ue_id)),
            };
            build_s1ap!(
                InitiatingMessage,
                UEContextRelease,
                UEContextReleaseCommand,
                UE_S1AP_IDs(ids),
                Cause(cause.clone()),
            )?
        }
        S1ap::UeContextReleaseComplete {
            mme_ue_id,
            enb_ue_id,
        } => build_s1ap!(
            SuccessfulOutcome,
            UEContextRelease,
            UEContextReleaseComplete,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
        )?,
        S1ap::ErrorIndication {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => {
            let pdu = build_s1ap!(InitiatingMessage, ErrorIndication, ErrorIndication,)?;
            let mut ies = Vec::new();
            if let Some(m) = mme_ue_id {
                ies.push(build_s1ap_ie!(ErrorIndication, MME_UE_S1AP_ID(*m))?);
            }
            if let Some(e) = enb_ue_id {
                ies.push(build_s1ap_ie!(ErrorIndication, eNB_UE_S1AP_ID(*e))?);
            }
            if let Some(c) = cause {
                ies.push(build_s1ap_ie!(ErrorIndication, Cause(c.clone()))?);
            }
            append(pdu, ies)?
        }
        S1ap::Paging(p) => {
            let identity = match &p.identity {
                PagingIdentity::STmsi(t) => UEPagingID::s_TMSI(s_tmsi_ie(*t)),
                PagingIdentity::Imsi(i) => UEPagingID::iMSI(IMSI(Octets::from(i.clone()))),
            };
            let mut tais = Vec::with_capacity(p.tais.len());
            for t in &p.tais {
                tais.push(build_s1ap_ie!(IGNORE TAIItem(TAIItem::new(tai_ie(*t), None)))?);
            }
            build_s1ap!(
                InitiatingMessage,
                Paging,
                Paging,
                UEIdentityIndexValue(UEIdentityIndexValue(asn::aper::Bits::new(
                    u64::from(p.ue_identity_index),
                    10
                )?)),
                UEPagingID(identity),
                CNDomain(p.cn_domain),
                TAIList(TAIList(tais)),
            )?
        }
        S1ap::ErabSetupRequest {
            mme_ue_id,
            enb_ue_id,
            erabs,
        } => {
            let mut items = Vec::with_capacity(erabs.len());
            for e in erabs {
                let nas = e.nas.clone().ok_or_else(|| {
                    S1apError::Value("an E-RAB SETUP REQUEST E-RAB needs its NAS PDU".into())
                })?;
                let bearer = ERABToBeSetupItemBearerSUReq::new(
                    ERABID(u64::from(e.erab_id)),
                    qos_ie(e),
                    tla(e.sgw_addr),
                    GTPTEID(e.sgw_teid.to_be_bytes()),
                    NASPDU::from(nas),
                    None,
                );
                items.push(build_s1ap_ie!(REJECT E_RABToBeSetupItemBearerSUReq(bearer))?);
            }
            build_s1ap!(
                InitiatingMessage,
                E_RABSetup,
                ERABSetupRequest,
                MME_UE_S1AP_ID(*mme_ue_id),
                eNB_UE_S1AP_ID(*enb_ue_id),
                E_RABToBeSetupListBearerSUReq(ERABToBeSetupListBearerSUReq(items)),
            )?
        }
        S1ap::ErabSetupResponse {
            mme_ue_id,
            enb_ue_id,
            erabs,
            failed,
        } => {
            let pdu = build_s1ap!(
                SuccessfulOutcome,
                E_RABSetup,
                ERABSetupResponse,
                MME_UE_S1AP_ID(*mme_ue_id),
                eNB_UE_S1AP_ID(*enb_ue_id),
            )?;
            let mut extra = Vec::new();
            if !erabs.is_empty() {
                let mut items = Vec::with_capacity(erabs.len());
                for e in erabs {
                    let item = ERABSetupItemBearerSURes::new(
                        ERABID(u64::from(e.erab_id)),
                        tla(e.enb_addr),
                        GTPTEID(e.enb_teid.to_be_bytes()),
                        None,
                    );
                    items.push(build_s1ap_ie!(IGNORE E_RABSetupItemBearerSURes(item))?);
                }
                extra.push(build_s1ap_ie!(
                    ERABSetupResponse,
                    E_RABSetupListBearerSURes(ERABSetupListBearerSURes(items))
                )?);
            }
            if !failed.is_empty() {
                let mut items = Vec::with_capacity(failed.len());
                for f in failed {
                    let item = ERABItem::new(ERABID(u64::from(f.erab_id)), f.cause.clone(), None);
                    items.push(build_s1ap_ie!(IGNORE E_RABItem(item))?);
                }
                extra.push(build_s1ap_ie!(
                    ERABSetupResponse,
                    E_RABFailedToSetupListBearerSURes(ERABList(items))
                )?);
            }
            append(pdu, extra)?
        }
        S1ap::HandoverRequired(r) => {
            let enb =
                helpers::global_enb_id(plmn_id(r.target.plmn), EnbKind::Macro, r.target.enb_id)?;
            let target = TargetID::targeteNB_ID(TargeteNBID::new(enb, tai_ie(r.target.tai), None));
            build_s1ap!(
                InitiatingMessage,
                HandoverPreparation,
                HandoverRequired,
                MME_UE_S1AP_ID(r.mme_ue_id),
                eNB_UE_S1AP_ID(r.enb_ue_id),
                HandoverType(HandoverType::intralte),
                Cause(r.cause.clone()),
                TargetID(target),
                Source_ToTarget_TransparentContainer(SourceToTargetTransparentContainer(
                    Octets::from(r.source_to_target.clone())
                )),
            )?
        }
        S1ap::HandoverCommand {
            mme_ue_id,
            enb_ue_id,
            target_to_source,
        } => build_s1ap!(
            SuccessfulOutcome,
            HandoverPreparation,
            HandoverCommand,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            HandoverType(HandoverType::intralte),
            Target_ToSource_TransparentContainer(TargetToSourceTransparentContainer(Octets::from(
                target_to_source.clone()
            ))),
        )?,
        S1ap::HandoverPreparationFailure {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => build_s1ap!(
            UnsuccessfulOutcome,
            HandoverPreparation,
            HandoverPreparationFailure,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            Cause(cause.clone()),
        )?,
        S1ap::HandoverRequest(r) => {
            let mut items = Vec::with_capacity(r.erabs.len());
            for e in &r.erabs {
                if e.nas.is_some() {
                    return Err(S1apError::Value(
                        "a HANDOVER REQUEST carries no NAS PDU".into(),
                    ));
                }
                let bearer = ERABToBeSetupItemHOReq::new(
                    ERABID(u64::from(e.erab_id)),
                    tla(e.sgw_addr),
                    GTPTEID(e.sgw_teid.to_be_bytes()),
                    qos_ie(e),
                    None,
                );
                items.push(build_s1ap_ie!(REJECT E_RABToBeSetupItemHOReq(bearer))?);
            }
            let ambr = UEAggregateMaximumBitrate::new(BitRate(r.ambr_dl), BitRate(r.ambr_ul), None);
            build_s1ap!(
                InitiatingMessage,
                HandoverResourceAllocation,
                HandoverRequest,
                MME_UE_S1AP_ID(r.mme_ue_id),
                HandoverType(HandoverType::intralte),
                Cause(r.cause.clone()),
                uEaggregateMaximumBitrate(ambr),
                E_RABToBeSetupListHOReq(ERABToBeSetupListHOReq(items)),
                Source_ToTarget_TransparentContainer(SourceToTargetTransparentContainer(
                    Octets::from(r.source_to_target.clone())
                )),
                UESecurityCapabilities(helpers::ue_security_capabilities(
                    r.ue_sec_enc,
                    r.ue_sec_int
                )),
                SecurityContext(security_context_ie(&r.security)),
            )?
        }
        S1ap::HandoverRequestAcknowledge {
            mme_ue_id,
            enb_ue_id,
            admitted,
            target_to_source,
        } => {
            let mut items = Vec::with_capacity(admitted.len());
            for e in admitted {
                let item = ERABAdmittedItem::new(
                    ERABID(u64::from(e.erab_id)),
                    tla(e.enb_addr),
                    GTPTEID(e.enb_teid.to_be_bytes()),
                    None,
                    None,
                    None,
                    None,
                    None,
                );
                items.push(build_s1ap_ie!(IGNORE E_RABAdmittedItem(item))?);
            }
            build_s1ap!(
                SuccessfulOutcome,
                HandoverResourceAllocation,
                HandoverRequestAcknowledge,
                MME_UE_S1AP_ID(*mme_ue_id),
                eNB_UE_S1AP_ID(*enb_ue_id),
                E_RABAdmittedList(ERABAdmittedList(items)),
                Target_ToSource_TransparentContainer(TargetToSourceTransparentContainer(
                    Octets::from(target_to_source.clone())
                )),
            )?
        }
        S1ap::HandoverFailure { mme_ue_id, cause } => build_s1ap!(
            UnsuccessfulOutcome,
            HandoverResourceAllocation,
            HandoverFailure,
            MME_UE_S1AP_ID(*mme_ue_id),
            Cause(cause.clone()),
        )?,
        S1ap::HandoverNotify {
            mme_ue_id,
            enb_ue_id,
            tai,
            ecgi,
        } => build_s1ap!(
            InitiatingMessage,
            HandoverNotification,
            HandoverNotify,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            EUTRAN_CGI(ecgi_ie(*ecgi)),
            TAI(tai_ie(*tai)),
        )?,
        S1ap::EnbStatusTransfer(t) => status_transfer_pdu(
            build_s1ap!(InitiatingMessage, eNBStatusTransfer, ENBStatusTransfer,)?,
            t,
        )?,
        S1ap::MmeStatusTransfer(t) => status_transfer_pdu(
            build_s1ap!(InitiatingMessage, MMEStatusTransfer, MMEStatusTransfer,)?,
            t,
        )?,
        S1ap::HandoverCancel {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => build_s1ap!(
            InitiatingMessage,
            HandoverCancel,
            HandoverCancel,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            Cause(cause.clone()),
        )?,
        S1ap::HandoverCancelAcknowledge {
            mme_ue_id,
            enb_ue_id,
        } => build_s1ap!(
            SuccessfulOutcome,
            HandoverCancel,
            HandoverCancelAcknowledge,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
        )?,
        S1ap::PathSwitchRequest(r) => {
            let mut items = Vec::with_capacity(r.erabs.len());
            for e in &r.erabs {
                let item = ERABToBeSwitchedDLItem::new(
                    ERABID(u64::from(e.erab_id)),
                    tla(e.enb_addr),
                    GTPTEID(e.enb_teid.to_be_bytes()),
                    None,
                );
                items.push(build_s1ap_ie!(REJECT E_RABToBeSwitchedDLItem(item))?);
            }
            build_s1ap!(
                InitiatingMessage,
                PathSwitchRequest,
                PathSwitchRequest,
                eNB_UE_S1AP_ID(r.enb_ue_id),
                E_RABToBeSwitchedDLList(ERABToBeSwitchedDLList(items)),
                SourceMME_UE_S1AP_ID(MMEUES1APID(r.source_mme_ue_id)),
                EUTRAN_CGI(ecgi_ie(r.ecgi)),
                TAI(tai_ie(r.tai)),
                UESecurityCapabilities(helpers::ue_security_capabilities(
                    r.ue_sec_enc,
                    r.ue_sec_int
                )),
            )?
        }
        S1ap::PathSwitchRequestAcknowledge {
            mme_ue_id,
            enb_ue_id,
            security,
            ue_sec,
        } => {
            let pdu = build_s1ap!(
                SuccessfulOutcome,
                PathSwitchRequest,
                PathSwitchRequestAcknowledge,
                MME_UE_S1AP_ID(*mme_ue_id),
                eNB_UE_S1AP_ID(*enb_ue_id),
                SecurityContext(security_context_ie(security)),
            )?;
            let mut extra = Vec::new();
            if let Some((enc, int)) = ue_sec {
                extra.push(build_s1ap_ie!(
                    PathSwitchRequestAcknowledge,
                    UESecurityCapabilities(helpers::ue_security_capabilities(*enc, *int))
                )?);
            }
            append(pdu, extra)?
        }
        S1ap::PathSwitchRequestFailure {
            mme_ue_id,
            enb_ue_id,
            cause,
        } => build_s1ap!(
            UnsuccessfulOutcome,
            PathSwitchRequest,
            PathSwitchRequestFailure,
            MME_UE_S1AP_ID(*mme_ue_id),
            eNB_UE_S1AP_ID(*enb_ue_id),
            Cause(cause.clone()),
        )?,
        S1ap::Other { .. } => {
            return Err(S1apError::Value("cannot encode S1ap::Other".into()));
        }
    };
    Ok(pdu.encode()?.to_vec())
}

/// Decodes one S1AP-PDU.
pub fn decode(bytes: &[u8]) -> Result<S1ap> {
    let pdu = S1AP_PDU::decode(bytes)?;
    Ok(match pdu.kind() {
        S1apPduKind::Initiating_S1Setup => {
            extract_s1ap_ies!(pdu, S1SetupRequest,
                req enb: GlobalENBID = Global_ENB_ID(v) => v,
                lax name: String = eNBname(n) => n.0.into_owned(),
                req tas: SupportedTAs = SupportedTAs(v) => v,
            );
            S1ap::S1SetupRequest(S1SetupRequest {
                plmn: enb.plmn_identity.0 .0,
                enb_id: enb_id_of(&enb),
                enb_name: name,
                tacs: tas.0.iter().map(|t| u16::from_be_bytes(t.tac.0)).collect(),
            })
        }
        S1apPduKind::Successful_S1Setup => {
            extract_s1ap_ies!(pdu, S1SetupResponse,
                lax name: String = MMEname(n) => n.0.into_owned(),
                req served: ServedGUMMEIs = ServedGUMMEIs(v) => v,
                req capacity: u8 = RelativeMMECapacity(c) => c.0,
            );
            let first = served
                .0
                .first()
                .ok_or_else(|| S1apError::Value("no served GUMMEI".into()))?;
            let first_of = |what: &str, x: Option<&[u8]>| {
                x.map(<[u8]>::to_vec)
                    .ok_or_else(|| S1apError::Value(format!("served GUMMEI without {what}")))
            };
            let plmn = first_of("PLMN", first.served_plmns.0.first().map(|p| &p.0 .0[..]))?;
            let group = first_of("group", first.served_group_ids.0.first().map(|g| &g.0[..]))?;
            let code = first_of("code", first.served_mmecs.0.first().map(|c| &c.0[..]))?;
            S1ap::S1SetupResponse(S1SetupResponse {
                mme_name: name,
                plmn: [plmn[0], plmn[1], plmn[2]],
                mme_group_id: u16::from_be_bytes([group[0], group[1]]),
                mme_code: code[0],
                relative_capacity: capacity,
            })
        }
        S1apPduKind::Unsuccessful_S1Setup => {
            extract_s1ap_ies!(pdu, S1SetupFailure, req cause: Cause = Cause(c) => c,);
            S1ap::S1SetupFailure { cause }
        }
        S1apPduKind::Initiating_initialUEMessage => {
            extract_s1ap_ies!(pdu, InitialUEMessage,
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req nas: Vec<u8> = NAS_PDU(n) => n.0.to_vec(),
                req tai: Tai = TAI(t) => tai_of(&t),
                req ecgi: Ecgi = EUTRAN_CGI(e) => ecgi_of(&e),
                req rrc_cause: RRCEstablishmentCause = RRC_Establishment_Cause(c) => c,
                opt s_tmsi: STmsi = S_TMSI(t) => s_tmsi_of(&t),
            );
            S1ap::InitialUeMessage {
                enb_ue_id,
                nas,
                tai,
                ecgi,
                s_tmsi,
                rrc_cause,
            }
        }
        S1apPduKind::Initiating_downlinkNASTransport => {
            extract_s1ap_ies!(pdu, DownlinkNASTransport,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req nas: Vec<u8> = NAS_PDU(n) => n.0.to_vec(),
            );
            S1ap::DownlinkNasTransport {
                mme_ue_id,
                enb_ue_id,
                nas,
            }
        }
        S1apPduKind::Initiating_uplinkNASTransport => {
            extract_s1ap_ies!(pdu, UplinkNASTransport,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req nas: Vec<u8> = NAS_PDU(n) => n.0.to_vec(),
                req ecgi: Ecgi = EUTRAN_CGI(e) => ecgi_of(&e),
                req tai: Tai = TAI(t) => tai_of(&t),
            );
            S1ap::UplinkNasTransport {
                mme_ue_id,
                enb_ue_id,
                nas,
                tai,
                ecgi,
            }
        }
        S1apPduKind::Initiating_InitialContextSetup => {
            extract_s1ap_ies!(pdu, InitialContextSetupRequest,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req ambr: UEAggregateMaximumBitrate = uEaggregateMaximumBitrate(a) => a,
                req caps: (u8, u8) = UESecurityCapabilities(c) => sec_caps_of(&c),
                req kenb: Result<[u8; 32]> = SecurityKey(k) => key256(&k),
            );
            let erabs = pdu
                .items::<ie::E_RABToBeSetupListCtxtSUReq>()
                .map(|i| {
                    let i = i?;
                    let qos = &i.e_rab_level_qos_parameters;
                    let addr = &i.transport_layer_address;
                    erab_to_setup(&i.e_rab_id, qos, addr, &i.gtp_teid, i.nas_pdu.as_ref())
                })
                .collect::<Result<_>>()?;
            let kenb = kenb?;
            S1ap::InitialContextSetupRequest(Box::new(InitialContextSetupRequest {
                mme_ue_id,
                enb_ue_id,
                ambr_dl: ambr.ue_aggregate_maximum_bit_rate_dl.0,
                ambr_ul: ambr.ue_aggregate_maximum_bit_rate_ul.0,
                erabs,
                ue_sec_enc: caps.0,
                ue_sec_int: caps.1,
                kenb,
            }))
        }
        S1apPduKind::Successful_InitialContextSetup => {
            extract_s1ap_ies!(pdu, InitialContextSetupResponse,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
            );
            let erabs = pdu
                .items::<ie::E_RABSetupListCtxtSURes>()
                .map(|i| {
                    i.map_err(S1apError::from).and_then(|i| {
                        erab_setup(&i.e_rab_id, &i.transport_layer_address, &i.gtp_teid)
                    })
                })
                .collect::<Result<_>>()?;
            S1ap::InitialContextSetupResponse {
                mme_ue_id,
                enb_ue_id,
                erabs,
            }
        }
        S1apPduKind::Unsuccessful_InitialContextSetup => {
            extract_s1ap_ies!(pdu, InitialContextSetupFailure,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req cause: Cause = Cause(c) => c,
            );
            S1ap::InitialContextSetupFailure {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        S1apPduKind::Initiating_UEContextReleaseRequest => {
            extract_s1ap_ies!(pdu, UEContextReleaseRequest,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req cause: Cause = Cause(c) => c,
            );
            S1ap::UeContextReleaseRequest {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        S1apPduKind::Initiating_UEContextRelease => {
            extract_s1ap_ies!(pdu, UEContextReleaseCommand,
                req ids: UES1APIDs = UE_S1AP_IDs(v) => v,
                req cause: Cause = Cause(c) => c,
            );
            let (mme_ue_id, enb_ue_id) = match ids {
                UES1APIDs::uE_S1AP_ID_pair(p) => (p.mme_ue_s1ap_id.0, Some(p.enb_ue_s1ap_id.0)),
                UES1APIDs::mME_UE_S1AP_ID(m) => (m.0, None),
                #[allow(unreachable_patterns)]
                _ => return Err(S1apError::Value("UE-S1AP-IDs of an unknown kind".into())),
            };
            S1ap::UeContextReleaseCommand {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        S1apPduKind::Successful_UEContextRelease => {
            extract_s1ap_ies!(pdu, UEContextReleaseComplete,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
            );
            S1ap::UeContextReleaseComplete {
                mme_ue_id,
                enb_ue_id,
            }
        }
        S1apPduKind::Initiating_ErrorIndication => {
            extract_s1ap_ies!(pdu, ErrorIndication,
                opt mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                opt enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                lax cause: Cause = Cause(c) => c,
            );
            S1ap::ErrorIndication {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        S1apPduKind::Initiating_Paging => {
            extract_s1ap_ies!(pdu, Paging,
                req ue_identity_index: u16 = UEIdentityIndexValue(v) => v.0.value() as u16,
                req identity: Option<PagingIdentity> = UEPagingID(v) => match v {
                    UEPagingID::s_TMSI(t) => Some(PagingIdentity::STmsi(s_tmsi_of(&t))),
                    UEPagingID::iMSI(i) => Some(PagingIdentity::Imsi(i.0.to_vec())),
                    #[allow(unreachable_patterns)]
                    _ => None,
                },
                req cn_domain: CNDomain = CNDomain(d) => d,
            );
            let identity = identity
                .ok_or_else(|| S1apError::Value("UE paging identity of an unknown kind".into()))?;
            let tais = pdu
                .items::<ie::TAIList>()
                .map(|t| Ok(tai_of(&t?.tai)))
                .collect::<Result<_>>()?;
            S1ap::Paging(Paging {
                ue_identity_index,
                identity,
                cn_domain,
                tais,
            })
        }
        S1apPduKind::Initiating_E_RABSetup => {
            extract_s1ap_ies!(pdu, ERABSetupRequest,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
            );
            let erabs = pdu
                .items::<ie::E_RABToBeSetupListBearerSUReq>()
                .map(|i| {
                    let i = i?;
                    let qos = &i.e_rab_level_qos_parameters;
                    let addr = &i.transport_layer_address;
                    erab_to_setup(&i.e_rab_id, qos, addr, &i.gtp_teid, Some(&i.nas_pdu))
                })
                .collect::<Result<_>>()?;
            S1ap::ErabSetupRequest {
                mme_ue_id,
                enb_ue_id,
                erabs,
            }
        }
        S1apPduKind::Successful_E_RABSetup => {
            extract_s1ap_ies!(pdu, ERABSetupResponse,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
            );
            let erabs = pdu
                .items::<ie::E_RABSetupListBearerSURes>()
                .map(|i| {
                    i.map_err(S1apError::from).and_then(|i| {
                        erab_setup(&i.e_rab_id, &i.transport_layer_address, &i.gtp_teid)
                    })
                })
                .collect::<Result<_>>()?;
            let failed = pdu
                .items::<ie::E_RABFailedToSetupListBearerSURes>()
                .map(|i| {
                    let i = i?;
                    Ok(ErabFailed {
                        erab_id: erab_id(i.e_rab_id.0)?,
                        cause: i.cause,
                    })
                })
                .collect::<Result<_>>()?;
            S1ap::ErabSetupResponse {
                mme_ue_id,
                enb_ue_id,
                erabs,
                failed,
            }
        }
        S1apPduKind::Initiating_HandoverPreparation => {
            extract_s1ap_ies!(pdu, HandoverRequired,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req kind: HandoverType = HandoverType(t) => t,
                req cause: Cause = Cause(c) => c,
                req target: Option<TargetEnb> = TargetID(t) => match t {
                    TargetID::targeteNB_ID(t) => Some(TargetEnb {
                        plmn: t.global_enb_id.plmn_identity.0 .0,
                        enb_id: enb_id_of(&t.global_enb_id),
                        tai: tai_of(&t.selected_tai),
                    }),
                    _ => None,
                },
                req source_to_target: Vec<u8> = Source_ToTarget_TransparentContainer(c) => c.0.to_vec(),
            );
            intra_lte(kind)?;
            let target =
                target.ok_or_else(|| S1apError::Value("handover target is not an eNB".into()))?;
            S1ap::HandoverRequired(Box::new(HandoverRequired {
                mme_ue_id,
                enb_ue_id,
                cause,
                target,
                source_to_target,
            }))
        }
        S1apPduKind::Successful_HandoverPreparation => {
            extract_s1ap_ies!(pdu, HandoverCommand,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req kind: HandoverType = HandoverType(t) => t,
                req target_to_source: Vec<u8> = Target_ToSource_TransparentContainer(c) => c.0.to_vec(),
            );
            intra_lte(kind)?;
            S1ap::HandoverCommand {
                mme_ue_id,
                enb_ue_id,
                target_to_source,
            }
        }
        S1apPduKind::Unsuccessful_HandoverPreparation => {
            extract_s1ap_ies!(pdu, HandoverPreparationFailure,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req cause: Cause = Cause(c) => c,
            );
            S1ap::HandoverPreparationFailure {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        S1apPduKind::Initiating_HandoverResourceAllocation => {
            extract_s1ap_ies!(pdu, HandoverRequest,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req kind: HandoverType = HandoverType(t) => t,
                req cause: Cause = Cause(c) => c,
                req ambr: UEAggregateMaximumBitrate = uEaggregateMaximumBitrate(a) => a,
                req source_to_target: Vec<u8> = Source_ToTarget_TransparentContainer(c) => c.0.to_vec(),
                req caps: (u8, u8) = UESecurityCapabilities(c) => sec_caps_of(&c),
                req security: Result<SecurityContext> = SecurityContext(s) => security_context_of(&s),
            );
            intra_lte(kind)?;
            let erabs = pdu
                .items::<ie::E_RABToBeSetupListHOReq>()
                .map(|i| {
                    let i = i?;
                    let qos = &i.e_rab_level_qos_parameters;
                    erab_to_setup(
                        &i.e_rab_id,
                        qos,
                        &i.transport_layer_address,
                        &i.gtp_teid,
                        None,
                    )
                })
                .collect::<Result<_>>()?;
            S1ap::HandoverRequest(Box::new(HandoverRequest {
                mme_ue_id,
                cause,
                ambr_dl: ambr.ue_aggregate_maximum_bit_rate_dl.0,
                ambr_ul: ambr.ue_aggregate_maximum_bit_rate_ul.0,
                erabs,
                source_to_target,
                ue_sec_enc: caps.0,
                ue_sec_int: caps.1,
                security: security?,
            }))
        }
        S1apPduKind::Successful_HandoverResourceAllocation => {
            extract_s1ap_ies!(pdu, HandoverRequestAcknowledge,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req target_to_source: Vec<u8> = Target_ToSource_TransparentContainer(c) => c.0.to_vec(),
            );
            let admitted = pdu
                .items::<ie::E_RABAdmittedList>()
                .map(|i| {
                    i.map_err(S1apError::from).and_then(|i| {
                        erab_setup(&i.e_rab_id, &i.transport_layer_address, &i.gtp_teid)
                    })
                })
                .collect::<Result<_>>()?;
            S1ap::HandoverRequestAcknowledge {
                mme_ue_id,
                enb_ue_id,
                admitted,
                target_to_source,
            }
        }
        S1apPduKind::Unsuccessful_HandoverResourceAllocation => {
            extract_s1ap_ies!(pdu, HandoverFailure,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req cause: Cause = Cause(c) => c,
            );
            S1ap::HandoverFailure { mme_ue_id, cause }
        }
        S1apPduKind::Initiating_HandoverNotification => {
            extract_s1ap_ies!(pdu, HandoverNotify,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req ecgi: Ecgi = EUTRAN_CGI(e) => ecgi_of(&e),
                req tai: Tai = TAI(t) => tai_of(&t),
            );
            S1ap::HandoverNotify {
                mme_ue_id,
                enb_ue_id,
                tai,
                ecgi,
            }
        }
        S1apPduKind::Initiating_eNBStatusTransfer => {
            S1ap::EnbStatusTransfer(status_transfer_of(&pdu)?)
        }
        S1apPduKind::Initiating_MMEStatusTransfer => {
            S1ap::MmeStatusTransfer(status_transfer_of(&pdu)?)
        }
        S1apPduKind::Initiating_HandoverCancel => {
            extract_s1ap_ies!(pdu, HandoverCancel,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req cause: Cause = Cause(c) => c,
            );
            S1ap::HandoverCancel {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        S1apPduKind::Successful_HandoverCancel => {
            extract_s1ap_ies!(pdu, HandoverCancelAcknowledge,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
            );
            S1ap::HandoverCancelAcknowledge {
                mme_ue_id,
                enb_ue_id,
            }
        }
        S1apPduKind::Initiating_PathSwitchRequest => {
            extract_s1ap_ies!(pdu, PathSwitchRequest,
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req source_mme_ue_id: u32 = SourceMME_UE_S1AP_ID(id),
                req ecgi: Ecgi = EUTRAN_CGI(e) => ecgi_of(&e),
                req tai: Tai = TAI(t) => tai_of(&t),
                req caps: (u8, u8) = UESecurityCapabilities(c) => sec_caps_of(&c),
            );
            let erabs = pdu
                .items::<ie::E_RABToBeSwitchedDLList>()
                .map(|i| {
                    i.map_err(S1apError::from).and_then(|i| {
                        erab_setup(&i.e_rab_id, &i.transport_layer_address, &i.gtp_teid)
                    })
                })
                .collect::<Result<_>>()?;
            S1ap::PathSwitchRequest(Box::new(PathSwitchRequest {
                enb_ue_id,
                source_mme_ue_id,
                erabs,
                tai,
                ecgi,
                ue_sec_enc: caps.0,
                ue_sec_int: caps.1,
            }))
        }
        S1apPduKind::Successful_PathSwitchRequest => {
            extract_s1ap_ies!(pdu, PathSwitchRequestAcknowledge,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req security: Result<SecurityContext> = SecurityContext(s) => security_context_of(&s),
                opt ue_sec: (u8, u8) = UESecurityCapabilities(c) => sec_caps_of(&c),
            );
            S1ap::PathSwitchRequestAcknowledge {
                mme_ue_id,
                enb_ue_id,
                security: security?,
                ue_sec,
            }
        }
        S1apPduKind::Unsuccessful_PathSwitchRequest => {
            extract_s1ap_ies!(pdu, PathSwitchRequestFailure,
                req mme_ue_id: u32 = MME_UE_S1AP_ID(id),
                req enb_ue_id: u32 = eNB_UE_S1AP_ID(id),
                req cause: Cause = Cause(c) => c,
            );
            S1ap::PathSwitchRequestFailure {
                mme_ue_id,
                enb_ue_id,
                cause,
            }
        }
        _ => S1ap::Other {
            procedure_code: pdu.procedure_code(),
            name: format!("{} {}", pdu.procedure_name(), pdu.direction()),
        },
    })
}

/// Convenience causes.
pub mod causes {
    use super::*;
    pub fn nas_normal_release() -> Cause {
        Cause::nas(CauseNas::normal_release)
    }
    pub fn nas_detach() -> Cause {
        Cause::nas(CauseNas::detach)
    }
    pub fn nas_authentication_failure() -> Cause {
        Cause::nas(CauseNas::authentication_failure)
    }
    pub fn radio_unspecified() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::unspecified)
    }
    pub fn user_inactivity() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::user_inactivity)
    }
    pub fn unknown_mme_ue_id() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::unknown_mme_ue_s1ap_id)
    }
    pub fn unknown_pair() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::unknown_pair_ue_s1ap_id)
    }
    pub fn protocol_transfer_syntax_error() -> Cause {
        Cause::protocol(CauseProtocol::transfer_syntax_error)
    }
    pub fn protocol_semantic_error() -> Cause {
        Cause::protocol(CauseProtocol::semantic_error)
    }
    pub fn unknown_plmn() -> Cause {
        Cause::misc(CauseMisc::unknown_PLMN)
    }
    pub fn successful_handover() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::successful_handover)
    }
    pub fn handover_cancelled() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::handover_cancelled)
    }
    pub fn unknown_target_id() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::unknown_targetID)
    }
    pub fn ts1relocoverall_expiry() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::tS1relocoverall_expiry)
    }
    pub fn ts1relocprep_expiry() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::tS1relocprep_expiry)
    }
    pub fn ho_failure_in_target() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::ho_failure_in_target_EPC_eNB_or_target_system)
    }
    pub fn interaction_with_other_procedure() -> Cause {
        Cause::radioNetwork(CauseRadioNetwork::interaction_with_other_procedure)
    }
}
