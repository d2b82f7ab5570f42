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
use oxirush_s1ap::{build_s1ap, build_s1ap_ie, extract_s1ap_ies, ie, BitString, S1apPduKind};

pub use oxirush_s1ap as asn;
pub use oxirush_s1ap::s1ap::{
    Cause, CauseMisc, CauseNas, CauseProtocol, CauseRadioNetwork, CauseTransport,
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

/// One E-RAB of an INITIAL CONTEXT SETUP REQUEST.
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
}

/// One E-RAB of an INITIAL CONTEXT SETUP RESPONSE: the eNB's S1-U F-TEID.
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
            | S1ap::UeContextReleaseComplete { enb_ue_id, .. } => ue_stream(*enb_ue_id),
            S1ap::InitialContextSetupRequest(r) => ue_stream(r.enb_ue_id),
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
        } => build_s1ap!(
            InitiatingMessage,
            initialUEMessage,
            InitialUEMessage,
            eNB_UE_S1AP_ID(*enb_ue_id),
            NAS_PDU(nas.clone()),
            TAI(tai_ie(*tai)),
            EUTRAN_CGI(ecgi_ie(*ecgi)),
            RRC_Establishment_Cause(RRCEstablishmentCause::mo_Signalling),
        )?,
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
                let arp = AllocationAndRetentionPriority::new(
                    PriorityLevel(e.arp_priority),
                    PreEmptionCapability::shall_not_trigger_pre_emption,
                    PreEmptionVulnerability::not_pre_emptable,
                    None,
                );
                let bearer = ERABToBeSetupItemCtxtSUReq::new(
                    ERABID(u64::from(e.erab_id)),
                    ERABLevelQoSParameters::new(QCI(e.qci), arp, None, None),
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
            let mut pdu = build_s1ap!(InitiatingMessage, ErrorIndication, ErrorIndication,)?;
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
            pdu.set_protocol_ies(ProtocolIEContainer(ies))?;
            pdu
        }
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
            let enb_id = match &enb.enb_id {
                ENBID::macroENB_ID(b)
                | ENBID::homeENB_ID(b)
                | ENBID::short_macroENB_ID(b)
                | ENBID::long_macroENB_ID(b) => b.value() as u32,
                #[allow(unreachable_patterns)]
                _ => 0,
            };
            S1ap::S1SetupRequest(S1SetupRequest {
                plmn: enb.plmn_identity.0 .0,
                enb_id,
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
            );
            S1ap::InitialUeMessage {
                enb_ue_id,
                nas,
                tai,
                ecgi,
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
                req caps: (u8, u8) = UESecurityCapabilities(c) =>
                    (c.encryption_algorithms.0.as_octets().first().copied().unwrap_or(0),
                     c.integrity_protection_algorithms.0.as_octets().first().copied().unwrap_or(0)),
                req key: Vec<u8> = SecurityKey(k) => k.0.as_octets().to_vec(),
            );
            let mut erabs = Vec::new();
            for item in pdu.items::<ie::E_RABToBeSetupListCtxtSUReq>() {
                let item = item?;
                erabs.push(ErabToSetup {
                    erab_id: erab_id(item.e_rab_id.0)?,
                    qci: item.e_rab_level_qos_parameters.qci.0,
                    arp_priority: item
                        .e_rab_level_qos_parameters
                        .allocation_retention_priority
                        .priority_level
                        .0,
                    sgw_addr: ipv4_of(&item.transport_layer_address)?,
                    sgw_teid: u32::from_be_bytes(item.gtp_teid.0),
                    nas: item.nas_pdu.as_ref().map(|n| n.0.to_vec()),
                });
            }
            let kenb: [u8; 32] = key
                .try_into()
                .map_err(|_| S1apError::Value("security key is not 256 bits".into()))?;
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
            let mut erabs = Vec::new();
            for item in pdu.items::<ie::E_RABSetupListCtxtSURes>() {
                let item = item?;
                erabs.push(ErabSetup {
                    erab_id: erab_id(item.e_rab_id.0)?,
                    enb_addr: ipv4_of(&item.transport_layer_address)?,
                    enb_teid: u32::from_be_bytes(item.gtp_teid.0),
                });
            }
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
}
