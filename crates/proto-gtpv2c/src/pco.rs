//! Protocol Configuration Options (TS 24.008 §10.5.6.3), carried opaquely by the
//! GTPv2-C PCO IE (TS 29.274 §8.13) between the UE (via the MME's NAS) and the
//! P-GW. Used here to hand the UE its DNS servers and link MTU.

use std::net::Ipv4Addr;

use crate::ie::RawIe;
use crate::Error;

/// Container / protocol identifiers used by this core.
pub mod id {
    /// PPP IP Control Protocol (RFC 1332), DNS via options 129/131 (RFC 1877).
    pub const IPCP: u16 = 0x8021;
    /// UE->network: "DNS Server IPv6 Address Request" (empty);
    /// network->UE: "DNS Server IPv6 Address" (16 octets).
    pub const DNS_IPV6: u16 = 0x0003;
    /// UE->network: "DNS Server IPv4 Address Request" (empty);
    /// network->UE: "DNS Server IPv4 Address" (4 octets).
    pub const DNS_IPV4: u16 = 0x000d;
    /// UE->network: "IPv4 Link MTU Request" (empty); network->UE: MTU (2 octets).
    pub const IPV4_LINK_MTU: u16 = 0x0010;
}

/// A PCO: configuration protocol PPP (the only one defined) and its containers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pco {
    /// (protocol or container id, contents) in wire order.
    pub containers: Vec<(u16, Vec<u8>)>,
}

const IPCP_CONFIGURE_REQUEST: u8 = 1;
const IPCP_CONFIGURE_NAK: u8 = 3;
const IPCP_PRIMARY_DNS: u8 = 129;
const IPCP_SECONDARY_DNS: u8 = 131;

impl Pco {
    /// Whether the UE asked for DNS servers (container 0x000D or IPCP).
    pub fn requests_dns(&self) -> bool {
        self.containers
            .iter()
            .any(|(i, _)| *i == id::DNS_IPV4 || *i == id::IPCP)
    }

    /// The network's answer to this (UE) PCO: DNS servers and MTU for what was
    /// asked. IPCP Configure-Requests get a Configure-Nak carrying the first two
    /// DNS servers (RFC 1877), which is how older UEs learn them.
    pub fn answer(&self, dns: &[Ipv4Addr], mtu: Option<u16>) -> Pco {
        let mut out = Pco::default();
        for (i, c) in &self.containers {
            match *i {
                id::DNS_IPV4 => {
                    for d in dns {
                        out.containers.push((id::DNS_IPV4, d.octets().to_vec()));
                    }
                }
                id::IPV4_LINK_MTU => {
                    if let Some(m) = mtu {
                        out.containers
                            .push((id::IPV4_LINK_MTU, m.to_be_bytes().to_vec()));
                    }
                }
                id::IPCP => {
                    if let (Some(ident), false) = (ipcp_request_id(c), dns.is_empty()) {
                        out.containers.push((id::IPCP, ipcp_nak(ident, dns)));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The DNS servers in a network->UE PCO (0x000D containers, else IPCP).
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        let direct: Vec<Ipv4Addr> = self
            .containers
            .iter()
            .filter(|(i, c)| *i == id::DNS_IPV4 && c.len() == 4)
            .map(|(_, c)| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        if !direct.is_empty() {
            return direct;
        }
        self.containers
            .iter()
            .filter(|(i, _)| *i == id::IPCP)
            .flat_map(|(_, c)| ipcp_dns(c))
            .collect()
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        // Extension bit set, configuration protocol 0 (PPP with IP PDP type).
        out.push(0x80);
        for (i, c) in &self.containers {
            let len =
                u8::try_from(c.len()).map_err(|_| Error::Encode("PCO container > 255 octets"))?;
            out.extend_from_slice(&i.to_be_bytes());
            out.push(len);
            out.extend_from_slice(c);
        }
        Ok(())
    }

    pub(crate) fn decode(ie: &RawIe) -> Result<Pco, Error> {
        let (&first, mut b) = ie
            .value
            .split_first()
            .ok_or(Error::BadIe(ie.ty, "empty PCO"))?;
        if first & 0x80 == 0 {
            return Err(Error::BadIe(ie.ty, "PCO extension bit not set"));
        }
        let mut pco = Pco::default();
        while !b.is_empty() {
            let h = b
                .get(..3)
                .ok_or(Error::BadIe(ie.ty, "PCO container truncated"))?;
            let (cid, len) = (u16::from_be_bytes([h[0], h[1]]), h[2] as usize);
            let c = b
                .get(3..3 + len)
                .ok_or(Error::BadIe(ie.ty, "PCO container length exceeds IE"))?;
            pco.containers.push((cid, c.to_vec()));
            b = &b[3 + len..];
        }
        Ok(pco)
    }
}

/// Identifier of an IPCP Configure-Request, if `c` is one.
fn ipcp_request_id(c: &[u8]) -> Option<u8> {
    match c {
        [IPCP_CONFIGURE_REQUEST, ident, ..] => Some(*ident),
        _ => None,
    }
}

fn ipcp_nak(ident: u8, dns: &[Ipv4Addr]) -> Vec<u8> {
    let mut v = vec![IPCP_CONFIGURE_NAK, ident, 0, 0];
    for (opt, d) in [IPCP_PRIMARY_DNS, IPCP_SECONDARY_DNS].into_iter().zip(dns) {
        v.extend_from_slice(&[opt, 6]);
        v.extend_from_slice(&d.octets());
    }
    let len = v.len() as u16; // at most 16 octets
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v
}

/// DNS addresses in an IPCP packet's options (bounded by the packet length).
fn ipcp_dns(c: &[u8]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let Some(h) = c.get(..4) else { return out };
    let len = (u16::from_be_bytes([h[2], h[3]]) as usize).min(c.len());
    let mut opts = c.get(4..len).unwrap_or(&[]);
    while let [t, l, ..] = *opts {
        let l = l as usize;
        let Some(v) = opts.get(..l).filter(|_| l >= 2) else {
            break;
        };
        if (t == IPCP_PRIMARY_DNS || t == IPCP_SECONDARY_DNS) && l == 6 {
            out.push(Ipv4Addr::new(v[2], v[3], v[4], v[5]));
        }
        opts = &opts[l..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_and_parse() {
        let ue = Pco {
            containers: vec![
                (
                    id::IPCP,
                    vec![1, 7, 0, 16, 129, 6, 0, 0, 0, 0, 131, 6, 0, 0, 0, 0],
                ),
                (id::DNS_IPV4, vec![]),
                (id::IPV4_LINK_MTU, vec![]),
            ],
        };
        assert!(ue.requests_dns());
        let dns = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(1, 1, 1, 1)];
        let a = ue.answer(&dns, Some(1400));
        assert_eq!(a.dns_servers(), dns);
        assert!(a.containers.contains(&(id::IPV4_LINK_MTU, vec![5, 120])));
        let ipcp = &a.containers[0].1;
        assert_eq!(ipcp_dns(ipcp), dns);
        assert_eq!(&ipcp[..4], [3, 7, 0, 16]);
        let mut b = Vec::new();
        a.encode(&mut b).unwrap();
        let raw = RawIe {
            ty: 78,
            instance: 0,
            value: &b,
        };
        assert_eq!(Pco::decode(&raw).unwrap(), a);
    }

    #[test]
    fn garbage() {
        for v in [&[][..], &[0x00], &[0x80, 0, 13], &[0x80, 0, 13, 5, 1]] {
            assert!(Pco::decode(&RawIe {
                ty: 78,
                instance: 0,
                value: v
            })
            .is_err());
        }
        assert!(ipcp_dns(&[3, 1, 0, 200, 129, 0, 1]).is_empty());
        assert!(ipcp_dns(&[3, 1]).is_empty());
    }
}
