//! SCTP (over UDP, RFC 6951): the chunk walker `wire::parse` and the sans-IO
//! `SctpStack::handle_datagram` (the MME side that eNBs talk to).
//!
//! Input: one flags byte, then datagrams as `[len: u8][bytes]...` (a missing or short
//! length takes the rest of the input).
//! - flags & 1: first run a real handshake client→server and exchange one message each
//!   way, so fuzzed packets reach an established association;
//! - flags & 2: put the verification tag the server expects in each datagram;
//! - flags & 4: keep the datagram's checksum as is (else it is fixed, so the packet
//!   gets past the CRC32c check);
//! - flags & 8: feed the client stack instead of the server;
//! - flags & 16: datagrams come from a stranger's address, not the peer's;
//! - bits 5..7: milliseconds × 100 to advance (and fire timers) between datagrams.
//!
//! Properties: parse's chunks lie inside the packet, in order; retaining every chunk
//! reproduces a well-padded packet; the stack never panics, and its own transmissions
//! parse and carry a good checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_sctp::{wire, SctpConfig, SctpStack};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn check_parse(packet: &[u8]) {
    let Ok(view) = wire::parse(packet) else {
        return;
    };
    let mut prev_end = 12;
    for c in &view.chunks {
        assert!(c.offset >= prev_end, "chunks overlap");
        assert!(c.len >= 4 && c.offset + c.len <= packet.len(), "chunk out of bounds");
        prev_end = c.offset + c.len;
        let _ = wire::heartbeat_ack_info(packet, c);
    }
    let all = wire::retain_chunks(packet, &view, &view.chunks);
    assert!(wire::checksum_ok(&all));
    assert_eq!(all.len() % 4, 0);
    let again = wire::parse(&all).expect("retained chunks parse");
    assert_eq!(again.chunks.len(), view.chunks.len());
    let mut copy = packet.to_vec();
    let _ = wire::rewrite_data_ppid(&mut copy, 18, 53);
}

/// Delivers every queued datagram between the two stacks; returns the last
/// verification tag seen on client→server and server→client packets.
fn pump(
    now: Instant,
    server: &mut SctpStack,
    server_addr: SocketAddr,
    client: &mut SctpStack,
    client_addr: SocketAddr,
    tags: &mut (u32, u32),
) {
    for _ in 0..16 {
        let mut moved = false;
        while let Some((to, pkt)) = client.poll_transmit() {
            assert_eq!(to, server_addr);
            assert!(wire::checksum_ok(&pkt), "client sent a bad checksum");
            tags.0 = wire::parse(&pkt).expect("client output parses").verification_tag;
            server.handle_datagram(now, client_addr, &pkt);
            moved = true;
        }
        while let Some((to, pkt)) = server.poll_transmit() {
            assert_eq!(to, client_addr);
            assert!(wire::checksum_ok(&pkt), "server sent a bad checksum");
            tags.1 = wire::parse(&pkt).expect("server output parses").verification_tag;
            client.handle_datagram(now, server_addr, &pkt);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn drain(s: &mut SctpStack) {
    while let Some((_, pkt)) = s.poll_transmit() {
        assert!(wire::checksum_ok(&pkt), "stack sent a bad checksum");
        wire::parse(&pkt).expect("stack output parses");
    }
    while s.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let server_addr: SocketAddr = "10.77.1.20:9899".parse().unwrap();
    let client_addr: SocketAddr = "10.77.0.21:9899".parse().unwrap();
    let stranger: SocketAddr = "10.77.0.99:9899".parse().unwrap();
    let cfg = SctpConfig::default();
    let mut server = SctpStack::new(cfg.clone(), true);
    let mut client = SctpStack::new(cfg, false);
    let mut now = Instant::now();
    let mut tags = (0u32, 0u32);

    if flags & 1 != 0 {
        let id = client.connect(now, server_addr).expect("connect");
        pump(now, &mut server, server_addr, &mut client, client_addr, &mut tags);
        if client.send(now, id, 0, b"\x00\x11\x00\x00").is_ok() {
            pump(now, &mut server, server_addr, &mut client, client_addr, &mut tags);
        }
        if let Some((sid, _)) = server.associations().first().copied() {
            let _ = server.send(now, sid, 1, b"\x20\x11\x00\x00");
            pump(now, &mut server, server_addr, &mut client, client_addr, &mut tags);
        }
        while server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
    }

    let step = Duration::from_millis(100 * u64::from(flags >> 5));
    while !rest.is_empty() {
        let (len, body) = rest.split_first().unwrap();
        let n = (*len as usize).min(body.len());
        let (dgram, tail) = body.split_at(if n == 0 { body.len() } else { n });
        rest = tail;
        let mut pkt = dgram.to_vec();
        let (stack, expected_tag, from) = if flags & 8 != 0 {
            (&mut client, tags.1, server_addr)
        } else {
            (&mut server, tags.0, client_addr)
        };
        if flags & 2 != 0 && pkt.len() >= 8 {
            pkt[4..8].copy_from_slice(&expected_tag.to_be_bytes());
        }
        if flags & 4 == 0 {
            wire::fix_checksum(&mut pkt);
        }
        check_parse(&pkt);
        let from = if flags & 16 != 0 { stranger } else { from };
        stack.handle_datagram(now, from, &pkt);
        drain(stack);
        if !step.is_zero() {
            now += step;
            stack.handle_timeout(now);
            drain(stack);
        }
    }
});
