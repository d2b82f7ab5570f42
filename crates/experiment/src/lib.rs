//! Experiments on live migration, as in the paper's evaluation (Section VI): a plan expands
//! to a matrix of cases, a resumable runner drives an [`Executor`] through every (case, run)
//! and stores one [`Record`] per run, and the statistics and report turn the records into the
//! paper's tables (mean, 95% CI, CV) and figures.
//!
//! A results folder (`out_dir`) holds:
//! - `plan.toml`: the plan it belongs to (a resume with another plan is refused);
//! - `runs.jsonl`: one [`Record`] a line, appended and fsynced as each run ends: the source
//!   of truth, and what makes a stopped or crashed run resumable;
//! - `runs.csv`: the same records as a table (rebuilt from runs.jsonl at each start);
//! - `stats.csv`, `stats.json`: per (case, KPI) n, mean, std, 95% CI, CV ([`stats`]);
//! - `report.md` and `figures/*.png|svg` ([`report()`]).
pub mod bench;
pub mod plan;
pub mod plot;
pub mod record;
pub mod report;
pub mod runner;
pub mod stats;
pub mod synthetic;

pub use plan::{
    Case, CpuLoad, Defaults, Factor, Function, LoadWhere, Method, NicRate, Parameters, Plan,
};
pub use record::{canonical_phase, Record};
pub use report::{report, ReportSummary};
pub use runner::{load_records, run_plan, run_plan_with, Executor, RunOptions, RunSummary};
pub use stats::{compute, summarize, Stat, Summary};
pub use synthetic::SyntheticExecutor;
