//! Experiments on live migration, as in the paper's evaluation (Section VI): a plan expands
//! to a matrix of cases, a resumable runner drives an [`Executor`] through every (case, run)
//! and stores one [`Record`] per run, and the statistics and report turn the records into the
//! paper's tables (mean, 95% CI, CV) and figures.
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
pub use record::Record;
pub use report::{report, ReportSummary};
pub use runner::{load_records, run_plan, run_plan_with, Executor, RunOptions, RunSummary};
pub use stats::{compute, summarize, write_stats, Stat, Summary};
pub use synthetic::SyntheticExecutor;
