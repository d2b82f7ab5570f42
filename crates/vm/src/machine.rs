//! A QEMU VM plugged into a host's bridge: process, serial log, QMP, tap, pid file.
use crate::image::{CMDLINE_GW, CMDLINE_IP, CMDLINE_MAC};
use crate::qmp::{Qmp, QmpError, StatusInfo};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// What a VM is. Source and destination of a migration must be started from equal specs
/// (QEMU needs the same machine on both sides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Short name: QEMU's `-name` and the base of the pid file and tap names.
    pub name: String,
    /// The function's service IP, given to the guest's eth0.
    pub service_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Default route inside the guest, if it must reach beyond its subnet.
    pub gateway: Option<Ipv4Addr>,
    pub vcpus: u32,
    pub memory_mb: u64,
    /// QEMU CPU model (`-cpu`); "qemu64" runs everywhere TCG does.
    pub cpu_model: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Bridge in the caller's network namespace the VM's tap joins (the lab's `br0`).
    pub host_bridge: String,
    /// Accelerator; `Auto` picks KVM only where it really boots guests.
    pub accel: Accel,
    /// Folder for the pid file (the lab's `lab::paths::pid_dir(host)`, so `lab down`
    /// kills the VM); `None` keeps it in the run dir only.
    pub pid_dir: Option<PathBuf>,
}

impl VmSpec {
    /// A spec with the defaults: 1 vCPU, 256 MB, qemu64, bridge br0.
    pub fn new(
        name: &str,
        service_ip: Ipv4Addr,
        prefix_len: u8,
        kernel: &Path,
        initrd: &Path,
    ) -> VmSpec {
        VmSpec {
            name: name.into(),
            service_ip,
            prefix_len,
            gateway: None,
            vcpus: 1,
            memory_mb: 256,
            cpu_model: "qemu64".into(),
            kernel: kernel.into(),
            initrd: initrd.into(),
            host_bridge: lab::net::HOST_BRIDGE.into(),
            accel: Accel::Auto,
            pid_dir: None,
        }
    }

    /// The guest's MAC: the lab's stable MAC for the service IP, so peers' ARP caches
    /// stay right across a migration.
    pub fn mac(&self) -> String {
        lab::net::mac_for(self.service_ip)
    }

    /// The tap's name (≤ 15 bytes, IFNAMSIZ). Long names are hashed, not truncated, so
    /// two VMs with a common prefix never share a tap.
    pub fn tap_name(&self) -> String {
        let n = format!("vt-{}", self.name);
        if n.len() <= 15
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return n;
        }
        // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
        let h = self.name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        format!("vt-{:012x}", h & 0xffff_ffff_ffff)
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            bail!(
                "VM name {:?}: use letters, digits, '-', '_', '.'",
                self.name
            );
        }
        if self.prefix_len > 32 {
            bail!("prefix length /{} is not an IPv4 prefix", self.prefix_len);
        }
        if self.vcpus == 0 || self.memory_mb < 64 {
            bail!(
                "VM {}: needs at least 1 vCPU and 64 MB (has {} and {} MB)",
                self.name,
                self.vcpus,
                self.memory_mb
            );
        }
        // QEMU parses -cpu as "model,feature=..": anything else would inject options.
        if self.cpu_model.is_empty()
            || !self
                .cpu_model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            bail!(
                "CPU model {:?} is not a plain QEMU model name",
                self.cpu_model
            );
        }
        for (what, p) in [("kernel", &self.kernel), ("initrd", &self.initrd)] {
            if !p.is_file() {
                bail!(
                    "VM {}: the {what} {} does not exist",
                    self.name,
                    p.display()
                );
            }
            // QEMU splits option values at commas.
            if p.to_string_lossy().contains(',') {
                bail!(
                    "VM {}: the {what} path {} has a comma",
                    self.name,
                    p.display()
                );
            }
        }
        Ok(())
    }

    fn cmdline(&self) -> String {
        let mut c = format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 {CMDLINE_IP}={}/{} {CMDLINE_MAC}={}",
            self.service_ip,
            self.prefix_len,
            self.mac()
        );
        if let Some(gw) = self.gateway {
            c.push_str(&format!(" {CMDLINE_GW}={gw}"));
        }
        c
    }
}

/// Which QEMU accelerator runs the guest. Both ends of a migration must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when [`kvm_works`], else TCG.
    #[default]
    Auto,
    Tcg,
    Kvm,
}

impl Accel {
    /// The accelerator to use for a VM booting `kernel`.
    pub fn resolve(self, kernel: &Path) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
            Accel::Auto if kvm_works(kernel) => "kvm",
            Accel::Auto => "tcg",
        }
    }
}

/// Where the KVM verdict is kept for the rest of this boot of the host.
const KVM_VERDICT: &str = "/run/corehop-vm-kvm";

/// Whether KVM really runs a guest here. /dev/kvm can exist and accept a VM while guests
/// hang once they leave real mode (seen on nested hosts), so the test is to boot `kernel`
/// under KVM and wait for its first message on the serial port. That costs up to 4 s, so
/// the verdict is kept in /run for the current boot (keyed by the boot id).
pub fn kvm_works(kernel: &Path) -> bool {
    static CACHE: std::sync::Mutex<Option<bool>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = *cache {
        return v;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let boot = boot.trim();
    let saved = std::fs::read_to_string(KVM_VERDICT).unwrap_or_default();
    let v = match saved.split_once(' ') {
        Some((id, verdict)) if !boot.is_empty() && id == boot => verdict.trim() == "kvm",
        _ => {
            let v = probe_kvm(kernel);
            let _ = std::fs::write(
                KVM_VERDICT,
                format!("{boot} {}\n", if v { "kvm" } else { "tcg" }),
            );
            v
        }
    };
    *cache = Some(v);
    v
}

fn probe_kvm(kernel: &Path) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let log = std::env::temp_dir().join(format!("corehop-kvm-probe-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let child = Command::new(QEMU)
        .args([
            "-accel", "kvm", "-machine", "pc", "-cpu", "qemu64", "-m", "128M",
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut ok = false;
    while Instant::now() < deadline {
        let text = std::fs::read(&log).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains("Linux version") {
            ok = true;
            break;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    tracing::info!(
        "KVM {}",
        if ok {
            "works"
        } else {
            "does not boot a guest here; using TCG"
        }
    );
    ok
}

/// A running QEMU. Dropping it kills QEMU (its tap goes with it); [`Vm::detach`] leaves
/// it running instead.
pub struct Vm {
    pub spec: VmSpec,
    run_dir: PathBuf,
    child: Option<Child>,
    pid: u32,
    qmp: Qmp,
    pid_files: Vec<PathBuf>,
    incoming: Option<String>,
    started: Instant,
    accel: &'static str,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.spec.name)
            .field("pid", &self.pid)
            .field("run_dir", &self.run_dir)
            .field("incoming", &self.incoming)
            .finish()
    }
}

impl Vm {
    /// Boots a VM from `spec` in the caller's network namespace; its tap joins
    /// `spec.host_bridge` there. `run_dir` gets `console.log` (the serial console),
    /// `qmp.sock`, `qemu.log` (QEMU's own messages) and `qemu.pid`. Returns once QMP
    /// answers; the guest boots on in the background (see [`Vm::wait_console`]).
    pub fn start(spec: &VmSpec, run_dir: &Path) -> Result<Vm> {
        Vm::launch(spec, run_dir, None)
    }

    /// Starts a migration target: the same machine, waiting on `listen` for the state of
    /// a source VM (`-incoming defer`, then `migrate-incoming`, so migration parameters
    /// could be set before it listens). Once the state is in, it stays paused until its
    /// owner starts it ([`crate::run_arrived`]). With `tls`, the stream must be mutual TLS
    /// from the source host it names.
    pub fn start_incoming(
        spec: &VmSpec,
        run_dir: &Path,
        listen: SocketAddr,
        tls: Option<&crate::StreamTls>,
    ) -> Result<Vm> {
        let uri = format!("tcp:{}:{}", listen.ip(), listen.port());
        let mut vm = Vm::launch(spec, run_dir, Some(uri.clone()))?;
        let _ = std::fs::write(run_dir.join("incoming.uri"), &uri);
        if let Some(tls) = tls {
            crate::tls::destination(&mut vm.qmp, run_dir, tls)
                .with_context(|| format!("VM {}: cannot secure its migration", spec.name))?;
        }
        vm.qmp
            .migrate_incoming(&uri)
            .with_context(|| format!("VM {}: cannot listen for migration on {uri}", spec.name))?;
        Ok(vm)
    }

    fn launch(spec: &VmSpec, run_dir: &Path, incoming: Option<String>) -> Result<Vm> {
        spec.validate()?;
        // Asked of iproute2, not /sys/class/net: sysfs shows the namespace it was
        // mounted in, not the calling thread's.
        let is_bridge = Command::new("ip")
            .args([
                "-o",
                "link",
                "show",
                "dev",
                &spec.host_bridge,
                "type",
                "bridge",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.status.success() && !o.stdout.is_empty())
            .unwrap_or(false);
        if !is_bridge {
            bail!(
                "no bridge {} in this network namespace: start VMs from inside a host's \
                 namespace (the lab's ch-<host>)",
                spec.host_bridge
            );
        }
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let qmp_path = run_dir.join("qmp.sock");
        let ga_path = crate::guest_agent::socket(run_dir);
        let console = run_dir.join("console.log");
        let _ = std::fs::remove_file(&qmp_path);
        let _ = std::fs::remove_file(&ga_path);
        let _ = std::fs::remove_file(&console);
        let _ = std::fs::remove_file(run_dir.join("incoming.uri"));
        for p in [&qmp_path, &console] {
            if p.to_string_lossy().contains(',') {
                bail!(
                    "run dir {} has a comma, which QEMU options cannot carry",
                    run_dir.display()
                );
            }
        }
        // A unix socket path must fit sockaddr_un (108 bytes with the final NUL).
        if qmp_path.as_os_str().len() >= 108 {
            bail!(
                "run dir {} is too long for QEMU's QMP socket path (max ~95 bytes)",
                run_dir.display()
            );
        }
        let tap = spec.tap_name();
        // QEMU's taps vanish with QEMU (they are not persistent), so an existing one
        // belongs to a live VM of the same name in this namespace.
        let tap_exists = || {
            Command::new("ip")
                .args(["-o", "link", "show", "dev", &tap])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map(|o| o.status.success() && !o.stdout.is_empty())
                .unwrap_or(false)
        };
        // A QEMU that just ended may still be tearing its tap down.
        let until = Instant::now() + Duration::from_secs(1);
        while tap_exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        if tap_exists() {
            bail!(
                "tap {tap} already exists here: is VM {} already running on this host?",
                spec.name
            );
        }
        if let Some(d) = &spec.pid_dir {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create the pid folder {}", d.display()))?;
        }
        let log = std::fs::File::create(run_dir.join("qemu.log"))?;
        let accel = spec.accel.resolve(&spec.kernel);
        let mut cmd = Command::new(QEMU);
        cmd.arg("-name")
            .arg(format!("{},process=qemu-{}", spec.name, spec.name))
            .args(["-machine", "pc", "-accel", accel])
            .args(["-cpu", &spec.cpu_model])
            .args(["-smp", &spec.vcpus.to_string()])
            .args(["-m", &format!("{}M", spec.memory_mb)])
            // No default devices: the guest gets exactly the serial port and NIC below,
            // and source and destination are built the same way.
            .args(["-nodefaults", "-nographic", "-no-reboot"])
            .args(["-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            // ttyS1: the guest agent's channel (crate::guest_agent).
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", ga_path.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .arg("-kernel")
            .arg(&spec.kernel)
            .arg("-initrd")
            .arg(&spec.initrd)
            .args(["-append", &spec.cmdline()])
            // QEMU creates the tap itself, so it disappears with QEMU even on kill -9.
            .arg("-netdev")
            .arg(format!("tap,id=net0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=net0,mac={},romfile=",
                spec.mac()
            ));
        if incoming.is_some() {
            // -S: a target that ran by itself once the state is in would serve beside a
            // source that a rollback resumed (its owner died before it could answer).
            cmd.args(["-incoming", "defer", "-S"]);
        }
        tracing::debug!("exec: {:?}", cmd);
        // The exact command, so a VM can be rerun by hand when debugging.
        let _ = std::fs::write(run_dir.join("qemu.cmdline"), format!("{cmd:?}\n"));
        // A session of its own: a Ctrl-C meant for the caller must not kill the VM.
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {QEMU} (install qemu-system-x86)"))?;
        let pid = child.id();
        let pid_files = pid_files_of(spec, run_dir);
        let mut vm_child = Some(child);
        for f in &pid_files {
            if let Err(e) = std::fs::write(f, pid.to_string()) {
                kill_child(&mut vm_child);
                return Err(e).with_context(|| format!("cannot write {}", f.display()));
            }
        }
        let fail = |vm_child: &mut Option<Child>, e: anyhow::Error| -> anyhow::Error {
            kill_child(vm_child);
            for f in &pid_files {
                let _ = std::fs::remove_file(f);
            }
            let log = std::fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default();
            let log = log.trim();
            if log.is_empty() {
                e
            } else {
                e.context(format!("QEMU said: {log}"))
            }
        };
        let qmp = match connect_qmp(&qmp_path, &mut vm_child) {
            Ok(q) => q,
            Err(e) => return Err(fail(&mut vm_child, e)),
        };
        if let Err(e) = plug_tap(&tap, &spec.host_bridge) {
            return Err(fail(&mut vm_child, e));
        }
        Ok(Vm {
            spec: spec.clone(),
            run_dir: run_dir.to_path_buf(),
            child: vm_child,
            pid,
            qmp,
            pid_files,
            incoming,
            started,
            accel,
        })
    }

    /// Takes charge of a VM started earlier (by [`Vm::start`] in another process, e.g. an
    /// agent that restarted), found by its run dir. Such a handle is not QEMU's parent:
    /// dropping it leaves the VM running; [`Vm::quit`] stops it.
    pub fn attach(spec: &VmSpec, run_dir: &Path) -> Result<Vm> {
        let pid_file = run_dir.join("qemu.pid");
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("no VM in {} (no qemu.pid)", run_dir.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", pid_file.display()))?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("qemu") {
            bail!("VM {} (pid {pid}) is not running", spec.name);
        }
        let qmp = Qmp::connect(&run_dir.join("qmp.sock"), Duration::from_secs(2))
            .with_context(|| format!("VM {}: QMP does not answer", spec.name))?;
        let incoming = std::fs::read_to_string(run_dir.join("incoming.uri"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let accel = if std::fs::read_to_string(run_dir.join("qemu.cmdline"))
            .unwrap_or_default()
            .contains("\"kvm\"")
        {
            "kvm"
        } else {
            "tcg"
        };
        Ok(Vm {
            spec: spec.clone(),
            run_dir: run_dir.to_path_buf(),
            child: None,
            pid,
            qmp,
            pid_files: pid_files_of(spec, run_dir),
            incoming,
            started: Instant::now(),
            accel,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// "tcg" or "kvm".
    pub fn accel(&self) -> &'static str {
        self.accel
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The socket of the guest agent's serial port (see [`crate::guest_agent`]).
    pub fn guest_agent_socket(&self) -> PathBuf {
        crate::guest_agent::socket(&self.run_dir)
    }

    pub fn console_log(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    /// The URI a migration source sends to, for a VM made by [`Vm::start_incoming`].
    pub fn incoming_uri(&self) -> Option<&str> {
        self.incoming.as_deref()
    }

    /// The guest's uptime when its init started the program (the guest-side boot time),
    /// once the console shows it.
    pub fn guest_boot_time(&self) -> Option<Duration> {
        let log = std::fs::read(self.console_log()).ok()?;
        crate::image::app_started_uptime(&String::from_utf8_lossy(&log))
    }

    /// When QEMU was spawned.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    pub fn status(&mut self) -> Result<StatusInfo, QmpError> {
        self.qmp.query_status()
    }

    /// Whether the QEMU process still runs (reaping it if it ended).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            // Not our child: alive while /proc shows it in any state but zombie.
            None => std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .ok()
                .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false),
        }
    }

    /// Waits until the serial console shows `needle` (e.g. [`crate::image::APP_STARTED`]);
    /// returns the time since QEMU started. Fails early if QEMU exits.
    pub fn wait_console(&mut self, needle: &str, within: Duration) -> Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read(self.console_log()).unwrap_or_default();
            if String::from_utf8_lossy(&log).contains(needle) {
                return Ok(self.started.elapsed());
            }
            if !self.alive() {
                bail!(
                    "VM {} exited before its console showed {needle:?}; see {}",
                    self.spec.name,
                    self.console_log().display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "VM {}: console did not show {needle:?} within {within:?}; see {}",
                    self.spec.name,
                    self.console_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the VM: QMP `quit`, then SIGKILL if QEMU lingers. Removes the pid files.
    pub fn quit(mut self) -> Result<()> {
        let r = self.qmp.quit();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.is_none() && self.alive() {
            // An attached VM that ignored quit; the pid was checked to be QEMU's.
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        kill_child(&mut self.child);
        self.remove_pid_files();
        r.map_err(Into::into)
    }

    /// Leaves QEMU running and its pid files in place (whoever owns the host, e.g.
    /// `lab down`, ends it, or a later [`Vm::attach`]); returns the pid.
    pub fn detach(mut self) -> u32 {
        // Reaped by a thread of its own when it ends: a parent that lives on (an agent)
        // would otherwise keep every QEMU that ended as a zombie. With no child, Drop only
        // closes the QMP connection.
        if let Some(mut c) = self.child.take() {
            std::thread::spawn(move || c.wait());
        }
        self.pid
    }

    fn remove_pid_files(&mut self) {
        for f in self.pid_files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for Vm {
    /// Kills a VM this handle started; an attached or detached one keeps running.
    fn drop(&mut self) {
        if self.child.is_some() {
            kill_child(&mut self.child);
            self.remove_pid_files();
        }
    }
}

fn pid_files_of(spec: &VmSpec, run_dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![run_dir.join("qemu.pid")];
    if let Some(d) = &spec.pid_dir {
        v.push(d.join(format!("vm-{}.pid", spec.name)));
    }
    v
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn connect_qmp(path: &Path, child: &mut Option<Child>) -> Result<Qmp> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Qmp::connect(path, Duration::from_millis(200)) {
            Ok(q) => return Ok(q),
            Err(e) => {
                if let Some(c) = child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        bail!("QEMU exited during start ({st})");
                    }
                }
                if Instant::now() > deadline {
                    return Err(e).context("QEMU's QMP socket did not answer within 20 s");
                }
            }
        }
    }
}

fn plug_tap(tap: &str, bridge: &str) -> Result<()> {
    for args in [
        vec!["link", "set", tap, "master", bridge],
        vec!["link", "set", tap, "up"],
    ] {
        let out = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run `ip` (iproute2)")?;
        if !out.status.success() {
            bail!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> VmSpec {
        VmSpec::new(
            name,
            Ipv4Addr::new(10, 77, 1, 10),
            16,
            Path::new("/nonexistent/k"),
            Path::new("/nonexistent/i"),
        )
    }

    #[test]
    fn tap_names_fit_ifnamsiz_and_stay_distinct() {
        assert_eq!(spec("hss").tap_name(), "vt-hss");
        let a = spec("a-very-long-vm-name-1").tap_name();
        let b = spec("a-very-long-vm-name-2").tap_name();
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
        assert_eq!(a, spec("a-very-long-vm-name-1").tap_name(), "stable");
    }

    #[test]
    fn cmdline_carries_ip_and_the_lab_mac() {
        let mut s = spec("hss");
        s.gateway = Some(Ipv4Addr::new(10, 77, 0, 1));
        let c = s.cmdline();
        assert!(c.contains("corehop.ip=10.77.1.10/16"), "{c}");
        assert!(c.contains("corehop.mac=02:c4:0a:4d:01:0a"), "{c}");
        assert!(c.contains("corehop.gw=10.77.0.1"), "{c}");
        assert!(c.contains("console=ttyS0"));
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let msg = |s: VmSpec| s.validate().unwrap_err().to_string();
        assert!(msg(spec("a b")).contains("VM name"));
        assert!(msg(VmSpec {
            cpu_model: "qemu64,+vmx".into(),
            ..spec("x")
        })
        .contains("CPU model"));
        assert!(msg(VmSpec {
            memory_mb: 16,
            ..spec("x")
        })
        .contains("64 MB"));
        assert!(msg(VmSpec {
            prefix_len: 33,
            ..spec("x")
        })
        .contains("/33"));
        assert!(msg(spec("x")).contains("kernel /nonexistent/k does not exist"));
    }
}
