//! Dumping a function into an image round. Before a final dump the agent takes the
//! function's link down (the network lock) and lifts its CPU quota; then CRIU (started
//! beforehand) seizes its tasks with ptrace and dumps them, and the function's hooks run
//! while they are stopped. No cgroup freezer: CRIU's sleeps in 100 ms steps while a v1
//! freezer reads FREEZING, and a cgroup frozen by the agent is restored frozen (CRIU dumps
//! freezer.state).
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
            if let Err(e) = self
                .containers
                .set_cpu_quota(name, spec.flavor.cfs().0, None)
            {
                tracing::warn!("{name}: cannot lift the CPU quota for the dump: {e:#}");
            }
        }
        let dumped = (|| -> Result<()> {
            let swrk = self.take_dump_swrk(name)?;
            let layout = self.layout(name, &dir, &spec);
            let mut frozen_hooks = 0.0;
            let dump_started = Instant::now();
            let dumped = self.containers.checkpoint(
                name,
                &layout,
                RoundDirs {
                    images: &images,
                    work: &work,
                },
                &opts,
                swrk,
                // CRIU has seized (stopped) every task and not dumped anything yet.
                |script| {
                    if script == "network-lock" {
                        let t = Instant::now();
                        self.while_frozen(name, &spec, &images)?;
                        frozen_hooks = ms(t);
                    }
                    Ok(())
                },
            );
            steps.0.push((Step::Dump, ms(dump_started) - frozen_hooks));
            steps.0.push((Step::BeforeDump, frozen_hooks));
            if let (Some((thread, pid)), Some(at)) = (dumped?, opts.lazy_pages) {
                // For a successor, should this agent die while CRIU holds the function.
                std::fs::write(dir.join(lazy::PAGE_SERVER), at.to_string())?;
                lock(&self.lazy).insert(name.into(), Lazy::Serving(thread, pid, at));
            }
            Ok(())
        })();
        // The function keeps running at the source after a failed dump (CRIU lets go of
        // the tasks it seized): its link and quota back.
        if dumped.is_err() && stays_stopped {
            steps.time(Step::Thaw, || {
                self.plug(name)?;
                self.apply_quota(name, &spec);
                Ok(())
            })?;
        }
        dumped?;
        let criu_dump = runtime::criu_stats::read_dump(&work)
            .map_err(|e| tracing::warn!("{name}: {e:#}"))
            .ok();
        // CRIU's own measure of how long the tasks were stopped.
        let frozen_ms = opts
            .leave_running
            .then(|| criu_dump.as_ref().map(|d| d.frozen_ms + d.freezing_ms))
            .flatten();
        Ok(OpStats {
            ms: ms(t),
            bytes: dir_size(&images),
            steps: steps.0,
            criu_dump,
            criu_restore: None,
            frozen_ms,
            held_packets: None,
        })
    }

    /// The flavor's CPU quota, set on the running function. A restore runs without it: a
    /// 0.5-CPU quota throttles CRIU's restorer mid-way.
    pub(super) fn apply_quota(&self, name: &str, spec: &ContainerSpec) {
        let (period, quota) = spec.flavor.cfs();
        if let Err(e) = self.containers.set_cpu_quota(name, period, Some(quota)) {
            tracing::warn!("{name}: cannot set its CPU quota: {e:#}");
        }
    }
}
