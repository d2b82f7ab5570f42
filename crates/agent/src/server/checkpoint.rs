//! Dumping a function into an image round. Before a final dump the agent takes the
//! function's link down (the network lock) and lifts its CPU quota; then it freezes it with
//! the cgroup freezer, runs the function's hooks and has CRIU dump it through runc.
use super::*;

impl Agent {
    pub(super) fn checkpoint(
        &self,
        name: &str,
        round: &str,
        opts: CheckpointOpts,
    ) -> Result<OpStats> {
        let (dir, spec) = self.existing(name)?;
        let images = round_dir(&dir, round)?;
        if opts.lazy_pages.is_some() && (opts.leave_running || opts.pre_dump) {
            bail!("a lazy-pages dump is the final one: it cannot leave {name} running");
        }
        let work = dir.join("work").join(round);
        for d in [&images, &work] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d)?;
        }
        let t = Instant::now();
        let mut steps = Steps::default();
        let stays_stopped = !opts.leave_running;
        if stays_stopped {
            steps.time(Step::Lock, || self.link(name, false))?;
            // CRIU's parasite code runs inside the function's tasks, under its CPU quota.
            if let Err(e) = self.runc.set_cpu_quota(name, spec.flavor.cfs().0, None) {
                tracing::warn!("{name}: cannot lift the CPU quota for the dump: {e:#}");
            }
        }
        let dumped = (|| -> Result<Instant> {
            steps.time(Step::BeforeFreeze, || self.before_freeze(name, &spec))?;
            steps.time(Step::Freeze, || self.runc.freeze(name))?;
            let frozen = Instant::now();
            steps.time(Step::BeforeDump, || self.while_frozen(name, &spec, &images))?;
            steps.time(Step::Dump, || {
                if opts.lazy_pages.is_some() {
                    let child = self.runc.checkpoint_lazy(name, &images, &work, &opts)?;
                    lock(&self.lazy).insert(name.into(), Lazy::Serving(child));
                    Ok(())
                } else {
                    self.runc.checkpoint(name, &images, &work, &opts)
                }
            })?;
            Ok(frozen)
        })();
        // The function keeps running at the source after a leave-running dump or a failed
        // one: thaw it (CRIU leaves a cgroup it found frozen frozen) and give back what the
        // hooks took.
        let mut frozen_ms = None;
        if dumped.is_err() || opts.leave_running {
            steps.time(Step::Thaw, || {
                let thawed = self.runc.thaw(name);
                if let Ok(at) = &dumped {
                    frozen_ms = Some(ms(*at));
                }
                self.after_thaw(name, &spec);
                thawed
            })?;
            if stays_stopped {
                self.plug(name)?;
                self.apply_quota(name, &spec);
            }
        }
        dumped?;
        Ok(OpStats {
            ms: ms(t),
            bytes: dir_size(&images),
            steps: steps.0,
            criu_dump: runtime::criu_stats::read_dump(&work)
                .map_err(|e| tracing::warn!("{name}: {e:#}"))
                .ok(),
            criu_restore: None,
            frozen_ms,
        })
    }

    /// The flavor's CPU quota, set on the running function. A restore runs without it: a
    /// 0.5-CPU quota throttles CRIU's restorer mid-way.
    pub(super) fn apply_quota(&self, name: &str, spec: &ContainerSpec) {
        let (period, quota) = spec.flavor.cfs();
        if let Err(e) = self.runc.set_cpu_quota(name, period, Some(quota)) {
            tracing::warn!("{name}: cannot set its CPU quota: {e:#}");
        }
    }
}
