//! ICMP echo helpers, IPv4 (ICMP) and IPv6 (ICMPv6), the addresses of an inner IP
//! packet by its version (the RAN emulator pings through GTP-U tunnels, the S-GW routes
//! downlink by destination), and the Router Solicitation / Advertisement by which a
//! P-GW gives an IPv6 UE its /64 (TS 29.061 §11.2.1.3.2, RFC 4861).
//!
//! Built on `etherparse` so checksums (IPv4 header and ICMP) are computed by a
//! well-tested implementation rather than by hand here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::Error;

/// Default TTL (hop limit) of the packets we build.
const TTL: u8 = 64;

/// Whether an echo is a request or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoKind {
    Request,
    Reply,
}

/// A parsed ICMP (IPv4) or ICMPv6 (IPv6) echo request or reply; both addresses are
/// of the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpEcho {
    pub kind: EchoKind,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u16,
    pub seq: u16,
    pub payload: Vec<u8>,
}

impl IcmpEcho {
    /// Encodes as a complete IP packet with valid checksums (ICMPv6's covers the
    /// pseudo-header).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let written = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ip = PacketBuilder::ipv4(s.octets(), d.octets(), TTL);
                match self.kind {
                    EchoKind::Request => ip.icmpv4_echo_request(self.id, self.seq),
                    EchoKind::Reply => ip.icmpv4_echo_reply(self.id, self.seq),
                }
                .write(&mut out, &self.payload)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ip = PacketBuilder::ipv6(s.octets(), d.octets(), TTL);
                match self.kind {
                    EchoKind::Request => ip.icmpv6_echo_request(self.id, self.seq),
                    EchoKind::Reply => ip.icmpv6_echo_reply(self.id, self.seq),
                }
                .write(&mut out, &self.payload)
            }
            _ => {
                return Err(Error::BadIcmp(
                    "source and destination of different IP versions".into(),
                ))
            }
        };
        written.map_err(|e| Error::BadIcmp(e.to_string()))?;
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

/// Builds an ICMP echo request packet, IPv4 or IPv6 by the addresses.
pub fn echo_request(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    IcmpEcho {
        kind: EchoKind::Request,
        src: src.into(),
        dst: dst.into(),
        id,
        seq,
        payload: payload.to_vec(),
    }
    .encode()
}

/// Parses an IP packet that must be an ICMP (IPv4) or ICMPv6 (IPv6) echo request or reply.
pub fn parse_echo(packet: &[u8]) -> Result<IcmpEcho, Error> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| Error::BadIcmp(e.to_string()))?;
    let (src, dst) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        _ => return Err(Error::BadIcmp("not IP".into())),
    };
    let (kind, hdr, payload) = match &sliced.transport {
        Some(TransportSlice::Icmpv4(icmp)) if src.is_ipv4() => match icmp.icmp_type() {
            Icmpv4Type::EchoRequest(h) => (EchoKind::Request, h, icmp.payload()),
            Icmpv4Type::EchoReply(h) => (EchoKind::Reply, h, icmp.payload()),
            other => return Err(Error::BadIcmp(format!("not an echo: {other:?}"))),
        },
        Some(TransportSlice::Icmpv6(icmp)) if src.is_ipv6() => match icmp.icmp_type() {
            Icmpv6Type::EchoRequest(h) => (EchoKind::Request, h, icmp.payload()),
            Icmpv6Type::EchoReply(h) => (EchoKind::Reply, h, icmp.payload()),
            other => return Err(Error::BadIcmp(format!("not an echo: {other:?}"))),
        },
        _ => return Err(Error::BadIcmp("not ICMP of its IP version".into())),
    };
    Ok(IcmpEcho {
        kind,
        src,
        dst,
        id: hdr.id,
        seq: hdr.seq,
        payload: payload.to_vec(),
    })
}

/// Destination address of an IPv4 or IPv6 packet, by its version nibble.
pub fn ip_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => ipv4_destination(packet).map(IpAddr::V4),
        6 => ipv6_addr_at(packet, 24).map(IpAddr::V6),
        _ => None,
    }
}

/// Source address of an IPv4 or IPv6 packet, by its version nibble.
pub fn ip_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => ipv4_source(packet).map(IpAddr::V4),
        6 => ipv6_addr_at(packet, 8).map(IpAddr::V6),
        _ => None,
    }
}

fn ipv6_addr_at(packet: &[u8], off: usize) -> Option<Ipv6Addr> {
    // A fixed IPv6 header is 40 bytes; shorter is no IPv6 packet.
    if packet.len() < 40 {
        return None;
    }
    let a: [u8; 16] = packet.get(off..off + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
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

/// ICMPv6 types of router discovery (RFC 4861 §4.1, §4.2).
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// Neighbour discovery travels with hop limit 255 only (RFC 4861 §6.1).
const ND_HOP_LIMIT: u8 = 255;

/// The P-GW's link-local address on every UE's link.
pub const PGW_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

fn icmpv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    type_u8: u8,
    bytes5to8: [u8; 4],
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let b =
        PacketBuilder::ipv6(src.octets(), dst.octets(), ND_HOP_LIMIT).icmpv6(Icmpv6Type::Unknown {
            type_u8,
            code_u8: 0,
            bytes5to8,
        });
    let mut out = Vec::with_capacity(b.size(body.len()));
    b.write(&mut out, body)
        .map_err(|e| Error::BadIcmp(e.to_string()))?;
    Ok(out)
}

/// A Router Solicitation as a UE sends it after its PDN connection is up: from its
/// link-local address to all routers, no options.
pub fn router_solicitation(src: Ipv6Addr) -> Result<Vec<u8>, Error> {
    let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    icmpv6(src, all_routers, ROUTER_SOLICITATION, [0; 4], &[])
}

/// The source of `packet` if it is a Router Solicitation a router accepts.
pub fn router_solicitation_source(packet: &[u8]) -> Option<Ipv6Addr> {
    nd_message(packet)
        .filter(|(t, _)| *t == ROUTER_SOLICITATION)
        .map(|(_, src)| src)
}

/// The type and source of a neighbour discovery message as RFC 4861 §6.1 validates it:
/// hop limit 255, code 0, a valid checksum.
fn nd_message(packet: &[u8]) -> Option<(u8, Ipv6Addr)> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) =
        (&sliced.net, &sliced.transport)
    else {
        return None;
    };
    let h = ip.header();
    let t = icmp.icmp_type();
    let sum = t
        .calc_checksum(h.source(), h.destination(), icmp.payload())
        .ok()?;
    (h.hop_limit() == ND_HOP_LIMIT && t.code_u8() == 0 && sum == icmp.checksum())
        .then(|| (t.type_u8(), h.source_addr()))
}

/// The Router Advertisement from the P-GW to `dst` offering `prefix`/64 (TS 29.061
/// §11.2.1.3.2: off-link, L clear, for autonomous configuration, A set, lifetimes
/// infinite while the PDN connection lasts) and the link MTU.
pub fn router_advertisement(dst: Ipv6Addr, prefix: Ipv6Addr, mtu: u16) -> Result<Vec<u8>, Error> {
    // Current hop limit 64, M and O clear (no DHCPv6), router lifetime 65535 s.
    let head = [64, 0, 0xff, 0xff];
    // Reachable time and retrans timer unspecified.
    let mut body = vec![0; 8];
    // Prefix Information (RFC 4861 §4.6.2): type 3, 4 x 8 octets, /64, flags A.
    body.extend_from_slice(&[3, 4, 64, 0x40]);
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(&[0; 4]);
    body.extend_from_slice(&prefix.octets());
    // MTU (RFC 4861 §4.6.4): type 5, 8 octets.
    body.extend_from_slice(&[5, 1, 0, 0]);
    body.extend_from_slice(&u32::from(mtu).to_be_bytes());
    icmpv6(PGW_LINK_LOCAL, dst, ROUTER_ADVERTISEMENT, head, &body)
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
        assert_eq!(
            (e.src, e.dst, e.id, e.seq),
            (IpAddr::V4(src), IpAddr::V4(dst), 0x42, 1)
        );
        assert_eq!(e.payload, b"hello");
        let r = parse_echo(&e.reply().encode().unwrap()).unwrap();
        assert_eq!(r.kind, EchoKind::Reply);
        assert_eq!((r.src, r.dst), (IpAddr::V4(dst), IpAddr::V4(src)));
    }

    #[test]
    fn icmpv6_echo_round_trip_and_addresses() {
        let src: Ipv6Addr = "2001:db8:77:1::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:77::1".parse().unwrap();
        let p = echo_request(src, dst, 7, 3, b"six").unwrap();
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(p[6], 58, "next header ICMPv6");
        assert_eq!(ip_source(&p), Some(IpAddr::V6(src)));
        assert_eq!(ip_destination(&p), Some(IpAddr::V6(dst)));
        assert_eq!(ipv4_destination(&p), None);
        let e = parse_echo(&p).unwrap();
        assert_eq!((e.kind, e.id, e.seq), (EchoKind::Request, 7, 3));
        assert_eq!((e.src, e.dst), (IpAddr::V6(src), IpAddr::V6(dst)));
        let r = parse_echo(&e.reply().encode().unwrap()).unwrap();
        assert_eq!(
            (r.kind, r.src, r.payload.as_slice()),
            (EchoKind::Reply, IpAddr::V6(dst), &b"six"[..])
        );
        let v4 = echo_request(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            1,
            b"",
        )
        .unwrap();
        assert_eq!(
            ip_destination(&v4),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert!(echo_request(src, Ipv4Addr::LOCALHOST, 1, 1, b"").is_err());
    }

    #[test]
    fn router_solicitation_and_advertisement() {
        let ue: Ipv6Addr = "fe80::1234".parse().unwrap();
        let rs = router_solicitation(ue).unwrap();
        assert_eq!(router_solicitation_source(&rs), Some(ue));
        // Forwarded (hop limit not 255) or corrupted: not accepted.
        let mut hops = rs.clone();
        hops[7] = 64;
        assert_eq!(router_solicitation_source(&hops), None);
        let mut bad = rs.clone();
        bad[42] ^= 1;
        assert_eq!(router_solicitation_source(&bad), None);
        let echo = echo_request(ue, PGW_LINK_LOCAL, 1, 1, b"").unwrap();
        assert_eq!(router_solicitation_source(&echo), None);

        let prefix: Ipv6Addr = "2001:db8:77:1::".parse().unwrap();
        let ra = router_advertisement(ue, prefix, 1400).unwrap();
        assert_eq!((ra[7], ra[40], ra[41]), (255, 134, 0));
        assert_eq!(ip_destination(&ra), Some(IpAddr::V6(ue)));
        assert_eq!(&ra[56..60], &[3, 4, 64, 0x40]);
        assert_eq!(&ra[72..88], &prefix.octets());
        // Valid as a UE checks it: hop limit, code and checksum.
        assert_eq!(nd_message(&ra), Some((134, PGW_LINK_LOCAL)));
        let mut bad = ra.clone();
        bad[80] ^= 1;
        assert_eq!(nd_message(&bad), None);
    }

    #[test]
    fn garbage_is_err() {
        assert!(parse_echo(&[]).is_err());
        assert!(parse_echo(&[0x45; 30]).is_err());
        assert_eq!(ipv4_destination(&[0x60; 40]), None);
        assert_eq!(ipv4_destination(&[0x45; 10]), None);
        assert_eq!(ip_destination(&[0x60; 39]), None);
        assert_eq!(ip_source(&[0x10; 60]), None);
        assert!(parse_echo(&[0x60; 40]).is_err());
    }
}
