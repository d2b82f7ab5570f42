//! GTPv2-C information elements (TS 29.274 §8) used on S11.
//!
//! Every IE is `type (1) | length (2) | spare (4 bits) + instance (4 bits) | value`.
//! Value decoders take the exact value slice and return `Err` on any malformed
//! content; the IE walker checks each length against the enclosing buffer first.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::tft::Tft;
use crate::Error;

/// IE type codes (TS 29.274 Table 8.1-1).
pub mod ie_type {
    pub const IMSI: u8 = 1;
    pub const CAUSE: u8 = 2;
    pub const RECOVERY: u8 = 3;
    pub const APN: u8 = 71;
    pub const AMBR: u8 = 72;
    pub const EBI: u8 = 73;
    pub const MEI: u8 = 75;
    pub const MSISDN: u8 = 76;
    pub const PCO: u8 = 78;
    pub const PAA: u8 = 79;
    pub const BEARER_QOS: u8 = 80;
    pub const BEARER_TFT: u8 = 84;
    pub const RAT_TYPE: u8 = 82;
    pub const SERVING_NETWORK: u8 = 83;
    pub const ULI: u8 = 86;
    pub const F_TEID: u8 = 87;
    pub const BEARER_CONTEXT: u8 = 93;
    pub const CHARGING_ID: u8 = 94;
    pub const PDN_TYPE: u8 = 99;
    pub const APN_RESTRICTION: u8 = 127;
    pub const SELECTION_MODE: u8 = 128;
    pub const ARP: u8 = 155;
}

/// Cause values (TS 29.274 Table 8.4-1) used by this core.
pub mod cause {
    /// In a Downlink Data Notification: an eNB's Error Indication caused it.
    pub const ERROR_INDICATION_RECEIVED: u8 = 6;
    pub const REQUEST_ACCEPTED: u8 = 16;
    /// Accepted, but with another PDN type than asked (e.g. IPv4 for IPv4v6).
    pub const NEW_PDN_TYPE_NETWORK_PREFERENCE: u8 = 18;
    /// Accepted, IPv4v6 asked, but only one address type per bearer allowed.
    pub const NEW_PDN_TYPE_SINGLE_ADDRESS_BEARER_ONLY: u8 = 19;
    pub const CONTEXT_NOT_FOUND: u8 = 64;
    pub const INVALID_MESSAGE_FORMAT: u8 = 65;
    pub const MANDATORY_IE_INCORRECT: u8 = 69;
    pub const MANDATORY_IE_MISSING: u8 = 70;
    pub const SYSTEM_FAILURE: u8 = 72;
    pub const NO_RESOURCES_AVAILABLE: u8 = 73;
    pub const ALL_DYNAMIC_ADDRESSES_OCCUPIED: u8 = 84;
    pub const PREFERRED_PDN_TYPE_NOT_SUPPORTED: u8 = 83;
    /// Paging failed (Downlink Data Notification Failure Indication).
    pub const UE_NOT_RESPONDING: u8 = 87;
    /// The MME will not page (Downlink Data Notification Acknowledge).
    pub const UNABLE_TO_PAGE_UE: u8 = 90;

    /// Values 16..=63 are acceptances of some kind (TS 29.274 §8.4).
    pub fn is_accepted(c: u8) -> bool {
        (16..64).contains(&c)
    }
}

/// F-TEID interface types (TS 29.274 §8.22) used by this core.
pub mod iface {
    pub const S1U_ENODEB: u8 = 0;
    pub const S1U_SGW: u8 = 1;
    pub const S5S8_SGW_GTPU: u8 = 4;
    pub const S5S8_PGW_GTPU: u8 = 5;
    pub const S5S8_SGW_GTPC: u8 = 6;
    pub const S5S8_PGW_GTPC: u8 = 7;
    pub const S11_MME: u8 = 10;
    pub const S11S4_SGW: u8 = 11;
}

/// RAT type values (TS 29.274 §8.17).
pub mod rat_type {
    pub const EUTRAN: u8 = 6;
}

/// PDN type / PAA type values (TS 29.274 §8.34).
pub mod pdn_type {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
    pub const IPV4V6: u8 = 3;
}

/// A raw IE as found on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawIe<'a> {
    pub ty: u8,
    pub instance: u8,
    pub value: &'a [u8],
}

/// Iterates IEs of a message body or grouped IE; yields `Err` once on truncation.
pub(crate) struct IeIter<'a> {
    buf: &'a [u8],
}

impl<'a> IeIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
}

impl<'a> Iterator for IeIter<'a> {
    type Item = Result<RawIe<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(h) = self.buf.get(..4) else {
            self.buf = &[];
            return Some(Err(Error::Truncated("IE header")));
        };
        let (ty, len, instance) = (h[0], u16::from_be_bytes([h[1], h[2]]) as usize, h[3] & 0x0f);
        let Some(value) = self.buf.get(4..4 + len) else {
            self.buf = &[];
            return Some(Err(Error::BadIe(ty, "length exceeds message")));
        };
        self.buf = &self.buf[4 + len..];
        Some(Ok(RawIe {
            ty,
            instance,
            value,
        }))
    }
}

/// Appends one IE; `f` writes the value. Fails if the value exceeds 65535 bytes.
pub(crate) fn put_ie(
    out: &mut Vec<u8>,
    ty: u8,
    instance: u8,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[ty, 0, 0, instance & 0x0f]);
    f(out)?;
    let len = out.len() - start - 4;
    let len16 = u16::try_from(len).map_err(|_| Error::Encode("IE longer than 65535 bytes"))?;
    out[start + 1..start + 3].copy_from_slice(&len16.to_be_bytes());
    Ok(())
}

pub(crate) fn put_u8(out: &mut Vec<u8>, ty: u8, instance: u8, v: u8) -> Result<(), Error> {
    put_ie(out, ty, instance, |o| {
        o.push(v);
        Ok(())
    })
}

pub(crate) fn put_u32(out: &mut Vec<u8>, ty: u8, instance: u8, v: u32) -> Result<(), Error> {
    put_ie(out, ty, instance, |o| {
        o.extend_from_slice(&v.to_be_bytes());
        Ok(())
    })
}

/// First octet of a 1-octet IE (RAT type, Recovery, APN restriction, ...).
/// Only the low `mask` bits are significant; the rest is spare.
pub(crate) fn get_u8(ie: &RawIe, mask: u8) -> Result<u8, Error> {
    ie.value
        .first()
        .map(|b| b & mask)
        .ok_or(Error::BadIe(ie.ty, "empty"))
}

pub(crate) fn get_u32(ie: &RawIe) -> Result<u32, Error> {
    let v = ie
        .value
        .get(..4)
        .ok_or(Error::BadIe(ie.ty, "shorter than 4 octets"))?;
    Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

// ---------------------------------------------------------------- TBCD digits

/// Encodes a digit string as TBCD (TS 29.274 §8.3: IMSI, MSISDN, MEI).
pub(crate) fn put_tbcd(out: &mut Vec<u8>, digits: &str) -> Result<(), Error> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Encode("TBCD string must be 1+ decimal digits"));
    }
    for pair in digits.as_bytes().chunks(2) {
        let lo = pair[0] - b'0';
        // An odd number of digits is padded with the filler 0xF.
        let hi = pair.get(1).map_or(0x0f, |d| d - b'0');
        out.push(hi << 4 | lo);
    }
    Ok(())
}

pub(crate) fn get_tbcd(ie: &RawIe) -> Result<String, Error> {
    let mut s = String::with_capacity(ie.value.len() * 2);
    let n = ie.value.len();
    for (i, b) in ie.value.iter().enumerate() {
        for (k, d) in [b & 0x0f, b >> 4].into_iter().enumerate() {
            match d {
                0..=9 => s.push(char::from(b'0' + d)),
                // Filler is only allowed as the very last nibble.
                0x0f if i + 1 == n && k == 1 => {}
                _ => return Err(Error::BadIe(ie.ty, "non-decimal TBCD digit")),
            }
        }
    }
    if s.is_empty() {
        return Err(Error::BadIe(ie.ty, "empty digit string"));
    }
    Ok(s)
}

// ---------------------------------------------------------------- APN

/// Encodes an APN as DNS labels (TS 23.003 §9.1).
pub(crate) fn put_apn(out: &mut Vec<u8>, apn: &str) -> Result<(), Error> {
    if apn.is_empty() {
        return Err(Error::Encode("empty APN"));
    }
    for label in apn.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or(Error::Encode("APN label must be 1..63 octets"))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    Ok(())
}

pub(crate) fn get_apn(ie: &RawIe) -> Result<String, Error> {
    let mut b = ie.value;
    let mut labels = Vec::new();
    while let Some((&len, rest)) = b.split_first() {
        let len = len as usize;
        let label = rest
            .get(..len)
            .filter(|l| !l.is_empty())
            .ok_or(Error::BadIe(ie.ty, "bad APN label length"))?;
        labels.push(std::str::from_utf8(label).map_err(|_| Error::BadIe(ie.ty, "APN not UTF-8"))?);
        b = &rest[len..];
    }
    if labels.is_empty() {
        return Err(Error::BadIe(ie.ty, "empty APN"));
    }
    Ok(labels.join("."))
}

// ---------------------------------------------------------------- PLMN, ULI

/// A PLMN identity (MCC + MNC), encoded as in TS 24.008 §10.5.1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Plmn {
    pub mcc: u16,
    pub mnc: u16,
    /// Whether the MNC has 3 digits (e.g. "001" vs "01").
    pub mnc_3_digits: bool,
}

impl Plmn {
    /// The lab's PLMN 001/01.
    pub const TEST: Plmn = Plmn {
        mcc: 1,
        mnc: 1,
        mnc_3_digits: false,
    };

    pub(crate) fn encode(&self) -> Result<[u8; 3], Error> {
        if self.mcc > 999 || self.mnc > if self.mnc_3_digits { 999 } else { 99 } {
            return Err(Error::Encode("PLMN digits out of range"));
        }
        let d = |v: u16, p: u32| (v / 10u16.pow(p) % 10) as u8;
        let (m1, m2, m3) = (d(self.mcc, 2), d(self.mcc, 1), d(self.mcc, 0));
        let (n1, n2, n3) = if self.mnc_3_digits {
            (d(self.mnc, 2), d(self.mnc, 1), d(self.mnc, 0))
        } else {
            (d(self.mnc, 1), d(self.mnc, 0), 0x0f)
        };
        Ok([m2 << 4 | m1, n3 << 4 | m3, n2 << 4 | n1])
    }

    pub(crate) fn decode(b: &[u8], ty: u8) -> Result<Plmn, Error> {
        let b = b.get(..3).ok_or(Error::BadIe(ty, "PLMN truncated"))?;
        let digit = |x: u8| {
            if x <= 9 {
                Ok(x as u16)
            } else {
                Err(Error::BadIe(ty, "non-decimal PLMN digit"))
            }
        };
        let mcc = digit(b[0] & 0x0f)? * 100 + digit(b[0] >> 4)? * 10 + digit(b[1] & 0x0f)?;
        let (n1, n2) = (digit(b[2] & 0x0f)?, digit(b[2] >> 4)?);
        let (mnc, mnc_3_digits) = if b[1] >> 4 == 0x0f {
            (n1 * 10 + n2, false)
        } else {
            (n1 * 100 + n2 * 10 + digit(b[1] >> 4)?, true)
        };
        Ok(Plmn {
            mcc,
            mnc,
            mnc_3_digits,
        })
    }
}

/// Tracking Area Identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tai {
    pub plmn: Plmn,
    pub tac: u16,
}

/// E-UTRAN Cell Global Identifier (28-bit ECI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecgi {
    pub plmn: Plmn,
    pub eci: u32,
}

/// User Location Information (TS 29.274 §8.21); only TAI and ECGI are kept,
/// other location types present on input are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uli {
    pub tai: Option<Tai>,
    pub ecgi: Option<Ecgi>,
}

const ULI_CGI: u8 = 0x01;
const ULI_SAI: u8 = 0x02;
const ULI_RAI: u8 = 0x04;
const ULI_TAI: u8 = 0x08;
const ULI_ECGI: u8 = 0x10;

impl Uli {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let flags = self.tai.map_or(0, |_| ULI_TAI) | self.ecgi.map_or(0, |_| ULI_ECGI);
        out.push(flags);
        if let Some(t) = self.tai {
            out.extend_from_slice(&t.plmn.encode()?);
            out.extend_from_slice(&t.tac.to_be_bytes());
        }
        if let Some(e) = self.ecgi {
            if e.eci > 0x0fff_ffff {
                return Err(Error::Encode("ECI is 28 bits"));
            }
            out.extend_from_slice(&e.plmn.encode()?);
            out.extend_from_slice(&e.eci.to_be_bytes());
        }
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Uli, Error> {
        let (&flags, mut b) = ie.value.split_first().ok_or(Error::BadIe(ie.ty, "empty"))?;
        // CGI, SAI and RAI (7 octets each) precede TAI on the wire; skip them.
        for f in [ULI_CGI, ULI_SAI, ULI_RAI] {
            if flags & f != 0 {
                b = b.get(7..).ok_or(Error::BadIe(ie.ty, "truncated"))?;
            }
        }
        let mut uli = Uli::default();
        if flags & ULI_TAI != 0 {
            let t = b.get(..5).ok_or(Error::BadIe(ie.ty, "TAI truncated"))?;
            uli.tai = Some(Tai {
                plmn: Plmn::decode(t, ie.ty)?,
                tac: u16::from_be_bytes([t[3], t[4]]),
            });
            b = &b[5..];
        }
        if flags & ULI_ECGI != 0 {
            let e = b.get(..7).ok_or(Error::BadIe(ie.ty, "ECGI truncated"))?;
            uli.ecgi = Some(Ecgi {
                plmn: Plmn::decode(e, ie.ty)?,
                eci: u32::from_be_bytes([e[3], e[4], e[5], e[6]]) & 0x0fff_ffff,
            });
        }
        Ok(uli)
    }
}

// ---------------------------------------------------------------- F-TEID

/// Fully qualified TEID (TS 29.274 §8.22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fteid {
    /// Interface type, see [`iface`].
    pub iface: u8,
    pub teid: u32,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Fteid {
    pub fn v4(iface: u8, teid: u32, addr: Ipv4Addr) -> Self {
        Fteid {
            iface,
            teid,
            ipv4: Some(addr),
            ipv6: None,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.iface > 0x3f {
            return Err(Error::Encode("F-TEID interface type is 6 bits"));
        }
        let flags =
            (self.ipv4.is_some() as u8) << 7 | (self.ipv6.is_some() as u8) << 6 | self.iface;
        out.push(flags);
        out.extend_from_slice(&self.teid.to_be_bytes());
        if let Some(a) = self.ipv4 {
            out.extend_from_slice(&a.octets());
        }
        if let Some(a) = self.ipv6 {
            out.extend_from_slice(&a.octets());
        }
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Fteid, Error> {
        let v = ie.value;
        let h = v.get(..5).ok_or(Error::BadIe(ie.ty, "truncated"))?;
        let flags = h[0];
        let teid = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        let mut off = 5;
        let ipv4 = if flags & 0x80 != 0 {
            let a = v
                .get(off..off + 4)
                .ok_or(Error::BadIe(ie.ty, "IPv4 truncated"))?;
            off += 4;
            Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            None
        };
        let ipv6 = if flags & 0x40 != 0 {
            let a = v
                .get(off..off + 16)
                .ok_or(Error::BadIe(ie.ty, "IPv6 truncated"))?;
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            Some(Ipv6Addr::from(o))
        } else {
            None
        };
        Ok(Fteid {
            iface: flags & 0x3f,
            teid,
            ipv4,
            ipv6,
        })
    }
}

// ---------------------------------------------------------------- PAA

/// PDN Address Allocation (TS 29.274 §8.14). The IPv6 part is the prefix length
/// and 16 octets holding the prefix (a /64 on E-UTRAN) and, in its low 64 bits,
/// the interface identifier the UE gets in NAS; `::` with length 0 in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paa {
    Ipv4(Ipv4Addr),
    Ipv6 {
        prefix_len: u8,
        addr: Ipv6Addr,
    },
    Ipv4v6 {
        prefix_len: u8,
        v6: Ipv6Addr,
        v4: Ipv4Addr,
    },
}

impl Paa {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Paa::Ipv4(a) => {
                out.push(pdn_type::IPV4);
                out.extend_from_slice(&a.octets());
            }
            Paa::Ipv6 { prefix_len, .. } | Paa::Ipv4v6 { prefix_len, .. } if *prefix_len > 128 => {
                return Err(Error::Encode("IPv6 prefix length over 128"));
            }
            Paa::Ipv6 { prefix_len, addr } => {
                out.push(pdn_type::IPV6);
                out.push(*prefix_len);
                out.extend_from_slice(&addr.octets());
            }
            Paa::Ipv4v6 { prefix_len, v6, v4 } => {
                out.push(pdn_type::IPV4V6);
                out.push(*prefix_len);
                out.extend_from_slice(&v6.octets());
                out.extend_from_slice(&v4.octets());
            }
        }
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Paa, Error> {
        let (&t, v) = ie.value.split_first().ok_or(Error::BadIe(ie.ty, "empty"))?;
        let trunc = Error::BadIe(ie.ty, "truncated");
        if matches!(t & 0x07, pdn_type::IPV6 | pdn_type::IPV4V6) && v.first() > Some(&128) {
            return Err(Error::BadIe(ie.ty, "IPv6 prefix length over 128"));
        }
        let v6 = |b: &[u8]| {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ipv6Addr::from(o)
        };
        match t & 0x07 {
            pdn_type::IPV4 => {
                let a = v.get(..4).ok_or(trunc)?;
                Ok(Paa::Ipv4(Ipv4Addr::new(a[0], a[1], a[2], a[3])))
            }
            pdn_type::IPV6 => {
                let a = v.get(..17).ok_or(trunc)?;
                Ok(Paa::Ipv6 {
                    prefix_len: a[0],
                    addr: v6(&a[1..17]),
                })
            }
            pdn_type::IPV4V6 => {
                let a = v.get(..21).ok_or(trunc)?;
                Ok(Paa::Ipv4v6 {
                    prefix_len: a[0],
                    v6: v6(&a[1..17]),
                    v4: Ipv4Addr::new(a[17], a[18], a[19], a[20]),
                })
            }
            _ => Err(Error::BadIe(ie.ty, "unknown PDN type")),
        }
    }

    /// The IPv4 address, if this allocation has one.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self {
            Paa::Ipv4(a) | Paa::Ipv4v6 { v4: a, .. } => Some(*a),
            Paa::Ipv6 { .. } => None,
        }
    }

    /// The IPv6 prefix (with interface identifier) and its length, if any.
    pub fn ipv6(&self) -> Option<(Ipv6Addr, u8)> {
        match self {
            Paa::Ipv6 { prefix_len, addr }
            | Paa::Ipv4v6 {
                prefix_len,
                v6: addr,
                ..
            } => Some((*addr, *prefix_len)),
            Paa::Ipv4(_) => None,
        }
    }
}

// ---------------------------------------------------------------- AMBR, QoS

/// Aggregate Maximum Bit Rate in kbit/s (TS 29.274 §8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambr {
    pub uplink_kbps: u32,
    pub downlink_kbps: u32,
}

impl Ambr {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&self.uplink_kbps.to_be_bytes());
        out.extend_from_slice(&self.downlink_kbps.to_be_bytes());
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Ambr, Error> {
        let v = ie.value.get(..8).ok_or(Error::BadIe(ie.ty, "truncated"))?;
        Ok(Ambr {
            uplink_kbps: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            downlink_kbps: u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
        })
    }
}

/// Allocation/Retention Priority (TS 29.274 §8.86); the same octet opens Bearer QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// Pre-emption capability: true means the bearer may NOT pre-empt (PCI=1).
    pub pci: bool,
    /// Priority level 1..15.
    pub priority_level: u8,
    /// Pre-emption vulnerability: true means the bearer may NOT be pre-empted (PVI=1).
    pub pvi: bool,
}

impl Arp {
    fn octet(&self) -> Result<u8, Error> {
        if self.priority_level > 15 {
            return Err(Error::Encode("ARP priority level is 4 bits"));
        }
        Ok((self.pci as u8) << 6 | self.priority_level << 2 | self.pvi as u8)
    }

    fn from_octet(b: u8) -> Arp {
        Arp {
            pci: b & 0x40 != 0,
            priority_level: (b >> 2) & 0x0f,
            pvi: b & 0x01 != 0,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.push(self.octet()?);
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Arp, Error> {
        get_u8(ie, 0xff).map(Arp::from_octet)
    }
}

/// Bearer Level QoS (TS 29.274 §8.15); bit rates in kbit/s (40-bit fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BearerQos {
    /// Pre-emption capability: true means the bearer may NOT pre-empt (PCI=1).
    pub pci: bool,
    /// ARP priority level 1..15.
    pub priority_level: u8,
    /// Pre-emption vulnerability: true means the bearer may NOT be pre-empted (PVI=1).
    pub pvi: bool,
    pub qci: u8,
    pub mbr_uplink: u64,
    pub mbr_downlink: u64,
    pub gbr_uplink: u64,
    pub gbr_downlink: u64,
}

impl BearerQos {
    /// A default non-GBR bearer: QCI 9, ARP priority 8, no pre-emption either way.
    pub fn default_bearer() -> Self {
        BearerQos {
            pci: true,
            priority_level: 8,
            pvi: true,
            qci: 9,
            mbr_uplink: 0,
            mbr_downlink: 0,
            gbr_uplink: 0,
            gbr_downlink: 0,
        }
    }

    /// The bearer's ARP, e.g. for a Downlink Data Notification.
    pub fn arp(&self) -> Arp {
        Arp {
            pci: self.pci,
            priority_level: self.priority_level,
            pvi: self.pvi,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        const MAX40: u64 = (1 << 40) - 1;
        let rates = [
            self.mbr_uplink,
            self.mbr_downlink,
            self.gbr_uplink,
            self.gbr_downlink,
        ];
        if rates.iter().any(|&r| r > MAX40) {
            return Err(Error::Encode("Bearer QoS bit rate over 40 bits"));
        }
        out.push(self.arp().octet()?);
        out.push(self.qci);
        for r in rates {
            out.extend_from_slice(&r.to_be_bytes()[3..]);
        }
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<BearerQos, Error> {
        let v = ie.value.get(..22).ok_or(Error::BadIe(ie.ty, "truncated"))?;
        let rate = |i: usize| {
            let mut b = [0u8; 8];
            b[3..].copy_from_slice(&v[i..i + 5]);
            u64::from_be_bytes(b)
        };
        let Arp {
            pci,
            priority_level,
            pvi,
        } = Arp::from_octet(v[0]);
        Ok(BearerQos {
            pci,
            priority_level,
            pvi,
            qci: v[1],
            mbr_uplink: rate(2),
            mbr_downlink: rate(7),
            gbr_uplink: rate(12),
            gbr_downlink: rate(17),
        })
    }
}

// ---------------------------------------------------------------- Cause

pub(crate) fn put_cause(out: &mut Vec<u8>, c: u8) -> Result<(), Error> {
    put_ie(out, ie_type::CAUSE, 0, |o| {
        // Second octet: spare | PCE | BCE | CS, all zero: the cause originates here.
        o.extend_from_slice(&[c, 0]);
        Ok(())
    })
}

pub(crate) fn get_cause(ie: &RawIe) -> Result<u8, Error> {
    // Length is 2, or 6 with an offending IE appended (which we do not need).
    match ie.value {
        [c, _, ..] => Ok(*c),
        _ => Err(Error::BadIe(ie.ty, "shorter than 2 octets")),
    }
}

// ---------------------------------------------------------------- Bearer Context

/// A Bearer Context grouped IE (TS 29.274 §8.28). The same shape serves every
/// message; which F-TEID instance means what is given per message in Tables
/// 7.2.1-2 (CSReq: instance 0 = S1-U eNB), 7.2.2-2 (CSResp: 0 = S1-U SGW,
/// 2 = S5/S8-U PGW), 7.2.3-2 (CBReq: 0 = S1-U SGW, 1 = S5/S8-U PGW), 7.2.4-2
/// (CBResp: 0 = S1-U eNB, 1 = S1-U SGW), 7.2.7-2 (MBReq: 0 = S1-U eNB) and
/// 7.2.8-2 (MBResp: 0 = S1-U SGW).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerContext {
    pub ebi: u8,
    pub cause: Option<u8>,
    /// (instance, F-TEID) pairs in wire order.
    pub fteids: Vec<(u8, Fteid)>,
    pub qos: Option<BearerQos>,
    pub charging_id: Option<u32>,
    /// The dedicated bearer's packet filters (Create Bearer Request).
    pub tft: Option<Tft>,
}

impl BearerContext {
    /// The F-TEID carried with the given IE instance.
    pub fn fteid(&self, instance: u8) -> Option<&Fteid> {
        self.fteids
            .iter()
            .find(|(i, _)| *i == instance)
            .map(|(_, f)| f)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>, instance: u8) -> Result<(), Error> {
        put_ie(out, ie_type::BEARER_CONTEXT, instance, |o| {
            put_u8(o, ie_type::EBI, 0, self.ebi & 0x0f)?;
            if let Some(c) = self.cause {
                put_cause(o, c)?;
            }
            if let Some(t) = &self.tft {
                put_ie(o, ie_type::BEARER_TFT, 0, |o| t.encode(o))?;
            }
            for (inst, f) in &self.fteids {
                put_ie(o, ie_type::F_TEID, *inst, |o| f.encode(o))?;
            }
            if let Some(q) = &self.qos {
                put_ie(o, ie_type::BEARER_QOS, 0, |o| q.encode(o))?;
            }
            if let Some(c) = self.charging_id {
                put_u32(o, ie_type::CHARGING_ID, 0, c)?;
            }
            Ok(())
        })
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<BearerContext, Error> {
        let mut bc = BearerContext::default();
        let mut ebi = None;
        for sub in IeIter::new(ie.value) {
            let sub = sub?;
            match sub.ty {
                ie_type::EBI => ebi = Some(get_u8(&sub, 0x0f)?),
                ie_type::CAUSE => bc.cause = Some(get_cause(&sub)?),
                ie_type::BEARER_TFT => bc.tft = Some(Tft::decode(&sub)?),
                ie_type::F_TEID => bc.fteids.push((sub.instance, Fteid::decode(&sub)?)),
                ie_type::BEARER_QOS => bc.qos = Some(BearerQos::decode(&sub)?),
                ie_type::CHARGING_ID => bc.charging_id = Some(get_u32(&sub)?),
                _ => {} // unknown IEs inside the group are skipped (TS 29.274 §7.7)
            }
        }
        bc.ebi = ebi.ok_or(Error::MissingIe(ie_type::EBI))?;
        Ok(bc)
    }
}
