//! The statistics/report engine with synthetic records: stats against hand-computed values,
//! resume after an interruption and after a crash, bad input files, failed runs, and the
//! report's tables and figure files.
use anyhow::{bail, Result};
use experiment::runner::{RUNS_CSV, RUNS_JSONL};
use experiment::stats::{self, t_975};
use experiment::{
    compute, load_records, report, run_plan_with, summarize, Case, Executor, Plan, Record,
    RunOptions, SyntheticExecutor,
};
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn plans_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plans")
}

fn quick() -> Plan {
    Plan::load(&plans_dir().join("quick.toml")).unwrap()
}

fn opts() -> RunOptions {
    RunOptions {
        handle_signals: false,
        progress: false,
        ..RunOptions::default()
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn stats_match_hand_computed_values() {
    // Sample 10, 12, 14, 16, 18: mean 14, deviations ±4, ±2, 0, sum of squares 40,
    // s = sqrt(40 / 4) = 3.16227766, t(0.975, 4) = 2.776445105 (t table),
    // CI half-width = 2.776445105 · 3.16227766 / sqrt(5) = 3.926486,
    // CV = 3.16227766 / 14 = 0.2258770.
    let s = summarize(&[10.0, 12.0, 14.0, 16.0, 18.0]).unwrap();
    assert_eq!(s.n, 5);
    assert!(close(s.mean, 14.0, 1e-12));
    assert!(close(s.std.unwrap(), 3.162_277_66, 1e-8));
    assert!(close(s.ci95.unwrap(), 3.926_486, 1e-5), "{:?}", s.ci95);
    assert!(close(s.cv.unwrap(), 0.225_877_0, 1e-6));
    assert_eq!((s.min, s.max), (10.0, 18.0));

    // t quantiles against the table: df 1, 4, 9, 30.
    for (df, t) in [
        (1, 12.706_205),
        (4, 2.776_445),
        (9, 2.262_157),
        (30, 2.042_272),
    ] {
        assert!(close(t_975(df).unwrap(), t, 1e-5), "df {df}");
    }
    assert_eq!(t_975(0), None);

    // Two values 1 and 3: s = sqrt(2), CI = 12.706205 · sqrt(2) / sqrt(2) = 12.706205.
    let s = summarize(&[1.0, 3.0]).unwrap();
    assert!(close(s.ci95.unwrap(), 12.706_205, 1e-5));
    // One value: a mean but no spread; none: nothing.
    let s = summarize(&[7.0]).unwrap();
    assert_eq!(
        (s.n, s.mean, s.std, s.ci95, s.cv),
        (1, 7.0, None, None, None)
    );
    assert!(summarize(&[]).is_none());
    // A zero mean has no CV (rather than infinity).
    assert_eq!(summarize(&[-1.0, 1.0]).unwrap().cv, None);
}

/// Counts runs, and raises the stop flag after `stop_after` of them (as Ctrl-C would).
struct Counting {
    inner: SyntheticExecutor,
    calls: Vec<(String, u32)>,
    stop_after: Option<usize>,
    stop: Arc<AtomicBool>,
}

impl Executor for Counting {
    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record> {
        self.calls.push((case.id.clone(), run_index));
        if Some(self.calls.len()) == self.stop_after {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.inner.run(case, run_index)
    }
    fn cpu_model(&self) -> String {
        "counting".into()
    }
}

fn all_pairs(plan: &Plan) -> BTreeSet<(String, u32)> {
    plan.cases()
        .iter()
        .flat_map(|c| (0..plan.runs).map(move |r| (c.id.clone(), r)))
        .collect()
}

fn stored_pairs(dir: &Path) -> Vec<(String, u32)> {
    load_records(dir)
        .unwrap()
        .into_iter()
        .map(|r| (r.case_id, r.run_index))
        .collect()
}

#[test]
fn interrupted_run_resumes_with_only_the_remaining_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plan = quick();
    let total = plan.cases().len() * plan.runs as usize;
    assert_eq!(total, 8);
    let k = 3;
    let stop = Arc::new(AtomicBool::new(false));
    let mut ex = Counting {
        inner: SyntheticExecutor::new(),
        calls: vec![],
        stop_after: Some(k),
        stop: stop.clone(),
    };
    let o = RunOptions {
        stop: Some(stop.clone()),
        ..opts()
    };
    let s = run_plan_with(&plan, &mut ex, dir.path(), &o).unwrap();
    assert!(s.interrupted);
    assert_eq!((s.planned, s.already_done, s.executed), (total, 0, k));
    assert_eq!(stored_pairs(dir.path()).len(), k);

    // Restart, as a new process would: a fresh executor and flag.
    let stop = Arc::new(AtomicBool::new(false));
    let mut ex2 = Counting {
        inner: SyntheticExecutor::new(),
        calls: vec![],
        stop_after: None,
        stop,
    };
    let s = run_plan_with(&plan, &mut ex2, dir.path(), &opts()).unwrap();
    assert!(!s.interrupted);
    assert_eq!((s.already_done, s.executed, s.failed), (k, total - k, 0));
    let first: HashSet<_> = ex.calls.iter().cloned().collect();
    assert!(
        ex2.calls.iter().all(|p| !first.contains(p)),
        "a finished run was repeated"
    );

    let stored = stored_pairs(dir.path());
    assert_eq!(stored.len(), total);
    assert_eq!(
        stored.iter().cloned().collect::<BTreeSet<_>>(),
        all_pairs(&plan)
    );
    // runs.csv: header + one row per record.
    let csv = fs::read_to_string(dir.path().join(RUNS_CSV)).unwrap();
    assert_eq!(csv.lines().count(), total + 1);

    // A third start has nothing left to do.
    let mut ex3 = SyntheticExecutor::new();
    let s = run_plan_with(&plan, &mut ex3, dir.path(), &opts()).unwrap();
    assert_eq!((s.already_done, s.executed), (total, 0));
    assert_eq!(ex3.calls, 0);
}

#[test]
fn truncated_last_line_is_dropped_and_the_run_redone() {
    let dir = tempfile::tempdir().unwrap();
    let plan = quick();
    run_plan_with(&plan, &mut SyntheticExecutor::new(), dir.path(), &opts()).unwrap();
    let path = dir.path().join(RUNS_JSONL);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Keep 5 whole records and half of the 6th, without its newline: a crash mid-write.
    let cut = format!(
        "{}\n{}",
        lines[..5].join("\n"),
        &lines[5][..lines[5].len() / 2]
    );
    fs::write(&path, &cut).unwrap();
    assert_eq!(load_records(dir.path()).unwrap().len(), 5);

    let mut ex = SyntheticExecutor::new();
    let s = run_plan_with(&plan, &mut ex, dir.path(), &opts()).unwrap();
    assert!(s.dropped_partial_line);
    assert_eq!((s.already_done, s.executed), (5, 3));
    let stored = stored_pairs(dir.path());
    assert_eq!(stored.len(), 8);
    assert_eq!(
        stored.into_iter().collect::<BTreeSet<_>>(),
        all_pairs(&plan)
    );
    // Every line parses again (the partial one was cut, not glued to the next record).
    for l in fs::read_to_string(&path).unwrap().lines() {
        serde_json::from_str::<Record>(l).unwrap();
    }

    // Last good line without its newline: the next record must still start a new line.
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    fs::write(&path, lines[..7].join("\n")).unwrap();
    let s = run_plan_with(&plan, &mut SyntheticExecutor::new(), dir.path(), &opts()).unwrap();
    assert_eq!(
        (s.already_done, s.executed, s.dropped_partial_line),
        (7, 1, false)
    );
    assert_eq!(stored_pairs(dir.path()).len(), 8);
}

#[test]
fn corrupt_runs_file_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let plan = quick();
    run_plan_with(&plan, &mut SyntheticExecutor::new(), dir.path(), &opts()).unwrap();
    let path = dir.path().join(RUNS_JSONL);
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[2] = "{\"case_id\": 12, garbage".into();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let e = format!("{:#}", load_records(dir.path()).unwrap_err());
    assert!(e.contains("line 3"), "{e}");
    let e = format!(
        "{:#}",
        run_plan_with(&plan, &mut SyntheticExecutor::new(), dir.path(), &opts()).unwrap_err()
    );
    assert!(e.contains("line 3"), "{e}");
    let e = format!("{:#}", report(dir.path(), &[]).unwrap_err());
    assert!(e.contains("line 3"), "{e}");

    // Binary junk in the middle, too.
    lines[2] = String::from_utf8_lossy(&[0xff, 0xfe, 0x00, b'{']).into_owned();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert!(format!("{:#}", load_records(dir.path()).unwrap_err()).contains("line 3"));

    // A plan copy that is not a plan, and a different plan in the same folder.
    fs::write(dir.path().join("plan.toml"), "name = 3\n[[[").unwrap();
    assert!(report(dir.path(), &[]).is_err());
    let other = tempfile::tempdir().unwrap();
    run_plan_with(&plan, &mut SyntheticExecutor::new(), other.path(), &opts()).unwrap();
    let changed = Plan {
        runs: 3,
        ..plan.clone()
    };
    let e = format!(
        "{:#}",
        run_plan_with(
            &changed,
            &mut SyntheticExecutor::new(),
            other.path(),
            &opts()
        )
        .unwrap_err()
    );
    assert!(e.contains("different plan"), "{e}");
    // Not a results folder at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(
        format!("{:#}", report(empty.path(), &[]).unwrap_err()).contains("not a results folder")
    );
}

/// Fails every third run, panics once, and reports a NaN once.
struct Flaky {
    inner: SyntheticExecutor,
    n: usize,
}

impl Executor for Flaky {
    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record> {
        self.n += 1;
        match self.n {
            n if n % 3 == 0 => bail!("destination refused the image (run {n})"),
            5 => panic!("executor bug"),
            7 => {
                let mut r = self.inner.run(case, run_index)?;
                r.total_ms = f64::NAN;
                r.dp_gtp_ms = Some(f64::INFINITY);
                Ok(r)
            }
            _ => self.inner.run(case, run_index),
        }
    }
    fn cpu_model(&self) -> String {
        "flaky".into()
    }
}

#[test]
fn failed_runs_are_recorded_and_left_out_of_the_stats() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan { runs: 3, ..quick() };
    let s = run_plan_with(
        &plan,
        &mut Flaky {
            inner: SyntheticExecutor::new(),
            n: 0,
        },
        dir.path(),
        &opts(),
    )
    .unwrap();
    // 12 runs: failures at 3, 6, 9, 12 (errors), 5 (panic), 7 (NaN).
    assert_eq!((s.executed, s.failed), (12, 6));
    let records = load_records(dir.path()).unwrap();
    assert_eq!(records.len(), 12);
    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(failed.len(), 6);
    assert!(failed.iter().any(|r| r
        .error
        .as_deref()
        .unwrap()
        .contains("executor panicked: executor bug")));
    assert!(failed
        .iter()
        .any(|r| r.error.as_deref().unwrap().contains("non-finite total_ms")));
    // The runner fills the CPU model into the records it makes for errors and panics.
    assert_eq!(failed.iter().filter(|r| r.cpu_model == "flaky").count(), 5);

    let stats = compute(&records);
    for case in plan.cases() {
        let ok = records
            .iter()
            .filter(|r| r.case_id == case.id && r.error.is_none())
            .count();
        let bad = records
            .iter()
            .filter(|r| r.case_id == case.id && r.error.is_some())
            .count();
        let st = stats
            .iter()
            .find(|s| s.case_id == case.id && s.kpi == stats::KPI_TOTAL)
            .unwrap();
        assert_eq!((st.summary.n, st.n_failed), (ok, bad), "{}", case.id);
        // The mean is over the successful runs only.
        let vals: Vec<f64> = records
            .iter()
            .filter(|r| r.case_id == case.id && r.error.is_none())
            .map(|r| r.total_ms)
            .collect();
        if !vals.is_empty() {
            assert!(close(
                st.summary.mean,
                vals.iter().sum::<f64>() / vals.len() as f64,
                1e-9
            ));
        }
    }

    // Retrying failed runs appends new records for exactly those pairs.
    let o = RunOptions {
        retry_failed: true,
        ..opts()
    };
    let mut ex = SyntheticExecutor::new();
    let s = run_plan_with(&plan, &mut ex, dir.path(), &o).unwrap();
    assert_eq!((s.executed, s.failed, ex.calls), (6, 0, 6));
    assert_eq!(load_records(dir.path()).unwrap().len(), 18);

    let r = report(dir.path(), &[]).unwrap();
    let md = fs::read_to_string(&r.path).unwrap();
    assert!(md.contains("Failed runs"));
    assert!(md.contains("destination refused the image"));
    assert!(md.contains("executor panicked"));
    assert!(md.contains("6 failed"));
}

/// A synthetic machine with a CPU model of its own.
struct Machine(SyntheticExecutor, &'static str);

impl Executor for Machine {
    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record> {
        let mut r = self.0.run(case, run_index)?;
        r.cpu_model = self.1.into();
        Ok(r)
    }
    fn cpu_model(&self) -> String {
        self.1.into()
    }
}

#[test]
fn results_of_two_machines_merge_into_one_report() {
    let plan = quick();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_plan_with(
        &plan,
        &mut Machine(SyntheticExecutor::new(), "CPU A"),
        a.path(),
        &opts(),
    )
    .unwrap();
    run_plan_with(
        &plan,
        &mut Machine(SyntheticExecutor::new(), "CPU B"),
        b.path(),
        &opts(),
    )
    .unwrap();
    let r = report(a.path(), &[b.path().to_path_buf()]).unwrap();
    let md = fs::read_to_string(&r.path).unwrap();
    let fig10 = md
        .lines()
        .skip_while(|l| !(l.starts_with("### ") && l.contains("by processor model")))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        fig10.contains("CPU A") && fig10.contains("CPU B"),
        "{fig10}"
    );
    let figure = r
        .figures
        .iter()
        .find(|f| f.to_string_lossy().ends_with("cpu_models.svg"))
        .expect("the Fig. 10 figure");
    let svg = fs::read_to_string(figure).unwrap();
    assert!(svg.contains("CPU A") && svg.contains("CPU B"));
    // The statistics written with the report count the runs of both machines.
    let written: Vec<experiment::Stat> =
        serde_json::from_slice(&fs::read(a.path().join("stats.json")).unwrap()).unwrap();
    let total = written.iter().find(|s| s.kpi == "total_ms").unwrap();
    assert_eq!(total.summary.n, 2 * plan.runs as usize, "{total:?}");

    // Results of another plan do not merge.
    let other = tempfile::tempdir().unwrap();
    let changed = Plan {
        name: "another".into(),
        ..plan.clone()
    };
    run_plan_with(
        &changed,
        &mut SyntheticExecutor::new(),
        other.path(),
        &opts(),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        report(a.path(), &[other.path().to_path_buf()]).unwrap_err()
    );
    assert!(e.contains("another plan"), "{e}");
}

fn check_png(p: &Path) {
    let b = fs::read(p).unwrap();
    assert!(
        b.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]),
        "{}",
        p.display()
    );
    assert!(
        b.len() > 10_000 && b.len() < 5_000_000,
        "{}: {} bytes",
        p.display(),
        b.len()
    );
}

fn check_svg(p: &Path) {
    let text = fs::read_to_string(p).unwrap();
    assert!(
        text.len() > 3_000 && text.len() < 5_000_000,
        "{}: {} bytes",
        p.display(),
        text.len()
    );
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts = doc.descendants().filter(|n| n.has_tag_name("text")).count();
    assert!(texts >= 5, "{}: only {texts} text elements", p.display());
    assert!(
        doc.descendants()
            .any(|n| n.text().is_some_and(|t| t.contains("Figure "))),
        "{}: no title",
        p.display()
    );
    assert!(doc.descendants().filter(|n| n.has_tag_name("rect")).count() >= 2);
}

#[test]
fn report_names_every_table_and_links_valid_figures() {
    let dir = tempfile::tempdir().unwrap();
    // Everything varied, so every table and figure kind has data: two functions, all four
    // methods, flavors, NIC rates and loads in all three places.
    let plan = Plan::from_toml_str(
        r#"
        name = "full-synthetic"
        runs = 3
        functions = ["spgw", "mme"]
        methods = ["vm-pre-copy", "stop-and-copy", "pre-copy", "post-copy"]
        [parameters]
        flavors = ["small", "large"]
        ram_flavors = ["1cpu-4gb"]
        nic_rates = ["100mbit", "10gbit"]
        cpu_loads = [
            { where = "source", percent = 50 },
            { where = "destination", percent = 25 },
            { where = "both", percent = 75 },
        ]
        [defaults]
        flavor = "small"
        nic_rate = "1gbit"
        "#,
    )
    .unwrap();
    run_plan_with(&plan, &mut SyntheticExecutor::new(), dir.path(), &opts()).unwrap();
    let r = report(dir.path(), &[]).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let md = fs::read_to_string(&r.path).unwrap();

    for title in &r.tables {
        assert!(
            md.contains(&format!("### {title}")),
            "missing table {title}"
        );
    }
    for name in [
        "VM PreCopy: migration time breakdown",
        "Container StopandCopy: migration time breakdown",
        "Container PreCopy: migration time breakdown",
        "Migration time in ms",
        "Downtime in ms",
        "Reduction against VM PreCopy and Container StopandCopy",
        "UE service recovery time",
        "Migration data size and transmission time",
        "Pre-dump and dump: size and transmission time (cf. paper Table 12)",
        "Migration time by flavor (cf. paper Fig. 9(a))",
        "Migration time by RAM at the default flavor's vCPUs (cf. paper Fig. 9(b))",
        "Migration time by NIC rate",
        "Migration time by CPU load on the source host",
        "Migration time by CPU load on the destination host",
        "Migration time by CPU load on both hosts",
        "Migration time by processor model",
        "Failed runs",
    ] {
        assert!(r.tables.iter().any(|t| t.contains(name)), "no table {name}");
    }
    assert!(md.contains("CPU model: synthetic (no lab)"));
    // Numbers are in the tables (mean ± CI (CV)).
    assert!(md.contains(" ± ") && md.contains("(CV "));
    assert!(!md.contains("No data for this table"), "a table is empty");

    // Every figure: PNG and SVG exist, are valid, of a sensible size, and the report links
    // both.
    let pngs: Vec<&PathBuf> = r
        .figures
        .iter()
        .filter(|p| p.extension().unwrap() == "png")
        .collect();
    // 4 phase + migration time + downtime + ICMP + UE + data size + (flavor + RAM + NIC +
    // 3 loads) × 2 functions + processor models.
    assert_eq!(pngs.len(), 4 + 5 + 6 * 2 + 1, "{pngs:?}");
    for png in pngs {
        let svg = png.with_extension("svg");
        assert!(r.figures.contains(&svg));
        check_png(png);
        check_svg(&svg);
        let stem = png.file_stem().unwrap().to_str().unwrap();
        assert!(
            md.contains(&format!("(figures/{stem}.png)")),
            "{stem} png not linked"
        );
        assert!(
            md.contains(&format!("(figures/{stem}.svg)")),
            "{stem} svg not linked"
        );
    }

    // stats files: every (case, KPI) once, JSON an array of the same rows.
    let csv = fs::read_to_string(dir.path().join("stats.csv")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(csv.lines().count() - 1, json.as_array().unwrap().len());

    // Running the report again gives the same tables (and overwrites cleanly).
    let again = report(dir.path(), &[]).unwrap();
    assert_eq!(again.tables, r.tables);
}

#[test]
fn shipped_plans_parse_and_expand_like_the_paper() {
    let paper = Plan::load(&plans_dir().join("paper.toml")).unwrap();
    assert_eq!(paper.runs, 10);
    let cases = paper.cases();
    // 3 functions × 3 methods baselines, plus for the SPGW × 3 methods: 2 more flavors
    // (Table 4's small is the default), 2 more RAM sizes, 2 more NIC rates (10gbit is the
    // default) and 12 loads.
    assert_eq!(cases.len(), 9 + 3 * (2 + 2 + 2 + 12));
    let ids: HashSet<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), cases.len());
    assert!(ids.contains("spgw.pre-copy.1cpu-2gb.10gbit.load-both-75"));
    assert!(ids.contains("hss.vm-pre-copy.1cpu-2gb.10gbit.load-none"));
    assert!(ids.contains("spgw.stop-and-copy.4cpu-8gb.10gbit.load-none"));
    assert!(ids.contains("spgw.stop-and-copy.1cpu-8gb.10gbit.load-none"));
    assert!(ids.contains("spgw.stop-and-copy.1cpu-2gb.100mbit.load-none"));
    // Every flavor of the plan is one the runtime knows.
    let p = &paper.parameters;
    for f in p
        .flavors
        .iter()
        .chain(&p.ram_flavors)
        .chain([&paper.defaults.flavor])
    {
        runtime::flavor::flavor(f).unwrap();
    }

    let q = quick();
    assert_eq!(q.runs, 2);
    assert_eq!(q.cases().len(), 4);
}
