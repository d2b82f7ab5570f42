//! Preparing a host for a function: its network namespace, its veth on the host bridge (link
//! down until the function serves here) and its bundle; starting it; removing it.
use super::*;

impl Agent {
    pub(super) fn prepare(&self, spec: &ContainerSpec) -> Result<String> {
        if spec.runtime == Runtime::Vm {
            bail!(
                "{} is a VM: it moves by QEMU migration, not by a container restore",
                spec.name
            );
        }
        let dir = self.dir(&spec.name)?;
        if self
            .containers
            .state(&spec.name)
            .is_some_and(|s| s.status != "stopped")
        {
            bail!(
                "container {:?} already runs on host {}",
                spec.name,
                self.cfg.host
            );
        }
        // Whatever an earlier attempt left (CRIU restores cgroup properties only into
        // cgroups it creates).
        self.discard_warm(&spec.name);
        self.containers.delete(&spec.name);
        std::fs::create_dir_all(&dir)?;
        let ns = self.netns(&spec.name);
        net::add_netns(&ns)?;
        self.attach(&spec.name, spec)?;
        if let Some(sgi) = &spec.sgi {
            runtime::sgi::init(&ns, sgi)?;
        }
        for d in &spec.tun_devices {
            runtime::tun::recreate(&ns, d)?;
        }
        let cgroup = format!("{}/{}", paths::cgroup_parent(&self.cfg.host), spec.name);
        let digest = runtime::bundle::build(
            spec,
            &dir.join("bundle"),
            &Path::new("/run/netns").join(&ns),
            &cgroup,
        )?;
        // The function's writable folder: empty for a start, untouched for a restore.
        runtime::writable::mount_fresh(&writable_dir(&dir))?;
        std::fs::write(dir.join("rootfs.digest"), &digest)?;
        std::fs::write(dir.join("spec.json"), serde_json::to_vec_pretty(spec)?)?;
        Ok(digest)
    }

    /// A migration target: prepared, with the CRIU of its restore started.
    pub(super) fn prepare_target(&self, spec: &ContainerSpec) -> Result<String> {
        let digest = self.prepare(spec)?;
        self.containers.prepare_cgroup_parents()?;
        self.containers.prepare_cpuset(&spec.name)?;
        self.warm_restore(&spec.name, &self.dir(&spec.name)?, &spec.tun_devices)?;
        if let Err(e) = self.hold(&spec.name) {
            tracing::warn!(
                "{}: cannot hold its packets during the move (they will be dropped instead): {e:#}",
                spec.name
            );
        }
        Ok(digest)
    }

    pub(super) fn run(&self, spec: ContainerSpec) -> Result<ContainerInfo> {
        if self.dir(&spec.name)?.join("spec.json").exists() {
            bail!(
                "a container named {:?} already exists on host {}",
                spec.name,
                self.cfg.host
            );
        }
        if spec.runtime == Runtime::Vm {
            self.run_vm(&spec)?;
            let (dir, spec) = self.existing(&spec.name)?;
            return Ok(self.info(&spec.name, &spec, &dir));
        }
        let started = (|| {
            self.prepare(&spec)?;
            let dir = self.dir(&spec.name)?;
            // On the fabric before it starts: a function that connects at once (the MME to
            // its HSS) would otherwise send its first SYN into a link that is down.
            self.link(&spec.name, true)?;
            self.announce(&spec.name, &spec)?;
            self.runc
                .run(&spec.name, &dir.join("bundle"), &dir.join("log"))?;
            self.apply_quota(&spec.name, &spec);
            Ok(())
        })();
        if let Err(e) = started {
            let _ = self.remove(&spec.name);
            return Err(e);
        }
        let (dir, spec) = self.existing(&spec.name)?;
        Ok(self.info(&spec.name, &spec, &dir))
    }

    pub(super) fn remove(&self, name: &str) -> Result<()> {
        let dir = self.dir(name)?;
        if let Ok((_, spec)) = self.existing(name) {
            if spec.runtime == Runtime::Vm {
                self.remove_vm(&dir);
            }
        }
        // The link goes down before the hold ends: what the hold let through into a
        // namespace without the function's sockets would draw resets that end its peers'
        // connections (the function may be back at its source by now).
        let _ = self.link(name, false);
        self.end_lazy(name);
        self.discard_warm(name);
        lock(&self.leases).remove(name);
        self.containers.delete(name);
        net::unplug(&self.cfg.host, &port(name));
        net::del_netns(&self.netns(name));
        runtime::containers::unmount(&writable_dir(&dir));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}

/// The host's tmpfs that is the function's writable folder.
fn writable_dir(dir: &Path) -> PathBuf {
    dir.join("bundle").join(runtime::bundle::WRITABLE_DIR)
}
