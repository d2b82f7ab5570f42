//! AVPs (RFC 6733 4): header with optional Vendor-ID, data, padding to 32 bits, grouped AVPs.

use crate::{Error, Result};
use std::net::IpAddr;

pub const FLAG_VENDOR: u8 = 0x80;
pub const FLAG_MANDATORY: u8 = 0x40;
pub const FLAG_PROTECTED: u8 = 0x20;

/// One AVP. `data` is the raw value (a grouped AVP keeps its encoded children; use
/// [`Avp::children`] to decode them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avp {
    pub code: u32,
    pub flags: u8,
    /// 0 when the V bit is clear.
    pub vendor_id: u32,
    pub data: Vec<u8>,
}

impl Avp {
    /// Raw AVP; `vendor` 0 means no Vendor-ID field. `mandatory` sets the M bit.
    pub fn new(code: u32, vendor: u32, mandatory: bool, data: Vec<u8>) -> Self {
        let mut flags = if mandatory { FLAG_MANDATORY } else { 0 };
        if vendor != 0 {
            flags |= FLAG_VENDOR;
        }
        Avp {
            code,
            flags,
            vendor_id: vendor,
            data,
        }
    }

    pub fn u32(code: u32, vendor: u32, v: u32) -> Self {
        Self::new(code, vendor, true, v.to_be_bytes().to_vec())
    }

    pub fn u64(code: u32, vendor: u32, v: u64) -> Self {
        Self::new(code, vendor, true, v.to_be_bytes().to_vec())
    }

    pub fn octets(code: u32, vendor: u32, v: &[u8]) -> Self {
        Self::new(code, vendor, true, v.to_vec())
    }

    /// UTF8String / DiameterIdentity.
    pub fn utf8(code: u32, vendor: u32, v: &str) -> Self {
        Self::new(code, vendor, true, v.as_bytes().to_vec())
    }

    /// Address type: 2-byte IANA address family then the address (RFC 6733 4.3.1).
    pub fn address(code: u32, vendor: u32, ip: IpAddr) -> Self {
        let mut d = Vec::with_capacity(18);
        match ip {
            IpAddr::V4(a) => {
                d.extend_from_slice(&1u16.to_be_bytes());
                d.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                d.extend_from_slice(&2u16.to_be_bytes());
                d.extend_from_slice(&a.octets());
            }
        }
        Self::new(code, vendor, true, d)
    }

    pub fn grouped(code: u32, vendor: u32, children: &[Avp]) -> Self {
        let mut d = Vec::new();
        for c in children {
            c.encode_into(&mut d);
        }
        Self::new(code, vendor, true, d)
    }

    /// Clears the M bit (for AVPs RFC 6733 says must not have it, e.g. Product-Name).
    pub fn optional(mut self) -> Self {
        self.flags &= !FLAG_MANDATORY;
        self
    }

    pub fn is_mandatory(&self) -> bool {
        self.flags & FLAG_MANDATORY != 0
    }

    /// Header length: 8, or 12 with a Vendor-ID.
    fn header_len(&self) -> usize {
        if self.flags & FLAG_VENDOR != 0 {
            12
        } else {
            8
        }
    }

    /// Length as written in the AVP header (without padding).
    pub fn len(&self) -> usize {
        self.header_len() + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.code.to_be_bytes());
        out.push(self.flags);
        out.extend_from_slice(&(self.len() as u32).to_be_bytes()[1..]);
        if self.flags & FLAG_VENDOR != 0 {
            out.extend_from_slice(&self.vendor_id.to_be_bytes());
        }
        out.extend_from_slice(&self.data);
        out.resize(out.len() + pad(self.data.len()), 0);
    }

    pub fn as_u32(&self) -> Result<u32> {
        let b: [u8; 4] = self
            .data
            .as_slice()
            .try_into()
            .map_err(|_| self.size_err("4"))?;
        Ok(u32::from_be_bytes(b))
    }

    pub fn as_u64(&self) -> Result<u64> {
        let b: [u8; 8] = self
            .data
            .as_slice()
            .try_into()
            .map_err(|_| self.size_err("8"))?;
        Ok(u64::from_be_bytes(b))
    }

    pub fn as_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.data).map_err(|_| Error::AvpUtf8 { code: self.code })
    }

    /// Fixed-size octet string (RAND, AUTN, KASME, PLMN id ...).
    pub fn as_array<const N: usize>(&self) -> Result<[u8; N]> {
        self.data.as_slice().try_into().map_err(|_| Error::AvpSize {
            code: self.code,
            len: self.data.len(),
            expected: "a fixed size",
        })
    }

    pub fn as_address(&self) -> Result<IpAddr> {
        match self.data.as_slice() {
            [0, 1, a, b, c, d] => Ok(IpAddr::from([*a, *b, *c, *d])),
            [0, 2, rest @ ..] if rest.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rest);
                Ok(IpAddr::from(o))
            }
            _ => Err(self.size_err("6 (IPv4) or 18 (IPv6)")),
        }
    }

    /// Decodes the children of a grouped AVP.
    pub fn children(&self) -> Result<Vec<Avp>> {
        decode_all(&self.data)
    }

    fn size_err(&self, expected: &'static str) -> Error {
        Error::AvpSize {
            code: self.code,
            len: self.data.len(),
            expected,
        }
    }
}

/// Padding after `n` data bytes to reach a 32-bit boundary.
fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Decodes a sequence of AVPs filling all of `buf` (a message body or grouped AVP data).
/// Grouped AVPs are decoded lazily by [`Avp::children`], driven by the S6a parsers that know
/// which AVPs are grouped, so input never controls recursion depth.
pub(crate) fn decode_all(mut buf: &[u8]) -> Result<Vec<Avp>> {
    let mut avps = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 8 {
            return Err(Error::Truncated {
                need: 8,
                have: buf.len(),
            });
        }
        let code = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let hdr = if flags & FLAG_VENDOR != 0 { 12 } else { 8 };
        if len < hdr || len > buf.len() {
            return Err(Error::BadAvpLength { code, len });
        }
        let vendor_id = if hdr == 12 {
            u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]])
        } else {
            0
        };
        let data = buf[hdr..len].to_vec();
        // Padding is always present on the wire, but accept a final unpadded AVP as Wireshark
        // does (some peers emit it).
        let padded = (len + pad(len)).min(buf.len());
        buf = &buf[padded..];
        avps.push(Avp {
            code,
            flags,
            vendor_id,
            data,
        });
    }
    Ok(avps)
}

/// First AVP with `code`/`vendor` in a list.
pub fn find(avps: &[Avp], code: u32, vendor: u32) -> Option<&Avp> {
    avps.iter()
        .find(|a| a.code == code && a.vendor_id == vendor)
}

/// All AVPs with `code`/`vendor`.
pub fn find_all(avps: &[Avp], code: u32, vendor: u32) -> impl Iterator<Item = &Avp> {
    avps.iter()
        .filter(move |a| a.code == code && a.vendor_id == vendor)
}

/// Required AVP in a list (typically the children of a grouped AVP).
pub fn require<'a>(avps: &'a [Avp], code: u32, vendor: u32, name: &'static str) -> Result<&'a Avp> {
    find(avps, code, vendor).ok_or(Error::MissingAvp(name))
}
