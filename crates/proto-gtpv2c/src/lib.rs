//! Sans-IO GTPv2-C (3GPP TS 29.274) for the S11 interface (MME <-> S-GW).
//!
//! Written by hand rather than taken from crates.io: the one fairly complete Rust
//! GTPv2 implementation (`gtp-rs` on GitHub) is not published to crates.io (the
//! crate named `gtp` there is the Go Text Protocol), and what S11 needs here is a
//! small, panic-free subset: Echo, Create Session, Modify Bearer, Delete
//! Session, Release Access Bearers, Downlink Data Notification (with its
//! Acknowledge and Failure Indication), Create Bearer and Delete Bearer, both
//! directions, with the IEs listed in [`ie`], the PCO in [`pco`] and the
//! dedicated bearers' TFT in [`tft`].
//!
//! Decoding: unknown IEs are skipped (TS 29.274 §7.7 error handling), a missing
//! mandatory IE or any malformed/truncated content is `Err`, never a panic.
//! Encoding returns `Err` for values that cannot be represented (non-digit IMSI,
//! APN label over 63 octets, ...).
//!
//! [`transaction`] is the reliable delivery of §7.6 over those messages: request
//! retransmission (T3/N3) and the responder's cache for retransmitted requests.

pub mod ie;
pub mod pco;
pub mod tft;
pub mod transaction;

pub use ie::{
    cause, ie_type, iface, pdn_type, rat_type, Ambr, Arp, BearerContext, BearerQos, Ecgi, Fteid,
    Paa, Plmn, Tai, Uli,
};
pub use pco::Pco;
pub use tft::{PacketFilter, Tft};

use ie::{
    get_apn, get_cause, get_tbcd, get_u8, put_apn, put_cause, put_ie, put_tbcd, put_u8, IeIter,
    RawIe,
};

/// UDP port of GTPv2-C (TS 29.274 §4.2).
pub const GTPC_PORT: u16 = 2123;

/// Message types (TS 29.274 Table 6.1-1).
pub mod msg_type {
    pub const ECHO_REQUEST: u8 = 1;
    pub const ECHO_RESPONSE: u8 = 2;
    pub const CREATE_SESSION_REQUEST: u8 = 32;
    pub const CREATE_SESSION_RESPONSE: u8 = 33;
    pub const MODIFY_BEARER_REQUEST: u8 = 34;
    pub const MODIFY_BEARER_RESPONSE: u8 = 35;
    pub const DELETE_SESSION_REQUEST: u8 = 36;
    pub const DELETE_SESSION_RESPONSE: u8 = 37;
    pub const DOWNLINK_DATA_NOTIFICATION_FAILURE_INDICATION: u8 = 70;
    pub const CREATE_BEARER_REQUEST: u8 = 95;
    pub const CREATE_BEARER_RESPONSE: u8 = 96;
    pub const DELETE_BEARER_REQUEST: u8 = 99;
    pub const DELETE_BEARER_RESPONSE: u8 = 100;
    pub const RELEASE_ACCESS_BEARERS_REQUEST: u8 = 170;
    pub const RELEASE_ACCESS_BEARERS_RESPONSE: u8 = 171;
    pub const DOWNLINK_DATA_NOTIFICATION: u8 = 176;
    pub const DOWNLINK_DATA_NOTIFICATION_ACKNOWLEDGE: u8 = 177;

    /// Whether a message of this type is a request (its peer answers with the same
    /// sequence number); readable from the header alone. The S-GW's requests
    /// (Downlink Data Notification, Create/Delete Bearer) count as much as the
    /// MME's. A Downlink Data Notification Failure Indication is not one: nothing
    /// answers it (Table 6.1-1 gives it no response), it ends the paging the
    /// acknowledged Downlink Data Notification started.
    pub fn is_request(msg_type: u8) -> bool {
        matches!(
            msg_type,
            ECHO_REQUEST
                | CREATE_SESSION_REQUEST
                | MODIFY_BEARER_REQUEST
                | DELETE_SESSION_REQUEST
                | CREATE_BEARER_REQUEST
                | DELETE_BEARER_REQUEST
                | RELEASE_ACCESS_BEARERS_REQUEST
                | DOWNLINK_DATA_NOTIFICATION
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("GTPv2-C message truncated ({0})")]
    Truncated(&'static str),
    #[error("not GTPv2-C (version {0})")]
    BadVersion(u8),
    #[error("GTPv2-C length field {field} exceeds datagram ({available} bytes)")]
    BadLength { field: usize, available: usize },
    #[error("unsupported GTPv2-C message type {0}")]
    UnknownMessageType(u8),
    #[error("malformed IE type {0}: {1}")]
    BadIe(u8, &'static str),
    #[error("mandatory IE type {0} missing")]
    MissingIe(u8),
    #[error("cannot encode: {0}")]
    Encode(&'static str),
    #[error("GTPv2-C message type {0} where {1} was expected")]
    Unexpected(u8, &'static str),
    #[error("{0} GTPv2-C requests already wait for their response")]
    TooManyPending(usize),
}

/// The GTPv2-C header (TS 29.274 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u8,
    /// Present when the T flag is set (all S11 messages except Echo).
    pub teid: Option<u32>,
    /// 24-bit sequence number matching a response to its request.
    pub seq: u32,
    /// Offset of the first IE.
    pub body_offset: usize,
    /// Offset one past this message (a piggybacked message may follow).
    pub end: usize,
}

/// Parses the header only (useful to log or answer a message whose body is bad).
pub fn decode_header(buf: &[u8]) -> Result<Header, Error> {
    let h = buf.get(..4).ok_or(Error::Truncated("header"))?;
    let version = h[0] >> 5;
    if version != 2 {
        return Err(Error::BadVersion(version));
    }
    let has_teid = h[0] & 0x08 != 0;
    let msg_type = h[1];
    let length = u16::from_be_bytes([h[2], h[3]]) as usize;
    // The length counts everything after the first 4 octets.
    let end = 4 + length;
    if end > buf.len() {
        return Err(Error::BadLength {
            field: length,
            available: buf.len() - 4,
        });
    }
    let fixed = if has_teid { 12 } else { 8 };
    if end < fixed {
        return Err(Error::Truncated("header shorter than its flags require"));
    }
    let (teid, seq_off) = if has_teid {
        (
            Some(u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]])),
            8,
        )
    } else {
        (None, 4)
    };
    let s = &buf[seq_off..seq_off + 3];
    Ok(Header {
        msg_type,
        teid,
        seq: u32::from_be_bytes([0, s[0], s[1], s[2]]),
        body_offset: fixed,
        end,
    })
}

/// A GTPv2-C message with its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gtpv2 {
    /// TEID of the receiver's control plane (0 in an initial Create Session Request).
    /// `None` only for Echo, which is sent without TEID.
    pub teid: Option<u32>,
    pub seq: u32,
    pub msg: Message,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    EchoRequest(Echo),
    EchoResponse(Echo),
    CreateSessionRequest(CreateSessionRequest),
    CreateSessionResponse(CreateSessionResponse),
    ModifyBearerRequest(ModifyBearerRequest),
    ModifyBearerResponse(ModifyBearerResponse),
    DeleteSessionRequest(DeleteSessionRequest),
    DeleteSessionResponse(DeleteSessionResponse),
    DownlinkDataNotificationFailureIndication(DownlinkDataNotificationFailureIndication),
    CreateBearerRequest(CreateBearerRequest),
    CreateBearerResponse(CreateBearerResponse),
    DeleteBearerRequest(DeleteBearerRequest),
    DeleteBearerResponse(DeleteBearerResponse),
    ReleaseAccessBearersRequest(ReleaseAccessBearersRequest),
    ReleaseAccessBearersResponse(ReleaseAccessBearersResponse),
    DownlinkDataNotification(DownlinkDataNotification),
    DownlinkDataNotificationAcknowledge(DownlinkDataNotificationAcknowledge),
}

impl Message {
    pub fn msg_type(&self) -> u8 {
        use msg_type::*;
        match self {
            Message::EchoRequest(_) => ECHO_REQUEST,
            Message::EchoResponse(_) => ECHO_RESPONSE,
            Message::CreateSessionRequest(_) => CREATE_SESSION_REQUEST,
            Message::CreateSessionResponse(_) => CREATE_SESSION_RESPONSE,
            Message::ModifyBearerRequest(_) => MODIFY_BEARER_REQUEST,
            Message::ModifyBearerResponse(_) => MODIFY_BEARER_RESPONSE,
            Message::DeleteSessionRequest(_) => DELETE_SESSION_REQUEST,
            Message::DeleteSessionResponse(_) => DELETE_SESSION_RESPONSE,
            Message::DownlinkDataNotificationFailureIndication(_) => {
                DOWNLINK_DATA_NOTIFICATION_FAILURE_INDICATION
            }
            Message::CreateBearerRequest(_) => CREATE_BEARER_REQUEST,
            Message::CreateBearerResponse(_) => CREATE_BEARER_RESPONSE,
            Message::DeleteBearerRequest(_) => DELETE_BEARER_REQUEST,
            Message::DeleteBearerResponse(_) => DELETE_BEARER_RESPONSE,
            Message::ReleaseAccessBearersRequest(_) => RELEASE_ACCESS_BEARERS_REQUEST,
            Message::ReleaseAccessBearersResponse(_) => RELEASE_ACCESS_BEARERS_RESPONSE,
            Message::DownlinkDataNotification(_) => DOWNLINK_DATA_NOTIFICATION,
            Message::DownlinkDataNotificationAcknowledge(_) => {
                DOWNLINK_DATA_NOTIFICATION_ACKNOWLEDGE
            }
        }
    }

    /// The message name as Wireshark prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::EchoRequest(_) => "Echo Request",
            Message::EchoResponse(_) => "Echo Response",
            Message::CreateSessionRequest(_) => "Create Session Request",
            Message::CreateSessionResponse(_) => "Create Session Response",
            Message::ModifyBearerRequest(_) => "Modify Bearer Request",
            Message::ModifyBearerResponse(_) => "Modify Bearer Response",
            Message::DeleteSessionRequest(_) => "Delete Session Request",
            Message::DeleteSessionResponse(_) => "Delete Session Response",
            Message::DownlinkDataNotificationFailureIndication(_) => {
                "Downlink Data Notification Failure Indication"
            }
            Message::CreateBearerRequest(_) => "Create Bearer Request",
            Message::CreateBearerResponse(_) => "Create Bearer Response",
            Message::DeleteBearerRequest(_) => "Delete Bearer Request",
            Message::DeleteBearerResponse(_) => "Delete Bearer Response",
            Message::ReleaseAccessBearersRequest(_) => "Release Access Bearers Request",
            Message::ReleaseAccessBearersResponse(_) => "Release Access Bearers Response",
            Message::DownlinkDataNotification(_) => "Downlink Data Notification",
            Message::DownlinkDataNotificationAcknowledge(_) => {
                "Downlink Data Notification Acknowledgement"
            }
        }
    }

    /// Whether this is a request (the peer must answer with the same sequence number).
    pub fn is_request(&self) -> bool {
        msg_type::is_request(self.msg_type())
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Message::EchoRequest(m) | Message::EchoResponse(m) => m.encode(out),
            Message::DeleteSessionResponse(m)
            | Message::ReleaseAccessBearersResponse(m)
            | Message::DownlinkDataNotificationAcknowledge(m) => m.encode(out),
            Message::CreateSessionRequest(m) => m.encode(out),
            Message::CreateSessionResponse(m) => m.encode(out),
            Message::ModifyBearerRequest(m) => m.encode(out),
            Message::ModifyBearerResponse(m) => m.encode(out),
            Message::DeleteSessionRequest(m) => m.encode(out),
            Message::DownlinkDataNotificationFailureIndication(m) => m.encode(out),
            Message::CreateBearerRequest(m) => m.encode(out),
            Message::CreateBearerResponse(m) => m.encode(out),
            Message::DeleteBearerRequest(m) => m.encode(out),
            Message::DeleteBearerResponse(m) => m.encode(out),
            Message::ReleaseAccessBearersRequest(m) => m.encode(out),
            Message::DownlinkDataNotification(m) => m.encode(out),
        }
    }
}

/// Decodes one GTPv2-C message (a piggybacked second message is ignored).
pub fn decode(buf: &[u8]) -> Result<Gtpv2, Error> {
    let h = decode_header(buf)?;
    let body = &buf[h.body_offset..h.end];
    use msg_type::*;
    let msg = match h.msg_type {
        ECHO_REQUEST => Message::EchoRequest(Echo::decode(body)?),
        ECHO_RESPONSE => Message::EchoResponse(Echo::decode(body)?),
        CREATE_SESSION_REQUEST => {
            Message::CreateSessionRequest(CreateSessionRequest::decode(body)?)
        }
        CREATE_SESSION_RESPONSE => {
            Message::CreateSessionResponse(CreateSessionResponse::decode(body)?)
        }
        MODIFY_BEARER_REQUEST => Message::ModifyBearerRequest(ModifyBearerRequest::decode(body)?),
        MODIFY_BEARER_RESPONSE => {
            Message::ModifyBearerResponse(ModifyBearerResponse::decode(body)?)
        }
        DELETE_SESSION_REQUEST => {
            Message::DeleteSessionRequest(DeleteSessionRequest::decode(body)?)
        }
        DELETE_SESSION_RESPONSE => {
            Message::DeleteSessionResponse(DeleteSessionResponse::decode(body)?)
        }
        DOWNLINK_DATA_NOTIFICATION_FAILURE_INDICATION => {
            Message::DownlinkDataNotificationFailureIndication(
                DownlinkDataNotificationFailureIndication::decode(body)?,
            )
        }
        CREATE_BEARER_REQUEST => Message::CreateBearerRequest(CreateBearerRequest::decode(body)?),
        CREATE_BEARER_RESPONSE => {
            Message::CreateBearerResponse(CreateBearerResponse::decode(body)?)
        }
        DELETE_BEARER_REQUEST => Message::DeleteBearerRequest(DeleteBearerRequest::decode(body)?),
        DELETE_BEARER_RESPONSE => {
            Message::DeleteBearerResponse(DeleteBearerResponse::decode(body)?)
        }
        RELEASE_ACCESS_BEARERS_REQUEST => {
            Message::ReleaseAccessBearersRequest(ReleaseAccessBearersRequest::decode(body)?)
        }
        RELEASE_ACCESS_BEARERS_RESPONSE => {
            Message::ReleaseAccessBearersResponse(ReleaseAccessBearersResponse::decode(body)?)
        }
        DOWNLINK_DATA_NOTIFICATION => {
            Message::DownlinkDataNotification(DownlinkDataNotification::decode(body)?)
        }
        DOWNLINK_DATA_NOTIFICATION_ACKNOWLEDGE => Message::DownlinkDataNotificationAcknowledge(
            DownlinkDataNotificationAcknowledge::decode(body)?,
        ),
        other => return Err(Error::UnknownMessageType(other)),
    };
    Ok(Gtpv2 {
        teid: h.teid,
        seq: h.seq,
        msg,
    })
}

impl Gtpv2 {
    /// Encodes header and body.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        if self.seq > 0x00ff_ffff {
            return Err(Error::Encode("sequence number is 24 bits"));
        }
        let mut out = Vec::with_capacity(128);
        // Version 2, no piggyback, T flag as requested.
        out.push(0x40 | if self.teid.is_some() { 0x08 } else { 0 });
        out.push(self.msg.msg_type());
        out.extend_from_slice(&[0, 0]);
        if let Some(t) = self.teid {
            out.extend_from_slice(&t.to_be_bytes());
        }
        out.extend_from_slice(&self.seq.to_be_bytes()[1..]);
        out.push(0); // spare
        self.msg.encode_body(&mut out)?;
        let len = u16::try_from(out.len() - 4).map_err(|_| Error::Encode("message too long"))?;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }
}

/// Iterates the IEs of a message body, stopping at the first malformed one.
fn each_ie<'a>(
    body: &'a [u8],
    mut f: impl FnMut(RawIe<'a>) -> Result<(), Error>,
) -> Result<(), Error> {
    for ie in IeIter::new(body) {
        f(ie?)?;
    }
    Ok(())
}

fn put_opt<T>(
    out: &mut Vec<u8>,
    v: &Option<T>,
    f: impl FnOnce(&mut Vec<u8>, &T) -> Result<(), Error>,
) -> Result<(), Error> {
    match v {
        Some(v) => f(out, v),
        None => Ok(()),
    }
}

fn put_fteid(out: &mut Vec<u8>, instance: u8, f: &Fteid) -> Result<(), Error> {
    put_ie(out, ie_type::F_TEID, instance, |o| f.encode(o))
}

fn put_uli(out: &mut Vec<u8>, u: &Uli) -> Result<(), Error> {
    put_ie(out, ie_type::ULI, 0, |o| u.encode(o))
}

fn put_bearers(out: &mut Vec<u8>, bcs: &[BearerContext]) -> Result<(), Error> {
    bcs.iter().try_for_each(|b| b.encode(out, 0))
}

fn put_recovery(out: &mut Vec<u8>, recovery: &Option<u8>) -> Result<(), Error> {
    put_opt(out, recovery, |o, v| put_u8(o, ie_type::RECOVERY, 0, *v))
}

fn put_ebis(out: &mut Vec<u8>, instance: u8, ebis: &[u8]) -> Result<(), Error> {
    ebis.iter()
        .try_for_each(|e| put_u8(out, ie_type::EBI, instance, e & 0x0f))
}

// ---------------------------------------------------------------- Echo

/// Echo Request / Response (TS 29.274 §7.1.1, §7.1.2): the sender's Recovery restart counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Echo {
    pub recovery: u8,
}

impl Echo {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_u8(out, ie_type::RECOVERY, 0, self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut recovery = None;
        each_ie(body, |ie| {
            if ie.ty == ie_type::RECOVERY {
                recovery = Some(get_u8(&ie, 0xff)?);
            }
            Ok(())
        })?;
        Ok(Echo {
            recovery: recovery.ok_or(Error::MissingIe(ie_type::RECOVERY))?,
        })
    }
}

// ---------------------------------------------------------------- Create Session

/// Create Session Request (TS 29.274 §7.2.1), MME -> S-GW.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateSessionRequest {
    pub imsi: String,
    pub msisdn: Option<String>,
    pub mei: Option<String>,
    pub uli: Option<Uli>,
    pub serving_network: Option<Plmn>,
    pub rat_type: u8,
    /// Sender F-TEID for control plane (MME S11), instance 0.
    pub sender_fteid: Fteid,
    /// PGW S5/S8 address for control plane, instance 1.
    pub pgw_s5s8_fteid: Option<Fteid>,
    pub apn: String,
    pub selection_mode: Option<u8>,
    pub pdn_type: Option<u8>,
    pub paa: Option<Paa>,
    /// Maximum APN Restriction.
    pub apn_restriction: Option<u8>,
    pub ambr: Option<Ambr>,
    /// Protocol Configuration Options from the UE (e.g. DNS request).
    pub pco: Option<Pco>,
    /// Bearer Contexts to be created (EBI + Bearer QoS).
    pub bearer_contexts: Vec<BearerContext>,
    pub recovery: Option<u8>,
}

impl CreateSessionRequest {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        // IE order follows Table 7.2.1-1.
        put_ie(out, ie_type::IMSI, 0, |o| put_tbcd(o, &self.imsi))?;
        put_opt(out, &self.msisdn, |o, v| {
            put_ie(o, ie_type::MSISDN, 0, |o| put_tbcd(o, v))
        })?;
        put_opt(out, &self.mei, |o, v| {
            put_ie(o, ie_type::MEI, 0, |o| put_tbcd(o, v))
        })?;
        put_opt(out, &self.uli, put_uli)?;
        put_opt(out, &self.serving_network, |o, p| {
            put_ie(o, ie_type::SERVING_NETWORK, 0, |o| {
                o.extend_from_slice(&p.encode()?);
                Ok(())
            })
        })?;
        put_u8(out, ie_type::RAT_TYPE, 0, self.rat_type)?;
        put_fteid(out, 0, &self.sender_fteid)?;
        put_opt(out, &self.pgw_s5s8_fteid, |o, f| put_fteid(o, 1, f))?;
        put_ie(out, ie_type::APN, 0, |o| put_apn(o, &self.apn))?;
        put_opt(out, &self.selection_mode, |o, v| {
            put_u8(o, ie_type::SELECTION_MODE, 0, v & 0x03)
        })?;
        put_opt(out, &self.pdn_type, |o, v| {
            put_u8(o, ie_type::PDN_TYPE, 0, v & 0x07)
        })?;
        put_opt(out, &self.paa, |o, p| {
            put_ie(o, ie_type::PAA, 0, |o| p.encode(o))
        })?;
        put_opt(out, &self.apn_restriction, |o, v| {
            put_u8(o, ie_type::APN_RESTRICTION, 0, *v)
        })?;
        put_opt(out, &self.ambr, |o, a| {
            put_ie(o, ie_type::AMBR, 0, |o| a.encode(o))
        })?;
        put_opt(out, &self.pco, |o, p| {
            put_ie(o, ie_type::PCO, 0, |o| p.encode(o))
        })?;
        put_bearers(out, &self.bearer_contexts)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let (mut imsi, mut msisdn, mut mei, mut uli, mut sn, mut rat) =
            (None, None, None, None, None, None);
        let (mut sender, mut pgw, mut apn, mut sel, mut pdn, mut paa) =
            (None, None, None, None, None, None);
        let (mut restr, mut ambr, mut pco, mut bcs, mut rec) = (None, None, None, Vec::new(), None);
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (IMSI, 0) => imsi = Some(get_tbcd(&ie)?),
                (MSISDN, 0) => msisdn = Some(get_tbcd(&ie)?),
                (MEI, 0) => mei = Some(get_tbcd(&ie)?),
                (ULI, 0) => uli = Some(Uli::decode(&ie)?),
                (SERVING_NETWORK, 0) => sn = Some(Plmn::decode(ie.value, ie.ty)?),
                (RAT_TYPE, 0) => rat = Some(get_u8(&ie, 0xff)?),
                (F_TEID, 0) => sender = Some(Fteid::decode(&ie)?),
                (F_TEID, 1) => pgw = Some(Fteid::decode(&ie)?),
                (APN, 0) => apn = Some(get_apn(&ie)?),
                (SELECTION_MODE, 0) => sel = Some(get_u8(&ie, 0x03)?),
                (PDN_TYPE, 0) => pdn = Some(get_u8(&ie, 0x07)?),
                (PAA, 0) => paa = Some(Paa::decode(&ie)?),
                (APN_RESTRICTION, 0) => restr = Some(get_u8(&ie, 0xff)?),
                (AMBR, 0) => ambr = Some(Ambr::decode(&ie)?),
                (PCO, 0) => pco = Some(Pco::decode(&ie)?),
                (BEARER_CONTEXT, 0) => bcs.push(BearerContext::decode(&ie)?),
                (RECOVERY, 0) => rec = Some(get_u8(&ie, 0xff)?),
                _ => {}
            }
            Ok(())
        })?;
        if bcs.is_empty() {
            return Err(Error::MissingIe(ie_type::BEARER_CONTEXT));
        }
        Ok(CreateSessionRequest {
            imsi: imsi.ok_or(Error::MissingIe(ie_type::IMSI))?,
            msisdn,
            mei,
            uli,
            serving_network: sn,
            rat_type: rat.ok_or(Error::MissingIe(ie_type::RAT_TYPE))?,
            sender_fteid: sender.ok_or(Error::MissingIe(ie_type::F_TEID))?,
            pgw_s5s8_fteid: pgw,
            apn: apn.ok_or(Error::MissingIe(ie_type::APN))?,
            selection_mode: sel,
            pdn_type: pdn,
            paa,
            apn_restriction: restr,
            ambr,
            pco,
            bearer_contexts: bcs,
            recovery: rec,
        })
    }
}

/// Create Session Response (TS 29.274 §7.2.2), S-GW -> MME.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateSessionResponse {
    pub cause: u8,
    /// Sender F-TEID for control plane (S-GW S11), instance 0.
    pub sender_fteid: Option<Fteid>,
    /// PGW S5/S8 F-TEID for control plane, instance 1.
    pub pgw_s5s8_fteid: Option<Fteid>,
    pub paa: Option<Paa>,
    pub apn_restriction: Option<u8>,
    pub ambr: Option<Ambr>,
    /// Protocol Configuration Options for the UE (DNS servers, MTU).
    pub pco: Option<Pco>,
    /// Bearer Contexts created (EBI, Cause, S1-U SGW F-TEID instance 0, Charging ID).
    pub bearer_contexts: Vec<BearerContext>,
    pub recovery: Option<u8>,
}

impl CreateSessionResponse {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_cause(out, self.cause)?;
        put_opt(out, &self.sender_fteid, |o, f| put_fteid(o, 0, f))?;
        put_opt(out, &self.pgw_s5s8_fteid, |o, f| put_fteid(o, 1, f))?;
        put_opt(out, &self.paa, |o, p| {
            put_ie(o, ie_type::PAA, 0, |o| p.encode(o))
        })?;
        put_opt(out, &self.apn_restriction, |o, v| {
            put_u8(o, ie_type::APN_RESTRICTION, 0, *v)
        })?;
        put_opt(out, &self.ambr, |o, a| {
            put_ie(o, ie_type::AMBR, 0, |o| a.encode(o))
        })?;
        put_opt(out, &self.pco, |o, p| {
            put_ie(o, ie_type::PCO, 0, |o| p.encode(o))
        })?;
        put_bearers(out, &self.bearer_contexts)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let (mut cause, mut sender, mut pgw, mut paa, mut restr, mut ambr) =
            (None, None, None, None, None, None);
        let (mut pco, mut bcs, mut rec) = (None, Vec::new(), None);
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (CAUSE, 0) => cause = Some(get_cause(&ie)?),
                (F_TEID, 0) => sender = Some(Fteid::decode(&ie)?),
                (F_TEID, 1) => pgw = Some(Fteid::decode(&ie)?),
                (PAA, 0) => paa = Some(Paa::decode(&ie)?),
                (APN_RESTRICTION, 0) => restr = Some(get_u8(&ie, 0xff)?),
                (AMBR, 0) => ambr = Some(Ambr::decode(&ie)?),
                (PCO, 0) => pco = Some(Pco::decode(&ie)?),
                (BEARER_CONTEXT, 0) => bcs.push(BearerContext::decode(&ie)?),
                (RECOVERY, 0) => rec = Some(get_u8(&ie, 0xff)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(CreateSessionResponse {
            cause: cause.ok_or(Error::MissingIe(ie_type::CAUSE))?,
            sender_fteid: sender,
            pgw_s5s8_fteid: pgw,
            paa,
            apn_restriction: restr,
            ambr,
            pco,
            bearer_contexts: bcs,
            recovery: rec,
        })
    }
}

// ---------------------------------------------------------------- Modify Bearer

/// Modify Bearer Request (TS 29.274 §7.2.7), MME -> S-GW.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyBearerRequest {
    pub uli: Option<Uli>,
    pub serving_network: Option<Plmn>,
    pub rat_type: Option<u8>,
    /// Sender F-TEID for control plane, present when the MME changed.
    pub sender_fteid: Option<Fteid>,
    /// Bearer Contexts to be modified (EBI + S1-U eNB F-TEID instance 0).
    pub bearer_contexts: Vec<BearerContext>,
    pub recovery: Option<u8>,
}

impl ModifyBearerRequest {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_opt(out, &self.uli, put_uli)?;
        put_opt(out, &self.serving_network, |o, p| {
            put_ie(o, ie_type::SERVING_NETWORK, 0, |o| {
                o.extend_from_slice(&p.encode()?);
                Ok(())
            })
        })?;
        put_opt(out, &self.rat_type, |o, v| {
            put_u8(o, ie_type::RAT_TYPE, 0, *v)
        })?;
        put_opt(out, &self.sender_fteid, |o, f| put_fteid(o, 0, f))?;
        put_bearers(out, &self.bearer_contexts)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut m = ModifyBearerRequest::default();
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (ULI, 0) => m.uli = Some(Uli::decode(&ie)?),
                (SERVING_NETWORK, 0) => m.serving_network = Some(Plmn::decode(ie.value, ie.ty)?),
                (RAT_TYPE, 0) => m.rat_type = Some(get_u8(&ie, 0xff)?),
                (F_TEID, 0) => m.sender_fteid = Some(Fteid::decode(&ie)?),
                (BEARER_CONTEXT, 0) => m.bearer_contexts.push(BearerContext::decode(&ie)?),
                (RECOVERY, 0) => m.recovery = Some(get_u8(&ie, 0xff)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// Modify Bearer Response (TS 29.274 §7.2.8), S-GW -> MME.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModifyBearerResponse {
    pub cause: u8,
    pub msisdn: Option<String>,
    /// Bearer Contexts modified (EBI, Cause, S1-U SGW F-TEID instance 0).
    pub bearer_contexts: Vec<BearerContext>,
    pub recovery: Option<u8>,
}

impl ModifyBearerResponse {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_cause(out, self.cause)?;
        put_opt(out, &self.msisdn, |o, v| {
            put_ie(o, ie_type::MSISDN, 0, |o| put_tbcd(o, v))
        })?;
        put_bearers(out, &self.bearer_contexts)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let (mut cause, mut msisdn, mut bcs, mut rec) = (None, None, Vec::new(), None);
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (CAUSE, 0) => cause = Some(get_cause(&ie)?),
                (MSISDN, 0) => msisdn = Some(get_tbcd(&ie)?),
                (BEARER_CONTEXT, 0) => bcs.push(BearerContext::decode(&ie)?),
                (RECOVERY, 0) => rec = Some(get_u8(&ie, 0xff)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(ModifyBearerResponse {
            cause: cause.ok_or(Error::MissingIe(ie_type::CAUSE))?,
            msisdn,
            bearer_contexts: bcs,
            recovery: rec,
        })
    }
}

// ---------------------------------------------------------------- Delete Session

/// Delete Session Request (TS 29.274 §7.2.9.1), MME -> S-GW.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteSessionRequest {
    pub cause: Option<u8>,
    /// Linked EPS Bearer ID: the default bearer of the PDN connection to delete.
    pub linked_ebi: Option<u8>,
    pub uli: Option<Uli>,
    pub sender_fteid: Option<Fteid>,
}

impl DeleteSessionRequest {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_opt(out, &self.cause, |o, c| put_cause(o, *c))?;
        put_ebis(out, 0, self.linked_ebi.as_slice())?;
        put_opt(out, &self.uli, put_uli)?;
        put_opt(out, &self.sender_fteid, |o, f| put_fteid(o, 0, f))
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut m = DeleteSessionRequest::default();
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (CAUSE, 0) => m.cause = Some(get_cause(&ie)?),
                (EBI, 0) => m.linked_ebi = Some(get_u8(&ie, 0x0f)?),
                (ULI, 0) => m.uli = Some(Uli::decode(&ie)?),
                (F_TEID, 0) => m.sender_fteid = Some(Fteid::decode(&ie)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// A Cause and the sender's Recovery: all that is kept of the answers below, one
/// shape for several messages as [`Echo`] is for both of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CauseRecovery {
    pub cause: u8,
    pub recovery: Option<u8>,
}

impl CauseRecovery {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_cause(out, self.cause)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let (mut cause, mut recovery) = (None, None);
        each_ie(body, |ie| {
            match (ie.ty, ie.instance) {
                (ie_type::CAUSE, 0) => cause = Some(get_cause(&ie)?),
                (ie_type::RECOVERY, 0) => recovery = Some(get_u8(&ie, 0xff)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(CauseRecovery {
            cause: cause.ok_or(Error::MissingIe(ie_type::CAUSE))?,
            recovery,
        })
    }
}

/// Delete Session Response (TS 29.274 §7.2.10.1), S-GW -> MME.
pub type DeleteSessionResponse = CauseRecovery;

// ---------------------------------------------------------------- Release Access Bearers

/// Release Access Bearers Request (TS 29.274 §7.2.21), MME -> S-GW on S1 release
/// (UE to ECM-IDLE): the S-GW forgets the eNB's S1-U F-TEIDs. All its IEs are
/// optional and not needed on S11 with one PDN, so none are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReleaseAccessBearersRequest {}

impl ReleaseAccessBearersRequest {
    fn encode(&self, _out: &mut Vec<u8>) -> Result<(), Error> {
        Ok(())
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        // Still walk the IEs so a malformed body is rejected like elsewhere.
        each_ie(body, |_| Ok(()))?;
        Ok(ReleaseAccessBearersRequest {})
    }
}

/// Release Access Bearers Response (TS 29.274 §7.2.22), S-GW -> MME.
pub type ReleaseAccessBearersResponse = CauseRecovery;

// ---------------------------------------------------------------- Downlink Data Notification

/// Downlink Data Notification (TS 29.274 §7.2.11.1), S-GW -> MME: downlink data
/// arrived for a UE in ECM-IDLE (its access bearers released); the MME pages it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DownlinkDataNotification {
    /// Set only when an eNB's Error Indication triggered the notification.
    pub cause: Option<u8>,
    /// The bearers the data arrived on.
    pub ebis: Vec<u8>,
    /// The highest priority (lowest level) ARP among them: paging priority.
    pub arp: Option<Arp>,
}

impl DownlinkDataNotification {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_opt(out, &self.cause, |o, c| put_cause(o, *c))?;
        put_ebis(out, 0, &self.ebis)?;
        put_opt(out, &self.arp, |o, a| {
            put_ie(o, ie_type::ARP, 0, |o| a.encode(o))
        })
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut m = DownlinkDataNotification::default();
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (CAUSE, 0) => m.cause = Some(get_cause(&ie)?),
                (EBI, 0) => m.ebis.push(get_u8(&ie, 0x0f)?),
                (ARP, 0) => m.arp = Some(Arp::decode(&ie)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// Downlink Data Notification Acknowledge (TS 29.274 §7.2.11.2), MME -> S-GW:
/// whether the MME pages the UE.
pub type DownlinkDataNotificationAcknowledge = CauseRecovery;

/// Downlink Data Notification Failure Indication (TS 29.274 §7.2.11.3), MME -> S-GW:
/// the paging the acknowledged notification started failed (e.g. "UE not responding"),
/// so the S-GW may drop what it buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DownlinkDataNotificationFailureIndication {
    pub cause: u8,
}

impl DownlinkDataNotificationFailureIndication {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_cause(out, self.cause)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        // Recovery is not part of this message; like any other IE it is skipped.
        let cause = CauseRecovery::decode(body)?.cause;
        Ok(DownlinkDataNotificationFailureIndication { cause })
    }
}

// ---------------------------------------------------------------- Create Bearer

/// Create Bearer Request (TS 29.274 §7.2.3), S-GW -> MME: a dedicated bearer for
/// the PDN connection of `linked_ebi`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateBearerRequest {
    /// The PDN connection's default bearer.
    pub linked_ebi: u8,
    /// Bearers to create: EBI 0 (the MME assigns it), TFT, S1-U SGW F-TEID
    /// instance 0, Bearer QoS, Charging ID.
    pub bearer_contexts: Vec<BearerContext>,
}

impl CreateBearerRequest {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_ebis(out, 0, &[self.linked_ebi])?;
        put_bearers(out, &self.bearer_contexts)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let (mut linked, mut bcs) = (None, Vec::new());
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (EBI, 0) => linked = Some(get_u8(&ie, 0x0f)?),
                (BEARER_CONTEXT, 0) => bcs.push(BearerContext::decode(&ie)?),
                _ => {}
            }
            Ok(())
        })?;
        if bcs.is_empty() {
            return Err(Error::MissingIe(ie_type::BEARER_CONTEXT));
        }
        Ok(CreateBearerRequest {
            linked_ebi: linked.ok_or(Error::MissingIe(ie_type::EBI))?,
            bearer_contexts: bcs,
        })
    }
}

/// Create Bearer Response (TS 29.274 §7.2.4), MME -> S-GW.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateBearerResponse {
    pub cause: u8,
    /// Per bearer: the EBI the MME assigned, Cause, S1-U eNB F-TEID instance 0 and
    /// S1-U SGW F-TEID instance 1.
    pub bearer_contexts: Vec<BearerContext>,
    pub recovery: Option<u8>,
}

impl CreateBearerResponse {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_cause(out, self.cause)?;
        put_bearers(out, &self.bearer_contexts)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let d = DeleteBearerResponse::decode(body)?;
        if d.bearer_contexts.is_empty() {
            return Err(Error::MissingIe(ie_type::BEARER_CONTEXT));
        }
        // A Linked EBI has no place here; like any unexpected IE it is ignored.
        Ok(CreateBearerResponse {
            cause: d.cause,
            bearer_contexts: d.bearer_contexts,
            recovery: d.recovery,
        })
    }
}

// ---------------------------------------------------------------- Delete Bearer

/// Delete Bearer Request (TS 29.274 §7.2.9.2), S-GW -> MME: either dedicated
/// bearers (`ebis`) or, with `linked_ebi`, the whole PDN connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteBearerRequest {
    /// The default bearer of the PDN connection to release; instance 0.
    pub linked_ebi: Option<u8>,
    /// The dedicated bearers to release; EBI instance 1.
    pub ebis: Vec<u8>,
    pub cause: Option<u8>,
}

impl DeleteBearerRequest {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_ebis(out, 0, self.linked_ebi.as_slice())?;
        put_ebis(out, 1, &self.ebis)?;
        put_opt(out, &self.cause, |o, c| put_cause(o, *c))
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut m = DeleteBearerRequest::default();
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (EBI, 0) => m.linked_ebi = Some(get_u8(&ie, 0x0f)?),
                (EBI, 1) => m.ebis.push(get_u8(&ie, 0x0f)?),
                (CAUSE, 0) => m.cause = Some(get_cause(&ie)?),
                _ => {}
            }
            Ok(())
        })?;
        // One of the two says what to delete (Table 7.2.9.2-1).
        if m.linked_ebi.is_none() && m.ebis.is_empty() {
            return Err(Error::MissingIe(ie_type::EBI));
        }
        Ok(m)
    }
}

/// Delete Bearer Response (TS 29.274 §7.2.10.2), MME -> S-GW.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteBearerResponse {
    pub cause: u8,
    /// Echoes the request's Linked EBI when the whole PDN connection went.
    pub linked_ebi: Option<u8>,
    /// Per dedicated bearer: EBI and Cause.
    pub bearer_contexts: Vec<BearerContext>,
    pub recovery: Option<u8>,
}

impl DeleteBearerResponse {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        put_cause(out, self.cause)?;
        put_ebis(out, 0, self.linked_ebi.as_slice())?;
        put_bearers(out, &self.bearer_contexts)?;
        put_recovery(out, &self.recovery)
    }

    fn decode(body: &[u8]) -> Result<Self, Error> {
        let (mut cause, mut linked, mut bcs, mut rec) = (None, None, Vec::new(), None);
        each_ie(body, |ie| {
            use ie_type::*;
            match (ie.ty, ie.instance) {
                (CAUSE, 0) => cause = Some(get_cause(&ie)?),
                (EBI, 0) => linked = Some(get_u8(&ie, 0x0f)?),
                (BEARER_CONTEXT, 0) => bcs.push(BearerContext::decode(&ie)?),
                (RECOVERY, 0) => rec = Some(get_u8(&ie, 0xff)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(DeleteBearerResponse {
            cause: cause.ok_or(Error::MissingIe(ie_type::CAUSE))?,
            linked_ebi: linked,
            bearer_contexts: bcs,
            recovery: rec,
        })
    }
}

/// Sample messages covering every IE, shared by unit tests and the tshark test.
#[doc(hidden)]
pub mod samples;

#[cfg(test)]
mod tests;
