//! IPv4 ICMP echo helpers (the RAN emulator pings through GTP-U tunnels).
//!
//! Built on `etherparse` so checksums (IPv4 header and ICMP) are computed by a
//! well-tested implementation rather than by hand here.

use std::net::Ipv4Addr;

use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::Error;

/// Default TTL of the packets we build.
const TTL: u8 = 64;

/// Whether an echo is a request or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoKind {
    Request,
    Reply,
}

/// A parsed IPv4 ICMP echo request or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpEcho {
    pub kind: EchoKind,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub id: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
}

impl IcmpEcho {
    /// Encodes as a complete IPv4 packet with valid checksums.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let ip = PacketBuilder::ipv4(self.src.octets(), self.dst.octets(), TTL);
        let b = match self.kind {
            EchoKind::Request => ip.icmpv4_echo_request(self.id, self.seq),
            EchoKind::Reply => ip.icmpv4_echo_reply(self.id, self.seq),
        };
        let mut out = Vec::with_capacity(b.size(self.payload.len()));
        b.write(&mut out, &self.payload)
            .map_err(|e| Error::BadIcmp(e.to_string()))?;
        Ok(out)
    }

    /// The reply a host would send to this request (addresses swapped, same id/seq/payload).
    pub fn reply(&self) -> IcmpEcho {
        IcmpEcho {
            kind: EchoKind::Reply,
            src: self.dst,
            dst: self.src,
            id: self.id,
            seq: self.seq,
            payload: self.payload.clone(),
        }
    }
}

/// Builds an IPv4 ICMP echo request packet.
pub fn echo_request(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    IcmpEcho {
        kind: EchoKind::Request,
        src,
        dst,
        id,
        seq,
        payload: payload.to_vec(),
    }
    .encode()
}

/// Parses an IPv4 packet that must be an ICMP echo request or reply.
pub fn parse_echo(packet: &[u8]) -> Result<IcmpEcho, Error> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| Error::BadIcmp(e.to_string()))?;
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        return Err(Error::BadIcmp("not IPv4".into()));
    };
    let Some(TransportSlice::Icmpv4(icmp)) = &sliced.transport else {
        return Err(Error::BadIcmp("not ICMPv4".into()));
    };
    let (kind, hdr) = match icmp.icmp_type() {
        Icmpv4Type::EchoRequest(h) => (EchoKind::Request, h),
        Icmpv4Type::EchoReply(h) => (EchoKind::Reply, h),
        other => return Err(Error::BadIcmp(format!("not an echo: {other:?}"))),
    };
    Ok(IcmpEcho {
        kind,
        src: ip.header().source_addr(),
        dst: ip.header().destination_addr(),
        id: hdr.id,
        seq: hdr.seq,
        payload: icmp.payload().to_vec(),
    })
}

/// Destination address of an IPv4 packet (the S-GW routes downlink packets by it).
pub fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    ipv4_addr_at(packet, 16)
}

/// Source address of an IPv4 packet.
pub fn ipv4_source(packet: &[u8]) -> Option<Ipv4Addr> {
    ipv4_addr_at(packet, 12)
}

fn ipv4_addr_at(packet: &[u8], off: usize) -> Option<Ipv4Addr> {
    // Only look at well-formed-enough IPv4 headers: version 4 and IHL >= 5.
    let first = *packet.first()?;
    if first >> 4 != 4 || (first & 0x0f) < 5 {
        return None;
    }
    let a = packet.get(off..off + 4)?;
    Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip_and_reply() {
        let src = Ipv4Addr::new(10, 45, 0, 2);
        let dst = Ipv4Addr::new(10, 45, 0, 1);
        let p = echo_request(src, dst, 0x42, 1, b"hello").unwrap();
        assert_eq!(ipv4_destination(&p), Some(dst));
        assert_eq!(ipv4_source(&p), Some(src));
        let e = parse_echo(&p).unwrap();
        assert_eq!(e.kind, EchoKind::Request);
        assert_eq!((e.src, e.dst, e.id, e.seq), (src, dst, 0x42, 1));
        assert_eq!(e.payload, b"hello");
        let r = parse_echo(&e.reply().encode().unwrap()).unwrap();
        assert_eq!(r.kind, EchoKind::Reply);
        assert_eq!((r.src, r.dst), (dst, src));
    }

    #[test]
    fn garbage_is_err() {
        assert!(parse_echo(&[]).is_err());
        assert!(parse_echo(&[0x45; 30]).is_err());
        assert_eq!(ipv4_destination(&[0x60; 40]), None);
        assert_eq!(ipv4_destination(&[0x45; 10]), None);
    }
}
