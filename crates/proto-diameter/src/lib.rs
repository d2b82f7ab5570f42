//! Sans-IO Diameter for corehop: the RFC 6733 codec (header, AVPs, stream framing), the base
//! protocol messages (CER/CEA, DWR/DWA, DPR/DPA), typed S6a messages (TS 29.272: AIR/AIA,
//! ULR/ULA, PUR/PUA, CLR/CLA) and the two peer state machines: the client the MME drives from
//! its own I/O loop, the server the HSS runs for each connection. Either end may send
//! application requests (the HSS sends CLR on the MME's connection).
//!
//! Why not the `diameter` crate from crates.io: it is not sans-IO (its transport pulls tokio and
//! native-tls/OpenSSL), keeps its dictionary in a global loaded from XML, and has no S6a
//! grouped AVPs; its `DiameterServer` hands every request, CER and DWR included, to one
//! callback, so the base protocol of a server would be ours to write anyway. What S6a needs
//! from a codec and the two peers is small enough to own and test here.
//!
//! Nothing in this crate does I/O; decoders return [`Error`] on any malformed input and never
//! panic.

pub mod avp;
pub mod base;
pub mod codes;
mod link;
mod outstanding;
pub mod peer;
pub mod s6a;
pub mod server;

pub use avp::Avp;
pub use peer::{ClientPeer, PeerConfig, PeerEvent, PeerState};
pub use server::{NotOpen, ServerConfig, ServerEvent, ServerPeer, ServerState};

use std::fmt;

/// Diameter header length (RFC 6733 3).
pub const HEADER_LEN: usize = 20;
/// Upper bound on one message; Diameter allows 2^24-1 but S6a messages are a few hundred bytes,
/// and a bound keeps a hostile length field from making us buffer 16 MiB per connection.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Command flags (RFC 6733 3).
pub const FLAG_REQUEST: u8 = 0x80;
pub const FLAG_PROXIABLE: u8 = 0x40;
pub const FLAG_ERROR: u8 = 0x20;
pub const FLAG_RETRANSMIT: u8 = 0x10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated Diameter data: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported Diameter version {0} (only version 1 exists)")]
    BadVersion(u8),
    #[error(
        "bad Diameter message length {0} (must be 20..={MAX_MESSAGE_LEN} and a multiple of 4)"
    )]
    BadMessageLength(usize),
    #[error("reserved command flag bits set: {0:#04x}")]
    BadFlags(u8),
    #[error("bad length {len} in AVP {code}")]
    BadAvpLength { code: u32, len: usize },
    #[error("AVP {code} has {len} bytes, expected {expected}")]
    AvpSize {
        code: u32,
        len: usize,
        expected: &'static str,
    },
    #[error("AVP {code} is not valid UTF-8")]
    AvpUtf8 { code: u32 },
    #[error("missing mandatory AVP {0}")]
    MissingAvp(&'static str),
    #[error("invalid value in AVP {name}: {reason}")]
    InvalidAvp { name: &'static str, reason: String },
    #[error("unexpected command {code} (request={request}) where {expected} was expected")]
    UnexpectedCommand {
        code: u32,
        request: bool,
        expected: &'static str,
    },
}

impl Error {
    /// The Result-Code answering a well-framed request whose AVPs failed to parse with this
    /// error (RFC 6733 7.1.5).
    pub fn result_code(&self) -> u32 {
        match self {
            Error::MissingAvp(_) => codes::DIAMETER_MISSING_AVP,
            _ => codes::DIAMETER_INVALID_AVP_VALUE,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One Diameter message: the header fields plus the top-level AVPs in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub flags: u8,
    pub command_code: u32,
    pub application_id: u32,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
    pub avps: Vec<Avp>,
}

impl Message {
    /// A request with zero ids; the peer state machine assigns hop-by-hop / end-to-end ids.
    pub fn request(command_code: u32, application_id: u32, proxiable: bool) -> Self {
        let flags = FLAG_REQUEST | if proxiable { FLAG_PROXIABLE } else { 0 };
        Message {
            flags,
            command_code,
            application_id,
            hop_by_hop: 0,
            end_to_end: 0,
            avps: vec![],
        }
    }

    /// An empty answer to `req`: same command, application and ids, R cleared, P kept
    /// (RFC 6733 6.2).
    pub fn answer_to(req: &Message) -> Self {
        Message {
            flags: req.flags & FLAG_PROXIABLE,
            command_code: req.command_code,
            application_id: req.application_id,
            hop_by_hop: req.hop_by_hop,
            end_to_end: req.end_to_end,
            avps: vec![],
        }
    }

    pub fn is_request(&self) -> bool {
        self.flags & FLAG_REQUEST != 0
    }

    pub fn is_error(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }

    pub fn with(mut self, avp: Avp) -> Self {
        self.avps.push(avp);
        self
    }

    pub fn push(&mut self, avp: Avp) {
        self.avps.push(avp);
    }

    /// First top-level AVP with this code and vendor (0 = no vendor).
    pub fn find(&self, code: u32, vendor: u32) -> Option<&Avp> {
        avp::find(&self.avps, code, vendor)
    }

    /// Like [`find`](Self::find) but a missing AVP is an error naming it.
    pub fn require(&self, code: u32, vendor: u32, name: &'static str) -> Result<&Avp> {
        self.find(code, vendor).ok_or(Error::MissingAvp(name))
    }

    /// Serialises header and AVPs; the length field is computed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&[1, 0, 0, 0]); // version, length placeholder
        out.push(self.flags);
        out.extend_from_slice(&self.command_code.to_be_bytes()[1..]);
        out.extend_from_slice(&self.application_id.to_be_bytes());
        out.extend_from_slice(&self.hop_by_hop.to_be_bytes());
        out.extend_from_slice(&self.end_to_end.to_be_bytes());
        for a in &self.avps {
            a.encode_into(&mut out);
        }
        let len = (out.len() as u32).to_be_bytes();
        out[1..4].copy_from_slice(&len[1..]);
        out
    }

    /// Parses exactly one message occupying all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let len = message_length(buf)?.ok_or(Error::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        })?;
        if buf.len() != len {
            return Err(Error::Truncated {
                need: len,
                have: buf.len(),
            });
        }
        let flags = buf[4];
        if flags & 0x0f != 0 {
            return Err(Error::BadFlags(flags));
        }
        // An answer cannot be a retransmission, and an error bit on a request is invalid
        // (RFC 6733 3: "E" is only set on answers).
        if flags & FLAG_REQUEST != 0 && flags & FLAG_ERROR != 0 {
            return Err(Error::BadFlags(flags));
        }
        Ok(Message {
            flags,
            command_code: u32::from_be_bytes([0, buf[5], buf[6], buf[7]]),
            application_id: be32(&buf[8..12]),
            hop_by_hop: be32(&buf[12..16]),
            end_to_end: be32(&buf[16..20]),
            avps: avp::decode_all(&buf[HEADER_LEN..])?,
        })
    }

    /// A short name for logs ("CER", "AIA", ...).
    pub fn name(&self) -> CommandName {
        CommandName {
            code: self.command_code,
            request: self.is_request(),
        }
    }
}

/// Display helper naming a command like Wireshark's abbreviations.
#[derive(Debug, Clone, Copy)]
pub struct CommandName {
    code: u32,
    request: bool,
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = match self.code {
            codes::CMD_CAPABILITIES_EXCHANGE => "CE",
            codes::CMD_DEVICE_WATCHDOG => "DW",
            codes::CMD_DISCONNECT_PEER => "DP",
            codes::CMD_UPDATE_LOCATION => "UL",
            codes::CMD_AUTHENTICATION_INFORMATION => "AI",
            codes::CMD_CANCEL_LOCATION => "CL",
            codes::CMD_PURGE_UE => "PU",
            other => {
                return write!(
                    f,
                    "cmd{}{}",
                    other,
                    if self.request { "-req" } else { "-ans" }
                )
            }
        };
        write!(f, "{}{}", base, if self.request { "R" } else { "A" })
    }
}

/// Length of the message starting at `buf` once its header is complete (`Ok(None)` before),
/// after validating version and length so a stream reader never waits on garbage.
pub fn message_length(buf: &[u8]) -> Result<Option<usize>> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != 1 {
        return Err(Error::BadVersion(buf[0]));
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) || len % 4 != 0 {
        return Err(Error::BadMessageLength(len));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    Ok(Some(len))
}

/// Reassembles messages from a byte stream (TCP delivers arbitrary fragments).
/// After an `Err` the stream is out of sync and the connection should be closed.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>> {
        match message_length(&self.buf)? {
            Some(len) if self.buf.len() >= len => {
                let msg = Message::decode(&self.buf[..len]);
                self.buf.drain(..len);
                msg.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Bytes received but not yet forming a full message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tshark_tests;
