//! Typed S6a messages (TS 29.272 7.2): Authentication-Information, Update-Location,
//! Purge-UE (MME -> HSS) and Cancel-Location (HSS -> MME).
//! Requests build with `to_message()` (the peer assigns hop-by-hop/end-to-end ids); answers
//! build with `to_message(&request)` so they carry the request's ids.

use crate::avp::{self, Avp};
use crate::base::{s6a_vendor_specific_app_id, ResultCode};
use crate::codes::*;
use crate::{Error, Message, Result};

const V: u32 = VENDOR_3GPP;

/// Authentication-Information-Request (TS 29.272 7.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfoRequest {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_host: Option<String>,
    pub destination_realm: String,
    /// User-Name: the IMSI as decimal digits.
    pub imsi: String,
    /// Visited-PLMN-Id, 3 bytes as in TS 23.003 (e.g. 00 f1 10 for 001/01).
    pub visited_plmn_id: [u8; 3],
    pub num_vectors: u32,
    pub immediate_response_preferred: bool,
    /// Re-Synchronization-Info = RAND (16) || AUTS (14) after a UE sync failure.
    pub resync_info: Option<[u8; 30]>,
}

impl AuthInfoRequest {
    pub fn to_message(&self) -> Message {
        let mut req_info = vec![Avp::u32(
            AVP_NUMBER_OF_REQUESTED_VECTORS,
            V,
            self.num_vectors,
        )];
        if self.immediate_response_preferred {
            req_info.push(Avp::u32(AVP_IMMEDIATE_RESPONSE_PREFERRED, V, 1));
        }
        if let Some(r) = &self.resync_info {
            req_info.push(Avp::octets(AVP_RE_SYNCHRONIZATION_INFO, V, r));
        }
        let mut m = request_head(
            CMD_AUTHENTICATION_INFORMATION,
            &self.session_id,
            &self.origin_host,
            &self.origin_realm,
            self.destination_host.as_deref(),
            &self.destination_realm,
            &self.imsi,
        );
        m.push(Avp::grouped(
            AVP_REQUESTED_EUTRAN_AUTHENTICATION_INFO,
            V,
            &req_info,
        ));
        m.push(Avp::octets(AVP_VISITED_PLMN_ID, V, &self.visited_plmn_id));
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_AUTHENTICATION_INFORMATION, true, "AIR")?;
        let mut num_vectors = 1;
        let mut immediate_response_preferred = false;
        let mut resync_info = None;
        if let Some(info) = m.find(AVP_REQUESTED_EUTRAN_AUTHENTICATION_INFO, V) {
            let ch = info.children()?;
            if let Some(n) = avp::find(&ch, AVP_NUMBER_OF_REQUESTED_VECTORS, V) {
                num_vectors = n.as_u32()?;
            }
            if let Some(i) = avp::find(&ch, AVP_IMMEDIATE_RESPONSE_PREFERRED, V) {
                immediate_response_preferred = i.as_u32()? != 0;
            }
            if let Some(r) = avp::find(&ch, AVP_RE_SYNCHRONIZATION_INFO, V) {
                resync_info = Some(r.as_array::<30>()?);
            }
        }
        let h = RequestHead::parse(m)?;
        Ok(AuthInfoRequest {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            destination_host: h.destination_host,
            destination_realm: h.destination_realm,
            imsi: h.imsi,
            visited_plmn_id: m
                .require(AVP_VISITED_PLMN_ID, V, "Visited-PLMN-Id")?
                .as_array()?,
            num_vectors,
            immediate_response_preferred,
            resync_info,
        })
    }
}

/// One E-UTRAN-Vector (TS 29.272 7.3.18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EutranVector {
    pub rand: [u8; 16],
    /// 4..16 bytes; Milenage gives 8.
    pub xres: Vec<u8>,
    pub autn: [u8; 16],
    pub kasme: [u8; 32],
}

/// Authentication-Information-Answer (TS 29.272 7.2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfoAnswer {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub result: ResultCode,
    pub vectors: Vec<EutranVector>,
}

impl AuthInfoAnswer {
    pub fn to_message(&self, req: &Message) -> Message {
        let mut m = answer_head(
            req,
            &self.session_id,
            self.result,
            &self.origin_host,
            &self.origin_realm,
        );
        if !self.vectors.is_empty() {
            let vectors: Vec<Avp> = self
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    Avp::grouped(
                        AVP_E_UTRAN_VECTOR,
                        V,
                        &[
                            Avp::u32(AVP_ITEM_NUMBER, V, i as u32 + 1),
                            Avp::octets(AVP_RAND, V, &v.rand),
                            Avp::octets(AVP_XRES, V, &v.xres),
                            Avp::octets(AVP_AUTN, V, &v.autn),
                            Avp::octets(AVP_KASME, V, &v.kasme),
                        ],
                    )
                })
                .collect();
            m.push(Avp::grouped(AVP_AUTHENTICATION_INFO, V, &vectors));
        }
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_AUTHENTICATION_INFORMATION, false, "AIA")?;
        let mut vectors = Vec::new();
        if let Some(info) = m.find(AVP_AUTHENTICATION_INFO, V) {
            for v in avp::find_all(&info.children()?, AVP_E_UTRAN_VECTOR, V) {
                let ch = v.children()?;
                let xres = avp::require(&ch, AVP_XRES, V, "XRES")?.data.clone();
                if !(4..=16).contains(&xres.len()) {
                    return Err(Error::InvalidAvp {
                        name: "XRES",
                        reason: format!("{} bytes, must be 4..16", xres.len()),
                    });
                }
                vectors.push(EutranVector {
                    rand: avp::require(&ch, AVP_RAND, V, "RAND")?.as_array()?,
                    xres,
                    autn: avp::require(&ch, AVP_AUTN, V, "AUTN")?.as_array()?,
                    kasme: avp::require(&ch, AVP_KASME, V, "KASME")?.as_array()?,
                });
            }
        }
        let h = AnswerHead::parse(m)?;
        Ok(AuthInfoAnswer {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            result: h.result,
            vectors,
        })
    }
}

/// Update-Location-Request (TS 29.272 7.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateLocationRequest {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_host: Option<String>,
    pub destination_realm: String,
    pub imsi: String,
    pub visited_plmn_id: [u8; 3],
    /// RAT-Type, `RAT_TYPE_EUTRAN` for LTE.
    pub rat_type: u32,
    /// ULR-Flags, `ULR_FLAG_S6A_S6D_INDICATOR` from an MME.
    pub ulr_flags: u32,
}

impl UpdateLocationRequest {
    pub fn to_message(&self) -> Message {
        let mut m = request_head(
            CMD_UPDATE_LOCATION,
            &self.session_id,
            &self.origin_host,
            &self.origin_realm,
            self.destination_host.as_deref(),
            &self.destination_realm,
            &self.imsi,
        );
        m.push(Avp::u32(AVP_RAT_TYPE, V, self.rat_type));
        m.push(Avp::u32(AVP_ULR_FLAGS, V, self.ulr_flags));
        m.push(Avp::octets(AVP_VISITED_PLMN_ID, V, &self.visited_plmn_id));
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_UPDATE_LOCATION, true, "ULR")?;
        let h = RequestHead::parse(m)?;
        Ok(UpdateLocationRequest {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            destination_host: h.destination_host,
            destination_realm: h.destination_realm,
            imsi: h.imsi,
            visited_plmn_id: m
                .require(AVP_VISITED_PLMN_ID, V, "Visited-PLMN-Id")?
                .as_array()?,
            rat_type: m.require(AVP_RAT_TYPE, V, "RAT-Type")?.as_u32()?,
            ulr_flags: m.require(AVP_ULR_FLAGS, V, "ULR-Flags")?.as_u32()?,
        })
    }
}

/// Aggregate maximum bit rate in bit/s (AMBR, TS 29.272 7.3.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambr {
    pub uplink: u32,
    pub downlink: u32,
}

impl Ambr {
    fn to_avp(self) -> Avp {
        Avp::grouped(
            AVP_AMBR,
            V,
            &[
                Avp::u32(AVP_MAX_REQUESTED_BANDWIDTH_UL, V, self.uplink),
                Avp::u32(AVP_MAX_REQUESTED_BANDWIDTH_DL, V, self.downlink),
            ],
        )
    }

    fn from_avp(a: &Avp) -> Result<Self> {
        let ch = a.children()?;
        Ok(Ambr {
            uplink: avp::require(
                &ch,
                AVP_MAX_REQUESTED_BANDWIDTH_UL,
                V,
                "Max-Requested-Bandwidth-UL",
            )?
            .as_u32()?,
            downlink: avp::require(
                &ch,
                AVP_MAX_REQUESTED_BANDWIDTH_DL,
                V,
                "Max-Requested-Bandwidth-DL",
            )?
            .as_u32()?,
        })
    }
}

/// Allocation-Retention-Priority (TS 29.212 5.3.32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 (highest) .. 15.
    pub priority_level: u32,
    /// `PRE_EMPTION_CAPABILITY_*`.
    pub pre_emption_capability: u32,
    /// `PRE_EMPTION_VULNERABILITY_*`.
    pub pre_emption_vulnerability: u32,
}

/// One APN-Configuration (TS 29.272 7.3.35).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnConfiguration {
    pub context_identifier: u32,
    /// Service-Selection, e.g. "internet".
    pub apn: String,
    /// `PDN_TYPE_*`.
    pub pdn_type: u32,
    pub qci: u32,
    pub arp: Arp,
    pub ambr: Option<Ambr>,
}

impl ApnConfiguration {
    fn to_avp(&self) -> Avp {
        let qos = Avp::grouped(
            AVP_EPS_SUBSCRIBED_QOS_PROFILE,
            V,
            &[
                Avp::u32(AVP_QOS_CLASS_IDENTIFIER, V, self.qci),
                Avp::grouped(
                    AVP_ALLOCATION_RETENTION_PRIORITY,
                    V,
                    &[
                        Avp::u32(AVP_PRIORITY_LEVEL, V, self.arp.priority_level),
                        Avp::u32(
                            AVP_PRE_EMPTION_CAPABILITY,
                            V,
                            self.arp.pre_emption_capability,
                        ),
                        Avp::u32(
                            AVP_PRE_EMPTION_VULNERABILITY,
                            V,
                            self.arp.pre_emption_vulnerability,
                        ),
                    ],
                ),
            ],
        );
        let mut ch = vec![
            Avp::u32(AVP_CONTEXT_IDENTIFIER, V, self.context_identifier),
            Avp::u32(AVP_PDN_TYPE, V, self.pdn_type),
            Avp::utf8(AVP_SERVICE_SELECTION, 0, &self.apn),
            qos,
        ];
        if let Some(a) = self.ambr {
            ch.push(a.to_avp());
        }
        Avp::grouped(AVP_APN_CONFIGURATION, V, &ch)
    }

    fn from_avp(a: &Avp) -> Result<Self> {
        let ch = a.children()?;
        let qos = avp::require(
            &ch,
            AVP_EPS_SUBSCRIBED_QOS_PROFILE,
            V,
            "EPS-Subscribed-QoS-Profile",
        )?
        .children()?;
        let arp = avp::require(
            &qos,
            AVP_ALLOCATION_RETENTION_PRIORITY,
            V,
            "Allocation-Retention-Priority",
        )?
        .children()?;
        let opt_u32 = |code, default| -> Result<u32> {
            avp::find(&arp, code, V)
                .map(Avp::as_u32)
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        Ok(ApnConfiguration {
            context_identifier: avp::require(&ch, AVP_CONTEXT_IDENTIFIER, V, "Context-Identifier")?
                .as_u32()?,
            apn: avp::require(&ch, AVP_SERVICE_SELECTION, 0, "Service-Selection")?
                .as_str()?
                .to_string(),
            pdn_type: avp::require(&ch, AVP_PDN_TYPE, V, "PDN-Type")?.as_u32()?,
            qci: avp::require(&qos, AVP_QOS_CLASS_IDENTIFIER, V, "QoS-Class-Identifier")?
                .as_u32()?,
            arp: Arp {
                priority_level: avp::require(&arp, AVP_PRIORITY_LEVEL, V, "Priority-Level")?
                    .as_u32()?,
                // Absent capability/vulnerability take the spec defaults (29.212 5.3.46/47).
                pre_emption_capability: opt_u32(
                    AVP_PRE_EMPTION_CAPABILITY,
                    PRE_EMPTION_CAPABILITY_DISABLED,
                )?,
                pre_emption_vulnerability: opt_u32(
                    AVP_PRE_EMPTION_VULNERABILITY,
                    PRE_EMPTION_VULNERABILITY_ENABLED,
                )?,
            },
            ambr: avp::find(&ch, AVP_AMBR, V)
                .map(Ambr::from_avp)
                .transpose()?,
        })
    }
}

/// The parts of Subscription-Data (TS 29.272 7.3.2) an MME needs for an EPS attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionData {
    /// MSISDN as decimal digits (TBCD on the wire).
    pub msisdn: Option<String>,
    pub subscriber_status: u32,
    pub network_access_mode: u32,
    /// UE-AMBR.
    pub ambr: Ambr,
    /// Context-Identifier of the default APN.
    pub default_context_identifier: u32,
    pub apns: Vec<ApnConfiguration>,
    /// Subscribed-Periodic-RAU-TAU-Timer (7.3.134), seconds: the periodic TAU timer
    /// (T3412) the MME should give the UE.
    pub periodic_rau_tau_timer: Option<u32>,
}

impl SubscriptionData {
    pub fn to_avp(&self) -> Avp {
        let mut ch = vec![Avp::u32(AVP_SUBSCRIBER_STATUS, V, self.subscriber_status)];
        if let Some(msisdn) = &self.msisdn {
            ch.push(Avp::octets(AVP_MSISDN, V, &tbcd_encode(msisdn)));
        }
        ch.push(Avp::u32(
            AVP_NETWORK_ACCESS_MODE,
            V,
            self.network_access_mode,
        ));
        ch.push(self.ambr.to_avp());
        let mut profile = vec![
            Avp::u32(AVP_CONTEXT_IDENTIFIER, V, self.default_context_identifier),
            Avp::u32(
                AVP_ALL_APN_CONFIGURATIONS_INCLUDED_INDICATOR,
                V,
                ALL_APN_CONFIGURATIONS_INCLUDED,
            ),
        ];
        profile.extend(self.apns.iter().map(ApnConfiguration::to_avp));
        ch.push(Avp::grouped(AVP_APN_CONFIGURATION_PROFILE, V, &profile));
        if let Some(t) = self.periodic_rau_tau_timer {
            ch.push(Avp::u32(AVP_SUBSCRIBED_PERIODIC_RAU_TAU_TIMER, V, t));
        }
        Avp::grouped(AVP_SUBSCRIPTION_DATA, V, &ch)
    }

    pub fn from_avp(a: &Avp) -> Result<Self> {
        let ch = a.children()?;
        let profile = avp::require(
            &ch,
            AVP_APN_CONFIGURATION_PROFILE,
            V,
            "APN-Configuration-Profile",
        )?
        .children()?;
        Ok(SubscriptionData {
            msisdn: avp::find(&ch, AVP_MSISDN, V)
                .map(|a| tbcd_decode(&a.data))
                .transpose()?,
            subscriber_status: avp::find(&ch, AVP_SUBSCRIBER_STATUS, V)
                .map(Avp::as_u32)
                .transpose()?
                .unwrap_or(SUBSCRIBER_STATUS_SERVICE_GRANTED),
            network_access_mode: avp::find(&ch, AVP_NETWORK_ACCESS_MODE, V)
                .map(Avp::as_u32)
                .transpose()?
                .unwrap_or(NETWORK_ACCESS_MODE_ONLY_PACKET),
            ambr: Ambr::from_avp(avp::require(&ch, AVP_AMBR, V, "AMBR")?)?,
            default_context_identifier: avp::require(
                &profile,
                AVP_CONTEXT_IDENTIFIER,
                V,
                "Context-Identifier",
            )?
            .as_u32()?,
            apns: avp::find_all(&profile, AVP_APN_CONFIGURATION, V)
                .map(ApnConfiguration::from_avp)
                .collect::<Result<_>>()?,
            periodic_rau_tau_timer: avp::find(&ch, AVP_SUBSCRIBED_PERIODIC_RAU_TAU_TIMER, V)
                .map(Avp::as_u32)
                .transpose()?,
        })
    }
}

/// Update-Location-Answer (TS 29.272 7.2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateLocationAnswer {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub result: ResultCode,
    pub ula_flags: Option<u32>,
    pub subscription: Option<SubscriptionData>,
}

impl UpdateLocationAnswer {
    pub fn to_message(&self, req: &Message) -> Message {
        let mut m = answer_head(
            req,
            &self.session_id,
            self.result,
            &self.origin_host,
            &self.origin_realm,
        );
        if let Some(f) = self.ula_flags {
            m.push(Avp::u32(AVP_ULA_FLAGS, V, f));
        }
        if let Some(s) = &self.subscription {
            m.push(s.to_avp());
            // Also at the ULA's top level, which its ABNF's `*[ AVP ]` admits: MMEs
            // derived from NextEPC 0.3 read the timer only there (and, finding none, drop
            // the whole answer), while 29.272 puts it in Subscription-Data (7.3.2).
            if let Some(t) = s.periodic_rau_tau_timer {
                m.push(Avp::u32(AVP_SUBSCRIBED_PERIODIC_RAU_TAU_TIMER, V, t));
            }
        }
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_UPDATE_LOCATION, false, "ULA")?;
        let h = AnswerHead::parse(m)?;
        let mut subscription = m
            .find(AVP_SUBSCRIPTION_DATA, V)
            .map(SubscriptionData::from_avp)
            .transpose()?;
        // A top-level timer (an HSS of NextEPC's lineage) stands in for a missing one in
        // Subscription-Data.
        if let Some(s) = subscription
            .as_mut()
            .filter(|s| s.periodic_rau_tau_timer.is_none())
        {
            s.periodic_rau_tau_timer = m
                .find(AVP_SUBSCRIBED_PERIODIC_RAU_TAU_TIMER, V)
                .map(Avp::as_u32)
                .transpose()?;
        }
        Ok(UpdateLocationAnswer {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            result: h.result,
            ula_flags: m.find(AVP_ULA_FLAGS, V).map(Avp::as_u32).transpose()?,
            subscription,
        })
    }
}

/// Purge-UE-Request (TS 29.272 7.2.14): the MME removed the UE's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeUeRequest {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_host: Option<String>,
    pub destination_realm: String,
    pub imsi: String,
    /// PUR-Flags, `PUR_FLAG_UE_PURGED_IN_MME` from a combined MME/SGSN; absent otherwise.
    pub pur_flags: Option<u32>,
}

impl PurgeUeRequest {
    pub fn to_message(&self) -> Message {
        let mut m = request_head(
            CMD_PURGE_UE,
            &self.session_id,
            &self.origin_host,
            &self.origin_realm,
            self.destination_host.as_deref(),
            &self.destination_realm,
            &self.imsi,
        );
        if let Some(f) = self.pur_flags {
            m.push(Avp::u32(AVP_PUR_FLAGS, V, f));
        }
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_PURGE_UE, true, "PUR")?;
        let h = RequestHead::parse(m)?;
        Ok(PurgeUeRequest {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            destination_host: h.destination_host,
            destination_realm: h.destination_realm,
            imsi: h.imsi,
            pur_flags: m.find(AVP_PUR_FLAGS, V).map(Avp::as_u32).transpose()?,
        })
    }
}

/// Purge-UE-Answer (TS 29.272 7.2.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeUeAnswer {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub result: ResultCode,
    /// PUA-Flags: `PUA_FLAG_FREEZE_M_TMSI` when the purging MME is the one the HSS records.
    pub pua_flags: Option<u32>,
}

impl PurgeUeAnswer {
    pub fn to_message(&self, req: &Message) -> Message {
        let mut m = answer_head(
            req,
            &self.session_id,
            self.result,
            &self.origin_host,
            &self.origin_realm,
        );
        if let Some(f) = self.pua_flags {
            m.push(Avp::u32(AVP_PUA_FLAGS, V, f));
        }
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_PURGE_UE, false, "PUA")?;
        let h = AnswerHead::parse(m)?;
        Ok(PurgeUeAnswer {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            result: h.result,
            pua_flags: m.find(AVP_PUA_FLAGS, V).map(Avp::as_u32).transpose()?,
        })
    }
}

/// Cancel-Location-Request (TS 29.272 7.2.7), HSS -> MME: the MME must drop the UE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelLocationRequest {
    pub session_id: String,
    /// The HSS.
    pub origin_host: String,
    pub origin_realm: String,
    /// The MME the HSS recorded for the UE (mandatory in a CLR).
    pub destination_host: String,
    pub destination_realm: String,
    pub imsi: String,
    /// `CANCELLATION_TYPE_*`.
    pub cancellation_type: u32,
    /// CLR-Flags (`CLR_FLAG_*`).
    pub clr_flags: Option<u32>,
}

impl CancelLocationRequest {
    pub fn to_message(&self) -> Message {
        let mut m = request_head(
            CMD_CANCEL_LOCATION,
            &self.session_id,
            &self.origin_host,
            &self.origin_realm,
            Some(&self.destination_host),
            &self.destination_realm,
            &self.imsi,
        );
        m.push(Avp::u32(AVP_CANCELLATION_TYPE, V, self.cancellation_type));
        if let Some(f) = self.clr_flags {
            m.push(Avp::u32(AVP_CLR_FLAGS, V, f));
        }
        m
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_CANCEL_LOCATION, true, "CLR")?;
        let h = RequestHead::parse(m)?;
        Ok(CancelLocationRequest {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            destination_host: h
                .destination_host
                .ok_or(Error::MissingAvp("Destination-Host"))?,
            destination_realm: h.destination_realm,
            imsi: h.imsi,
            cancellation_type: m
                .require(AVP_CANCELLATION_TYPE, V, "Cancellation-Type")?
                .as_u32()?,
            clr_flags: m.find(AVP_CLR_FLAGS, V).map(Avp::as_u32).transpose()?,
        })
    }
}

/// Cancel-Location-Answer (TS 29.272 7.2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelLocationAnswer {
    pub session_id: String,
    pub origin_host: String,
    pub origin_realm: String,
    pub result: ResultCode,
}

impl CancelLocationAnswer {
    pub fn to_message(&self, req: &Message) -> Message {
        answer_head(
            req,
            &self.session_id,
            self.result,
            &self.origin_host,
            &self.origin_realm,
        )
    }

    pub fn from_message(m: &Message) -> Result<Self> {
        expect(m, CMD_CANCEL_LOCATION, false, "CLA")?;
        let h = AnswerHead::parse(m)?;
        Ok(CancelLocationAnswer {
            session_id: h.session_id,
            origin_host: h.origin_host,
            origin_realm: h.origin_realm,
            result: h.result,
        })
    }
}

/// Session-Id of any message (S6a requests and answers carry one).
pub fn session_id(m: &Message) -> Result<String> {
    Ok(m.require(AVP_SESSION_ID, 0, "Session-Id")?
        .as_str()?
        .to_string())
}

fn expect(m: &Message, code: u32, request: bool, name: &'static str) -> Result<()> {
    if m.command_code != code || m.is_request() != request {
        return Err(Error::UnexpectedCommand {
            code: m.command_code,
            request: m.is_request(),
            expected: name,
        });
    }
    Ok(())
}

/// The AVPs every S6a request starts with, in the order of the TS 29.272 ABNF.
fn request_head(
    code: u32,
    session_id: &str,
    origin_host: &str,
    origin_realm: &str,
    destination_host: Option<&str>,
    destination_realm: &str,
    imsi: &str,
) -> Message {
    let mut m = Message::request(code, APP_S6A, true)
        .with(Avp::utf8(AVP_SESSION_ID, 0, session_id))
        .with(s6a_vendor_specific_app_id())
        .with(Avp::u32(
            AVP_AUTH_SESSION_STATE,
            0,
            AUTH_SESSION_STATE_NO_STATE_MAINTAINED,
        ))
        .with(Avp::utf8(AVP_ORIGIN_HOST, 0, origin_host))
        .with(Avp::utf8(AVP_ORIGIN_REALM, 0, origin_realm));
    if let Some(h) = destination_host {
        m.push(Avp::utf8(AVP_DESTINATION_HOST, 0, h));
    }
    m.push(Avp::utf8(AVP_DESTINATION_REALM, 0, destination_realm));
    m.push(Avp::utf8(AVP_USER_NAME, 0, imsi));
    m
}

struct RequestHead {
    session_id: String,
    origin_host: String,
    origin_realm: String,
    destination_host: Option<String>,
    destination_realm: String,
    imsi: String,
}

impl RequestHead {
    fn parse(m: &Message) -> Result<Self> {
        let text =
            |code, name| -> Result<String> { Ok(m.require(code, 0, name)?.as_str()?.to_string()) };
        let imsi = text(AVP_USER_NAME, "User-Name")?;
        // TS 23.003 2.2: an IMSI is at most 15 digits; checking here keeps junk out of the HSS.
        if imsi.is_empty() || imsi.len() > 15 || !imsi.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidAvp {
                name: "User-Name",
                reason: format!("{imsi:?} is not an IMSI"),
            });
        }
        Ok(RequestHead {
            session_id: session_id(m)?,
            origin_host: text(AVP_ORIGIN_HOST, "Origin-Host")?,
            origin_realm: text(AVP_ORIGIN_REALM, "Origin-Realm")?,
            destination_host: m
                .find(AVP_DESTINATION_HOST, 0)
                .map(|a| a.as_str().map(str::to_string))
                .transpose()?,
            destination_realm: text(AVP_DESTINATION_REALM, "Destination-Realm")?,
            imsi,
        })
    }
}

fn answer_head(
    req: &Message,
    session_id: &str,
    result: ResultCode,
    origin_host: &str,
    origin_realm: &str,
) -> Message {
    Message::answer_to(req)
        .with(Avp::utf8(AVP_SESSION_ID, 0, session_id))
        .with(s6a_vendor_specific_app_id())
        .with(result.to_avp())
        .with(Avp::u32(
            AVP_AUTH_SESSION_STATE,
            0,
            AUTH_SESSION_STATE_NO_STATE_MAINTAINED,
        ))
        .with(Avp::utf8(AVP_ORIGIN_HOST, 0, origin_host))
        .with(Avp::utf8(AVP_ORIGIN_REALM, 0, origin_realm))
}

struct AnswerHead {
    session_id: String,
    origin_host: String,
    origin_realm: String,
    result: ResultCode,
}

impl AnswerHead {
    fn parse(m: &Message) -> Result<Self> {
        Ok(AnswerHead {
            session_id: session_id(m)?,
            origin_host: m
                .require(AVP_ORIGIN_HOST, 0, "Origin-Host")?
                .as_str()?
                .to_string(),
            origin_realm: m
                .require(AVP_ORIGIN_REALM, 0, "Origin-Realm")?
                .as_str()?
                .to_string(),
            result: ResultCode::from_message(m)?,
        })
    }
}

/// Digits to TBCD: two digits per byte, low nibble first, odd length padded with 0xF
/// (TS 29.002 TBCD-STRING, used by MSISDN).
pub fn tbcd_encode(digits: &str) -> Vec<u8> {
    let d: Vec<u8> = digits
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    d.chunks(2)
        .map(|c| c[0] | (c.get(1).copied().unwrap_or(0xf) << 4))
        .collect()
}

/// TBCD to digits; a filler is only allowed as the last high nibble.
pub fn tbcd_decode(b: &[u8]) -> Result<String> {
    let mut s = String::with_capacity(b.len() * 2);
    for (i, byte) in b.iter().enumerate() {
        let (lo, hi) = (byte & 0x0f, byte >> 4);
        let last = i + 1 == b.len();
        if lo > 9 || (hi > 9 && !(hi == 0xf && last)) {
            return Err(Error::InvalidAvp {
                name: "MSISDN",
                reason: format!("byte {byte:#04x} is not TBCD"),
            });
        }
        s.push(char::from(b'0' + lo));
        if hi <= 9 {
            s.push(char::from(b'0' + hi));
        }
    }
    Ok(s)
}
