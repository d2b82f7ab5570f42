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

/// A flavor by name: one of [`FLAVORS`], or a size spelled out as `<vCPUs>cpu-<RAM>gb` or
/// `...mb` (e.g. `1cpu-2gb`, the paper's Table 4 small, or `1cpu-8gb` for RAM varied at a
/// fixed vCPU count, Fig. 9(b)). The name stays usable as an identifier (letters, digits, '-').
pub fn flavor(name: &str) -> Result<Flavor> {
    if let Some((_, f)) = FLAVORS.iter().find(|(n, _)| *n == name) {
        return Ok(*f);
    }
    if let Some(f) = spelled_out(name) {
        return Ok(f);
    }
    let names: Vec<_> = FLAVORS.iter().map(|(n, _)| *n).collect();
    bail!(
        "unknown flavor {name:?}; choose one of {}, or spell one out as <vCPUs>cpu-<RAM>gb (e.g. 2cpu-4gb)",
        names.join(", ")
    )
}

/// `2cpu-4gb`, `1cpu-512mb`: 1 to 64 vCPUs, 64 MB to 256 GB.
fn spelled_out(name: &str) -> Option<Flavor> {
    let (cpus, ram) = name.split_once("cpu-")?;
    let cpus: u32 = cpus.parse().ok().filter(|c| (1..=64).contains(c))?;
    let (n, unit) = ram.split_at(ram.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let memory_mb = match unit {
        "gb" => n.checked_mul(1024)?,
        "mb" => n,
        _ => return None,
    };
    (64..=256 * 1024).contains(&memory_mb).then_some(Flavor {
        cpus: cpus.into(),
        memory_mb,
    })
}

impl Flavor {
    /// CFS period and quota in microseconds for `cpus` CPUs.
    pub fn cfs(&self) -> (u64, i64) {
        let period = 100_000u64;
        (period, (self.cpus * period as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_spelled_out_flavors() {
        assert_eq!(flavor("small").unwrap().memory_mb, 256);
        let f = flavor("2cpu-4gb").unwrap();
        assert_eq!((f.cpus, f.memory_mb), (2.0, 4096));
        assert_eq!(flavor("1cpu-512mb").unwrap().memory_mb, 512);
        for bad in [
            "",
            "huge",
            "0cpu-2gb",
            "65cpu-2gb",
            "1cpu-2tb",
            "1cpu-",
            "cpu-2gb",
            "1.5cpu-2gb",
            "1cpu-32mb",
            "1cpu-999999999999999999gb",
            "1cpu-2gbx",
        ] {
            let e = flavor(bad).unwrap_err().to_string();
            assert!(e.contains("unknown flavor"), "{bad}: {e}");
        }
    }
}
