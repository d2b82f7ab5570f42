//! Flavors: the CPU quota and memory limit a function gets, as cloud flavors do for VMs.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Flavor {
    pub cpus: f64,
    pub memory_mb: u64,
}

pub const FLAVORS: &[(&str, Flavor)] = &[
    (
        "tiny",
        Flavor {
            cpus: 0.25,
            memory_mb: 128,
        },
    ),
    (
        "small",
        Flavor {
            cpus: 0.5,
            memory_mb: 256,
        },
    ),
    (
        "medium",
        Flavor {
            cpus: 1.0,
            memory_mb: 512,
        },
    ),
    (
        "large",
        Flavor {
            cpus: 2.0,
            memory_mb: 1024,
        },
    ),
];

pub const DEFAULT_FLAVOR: &str = "medium";

pub fn flavor(name: &str) -> Result<Flavor> {
    match FLAVORS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => Ok(*f),
        None => {
            let names: Vec<_> = FLAVORS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown flavor {name:?}; choose one of {}",
                names.join(", ")
            )
        }
    }
}

impl Flavor {
    /// CFS period and quota in microseconds for `cpus` CPUs.
    pub fn cfs(&self) -> (u64, i64) {
        let period = 100_000u64;
        (period, (self.cpus * period as f64) as i64)
    }
}
