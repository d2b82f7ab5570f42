//! What a run measured: per-UE attach and ping results, the S1-MME probe, failures,
//! and the service-recovery series (DP_GTP per UE, CP_S1-MME) with timestamps both
//! relative to the run's start and as UNIX time, so that a migration's downtime window
//! (taken by the controller's clock) can be laid over them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use measure::gaps::{Clock, GapTracker, Outage, Series, MAX_OUTAGES};

/// Live state of a run, for a caller that orchestrates around it (e.g. starts a
/// migration once every UE is attached). See [`crate::run_with_progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// UEs configured.
    pub ues: usize,
    pub attached: usize,
    pub failed: usize,
    /// Set once the run stops and the UEs detach.
    pub stopping: bool,
}

impl Progress {
    /// Every UE has finished its attach attempt (false before the run knows its UEs).
    pub fn attach_phase_over(&self) -> bool {
        self.ues > 0 && self.attached + self.failed >= self.ues
    }
}

/// One attached UE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UeReport {
    pub imsi: String,
    pub ue_ip: Ipv4Addr,
    pub enb_teid: u32,
    pub sgw_teid: u32,
    pub sgw_addr: Ipv4Addr,
    pub mme_ue_s1ap_id: u32,
    pub enb_ue_s1ap_id: u32,
    /// Initial UE Message sent → Attach Complete sent.
    pub attach_ms: f64,
    /// When the attach completed, ms since run start.
    pub attached_at_ms: f64,
    pub pings_sent: u64,
    pub pings_received: u64,
    /// Longest time between two echo replies (DP_GTP recovery).
    pub max_ping_gap_ms: f64,
    /// When that gap began, ms since run start.
    pub ping_gap_at_ms: f64,
    pub rtt_ms_avg: Option<f64>,
    pub rtt_ms_max: Option<f64>,
    /// The KeNB of the Initial Context Setup is the one the UE derives (TS 33.401 A.3).
    pub kenb_match: bool,
    /// Detach Accept and UE Context Release both seen.
    pub detached: bool,
    /// What went wrong in the detach, if anything.
    pub detach_error: Option<String>,
}

/// What stopped a UE's attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// ATTACH REJECT from the MME (cause in `emm_cause`).
    AttachReject,
    /// AUTHENTICATION REJECT from the MME.
    AuthenticationReject,
    /// The USIM rejected the network (MAC or synch failure) and the MME ended the
    /// procedure without a reject message (e.g. released the UE).
    AuthenticationFailure,
    /// SECURITY MODE COMMAND refused by the UE.
    SecurityModeReject,
    /// INITIAL CONTEXT SETUP that the eNB could not accept.
    ContextSetup,
    /// The MME released the UE context before the attach completed.
    Released,
    /// No answer in time.
    Timeout,
    /// Malformed/unexpected signalling, or the association went down.
    Protocol,
    /// The USIM row could not be used.
    Subscriber,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachFailure {
    pub imsi: String,
    pub enb_ue_s1ap_id: u32,
    pub kind: FailureKind,
    /// EMM cause of the reject, or of the UE's AUTHENTICATION FAILURE.
    pub emm_cause: Option<u8>,
    /// The UE's own AUTHENTICATION FAILURE cause (#20 MAC, #21 synch, #26 non-EPS),
    /// when it sent one before the network's verdict.
    pub ue_auth_failure_cause: Option<u8>,
    pub reason: String,
    pub at_ms: f64,
}

/// The S1-MME round-trip probe (eNB Configuration Update → Acknowledge).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpProbeReport {
    pub sent: u64,
    pub answered: u64,
    /// Answers that were ENB CONFIGURATION UPDATE FAILURE (the MME is alive but refused).
    pub failures: u64,
    /// Longest time between two answers (CP_S1-MME recovery).
    pub max_gap_ms: f64,
    /// When that gap began, ms since run start.
    pub gap_at_ms: f64,
    pub rtt_ms_avg: Option<f64>,
}

/// DP_GTP recovery of one UE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UeRecovery {
    pub imsi: String,
    pub ue_ip: Ipv4Addr,
    #[serde(flatten)]
    pub series: Series,
}

/// Service recovery as the UEs saw it (paper: DP_GTP, CP_S1-MME).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// UNIX ms of the run's start (all `*_ms` offsets count from it).
    pub started_unix_ms: u64,
    pub dp_gtp: Vec<UeRecovery>,
    pub cp_s1_mme: Series,
}

impl Recovery {
    /// Longest DP_GTP outage over all UEs.
    pub fn dp_gtp_longest(&self) -> Option<(&str, Outage)> {
        self.dp_gtp
            .iter()
            .filter_map(|u| u.series.longest.map(|o| (u.imsi.as_str(), o)))
            .max_by(|a, b| a.1.duration_ms.total_cmp(&b.1.duration_ms))
    }

    /// Per UE, the outages overlapping `[from, to]` (UNIX ms), and the CP ones: what a
    /// migration with that downtime window cost the UEs.
    pub fn within(&self, from_unix_ms: u64, to_unix_ms: u64) -> RecoveryWindow {
        RecoveryWindow {
            from_unix_ms,
            to_unix_ms,
            dp_gtp: self
                .dp_gtp
                .iter()
                .map(|u| {
                    (
                        u.imsi.clone(),
                        u.series.overlapping(from_unix_ms, to_unix_ms),
                    )
                })
                .collect(),
            cp_s1_mme: self.cp_s1_mme.overlapping(from_unix_ms, to_unix_ms),
        }
    }
}

/// Outages matched to a window (see [`Recovery::within`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryWindow {
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    pub dp_gtp: Vec<(String, Vec<Outage>)>,
    pub cp_s1_mme: Vec<Outage>,
}

/// Everything a run measured (JSON with `serde_json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub started_unix_ms: u64,
    pub duration_ms: f64,
    pub ues: Vec<UeReport>,
    pub cp_probe: CpProbeReport,
    /// S1 Setups done (1 unless the association had to be re-established).
    pub s1_setups: u32,
    /// SCTP associations lost during the run.
    pub association_losses: u32,
    pub attach_failures: Vec<AttachFailure>,
    pub recovery: Recovery,
    /// Inbound messages dropped as malformed or unexpected (logged).
    pub dropped: Dropped,
    /// ECM-IDLE procedures of all UEs (absent in reports of older runs).
    #[serde(default)]
    pub idle: Idle,
}

/// Idle-mode procedures over all UEs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idle {
    /// eNB-initiated UE context releases (user inactivity) completed: UEs gone idle.
    pub releases: u64,
    /// SERVICE REQUESTs for uplink data (RRC cause mo-Data), or for the detach at
    /// the end of the run (mo-Signalling).
    pub service_requests_mo: u64,
    /// SERVICE REQUESTs answering a PAGING (RRC cause mt-Access).
    pub service_requests_mt: u64,
    /// PAGINGs for one of our idle UEs.
    pub pagings: u64,
    /// SERVICE REJECTs (the UE then attaches again).
    pub service_rejects: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Undecodable S1AP PDUs and downlink NAS that failed decoding or integrity.
    pub s1ap: u64,
    /// Undecodable GTP-U datagrams.
    pub gtpu: u64,
    /// G-PDUs for no tunnel of ours (e.g. replies arriving after a UE's detach).
    pub gtpu_unknown_teid: u64,
    /// GTP-U Error Indications received (the SGW did not know a tunnel).
    pub gtpu_error_indications: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_has_the_documented_keys() {
        let r = Report {
            ues: vec![UeReport {
                imsi: "001010000000001".into(),
                ue_ip: Ipv4Addr::new(10, 45, 0, 2),
                enb_teid: 1,
                sgw_teid: 2,
                sgw_addr: Ipv4Addr::LOCALHOST,
                mme_ue_s1ap_id: 3,
                enb_ue_s1ap_id: 4,
                attach_ms: 5.0,
                attached_at_ms: 6.0,
                pings_sent: 7,
                pings_received: 7,
                max_ping_gap_ms: 100.0,
                ping_gap_at_ms: 8.0,
                rtt_ms_avg: Some(0.1),
                rtt_ms_max: Some(0.2),
                kenb_match: true,
                detached: true,
                detach_error: None,
            }],
            ..Default::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "imsi",
            "ue_ip",
            "enb_teid",
            "sgw_teid",
            "mme_ue_s1ap_id",
            "enb_ue_s1ap_id",
            "attach_ms",
            "pings_sent",
            "pings_received",
            "max_ping_gap_ms",
            "ping_gap_at_ms",
            "rtt_ms_avg",
        ] {
            assert!(v["ues"][0].get(k).is_some(), "{k}");
        }
        for k in ["sent", "answered", "max_gap_ms", "gap_at_ms"] {
            assert!(v["cp_probe"].get(k).is_some(), "{k}");
        }
        assert!(v["s1_setups"].is_number() && v["attach_failures"].is_array());
        for k in [
            "releases",
            "service_requests_mo",
            "service_requests_mt",
            "pagings",
            "service_rejects",
        ] {
            assert!(v["idle"][k].is_number(), "{k}");
        }
        assert_eq!(v["ues"][0]["ue_ip"], "10.45.0.2");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
