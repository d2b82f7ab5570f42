//! Base protocol messages (RFC 6733 5): capabilities exchange, watchdog, disconnect; result
//! codes; Session-Id generation. Shared by the client peer and the HSS server.

use crate::avp::{self, Avp};
use crate::codes::*;
use crate::{Error, Message, Result, FLAG_ERROR};
use std::net::IpAddr;

/// Who we are on a Diameter connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub origin_host: String,
    pub origin_realm: String,
    /// Advertised in Host-IP-Address of CER/CEA.
    pub host_ip: IpAddr,
    pub product_name: String,
    /// Origin-State-Id: changes when the node restarts with lost state (RFC 6733 8.16).
    pub origin_state_id: u32,
}

impl Identity {
    fn origin(&self) -> [Avp; 2] {
        [
            Avp::utf8(AVP_ORIGIN_HOST, 0, &self.origin_host),
            Avp::utf8(AVP_ORIGIN_REALM, 0, &self.origin_realm),
        ]
    }
}

/// Vendor-Specific-Application-Id { Vendor-Id 10415, Auth-Application-Id S6a }.
pub fn s6a_vendor_specific_app_id() -> Avp {
    Avp::grouped(
        AVP_VENDOR_SPECIFIC_APPLICATION_ID,
        0,
        &[
            Avp::u32(AVP_VENDOR_ID, 0, VENDOR_3GPP),
            Avp::u32(AVP_AUTH_APPLICATION_ID, 0, APP_S6A),
        ],
    )
}

/// The capability AVPs CER and CEA share, after Origin-Host/Realm.
fn capability_avps(id: &Identity) -> Vec<Avp> {
    vec![
        Avp::address(AVP_HOST_IP_ADDRESS, 0, id.host_ip),
        // Not an IANA-registered vendor: 0 as RFC 6733 allows.
        Avp::u32(AVP_VENDOR_ID, 0, 0),
        // RFC 6733 5.3.7: Product-Name MUST NOT have the M bit.
        Avp::utf8(AVP_PRODUCT_NAME, 0, &id.product_name).optional(),
        Avp::u32(AVP_ORIGIN_STATE_ID, 0, id.origin_state_id),
        Avp::u32(AVP_SUPPORTED_VENDOR_ID, 0, VENDOR_3GPP),
        Avp::u32(AVP_AUTH_APPLICATION_ID, 0, APP_S6A),
        s6a_vendor_specific_app_id(),
    ]
}

/// Capabilities-Exchange-Request advertising S6a.
pub fn cer(id: &Identity) -> Message {
    let mut m = Message::request(CMD_CAPABILITIES_EXCHANGE, APP_COMMON, false);
    m.avps.extend(id.origin());
    m.avps.extend(capability_avps(id));
    m
}

/// Capabilities-Exchange-Answer to `req` with `result_code`.
pub fn cea(req: &Message, id: &Identity, result_code: u32) -> Message {
    let mut m = Message::answer_to(req).with(Avp::u32(AVP_RESULT_CODE, 0, result_code));
    m.avps.extend(id.origin());
    m.avps.extend(capability_avps(id));
    m
}

/// What a CER or CEA tells about the remote peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCapabilities {
    pub origin_host: String,
    pub origin_realm: String,
    pub host_ips: Vec<IpAddr>,
    pub product_name: Option<String>,
    pub origin_state_id: Option<u32>,
    /// Auth-Application-Ids, top-level and inside Vendor-Specific-Application-Id.
    pub auth_app_ids: Vec<u32>,
    /// Result-Code (CEA only).
    pub result_code: Option<u32>,
}

impl PeerCapabilities {
    pub fn from_message(m: &Message) -> Result<Self> {
        if m.command_code != CMD_CAPABILITIES_EXCHANGE {
            return Err(Error::UnexpectedCommand {
                code: m.command_code,
                request: m.is_request(),
                expected: "CER/CEA",
            });
        }
        let mut auth_app_ids = avp::find_all(&m.avps, AVP_AUTH_APPLICATION_ID, 0)
            .map(Avp::as_u32)
            .collect::<Result<Vec<_>>>()?;
        for vsai in avp::find_all(&m.avps, AVP_VENDOR_SPECIFIC_APPLICATION_ID, 0) {
            for a in vsai.children()? {
                if a.code == AVP_AUTH_APPLICATION_ID && a.vendor_id == 0 {
                    auth_app_ids.push(a.as_u32()?);
                }
            }
        }
        Ok(PeerCapabilities {
            origin_host: origin_host(m)?,
            origin_realm: m
                .require(AVP_ORIGIN_REALM, 0, "Origin-Realm")?
                .as_str()?
                .to_string(),
            host_ips: avp::find_all(&m.avps, AVP_HOST_IP_ADDRESS, 0)
                .map(Avp::as_address)
                .collect::<Result<_>>()?,
            product_name: m
                .find(AVP_PRODUCT_NAME, 0)
                .map(|a| a.as_str().map(str::to_string))
                .transpose()?,
            origin_state_id: m
                .find(AVP_ORIGIN_STATE_ID, 0)
                .map(Avp::as_u32)
                .transpose()?,
            auth_app_ids,
            result_code: m.find(AVP_RESULT_CODE, 0).map(Avp::as_u32).transpose()?,
        })
    }

    /// True if the peer advertised S6a (or the relay application 0xffffffff).
    pub fn supports_s6a(&self) -> bool {
        self.auth_app_ids
            .iter()
            .any(|&a| a == APP_S6A || a == 0xffff_ffff)
    }
}

/// Origin-Host of any message, as text.
pub fn origin_host(m: &Message) -> Result<String> {
    Ok(m.require(AVP_ORIGIN_HOST, 0, "Origin-Host")?
        .as_str()?
        .to_string())
}

/// Device-Watchdog-Request.
pub fn dwr(id: &Identity) -> Message {
    let mut m = Message::request(CMD_DEVICE_WATCHDOG, APP_COMMON, false);
    m.avps.extend(id.origin());
    m.push(Avp::u32(AVP_ORIGIN_STATE_ID, 0, id.origin_state_id));
    m
}

/// Device-Watchdog-Answer (always success: answering proves we are alive).
pub fn dwa(req: &Message, id: &Identity) -> Message {
    let mut m = Message::answer_to(req).with(Avp::u32(AVP_RESULT_CODE, 0, DIAMETER_SUCCESS));
    m.avps.extend(id.origin());
    m.push(Avp::u32(AVP_ORIGIN_STATE_ID, 0, id.origin_state_id));
    m
}

/// Disconnect-Peer-Request with a Disconnect-Cause (`DISCONNECT_CAUSE_*`).
pub fn dpr(id: &Identity, cause: u32) -> Message {
    let mut m = Message::request(CMD_DISCONNECT_PEER, APP_COMMON, false);
    m.avps.extend(id.origin());
    m.push(Avp::u32(AVP_DISCONNECT_CAUSE, 0, cause));
    m
}

/// Disconnect-Peer-Answer.
pub fn dpa(req: &Message, id: &Identity) -> Message {
    let mut m = Message::answer_to(req).with(Avp::u32(AVP_RESULT_CODE, 0, DIAMETER_SUCCESS));
    m.avps.extend(id.origin());
    m
}

/// Answer carrying a protocol/permanent failure in Result-Code; 3xxx protocol errors also set
/// the E bit (RFC 6733 7.1.3). The Session-Id of the request is echoed when it had one.
pub fn error_answer(req: &Message, id: &Identity, result_code: u32, text: &str) -> Message {
    let mut m = Message::answer_to(req);
    if (3000..4000).contains(&result_code) {
        m.flags |= FLAG_ERROR;
    }
    if let Some(s) = req.find(AVP_SESSION_ID, 0) {
        m.push(s.clone());
    }
    m.push(Avp::u32(AVP_RESULT_CODE, 0, result_code));
    m.avps.extend(id.origin());
    if !text.is_empty() {
        m.push(error_message(text));
    }
    m
}

/// Error-Message: text for humans, so never mandatory (RFC 6733 7.3).
pub fn error_message(text: &str) -> Avp {
    Avp::utf8(AVP_ERROR_MESSAGE, 0, text).optional()
}

/// The outcome of an answer: Result-Code or Experimental-Result (TS 29.272 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    Base(u32),
    Experimental { vendor: u32, code: u32 },
}

impl ResultCode {
    pub const SUCCESS: ResultCode = ResultCode::Base(DIAMETER_SUCCESS);
    pub const USER_UNKNOWN: ResultCode = ResultCode::Experimental {
        vendor: VENDOR_3GPP,
        code: DIAMETER_ERROR_USER_UNKNOWN,
    };

    /// Reads Result-Code, else Experimental-Result, from an answer.
    pub fn from_message(m: &Message) -> Result<Self> {
        if let Some(rc) = m.find(AVP_RESULT_CODE, 0) {
            return Ok(ResultCode::Base(rc.as_u32()?));
        }
        let er = m.require(
            AVP_EXPERIMENTAL_RESULT,
            0,
            "Result-Code or Experimental-Result",
        )?;
        let ch = er.children()?;
        Ok(ResultCode::Experimental {
            vendor: avp::require(&ch, AVP_VENDOR_ID, 0, "Vendor-Id")?.as_u32()?,
            code: avp::require(
                &ch,
                AVP_EXPERIMENTAL_RESULT_CODE,
                0,
                "Experimental-Result-Code",
            )?
            .as_u32()?,
        })
    }

    pub fn to_avp(self) -> Avp {
        match self {
            ResultCode::Base(c) => Avp::u32(AVP_RESULT_CODE, 0, c),
            ResultCode::Experimental { vendor, code } => Avp::grouped(
                AVP_EXPERIMENTAL_RESULT,
                0,
                &[
                    Avp::u32(AVP_VENDOR_ID, 0, vendor),
                    Avp::u32(AVP_EXPERIMENTAL_RESULT_CODE, 0, code),
                ],
            ),
        }
    }

    /// 2xxx in either form.
    pub fn is_success(self) -> bool {
        let c = match self {
            ResultCode::Base(c) | ResultCode::Experimental { code: c, .. } => c,
        };
        (2000..3000).contains(&c)
    }
}

/// Session-Id generator: "<DiameterIdentity>;<high 32 bits>;<low 32 bits>" (RFC 6733 8.8).
/// `high` should differ across restarts (e.g. Origin-State-Id) so ids stay unique.
#[derive(Debug, Clone)]
pub struct SessionIds {
    host: String,
    high: u32,
    low: u32,
}

impl SessionIds {
    pub fn new(origin_host: &str, high: u32) -> Self {
        SessionIds {
            host: origin_host.to_string(),
            high,
            low: 0,
        }
    }

    pub fn next_id(&mut self) -> String {
        self.low = self.low.wrapping_add(1);
        format!("{};{};{}", self.host, self.high, self.low)
    }
}
