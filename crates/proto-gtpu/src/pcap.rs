//! A minimal pcap writer for UDP/IPv4 datagrams (Ethernet link type), so tests and
//! tools can hand what went over S1-U/S11 to Wireshark/tshark. Builds bytes only;
//! the caller decides where they go.

use std::net::SocketAddrV4;
use std::time::Duration;

use etherparse::PacketBuilder;

use crate::Error;

/// Collects frames and renders a classic pcap file (microsecond timestamps).
#[derive(Debug, Default, Clone)]
pub struct UdpPcap {
    records: Vec<(Duration, Vec<u8>)>,
}

impl UdpPcap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one UDP datagram at time `ts` (since the epoch or since the start).
    pub fn push(
        &mut self,
        ts: Duration,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
    ) -> Result<(), Error> {
        // Locally administered MACs derived from the IPs keep hosts apart in Wireshark.
        let mac = |a: &SocketAddrV4| {
            let o = a.ip().octets();
            [0x02, 0x00, o[0], o[1], o[2], o[3]]
        };
        let b = PacketBuilder::ethernet2(mac(&src), mac(&dst))
            .ipv4(src.ip().octets(), dst.ip().octets(), 64)
            .udp(src.port(), dst.port());
        let mut frame = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut frame, payload)
            .map_err(|e| Error::Frame(e.to_string()))?;
        self.records.push((ts, frame));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The pcap file: global header, then one record per frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, microseconds
        out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        out.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
        out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (ts, f) in &self.records {
            out.extend_from_slice(&(ts.as_secs() as u32).to_le_bytes());
            out.extend_from_slice(&ts.subsec_micros().to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut p = UdpPcap::new();
        assert!(p.is_empty());
        p.push(
            Duration::from_micros(1_000_002),
            "10.0.0.1:2152".parse().unwrap(),
            "10.0.0.2:2152".parse().unwrap(),
            b"abc",
        )
        .unwrap();
        let b = p.to_bytes();
        assert_eq!(&b[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&b[24..32], [1, 0, 0, 0, 2, 0, 0, 0]);
        // 14 Ethernet + 20 IPv4 + 8 UDP + 3 payload.
        assert_eq!(b.len(), 24 + 16 + 45);
        assert_eq!(&b[b.len() - 3..], b"abc");
    }
}
