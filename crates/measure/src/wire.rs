//! Probes at the packet level: an ICMP echo prober (the paper's 1 ms ping of a function's
//! IP) and a sniffer that timestamps the packets a given source sends past a host (e.g.
//! UE traffic leaving the SPGW towards the PDN: DP_SGi). Both run on the calling thread,
//! in whatever network namespace that thread is in.
use crate::gaps::{Clock, GapTracker, Series};
use anyhow::{Context, Result};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct PingReport {
    pub target: Ipv4Addr,
    pub sent: u64,
    pub answered: u64,
    pub gaps: Series,
}

/// Pings `target` every `interval` until `stop` is set, through the kernel's ICMP datagram
/// socket (no raw socket needed, the kernel matches replies to us).
pub fn ping(target: Ipv4Addr, interval: Duration, stop: &AtomicBool) -> Result<PingReport> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4))
        .context("cannot open an ICMP socket")?;
    s.connect(&SocketAddrV4::new(target, 0).into())?;
    let clock = Clock::new();
    let mut gaps = GapTracker::new(clock, clock.start(), interval * 2);
    let (mut sent, mut answered, mut seq) = (0u64, 0u64, 0u16);
    let mut buf = [MaybeUninit::<u8>::uninit(); 128];
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        seq = seq.wrapping_add(1);
        // Echo request: type 8, code 0, checksum, id (the kernel sets it), sequence.
        let mut pkt = [8u8, 0, 0, 0, 0, 0, (seq >> 8) as u8, seq as u8];
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        if s.send(&pkt).is_ok() {
            sent += 1;
        }
        while let Some(rest) = interval.checked_sub(tick.elapsed()) {
            s.set_read_timeout(Some(rest.max(Duration::from_micros(50))))?;
            match s.recv(&mut buf) {
                Ok(n) if n >= 8 => {
                    // SAFETY: recv initialised the first n bytes.
                    let b: Vec<u8> = buf[..n]
                        .iter()
                        .map(|x| unsafe { x.assume_init() })
                        .collect();
                    if b[0] == 0 && u16::from_be_bytes([b[6], b[7]]) == seq {
                        answered += 1;
                        gaps.ok(Instant::now());
                    }
                }
                _ => break,
            }
        }
    }
    Ok(PingReport {
        target,
        sent,
        answered,
        gaps: gaps.finish(Instant::now()),
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Records every IPv4 packet from `src` with IP protocol `proto` seen on this namespace's
/// interfaces until `stop` is set; the gaps between them are the outages of that flow.
pub fn sniff(src: Ipv4Addr, proto: u8, threshold: Duration, stop: &AtomicBool) -> Result<Series> {
    const ETH_P_IP: u16 = 0x0800;
    let s = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
    )
    .context("cannot open a packet socket")?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let clock = Clock::new();
    let mut gaps = GapTracker::new(clock, clock.start(), threshold);
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = s.recv(&mut buf) else { continue };
        if n < 20 {
            continue;
        }
        // SAFETY: recv initialised the first n bytes.
        let h: Vec<u8> = buf[..20]
            .iter()
            .map(|x| unsafe { x.assume_init() })
            .collect();
        if h[0] >> 4 == 4 && h[9] == proto && Ipv4Addr::new(h[12], h[13], h[14], h[15]) == src {
            gaps.ok(Instant::now());
        }
    }
    Ok(gaps.finish(Instant::now()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn icmp_checksum_matches_rfc1071_example() {
        // An echo request with id 0, seq 1: 0x0800 + 0x0001 -> checksum 0xf7fe.
        assert_eq!(super::checksum(&[8, 0, 0, 0, 0, 0, 0, 1]), 0xf7fe);
    }
}
