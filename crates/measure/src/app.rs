//! Application-level probes: a live netns answers ICMP even while the function in it is
//! frozen, so these ask the function itself. Diameter watchdog (DWR/DWA) for the HSS and
//! GTP-U Echo for the SPGW; the MME's S1AP round trip is probed by the eNB emulator.
use crate::gaps::{Clock, GapTracker, Series};
use anyhow::{bail, Context, Result};
use proto_diameter::base::{self, Identity};
use proto_diameter::Framer;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Keeps one S6a connection to a Diameter server (capabilities exchanged once) and sends a
/// DWR every `interval` until `stop`; the connection must survive the server's migration.
pub fn diameter_watchdog(
    target: SocketAddr,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<Series> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .with_context(|| format!("cannot reach {target}"))?;
    s.set_nodelay(true)?;
    let id = Identity {
        origin_host: "probe.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        host_ip: s.local_addr()?.ip(),
        product_name: "corehop-probe".into(),
        origin_state_id: 1,
    };
    let mut framer = Framer::new();
    let mut buf = [0u8; 4096];
    let mut exchange = |s: &mut TcpStream,
                        mut req: proto_diameter::Message,
                        hbh: u32,
                        wait: Duration|
     -> Result<bool> {
        req.hop_by_hop = hbh;
        req.end_to_end = hbh;
        s.write_all(&req.encode())?;
        let deadline = Instant::now() + wait;
        loop {
            while let Some(m) = framer.next_message()? {
                if !m.is_request() && m.hop_by_hop == hbh {
                    return Ok(true);
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(false);
            };
            s.set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
            match s.read(&mut buf) {
                Ok(0) => bail!("{target} closed the Diameter connection"),
                Ok(n) => framer.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !exchange(&mut s, base::cer(&id), 1, Duration::from_secs(2))? {
        bail!("no CEA from {target}");
    }
    let clock = Clock::new();
    let mut gaps = GapTracker::new(clock, clock.start(), interval * 2);
    let mut hbh = 1u32;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        hbh = hbh.wrapping_add(1);
        // Answers to earlier, late DWRs are matched by id and skipped.
        if exchange(
            &mut s,
            base::dwr(&id),
            hbh,
            interval.max(Duration::from_millis(1)),
        )? {
            gaps.ok(Instant::now());
        }
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(gaps.finish(Instant::now()))
}

/// Whether `target` answers one GTP-U Echo Request on port 2152 within `within`: the
/// SPGW's user plane is up (for a VM: its guest booted and the function started).
pub fn gtpu_echo_answered(target: Ipv4Addr, within: Duration) -> Result<bool> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(SocketAddr::new(IpAddr::V4(target), proto_gtpu::GTPU_PORT))?;
    let seq = 1;
    s.send(&proto_gtpu::Gtpu::EchoRequest { seq }.encode()?)?;
    let t = Instant::now();
    let mut buf = [0u8; 512];
    while let Some(rest) = within.checked_sub(t.elapsed()) {
        s.set_read_timeout(Some(rest.max(Duration::from_micros(50))))?;
        match s.recv(&mut buf) {
            Ok(n) => {
                if matches!(proto_gtpu::decode(&buf[..n]), Ok(proto_gtpu::Gtpu::EchoResponse { seq: r, .. }) if r == seq)
                {
                    return Ok(true);
                }
            }
            // Timeout, or ICMP port unreachable while nothing listens yet.
            Err(_) => return Ok(false),
        }
    }
    Ok(false)
}

/// GTP-U Echo Request every `interval` to `target` (port 2152) until `stop`.
pub fn gtpu_echo(target: Ipv4Addr, interval: Duration, stop: &AtomicBool) -> Result<Series> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(SocketAddr::new(IpAddr::V4(target), proto_gtpu::GTPU_PORT))?;
    let clock = Clock::new();
    let mut gaps = GapTracker::new(clock, clock.start(), interval * 2);
    let mut buf = [0u8; 512];
    let mut seq = 0u16;
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        seq = seq.wrapping_add(1);
        let _ = s.send(&proto_gtpu::Gtpu::EchoRequest { seq }.encode()?);
        while let Some(rest) = interval.checked_sub(tick.elapsed()) {
            s.set_read_timeout(Some(rest.max(Duration::from_micros(50))))?;
            match s.recv(&mut buf) {
                Ok(n) => {
                    if matches!(proto_gtpu::decode(&buf[..n]), Ok(proto_gtpu::Gtpu::EchoResponse { seq: r, .. }) if r == seq)
                    {
                        gaps.ok(Instant::now());
                    }
                }
                // ICMP port unreachable while the SPGW is away shows up as an error here.
                Err(_) => break,
            }
        }
    }
    Ok(gaps.finish(Instant::now()))
}
