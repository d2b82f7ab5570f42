//! Per (case, KPI) statistics as the paper reports them (Section VI): mean, 95% confidence
//! interval from Student's t, and coefficient of variation.
use crate::plan::{Function, LoadWhere, Method, NicRate};
use crate::record::Record;
use crate::runner::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATS_CSV: &str = "stats.csv";
pub const STATS_JSON: &str = "stats.json";

/// Migration time.
pub const KPI_TOTAL: &str = "total_ms";
/// Downtime measured by the migration.
pub const KPI_DOWNTIME: &str = "downtime_ms";
pub const KPI_ICMP_DOWNTIME: &str = "icmp_downtime_ms";
pub const KPI_APP_DOWNTIME: &str = "app_downtime_ms";
pub const KPI_DP_GTP: &str = "dp_gtp_ms";
pub const KPI_DP_SGI: &str = "dp_sgi_ms";
pub const KPI_CP_S1MME: &str = "cp_s1mme_ms";
pub const KPI_IMAGE_BYTES: &str = "image_bytes";
/// Derived from the rounds of a run with several (PreCopy): the bytes of every round but
/// the last (the pre-dumps), and of the last (the dump); the paper's Table 12.
pub const KPI_PRE_DUMP_BYTES: &str = "pre_dump_bytes";
pub const KPI_DUMP_BYTES: &str = "dump_bytes";
/// Derived: the time spent sending migration data, the sum of the transfer phases the run
/// reports (see [`TRANSFER_PHASES`]); the "Tx time" of the paper's Table 12.
pub const KPI_TX: &str = "tx_ms";
/// Prefix of phase KPIs: `phase.Tc`, `phase.Tpd`, ...
pub const PHASE_PREFIX: &str = "phase.";

/// Phases that move migration data between the hosts: Tt (StopandCopy transfer), Tpdt and Tdt
/// (PreCopy pre-dump and dump transfers) and Tl (VM live transfer).
pub const TRANSFER_PHASES: [&str; 4] = ["Tt", "Tpdt", "Tdt", "Tl"];

/// Summary of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); absent below two values.
    pub std: Option<f64>,
    /// Half-width of the 95% confidence interval of the mean: t(0.975, n−1) · s / √n.
    pub ci95: Option<f64>,
    /// Coefficient of variation s / mean, as a fraction; absent when the mean is 0.
    pub cv: Option<f64>,
    pub min: f64,
    pub max: f64,
}

/// The two-sided 95% Student t quantile t(0.975, df).
pub fn t_975(df: usize) -> Option<f64> {
    if df == 0 {
        return None;
    }
    StudentsT::new(0.0, 1.0, df as f64)
        .ok()
        .map(|t| t.inverse_cdf(0.975))
}

/// Summarises `values`; `None` when there is none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let std = (n >= 2).then(|| {
        let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    let ci95 = std.and_then(|s| t_975(n - 1).map(|t| t * s / (n as f64).sqrt()));
    let cv = std.and_then(|s| (mean != 0.0).then(|| s / mean.abs()));
    Some(Summary {
        n,
        mean,
        std,
        ci95,
        cv,
        min,
        max,
    })
}

/// One row of stats.csv / stats.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub case_id: String,
    pub function: Function,
    pub method: Method,
    pub flavor: String,
    pub nic_rate: NicRate,
    pub load_percent: u8,
    pub load_where: LoadWhere,
    pub kpi: String,
    /// Failed runs of the case (left out of every KPI's sample).
    pub n_failed: usize,
    #[serde(flatten)]
    pub summary: Summary,
}

/// The KPI values of a successful record, in report order.
pub fn kpi_values(r: &Record) -> Vec<(String, f64)> {
    let mut out = vec![
        (KPI_TOTAL.to_string(), r.total_ms),
        (KPI_DOWNTIME.to_string(), r.downtime_ms),
    ];
    for (k, v) in [
        (KPI_ICMP_DOWNTIME, r.icmp_downtime_ms),
        (KPI_APP_DOWNTIME, r.app_downtime_ms),
        (KPI_DP_GTP, r.dp_gtp_ms),
        (KPI_DP_SGI, r.dp_sgi_ms),
        (KPI_CP_S1MME, r.cp_s1mme_ms),
    ] {
        if let Some(v) = v {
            out.push((k.to_string(), v));
        }
    }
    out.push((KPI_IMAGE_BYTES.to_string(), r.image_bytes as f64));
    if let Some((last, pre)) = r.round_bytes.as_deref().and_then(<[u64]>::split_last) {
        if !pre.is_empty() {
            out.push((
                KPI_PRE_DUMP_BYTES.to_string(),
                pre.iter().sum::<u64>() as f64,
            ));
            out.push((KPI_DUMP_BYTES.to_string(), *last as f64));
        }
    }
    let tx: Vec<f64> = TRANSFER_PHASES
        .iter()
        .filter_map(|p| r.phases.get(*p).copied())
        .collect();
    if !tx.is_empty() {
        out.push((KPI_TX.to_string(), tx.iter().sum()));
    }
    for (name, v) in ordered_phases(r) {
        out.push((format!("{PHASE_PREFIX}{name}"), v));
    }
    out.retain(|(_, v)| v.is_finite());
    out
}

/// The record's phases, the method's formula phases first (in formula order), then the rest.
fn ordered_phases(r: &Record) -> Vec<(&str, f64)> {
    let known = r.method.paper_phases();
    let mut out: Vec<(&str, f64)> = known
        .iter()
        .filter_map(|p| r.phases.get(*p).map(|v| (*p, *v)))
        .collect();
    out.extend(
        r.phases
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), *v)),
    );
    out
}

/// Statistics of every (case, KPI) in `records`: cases in order of first appearance, KPIs in
/// the order of [`kpi_values`]. Failed runs only count in `n_failed`.
pub fn compute(records: &[Record]) -> Vec<Stat> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_case: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        let e = by_case.entry(r.case_id.as_str()).or_default();
        if e.is_empty() {
            order.push(r.case_id.as_str());
        }
        e.push(r);
    }
    let mut out = Vec::new();
    for id in order {
        let runs = &by_case[id];
        let first = runs[0];
        let n_failed = runs.iter().filter(|r| !r.is_ok()).count();
        let mut kpi_order: Vec<String> = Vec::new();
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.is_ok()) {
            for (k, v) in kpi_values(r) {
                if !samples.contains_key(&k) {
                    kpi_order.push(k.clone());
                }
                samples.entry(k).or_default().push(v);
            }
        }
        if kpi_order.is_empty() {
            // Every run failed: still one row, so the case shows up with its failures.
            kpi_order.push(KPI_TOTAL.to_string());
        }
        for k in kpi_order {
            let values = samples.get(&k).map(Vec::as_slice).unwrap_or(&[]);
            let summary = summarize(values).unwrap_or(Summary {
                n: 0,
                mean: f64::NAN,
                std: None,
                ci95: None,
                cv: None,
                min: f64::NAN,
                max: f64::NAN,
            });
            out.push(Stat {
                case_id: id.to_string(),
                function: first.function,
                method: first.method,
                flavor: first.flavor.clone(),
                nic_rate: first.nic_rate,
                load_percent: first.load_percent,
                load_where: first.load_where,
                kpi: k,
                n_failed,
                summary,
            });
        }
    }
    out
}

pub(crate) fn write_stats_files(out_dir: &Path, stats: &[Stat]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "case_id",
        "function",
        "method",
        "flavor",
        "nic_rate",
        "load_percent",
        "load_where",
        "kpi",
        "n",
        "n_failed",
        "mean",
        "std",
        "ci95",
        "cv",
        "min",
        "max",
    ])?;
    let num = |v: f64| {
        if v.is_finite() {
            v.to_string()
        } else {
            String::new()
        }
    };
    let opt = |v: Option<f64>| v.map(num).unwrap_or_default();
    for s in stats {
        let m = &s.summary;
        w.write_record([
            s.case_id.clone(),
            s.function.to_string(),
            s.method.to_string(),
            s.flavor.clone(),
            s.nic_rate.to_string(),
            s.load_percent.to_string(),
            s.load_where.to_string(),
            s.kpi.clone(),
            m.n.to_string(),
            s.n_failed.to_string(),
            num(m.mean),
            opt(m.std),
            opt(m.ci95),
            opt(m.cv),
            num(m.min),
            num(m.max),
        ])?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("building stats.csv: {e}"))?;
    write_atomic(&out_dir.join(STATS_CSV), &bytes)?;
    let json = serde_json::to_vec_pretty(stats).context("serialising stats")?;
    write_atomic(&out_dir.join(STATS_JSON), &json)?;
    Ok(())
}
