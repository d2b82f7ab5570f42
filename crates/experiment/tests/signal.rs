//! Ctrl-C while a plan runs: the run in progress finishes and is stored, then the runner
//! stops; a restart does the rest. Its own test binary, since signal handlers are per process.
use anyhow::Result;
use experiment::SyntheticExecutor;
use experiment::{load_records, run_plan_with, Case, Executor, Plan, Record, RunOptions};
use std::path::Path;

struct InterruptAt {
    inner: SyntheticExecutor,
    at: usize,
    calls: usize,
}

impl Executor for InterruptAt {
    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record> {
        self.calls += 1;
        if self.calls == self.at {
            // What the terminal sends on Ctrl-C, in the middle of a run.
            signal_hook::low_level::raise(signal_hook::consts::SIGINT)?;
        }
        self.inner.run(case, run_index)
    }
    fn cpu_model(&self) -> String {
        self.inner.cpu_model()
    }
}

#[test]
fn ctrl_c_stops_after_the_current_run() {
    let plan =
        Plan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plans/quick.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        progress: false,
        ..RunOptions::default()
    };
    assert!(opts.handle_signals);
    let mut ex = InterruptAt {
        inner: SyntheticExecutor::new(),
        at: 2,
        calls: 0,
    };
    let s = run_plan_with(&plan, &mut ex, dir.path(), &opts).unwrap();
    assert!(s.interrupted);
    assert_eq!((ex.calls, s.executed), (2, 2));
    assert_eq!(load_records(dir.path()).unwrap().len(), 2);

    let mut ex = InterruptAt {
        inner: SyntheticExecutor::new(),
        at: 0,
        calls: 0,
    };
    let s = run_plan_with(&plan, &mut ex, dir.path(), &opts).unwrap();
    assert!(!s.interrupted);
    assert_eq!((s.already_done, s.executed), (2, 6));
}
