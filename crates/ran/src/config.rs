//! RAN emulator configuration (TOML/JSON via serde). `Default` is the lab of
//! docs/conventions.md: the eNB on the `ran` host (10.77.0.21) towards the MME
//! service IP 10.77.1.20, pinging the pdn host 10.77.0.31.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::traffic::Model;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The MME's S1-MME endpoint: SCTP over UDP (RFC 6951).
    pub mme: SocketAddr,
    /// Local address the eNB binds for S1-MME (any port) and S1-U (UDP 2152).
    pub bind: IpAddr,
    /// S1-U address put in the eNB's F-TEID (INITIAL CONTEXT SETUP RESPONSE).
    pub s1u_address: Ipv4Addr,
    /// UDP port of the eNB's GTP-U endpoint (2152 on the wire; tests may move it).
    pub gtpu_port: u16,
    /// Macro eNB ID (20 bits). The cell identity is `enb_id << 8 | 1`.
    pub enb_id: u32,
    pub enb_name: String,
    pub mcc: String,
    pub mnc: String,
    pub tac: u16,
    /// Number of UEs to attach.
    pub ues: usize,
    /// Subscriber CSV (`imsi,k,opc,amf,sqn[,msisdn]`, the HSS's format): the USIMs.
    pub subscribers: PathBuf,
    /// Row (0-based, after the header) of the first UE's USIM; UEs take consecutive rows.
    pub first_imsi_index: usize,
    /// APN requested in the PDN CONNECTIVITY REQUEST.
    pub apn: String,
    /// Where the UEs send ICMP echo requests (through their GTP-U tunnels).
    pub ping_target: Ipv4Addr,
    /// Interval between two pings of one UE, ms (1 ms works).
    pub ping_interval_ms: u64,
    /// ICMP echo payload size, bytes.
    pub ping_payload: usize,
    /// How long to run after the attaches; `None`: until the stop future completes.
    pub duration_ms: Option<u64>,
    /// Interval of the S1-MME control-plane probe (eNB Configuration Update →
    /// Acknowledge), ms; 0 disables it.
    pub cp_probe_interval_ms: u64,
    /// A probe still unanswered after this long counts as lost and the next is sent.
    pub cp_probe_timeout_ms: u64,
    /// UEs attaching at the same time.
    pub attach_concurrency: usize,
    /// Time for one UE's whole attach, all T3410 attempts (Initial UE Message → Attach
    /// Complete), ms.
    pub attach_timeout_ms: u64,
    /// Time for one UE's detach (Detach Request → UE Context Release), ms.
    pub detach_timeout_ms: u64,
    /// SCTP tuning (the `[sctp]` table, see proto-sctp).
    pub sctp: proto_sctp::SctpTuning,
    /// Whose SCTP carries S1-MME: corehop's user-space stack over UDP, or Linux's own.
    pub s1_transport: S1Transport,
    /// Time to bring up the association and finish S1 Setup, ms.
    pub s1_setup_timeout_ms: u64,
    /// A connected UE without signalling for this long is released to ECM-IDLE by the
    /// eNB; its next ping brings it back with a SERVICE REQUEST. `None`: never idle.
    pub idle_after_ms: Option<u64>,
    /// Several eNBs in one RAN (the `[[enbs]]` tables), each with its own S1-MME
    /// association and S1 Setup and its own S1-U endpoint; UEs are spread over them.
    /// Empty: the one eNB of the top-level `enb_id`, `enb_name`, `tac`, `bind`,
    /// `s1u_address`, `gtpu_port`.
    pub enbs: Vec<EnbConfig>,
    /// The UEs' traffic model: a built-in name (`static`, `mixed`) or the path of a TOML
    /// file (see [`crate::traffic::Model`]).
    pub traffic: String,
    /// Seed of the traffic model's random inter-arrival times: same seed, same run plan.
    pub seed: u64,
    /// Network namespace of the pdn host from which downlink packets are sent to the UEs
    /// (so that the SPGW buffers them for idle UEs and the MME pages). `None`: no
    /// downlink traffic.
    pub downlink_from_netns: Option<String>,
    /// UDP port the downlink datagrams go to at the UE.
    pub downlink_port: u16,
    /// The UE's NAS timers (TS 24.301 §10.2), ms: on expiry the UE retransmits or
    /// restarts the procedure, up to `nas_attempts` times. Well above a migration's
    /// freeze, so a frozen MME delays a procedure instead of failing it.
    pub t3410_ms: u64,
    pub t3417_ms: u64,
    pub t3421_ms: u64,
    pub t3430_ms: u64,
    /// An eNB's wait for the MME in a handover (TS1RELOCprep and TS1RELOCoverall of TS
    /// 36.413 §8.4.1; the PATH SWITCH REQUEST ACKNOWLEDGE of an X2 handover), ms.
    pub handover_timeout_ms: u64,
    /// Attempts of one NAS procedure before it fails (TS 24.301: 5 for attach, TAU and
    /// detach).
    pub nas_attempts: u32,
}

/// The SCTP under an eNB's S1-MME association; both send SCTP in UDP (RFC 6951) to the
/// MME's UDP port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum S1Transport {
    /// corehop's user-space SCTP on a UDP socket (runs on any kernel).
    #[default]
    Udp,
    /// The kernel's SCTP with `net.sctp.udp_port` set, as a real eNB on Linux: an
    /// independent implementation on the other end of the MME's association.
    Kernel,
}

/// One eNB of a RAN with several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnbConfig {
    /// Macro eNB ID (20 bits); the cell identity is `enb_id << 8 | 1`.
    pub enb_id: u32,
    pub name: String,
    pub tac: u16,
    /// S1-U address in this eNB's F-TEIDs (the SPGW sends to it on port 2152).
    pub s1u_address: Ipv4Addr,
    /// Local address of its S1-MME and S1-U sockets; default `s1u_address`.
    #[serde(default)]
    pub bind: Option<IpAddr>,
    #[serde(default = "default_gtpu_port")]
    pub gtpu_port: u16,
}

fn default_gtpu_port() -> u16 {
    proto_gtpu::GTPU_PORT
}

impl EnbConfig {
    pub fn bind(&self) -> IpAddr {
        self.bind.unwrap_or(IpAddr::V4(self.s1u_address))
    }

    pub(crate) fn cell_id(&self) -> u32 {
        (self.enb_id << 8) | 1
    }
}

/// The HSS crate's example subscribers, so that a checkout runs without a CSV argument.
/// The CLI passes an explicit path (inside a container this source path does not exist).
fn example_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hss/subscribers.example.csv")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mme: SocketAddr::from((Ipv4Addr::new(10, 77, 1, 20), proto_sctp::SCTP_UDP_PORT)),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            s1u_address: Ipv4Addr::new(10, 77, 0, 21),
            gtpu_port: proto_gtpu::GTPU_PORT,
            enb_id: 1,
            enb_name: "corehop-enb".into(),
            mcc: "001".into(),
            mnc: "01".into(),
            tac: 1,
            ues: 1,
            subscribers: example_csv(),
            first_imsi_index: 0,
            apn: "internet".into(),
            ping_target: Ipv4Addr::new(10, 77, 0, 31),
            ping_interval_ms: 100,
            ping_payload: 56,
            duration_ms: None,
            cp_probe_interval_ms: 100,
            cp_probe_timeout_ms: 1000,
            attach_concurrency: 16,
            // Room for T3410 retransmissions (attempts × T3410 would be 75 s).
            attach_timeout_ms: 60_000,
            detach_timeout_ms: 5_000,
            sctp: Default::default(),
            s1_transport: S1Transport::Udp,
            s1_setup_timeout_ms: 10_000,
            idle_after_ms: None,
            enbs: Vec::new(),
            traffic: "static".into(),
            seed: 1,
            downlink_from_netns: None,
            downlink_port: 9,
            t3410_ms: 15_000,
            t3417_ms: 5_000,
            t3421_ms: 15_000,
            t3430_ms: 15_000,
            handover_timeout_ms: 10_000,
            nas_attempts: 5,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).context("invalid RAN config")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read RAN config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks values that would otherwise fail later, naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.plmn()?;
        let model = Model::resolve(&self.traffic).context("traffic")?;
        let enbs = self.enb_list(&model);
        for (i, e) in enbs.iter().enumerate() {
            let at = if self.enbs.is_empty() {
                String::new()
            } else {
                format!("enbs[{i}].")
            };
            anyhow::ensure!(
                e.enb_id < 1 << 20,
                "{at}enb_id = {}: a macro eNB ID has 20 bits (max {})",
                e.enb_id,
                (1 << 20) - 1
            );
            anyhow::ensure!(!e.name.is_empty(), "{at}name must not be empty");
            if let Some(j) = enbs[..i].iter().position(|o| o.enb_id == e.enb_id) {
                anyhow::bail!("enbs[{i}].enb_id = {} is also enbs[{j}]'s", e.enb_id);
            }
        }
        for (name, v) in [
            ("t3410_ms", self.t3410_ms),
            ("t3417_ms", self.t3417_ms),
            ("t3421_ms", self.t3421_ms),
            ("t3430_ms", self.t3430_ms),
            ("handover_timeout_ms", self.handover_timeout_ms),
        ] {
            anyhow::ensure!(v > 0, "{name} must be at least 1");
        }
        anyhow::ensure!(self.nas_attempts > 0, "nas_attempts must be at least 1");
        anyhow::ensure!(self.ues > 0, "ues must be at least 1");
        anyhow::ensure!(
            self.ping_interval_ms > 0,
            "ping_interval_ms must be at least 1"
        );
        anyhow::ensure!(
            self.ping_payload <= 1400,
            "ping_payload = {}: at most 1400 bytes (SGi MTU)",
            self.ping_payload
        );
        anyhow::ensure!(
            self.attach_concurrency > 0,
            "attach_concurrency must be at least 1"
        );
        self.sctp.validate().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!self.apn.is_empty(), "apn must not be empty");
        anyhow::ensure!(
            self.idle_after_ms != Some(0),
            "idle_after_ms must be at least 1 (leave it out for no idle mode)"
        );
        Ok(())
    }

    /// PLMN identity octets of mcc/mnc.
    pub fn plmn(&self) -> anyhow::Result<[u8; 3]> {
        proto_nas::plmn(&self.mcc, &self.mnc)
            .map_err(|e| anyhow::anyhow!("mcc = {:?}, mnc = {:?}: {e}", self.mcc, self.mnc))
    }

    pub fn sctp_config(&self) -> proto_sctp::SctpConfig {
        proto_sctp::SctpConfig {
            ..self.sctp.config()
        }
    }

    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The eNBs to run: `enbs`, or the one of the top-level fields and, for a traffic
    /// model that wants more (`mixed`: 2), copies of it with the next eNB IDs and TACs
    /// on the same S1-U address (they share its socket; the MME tells them apart by
    /// association).
    pub fn enb_list(&self, model: &Model) -> Vec<EnbConfig> {
        if !self.enbs.is_empty() {
            return self.enbs.clone();
        }
        (0..model.enbs.max(1))
            .map(|i| EnbConfig {
                enb_id: self.enb_id + i as u32,
                name: if i == 0 {
                    self.enb_name.clone()
                } else {
                    format!("{}-{}", self.enb_name, i + 1)
                },
                tac: self.tac.wrapping_add(i as u16),
                s1u_address: self.s1u_address,
                bind: Some(self.bind),
                gtpu_port: self.gtpu_port,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_lab_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mme.to_string(), "10.77.1.20:9899");
        assert_eq!(c.s1u_address, Ipv4Addr::new(10, 77, 0, 21));
        assert_eq!(c.ping_target, Ipv4Addr::new(10, 77, 0, 31));
        assert!(c.subscribers.exists(), "{}", c.subscribers.display());
        assert_eq!(c.plmn().unwrap(), [0x00, 0xf1, 0x10]);
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Config::from_toml("bogus = 1").unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let e = Config::from_toml("enb_id = 2000000").unwrap_err();
        assert!(e.to_string().contains("enb_id"), "{e}");
        let e = Config::from_toml("mcc = \"1\"").unwrap_err();
        assert!(e.to_string().contains("mcc"), "{e}");
        let e = Config::from_toml("ues = 0").unwrap_err();
        assert!(e.to_string().contains("ues"), "{e}");
        let two = "[[enbs]]\nenb_id = 1\nname = \"a\"\ntac = 1\ns1u_address = \"127.0.0.21\"\n\
                   [[enbs]]\nenb_id = 1\nname = \"b\"\ntac = 2\ns1u_address = \"127.0.0.22\"\n";
        let e = Config::from_toml(two).unwrap_err();
        assert!(e.to_string().contains("enbs[1].enb_id"), "{e}");
        let c =
            Config::from_toml(&two.replace("enb_id = 1\nname = \"b\"", "enb_id = 2\nname = \"b\""))
                .unwrap();
        assert_eq!(c.enb_list(&Model::mixed()).len(), 2, "as configured");
        assert_eq!(
            c.enb_list(&Model::default())[1].bind(),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 22))
        );
        let e = Config::from_toml("[[enbs]]\nenb_id = 1\nname = \"a\"\ntac = 1\n").unwrap_err();
        assert!(format!("{e:#}").contains("s1u_address"), "{e:#}");
        let e = Config::from_toml("t3417_ms = 0").unwrap_err();
        assert!(e.to_string().contains("t3417_ms"), "{e}");
        let one = Config::default().enb_list(&Model::default());
        assert_eq!((one.len(), one[0].enb_id), (1, 1));
        // `mixed` without `enbs`: a second eNB of the next ID and TAC, same address.
        let two = Config::default().enb_list(&Model::mixed());
        assert_eq!(
            (
                two[1].enb_id,
                two[1].tac,
                two[1].s1u_address,
                two[1].name.as_str()
            ),
            (2, 2, two[0].s1u_address, "corehop-enb-2")
        );
        let c = Config::from_toml("ping_interval_ms = 1\nduration_ms = 3000").unwrap();
        assert_eq!((c.ping_interval_ms, c.duration_ms), (1, Some(3000)));
    }
}
