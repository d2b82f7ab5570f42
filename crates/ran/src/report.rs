//! What a run measured: per-UE attach and ping results, the S1-MME probe, failures,
//! and the service-recovery series (DP_GTP per UE, CP_S1-MME) with timestamps both
//! relative to the run's start and as UNIX time, so that a migration's downtime window
//! (taken by the controller's clock) can be laid over them.

use std::collections::BTreeMap;
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
    /// Downlink datagrams sent to the UE from the pdn host, and those it received.
    #[serde(default)]
    pub downlink_sent: u64,
    #[serde(default)]
    pub downlink_received: u64,
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
    /// Every procedure the UEs ran, per kind and as a time series.
    #[serde(default)]
    pub procedures: Procedures,
    /// The eNBs, in configuration order.
    #[serde(default)]
    pub enbs: Vec<EnbReport>,
}

/// One eNB of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnbReport {
    pub enb_id: u32,
    pub name: String,
    pub tac: u16,
    pub s1_setups: u32,
    pub association_losses: u32,
}

/// The procedures a UE runs, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcedureKind {
    /// The first attach of the run.
    Attach,
    /// eNB-initiated release to ECM-IDLE for user inactivity.
    Release,
    /// SERVICE REQUEST for uplink data (mo-Data).
    ServiceRequest,
    /// SERVICE REQUEST answering a PAGING (mt-Access): from the downlink datagram's
    /// sending to the bearer being back.
    ServiceRequestPaging,
    /// Periodic TRACKING AREA UPDATE from ECM-IDLE.
    TauPeriodic,
    /// TRACKING AREA UPDATE after moving to an eNB of another TAC.
    TauNormal,
    /// X2 handover: PATH SWITCH REQUEST → ACKNOWLEDGE.
    X2Handover,
    /// S1 handover: HANDOVER REQUIRED … UE CONTEXT RELEASE of the source.
    S1Handover,
    Detach,
    /// An attach after a detach (or after a SERVICE REJECT).
    Reattach,
}

impl ProcedureKind {
    pub const ALL: [ProcedureKind; 10] = [
        ProcedureKind::Attach,
        ProcedureKind::Release,
        ProcedureKind::ServiceRequest,
        ProcedureKind::ServiceRequestPaging,
        ProcedureKind::TauPeriodic,
        ProcedureKind::TauNormal,
        ProcedureKind::X2Handover,
        ProcedureKind::S1Handover,
        ProcedureKind::Detach,
        ProcedureKind::Reattach,
    ];
}

/// One procedure of one UE: the time series a harness slices by a migration's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    pub imsi: String,
    pub kind: ProcedureKind,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// End − start, at the monotonic clock's resolution.
    pub latency_ms: f64,
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Latency percentiles (nearest rank over the exact values), ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for no values.
    pub fn of(mut v: Vec<f64>) -> Option<Percentiles> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Percentiles {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }
}

/// Counts and latencies of one procedure kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcedureStats {
    pub count: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failure reason → how often.
    pub failures: BTreeMap<String, u64>,
    /// Of the successful ones.
    pub latency_ms: Option<Percentiles>,
}

impl ProcedureStats {
    /// Per kind, over `records`.
    pub fn by_kind<'a>(
        records: impl IntoIterator<Item = &'a ProcedureRecord>,
    ) -> BTreeMap<ProcedureKind, ProcedureStats> {
        let mut stats: BTreeMap<ProcedureKind, ProcedureStats> = BTreeMap::new();
        let mut latencies: BTreeMap<ProcedureKind, Vec<f64>> = BTreeMap::new();
        for r in records {
            let s = stats.entry(r.kind).or_default();
            s.count += 1;
            if r.ok {
                s.succeeded += 1;
                latencies.entry(r.kind).or_default().push(r.latency_ms);
            } else {
                s.failed += 1;
                let why = r.reason.clone().unwrap_or_else(|| "unknown".into());
                *s.failures.entry(why).or_default() += 1;
            }
        }
        for (k, v) in latencies {
            if let Some(s) = stats.get_mut(&k) {
                s.latency_ms = Percentiles::of(v);
            }
        }
        stats
    }
}

/// The UEs' procedures of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Procedures {
    pub by_kind: BTreeMap<ProcedureKind, ProcedureStats>,
    /// Model events not run because the UE's state did not allow them (e.g. a handover
    /// of an idle UE), by event name; `downlink_lost_in_release`: downlink for an idle
    /// UE that reached the eNB on the TEID just released, so no paging followed.
    pub skipped: BTreeMap<String, u64>,
    /// Downlink datagrams sent from the pdn host, and those the UEs received.
    pub downlink_sent: u64,
    pub downlink_received: u64,
    /// Every procedure, ordered by start.
    pub records: Vec<ProcedureRecord>,
}

impl Procedures {
    pub fn new(mut records: Vec<ProcedureRecord>, skipped: BTreeMap<String, u64>) -> Procedures {
        records.sort_by_key(|r| (r.start_unix_ms, r.end_unix_ms));
        Procedures {
            by_kind: ProcedureStats::by_kind(&records),
            skipped,
            records,
            ..Default::default()
        }
    }

    /// Failed procedures of all kinds.
    pub fn failed(&self) -> u64 {
        self.by_kind.values().map(|s| s.failed).sum()
    }

    /// The records split by the window `[from, to]` (UNIX ms): those that ended before
    /// it, those overlapping it, those that started after it; with the statistics of each
    /// part, e.g. latency p50/p99 before, during and after a migration.
    pub fn within(&self, from_unix_ms: u64, to_unix_ms: u64) -> ProcedureWindow {
        let part = |f: &dyn Fn(&ProcedureRecord) -> bool| {
            ProcedureStats::by_kind(self.records.iter().filter(|r| f(r)))
        };
        ProcedureWindow {
            from_unix_ms,
            to_unix_ms,
            before: part(&|r| r.end_unix_ms < from_unix_ms),
            during: part(&|r| r.end_unix_ms >= from_unix_ms && r.start_unix_ms <= to_unix_ms),
            after: part(&|r| r.start_unix_ms > to_unix_ms),
        }
    }
}

/// Procedure statistics around a window (see [`Procedures::within`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureWindow {
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    pub before: BTreeMap<ProcedureKind, ProcedureStats>,
    pub during: BTreeMap<ProcedureKind, ProcedureStats>,
    pub after: BTreeMap<ProcedureKind, ProcedureStats>,
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

impl Idle {
    /// Adds another eNB's counts.
    pub fn add(&mut self, o: &Idle) {
        self.releases += o.releases;
        self.service_requests_mo += o.service_requests_mo;
        self.service_requests_mt += o.service_requests_mt;
        self.pagings += o.pagings;
        self.service_rejects += o.service_rejects;
    }
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
                downlink_sent: 0,
                downlink_received: 0,
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

    fn rec(kind: ProcedureKind, start: u64, latency: u64, ok: bool) -> ProcedureRecord {
        ProcedureRecord {
            imsi: "001010000000001".into(),
            kind,
            start_unix_ms: start,
            end_unix_ms: start + latency,
            latency_ms: latency as f64,
            ok,
            reason: (!ok).then(|| "T3417 expired 5 times".into()),
        }
    }

    /// Nearest-rank percentiles over known values, failures apart, the JSON keys.
    #[test]
    fn percentiles_of_known_records() {
        assert_eq!(Percentiles::of(vec![]), None);
        let one = Percentiles::of(vec![7.0]).unwrap();
        assert_eq!((one.p50, one.p90, one.p99, one.max), (7.0, 7.0, 7.0, 7.0));
        // 1..=100 shuffled: p50 = 50, p90 = 90, p99 = 99, max = 100.
        let v: Vec<f64> = (1..=100).map(|i| ((i * 37) % 100 + 1) as f64).collect();
        let p = Percentiles::of(v).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        // 1..=10: ranks ceil(5) = 5, ceil(9) = 9, ceil(9.9) = 10.
        let p = Percentiles::of((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (5.0, 9.0, 10.0, 10.0));

        let mut records: Vec<_> = (1..=10)
            .map(|i| rec(ProcedureKind::ServiceRequest, 1000 + i, i, true))
            .collect();
        records.push(rec(ProcedureKind::ServiceRequest, 900, 5000, false));
        records.push(rec(ProcedureKind::Attach, 0, 40, true));
        let p = Procedures::new(records, BTreeMap::new());
        assert_eq!(p.records[0].kind, ProcedureKind::Attach, "ordered by start");
        let sr = &p.by_kind[&ProcedureKind::ServiceRequest];
        assert_eq!((sr.count, sr.succeeded, sr.failed), (11, 10, 1));
        assert_eq!(sr.failures["T3417 expired 5 times"], 1);
        let l = sr.latency_ms.unwrap();
        assert_eq!(
            (l.p50, l.p90, l.p99, l.max),
            (5.0, 9.0, 10.0, 10.0),
            "failures apart"
        );
        assert_eq!(p.failed(), 1);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["by_kind"]["service_request"]["latency_ms"]["p99"], 10.0);
        assert_eq!(v["records"][0]["kind"], "attach");
    }

    /// Records split by a window: before ends before it, during overlaps it, after
    /// starts after it.
    #[test]
    fn procedures_within_a_window() {
        let k = ProcedureKind::Detach;
        let p = Procedures::new(
            vec![
                rec(k, 100, 10, true),  // 100..110: before
                rec(k, 150, 60, true),  // 150..210: overlaps the start
                rec(k, 250, 10, false), // inside
                rec(k, 290, 30, true),  // 290..320: overlaps the end
                rec(k, 301, 5, true),   // after
                rec(k, 400, 20, true),  // after
            ],
            BTreeMap::new(),
        );
        let w = p.within(200, 300);
        assert_eq!(w.before[&k].count, 1);
        assert_eq!((w.during[&k].count, w.during[&k].failed), (3, 1));
        assert_eq!(w.during[&k].latency_ms.unwrap().max, 60.0);
        assert_eq!(w.after[&k].count, 2);
        assert_eq!(w.after[&k].latency_ms.unwrap().p50, 5.0);
        assert!(p.within(0, 50).before.is_empty());
    }
}
