//! MME configuration (TOML). `Default` is the lab of docs/conventions.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// S1-MME: SCTP over UDP (RFC 6951) server address.
    pub s1_bind: SocketAddr,
    /// HSS S6a Diameter server.
    pub hss: SocketAddr,
    /// SPGW S11 GTPv2-C address.
    pub spgw_s11: SocketAddr,
    /// Local S11 socket.
    pub s11_bind: SocketAddr,
    /// Address put in our S11 F-TEID (the MME's service IP).
    pub s11_address: Ipv4Addr,
    pub mcc: String,
    pub mnc: String,
    /// TACs served (the TAI list given to UEs).
    pub tacs: Vec<u16>,
    pub mme_group_id: u16,
    pub mme_code: u8,
    pub mme_name: String,
    pub relative_capacity: u8,
    /// Diameter identity.
    pub origin_host: String,
    pub origin_realm: String,
    /// Host-IP-Address in CER.
    pub advertised_ip: IpAddr,
    pub hss_realm: String,
    /// Diameter watchdog (DWR) interval, seconds (RFC 3539 allows down to 6).
    pub diameter_watchdog_s: u64,
    /// APN used when neither the UE nor the subscription names one.
    pub default_apn: String,
    /// T3412 (periodic TAU) as a GPRS timer octet (0x49 = 54 min).
    pub t3412: u8,
    /// SCTP tuning (the `[sctp]` table, see proto-sctp).
    pub sctp: proto_sctp::SctpTuning,
    /// S11 request timeout (T3) in ms and retransmissions (N3), TS 29.274 §7.6.
    pub s11_t3_ms: u64,
    pub s11_n3: u32,
    /// T3413 in ms: how long a paging waits for the UE's SERVICE REQUEST before it is
    /// sent again (TS 24.301 §10.2: network dependent).
    pub t3413_ms: u64,
    /// Pagings sent again after the first before the MME gives up and tells the SGW
    /// (TS 23.401 §5.3.4.3: the repetition strategy is the operator's).
    pub paging_retries: u32,
    /// NAS retransmission timers in ms (TS 24.301 §10.2, 6 s each by default): T3450
    /// supervises ATTACH ACCEPT, TRACKING AREA UPDATE ACCEPT and GUTI REALLOCATION
    /// COMMAND, T3460 AUTHENTICATION REQUEST and SECURITY MODE COMMAND, T3470 IDENTITY
    /// REQUEST, T3422 the network's DETACH REQUEST. Each message is sent again on the
    /// first four expiries; the fifth aborts the procedure.
    pub t3450_ms: u64,
    pub t3460_ms: u64,
    pub t3470_ms: u64,
    pub t3422_ms: u64,
    /// Mobile reachable timer in ms, run while a UE is ECM-IDLE; on expiry the UE is
    /// implicitly detached (TS 24.301 §5.3.7). `None`: T3412 + 4 min, the spec's
    /// default (and no timer when T3412 is deactivated).
    pub mobile_reachable_ms: Option<u64>,
    /// TS1RELOCoverall in ms (TS 36.413 §8.4.1): how long an S1 handover may take from
    /// the HANDOVER REQUEST to the target's HANDOVER NOTIFY before the MME gives it up.
    pub ts1relocoverall_ms: u64,
    /// Write all S1-MME datagrams (SCTP over UDP) to this pcap file; `None`: off.
    pub s1_pcap: Option<PathBuf>,
    /// JSON dump of the UE contexts, rewritten on every change; `None` disables it.
    pub state_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            s1_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, proto_sctp::SCTP_UDP_PORT)),
            hss: SocketAddr::from((Ipv4Addr::new(10, 77, 1, 10), 3868)),
            spgw_s11: SocketAddr::from((Ipv4Addr::new(10, 77, 1, 30), proto_gtpv2c::GTPC_PORT)),
            s11_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, proto_gtpv2c::GTPC_PORT)),
            s11_address: Ipv4Addr::new(10, 77, 1, 20),
            mcc: "001".into(),
            mnc: "01".into(),
            tacs: vec![1],
            mme_group_id: 1,
            mme_code: 1,
            mme_name: "corehop-mme".into(),
            relative_capacity: 255,
            origin_host: "mme.corehop.lab".into(),
            origin_realm: "corehop.lab".into(),
            advertised_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 20)),
            hss_realm: "corehop.lab".into(),
            diameter_watchdog_s: 6,
            default_apn: "internet".into(),
            t3412: 0x49,
            sctp: Default::default(),
            s11_t3_ms: 1000,
            s11_n3: 3,
            t3413_ms: 2000,
            paging_retries: 2,
            t3450_ms: 6000,
            t3460_ms: 6000,
            t3470_ms: 6000,
            t3422_ms: 6000,
            mobile_reachable_ms: None,
            ts1relocoverall_ms: 10_000,
            s1_pcap: None,
            state_file: Some(PathBuf::from("/run/corehop/mme-ues.json")),
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).context("invalid MME config")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read MME config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks values that would otherwise fail later, naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.plmn()?;
        if self.tacs.is_empty() || self.tacs.len() > 16 {
            anyhow::bail!("tacs: give 1 to 16 tracking area codes");
        }
        self.sctp.validate().map_err(anyhow::Error::msg)?;
        if self.s11_t3_ms == 0 {
            anyhow::bail!("s11_t3_ms must be > 0");
        }
        for (name, ms) in [
            ("t3413_ms", self.t3413_ms),
            ("t3450_ms", self.t3450_ms),
            ("t3460_ms", self.t3460_ms),
            ("t3470_ms", self.t3470_ms),
            ("t3422_ms", self.t3422_ms),
            ("mobile_reachable_ms", self.mobile_reachable_ms.unwrap_or(1)),
            ("ts1relocoverall_ms", self.ts1relocoverall_ms),
        ] {
            if ms == 0 {
                anyhow::bail!("{name} must be > 0");
            }
        }
        Ok(())
    }

    /// The PLMN identity octets of mcc/mnc.
    pub fn plmn(&self) -> anyhow::Result<[u8; 3]> {
        proto_nas::plmn(&self.mcc, &self.mnc)
            .map_err(|e| anyhow::anyhow!("mcc = {:?}, mnc = {:?}: {e}", self.mcc, self.mnc))
    }

    /// The periodic TAU timer T3412 of the `t3412` GPRS timer octet (TS 24.008
    /// §10.5.7.3: units of 2 s, 1 min or 6 min in bits 6-8); `None` if deactivated.
    pub fn t3412(&self) -> Option<Duration> {
        let value = u64::from(self.t3412 & 0x1f);
        let unit = match self.t3412 >> 5 {
            0 => 2,
            1 => 60,
            2 => 360,
            // Unit value 7 is "deactivated"; other values are read as 1 min (§10.5.7.3).
            7 => return None,
            _ => 60,
        };
        Some(Duration::from_secs(value * unit))
    }

    /// The mobile reachable timer: `mobile_reachable_ms`, else T3412 + 4 min.
    pub fn mobile_reachable(&self) -> Option<Duration> {
        match self.mobile_reachable_ms {
            Some(ms) => Some(Duration::from_millis(ms)),
            None => self.t3412().map(|t| t + Duration::from_secs(240)),
        }
    }

    pub fn sctp_config(&self) -> proto_sctp::SctpConfig {
        proto_sctp::SctpConfig {
            pcap: self.s1_pcap.clone(),
            ..self.sctp.config()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_defaults_and_errors() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.plmn().unwrap(), [0x00, 0xf1, 0x10]);
        let c = Config::from_toml("hss = \"127.0.0.1:3868\"\n[sctp]\nrto_min_ms = 50").unwrap();
        assert_eq!(c.hss.port(), 3868);
        assert_eq!(c.sctp_config().rto_min_ms, 50);
        assert!(Config::from_toml("nonsense = 1").is_err());
        assert!(Config::from_toml("mcc = \"1x1\"").is_err());
        assert!(Config::from_toml("tacs = []").is_err());
        for zero in [
            "t3450_ms",
            "t3460_ms",
            "t3470_ms",
            "t3422_ms",
            "mobile_reachable_ms",
            "ts1relocoverall_ms",
        ] {
            let err = Config::from_toml(&format!("{zero} = 0")).unwrap_err();
            assert!(format!("{err:#}").contains(zero), "{err:#}");
        }
        // What `corehop nf config mme` prints parses back to the same config.
        let text = toml::to_string(&Config::default()).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), Config::default());
    }

    #[test]
    fn t3412_and_mobile_reachable() {
        let mut c = Config::default();
        // 0x49: 9 x 6 min; the mobile reachable timer is 4 min longer.
        assert_eq!(c.t3412(), Some(Duration::from_secs(54 * 60)));
        assert_eq!(c.mobile_reachable(), Some(Duration::from_secs(58 * 60)));
        c.t3412 = 0x05; // 5 x 2 s
        assert_eq!(c.t3412(), Some(Duration::from_secs(10)));
        c.t3412 = 0x21; // 1 x 1 min
        assert_eq!(c.t3412(), Some(Duration::from_secs(60)));
        c.t3412 = 0xe0;
        assert_eq!((c.t3412(), c.mobile_reachable()), (None, None));
        c.mobile_reachable_ms = Some(1500);
        assert_eq!(c.mobile_reachable(), Some(Duration::from_millis(1500)));
    }
}
