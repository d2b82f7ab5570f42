//! HSS configuration (TOML). Every field has the lab default of docs/conventions.md, so an
//! empty file is a valid configuration.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// S6a listen address.
    pub listen: SocketAddr,
    /// Host-IP-Address advertised in CEA: the HSS service IP, which moves with the function.
    pub advertised_ip: IpAddr,
    pub origin_host: String,
    pub origin_realm: String,
    /// SQLite subscriber database (on the container's tmpfs in the lab).
    pub db_path: PathBuf,
    /// CSV imported at start when the database has no subscribers (read-only config).
    pub subscribers_file: Option<PathBuf>,
    /// APN given to every subscriber in ULA.
    pub apn: String,
    /// UE-AMBR and APN-AMBR, bit/s.
    pub ambr_uplink_bps: u32,
    pub ambr_downlink_bps: u32,
    /// QCI and ARP priority of the default bearer.
    pub qci: u32,
    pub arp_priority: u32,
    /// Subscribed-Periodic-RAU-TAU-Timer in every ULA, seconds (default 54 min, T3412's
    /// default in TS 24.301 Table 10.2.1).
    pub periodic_tau_timer_secs: u32,
    /// Upper bound on vectors per AIR (Number-Of-Requested-Vectors is capped to this).
    pub max_vectors: u32,
    /// Where SIGHUP writes every registration (IMSI, serving MME, purged) as JSON, read
    /// from the database by this process; `None` disables it.
    pub registrations_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 3868)),
            advertised_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 10)),
            origin_host: "hss.corehop.lab".into(),
            origin_realm: "corehop.lab".into(),
            db_path: PathBuf::from("/var/lib/corehop/hss.db"),
            subscribers_file: None,
            apn: "internet".into(),
            ambr_uplink_bps: 100_000_000,
            ambr_downlink_bps: 200_000_000,
            qci: 9,
            arp_priority: 8,
            max_vectors: 5,
            periodic_tau_timer_secs: 54 * 60,
            registrations_file: Some(PathBuf::from("/run/corehop/hss-registrations.json")),
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read HSS config {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| anyhow::anyhow!("HSS config {}: {e}", path.display()))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.origin_host.is_empty(),
            "origin_host must not be empty"
        );
        anyhow::ensure!(
            !self.origin_realm.is_empty(),
            "origin_realm must not be empty"
        );
        anyhow::ensure!(!self.apn.is_empty(), "apn must not be empty");
        anyhow::ensure!(
            (1..=9).contains(&self.qci),
            "qci {} is not a standardized non-GBR/GBR QCI 1..9",
            self.qci
        );
        anyhow::ensure!(
            (1..=15).contains(&self.arp_priority),
            "arp_priority {} is outside 1..15",
            self.arp_priority
        );
        anyhow::ensure!(
            (1..=32).contains(&self.max_vectors),
            "max_vectors {} is outside 1..32",
            self.max_vectors
        );
        Ok(())
    }
}
