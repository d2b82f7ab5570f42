//! Issue 6's acceptance: the quick plan runs on the real lab, is killed midway and resumed
//! without redoing finished runs, and leaves raw data, statistics that match it, figures
//! that are real images and a report naming every table.
mod common;
use common::*;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

fn records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("runs.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

#[test]
fn quick_plan_runs_resumes_after_a_kill_and_reports() {
    let _lab = Lab::up();
    let tmp = TempDir::new("experiment");
    let out = tmp.0.join("results");
    let plan = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plans/quick.toml");
    let args = ["experiment", plan, "--out", out.to_str().unwrap()];

    // Kill it (SIGKILL, like a crash) once two runs are recorded.
    let mut first = std::process::Command::new(BIN)
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while records(&out).len() < 2 {
        assert!(
            Instant::now() < deadline && first.try_wait().unwrap().is_none(),
            "the experiment did not record two runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let before = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    let done_before = records(&out).len();

    ok(&args);
    let after = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    assert!(
        after.starts_with(before.trim_end_matches(|c| c != '\n')),
        "finished runs are kept as they were"
    );
    let recs = records(&out);
    // spgw x {stop-and-copy, pre-copy} x {1gbit, 100mbit} x 2 runs.
    assert_eq!(recs.len(), 8, "every run recorded once");
    let keys: HashSet<_> = recs
        .iter()
        .map(|r| (r["case_id"].to_string(), r["run_index"].as_u64()))
        .collect();
    assert_eq!(
        keys.len(),
        8,
        "no run done twice (resumed after {done_before})"
    );
    for r in &recs {
        assert!(r["error"].is_null(), "run failed: {r}");
        assert!(
            r["total_ms"].as_f64().unwrap() > 0.0 && r["image_bytes"].as_u64().unwrap() > 0,
            "{r}"
        );
        for k in [
            "icmp_downtime_ms",
            "app_downtime_ms",
            "dp_gtp_ms",
            "dp_sgi_ms",
        ] {
            assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k} measured: {r}");
        } // Table 12's fields: a pre-copy sends a pre-dump round, then the dump.
        if r["method"] == "pre-copy" {
            let rounds = r["round_bytes"].as_array().unwrap_or_else(|| panic!("{r}"));
            assert!(
                rounds.len() >= 2 && rounds.iter().all(|b| b.as_u64() > Some(0)),
                "{r}"
            );
        }
    }
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "header + one row per run");

    // Statistics match the raw data.
    let mut by_case: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &recs {
        by_case
            .entry(r["case_id"].as_str().unwrap().into())
            .or_default()
            .push(r["total_ms"].as_f64().unwrap());
    }
    let stats = json(&std::fs::read_to_string(out.join("stats.json")).unwrap());
    for (case, v) in &by_case {
        let s = stats
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["case_id"] == case.as_str() && s["kpi"] == "total_ms")
            .unwrap();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert_eq!(s["n"].as_u64().unwrap() as usize, v.len());
        assert!(
            (s["mean"].as_f64().unwrap() - mean).abs() < 1e-6,
            "{case}: {s} vs {mean}"
        );
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        // t(0.975, 1) = 12.706 for two runs.
        assert!(
            (s["ci95"].as_f64().unwrap() - 12.7062 * sd / (v.len() as f64).sqrt()).abs()
                < 1e-2 * sd.max(1.0),
            "{s}"
        );
        assert!((s["cv"].as_f64().unwrap() - sd / mean).abs() < 1e-6, "{s}");
    }

    // Figures are real, non-empty images; the report names every table and links them.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let mut pngs = 0;
    for f in std::fs::read_dir(out.join("figures")).unwrap().flatten() {
        let p = f.path();
        let data = std::fs::read(&p).unwrap();
        match p.extension().and_then(|e| e.to_str()) {
            Some("png") => {
                assert!(
                    data.starts_with(b"\x89PNG\r\n\x1a\n") && data.len() > 2000,
                    "{}",
                    p.display()
                );
                pngs += 1;
            }
            Some("svg") => assert!(
                String::from_utf8_lossy(&data).contains("<svg") && data.len() > 1000,
                "{}",
                p.display()
            ),
            _ => {}
        }
        assert!(
            report.contains(&format!(
                "figures/{}",
                p.file_name().unwrap().to_string_lossy()
            )),
            "{} linked",
            p.display()
        );
    }
    assert!(pngs >= 5, "figures drawn: {pngs}");
    for table in [
        "migration time breakdown",
        "Migration time in ms",
        "Downtime in ms",
        "UE service recovery",
        "Migration data size",
        "Migration time by NIC rate",
        "Pre-dump and dump: size and transmission time",
    ] {
        assert!(report.contains(table), "report names {table:?}");
    }
    assert!(report.contains("Container PreCopy") && report.contains("Container StopandCopy"));
}
