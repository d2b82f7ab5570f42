//! Restoring a function from an image round with the CRIU started when the host was
//! prepared; its link comes up at CRIU's `network-unlock`, then the resume hooks run.
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
        if self
            .containers
            .state(name)
            .is_some_and(|s| s.status != "stopped")
        {
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
        // The image's record of the TUN devices is what the restored tasks expect.
        let tuns = runtime::tun::load(&images)?;
        let warm = self.take_restore(name, &dir, &tuns)?;
        let layout = self.layout(name, &dir, &spec);
        // The network opens at CRIU's `network-unlock`: the sockets exist, the tasks have
        // not run yet, so neither a peer's packet nor the function's first reply is lost.
        let mut opened: Vec<(Step, f64)> = Vec::new();
        let (mut held, mut handed, mut restored_pid) = (None, None, 0);
        let restored = Instant::now();
        let r = self.criu_restore(
            name,
            &layout,
            &images,
            &work,
            lazy_from,
            warm,
            |script, pid| {
                match script {
                    "post-restore" => restored_pid = pid as i64,
                    "network-unlock" => {
                        let mut s = Steps::default();
                        handed = s.time(Step::BeforeResume, || {
                            self.before_resume(name, &spec, &images, restored_pid, recovery)
                        })?;
                        held = s.time(Step::Release, || self.release(name))?;
                        s.time(Step::LinkUp, || self.link(name, true))?;
                        s.time(Step::Announce, || self.announce(name, &spec))?;
                        opened = s.0;
                    }
                    _ => {}
                }
                Ok(())
            },
        );
        let inside: f64 = opened.iter().map(|(_, v)| v).sum();
        steps.0.push((Step::Restore, ms(restored) - inside));
        steps.0.extend(opened.iter().copied());
        r?;
        if opened.is_empty() {
            bail!("CRIU restored {name} without its network-unlock notification");
        }
        steps.time(Step::AfterRestore, || {
            self.after_resume(name, &spec, handed);
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
            held_packets: held,
        })
    }

    /// CRIU's restore; with `lazy_from`, CRIU's lazy-pages daemon first, left pulling the
    /// memory once the function runs.
    #[allow(clippy::too_many_arguments)]
    fn criu_restore(
        &self,
        name: &str,
        layout: &Layout,
        images: &Path,
        work: &Path,
        lazy_from: Option<SocketAddr>,
        warm: runtime::containers::WarmRestore,
        mut on_notify: impl FnMut(&str, i32) -> Result<()>,
    ) -> Result<()> {
        let Some(from) = lazy_from else {
            let restored = self.containers.restore(
                name,
                layout,
                RoundDirs { images, work },
                false,
                warm,
                &mut on_notify,
            );
            return restored.map(|_| ());
        };
        let mut daemon =
            runtime::runc::lazy_pages_daemon(&self.containers.criu, from, images, work)?;
        let daemon_pid = daemon.id() as i32;
        let criu_pid = warm.pid() as i32;
        // A daemon that fails (the source's page server is gone) leaves CRIU's restore
        // waiting for it forever: the restore is ended with it.
        let restoring = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let done = Arc::new(Mutex::new(None));
        let (d, r, w) = (done.clone(), restoring.clone(), work.to_path_buf());
        std::thread::spawn(move || {
            let outcome = match daemon.wait() {
                Ok(st) if st.success() => Ok(()),
                st => {
                    if r.load(std::sync::atomic::Ordering::SeqCst) {
                        // SAFETY: kill(2) of the CRIU this agent started for the restore.
                        unsafe { libc::kill(criu_pid, libc::SIGKILL) };
                    }
                    let e = anyhow::anyhow!("criu lazy-pages failed ({st:?})");
                    Err(format!("{:#}", criu_error(e, &w, "lazy-pages.log")))
                }
            };
            *lock(&d) = Some((Instant::now(), outcome));
        });
        let restored = self.containers.restore(
            name,
            layout,
            RoundDirs { images, work },
            true,
            warm,
            &mut on_notify,
        );
        restoring.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = restored {
            // SAFETY: kill(2) of the lazy-pages daemon started above (reaped by its thread).
            unsafe { libc::kill(daemon_pid, libc::SIGKILL) };
            return Err(e);
        }
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
