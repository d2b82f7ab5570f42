//! The UEs' traffic model and its scheduler. A [`Model`] says how often a UE does
//! something (`procedures_per_s` over all UEs, exponential inter-arrival times from a
//! seeded RNG, so a `seed` replays the same plan) and what, by weight: uplink data
//! (SERVICE REQUEST from idle), downlink data from the pdn host (paging from idle),
//! a periodic TAU, a move to another eNB (handover when connected, TAU when idle in
//! another TAC), a detach followed by a re-attach. Idle comes from inactivity
//! (`idle_after_ms`). A UE runs one procedure at a time; an event its state does not
//! allow is skipped and counted.
//!
//! Built-in models: `static` (attach, ping, detach at the end: the RAN before traffic
//! models) and `mixed` (all of the above over two eNBs). A TOML file may start from
//! one with `base = "mixed"` and change any field.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Which handovers a connected UE's move to another eNB makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handovers {
    /// Connected UEs do not move (e.g. against an MME without handover).
    None,
    X2,
    S1,
    /// X2 and S1 alternately, at random.
    Both,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Model {
    /// The built-in model a file starts from (only read from files).
    #[serde(skip_serializing)]
    pub base: Option<String>,
    /// Model events per second over all UEs; 0: none, UEs only ping.
    pub procedures_per_s: f64,
    /// A connected UE without signalling this long is released to ECM-IDLE; `None`:
    /// the RAN config's `idle_after_ms`.
    pub idle_after_ms: Option<u64>,
    /// A ping of an idle UE wakes it (SERVICE REQUEST); false: only `uplink` events do.
    pub pings_wake_idle: bool,
    /// Event weights (relative; 0 disables an event).
    pub uplink: f64,
    pub downlink: f64,
    pub periodic_tau: f64,
    pub mobility: f64,
    pub detach: f64,
    /// Pause between a detach and the UE's re-attach, ms.
    pub reattach_after_ms: u64,
    /// Handovers of connected UEs that move.
    pub handovers: Handovers,
    /// Tracking Area Updates (periodic, and normal for idle UEs that move to another
    /// TAC); false: those events are skipped (e.g. against an MME without TAU).
    pub tau: bool,
    /// eNBs to run when the RAN config lists none (see [`crate::Config::enb_list`]).
    pub enbs: usize,
}

impl Default for Model {
    /// `static`.
    fn default() -> Self {
        Model {
            base: None,
            procedures_per_s: 0.0,
            idle_after_ms: None,
            pings_wake_idle: true,
            uplink: 0.0,
            downlink: 0.0,
            periodic_tau: 0.0,
            mobility: 0.0,
            detach: 0.0,
            reattach_after_ms: 500,
            handovers: Handovers::None,
            tau: false,
            enbs: 1,
        }
    }
}

/// One thing a UE does, chosen by the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Uplink,
    Downlink,
    PeriodicTau,
    Move,
    Detach,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Uplink => "uplink",
            Event::Downlink => "downlink",
            Event::PeriodicTau => "periodic_tau",
            Event::Move => "mobility",
            Event::Detach => "detach",
        }
    }
}

pub const BUILT_IN: [&str; 2] = ["static", "mixed"];

impl Model {
    /// `mixed`: 50 events/s over all UEs (1000 UEs: one each per 20 s), idle after 2 s
    /// without signalling, downlink that pages, handovers and TAUs between two eNBs of
    /// two TACs.
    pub fn mixed() -> Model {
        Model {
            procedures_per_s: 50.0,
            idle_after_ms: Some(2_000),
            pings_wake_idle: false,
            uplink: 3.0,
            downlink: 3.0,
            periodic_tau: 1.0,
            mobility: 2.0,
            detach: 1.0,
            handovers: Handovers::Both,
            tau: true,
            enbs: 2,
            ..Model::default()
        }
    }

    pub fn built_in(name: &str) -> Option<Model> {
        match name {
            "static" => Some(Model::default()),
            "mixed" => Some(Model::mixed()),
            _ => None,
        }
    }

    /// `traffic` of the RAN config: a built-in name or a TOML file.
    pub fn resolve(traffic: &str) -> anyhow::Result<Model> {
        if let Some(m) = Model::built_in(traffic) {
            return Ok(m);
        }
        let path = Path::new(traffic);
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "traffic = {traffic:?}: neither a built-in model ({}) nor a readable file",
                BUILT_IN.join(", ")
            )
        })?;
        Model::from_toml(&text).with_context(|| format!("traffic model {}", path.display()))
    }

    /// A model file: its fields over those of its `base` (default `static`).
    pub fn from_toml(text: &str) -> anyhow::Result<Model> {
        let mut table: toml::Table = toml::from_str(text).context("invalid TOML")?;
        let base = match table.remove("base") {
            None => Model::default(),
            Some(toml::Value::String(b)) => Model::built_in(&b).with_context(|| {
                format!(
                    "base = {b:?}: not a built-in model ({})",
                    BUILT_IN.join(", ")
                )
            })?,
            Some(v) => anyhow::bail!("base = {v}: expected a built-in model's name"),
        };
        let mut merged = toml::Table::try_from(&base).context("model")?;
        merged.extend(table);
        let m: Model = merged.try_into().context("invalid traffic model")?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the values, naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.procedures_per_s.is_finite() && self.procedures_per_s >= 0.0,
            "procedures_per_s = {}: must be a number >= 0",
            self.procedures_per_s
        );
        for (name, w) in self.weights() {
            anyhow::ensure!(
                w.is_finite() && w >= 0.0,
                "{}: weight {w} must be a number >= 0",
                name.name()
            );
        }
        anyhow::ensure!(
            self.procedures_per_s == 0.0 || self.weights().iter().any(|(_, w)| *w > 0.0),
            "procedures_per_s = {} but every event weight (uplink, downlink, periodic_tau, \
             mobility, detach) is 0",
            self.procedures_per_s
        );
        anyhow::ensure!(
            self.idle_after_ms != Some(0),
            "idle_after_ms must be at least 1 (leave it out for no idle mode)"
        );
        anyhow::ensure!(self.enbs > 0, "enbs must be at least 1");
        Ok(())
    }

    fn weights(&self) -> [(Event, f64); 5] {
        [
            (Event::Uplink, self.uplink),
            (Event::Downlink, self.downlink),
            (Event::PeriodicTau, self.periodic_tau),
            (Event::Move, self.mobility),
            (Event::Detach, self.detach),
        ]
    }
}

/// One UE's plan: when its next event comes and which it is.
pub struct Schedule {
    rng: StdRng,
    /// Mean time between two events of this UE; `None`: no events.
    mean: Option<Duration>,
    weights: [(Event, f64); 5],
}

impl Schedule {
    /// UE number `ue` of `ues`: its own RNG stream of `seed`.
    pub fn new(model: &Model, seed: u64, ue: usize, ues: usize) -> Schedule {
        let per_ue = model.procedures_per_s / ues.max(1) as f64;
        Schedule {
            // Distinct, reproducible streams per UE (splitmix-style spreading of the index).
            rng: StdRng::seed_from_u64(seed ^ (ue as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            mean: (per_ue > 0.0).then(|| Duration::from_secs_f64(1.0 / per_ue)),
            weights: model.weights(),
        }
    }

    /// Time to the next event: exponential with the model's mean; `None` for no events.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let mean = self.mean?;
        let u: f64 = self.rng.gen();
        Some(mean.mul_f64(-(1.0 - u).ln()))
    }

    /// The next event, by weight.
    pub fn pick(&mut self) -> Event {
        let total: f64 = self.weights.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.gen::<f64>() * total;
        for (e, w) in self.weights {
            if x < w {
                return e;
            }
            x -= w;
        }
        // Rounding at the top end: the last event with a weight.
        self.weights
            .iter()
            .rev()
            .find(|(_, w)| *w > 0.0)
            .map_or(Event::Uplink, |(e, _)| *e)
    }

    /// A fair coin of this UE's stream (e.g. X2 or S1 for [`Handovers::Both`]).
    pub fn coin(&mut self) -> bool {
        self.rng.gen()
    }

    /// An index in `0..n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_and_files() {
        assert_eq!(Model::resolve("static").unwrap(), Model::default());
        assert_eq!(Model::resolve("mixed").unwrap(), Model::mixed());
        let m = Model::from_toml("base = \"mixed\"\nhandovers = \"none\"\ntau = false").unwrap();
        assert_eq!(
            m,
            Model {
                handovers: Handovers::None,
                tau: false,
                ..Model::mixed()
            }
        );
        let m = Model::from_toml("procedures_per_s = 5.0\ndownlink = 1.0").unwrap();
        assert_eq!((m.procedures_per_s, m.downlink, m.uplink), (5.0, 1.0, 0.0));
    }

    /// Bad files and names give errors naming what is wrong.
    #[test]
    fn bad_models_are_named() {
        let err = |t: &str| format!("{:#}", Model::from_toml(t).unwrap_err());
        assert!(err("bogus = 1").contains("bogus"));
        assert!(err("procedures_per_s = -1.0").contains("procedures_per_s"));
        assert!(err("procedures_per_s = \"fast\"").contains("procedures_per_s"));
        assert!(err("procedures_per_s = 1.0").contains("every event weight"));
        assert!(err("base = \"busy\"").contains("base = \"busy\""));
        assert!(err("handovers = \"x3\"").contains("x3"));
        assert!(err("uplink = -2.0").contains("uplink"));
        assert!(err("idle_after_ms = 0").contains("idle_after_ms"));
        assert!(err("enbs = 0").contains("enbs"));
        assert!(err("[[").contains("invalid TOML"));
        let e = format!(
            "{:#}",
            Model::resolve("/nonexistent/model.toml").unwrap_err()
        );
        assert!(
            e.contains("/nonexistent/model.toml") && e.contains("static, mixed"),
            "{e}"
        );
    }

    /// Same seed, same plan; another UE or seed, another plan; the mean and the weights
    /// hold over many draws.
    #[test]
    fn schedule_is_seeded_exponential_and_weighted() {
        let m = Model::mixed();
        let plan = |seed, ue| {
            let mut s = Schedule::new(&m, seed, ue, 1000);
            (0..50)
                .map(|_| (s.next_delay().unwrap(), s.pick()))
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(7, 3), plan(7, 3));
        assert_ne!(plan(7, 3), plan(7, 4));
        assert_ne!(plan(7, 3), plan(8, 3));
        // 1000 UEs at 50/s: one event per UE every 20 s on average.
        let mut s = Schedule::new(&m, 1, 0, 1000);
        let n = 20_000;
        let mut counts = std::collections::HashMap::new();
        let mut total = Duration::ZERO;
        for _ in 0..n {
            total += s.next_delay().unwrap();
            *counts.entry(s.pick()).or_insert(0u32) += 1;
        }
        let mean = total.as_secs_f64() / n as f64;
        assert!((mean - 20.0).abs() < 1.0, "mean {mean}");
        // Weights 3:3:1:2:1 of 10.
        let share = |e| f64::from(counts[&e]) / n as f64;
        assert!((share(Event::Uplink) - 0.3).abs() < 0.02);
        assert!((share(Event::PeriodicTau) - 0.1).abs() < 0.02);
        assert!((share(Event::Detach) - 0.1).abs() < 0.02);
        assert!(Schedule::new(&Model::default(), 1, 0, 10)
            .next_delay()
            .is_none());
    }
}
