//! Minimal pcap writer for UDP datagrams (IPv4, LINKTYPE_RAW), so tests and tools
//! can hand real SCTP-over-UDP traffic to tshark/Wireshark without a capture
//! privilege or a sniffer; or for bare protocol messages on a user link type (DLT
//! 147), which tshark maps to a dissector (`uat:user_dlts`). Pure bytes: no I/O here,
//! the caller writes the file.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// LINKTYPE_RAW: each record starts with an IP header.
const LINKTYPE_RAW: u32 = 101;

/// LINKTYPE_USER0 (DLT 147): records are one message of the protocol the reader is
/// told to use for it.
pub const LINKTYPE_USER0: u32 = 147;

/// An in-memory pcap file.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    buf: Vec<u8>,
    ip_id: u16,
}

impl Default for PcapWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PcapWriter {
    /// A capture of UDP datagrams ([`PcapWriter::udp`]).
    pub fn new() -> Self {
        Self::with_linktype(LINKTYPE_RAW)
    }

    /// A capture of another link type, e.g. [`LINKTYPE_USER0`], whose records are
    /// written with [`PcapWriter::record`].
    pub fn with_linktype(linktype: u32) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic, µs timestamps
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        buf.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        buf.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
        buf.extend_from_slice(&linktype.to_le_bytes());
        PcapWriter { buf, ip_id: 1 }
    }

    /// One record holding `frame` as it is.
    pub fn record(&mut self, ts: Duration, frame: &[u8]) {
        self.record_parts(ts, &[frame]);
    }

    fn record_parts(&mut self, ts: Duration, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.buf
            .extend_from_slice(&(ts.as_secs() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&ts.subsec_micros().to_le_bytes());
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
    }

    /// Records one UDP datagram `from` → `to` at the current time. IPv6 addresses
    /// are not supported (the lab is IPv4) and are skipped.
    pub fn udp(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        self.udp_at(ts, from, to, payload);
    }

    pub fn udp_at(&mut self, ts: Duration, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (from.ip(), to.ip()) else {
            return;
        };
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        if total > usize::from(u16::MAX) {
            return;
        }
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        ip[6] = 0x40; // DF
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let csum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());

        let mut udp = [0u8; 8];
        udp[..2].copy_from_slice(&from.port().to_be_bytes());
        udp[2..4].copy_from_slice(&to.port().to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        // UDP checksum 0 = not computed, allowed for IPv4 (RFC 768).
        self.record_parts(ts, &[&ip, &udp, payload]);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Takes what was written so far (the header first, then records), for a caller
    /// that streams the capture to a file as it goes.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn ipv4_checksum(h: &[u8; 20]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
