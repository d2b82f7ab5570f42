//! Request-reply probes against a counter service (`corehop testsvc`): one TCP connection
//! held for the whole run, or UDP datagrams, every `interval`. The longest silence between
//! two answers is the downtime the client saw; the counter tells whether state survived.
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Default)]
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
    /// When (ms since start) that gap began.
    pub max_gap_at_ms: f64,
    pub duration_ms: f64,
}

struct Tracker {
    r: ProbeReport,
    start: Instant,
    last_answer: Instant,
}

impl Tracker {
    fn new(proto: &str, target: SocketAddr) -> Self {
        let now = Instant::now();
        Tracker {
            r: ProbeReport {
                proto: proto.into(),
                target: target.to_string(),
                counter_consecutive: true,
                ..Default::default()
            },
            start: now,
            last_answer: now,
        }
    }

    fn answer(&mut self, counter: u64) {
        let now = Instant::now();
        if self.r.answered > 0 {
            let gap = (now - self.last_answer).as_secs_f64() * 1e3;
            if gap > self.r.max_gap_ms {
                self.r.max_gap_ms = gap;
                self.r.max_gap_at_ms = (self.last_answer - self.start).as_secs_f64() * 1e3;
            }
        }
        if let Some(prev) = self.r.last_counter {
            if counter != prev + 1 {
                self.r.counter_consecutive = false;
            }
        }
        self.r.first_counter.get_or_insert(counter);
        self.r.last_counter = Some(counter);
        self.r.answered += 1;
        self.last_answer = now;
    }

    fn finish(mut self) -> ProbeReport {
        self.r.duration_ms = self.start.elapsed().as_secs_f64() * 1e3;
        self.r
    }
}

fn parse_counter(s: &str) -> Result<u64> {
    s.trim()
        .parse()
        .with_context(|| format!("the service answered {s:?}, not a counter"))
}

/// Holds one TCP connection; each request is `inc`, each answer the new counter value.
pub fn tcp(target: SocketAddr, interval: Duration, duration: Duration) -> Result<ProbeReport> {
    let mut t = Tracker::new("tcp", target);
    let connect = || -> Result<(TcpStream, BufReader<TcpStream>)> {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .with_context(|| format!("cannot connect to {target}"))?;
        s.set_nodelay(true)?;
        // A frozen service answers late, not never: wait long enough for any migration.
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = BufReader::new(s.try_clone()?);
        Ok((s, r))
    };
    let (mut w, mut r) = connect()?;
    let mut line = String::new();
    while t.start.elapsed() < duration {
        let tick = Instant::now();
        t.r.sent += 1;
        line.clear();
        let ok = w.write_all(b"inc\n").is_ok() && matches!(r.read_line(&mut line), Ok(n) if n > 0);
        if ok {
            t.answer(parse_counter(&line)?);
        } else {
            t.r.reconnects += 1;
            (w, r) = connect()?;
        }
        if let Some(rest) = interval.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(t.finish())
}

/// One datagram `inc` per interval; a datagram lost while the service moves is just lost.
pub fn udp(target: SocketAddr, interval: Duration, duration: Duration) -> Result<ProbeReport> {
    let mut t = Tracker::new("udp", target);
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(target)?;
    s.set_read_timeout(Some(interval.max(Duration::from_millis(1))))?;
    let mut buf = [0u8; 64];
    while t.start.elapsed() < duration {
        let tick = Instant::now();
        t.r.sent += 1;
        s.send(b"inc")?;
        while let Some(rest) = interval.checked_sub(tick.elapsed()) {
            s.set_read_timeout(Some(rest.max(Duration::from_micros(100))))?;
            match s.recv(&mut buf) {
                Ok(n) => {
                    let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
                    t.answer(parse_counter(text)?);
                }
                Err(_) => break,
            }
        }
    }
    // UDP loses requests during the move, so only monotonic growth is expected.
    let r = t.finish();
    if r.answered == 0 {
        bail!("no UDP answer from {target} in {duration:?}");
    }
    Ok(r)
}
