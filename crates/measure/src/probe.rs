//! Request-reply probes against a counter service (`corehop testsvc`): one TCP connection
//! held for the whole run, or UDP datagrams, every `interval`. The longest silence between
//! two answers is the downtime the client saw; the counter tells whether state survived.
use crate::gaps::{Clock, GapTracker, Series};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub proto: String,
    pub target: String,
    pub sent: u64,
    pub answered: u64,
    /// The connection broke (reset, EOF) and had to be re-opened.
    pub reconnects: u64,
    /// Every answer was exactly one more than the previous one (state carried over).
    pub counter_consecutive: bool,
    pub first_counter: Option<u64>,
    pub last_counter: Option<u64>,
    /// Longest time without an answer, in ms.
    pub max_gap_ms: f64,
    pub duration_ms: f64,
    /// Every silence longer than twice the interval, with UNIX timestamps.
    pub gaps: Series,
}

struct Counter {
    tracker: GapTracker,
    clock: Clock,
    sent: u64,
    answered: u64,
    reconnects: u64,
    consecutive: bool,
    first: Option<u64>,
    last: Option<u64>,
}

impl Counter {
    fn new(interval: Duration) -> Self {
        let clock = Clock::new();
        Counter {
            tracker: GapTracker::new(clock, clock.start(), interval * 2),
            clock,
            sent: 0,
            answered: 0,
            reconnects: 0,
            consecutive: true,
            first: None,
            last: None,
        }
    }

    fn answer(&mut self, text: &str) -> Result<()> {
        let counter: u64 = text
            .trim()
            .parse()
            .with_context(|| format!("the service answered {text:?}, not a counter"))?;
        // The first answer closes the virtual gap from the start; it is not an outage.
        if self.answered == 0 {
            self.tracker = GapTracker::new(self.clock, Instant::now(), self.tracker.threshold());
        } else {
            self.tracker.ok(Instant::now());
        }
        if self.last.is_some_and(|prev| counter != prev + 1) {
            self.consecutive = false;
        }
        self.first.get_or_insert(counter);
        self.last = Some(counter);
        self.answered += 1;
        Ok(())
    }

    fn finish(self, proto: &str, target: SocketAddr) -> ProbeReport {
        let duration_ms = self.clock.ms(Instant::now());
        let gaps = self.tracker.snapshot();
        ProbeReport {
            proto: proto.into(),
            target: target.to_string(),
            sent: self.sent,
            answered: self.answered,
            reconnects: self.reconnects,
            counter_consecutive: self.consecutive,
            first_counter: self.first,
            last_counter: self.last,
            max_gap_ms: gaps.longest.map(|o| o.duration_ms).unwrap_or(0.0),
            duration_ms,
            gaps,
        }
    }
}

/// Holds one TCP connection; each request is `inc`, each answer the new counter value.
/// Runs until `done()` says so.
pub fn tcp(target: SocketAddr, interval: Duration, done: &dyn Fn() -> bool) -> Result<ProbeReport> {
    let mut c = Counter::new(interval);
    let connect = || -> Result<(TcpStream, BufReader<TcpStream>)> {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .with_context(|| format!("cannot connect to {target}"))?;
        s.set_nodelay(true)?;
        // A frozen service answers late, not never: wait long enough for any migration.
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = BufReader::new(s.try_clone()?);
        Ok((s, r))
    };
    // A service started a moment ago may not listen yet: the first connection may retry.
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut w, mut r) = loop {
        match connect() {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e),
        }
    };
    let mut line = String::new();
    while !done() {
        let tick = Instant::now();
        c.sent += 1;
        line.clear();
        if w.write_all(b"inc\n").is_ok() && matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            c.answer(&line)?;
        } else {
            c.reconnects += 1;
            (w, r) = connect()?;
        }
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(c.finish("tcp", target))
}

/// One datagram `inc` per interval; a datagram lost while the service moves is just lost.
pub fn udp(target: SocketAddr, interval: Duration, done: &dyn Fn() -> bool) -> Result<ProbeReport> {
    let mut c = Counter::new(interval);
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(target)?;
    let mut buf = [0u8; 64];
    while !done() {
        let tick = Instant::now();
        c.sent += 1;
        s.send(b"inc")?;
        while let Some(rest) = interval.checked_sub(tick.elapsed()) {
            s.set_read_timeout(Some(rest.max(Duration::from_micros(100))))?;
            match s.recv(&mut buf) {
                Ok(n) => c.answer(std::str::from_utf8(&buf[..n]).unwrap_or(""))?,
                Err(_) => break,
            }
        }
    }
    if c.answered == 0 {
        bail!("no UDP answer from {target}");
    }
    Ok(c.finish("udp", target))
}

/// A `done` for the probes: true once `d` has passed since the call.
pub fn after(d: Duration) -> impl Fn() -> bool {
    let start = Instant::now();
    move || start.elapsed() >= d
}
