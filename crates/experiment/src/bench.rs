//! The downtime benchmark's table: per function and method, p50 and p95 of the migration's
//! downtime, the application probe's outage and UE recovery (DP_GTP, CP_S1-MME), the data
//! moved, the processes started inside the frozen window, and each container method's
//! ratio to VM PreCopy of the same function in the same results folder.
use crate::plan::{Function, Method};
use crate::record::Record;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The `q` quantile (0..=1) of `v`, linear between closest ranks; `None` when empty.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(s[lo] + (s[hi] - s[lo]) * (pos - lo as f64))
}

/// One KPI over the runs of one (function, method).
struct Kpi {
    p50: Option<f64>,
    p95: Option<f64>,
}

impl Kpi {
    fn of(v: Vec<f64>) -> Kpi {
        Kpi {
            p50: quantile(&v, 0.5),
            p95: quantile(&v, 0.95),
        }
    }
}

/// The processes a record's frozen window started (from its window breakdown).
fn processes(r: &Record) -> Option<f64> {
    r.window.as_ref()?.get("processes_started")?.as_f64()
}

struct Row {
    function: Function,
    method: Method,
    runs: usize,
    failed: usize,
    downtime: Kpi,
    app: Kpi,
    dp_gtp: Kpi,
    cp_s1mme: Kpi,
    mb: Kpi,
    procs: Kpi,
}

fn rows(records: &[Record]) -> Vec<Row> {
    let mut groups: BTreeMap<(Function, Method), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry((r.function, r.method)).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((function, method), rs)| {
            let ok: Vec<&Record> = rs.iter().copied().filter(|r| r.is_ok()).collect();
            let col = |f: &dyn Fn(&Record) -> Option<f64>| {
                Kpi::of(ok.iter().filter_map(|r| f(r)).collect())
            };
            Row {
                function,
                method,
                runs: ok.len(),
                failed: rs.len() - ok.len(),
                downtime: col(&|r| Some(r.downtime_ms)),
                app: col(&|r| r.app_downtime_ms),
                dp_gtp: col(&|r| r.dp_gtp_ms),
                cp_s1mme: col(&|r| r.cp_s1mme_ms),
                mb: col(&|r| Some(r.image_bytes as f64 / 1e6)),
                procs: col(&processes),
            }
        })
        .collect()
}

fn cell(k: &Kpi, digits: usize) -> String {
    match (k.p50, k.p95) {
        (Some(a), Some(b)) => format!("{a:.digits$} / {b:.digits$}"),
        _ => "-".into(),
    }
}

fn ratio(c: Option<f64>, vm: Option<f64>) -> String {
    match (c, vm) {
        (Some(c), Some(vm)) if vm > 0.0 => format!("{:.2}", c / vm),
        _ => "-".into(),
    }
}

/// The benchmark table (Markdown). Ratios are p50 against VM PreCopy's p50 of the same
/// function: of the downtime, and of the application probe's outage.
pub fn table(records: &[Record]) -> String {
    let rows = rows(records);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| function | method | runs (failed) | downtime p50 / p95 ms | app probe outage p50 / p95 ms | DP_GTP p50 / p95 ms | CP_S1-MME p50 / p95 ms | data p50 / p95 MB | processes in window p50 / p95 | downtime / VM | app outage / VM |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let vm = rows
            .iter()
            .find(|v| v.function == r.function && v.method == Method::VmPreCopy);
        let (rd, ra) = match (r.method, vm) {
            (Method::VmPreCopy, _) | (_, None) => ("-".to_string(), "-".to_string()),
            (_, Some(vm)) => (
                ratio(r.downtime.p50, vm.downtime.p50),
                ratio(r.app.p50, vm.app.p50),
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.function,
            r.method,
            r.runs,
            r.failed,
            cell(&r.downtime, 0),
            cell(&r.app, 0),
            cell(&r.dp_gtp, 0),
            cell(&r.cp_s1mme, 0),
            cell(&r.mb, 2),
            cell(&r.procs, 0),
            rd,
            ra,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0], 0.95), Some(3.0));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95), Some(4.8));
    }

    #[test]
    fn ratios_are_to_the_vm_of_the_same_function() {
        let plan = Plan::from_toml_str(
            "name='b'\nruns=2\nfunctions=['hss']\nmethods=['vm-pre-copy','stop-and-copy']\n\
             [defaults]\nflavor='small'\nnic_rate='10gbit'\n",
        )
        .unwrap();
        let cases = plan.cases();
        let mut records = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            for run in 0..2 {
                let mut r = Record::new(c, run);
                let vm = c.method == Method::VmPreCopy;
                r.downtime_ms = if vm { 100.0 } else { 40.0 };
                r.app_downtime_ms = Some(if vm { 200.0 } else { 50.0 });
                r.window = (!vm).then(|| serde_json::json!({"processes_started": i}));
                records.push(r);
            }
        }
        let mut failed = Record::new(&cases[1], 2);
        failed.error = Some("boom".into());
        records.push(failed);
        let t = table(&records);
        let sc = t.lines().find(|l| l.contains("stop-and-copy")).unwrap();
        assert!(sc.contains("| 2 (1) |"), "{sc}");
        assert!(sc.contains("| 0.40 | 0.25 |"), "{sc}");
        let vm = t.lines().find(|l| l.contains("vm-pre-copy")).unwrap();
        assert!(vm.ends_with("| - | - |"), "{vm}");
    }
}
