//! Runs a plan with the synthetic executor (no lab) and writes the report, to look at the
//! report's layout: `cargo run -p experiment --example synthetic_report -- plans/quick.toml OUT`.
use anyhow::{Context, Result};
use experiment::{report, run_plan, Plan, SyntheticExecutor};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let plan_path = PathBuf::from(
        args.next()
            .context("usage: synthetic_report PLAN OUT_DIR")?,
    );
    let out = PathBuf::from(
        args.next()
            .context("usage: synthetic_report PLAN OUT_DIR")?,
    );
    let plan = Plan::load(&plan_path)?;
    let summary = run_plan(&plan, &mut SyntheticExecutor::new(), &out, None)?;
    println!("{summary:?}");
    let r = report(&out, &[])?;
    println!(
        "wrote {} ({} tables, {} figure files)",
        r.path.display(),
        r.tables.len(),
        r.figures.len()
    );
    for w in r.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
