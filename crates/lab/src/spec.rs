//! The lab description: which hosts exist, their addresses and link rates.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

/// Port every agent listens on, on its host's fabric address.
pub const AGENT_PORT: u16 = 7070;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// Prefix length of the fabric subnet shared by hosts and service IPs.
    #[serde(default = "default_prefix")]
    pub prefix_len: u8,
    /// Address of the controller (the root namespace) on the fabric bridge.
    #[serde(default = "default_controller")]
    pub controller: Ipv4Addr,
    #[serde(rename = "host")]
    pub hosts: Vec<HostSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    pub addr: Ipv4Addr,
    /// Link rate of the host's NIC in tc syntax ("1gbit", "100mbit"); unshaped when absent.
    #[serde(default)]
    pub rate: Option<String>,
    /// Memory this emulated host offers to VMs (MiB); the machine's when absent.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// CPU models this emulated host's processors support (QEMU names); every model its
    /// QEMU knows when absent. Lets one machine emulate hosts of different CPU families.
    #[serde(default)]
    pub cpu_models: Option<Vec<String>>,
    /// The machine's CPUs this host runs on, as a cpuset list (`"0"`, `"2-3"`, `"0,2"`):
    /// its agent, and what the agent starts (functions, CRIU, QEMU, CPU load). Hosts on CPUs
    /// of their own do not slow each other down (the paper's Fig. 12). Every CPU when absent.
    #[serde(default)]
    pub cpus: Option<String>,
}

fn default_prefix() -> u8 {
    16
}
fn default_controller() -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 254)
}

impl Default for LabSpec {
    fn default() -> Self {
        let host = |name: &str, last: u8| HostSpec {
            name: name.into(),
            addr: Ipv4Addr::new(10, 77, 0, last),
            rate: None,
            memory_mb: None,
            cpu_models: None,
            cpus: None,
        };
        LabSpec {
            prefix_len: default_prefix(),
            controller: default_controller(),
            hosts: vec![
                host("node-a", 11),
                host("node-b", 12),
                host("ran", 21),
                host("pdn", 31),
            ],
        }
    }
}

impl LabSpec {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read lab file {}", path.display()))?;
        let spec: LabSpec = toml::from_str(&text).with_context(|| {
            format!("lab file {} is not a valid lab description", path.display())
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() {
            bail!("the lab has no hosts");
        }
        if !(8..=30).contains(&self.prefix_len) {
            bail!("prefix_len {} is out of range 8..=30", self.prefix_len);
        }
        for (i, h) in self.hosts.iter().enumerate() {
            validate_name(&h.name, "host")?;
            if let Some(rate) = &h.rate {
                parse_rate_bits(rate)
                    .with_context(|| format!("host {}: bad rate {rate:?}", h.name))?;
            }
            if let Some(cpus) = &h.cpus {
                let online = std::thread::available_parallelism().map_or(1, |n| n.get());
                let list = parse_cpu_list(cpus)
                    .with_context(|| format!("host {}: bad cpus {cpus:?}", h.name))?;
                if let Some(c) = list.iter().find(|&&c| c >= online) {
                    bail!(
                        "host {}: CPU {c} is not one of this machine's {online}",
                        h.name
                    );
                }
            }
            if self.hosts[..i]
                .iter()
                .any(|o| o.name == h.name || o.addr == h.addr)
            {
                bail!("host {} repeats another host's name or address", h.name);
            }
            if h.addr == self.controller {
                bail!("host {} uses the controller's address {}", h.name, h.addr);
            }
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> Result<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name).with_context(|| {
            let names: Vec<_> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            format!("unknown host {name:?}; the lab has: {}", names.join(", "))
        })
    }
}

/// The CPUs of a cpuset list (`0`, `0-1`, `0,2-3`), in order, without repeats.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
        if a > b || b >= 1024 {
            bail!("{part:?} is not a CPU range");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Names end up in interface and namespace names (15 bytes max) and in paths, so they are
/// short and plain: this also rules out path traversal through a name.
pub fn validate_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 10
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        bail!("invalid {what} name {name:?}: use 1-10 characters of a-z, 0-9 and '-'");
    }
    Ok(())
}

/// Parses a tc rate ("1gbit", "100mbit", "500kbit", "10000bit") into bits per second.
pub fn parse_rate_bits(rate: &str) -> Result<u64> {
    let r = rate.trim().to_ascii_lowercase();
    let (num, mult) = [
        ("gbit", 1_000_000_000),
        ("mbit", 1_000_000),
        ("kbit", 1_000),
        ("bit", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| r.strip_suffix(suffix).map(|n| (n, *m)))
    .with_context(|| format!("rate {rate:?} needs a unit: gbit, mbit, kbit or bit"))?;
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("rate {rate:?} is not a number"))?;
    if n.is_nan() || n <= 0.0 {
        bail!("rate {rate:?} must be positive");
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lab_is_valid_and_has_the_four_hosts() {
        let spec = LabSpec::default();
        spec.validate().unwrap();
        let names: Vec<_> = spec.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b", "ran", "pdn"]);
    }

    #[test]
    fn cpu_lists_parse_and_bad_ones_name_the_host() {
        assert_eq!(parse_cpu_list("0").unwrap(), [0]);
        assert_eq!(parse_cpu_list("2-3,0,3").unwrap(), [0, 2, 3]);
        for bad in ["", "a", "3-1", "0-", "-1", "0,,1", "5000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
        let mut spec = LabSpec::default();
        spec.hosts[0].cpus = Some("0".into());
        spec.validate().unwrap();
        spec.hosts[1].cpus = Some("1023".into());
        let e = format!("{:#}", spec.validate().unwrap_err());
        assert!(e.contains("node-b") && e.contains("1023"), "{e}");
        spec.hosts[1].cpus = Some("x".into());
        assert!(format!("{:#}", spec.validate().unwrap_err()).contains("bad cpus"));
    }

    #[test]
    fn names_and_rates_are_checked() {
        assert!(validate_name("../etc", "host").is_err());
        assert!(validate_name("averyverylongname", "host").is_err());
        assert!(validate_name("node-a", "host").is_ok());
        assert_eq!(parse_rate_bits("1gbit").unwrap(), 1_000_000_000);
        assert_eq!(parse_rate_bits("2.5mbit").unwrap(), 2_500_000);
        assert!(parse_rate_bits("fast").is_err());
        assert!(parse_rate_bits("-1mbit").is_err());
    }

    #[test]
    fn lab_file_parses_and_rejects_duplicates() {
        let text = "[[host]]\nname = \"a\"\naddr = \"10.77.0.1\"\nrate = \"100mbit\"\n\
                    [[host]]\nname = \"a\"\naddr = \"10.77.0.2\"\n";
        let spec: LabSpec = toml::from_str(text).unwrap();
        assert!(spec.validate().is_err());
        assert!(toml::from_str::<LabSpec>("[[host]]\nname = \"a\"\nbogus = 1\n").is_err());
    }
}
