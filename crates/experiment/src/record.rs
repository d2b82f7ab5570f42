//! One run's KPIs, as stored in `runs.jsonl` (one JSON object a line) and `runs.csv`.
use crate::plan::{Case, Function, LoadWhere, Method, NicRate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Phase names that get a column of their own in `runs.csv`: those of the paper's formulas
/// (Eqs. 1, 2, 4) plus `Tn`, the network move. Every phase, these or others, is also in the
/// `phases` column as JSON, so nothing an executor reports is lost.
pub const CSV_PHASES: [&str; 11] = [
    "Tc", "Tt", "Tn", "Tr", "Tpd", "Tpdt", "Td", "Tdt", "Tpre", "Tl", "Tpost",
];

/// The KPIs of one run of one case. A failed run is a record too, with `error` set; its
/// numbers are whatever the executor had and are left out of every statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub case_id: String,
    pub function: Function,
    pub method: Method,
    pub flavor: String,
    pub nic_rate: NicRate,
    pub load_percent: u8,
    pub load_where: LoadWhere,
    /// 0-based repetition number; (case_id, run_index) is the key that makes runs resumable.
    pub run_index: u32,
    /// When the run finished, RFC 3339 UTC.
    pub timestamp: String,
    /// Phase name (Tc, Tt, Tpd, Tl, ...) → milliseconds, as the method reports them.
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// Migration time (the paper's Tcm, Tpcm or Tvm).
    pub total_ms: f64,
    /// Downtime as the migration itself measured it (source stopped → destination serving).
    pub downtime_ms: f64,
    /// Every freeze of the function added (PreCopy's leave-running round too), and the
    /// longest one.
    #[serde(default)]
    pub frozen_ms: Option<f64>,
    #[serde(default)]
    pub longest_freeze_ms: Option<f64>,
    /// Container migrations: the frozen window's breakdown (parts, CRIU's figures,
    /// processes started), as the migration reported it.
    #[serde(default)]
    pub window: Option<serde_json::Value>,
    /// Downtime seen by an ICMP ping of the function's service IP (how the paper measures it).
    #[serde(default)]
    pub icmp_downtime_ms: Option<f64>,
    /// Downtime seen by the application-level request/reply probe.
    #[serde(default)]
    pub app_downtime_ms: Option<f64>,
    /// UE service recovery, data plane through GTP-U (UE ↔ SPGW), SPGW migrations.
    #[serde(default)]
    pub dp_gtp_ms: Option<f64>,
    /// UE service recovery, data plane through SGi (PGW ↔ PDN), SPGW migrations.
    #[serde(default)]
    pub dp_sgi_ms: Option<f64>,
    /// UE service recovery, control plane through S1-MME, MME migrations.
    #[serde(default)]
    pub cp_s1mme_ms: Option<f64>,
    /// Migration data size: checkpoint images (containers) or the migration stream (VM).
    pub image_bytes: u64,
    /// Bytes each round put on the wire, in order, when there were several (PreCopy: the
    /// pre-dumps, then the dump; paper Table 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_bytes: Option<Vec<u64>>,
    pub cpu_model: String,
    #[serde(default)]
    pub error: Option<String>,
}

impl Record {
    /// An empty successful record for `case`; the executor fills in what it measured.
    pub fn new(case: &Case, run_index: u32) -> Record {
        Record {
            case_id: case.id.clone(),
            function: case.function,
            method: case.method,
            flavor: case.flavor.clone(),
            nic_rate: case.nic_rate,
            load_percent: case.load_percent,
            load_where: case.load_where,
            run_index,
            timestamp: now_rfc3339(),
            phases: BTreeMap::new(),
            total_ms: 0.0,
            downtime_ms: 0.0,
            frozen_ms: None,
            longest_freeze_ms: None,
            window: None,
            icmp_downtime_ms: None,
            app_downtime_ms: None,
            dp_gtp_ms: None,
            dp_sgi_ms: None,
            cp_s1mme_ms: None,
            image_bytes: 0,
            round_bytes: None,
            cpu_model: String::new(),
            error: None,
        }
    }

    /// The record of a run that did not complete.
    pub fn failed(case: &Case, run_index: u32, cpu_model: String, error: String) -> Record {
        Record {
            cpu_model,
            error: Some(error),
            ..Record::new(case, run_index)
        }
    }

    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// Overwrites the case fields with `case`'s, so that the resume key and the grouping
    /// in the statistics never depend on an executor copying them right.
    pub fn set_case(&mut self, case: &Case, run_index: u32) {
        self.case_id = case.id.clone();
        self.function = case.function;
        self.method = case.method;
        self.flavor = case.flavor.clone();
        self.nic_rate = case.nic_rate;
        self.load_percent = case.load_percent;
        self.load_where = case.load_where;
        self.run_index = run_index;
    }

    /// Makes a record fit to store (the runner calls this on every record).
    ///
    /// Phase names become the paper's symbols where the executor used a known long name or
    /// the migrate crate's `<phase>_ms` form (see [`canonical_phase`]).
    ///
    /// JSON has no NaN or infinity (serde_json would write `null`, which then fails to read
    /// back as a number), so non-finite values are removed before a record is stored: an
    /// optional KPI becomes absent, a phase is dropped, and a non-finite migration time or
    /// downtime turns the run into a failed one, as its numbers cannot be trusted.
    pub fn sanitize(&mut self) {
        for v in [
            &mut self.icmp_downtime_ms,
            &mut self.app_downtime_ms,
            &mut self.dp_gtp_ms,
            &mut self.dp_sgi_ms,
            &mut self.cp_s1mme_ms,
        ] {
            if v.is_some_and(|x| !x.is_finite()) {
                *v = None;
            }
        }
        self.phases.retain(|_, v| v.is_finite());
        // One name per phase, so the tables line up whatever the executor called them.
        let phases = std::mem::take(&mut self.phases);
        for (name, v) in phases {
            *self.phases.entry(canonical_phase(&name)).or_insert(0.0) += v;
        }
        for (name, v) in [
            ("total_ms", &mut self.total_ms),
            ("downtime_ms", &mut self.downtime_ms),
        ] {
            if !v.is_finite() {
                *v = 0.0;
                if self.error.is_none() {
                    self.error = Some(format!("executor reported a non-finite {name}"));
                }
            }
        }
    }

    pub(crate) fn csv_header() -> Vec<String> {
        let mut h: Vec<String> = [
            "case_id",
            "function",
            "method",
            "flavor",
            "nic_rate",
            "load_percent",
            "load_where",
            "run_index",
            "timestamp",
            "total_ms",
            "downtime_ms",
            "icmp_downtime_ms",
            "app_downtime_ms",
            "dp_gtp_ms",
            "dp_sgi_ms",
            "cp_s1mme_ms",
            "image_bytes",
            "round_bytes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        h.extend(CSV_PHASES.iter().map(|p| format!("{p}_ms")));
        h.extend(
            ["phases", "cpu_model", "error"]
                .iter()
                .map(|s| s.to_string()),
        );
        h
    }

    pub(crate) fn csv_row(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let mut r = vec![
            self.case_id.clone(),
            self.function.to_string(),
            self.method.to_string(),
            self.flavor.clone(),
            self.nic_rate.to_string(),
            self.load_percent.to_string(),
            self.load_where.to_string(),
            self.run_index.to_string(),
            self.timestamp.clone(),
            self.total_ms.to_string(),
            self.downtime_ms.to_string(),
            opt(self.icmp_downtime_ms),
            opt(self.app_downtime_ms),
            opt(self.dp_gtp_ms),
            opt(self.dp_sgi_ms),
            opt(self.cp_s1mme_ms),
            self.image_bytes.to_string(),
            self.round_bytes
                .as_ref()
                .map(|b| b.iter().map(u64::to_string).collect::<Vec<_>>().join(";"))
                .unwrap_or_default(),
        ];
        r.extend(CSV_PHASES.iter().map(|p| opt(self.phases.get(*p).copied())));
        r.push(serde_json::to_string(&self.phases).unwrap_or_default());
        r.push(self.cpu_model.clone());
        r.push(self.error.clone().unwrap_or_default());
        r
    }
}

/// The paper's symbol for a phase name: `checkpoint`/`checkpoint_ms` → `Tc`, `transfer` →
/// `Tt`, `network` → `Tn`, `restore` → `Tr`, `pre-dump` → `Tpd`, `pre-dump-transfer` →
/// `Tpdt`, `dump` → `Td`, `dump-transfer` → `Tdt`, `pre-live` → `Tpre`, `live` → `Tl`,
/// `post-live` → `Tpost` (case, '-', '_' and spaces ignored). Other names are kept (less a
/// trailing `_ms`).
pub fn canonical_phase(name: &str) -> String {
    let base = name.strip_suffix("_ms").unwrap_or(name);
    let key: String = base
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let sym = match key.as_str() {
        "checkpoint" => "Tc",
        "transfer" => "Tt",
        "network" | "networkmove" => "Tn",
        "restore" => "Tr",
        "predump" => "Tpd",
        "predumptransfer" | "pretransfer" => "Tpdt",
        "dump" => "Td",
        "dumptransfer" => "Tdt",
        "prelive" => "Tpre",
        "live" => "Tl",
        "postlive" | "post" => "Tpost",
        _ => return base.to_string(),
    };
    sym.to_string()
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{CpuLoad, Function, Method, NicRate};

    #[test]
    fn sanitize_names_phases_and_drops_non_finite_values() {
        let case = Case::new(
            Function::Spgw,
            Method::StopAndCopy,
            "small",
            NicRate::from_bits(1_000_000_000),
            CpuLoad::NONE,
        );
        let mut r = Record::new(&case, 0);
        for (k, v) in [
            ("checkpoint_ms", 10.0),
            ("transfer", 20.0),
            ("Network-Move", 1.0),
            ("restore", 30.0),
            ("Tr", 5.0),
            ("lazy_pages_ms", 7.0),
            ("bad", f64::NAN),
        ] {
            r.phases.insert(k.to_string(), v);
        }
        r.dp_gtp_ms = Some(f64::INFINITY);
        r.icmp_downtime_ms = Some(12.0);
        r.sanitize();
        let want: BTreeMap<String, f64> = [
            ("Tc", 10.0),
            ("Tt", 20.0),
            ("Tn", 1.0),
            ("Tr", 35.0),
            ("lazy_pages", 7.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(r.phases, want);
        assert_eq!((r.dp_gtp_ms, r.icmp_downtime_ms), (None, Some(12.0)));
        assert!(r.is_ok());
        r.downtime_ms = f64::NEG_INFINITY;
        r.sanitize();
        assert_eq!(
            r.error.as_deref(),
            Some("executor reported a non-finite downtime_ms")
        );
        assert_eq!(r.downtime_ms, 0.0);
        // What the runner stores reads back.
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
    }
}
