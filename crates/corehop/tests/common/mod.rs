//! Shared by the integration tests: they drive the real `corehop` binary against a real
//! lab (network namespaces, agents, runc, CRIU), so they need root and run one at a time.
#![allow(dead_code)]
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

pub const BIN: &str = env!("CARGO_BIN_EXE_corehop");

static LAB: Mutex<()> = Mutex::new(());

/// Serialises tests (across test binaries and processes too: the lab is machine-wide) and
/// tears the lab down when dropped, also on failure.
pub struct Lab {
    _guard: MutexGuard<'static, ()>,
    _flock: std::fs::File,
}

/// An exclusive lock on the machine's lab, released when the file closes.
fn machine_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create("/run/lock/corehop-lab-tests.lock").expect("lock file");
    // SAFETY: flock on an fd we own; blocks until other test processes are done.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) },
        0,
        "flock"
    );
    f
}

impl Lab {
    pub fn up() -> Lab {
        Lab::start(&["lab", "up"])
    }

    fn start(up: &[&str]) -> Lab {
        let guard = LAB.lock().unwrap_or_else(|p| p.into_inner());
        let flock = machine_lock();
        ok(&["lab", "down"]);
        ok(up);
        Lab {
            _guard: guard,
            _flock: flock,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed test keeps the lab's logs (agents, master, functions) for a post-mortem.
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("corehop-failed-{}", std::process::id()));
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "mkdir -p {k} && cp -r /run/corehop {k}/run 2>/dev/null; \
                     for f in /var/lib/corehop/hosts/*/containers/*/log; do \
                       d={k}/$(echo $f | cut -d/ -f6,8 | tr / -); cp $f $d.log; done",
                    k = keep.display()
                ))
                .status();
            eprintln!("lab logs kept in {}", keep.display());
        }
        let _ = corehop(&["lab", "down"]);
    }
}

pub fn corehop(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("cannot run corehop")
}

/// Runs corehop and returns stdout; panics with stderr when it fails.
pub fn ok(args: &[&str]) -> String {
    let o = corehop(args);
    assert!(
        o.status.success(),
        "corehop {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs corehop expecting failure; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = corehop(args);
    assert!(
        !o.status.success(),
        "corehop {args:?} should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// corehop run inside a lab host's namespace (a client on another host).
pub fn on_host(host: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("ch-{host}"), BIN])
        .args(args);
    c
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A tcpdump writing one interface to a pcap, in a namespace (or the root one); stopped
/// (and the file flushed) when dropped.
pub struct Capture {
    child: std::process::Child,
    pub path: std::path::PathBuf,
}

impl Capture {
    pub fn start(ns: Option<&str>, iface: &str, path: &std::path::Path) -> Capture {
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tcpdump"]);
                c
            }
            None => Command::new("tcpdump"),
        };
        let child = c
            .args(["-i", iface, "-U", "--immediate-mode", "-s", "0", "-w"])
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump");
        std::thread::sleep(std::time::Duration::from_millis(500));
        Capture {
            child,
            path: path.to_path_buf(),
        }
    }

    pub fn stop(mut self) -> std::path::PathBuf {
        self.finish();
        self.path.clone()
    }

    fn finish(&mut self) {
        // Once: a second kill after stop() would find no such process.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish();
    }
}

/// tshark over a capture with the lab's decode settings: SCTP over UDP 9899 carries S1AP,
/// agent connections are TLS, and NAS is ciphered with EEA2 (tshark would otherwise dissect ciphertext as plain NAS).
pub fn tshark(pcap: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-d",
            "udp.port==9899,sctp",
            // The agents' API and the tunnel master's.
            "-d",
            "tcp.port==7070,tls",
            "-d",
            "tcp.port==7071,tls",
            // QEMU's migration stream (vm::INCOMING_PORT).
            "-d",
            "tcp.port==7073,tls",
            "-o",
            "nas-eps.null_decipher:FALSE",
        ])
        .args(args)
        .output()
        .expect("tshark is required (make setup installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The frames of a capture tshark finds malformed or in error, one line each (number and
/// info column); empty when every frame decodes.
pub fn malformed(pcap: &std::path::Path) -> String {
    tshark(
        pcap,
        &[
            "-Y",
            "_ws.malformed || _ws.expert.severity == error",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.col.Info",
        ],
    )
}

/// Why this machine cannot boot the lab's QEMU guests (no guest kernel from setup-vm.sh,
/// no QEMU), if it cannot.
pub fn cannot_boot_guests() -> Option<String> {
    if let Err(e) = vm::guest_kernel() {
        return Some(format!("{e:#}"));
    }
    vm::labhost::find_in_path("qemu-system-x86_64")
        .err()
        .map(|e| format!("{e:#}"))
}

/// A scratch folder removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("corehop-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("COREHOP_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts HSS, SPGW and MME as containers on `host`.
pub fn start_epc(host: &str) {
    for nf in ["hss", "spgw", "mme"] {
        ok(&["nf", "start", nf, "--host", host]);
    }
}

impl Lab {
    /// A lab from a TOML lab file instead of the default one.
    pub fn up_with(file: &std::path::Path) -> Lab {
        Lab::start(&["lab", "up", file.to_str().unwrap()])
    }
}

/// `corehop ran` in the background; `finish` returns its JSON report.
pub struct Ran(std::process::Child);

impl Ran {
    pub fn start(args: &[&str]) -> Ran {
        let child = Command::new(BIN)
            .args(["ran", "--json"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("corehop ran");
        Ran(child)
    }

    /// One UE pinging the pdn host every 20 ms until [`Ran::finish`], plus `extra` options.
    pub fn one_ue(extra: &[&str]) -> Ran {
        let mut args = vec![
            "--ues",
            "1",
            "--duration",
            "600",
            "--ping-interval-ms",
            "20",
        ];
        args.extend_from_slice(extra);
        Ran::start(&args)
    }

    /// Ends the run (SIGINT: every UE detaches) and returns its report. A test's
    /// `--duration` is only a cap, so that a slow machine's migrations cannot outlast it.
    pub fn finish(self) -> serde_json::Value {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let out = self.0.wait_with_output().unwrap();
        assert!(out.status.success(), "ran failed");
        json(&String::from_utf8_lossy(&out.stdout))
    }
}

/// A container's list of containers from `corehop ps`.
pub fn containers() -> Vec<serde_json::Value> {
    json(&ok(&["ps", "--json"])).as_array().unwrap().clone()
}

/// Reads a file inside a running container (through /proc/PID/root) or VM (through its
/// guest agent, whose socket is in the VM's run dir on its host).
pub fn container_file(name: &str, path: &str) -> String {
    let c = containers()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"));
    if c["runtime"] == "vm" {
        let run = lab::paths::host_state_dir(c["host"].as_str().unwrap())
            .join("containers")
            .join(name)
            .join("vm/run");
        let bytes = vm::guest_agent::read_file(
            &vm::guest_agent::socket(&run),
            path,
            std::time::Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("{name}:{path}: {e:#}"));
        return String::from_utf8(bytes).unwrap();
    }
    let pid = c["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} not running: {c}"));
    std::fs::read_to_string(format!("/proc/{pid}/root{path}"))
        .unwrap_or_else(|e| panic!("{name}:{path}: {e}"))
}

pub fn host_of(name: &str) -> String {
    containers()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["host"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// One TCP request to the test service at `ip` from the ran host: its counter, or `None`
/// when it does not answer.
pub fn svc_counter(ip: &str) -> Option<u64> {
    let out = on_host(
        "ran",
        &[
            "probe",
            "tcp",
            &format!("{ip}:7000"),
            "--duration",
            "0.05",
            "--json",
        ],
    )
    .output()
    .ok()?;
    out.status
        .success()
        .then(|| json(&String::from_utf8_lossy(&out.stdout))["last_counter"].as_u64())
        .flatten()
}

/// The SPGW's tunnel list as it writes it.
pub fn spgw_tunnels() -> serde_json::Value {
    json(&container_file("spgw", "/run/corehop/tunnels.json"))
}

/// The MME's UE contexts without their NAS counts (which move with every message).
pub fn mme_contexts() -> serde_json::Value {
    let mut v = json(&container_file("mme", "/run/corehop/mme-ues.json"));
    for ue in v.as_array_mut().unwrap() {
        ue.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.contains("count"));
    }
    v
}
