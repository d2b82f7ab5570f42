//! Restoring a function from an image round: CRIU through runc, its link kept down (the
//! network lock) until the restore is done, then brought up, then the resume hooks.
use super::*;

impl Agent {
    /// `recovery`: the image may be older than the function's last state (a standby
    /// checkpoint), so what changed since is handed over (the SPGW's tunnel list).
    pub(super) fn restore(
        &self,
        name: &str,
        round: &str,
        lazy_from: Option<SocketAddr>,
        recovery: bool,
    ) -> Result<OpStats> {
        let (dir, spec) = self.existing(name)?;
        let images = round_dir(&dir, round)?;
        if !images.join("inventory.img").exists() {
            bail!(
                "no complete image round {round:?} of {name:?} on host {}",
                self.cfg.host
            );
        }
        if self.runc.state(name).is_some_and(|s| s.status != "stopped") {
            bail!("container {name:?} already runs on host {}", self.cfg.host);
        }
        let work = dir.join("work").join(format!("restore-{round}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        // If this agent dies before the restore is done, the controller gives the function
        // back to its source; the marker makes the restarted agent fence what was restored.
        std::fs::write(dir.join(fence::RESTORING), round)?;
        let t = Instant::now();
        let mut steps = Steps::default();
        steps.time(Step::Restore, || {
            self.criu_restore(name, &dir, &images, &work, lazy_from)
        })?;
        steps.time(Step::LinkUp, || self.link(name, true))?;
        steps.time(Step::Announce, || self.announce(name, &spec))?;
        steps.time(Step::AfterRestore, || {
            self.after_restore(name, &spec, &images, recovery)?;
            self.apply_quota(name, &spec);
            Ok(())
        })?;
        std::fs::remove_file(dir.join(fence::RESTORING))?;
        Ok(OpStats {
            ms: ms(t),
            bytes: 0,
            steps: steps.0,
            criu_dump: None,
            criu_restore: runtime::criu_stats::read_restore(&work)
                .map_err(|e| tracing::warn!("{name}: {e:#}"))
                .ok(),
            frozen_ms: None,
        })
    }

    /// `runc restore`; with `lazy_from`, CRIU's lazy-pages daemon first, left pulling the
    /// memory once the function runs.
    fn criu_restore(
        &self,
        name: &str,
        dir: &Path,
        images: &Path,
        work: &Path,
        lazy_from: Option<SocketAddr>,
    ) -> Result<()> {
        // runc refuses to restore over the state of a container that stopped here.
        if self.runc.state(name).is_some() {
            self.runc.delete(name);
        }
        let daemon = lazy_from
            .map(|from| runtime::runc::lazy_pages_daemon(&self.runc.criu, from, images, work))
            .transpose()?;
        let restored = self.runc.restore(
            name,
            &dir.join("bundle"),
            images,
            work,
            &dir.join("log"),
            daemon.is_some(),
        );
        let Some(mut daemon) = daemon else {
            return restored;
        };
        if let Err(e) = restored {
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err(e);
        }
        let done = Arc::new(Mutex::new(None));
        let d = done.clone();
        let work = work.to_path_buf();
        std::thread::spawn(move || {
            let outcome = match daemon.wait() {
                Ok(st) if st.success() => Ok(()),
                st => {
                    let e = anyhow::anyhow!("criu lazy-pages failed ({st:?})");
                    Err(format!("{:#}", criu_error(e, &work, "lazy-pages.log")))
                }
            };
            *lock(&d) = Some((Instant::now(), outcome));
        });
        lock(&self.lazy).insert(
            name.into(),
            Lazy::Pulling {
                restored: Instant::now(),
                done,
            },
        );
        Ok(())
    }
}
