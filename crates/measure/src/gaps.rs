//! Outages seen by a probe: the gaps between successive successes (answers, packets)
//! with timestamps both relative to the probe's start and as UNIX time, so that a
//! migration's downtime window (taken by the controller's clock) can be laid over them.
//! Shared by the RAN emulator's DP_GTP/CP_S1-MME series and the lab's own probes.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The run's time base: one monotonic instant paired with the wall clock at that instant.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_ms: f64,
}

impl Clock {
    pub fn new() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start: Instant::now(),
            start_unix_ms: unix.as_secs_f64() * 1e3,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// ms since the start of the run.
    pub fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64() * 1e3
    }

    /// UNIX time of `t` in ms (monotonic offset added to the wall clock at start, so a
    /// wall-clock step during the run does not distort intervals).
    pub fn unix_ms(&self, t: Instant) -> u64 {
        (self.start_unix_ms + self.ms(t)).round() as u64
    }

    pub fn start_unix_ms(&self) -> u64 {
        self.start_unix_ms.round() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// An interval without a successful answer, longer than the series' threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// Last success before the outage (or the start of the series), ms since run start.
    pub start_ms: f64,
    /// First success after it (or the end of the series if never recovered).
    pub end_ms: f64,
    pub duration_ms: f64,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// False when the series ended before service came back.
    pub recovered: bool,
}

impl Outage {
    /// Whether this outage overlaps the UNIX-ms window `[from, to]`.
    pub fn overlaps_unix(&self, from: u64, to: u64) -> bool {
        self.start_unix_ms <= to && self.end_unix_ms >= from
    }
}

/// Longest outage and every outage above `threshold_ms` of one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub threshold_ms: f64,
    pub longest: Option<Outage>,
    pub outages: Vec<Outage>,
    /// Outages beyond [`MAX_OUTAGES`] that were counted but not listed.
    pub outages_dropped: u64,
}

/// Bound on the outages listed per series (a broken tunnel pinged at 1 ms for hours
/// must not grow the report without limit).
pub const MAX_OUTAGES: usize = 1000;

impl Series {
    /// The outages overlapping a UNIX-ms window, e.g. a migration's downtime.
    pub fn overlapping(&self, from_unix_ms: u64, to_unix_ms: u64) -> Vec<Outage> {
        self.outages
            .iter()
            .filter(|o| o.overlaps_unix(from_unix_ms, to_unix_ms))
            .copied()
            .collect()
    }
}

/// Tracks the gaps between successive successes of a probe (pings of one UE, or S1AP
/// answers). A gap runs from one success to the next; the series starts with a virtual
/// success at [`GapTracker::new`] so that "never answered" is an outage too.
#[derive(Debug, Clone)]
pub struct GapTracker {
    clock: Clock,
    last_ok: Instant,
    threshold: Duration,
    series: Series,
}

impl GapTracker {
    pub fn new(clock: Clock, now: Instant, threshold: Duration) -> GapTracker {
        GapTracker {
            clock,
            last_ok: now,
            threshold,
            series: Series {
                threshold_ms: threshold.as_secs_f64() * 1e3,
                ..Default::default()
            },
        }
    }

    /// A success at `now`.
    pub fn ok(&mut self, now: Instant) {
        self.close_gap(now, true);
        self.last_ok = now.max(self.last_ok);
    }

    fn close_gap(&mut self, now: Instant, recovered: bool) {
        let gap = now.saturating_duration_since(self.last_ok);
        let o = Outage {
            start_ms: self.clock.ms(self.last_ok),
            end_ms: self.clock.ms(now),
            duration_ms: gap.as_secs_f64() * 1e3,
            start_unix_ms: self.clock.unix_ms(self.last_ok),
            end_unix_ms: self.clock.unix_ms(now),
            recovered,
        };
        let longer = match self.series.longest {
            Some(l) => o.duration_ms > l.duration_ms,
            None => true,
        };
        if longer {
            self.series.longest = Some(o);
        }
        if gap > self.threshold {
            if self.series.outages.len() < MAX_OUTAGES {
                self.series.outages.push(o);
            } else {
                self.series.outages_dropped += 1;
            }
        }
    }

    /// Ends the series at `now`: the time since the last success is a gap too (not
    /// recovered), so a tunnel that broke and never came back shows up.
    pub fn finish(mut self, now: Instant) -> Series {
        if now > self.last_ok {
            self.close_gap(now, false);
        }
        self.series
    }

    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// The series so far (without the open gap).
    pub fn snapshot(&self) -> Series {
        self.series.clone()
    }
}

/// The longest of `outages`, in ms (`None` when there is none).
pub fn longest(outages: &[Outage]) -> Option<f64> {
    outages.iter().map(|o| o.duration_ms).reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_between_successes_and_open_tail() {
        let clock = Clock::new();
        let t0 = clock.start();
        let ms = Duration::from_millis;
        let mut g = GapTracker::new(clock, t0, ms(30));
        g.ok(t0 + ms(10));
        g.ok(t0 + ms(20));
        g.ok(t0 + ms(120)); // 100 ms outage from 20 to 120
        g.ok(t0 + ms(130));
        let s = g.finish(t0 + ms(200)); // 70 ms tail, not recovered
        let l = s.longest.unwrap();
        assert_eq!((l.start_ms, l.end_ms, l.duration_ms), (20.0, 120.0, 100.0));
        assert!(l.recovered);
        assert_eq!(l.end_unix_ms - l.start_unix_ms, 100);
        assert_eq!(s.outages.len(), 2);
        assert!(!s.outages[1].recovered);
        assert_eq!(s.outages[1].duration_ms, 70.0);
        let start = clock.start_unix_ms();
        assert_eq!(s.overlapping(start + 50, start + 60).len(), 1);
        assert_eq!(s.overlapping(start + 125, start + 128).len(), 0);
    }

    #[test]
    fn never_answered_is_one_unrecovered_outage() {
        let clock = Clock::new();
        let t0 = clock.start();
        let g = GapTracker::new(clock, t0, Duration::from_millis(5));
        let s = g.finish(t0 + Duration::from_millis(50));
        assert_eq!(s.outages.len(), 1);
        assert!(!s.longest.unwrap().recovered);
    }
}
