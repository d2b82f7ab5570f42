//! Functions run as QEMU VMs, the paper's baseline: the same program and files as the
//! container would get, in an initramfs (crates/vm), QEMU started in this host's namespace
//! with its tap on the host bridge and the function's service IP and MAC in the guest. A VM
//! lives in the same per-function folder as a container (`spec.json` says which it is),
//! with its image in `vm/initrd.img` and QEMU's run dir `vm/run`; its pid file also goes
//! to the host's pid dir so `lab down` ends it.
use super::*;
use vm::{HostCaps, MigrateOptions, MigrationStats, StreamTls, Vm, VmSpec, INCOMING_PORT};

/// What the guest's init sets up before the function: the spec's [`GuestExtras`]
/// (programs, module lists, commands), and for an SPGW the GTP Module Initializer, the
/// same forwarding and NAT the agent sets up in a container's namespace (the function
/// creates its SGi TUN device from its own config; the guest kernel has the tun and
/// nf_tables modules from setup-vm.sh). Programs come from this host with their libraries.
///
/// [`GuestExtras`]: runtime::bundle::GuestExtras
fn guest_setup(spec: &ContainerSpec) -> Result<vm::GuestSetup> {
    let extras = &spec.guest;
    let mut setup = vm::GuestSetup {
        programs: extras.programs.clone(),
        module_lists: extras
            .modules
            .iter()
            .map(|m| format!("{m}.order"))
            .collect(),
        ..Default::default()
    };
    if let Some(sgi) = &spec.sgi {
        let nft = ["/usr/sbin/nft", "/sbin/nft"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context(
                "the SPGW's VM needs nft for its SGi NAT: install nftables (scripts/setup.sh)",
            )?;
        setup.programs.push(nft);
        setup.commands = sgi.forwarding_and_nat()?;
    }
    setup.commands.extend(
        extras
            .init
            .iter()
            .map(|c| vec!["sh".to_string(), "-c".to_string(), c.clone()]),
    );
    Ok(setup)
}

/// Marks an incoming VM whose migration this host has not confirmed (its QEMU started it
/// in [`Agent::vm_await`]): until then it is a target, "prepared", which a successor of a
/// dead agent removes (the controller resumed the source meanwhile).
const INCOMING: &str = "vm/incoming";

/// What a VM keeps of a function's spec. Its tunnel list is in guest RAM and moves with
/// the VM, so there is no file the host could hand over or report (the container's local
/// reactive handler).
fn vm_view(spec: &ContainerSpec) -> ContainerSpec {
    let mut s = spec.clone();
    s.tunnel_list = None;
    s
}

impl Agent {
    /// The VM of `spec`, its initramfs built into `dir` (program, args and files as the
    /// container would have them).
    fn vm_spec(&self, spec: &ContainerSpec, dir: &Path) -> Result<VmSpec> {
        let vmdir = dir.join("vm");
        let files_dir = vmdir.join("files");
        std::fs::create_dir_all(&files_dir)?;
        let mut files = Vec::new();
        for (i, (inside, content)) in spec.files.iter().enumerate() {
            let host = files_dir.join(i.to_string());
            std::fs::write(&host, content)?;
            files.push((host.to_string_lossy().into_owned(), inside.clone()));
        }
        let initrd = vmdir.join("initrd.img");
        vm::Image::build(
            &spec.program,
            &spec.args,
            &files,
            &guest_setup(spec)?,
            &initrd,
        )
        .with_context(|| format!("cannot build the VM image of {}", spec.name))?;
        let mut vs = VmSpec::new(
            &spec.name,
            spec.service_ip,
            spec.prefix_len,
            &vm::guest_kernel()?,
            &initrd,
        );
        vs.pid_dir = Some(paths::pid_dir(&self.cfg.host));
        // The flavor sizes the VM as it sizes a container's cgroup: whole vCPUs, and the
        // guest's RAM (which must also hold the initramfs-based root filesystem).
        vs.vcpus = spec.flavor.cpus.ceil().max(1.0) as u32;
        vs.memory_mb = spec.flavor.memory_mb.max(256);
        Ok(vs)
    }

    /// Writes the function's folder and boots its VM (or, with `incoming`, a VM waiting for
    /// a migration's state there instead of booting, from the host named with it).
    fn start_vm(&self, spec: &ContainerSpec, incoming: Option<(SocketAddr, &str)>) -> Result<Vm> {
        let spec = &vm_view(spec);
        let dir = self.dir(&spec.name)?;
        if dir.join("spec.json").exists() {
            bail!(
                "a function named {:?} already exists on host {}",
                spec.name,
                self.cfg.host
            );
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("spec.json"), serde_json::to_vec_pretty(spec)?)?;
        let started = (|| {
            let vs = self.vm_spec(spec, &dir)?;
            std::fs::write(dir.join("vm/vmspec.json"), serde_json::to_vec_pretty(&vs)?)?;
            let run = dir.join("vm/run");
            match incoming {
                Some((listen, from)) => {
                    Vm::start_incoming(&vs, &run, listen, Some(&self.stream_tls(from)))
                }
                None => Vm::start(&vs, &run),
            }
        })();
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    pub(super) fn run_vm(&self, spec: &ContainerSpec) -> Result<()> {
        self.start_vm(spec, None)?.detach();
        Ok(())
    }

    /// Takes charge of the running VM of `name`.
    fn attach_vm(&self, dir: &Path) -> Result<Vm> {
        let vs: VmSpec = serde_json::from_slice(&std::fs::read(dir.join("vm/vmspec.json"))?)?;
        Vm::attach(&vs, &dir.join("vm/run"))
    }

    /// QEMU's run state (running, postmigrate, paused...) and pid, prepared for a target
    /// not confirmed yet, or stopped.
    pub(super) fn vm_state(&self, dir: &Path) -> (String, Option<i64>) {
        match self.attach_vm(dir) {
            Ok(vm) if dir.join(INCOMING).exists() => ("prepared".into(), Some(vm.pid() as i64)),
            Ok(mut vm) => {
                let pid = vm.pid() as i64;
                let state = vm
                    .status()
                    .map(|s| s.status)
                    .unwrap_or_else(|_| "unknown".into());
                (state, Some(pid))
            }
            Err(_) => ("stopped".into(), None),
        }
    }

    pub(super) fn remove_vm(&self, dir: &Path) {
        if let Ok(vm) = self.attach_vm(dir) {
            let _ = vm.quit();
        }
    }

    /// Migration target: a QEMU waiting on this host's fabric address for the source's
    /// state, and what this host offers it (for the source's pre-live checks).
    pub(super) fn vm_incoming(&self, spec: &ContainerSpec, from: &str) -> Result<VmIncoming> {
        // What an earlier migration left here gives way, as a container's leftovers do at
        // its preparation: a source whose VM moved away while its agent was down (QEMU
        // stopped in postmigrate) would refuse the way back. One that runs here is refused.
        if let Ok((dir, s)) = self.existing(&spec.name) {
            if self.info(&spec.name, &s, &dir).state != "running" {
                self.remove(&spec.name)?;
            }
        }
        let listen = SocketAddr::new(self.cfg.listen.ip(), INCOMING_PORT);
        let mut vm = self.start_vm(spec, Some((listen, from)))?;
        if let Err(e) = std::fs::write(self.dir(&spec.name)?.join(INCOMING), b"") {
            let _ = vm.quit();
            let _ = self.remove(&spec.name);
            bail!("cannot mark {} as a migration target: {e}", spec.name);
        }
        let caps = HostCaps::of_vm(&self.cfg.host, &mut vm);
        let uri = vm.incoming_uri().unwrap_or_default().to_string();
        vm.detach();
        let caps = match caps {
            Ok(mut c) => {
                if let Some(mb) = self.cfg.memory_mb {
                    c.mem_available = c.mem_available.min(mb * 1024 * 1024);
                }
                if let Some(models) = &self.cfg.cpu_models {
                    c.cpu_models.retain(|d| models.contains(&d.name));
                }
                c
            }
            Err(e) => {
                let _ = self.remove(&spec.name);
                bail!("cannot probe this host's QEMU: {e}");
            }
        };
        Ok(VmIncoming { caps, uri })
    }

    /// Table 2's pre-live checks of the VM `name` against a destination.
    pub(super) fn vm_check(&self, name: &str, caps: &HostCaps) -> Result<()> {
        let (dir, _) = self.existing(name)?;
        let mut vm = self.attach_vm(&dir)?;
        vm::pre_live_checks(&mut vm, caps)?;
        Ok(())
    }

    /// QEMU pre-copy of `name` to `uri`; on failure QEMU leaves (or we put) the source VM
    /// running, and the error says in which state it is.
    pub(super) fn vm_migrate(&self, name: &str, uri: &str, to: &str) -> Result<MigrationStats> {
        let (dir, _) = self.existing(name)?;
        let mut vm = self.attach_vm(&dir)?;
        let opts = MigrateOptions {
            tls: Some(self.stream_tls(to)),
            ..MigrateOptions::default()
        };
        Ok(vm::migrate_with(&mut vm, uri, &opts)?)
    }

    /// QEMU's stream to or from `peer` sealed with this agent's keys, as its own
    /// connections are.
    fn stream_tls(&self, peer: &str) -> StreamTls {
        StreamTls {
            keys: self.cfg.tls.files().clone(),
            peer: peer.into(),
        }
    }

    pub(super) fn vm_resume(&self, name: &str) -> Result<()> {
        let (dir, _) = self.existing(name)?;
        let mut vm = self.attach_vm(&dir)?;
        if !vm.status()?.running {
            vm.qmp().cont()?;
        }
        Ok(())
    }

    /// Starts the incoming VM `name` once its state is in: the migration is confirmed here.
    pub(super) fn vm_await(&self, name: &str) -> Result<OpStats> {
        let (dir, _) = self.existing(name)?;
        let mut vm = self.attach_vm(&dir)?;
        let t = Instant::now();
        vm::run_arrived(&mut vm, Duration::from_millis(1), Duration::from_secs(30))?;
        std::fs::remove_file(dir.join(INCOMING))
            .with_context(|| format!("VM {name} runs, but stays marked as a target"))?;
        Ok(OpStats {
            ms: ms(t),
            bytes: 0,
            ..Default::default()
        })
    }
}
