//! Byte-level view of SCTP packets (RFC 4960 §3): just enough to walk the chunks,
//! rewrite the PPID of DATA chunks, build HEARTBEAT chunks and keep the CRC32c right.
//!
//! `sctp-proto` owns the protocol; this module only touches the few fields it cannot
//! express (see the crate docs for why rewriting beats patching the dependency).

use thiserror::Error;

/// Common header: source port, destination port, verification tag, checksum.
pub const COMMON_HEADER_LEN: usize = 12;
/// Chunk types used here (RFC 4960 §3.2).
pub const CT_DATA: u8 = 0;
pub const CT_INIT: u8 = 1;
pub const CT_INIT_ACK: u8 = 2;
pub const CT_SACK: u8 = 3;
pub const CT_HEARTBEAT: u8 = 4;
pub const CT_HEARTBEAT_ACK: u8 = 5;
pub const CT_ABORT: u8 = 6;
pub const CT_COOKIE_ECHO: u8 = 10;
pub const CT_ERROR: u8 = 9;
pub const CT_COOKIE_ACK: u8 = 11;
/// Heartbeat Info parameter type (RFC 4960 §3.3.5).
const PARAM_HEARTBEAT_INFO: u16 = 1;
/// DATA chunk: header(4) TSN(4) stream id(2) SSN(2) PPID(4) payload.
const DATA_PPID_OFFSET: usize = 12;
const DATA_HEADER_LEN: usize = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("SCTP packet shorter than its common header ({0} bytes)")]
    TooShort(usize),
    #[error("SCTP chunk at offset {offset} has bad length {len}")]
    BadChunkLength { offset: usize, len: usize },
    #[error("SCTP DATA chunk at offset {0} shorter than its header")]
    ShortData(usize),
    #[error("SCTP checksum mismatch")]
    BadChecksum,
}

/// One chunk of a packet: its type and where its bytes are (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub chunk_type: u8,
    pub flags: u8,
    pub offset: usize,
    pub len: usize,
}

/// Parsed common header plus the chunk layout of one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketView {
    pub src_port: u16,
    pub dst_port: u16,
    pub verification_tag: u32,
    pub chunks: Vec<ChunkRef>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Walks the chunks of `packet`; any length that does not fit is an error.
pub fn parse(packet: &[u8]) -> Result<PacketView, WireError> {
    if packet.len() < COMMON_HEADER_LEN {
        return Err(WireError::TooShort(packet.len()));
    }
    let mut chunks = Vec::new();
    let mut offset = COMMON_HEADER_LEN;
    while offset < packet.len() {
        let (Some(&chunk_type), Some(&flags), Some(len)) = (
            packet.get(offset),
            packet.get(offset + 1),
            be16(packet, offset + 2),
        ) else {
            return Err(WireError::BadChunkLength { offset, len: 0 });
        };
        let len = len as usize;
        if len < 4 || offset + len > packet.len() {
            return Err(WireError::BadChunkLength { offset, len });
        }
        chunks.push(ChunkRef {
            chunk_type,
            flags,
            offset,
            len,
        });
        // Chunks are padded to a multiple of 4 bytes (RFC 4960 §3.2).
        offset += (len + 3) & !3;
    }
    Ok(PacketView {
        src_port: be16(packet, 0).unwrap_or_default(),
        dst_port: be16(packet, 2).unwrap_or_default(),
        verification_tag: be32(packet, 4).unwrap_or_default(),
        chunks,
    })
}

/// CRC32c of the packet with its checksum field taken as zero (RFC 4960 App. B).
pub fn compute_checksum(packet: &[u8]) -> u32 {
    if packet.len() < COMMON_HEADER_LEN {
        return 0;
    }
    let crc = crc32c::crc32c_append(0, &packet[..8]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &packet[COMMON_HEADER_LEN..])
}

/// True when the checksum field holds the packet's CRC32c (little-endian on the wire,
/// as Linux and sctp-proto write it).
pub fn checksum_ok(packet: &[u8]) -> bool {
    packet.len() >= COMMON_HEADER_LEN && packet[8..12] == compute_checksum(packet).to_le_bytes()
}

/// Writes the CRC32c of `packet` into its checksum field.
pub fn fix_checksum(packet: &mut [u8]) {
    if packet.len() >= COMMON_HEADER_LEN {
        let crc = compute_checksum(packet);
        packet[8..12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Replaces the PPID `from` by `to` in every DATA chunk and, if anything changed,
/// recomputes the checksum. A packet whose checksum was bad stays bad (we must not
/// launder corrupted packets), so the caller checks [`checksum_ok`] first on input.
/// Returns how many chunks were rewritten.
pub fn rewrite_data_ppid(packet: &mut [u8], from: u32, to: u32) -> Result<usize, WireError> {
    let view = parse(packet)?;
    let mut changed = 0;
    for c in view.chunks.iter().filter(|c| c.chunk_type == CT_DATA) {
        if c.len < DATA_HEADER_LEN {
            return Err(WireError::ShortData(c.offset));
        }
        let at = c.offset + DATA_PPID_OFFSET;
        if be32(packet, at) == Some(from) {
            packet[at..at + 4].copy_from_slice(&to.to_be_bytes());
            changed += 1;
        }
    }
    if changed > 0 {
        fix_checksum(packet);
    }
    Ok(changed)
}

/// Builds a HEARTBEAT packet (RFC 4960 §3.3.5) carrying `info` as Heartbeat Info.
/// The peer's SCTP echoes `info` in a HEARTBEAT ACK.
pub fn heartbeat_packet(src_port: u16, dst_port: u16, peer_tag: u32, info: &[u8]) -> Vec<u8> {
    let param_len = 4 + info.len();
    let chunk_len = 4 + param_len;
    let mut p = Vec::with_capacity(COMMON_HEADER_LEN + chunk_len + 3);
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&peer_tag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.push(CT_HEARTBEAT);
    p.push(0);
    p.extend_from_slice(&(chunk_len as u16).to_be_bytes());
    p.extend_from_slice(&PARAM_HEARTBEAT_INFO.to_be_bytes());
    p.extend_from_slice(&(param_len as u16).to_be_bytes());
    p.extend_from_slice(info);
    while p.len() % 4 != 0 {
        p.push(0);
    }
    fix_checksum(&mut p);
    p
}

/// Builds an ABORT packet (RFC 4960 §3.3.7) without error causes, T bit clear.
pub fn abort_packet(src_port: u16, dst_port: u16, peer_tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(COMMON_HEADER_LEN + 4);
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&peer_tag.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&[CT_ABORT, 0, 0, 4]);
    fix_checksum(&mut p);
    p
}

/// A copy of `packet` with only the chunks `keep` selects (same common header, new
/// checksum). Used to hide from sctp-proto chunks it mishandles.
pub fn retain_chunks(packet: &[u8], view: &PacketView, keep: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len());
    out.extend_from_slice(&packet[..COMMON_HEADER_LEN.min(packet.len())]);
    for c in keep.iter().filter(|c| view.chunks.contains(c)) {
        let padded = ((c.len + 3) & !3).min(packet.len() - c.offset);
        out.extend_from_slice(&packet[c.offset..c.offset + padded]);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    fix_checksum(&mut out);
    out
}

/// The Heartbeat Info echoed in a HEARTBEAT ACK chunk, if well formed.
pub fn heartbeat_ack_info<'a>(packet: &'a [u8], chunk: &ChunkRef) -> Option<&'a [u8]> {
    if chunk.chunk_type != CT_HEARTBEAT_ACK {
        return None;
    }
    let p = chunk.offset + 4;
    let ptype = be16(packet, p)?;
    let plen = be16(packet, p + 2)? as usize;
    if ptype != PARAM_HEARTBEAT_INFO || plen < 4 || p + plen > chunk.offset + chunk.len {
        return None;
    }
    packet.get(p + 4..p + plen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DATA chunk with PPID 53 (WebRTC binary), as sctp-proto would write it.
    fn data_packet(ppid: u32) -> Vec<u8> {
        let mut p = vec![0x8f, 0x1c, 0x8f, 0x1c, 0, 0, 0, 7, 0, 0, 0, 0];
        let payload = b"abcde";
        p.extend_from_slice(&[CT_DATA, 3]);
        p.extend_from_slice(&((DATA_HEADER_LEN + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes()); // TSN
        p.extend_from_slice(&[0, 1, 0, 0]); // stream 1, SSN 0
        p.extend_from_slice(&ppid.to_be_bytes());
        p.extend_from_slice(payload);
        p.extend_from_slice(&[0, 0, 0]);
        fix_checksum(&mut p);
        p
    }

    #[test]
    fn crc32c_matches_rfc3720_vector() {
        // RFC 3720 B.4: 32 bytes of zeros -> 0x8a9136aa.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn rewrites_ppid_and_checksum() {
        let mut p = data_packet(53);
        assert!(checksum_ok(&p));
        assert_eq!(rewrite_data_ppid(&mut p, 53, 18), Ok(1));
        assert_eq!(be32(&p, COMMON_HEADER_LEN + DATA_PPID_OFFSET), Some(18));
        assert!(checksum_ok(&p));
        assert_eq!(rewrite_data_ppid(&mut p, 53, 18), Ok(0));
    }

    #[test]
    fn heartbeat_round_trip() {
        let hb = heartbeat_packet(36412, 36412, 9, b"nonce123");
        assert!(checksum_ok(&hb));
        let v = parse(&hb).unwrap();
        assert_eq!(v.chunks.len(), 1);
        assert_eq!(v.chunks[0].chunk_type, CT_HEARTBEAT);
        // The ACK has the same layout with another chunk type.
        let mut ack = hb.clone();
        ack[COMMON_HEADER_LEN] = CT_HEARTBEAT_ACK;
        let v = parse(&ack).unwrap();
        assert_eq!(
            heartbeat_ack_info(&ack, &v.chunks[0]),
            Some(&b"nonce123"[..])
        );
    }

    #[test]
    fn retain_drops_chunks_and_keeps_the_rest_valid() {
        let mut p = data_packet(53);
        // Append a HEARTBEAT ACK (type 5, 8 bytes: header + empty info param).
        p.extend_from_slice(&[CT_HEARTBEAT_ACK, 0, 0, 8, 0, 1, 0, 4]);
        fix_checksum(&mut p);
        let v = parse(&p).unwrap();
        assert_eq!(v.chunks.len(), 2);
        let keep: Vec<ChunkRef> = v
            .chunks
            .iter()
            .copied()
            .filter(|c| c.chunk_type == CT_DATA)
            .collect();
        let q = retain_chunks(&p, &v, &keep);
        assert!(checksum_ok(&q));
        let w = parse(&q).unwrap();
        assert_eq!(w.chunks.len(), 1);
        assert_eq!(q.len(), p.len() - 8);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..64 {
            let mut junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse(&junk);
            let _ = rewrite_data_ppid(&mut junk, 53, 18);
            let _ = checksum_ok(&junk);
        }
        let mut short_data = data_packet(53);
        short_data[14..16].copy_from_slice(&8u16.to_be_bytes());
        assert!(rewrite_data_ppid(&mut short_data, 53, 18).is_err());
    }
}
