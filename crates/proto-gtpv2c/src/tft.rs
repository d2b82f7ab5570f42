//! Traffic Flow Template (TS 24.008 §10.5.6.12), carried from octet 3 on by the
//! GTPv2-C Bearer TFT IE (TS 29.274 §8.19): which packets a dedicated bearer
//! carries. Only what a network-initiated dedicated bearer needs here: the
//! "create new TFT" operation, no parameters list, and packet filters made of an
//! IPv4 remote address, a protocol and a single remote port.

use std::net::Ipv4Addr;

use crate::ie::RawIe;
use crate::Error;

/// Packet filter directions (TS 24.008 §10.5.6.12, octet 4 bits 5-6).
pub mod direction {
    pub const DOWNLINK: u8 = 1;
    pub const UPLINK: u8 = 2;
    pub const BIDIRECTIONAL: u8 = 3;
}

const OP_CREATE_NEW: u8 = 1;
/// Packet filter component type identifiers (TS 24.008 Table 10.5.162).
const IPV4_REMOTE_ADDRESS: u8 = 0x10;
const PROTOCOL: u8 = 0x30;
const SINGLE_REMOTE_PORT: u8 = 0x50;

/// A new TFT: its packet filters, 1 to 15 of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tft {
    pub filters: Vec<PacketFilter>,
}

/// One packet filter; the components present must all match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketFilter {
    /// 0..=15, unique within the TFT.
    pub id: u8,
    /// See [`direction`].
    pub direction: u8,
    /// Evaluation precedence among all the UE's filters: lower goes first.
    pub precedence: u8,
    /// The network-side address and its mask.
    pub remote: Option<(Ipv4Addr, Ipv4Addr)>,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: Option<u8>,
    pub remote_port: Option<u16>,
}

impl Tft {
    /// The TFT value of TS 24.008 §10.5.6.12 from octet 3: what the Bearer TFT IE
    /// carries, and the NAS Traffic flow template IE of the ACTIVATE DEDICATED EPS
    /// BEARER CONTEXT REQUEST alike.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let n = u8::try_from(self.filters.len())
            .ok()
            .filter(|n| (1..=15).contains(n))
            .ok_or(Error::Encode("a new TFT has 1..15 packet filters"))?;
        out.push(OP_CREATE_NEW << 5 | n);
        for f in &self.filters {
            if f.id > 0x0f || f.direction > 0x03 {
                return Err(Error::Encode("packet filter id is 4 bits, direction 2"));
            }
            out.extend_from_slice(&[f.direction << 4 | f.id, f.precedence, 0]);
            let start = out.len();
            if let Some((addr, mask)) = f.remote {
                out.push(IPV4_REMOTE_ADDRESS);
                out.extend_from_slice(&addr.octets());
                out.extend_from_slice(&mask.octets());
            }
            if let Some(p) = f.protocol {
                out.extend_from_slice(&[PROTOCOL, p]);
            }
            if let Some(p) = f.remote_port {
                out.push(SINGLE_REMOTE_PORT);
                out.extend_from_slice(&p.to_be_bytes());
            }
            // A filter without components would match every packet: not allowed.
            if out.len() == start {
                return Err(Error::Encode("packet filter without components"));
            }
            out[start - 1] = (out.len() - start) as u8; // at most 14 octets
        }
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Tft, Error> {
        let bad = |why| Error::BadIe(ie.ty, why);
        let (&h, mut b) = ie.value.split_first().ok_or(bad("empty TFT"))?;
        if h >> 5 != OP_CREATE_NEW {
            return Err(bad("TFT operation other than create new"));
        }
        if h & 0x10 != 0 {
            return Err(bad("TFT parameters list not supported"));
        }
        let n = h & 0x0f;
        if n == 0 {
            return Err(bad("new TFT without packet filters"));
        }
        let mut tft = Tft::default();
        for _ in 0..n {
            let [id, precedence, len, rest @ ..] = b else {
                return Err(bad("packet filter truncated"));
            };
            let len = *len as usize;
            let contents = rest
                .get(..len)
                .ok_or(bad("packet filter length exceeds IE"))?;
            b = &rest[len..];
            let mut f = PacketFilter {
                id: id & 0x0f,
                direction: (id >> 4) & 0x03,
                precedence: *precedence,
                ..Default::default()
            };
            f.decode_components(contents)
                .ok_or(bad("unsupported or truncated packet filter component"))?;
            tft.filters.push(f);
        }
        if !b.is_empty() {
            return Err(bad("octets after the last packet filter"));
        }
        Ok(tft)
    }
}

impl PacketFilter {
    /// `None` on an empty list or a component this codec does not know: their
    /// lengths are implied by their type, so the rest cannot be skipped.
    fn decode_components(&mut self, mut c: &[u8]) -> Option<()> {
        if c.is_empty() {
            return None;
        }
        while let Some((&ty, rest)) = c.split_first() {
            c = match (ty, rest) {
                (IPV4_REMOTE_ADDRESS, [a, b, c, d, m0, m1, m2, m3, rest @ ..]) => {
                    let addr = Ipv4Addr::new(*a, *b, *c, *d);
                    self.remote = Some((addr, Ipv4Addr::new(*m0, *m1, *m2, *m3)));
                    rest
                }
                (PROTOCOL, [p, rest @ ..]) => {
                    self.protocol = Some(*p);
                    rest
                }
                (SINGLE_REMOTE_PORT, [hi, lo, rest @ ..]) => {
                    self.remote_port = Some(u16::from_be_bytes([*hi, *lo]));
                    rest
                }
                _ => return None,
            };
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: &[u8]) -> RawIe<'_> {
        RawIe {
            ty: 84,
            instance: 0,
            value,
        }
    }

    #[test]
    fn known_bytes() {
        // One bidirectional filter, id 1, precedence 10: 10.45.0.1/32, UDP, port 5001.
        let tft = Tft {
            filters: vec![PacketFilter {
                id: 1,
                direction: direction::BIDIRECTIONAL,
                precedence: 10,
                remote: Some((Ipv4Addr::new(10, 45, 0, 1), Ipv4Addr::BROADCAST)),
                protocol: Some(17),
                remote_port: Some(5001),
            }],
        };
        let mut b = Vec::new();
        tft.encode(&mut b).unwrap();
        #[rustfmt::skip]
        let want = [
            0x21, // create new TFT, E=0, 1 filter
            0x31, 10, 14,
            0x10, 10, 45, 0, 1, 255, 255, 255, 255,
            0x30, 17,
            0x50, 0x13, 0x89,
        ];
        assert_eq!(b, want);
        assert_eq!(Tft::decode(&raw(&b)).unwrap(), tft);
    }

    #[test]
    fn bad_input_is_err() {
        for v in [
            &[][..],
            &[0x20],                           // no filters
            &[0x41, 0x31, 10, 2, 0x30, 17],    // "add packet filters"
            &[0x31, 0x31, 10, 2, 0x30, 17],    // E bit: parameters list
            &[0x21, 0x31, 10, 3, 0x30, 17],    // length past the IE
            &[0x21, 0x31, 10, 0],              // filter without components
            &[0x21, 0x31, 10, 2, 0x40, 17],    // single local port: unknown here
            &[0x21, 0x31, 10, 2, 0x50, 17],    // port truncated
            &[0x22, 0x31, 10, 2, 0x30, 17],    // two announced, one present
            &[0x21, 0x31, 10, 2, 0x30, 17, 0], // trailing octet
        ] {
            assert!(Tft::decode(&raw(v)).is_err(), "{v:?}");
        }
        let empty = PacketFilter::default();
        let mut b = Vec::new();
        assert!(Tft::default().encode(&mut b).is_err());
        assert!(Tft {
            filters: vec![empty]
        }
        .encode(&mut b)
        .is_err());
        let f = PacketFilter {
            id: 16,
            protocol: Some(6),
            ..empty
        };
        assert!(Tft { filters: vec![f] }.encode(&mut b).is_err());
    }
}
