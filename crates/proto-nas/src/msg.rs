//! Builders and a typed view of the EMM/ESM messages of attach, authentication,
//! security mode, detach (both ways), service request, tracking area update,
//! identification and GUTI reallocation (TS 24.301 §8.2, §8.3). Builders return the
//! *plain* encoded message; [`crate::security`] protects it when a context exists.
//! The short SERVICE REQUEST is the exception: it is its own protection, built by
//! [`crate::NasSecurity::service_request`].

/// The PDN address of an ATTACH ACCEPT, as oxirush-nas types it.
pub use oxirush_nas::nas_eps::PdnAddress;
use oxirush_nas::nas_eps::*;
use serde::{Deserialize, Serialize};

use crate::{NasError, Result};

pub(crate) fn enc(m: NasEpsMessage) -> Result<Vec<u8>> {
    m.encode().map_err(|e| NasError::Encode(e.to_string()))
}

/// GUTI (TS 23.003 §2.8): PLMN, MME group id, MME code, M-TMSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Guti {
    pub plmn: [u8; 3],
    pub mme_group_id: u16,
    pub mme_code: u8,
    pub m_tmsi: u32,
}

impl Guti {
    /// The EPS mobile identity value (TS 24.301 §9.9.3.12): `f6`, PLMN, MMEGI, MMEC, M-TMSI.
    pub fn to_identity(&self) -> Vec<u8> {
        let mut v = vec![0xf6];
        v.extend_from_slice(&self.plmn);
        v.extend_from_slice(&self.mme_group_id.to_be_bytes());
        v.push(self.mme_code);
        v.extend_from_slice(&self.m_tmsi.to_be_bytes());
        v
    }

    /// Parses the value of an EPS mobile identity of type GUTI.
    pub fn from_identity(v: &[u8]) -> Option<Guti> {
        match v {
            [first, p0, p1, p2, g0, g1, code, t0, t1, t2, t3] if first & 0x07 == 6 => Some(Guti {
                plmn: [*p0, *p1, *p2],
                mme_group_id: u16::from_be_bytes([*g0, *g1]),
                mme_code: *code,
                m_tmsi: u32::from_be_bytes([*t0, *t1, *t2, *t3]),
            }),
            _ => None,
        }
    }
}

/// Tracking area identity (TS 24.301 §9.9.3.32): PLMN and TAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tai {
    pub plmn: [u8; 3],
    pub tac: u16,
}

impl Tai {
    fn to_octets(self) -> Vec<u8> {
        let mut v = self.plmn.to_vec();
        v.extend_from_slice(&self.tac.to_be_bytes());
        v
    }

    fn from_octets(v: &[u8]) -> Option<Tai> {
        match v {
            [p0, p1, p2, t0, t1] => Some(Tai {
                plmn: [*p0, *p1, *p2],
                tac: u16::from_be_bytes([*t0, *t1]),
            }),
            _ => None,
        }
    }
}

/// EPS update type of a TRACKING AREA UPDATE REQUEST (TS 24.301 §9.9.3.14). This
/// lab's UEs are EPS-only: a combined TA/LA update (values 1, 2) and the reserved
/// values are read as TA updating, which is what an EPS-only MME accepts them as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateType {
    TaUpdating,
    Periodic,
}

/// The PDN CONNECTIVITY REQUEST carried in an ATTACH REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdnConnectivity {
    /// Procedure transaction identity chosen by the UE (1..=254).
    pub pti: u8,
    /// PDN type (1 IPv4, 2 IPv6, 3 IPv4v6).
    pub pdn_type: u8,
    /// Requested APN; `None` lets the network use the subscription's default.
    pub apn: Option<String>,
}

impl Default for PdnConnectivity {
    fn default() -> Self {
        PdnConnectivity {
            pti: 1,
            pdn_type: 1,
            apn: Some("internet".into()),
        }
    }
}

/// What the MME puts in an ATTACH ACCEPT and its ACTIVATE DEFAULT EPS BEARER
/// CONTEXT REQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachAcceptParams {
    pub guti: Guti,
    /// PLMN and TACs of the TAI list (one list of type 0, TS 24.301 §9.9.3.33).
    pub tai_plmn: [u8; 3],
    pub tacs: Vec<u16>,
    /// T3412 as the GPRS timer octet (TS 24.008 §10.5.7.3).
    pub t3412: u8,
    /// EPS bearer identity of the default bearer (5 for the first).
    pub ebi: u8,
    /// PTI of the UE's PDN CONNECTIVITY REQUEST, echoed.
    pub pti: u8,
    pub qci: u8,
    pub apn: String,
    /// The PDN address IE (TS 24.301 §9.9.4.9): the IPv4 address, the IPv6 interface
    /// identifier (the UE learns its /64 from router advertisements), or both.
    pub pdn_address: PdnAddress,
}

/// What the MME puts in a TRACKING AREA UPDATE ACCEPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TauAcceptParams {
    /// A new GUTI (the UE answers with TRACKING AREA UPDATE COMPLETE), or none.
    pub guti: Option<Guti>,
    pub tai_plmn: [u8; 3],
    pub tacs: Vec<u16>,
    /// T3412 as the GPRS timer octet (TS 24.008 §10.5.7.3).
    pub t3412: u8,
    /// EBIs the MME keeps, when the request carried an EPS bearer context status
    /// (TS 24.301 §5.5.3.2.4: the UE then releases the others locally).
    pub bearers: Option<Vec<u8>>,
}

/// The messages of this crate's procedures, as plain data. `Other` names what is not
/// handled so that callers can log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nas {
    AttachRequest {
        imsi: Option<String>,
        guti: Option<Guti>,
        ksi: u8,
        ue_network_capability: Vec<u8>,
        pdn: Option<PdnConnectivity>,
    },
    AuthenticationRequest {
        ksi: u8,
        rand: [u8; 16],
        autn: [u8; 16],
    },
    AuthenticationResponse {
        res: Vec<u8>,
    },
    AuthenticationFailure {
        cause: u8,
        auts: Option<[u8; 14]>,
    },
    AuthenticationReject,
    SecurityModeCommand {
        eea: u8,
        eia: u8,
        ksi: u8,
        replayed_ue_capability: Vec<u8>,
    },
    SecurityModeComplete,
    SecurityModeReject {
        cause: u8,
    },
    AttachAccept {
        guti: Option<Guti>,
        tai_list: Vec<u8>,
        ebi: u8,
        pti: u8,
        qci: Option<u8>,
        apn: Option<String>,
        ue_ipv4: Option<[u8; 4]>,
        /// IPv6 interface identifier of an IPv6 or IPv4v6 PDN address.
        ue_ipv6_iid: Option<[u8; 8]>,
    },
    AttachComplete {
        ebi: u8,
    },
    AttachReject {
        cause: u8,
    },
    /// UE-originating DETACH REQUEST.
    DetachRequest {
        switch_off: bool,
        guti: Option<Guti>,
        imsi: Option<String>,
    },
    /// ACTIVATE DEDICATED EPS BEARER CONTEXT REQUEST (ESM, TS 24.301 §8.3.3).
    ActivateDedicatedBearerRequest {
        ebi: u8,
        linked_ebi: u8,
        qci: Option<u8>,
        /// The TFT value (TS 24.008 §10.5.6.12 from octet 3).
        tft: Vec<u8>,
    },
    /// ACTIVATE DEDICATED EPS BEARER CONTEXT ACCEPT (ESM, TS 24.301 §8.3.1).
    ActivateDedicatedBearerAccept {
        ebi: u8,
    },
    /// Network-initiated DETACH REQUEST (UE terminated).
    NetworkDetachRequest {
        reattach_required: bool,
        cause: Option<u8>,
    },
    /// DETACH ACCEPT, either way (the message has no IEs).
    DetachAccept,
    /// The short SERVICE REQUEST (TS 24.301 §8.2.25): KSI, the five LSBs of the
    /// uplink NAS COUNT, the two LSBs of the NAS-MAC.
    ServiceRequest {
        ksi: u8,
        seq: u8,
        short_mac: u16,
    },
    ServiceReject {
        cause: u8,
    },
    TrackingAreaUpdateRequest {
        update_type: UpdateType,
        /// "Active" flag: the UE asks for its bearers to be set up.
        active: bool,
        ksi: u8,
        old_guti: Option<Guti>,
        last_visited_tai: Option<Tai>,
        /// EBIs of the UE's active bearers, when it sent an EPS bearer context status.
        bearers: Option<Vec<u8>>,
    },
    TrackingAreaUpdateAccept {
        guti: Option<Guti>,
        tai_list: Option<Vec<u8>>,
        t3412: Option<u8>,
        bearers: Option<Vec<u8>>,
    },
    TrackingAreaUpdateComplete,
    TrackingAreaUpdateReject {
        cause: u8,
    },
    IdentityRequest {
        /// Type of identity (TS 24.008 §10.5.5.9): 1 IMSI, 2 IMEI, 3 IMEISV, 4 TMSI.
        identity_type: u8,
    },
    IdentityResponse {
        imsi: Option<String>,
    },
    GutiReallocationCommand {
        guti: Guti,
        tai_list: Option<Vec<u8>>,
    },
    GutiReallocationComplete,
    EmmStatus {
        cause: u8,
    },
    Other {
        name: String,
    },
}

/// Decodes a plain (security header type 0) NAS message, or a short SERVICE REQUEST
/// (read, not verified), sent in `direction`.
pub fn parse(plain: &[u8], direction: Direction) -> Result<Nas> {
    let m = NasEpsMessage::decode_with_direction(plain, direction)
        .map_err(|e| NasError::Decode(e.to_string()))?;
    Ok(from_message(&m))
}

fn identity(id: &NasEpsMobileIdentity) -> (Option<String>, Option<Guti>) {
    (
        id.as_imsi().map(|i| i.to_string()),
        Guti::from_identity(&id.value),
    )
}

/// The typed view of a decoded message (plain EMM, or ESM for `Other`).
pub fn from_message(m: &NasEpsMessage) -> Nas {
    let emm = match m {
        NasEpsMessage::Emm(_, emm) => emm,
        NasEpsMessage::SecurityProtected(_, inner) => return from_message(inner),
        NasEpsMessage::Esm(h, NasEsmMessage::ActivateDedicatedEpsBearerContextRequest(r)) => {
            return Nas::ActivateDedicatedBearerRequest {
                ebi: h.eps_bearer_identity,
                linked_ebi: r.linked_eps_bearer_identity.bearer_identity(),
                qci: r.eps_qos.value.first().copied(),
                tft: r.tft.value.to_vec(),
            }
        }
        NasEpsMessage::Esm(h, NasEsmMessage::ActivateDedicatedEpsBearerContextAccept(_)) => {
            return Nas::ActivateDedicatedBearerAccept {
                ebi: h.eps_bearer_identity,
            }
        }
        NasEpsMessage::ServiceRequest(r) => {
            return Nas::ServiceRequest {
                ksi: r.ksi_and_sequence_number >> 5,
                seq: r.ksi_and_sequence_number & 0x1f,
                short_mac: r.message_authentication_code,
            }
        }
        other => {
            return Nas::Other {
                name: format!("{other}"),
            }
        }
    };
    match emm {
        NasEmmMessage::AttachRequest(r) => {
            let (imsi, guti) = identity(&r.eps_mobile_identity);
            let pdn = r
                .esm_message_container
                .decode_as_esm_message()
                .ok()
                .and_then(|esm| match esm {
                    NasEpsMessage::Esm(h, NasEsmMessage::PdnConnectivityRequest(p)) => {
                        Some(PdnConnectivity {
                            pti: h.procedure_transaction_identity,
                            pdn_type: p.pdn_type.pdn_type_raw(),
                            apn: p.access_point_name.as_ref().and_then(|a| a.as_string()),
                        })
                    }
                    _ => None,
                });
            Nas::AttachRequest {
                imsi,
                guti,
                ksi: r.nas_key_set_identifier.value & 0x07,
                ue_network_capability: r.ue_network_capability.value.to_vec(),
                pdn,
            }
        }
        NasEmmMessage::AuthenticationRequest(r) => {
            match (
                r.authentication_parameter_rand.rand(),
                r.authentication_parameter_autn.autn(),
            ) {
                (Some(rand), Some(autn)) => Nas::AuthenticationRequest {
                    ksi: r.nas_key_set_identifier_asme.value & 0x07,
                    rand: *rand,
                    autn: *autn,
                },
                _ => Nas::Other {
                    name: "AuthenticationRequest with bad RAND/AUTN".into(),
                },
            }
        }
        NasEmmMessage::AuthenticationResponse(r) => Nas::AuthenticationResponse {
            res: r.authentication_response_parameter.res().to_vec(),
        },
        NasEmmMessage::AuthenticationFailure(r) => Nas::AuthenticationFailure {
            cause: r.emm_cause.cause_raw(),
            auts: r
                .authentication_failure_parameter
                .as_ref()
                .and_then(|p| p.auts().copied()),
        },
        NasEmmMessage::AuthenticationReject(_) => Nas::AuthenticationReject,
        NasEmmMessage::SecurityModeCommand(r) => Nas::SecurityModeCommand {
            eea: r.selected_nas_security_algorithms.ciphering_raw(),
            eia: r.selected_nas_security_algorithms.integrity_raw(),
            ksi: r.nas_key_set_identifier.value & 0x07,
            replayed_ue_capability: r.replayed_ue_security_capabilities.value.to_vec(),
        },
        NasEmmMessage::SecurityModeComplete(_) => Nas::SecurityModeComplete,
        NasEmmMessage::SecurityModeReject(r) => Nas::SecurityModeReject {
            cause: r.emm_cause.cause_raw(),
        },
        NasEmmMessage::AttachAccept(r) => {
            let bearer = r.esm_message_container.decode_as_esm_message().ok();
            let (ebi, pti, qci, apn, ue_ipv4, ue_ipv6_iid) = match &bearer {
                Some(NasEpsMessage::Esm(
                    h,
                    NasEsmMessage::ActivateDefaultEpsBearerContextRequest(b),
                )) => (
                    h.eps_bearer_identity,
                    h.procedure_transaction_identity,
                    b.eps_qos.value.first().copied(),
                    b.access_point_name.as_string(),
                    b.pdn_address.ipv4(),
                    match b.pdn_address.pdn_address() {
                        Some(PdnAddress::Ipv6InterfaceId(iid))
                        | Some(PdnAddress::Ipv4v6 {
                            ipv6_interface_id: iid,
                            ..
                        }) => Some(iid),
                        _ => None,
                    },
                ),
                _ => (0, 0, None, None, None, None),
            };
            Nas::AttachAccept {
                guti: r.guti.as_ref().and_then(|g| Guti::from_identity(&g.value)),
                tai_list: r.tai_list.value.to_vec(),
                ebi,
                pti,
                qci,
                apn,
                ue_ipv4,
                ue_ipv6_iid,
            }
        }
        NasEmmMessage::AttachComplete(r) => Nas::AttachComplete {
            ebi: match r.esm_message_container.decode_as_esm_message() {
                Ok(NasEpsMessage::Esm(h, _)) => h.eps_bearer_identity,
                _ => 0,
            },
        },
        NasEmmMessage::AttachReject(r) => Nas::AttachReject {
            cause: r.emm_cause.cause_raw(),
        },
        NasEmmMessage::DetachRequestUeOriginating(r) => {
            let (imsi, guti) = identity(&r.eps_mobile_identity);
            Nas::DetachRequest {
                switch_off: r.detach_type.is_switch_off(),
                guti,
                imsi,
            }
        }
        NasEmmMessage::DetachRequestUeTerminated(r) => Nas::NetworkDetachRequest {
            reattach_required: r.detach_type.network_detach_kind()
                == NetworkDetachKind::ReattachRequired,
            cause: r.emm_cause.as_ref().map(|c| c.cause_raw()),
        },
        NasEmmMessage::DetachAccept(_) => Nas::DetachAccept,
        NasEmmMessage::ServiceReject(r) => Nas::ServiceReject {
            cause: r.emm_cause.cause_raw(),
        },
        NasEmmMessage::TrackingAreaUpdateRequest(r) => Nas::TrackingAreaUpdateRequest {
            update_type: match r.eps_update_type.update_type_raw() {
                3 => UpdateType::Periodic,
                _ => UpdateType::TaUpdating,
            },
            active: r.eps_update_type.is_active(),
            ksi: r.nas_key_set_identifier.value & 0x07,
            old_guti: Guti::from_identity(&r.old_guti.value),
            last_visited_tai: r
                .last_visited_registered_tai
                .as_ref()
                .and_then(|t| Tai::from_octets(&t.value)),
            bearers: r
                .eps_bearer_context_status
                .as_ref()
                .map(|b| b.active_bearers()),
        },
        NasEmmMessage::TrackingAreaUpdateAccept(r) => Nas::TrackingAreaUpdateAccept {
            guti: r.guti.as_ref().and_then(|g| Guti::from_identity(&g.value)),
            tai_list: r.tai_list.as_ref().map(|t| t.value.to_vec()),
            t3412: r.t3412_value.as_ref().map(|t| t.value),
            bearers: r
                .eps_bearer_context_status
                .as_ref()
                .map(|b| b.active_bearers()),
        },
        NasEmmMessage::TrackingAreaUpdateComplete(_) => Nas::TrackingAreaUpdateComplete,
        NasEmmMessage::TrackingAreaUpdateReject(r) => Nas::TrackingAreaUpdateReject {
            cause: r.emm_cause.cause_raw(),
        },
        NasEmmMessage::IdentityRequest(r) => Nas::IdentityRequest {
            identity_type: r.identity_type.identity_type_raw(),
        },
        NasEmmMessage::IdentityResponse(r) => Nas::IdentityResponse {
            imsi: r.mobile_identity.as_imsi().map(|i| i.to_string()),
        },
        NasEmmMessage::GutiReallocationCommand(r) => match Guti::from_identity(&r.guti.value) {
            Some(guti) => Nas::GutiReallocationCommand {
                guti,
                tai_list: r.tai_list.as_ref().map(|t| t.value.to_vec()),
            },
            None => Nas::Other {
                name: "GutiReallocationCommand without a GUTI".into(),
            },
        },
        NasEmmMessage::GutiReallocationComplete(_) => Nas::GutiReallocationComplete,
        NasEmmMessage::EmmStatus(r) => Nas::EmmStatus {
            cause: r.emm_cause.cause_raw(),
        },
        other => Nas::Other {
            name: format!("{:?}", other.message_type()),
        },
    }
}

// ---- UE → MME -------------------------------------------------------------------

/// PDN CONNECTIVITY REQUEST (ESM, no bearer yet: EBI 0).
pub fn pdn_connectivity_request(pdn: &PdnConnectivity) -> Result<NasEpsMessage> {
    let pdn_type = match pdn.pdn_type {
        2 => PdnType::Ipv6,
        3 => PdnType::Ipv4v6,
        _ => PdnType::Ipv4,
    };
    let mut req = NasPdnConnectivityRequest::new(
        NasRequestType::from_request_type(RequestTypeValue::Initial),
        NasPdnType::from_pdn_type(pdn_type),
    );
    if let Some(apn) = &pdn.apn {
        let apn =
            NasAccessPointName::from_string(apn).map_err(|e| NasError::Value(e.to_string()))?;
        req = req.with_access_point_name(apn);
    }
    Ok(NasEpsMessage::new_esm(req, 0, pdn.pti))
}

/// ATTACH REQUEST (EPS attach, no key: KSI 7) identified by IMSI.
pub fn attach_request(
    imsi: &str,
    ue_network_capability: &[u8],
    pdn: &PdnConnectivity,
) -> Result<Vec<u8>> {
    let id = NasEpsMobileIdentity::from_imsi(imsi).map_err(|e| NasError::Value(e.to_string()))?;
    attach_request_with(id, ue_network_capability, pdn)
}

/// ATTACH REQUEST identified by an old GUTI (e.g. one another MME allocated), no key.
pub fn attach_request_by_guti(
    guti: &Guti,
    ue_network_capability: &[u8],
    pdn: &PdnConnectivity,
) -> Result<Vec<u8>> {
    let id = NasEpsMobileIdentity::new(guti.to_identity());
    attach_request_with(id, ue_network_capability, pdn)
}

fn attach_request_with(
    id: NasEpsMobileIdentity,
    ue_network_capability: &[u8],
    pdn: &PdnConnectivity,
) -> Result<Vec<u8>> {
    let esm = NasEsmMessageContainer::from_esm_message(&pdn_connectivity_request(pdn)?)
        .map_err(|e| NasError::Encode(e.to_string()))?;
    let req = NasAttachRequest::new(
        NasEpsAttachType::from_attach_type(AttachType::EpsAttach),
        NasKeySetIdentifier::new(0x07),
        id,
        NasUeNetworkCapability::new(ue_network_capability.to_vec()),
        esm,
    );
    enc(NasEpsMessage::new_emm(req))
}

pub fn authentication_response(res: &[u8]) -> Result<Vec<u8>> {
    let p = NasAuthenticationResponseParameter::from_res(res)
        .map_err(|e| NasError::Value(e.to_string()))?;
    enc(NasEpsMessage::new_emm(NasAuthenticationResponse::new(p)))
}

/// AUTHENTICATION FAILURE; `auts` only with cause #21 (synch failure).
pub fn authentication_failure(cause: u8, auts: Option<[u8; 14]>) -> Result<Vec<u8>> {
    let mut m = NasAuthenticationFailure::new(NasEmmCause::new(cause));
    if let Some(auts) = auts {
        m = m.with_authentication_failure_parameter(NasAuthenticationFailureParameter::from_auts(
            auts,
        ));
    }
    enc(NasEpsMessage::new_emm(m))
}

pub fn security_mode_complete() -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasSecurityModeComplete::new()))
}

pub fn security_mode_reject(cause: u8) -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasSecurityModeReject::new(
        NasEmmCause::new(cause),
    )))
}

/// ATTACH COMPLETE carrying ACTIVATE DEFAULT EPS BEARER CONTEXT ACCEPT for `ebi`.
pub fn attach_complete(ebi: u8) -> Result<Vec<u8>> {
    let accept = NasEpsMessage::new_esm(NasActivateDefaultEpsBearerContextAccept::new(), ebi, 0);
    let esm = NasEsmMessageContainer::from_esm_message(&accept)
        .map_err(|e| NasError::Encode(e.to_string()))?;
    enc(NasEpsMessage::new_emm(NasAttachComplete::new(esm)))
}

/// UE-originating DETACH REQUEST (EPS detach) identified by GUTI.
pub fn detach_request(switch_off: bool, guti: &Guti, ksi: u8) -> Result<Vec<u8>> {
    let m = NasDetachRequestUeOriginating::new(
        NasDetachType::from_ue_detach_kind(UeDetachKind::EpsDetach, switch_off),
        NasKeySetIdentifier::new(ksi & 0x07),
        NasEpsMobileIdentity::new(guti.to_identity()),
    );
    enc(NasEpsMessage::new_emm(m))
}

/// TRACKING AREA UPDATE REQUEST (EPS-only) from a UE known by `old_guti`; `bearers`
/// are the EBIs of its active bearers (EPS bearer context status), if it sends them.
pub fn tracking_area_update_request(
    update_type: UpdateType,
    active: bool,
    ksi: u8,
    old_guti: &Guti,
    last_visited_tai: Option<Tai>,
    bearers: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let kind = match update_type {
        UpdateType::TaUpdating => oxirush_nas::nas_eps::UpdateType::TaUpdating,
        UpdateType::Periodic => oxirush_nas::nas_eps::UpdateType::PeriodicUpdating,
    };
    let mut m = NasTrackingAreaUpdateRequest::new(
        NasEpsUpdateType::from_update_type(kind).with_active(active),
        NasKeySetIdentifier::new(ksi & 0x07),
        NasEpsMobileIdentity::new(old_guti.to_identity()),
    );
    if let Some(tai) = last_visited_tai {
        m = m.with_last_visited_registered_tai(NasTrackingAreaIdentity::new(tai.to_octets()));
    }
    if let Some(ebis) = bearers {
        m = m.with_eps_bearer_context_status(bearer_status(ebis)?);
    }
    enc(NasEpsMessage::new_emm(m))
}

pub fn tracking_area_update_complete() -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasTrackingAreaUpdateComplete::new()))
}

/// IDENTITY RESPONSE with the IMSI.
pub fn identity_response(imsi: &str) -> Result<Vec<u8>> {
    let id = NasMobileIdentity::from_imsi(imsi).map_err(|e| NasError::Value(e.to_string()))?;
    enc(NasEpsMessage::new_emm(NasIdentityResponse::new(id)))
}

pub fn guti_reallocation_complete() -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasGutiReallocationComplete::new()))
}

// ---- either way ----------------------------------------------------------------

/// DETACH ACCEPT: the MME's answer to a UE-originating detach, and the UE's to a
/// network-initiated one (the same message, TS 24.301 §8.2.10).
pub fn detach_accept() -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasDetachAccept::new()))
}

/// EMM STATUS reporting `cause` (e.g. #97 message type non-existent).
pub fn emm_status(cause: u8) -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasEmmStatus::new(NasEmmCause::new(
        cause,
    ))))
}

// ---- MME → UE -------------------------------------------------------------------

pub fn authentication_request(ksi: u8, rand: &[u8; 16], autn: &[u8; 16]) -> Result<Vec<u8>> {
    let m = NasAuthenticationRequest::new(
        NasKeySetIdentifier::new(ksi & 0x07),
        NasAuthenticationParameterRand::from_rand(*rand),
        NasAuthenticationParameterAutn::from_autn(*autn),
    );
    enc(NasEpsMessage::new_emm(m))
}

pub fn authentication_reject() -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasAuthenticationReject::new()))
}

/// SECURITY MODE COMMAND selecting `eea`/`eia`, replaying the UE network capability's
/// security octets (TS 24.301 §5.4.3.2) so the UE can detect a bidding-down attack.
pub fn security_mode_command(
    ksi: u8,
    eea: u8,
    eia: u8,
    ue_network_capability: &[u8],
) -> Result<Vec<u8>> {
    let replayed = NasUeSecurityCapability::from_ue_network_capability(
        &NasUeNetworkCapability::new(ue_network_capability.to_vec()),
    );
    let m = NasSecurityModeCommand::new(
        NasSecurityAlgorithms::new(((eea & 0x07) << 4) | (eia & 0x07)),
        NasKeySetIdentifier::new(ksi & 0x07),
        replayed,
    );
    enc(NasEpsMessage::new_emm(m))
}

/// ACTIVATE DEFAULT EPS BEARER CONTEXT REQUEST (ESM) of an attach.
pub fn activate_default_bearer_request(p: &AttachAcceptParams) -> Result<NasEpsMessage> {
    let apn =
        NasAccessPointName::from_string(&p.apn).map_err(|e| NasError::Value(e.to_string()))?;
    let req = NasActivateDefaultEpsBearerContextRequest::new(
        NasEpsQualityOfService::new(vec![p.qci]),
        apn,
        NasPdnAddress::from_pdn_address(p.pdn_address),
    );
    Ok(NasEpsMessage::new_esm(req, p.ebi, p.pti))
}

/// The EPS QoS of a dedicated bearer (TS 24.301 §9.9.4.3): QCI and, for a GBR bearer,
/// its maximum and guaranteed bit rates in kbit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpsQos {
    pub qci: u8,
    pub mbr_uplink_kbps: u64,
    pub mbr_downlink_kbps: u64,
    pub gbr_uplink_kbps: u64,
    pub gbr_downlink_kbps: u64,
}

impl EpsQos {
    /// The IE value: the QCI alone for a non-GBR bearer; with the four bit-rate octets
    /// (TS 24.008 §10.5.6.5 coding) for QCI 1..=4.
    fn octets(&self) -> Vec<u8> {
        let mut v = vec![self.qci];
        if (1..=4).contains(&self.qci) {
            v.extend(
                [
                    self.mbr_uplink_kbps,
                    self.mbr_downlink_kbps,
                    self.gbr_uplink_kbps,
                    self.gbr_downlink_kbps,
                ]
                .map(bit_rate_octet),
            );
        }
        v
    }
}

/// One bit-rate octet of TS 24.008 §10.5.6.5: 1..63 kbit/s by 1, 64..568 by 8,
/// 576..8640 by 64 (rounded down), 0 as 0xff. Higher rates need the extended octets,
/// which are not sent: they are capped at 8640 kbit/s here.
fn bit_rate_octet(kbps: u64) -> u8 {
    match kbps {
        0 => 0xff,
        1..=63 => kbps as u8,
        64..=575 => 0x40 + ((kbps - 64) / 8) as u8,
        _ => 0x80 + ((kbps.min(8640) - 576) / 64) as u8,
    }
}

/// ACTIVATE DEDICATED EPS BEARER CONTEXT REQUEST (ESM, network-initiated: PTI 0):
/// bearer `ebi` on the PDN connection of `linked_ebi`, with its QoS and TFT value.
pub fn activate_dedicated_bearer_request(
    ebi: u8,
    linked_ebi: u8,
    qos: &EpsQos,
    tft: Vec<u8>,
) -> Result<Vec<u8>> {
    let lbi = NasLinkedEpsBearerIdentity::from_bearer_identity(linked_ebi)
        .map_err(|e| NasError::Value(e.to_string()))?;
    let m = NasActivateDedicatedEpsBearerContextRequest::new(
        lbi,
        NasEpsQualityOfService::new(qos.octets()),
        NasTrafficFlowTemplate::new(tft),
    );
    enc(NasEpsMessage::new_esm(m, ebi, 0))
}

/// ACTIVATE DEDICATED EPS BEARER CONTEXT ACCEPT for bearer `ebi` (PTI 0 as in the
/// network's request).
pub fn activate_dedicated_bearer_accept(ebi: u8) -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_esm(
        NasActivateDedicatedEpsBearerContextAccept::new(),
        ebi,
        0,
    ))
}

/// TAI list of type 0: one PLMN, up to 16 TACs (TS 24.301 §9.9.3.33).
pub fn tai_list(plmn: [u8; 3], tacs: &[u16]) -> Result<Vec<u8>> {
    if tacs.is_empty() || tacs.len() > 16 {
        return Err(NasError::Value(format!(
            "{} TACs in a TAI list",
            tacs.len()
        )));
    }
    let mut v = vec![(tacs.len() - 1) as u8];
    v.extend_from_slice(&plmn);
    for t in tacs {
        v.extend_from_slice(&t.to_be_bytes());
    }
    Ok(v)
}

pub fn attach_accept(p: &AttachAcceptParams) -> Result<Vec<u8>> {
    let esm = NasEsmMessageContainer::from_esm_message(&activate_default_bearer_request(p)?)
        .map_err(|e| NasError::Encode(e.to_string()))?;
    let m = NasAttachAccept::new(
        NasEpsAttachResult::from_attach_result(AttachResult::EpsOnly),
        NasT3412Value::new(p.t3412),
        NasTrackingAreaIdentityList::new(tai_list(p.tai_plmn, &p.tacs)?),
        esm,
    )
    .with_guti(NasEpsMobileIdentity::new(p.guti.to_identity()));
    enc(NasEpsMessage::new_emm(m))
}

pub fn attach_reject(cause: u8) -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasAttachReject::new(
        NasEmmCause::new(cause),
    )))
}

/// Network-initiated DETACH REQUEST (EPS detach); `cause` only with "re-attach not
/// required" (TS 24.301 §5.5.2.3.1).
pub fn network_detach_request(reattach_required: bool, cause: Option<u8>) -> Result<Vec<u8>> {
    let kind = if reattach_required {
        NetworkDetachKind::ReattachRequired
    } else {
        NetworkDetachKind::ReattachNotRequired
    };
    let mut m = NasDetachRequestUeTerminated::new(NasDetachType::from_network_detach_kind(kind));
    if let Some(cause) = cause {
        m = m.with_emm_cause(NasEmmCause::new(cause));
    }
    enc(NasEpsMessage::new_emm(m))
}

pub fn service_reject(cause: u8) -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasServiceReject::new(
        NasEmmCause::new(cause),
    )))
}

/// EPS bearer context status (TS 24.301 §9.9.2.1) with `ebis` (5..=15) active.
fn bearer_status(ebis: &[u8]) -> Result<NasEpsBearerContextStatus> {
    NasEpsBearerContextStatus::from_bearers(ebis).map_err(|e| NasError::Value(e.to_string()))
}

/// TRACKING AREA UPDATE ACCEPT (EPS update result "TA updated").
pub fn tracking_area_update_accept(p: &TauAcceptParams) -> Result<Vec<u8>> {
    let mut m = NasTrackingAreaUpdateAccept::new(NasEpsUpdateResult::from_update_result(
        UpdateResult::TaUpdated,
    ))
    .with_t3412_value(NasT3412Value::new(p.t3412))
    .with_tai_list(NasTrackingAreaIdentityList::new(tai_list(
        p.tai_plmn, &p.tacs,
    )?));
    if let Some(guti) = &p.guti {
        m = m.with_guti(NasEpsMobileIdentity::new(guti.to_identity()));
    }
    if let Some(ebis) = &p.bearers {
        m = m.with_eps_bearer_context_status(bearer_status(ebis)?);
    }
    enc(NasEpsMessage::new_emm(m))
}

pub fn tracking_area_update_reject(cause: u8) -> Result<Vec<u8>> {
    enc(NasEpsMessage::new_emm(NasTrackingAreaUpdateReject::new(
        NasEmmCause::new(cause),
    )))
}

/// IDENTITY REQUEST for the IMSI, the only identity this lab asks for (a GUTI the
/// MME cannot resolve, TS 24.301 §5.4.4).
pub fn identity_request() -> Result<Vec<u8>> {
    let t = NasIdentityType2::from_identity_type(IdentityType::Imsi)
        .map_err(|e| NasError::Value(e.to_string()))?;
    enc(NasEpsMessage::new_emm(NasIdentityRequest::new(t)))
}

/// GUTI REALLOCATION COMMAND with a new GUTI and, unless `tacs` is empty, a new TAI
/// list of `tai_plmn`.
pub fn guti_reallocation_command(guti: &Guti, tai_plmn: [u8; 3], tacs: &[u16]) -> Result<Vec<u8>> {
    let mut m = NasGutiReallocationCommand::new(NasEpsMobileIdentity::new(guti.to_identity()));
    if !tacs.is_empty() {
        m = m.with_tai_list(NasTrackingAreaIdentityList::new(tai_list(tai_plmn, tacs)?));
    }
    enc(NasEpsMessage::new_emm(m))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The ATTACH REQUEST of oxirush-nas's docs (IMSI 208930000000001, PDN
    /// CONNECTIVITY REQUEST inside), which Wireshark decodes the same way.
    #[test]
    fn parses_known_attach_request() {
        let bytes = h("07410108298039000000001002e0e000040201d031");
        match parse(&bytes, Direction::Uplink).unwrap() {
            Nas::AttachRequest {
                imsi,
                ksi,
                ue_network_capability,
                pdn,
                ..
            } => {
                assert_eq!(imsi.as_deref(), Some("208930000000001"));
                assert_eq!(ksi, 0);
                assert_eq!(ue_network_capability, vec![0xe0, 0xe0]);
                let pdn = pdn.unwrap();
                // PDN type nibble 3 = IPv4v6 (octet 0x31: request type 1, PDN type 3).
                assert_eq!((pdn.pti, pdn.pdn_type, pdn.apn), (1, 3, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attach_request_round_trip() {
        let pdn = PdnConnectivity::default();
        let bytes = attach_request("001010000000001", &[0xe0, 0xe0], &pdn).unwrap();
        // PD 7 / plain, type 0x41, EPS attach with KSI 7, IMSI odd digits.
        assert_eq!(&bytes[..3], &[0x07, 0x41, 0x71]);
        match parse(&bytes, Direction::Uplink).unwrap() {
            Nas::AttachRequest { imsi, pdn: p, .. } => {
                assert_eq!(imsi.as_deref(), Some("001010000000001"));
                assert_eq!(p, Some(pdn));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attach_request_by_guti_round_trip() {
        let bytes = attach_request_by_guti(&GUTI, &[0xe0, 0xe0], &Default::default()).unwrap();
        assert!(matches!(
            parse(&bytes, Direction::Uplink).unwrap(),
            Nas::AttachRequest { imsi: None, guti: Some(g), ksi: 7, .. } if g == GUTI
        ));
    }

    /// The AUTHENTICATION REQUEST of oxirush-s1ap's docs (TS 35.208 test set 1 RAND).
    #[test]
    fn authentication_request_known_bytes() {
        let rand: [u8; 16] = h("23553cbe9637a89d218ae64dae47bf35").try_into().unwrap();
        let autn: [u8; 16] = h("aa689c648350b9b9a4a8043ac07aa7e0").try_into().unwrap();
        let bytes = authentication_request(0, &rand, &autn).unwrap();
        assert_eq!(
            bytes,
            h("07520023553cbe9637a89d218ae64dae47bf3510aa689c648350b9b9a4a8043ac07aa7e0")
        );
        assert_eq!(
            parse(&bytes, Direction::Downlink).unwrap(),
            Nas::AuthenticationRequest { ksi: 0, rand, autn }
        );
    }

    #[test]
    fn attach_accept_round_trip() {
        let p = AttachAcceptParams {
            guti: Guti {
                plmn: [0x00, 0xf1, 0x10],
                mme_group_id: 1,
                mme_code: 1,
                m_tmsi: 0xc000_0001,
            },
            tai_plmn: [0x00, 0xf1, 0x10],
            tacs: vec![1],
            t3412: 0x49,
            ebi: 5,
            pti: 1,
            qci: 9,
            apn: "internet".into(),
            pdn_address: PdnAddress::Ipv4([10, 45, 0, 2]),
        };
        let bytes = attach_accept(&p).unwrap();
        match parse(&bytes, Direction::Downlink).unwrap() {
            Nas::AttachAccept {
                guti,
                tai_list,
                ebi,
                pti,
                qci,
                apn,
                ue_ipv4,
                ue_ipv6_iid,
            } => {
                assert_eq!(guti, Some(p.guti));
                assert_eq!(tai_list, vec![0x00, 0x00, 0xf1, 0x10, 0x00, 0x01]);
                assert_eq!((ebi, pti, qci), (5, 1, Some(9)));
                assert_eq!(apn.as_deref(), Some("internet"));
                assert_eq!((ue_ipv4, ue_ipv6_iid), (Some([10, 45, 0, 2]), None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dedicated_bearer_request_and_accept_round_trip() {
        let qos = EpsQos {
            qci: 1,
            mbr_uplink_kbps: 128,
            mbr_downlink_kbps: 128,
            gbr_uplink_kbps: 64,
            gbr_downlink_kbps: 64,
        };
        // One bidirectional filter: UDP from/to 10.45.0.1 port 5001.
        let tft = vec![
            0x21, 0x31, 10, 14, 0x10, 10, 45, 0, 1, 255, 255, 255, 255, 0x30, 17, 0x50, 0x13, 0x89,
        ];
        let b = activate_dedicated_bearer_request(6, 5, &qos, tft.clone()).unwrap();
        // EPS QoS: length 5, QCI 1, MBR 128 (0x48) twice, GBR 64 (0x40) twice.
        assert!(
            b.windows(6).any(|w| w == [5, 1, 0x48, 0x48, 0x40, 0x40]),
            "{b:02x?}"
        );
        assert_eq!(
            parse(&b, Direction::Downlink).unwrap(),
            Nas::ActivateDedicatedBearerRequest {
                ebi: 6,
                linked_ebi: 5,
                qci: Some(1),
                tft
            }
        );
        let a = activate_dedicated_bearer_accept(6).unwrap();
        assert_eq!(
            parse(&a, Direction::Uplink).unwrap(),
            Nas::ActivateDedicatedBearerAccept { ebi: 6 }
        );
        assert!(activate_dedicated_bearer_request(6, 0, &qos, vec![]).is_err());
        assert_eq!(
            [0, 1, 63, 64, 568, 576, 8640, 100_000].map(bit_rate_octet),
            [0xff, 1, 63, 0x40, 0x7f, 0x80, 0xfe, 0xfe]
        );
    }

    #[test]
    fn attach_accept_pdn_address_ipv6_and_ipv4v6() {
        let iid = [0, 0, 0, 0, 0, 0, 0xab, 0xcd];
        for (addr, v4, v6) in [
            (PdnAddress::Ipv6InterfaceId(iid), None, Some(iid)),
            (
                PdnAddress::Ipv4v6 {
                    ipv6_interface_id: iid,
                    ipv4: [10, 45, 0, 3],
                },
                Some([10, 45, 0, 3]),
                Some(iid),
            ),
        ] {
            let p = AttachAcceptParams {
                guti: GUTI,
                tai_plmn: PLMN,
                tacs: vec![1],
                t3412: 0x49,
                ebi: 5,
                pti: 1,
                qci: 9,
                apn: "internet".into(),
                pdn_address: addr,
            };
            let bytes = attach_accept(&p).unwrap();
            // The PDN address IE (TS 24.301 §9.9.4.9): length, PDN type, then the
            // interface identifier (8 octets) and for IPv4v6 the IPv4 address.
            let mut ie = vec![if v4.is_some() { 13 } else { 9 }];
            ie.push(if v4.is_some() { 3 } else { 2 });
            ie.extend_from_slice(&iid);
            ie.extend(v4.iter().flatten());
            assert!(bytes.windows(ie.len()).any(|w| w == ie), "{bytes:02x?}");
            match parse(&bytes, Direction::Downlink).unwrap() {
                Nas::AttachAccept {
                    ue_ipv4,
                    ue_ipv6_iid,
                    ..
                } => assert_eq!((ue_ipv4, ue_ipv6_iid), (v4, v6)),
                other => panic!("{other:?}"),
            }
        }
    }

    pub(crate) const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];
    pub(crate) const GUTI: Guti = Guti {
        plmn: PLMN,
        mme_group_id: 1,
        mme_code: 1,
        m_tmsi: 7,
    };

    /// Every message but the ATTACH REQUEST/ACCEPT and the SERVICE REQUEST (tested on
    /// their own), plain, with the direction it travels and its typed view.
    pub(crate) fn samples() -> Vec<(Vec<u8>, Direction, Nas)> {
        let guti = GUTI;
        let tai = Tai { plmn: PLMN, tac: 1 };
        vec![
            (
                authentication_response(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
                Direction::Uplink,
                Nas::AuthenticationResponse {
                    res: vec![1, 2, 3, 4, 5, 6, 7, 8],
                },
            ),
            (
                authentication_failure(21, Some([9; 14])).unwrap(),
                Direction::Uplink,
                Nas::AuthenticationFailure {
                    cause: 21,
                    auts: Some([9; 14]),
                },
            ),
            (
                authentication_reject().unwrap(),
                Direction::Downlink,
                Nas::AuthenticationReject,
            ),
            (
                security_mode_command(0, 2, 2, &[0xe0, 0xe0]).unwrap(),
                Direction::Downlink,
                Nas::SecurityModeCommand {
                    eea: 2,
                    eia: 2,
                    ksi: 0,
                    replayed_ue_capability: vec![0xe0, 0xe0],
                },
            ),
            (
                security_mode_complete().unwrap(),
                Direction::Uplink,
                Nas::SecurityModeComplete,
            ),
            (
                attach_complete(5).unwrap(),
                Direction::Uplink,
                Nas::AttachComplete { ebi: 5 },
            ),
            (
                attach_reject(crate::cause::EPS_AND_NON_EPS_NOT_ALLOWED).unwrap(),
                Direction::Downlink,
                Nas::AttachReject { cause: 8 },
            ),
            (
                detach_request(true, &guti, 0).unwrap(),
                Direction::Uplink,
                Nas::DetachRequest {
                    switch_off: true,
                    guti: Some(guti),
                    imsi: None,
                },
            ),
            (
                detach_accept().unwrap(),
                Direction::Downlink,
                Nas::DetachAccept,
            ),
            (
                detach_accept().unwrap(),
                Direction::Uplink,
                Nas::DetachAccept,
            ),
            (
                network_detach_request(true, None).unwrap(),
                Direction::Downlink,
                Nas::NetworkDetachRequest {
                    reattach_required: true,
                    cause: None,
                },
            ),
            (
                network_detach_request(false, Some(crate::cause::EPS_AND_NON_EPS_NOT_ALLOWED))
                    .unwrap(),
                Direction::Downlink,
                Nas::NetworkDetachRequest {
                    reattach_required: false,
                    cause: Some(8),
                },
            ),
            (
                service_reject(crate::cause::UE_IDENTITY_CANNOT_BE_DERIVED).unwrap(),
                Direction::Downlink,
                Nas::ServiceReject { cause: 9 },
            ),
            (
                tracking_area_update_request(
                    UpdateType::TaUpdating,
                    true,
                    1,
                    &guti,
                    Some(tai),
                    Some(&[5, 6]),
                )
                .unwrap(),
                Direction::Uplink,
                Nas::TrackingAreaUpdateRequest {
                    update_type: UpdateType::TaUpdating,
                    active: true,
                    ksi: 1,
                    old_guti: Some(guti),
                    last_visited_tai: Some(tai),
                    bearers: Some(vec![5, 6]),
                },
            ),
            (
                tracking_area_update_request(UpdateType::Periodic, false, 1, &guti, None, None)
                    .unwrap(),
                Direction::Uplink,
                Nas::TrackingAreaUpdateRequest {
                    update_type: UpdateType::Periodic,
                    active: false,
                    ksi: 1,
                    old_guti: Some(guti),
                    last_visited_tai: None,
                    bearers: None,
                },
            ),
            (
                tracking_area_update_accept(&TauAcceptParams {
                    guti: Some(guti),
                    tai_plmn: PLMN,
                    tacs: vec![1, 2],
                    t3412: 0x49,
                    bearers: Some(vec![5]),
                })
                .unwrap(),
                Direction::Downlink,
                Nas::TrackingAreaUpdateAccept {
                    guti: Some(guti),
                    tai_list: Some(vec![0x01, 0x00, 0xf1, 0x10, 0x00, 0x01, 0x00, 0x02]),
                    t3412: Some(0x49),
                    bearers: Some(vec![5]),
                },
            ),
            (
                tracking_area_update_complete().unwrap(),
                Direction::Uplink,
                Nas::TrackingAreaUpdateComplete,
            ),
            (
                tracking_area_update_reject(10).unwrap(),
                Direction::Downlink,
                Nas::TrackingAreaUpdateReject { cause: 10 },
            ),
            (
                identity_request().unwrap(),
                Direction::Downlink,
                Nas::IdentityRequest { identity_type: 1 },
            ),
            (
                identity_response("001010000000001").unwrap(),
                Direction::Uplink,
                Nas::IdentityResponse {
                    imsi: Some("001010000000001".into()),
                },
            ),
            (
                guti_reallocation_command(&guti, PLMN, &[1]).unwrap(),
                Direction::Downlink,
                Nas::GutiReallocationCommand {
                    guti,
                    tai_list: Some(vec![0x00, 0x00, 0xf1, 0x10, 0x00, 0x01]),
                },
            ),
            (
                guti_reallocation_command(&guti, PLMN, &[]).unwrap(),
                Direction::Downlink,
                Nas::GutiReallocationCommand {
                    guti,
                    tai_list: None,
                },
            ),
            (
                guti_reallocation_complete().unwrap(),
                Direction::Uplink,
                Nas::GutiReallocationComplete,
            ),
            (
                emm_status(crate::cause::SEMANTICALLY_INCORRECT).unwrap(),
                Direction::Uplink,
                Nas::EmmStatus { cause: 95 },
            ),
        ]
    }

    #[test]
    fn small_messages_round_trip() {
        for (bytes, dir, want) in samples() {
            assert_eq!(parse(&bytes, dir).unwrap(), want, "{}", hex::encode(&bytes));
        }
        // Attach Reject #8: 07 44 08 (TS 24.301 §8.2.3).
        assert_eq!(attach_reject(8).unwrap(), vec![0x07, 0x44, 0x08]);
    }

    /// Octets laid out by hand from TS 24.301 §8.2 (message types of Table 9.8.1, IEIs
    /// of each message's table), for the GUTI 00101/MMEGI 1/MMEC 1/M-TMSI 7 and TAI
    /// 00101/TAC 1; both ways: the builders give these octets and `parse` reads them.
    #[test]
    fn new_messages_known_bytes() {
        let guti = "0bf600f11000010100000007";
        let tai_list = "54060000f1100001";
        let cases: [(String, Vec<u8>, Direction); 14] = [
            // SERVICE REJECT #9 (§8.2.24).
            (
                "074e09".into(),
                service_reject(9).unwrap(),
                Direction::Downlink,
            ),
            // TAU REQUEST: KSI 1 (high half) | active | TA updating = 0x18, old GUTI
            // (LV), last visited TAI (IEI 52), EPS bearer context status (IEI 57) with
            // EBI 5 and 6 (octet 3 bits 6, 7).
            (
                format!("074818{guti}5200f110000157026000"),
                tracking_area_update_request(
                    UpdateType::TaUpdating,
                    true,
                    1,
                    &GUTI,
                    Some(Tai { plmn: PLMN, tac: 1 }),
                    Some(&[5, 6]),
                )
                .unwrap(),
                Direction::Uplink,
            ),
            // TAU REQUEST periodic, KSI 1 (octet 0x13).
            (
                format!("074813{guti}"),
                tracking_area_update_request(UpdateType::Periodic, false, 1, &GUTI, None, None)
                    .unwrap(),
                Direction::Uplink,
            ),
            // TAU ACCEPT: TA updated, T3412 (IEI 5A) 54 min, GUTI (IEI 50), TAI list (IEI
            // 54, type 0, one TAC).
            (
                format!("0749005a4950{guti}{tai_list}"),
                tracking_area_update_accept(&TauAcceptParams {
                    guti: Some(GUTI),
                    tai_plmn: PLMN,
                    tacs: vec![1],
                    t3412: 0x49,
                    bearers: None,
                })
                .unwrap(),
                Direction::Downlink,
            ),
            (
                "074a".into(),
                tracking_area_update_complete().unwrap(),
                Direction::Uplink,
            ),
            // TAU REJECT #10 implicitly detached.
            (
                "074b0a".into(),
                tracking_area_update_reject(10).unwrap(),
                Direction::Downlink,
            ),
            // IDENTITY REQUEST: identity type 2 = IMSI (spare half octet 0).
            (
                "075501".into(),
                identity_request().unwrap(),
                Direction::Downlink,
            ),
            // IDENTITY RESPONSE: IMSI 001010000000001, odd, as in the ATTACH REQUEST.
            (
                "0756080910100000000010".into(),
                identity_response("001010000000001").unwrap(),
                Direction::Uplink,
            ),
            (
                format!("0750{guti}{tai_list}"),
                guti_reallocation_command(&GUTI, PLMN, &[1]).unwrap(),
                Direction::Downlink,
            ),
            (
                "0751".into(),
                guti_reallocation_complete().unwrap(),
                Direction::Uplink,
            ),
            // Network DETACH REQUEST: re-attach required; re-attach not required with
            // EMM cause (IEI 53) #8.
            (
                "074501".into(),
                network_detach_request(true, None).unwrap(),
                Direction::Downlink,
            ),
            (
                "0745025308".into(),
                network_detach_request(false, Some(8)).unwrap(),
                Direction::Downlink,
            ),
            // DETACH ACCEPT from the UE.
            ("0746".into(), detach_accept().unwrap(), Direction::Uplink),
            (
                "076061".into(),
                emm_status(0x61).unwrap(),
                Direction::Uplink,
            ),
        ];
        for (want, built, dir) in cases {
            assert_eq!(hex::encode(&built), want);
            assert!(
                !matches!(parse(&built, dir).unwrap(), Nas::Other { .. }),
                "{want}"
            );
        }
        // The short SERVICE REQUEST (§8.2.25): 0xC7, KSI 1 | SN 3, short MAC.
        assert_eq!(
            parse(&h("c7230102"), Direction::Uplink).unwrap(),
            Nas::ServiceRequest {
                ksi: 1,
                seq: 3,
                short_mac: 0x0102
            }
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = parse(&bytes, Direction::Uplink);
            let _ = parse(&bytes, Direction::Downlink);
            // Valid headers with random bodies reach the IE decoders, for every
            // message type with IEs, and the short SERVICE REQUEST.
            for mt in [0x41, 0x45, 0x48, 0x49, 0x4b, 0x4e, 0x50, 0x55, 0x56, 0x60] {
                let mut emm = vec![0x07, mt];
                emm.extend_from_slice(&bytes);
                let _ = parse(&emm, Direction::Uplink);
                let _ = parse(&emm, Direction::Downlink);
            }
            let mut sr = vec![0xc7];
            sr.extend_from_slice(&bytes);
            let _ = parse(&sr, Direction::Uplink);
        }
        assert!(parse(&[], Direction::Uplink).is_err());
        assert!(Guti::from_identity(&[0xf6, 1, 2]).is_none());
    }
}
