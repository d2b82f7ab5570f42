//! The resumable runner: runs every (case, run) of a plan through an [`Executor`], storing each
//! record the moment it exists so that a crash or Ctrl-C loses at most the run in progress.
use crate::plan::{Case, Plan};
use crate::record::Record;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const RUNS_JSONL: &str = "runs.jsonl";
pub const RUNS_CSV: &str = "runs.csv";
pub const PLAN_COPY: &str = "plan.toml";

/// Carries out one run of one case: sets the lab up for the case (flavor, NIC rate, load),
/// migrates, probes, and reports the KPIs. Implemented by the CLI against the real lab.
pub trait Executor {
    /// An `Err` is recorded as a failed run (with its message) and the plan goes on.
    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record>;
    /// The host CPU model, stored with every record (the paper's Fig. 10 factor).
    fn cpu_model(&self) -> String;
}

/// Knobs of [`run_plan_with`]; [`run_plan`] uses the defaults.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Runs per case instead of the plan's `runs`.
    pub runs_override: Option<u32>,
    /// Set to stop after the current run. When `None` the runner makes its own flag.
    pub stop: Option<Arc<AtomicBool>>,
    /// Hook SIGINT/SIGTERM to the stop flag while running: the first Ctrl-C stops after the
    /// current run, a second one exits at once (status 130).
    pub handle_signals: bool,
    /// Show the progress bar (indicatif hides it anyway when stderr is not a terminal).
    pub progress: bool,
    /// Run again the (case, run) pairs whose stored record is a failure; the failure stays
    /// in runs.jsonl (and in the report's error list), the new record is appended.
    pub retry_failed: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runs_override: None,
            stop: None,
            handle_signals: true,
            progress: true,
            retry_failed: false,
        }
    }
}

/// What a call to [`run_plan_with`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// (case, run) pairs in the plan.
    pub planned: usize,
    /// Pairs already in runs.jsonl when the call started.
    pub already_done: usize,
    /// Runs carried out by this call.
    pub executed: usize,
    /// Of those, the failed ones.
    pub failed: usize,
    /// True when the stop flag ended the call before every pair was done.
    pub interrupted: bool,
    /// A truncated last line found in runs.jsonl (from a crash) and removed.
    pub dropped_partial_line: bool,
}

/// Runs `plan` into `out_dir` with default options (progress bar, Ctrl-C handling).
pub fn run_plan(
    plan: &Plan,
    executor: &mut dyn Executor,
    out_dir: &Path,
    runs_override: Option<u32>,
) -> Result<RunSummary> {
    let opts = RunOptions {
        runs_override,
        ..RunOptions::default()
    };
    run_plan_with(plan, executor, out_dir, &opts)
}

/// Runs every (case, run) pair of `plan` not yet in `out_dir/runs.jsonl`.
///
/// Runs go round by round (run 0 of every case, then run 1, ...) rather than case by case,
/// so that slow drift of the hosts (page cache, thermal, other tenants) spreads over all cases
/// instead of biasing whichever case happened to run last.
pub fn run_plan_with(
    plan: &Plan,
    executor: &mut dyn Executor,
    out_dir: &Path,
    opts: &RunOptions,
) -> Result<RunSummary> {
    plan.validate()?;
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    check_or_write_plan_copy(plan, out_dir)?;

    let jsonl_path = out_dir.join(RUNS_JSONL);
    let loaded = read_jsonl(&jsonl_path)?;
    if loaded.dropped_tail.is_some() {
        tracing::warn!(
            path = %jsonl_path.display(),
            "dropping a truncated last line of runs.jsonl (left by an interrupted run)"
        );
    }
    let mut jsonl = open_jsonl_for_append(&jsonl_path, &loaded)?;
    // runs.csv is derived from runs.jsonl; rebuilding it here also repairs a CSV whose last
    // row was cut by the same crash.
    let mut csv = rebuild_csv(&out_dir.join(RUNS_CSV), &loaded.records)?;

    let done: HashSet<(String, u32)> = loaded
        .records
        .iter()
        .filter(|r| !opts.retry_failed || r.is_ok())
        .map(|r| (r.case_id.clone(), r.run_index))
        .collect();
    let runs = opts.runs_override.unwrap_or(plan.runs);
    let cases = plan.cases();
    let mut summary = RunSummary {
        planned: cases.len() * runs as usize,
        dropped_partial_line: loaded.dropped_tail.is_some(),
        ..RunSummary::default()
    };
    let mut pending = Vec::new();
    for run_index in 0..runs {
        for case in &cases {
            if done.contains(&(case.id.clone(), run_index)) {
                summary.already_done += 1;
            } else {
                pending.push((case, run_index));
            }
        }
    }

    let stop = opts
        .stop
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let _signals = if opts.handle_signals {
        Some(SignalGuard::install(&stop)?)
    } else {
        None
    };
    let bar = progress_bar(opts.progress, pending.len());
    let cpu_model = executor.cpu_model();

    for (case, run_index) in pending {
        if stop.load(Ordering::SeqCst) {
            summary.interrupted = true;
            break;
        }
        bar.set_message(format!("{} run {}/{}", case.id, run_index + 1, runs));
        let outcome = catch_unwind(AssertUnwindSafe(|| executor.run(case, run_index)));
        let record = match outcome {
            Ok(Ok(mut r)) => {
                r.set_case(case, run_index);
                if r.cpu_model.is_empty() {
                    r.cpu_model = cpu_model.clone();
                }
                r
            }
            Ok(Err(e)) => Record::failed(case, run_index, cpu_model.clone(), format!("{e:#}")),
            // A panicking executor would otherwise lose the whole session; the run is
            // recorded as failed like any other error and the next one starts.
            Err(p) => Record::failed(case, run_index, cpu_model.clone(), panic_text(&p)),
        };
        let mut record = record;
        record.sanitize();
        if let Some(e) = &record.error {
            summary.failed += 1;
            bar.println(format!(
                "run failed: {} run {}: {e}",
                case.id,
                run_index + 1
            ));
            tracing::warn!(case = %case.id, run = run_index, error = %e, "run failed");
        }
        append_record(&mut jsonl, &mut csv, &record)?;
        summary.executed += 1;
        bar.inc(1);
    }
    if summary.interrupted {
        bar.abandon_with_message("stopped; run again to resume");
    } else {
        bar.finish_with_message("done");
    }
    Ok(summary)
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_string());
    format!("executor panicked: {msg}")
}

fn progress_bar(show: bool, len: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} ETA {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Keeps SIGINT/SIGTERM tied to the stop flag for the duration of a run.
struct SignalGuard {
    ids: Vec<signal_hook::SigId>,
}

impl SignalGuard {
    fn install(stop: &Arc<AtomicBool>) -> Result<SignalGuard> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM] {
            // Registered first so it sees the flag before this signal sets it: only a second
            // signal, with the flag already up, exits at once.
            ids.push(signal_hook::flag::register_conditional_shutdown(
                sig,
                130,
                stop.clone(),
            )?);
            ids.push(signal_hook::flag::register(sig, stop.clone())?);
        }
        Ok(SignalGuard { ids })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The plan a results folder belongs to is stored with it, so the report can tell the
/// defaults (and so a resume with a different plan is caught instead of mixing results).
fn check_or_write_plan_copy(plan: &Plan, out_dir: &Path) -> Result<()> {
    let path = out_dir.join(PLAN_COPY);
    if path.exists() {
        let stored = Plan::load(&path)?;
        if &stored != plan {
            bail!(
                "{} holds results of a different plan ({}); use another output folder",
                out_dir.display(),
                stored.name
            );
        }
        return Ok(());
    }
    write_atomic(&path, plan.to_toml_string()?.as_bytes())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The valid content of a runs.jsonl.
#[derive(Debug, Default)]
pub(crate) struct Jsonl {
    pub records: Vec<Record>,
    /// Bytes of the file up to the end of the last good line (newline included if present).
    good_len: u64,
    /// Whether the last good line lacks its newline.
    unterminated: bool,
    /// The unparsable last line, if any.
    pub dropped_tail: Option<String>,
}

/// Reads every record of runs.jsonl. A last line that does not parse is what a crash in the
/// middle of a write leaves, so it is dropped (and reported); a bad line anywhere else means
/// the file was damaged some other way and is an error naming that line.
pub(crate) fn read_jsonl(path: &Path) -> Result<Jsonl> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Jsonl::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut out = Jsonl::default();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let (end, next) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (start + i, start + i + 1),
            None => (bytes.len(), bytes.len()),
        };
        let line = &bytes[start..end];
        let is_last = bytes[next..].iter().all(|b| b.is_ascii_whitespace());
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            start = next;
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => {
                out.records.push(r);
                out.good_len = next as u64;
                out.unterminated = end == bytes.len();
            }
            Err(_) if is_last => {
                out.dropped_tail = Some(String::from_utf8_lossy(line).into_owned());
                break;
            }
            Err(e) => bail!("{} line {line_no}: not a valid record: {e}", path.display()),
        }
        start = next;
    }
    Ok(out)
}

/// Loads the records of `out_dir/runs.jsonl` (a truncated last line is skipped).
pub fn load_records(out_dir: &Path) -> Result<Vec<Record>> {
    let j = read_jsonl(&out_dir.join(RUNS_JSONL))?;
    if j.dropped_tail.is_some() {
        tracing::warn!("runs.jsonl ends with a truncated line; it is ignored");
    }
    Ok(j.records)
}

fn open_jsonl_for_append(path: &Path, loaded: &Jsonl) -> Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // Cut the partial line (and any trailing junk) so the next record starts a fresh line.
    f.set_len(loaded.good_len)
        .with_context(|| format!("truncating {}", path.display()))?;
    f.seek(SeekFrom::End(0))?;
    if loaded.unterminated {
        f.write_all(b"\n")?;
    }
    f.sync_data()?;
    Ok(f)
}

fn rebuild_csv(path: &Path, records: &[Record]) -> Result<csv::Writer<File>> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(Record::csv_header())?;
    for r in records {
        w.write_record(r.csv_row())?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("building runs.csv: {e}"))?;
    write_atomic(path, &bytes)?;
    let f = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(csv::WriterBuilder::new().has_headers(false).from_writer(f))
}

fn append_record(jsonl: &mut File, csv: &mut csv::Writer<File>, r: &Record) -> Result<()> {
    // One write of the whole line, then fsync: after a crash the file holds whole records
    // plus at most one partial line, which the next start drops.
    let mut line = serde_json::to_vec(r).context("serialising record")?;
    line.push(b'\n');
    jsonl.write_all(&line).context("appending to runs.jsonl")?;
    jsonl.sync_data().context("syncing runs.jsonl")?;
    csv.write_record(r.csv_row())
        .context("appending to runs.csv")?;
    csv.flush().context("flushing runs.csv")?;
    csv.get_ref().sync_data().context("syncing runs.csv")?;
    Ok(())
}
