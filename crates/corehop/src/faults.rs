//! `corehop faults`: the fault matrix. For every method and every step boundary of it (the
//! destination's preparation, then each phase, as a clean migration of that method reports
//! them), each fault is injected the moment the controller starts that step. A cell then
//! checks that the controller returned within its bound, that once the fault is healed (and
//! `recover` ran where the error asked for it) the function serves at exactly one place,
//! that the client's TCP connection and counter survived, and that a retry succeeds.
use crate::session::{join, on_host};
use agent::tls::Credentials;
use anyhow::{bail, Context, Result};
use migrate::{Boundary, Method};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cell settles within this long, or it fails (no hang).
const BOUND: Duration = Duration::from_secs(15);
/// A cut link comes back after this long (while the controller may still be waiting).
const LINK_OUTAGE: Duration = Duration::from_secs(3);
/// Past this, a migration that has not returned is declared hung and the matrix stops.
const GIVE_UP: Duration = Duration::from_secs(180);
const HOSTS: [&str; 2] = ["node-a", "node-b"];
/// A started function answers within this long (a VM boots its guest first).
const SERVICE_BOOT: Duration = Duration::from_secs(60);
/// The destination's memory while `dst-oom` holds: far below what a restored function or
/// an incoming VM needs.
const OOM_LIMIT_BYTES: u64 = 1 << 20;
/// `image-corrupt` alters TCP segments of at least this many bytes (an image's, never a
/// request's), this far into their payload (past any request header sharing the segment).
const MANGLE_MIN_LEN: u32 = 4000;
const MANGLE_AT_BYTE: u32 = 2000;
/// The nftables table `image-corrupt` adds in the destination's namespace.
const MANGLE_TABLE: &str = "corehop_fault";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    DstLinkCut,
    SrcLinkCut,
    DstAgentKilled,
    SrcAgentKilled,
    /// CRIU's processes, or the destination's QEMU for the VM method.
    CriuKilled,
    DstDiskFull,
    DstOom,
    ImageCorrupt,
    /// The controller's process, killed as it starts the step; `migrate --resume` settles.
    ControllerKilled,
}

const FAULTS: &[Fault] = &[
    Fault::DstLinkCut,
    Fault::SrcLinkCut,
    Fault::DstAgentKilled,
    Fault::SrcAgentKilled,
    Fault::CriuKilled,
    Fault::DstDiskFull,
    Fault::DstOom,
    Fault::ImageCorrupt,
    Fault::ControllerKilled,
];

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::DstLinkCut => "dst-link-cut",
            Fault::SrcLinkCut => "src-link-cut",
            Fault::DstAgentKilled => "dst-agent-killed",
            Fault::SrcAgentKilled => "src-agent-killed",
            Fault::CriuKilled => "criu-killed",
            Fault::DstDiskFull => "dst-disk-full",
            Fault::DstOom => "dst-oom",
            Fault::ImageCorrupt => "image-corrupt",
            Fault::ControllerKilled => "controller-killed",
        }
    }

    /// The fault's name in a method's row: a VM has no CRIU, its QEMU is killed instead.
    fn label(self, method: Method) -> &'static str {
        match (self, method) {
            (Fault::CriuKilled, Method::VmPreCopy) => "qemu-killed",
            _ => self.as_str(),
        }
    }

    /// Applied on the controller's thread, just before it starts the step. What must wait
    /// for the destination's QEMU (started by the preparation) is done by a thread of its
    /// own, which reports into `problems`.
    fn inject(
        self,
        method: Method,
        name: &str,
        from: &str,
        to: &str,
        problems: &Problems,
    ) -> Result<()> {
        let vm = method == Method::VmPreCopy;
        match self {
            Fault::DstLinkCut => cut_link(to),
            Fault::SrcLinkCut => cut_link(from),
            Fault::DstAgentKilled => kill_agent(to),
            Fault::SrcAgentKilled => kill_agent(from),
            Fault::CriuKilled if vm => {
                on_dst_qemu(to, name, problems, |pid| {
                    // SAFETY: kill(2) on the pid of a process checked to be QEMU.
                    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                        bail!("kill {pid}: {}", std::io::Error::last_os_error());
                    }
                    Ok(())
                });
                Ok(())
            }
            Fault::CriuKilled => {
                for pid in pids_named("criu") {
                    // SAFETY: kill(2) on a pid read from /proc.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                Ok(())
            }
            Fault::DstDiskFull => {
                let images = disk_full_dir(to, name);
                std::fs::create_dir_all(&images)?;
                runtime::containers::mount_tmpfs(&images, "size=64k")
            }
            Fault::DstOom => {
                let cg = MemCg::of(to);
                cg.limit(&OOM_LIMIT_BYTES.to_string())?;
                if vm {
                    // QEMU runs in no cgroup of the host's: the fault moves it into one.
                    let leaf = cg.qemu_leaf();
                    on_dst_qemu(to, name, problems, move |pid| {
                        std::fs::create_dir_all(&leaf)?;
                        std::fs::write(leaf.join("cgroup.procs"), pid.to_string()).with_context(
                            || format!("cannot move QEMU {pid} into {}", leaf.display()),
                        )
                    });
                }
                Ok(())
            }
            Fault::ImageCorrupt => {
                let port = if vm {
                    vm::INCOMING_PORT
                } else {
                    lab::spec::AGENT_PORT
                };
                mangle(to, port)
            }
            // The controller is a process of its own: see `killed_controller`.
            Fault::ControllerKilled => Ok(()),
        }
    }
}

/// What went wrong injecting a fault, out of the controller's thread.
type Problems = Arc<std::sync::Mutex<Vec<String>>>;

/// Calls `f` with the pid of the destination's QEMU for `name` once it runs (the VM's pid
/// file in the host's pid dir, checked to be QEMU's), or gives up after [`BOUND`].
fn on_dst_qemu(
    to: &str,
    name: &str,
    problems: &Problems,
    f: impl FnOnce(i32) -> Result<()> + Send + 'static,
) {
    let pidfile = lab::paths::pid_dir(to).join(format!("vm-{name}.pid"));
    let problems = problems.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + BOUND;
        let pid = loop {
            let pid = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.starts_with("qemu"))
                });
            if let Some(pid) = pid {
                break pid;
            }
            if Instant::now() > until {
                problems.lock().unwrap().push(format!(
                    "no QEMU in {} within {} s",
                    pidfile.display(),
                    BOUND.as_secs()
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Err(e) = f(pid) {
            problems.lock().unwrap().push(format!("{e:#}"));
        }
    });
}

/// The memory cgroup of a host's functions (`lab::paths::cgroup_parent`), on a cgroup v2
/// hierarchy or v1's memory controller.
struct MemCg {
    dir: PathBuf,
    /// The hierarchy's root, where a moved QEMU goes back to.
    root: PathBuf,
    v2: bool,
}

impl MemCg {
    fn of(host: &str) -> MemCg {
        let rel = lab::paths::cgroup_parent(host);
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let root = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/memory")
        };
        MemCg {
            dir: root.join(rel.trim_start_matches('/')),
            root,
            v2,
        }
    }

    /// Sets the limit of everything under the host's cgroup.
    fn limit(&self, bytes: &str) -> Result<()> {
        let file = self.dir.join(if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        });
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&file, bytes)
            .with_context(|| format!("cannot write {bytes} to {}", file.display()))
    }

    /// A leaf for the destination's QEMU (cgroup v2 allows no process in a cgroup whose
    /// children have controllers).
    fn qemu_leaf(&self) -> PathBuf {
        self.dir.join("fault-oom")
    }

    /// Lifts the limit and takes a moved QEMU back out.
    fn heal(&self) -> Result<()> {
        if !self.dir.is_dir() {
            return Ok(());
        }
        let leaf = self.qemu_leaf();
        if leaf.is_dir() {
            for pid in std::fs::read_to_string(leaf.join("cgroup.procs"))?.lines() {
                // It may have ended since it was listed.
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
            std::fs::remove_dir(&leaf)
                .with_context(|| format!("cannot remove {}", leaf.display()))?;
        }
        self.limit(if self.v2 { "max" } else { "-1" })
    }
}

/// OOM kills on the machine so far. The kernel's own count: cgroup v1 counts a kill only in
/// the victim's cgroup (the function's, gone once the migration rolled back), and the lab
/// has the machine to itself.
fn oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `nft` in `host`'s namespace with `script` as its input.
fn nft(host: &str, script: &str) -> Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab::net::host_ns(host), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run nft (install nftables)")?;
    child
        .stdin
        .take()
        .context("nft has no stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Alters four bytes of every large TCP segment arriving at `host` for `port`, before the
/// receiving socket: nft writes `@ih` with the L4-checksum flag, so the kernel fixes the TCP
/// checksum up (and a veth's segments carry a partial one that is not verified), and no
/// segment is dropped and retransmitted intact (measured: every segment altered, no
/// checksum errors or retransmissions).
fn mangle(host: &str, port: u16) -> Result<()> {
    nft(
        host,
        &format!(
            "table inet {MANGLE_TABLE} {{\n chain in {{\n  type filter hook prerouting priority -300;\n  tcp dport {port} meta length >= {MANGLE_MIN_LEN} counter @ih,{},32 set 0xdeadbeef\n }}\n}}\n",
            MANGLE_AT_BYTE * 8
        ),
    )?;
    Ok(())
}

/// Segments the `image-corrupt` rule in `host`'s namespace has altered, if it is there.
fn mangled(host: &str) -> Option<u64> {
    let out = nft(host, &format!("list table inet {MANGLE_TABLE}\n")).ok()?;
    let rest = &out[out.find("counter packets ")? + "counter packets ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Removes the `image-corrupt` rule (adding the table first makes the removal succeed
/// whether or not it was there).
fn unmangle(host: &str) -> Result<()> {
    nft(
        host,
        &format!("table inet {MANGLE_TABLE}\ndelete table inet {MANGLE_TABLE}\n"),
    )?;
    Ok(())
}

impl std::str::FromStr for Fault {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        FAULTS
            .iter()
            .copied()
            .find(|f| f.as_str() == s || f.label(Method::VmPreCopy) == s)
            .with_context(|| {
                let all: Vec<_> = FAULTS.iter().map(|f| f.as_str()).collect();
                format!("unknown fault {s:?}; available: {}", all.join(", "))
            })
    }
}

fn cut_link(host: &str) -> Result<()> {
    set_link(host, "down")?;
    let host = host.to_string();
    std::thread::spawn(move || {
        std::thread::sleep(LINK_OUTAGE);
        let _ = set_link(&host, "up");
    });
    Ok(())
}

fn set_link(host: &str, state: &str) -> Result<()> {
    lab::nl::set_link_up(None, &lab::net::host_port(host), state == "up")
}

fn kill_agent(host: &str) -> Result<()> {
    let pid = lab::agent_pid(host).with_context(|| format!("no agent pid for {host}"))?;
    // SAFETY: kill(2) on the pid the lab recorded for this agent.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    Ok(())
}

fn pids_named(comm: &str) -> Vec<i32> {
    lab::pids_where(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    })
}

fn disk_full_dir(host: &str, name: &str) -> PathBuf {
    lab::paths::host_state_dir(host)
        .join("containers")
        .join(name)
        .join("images")
}

#[derive(clap::Args)]
pub struct FaultsArgs {
    /// Methods to cover (repeat the flag); default: every one.
    #[arg(long = "method")]
    methods: Vec<String>,
    /// Faults to inject (repeat); default: every one.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// Step boundaries to inject at (repeat: prepare, checkpoint, transfer, restore,
    /// pre_dump, ...); default: every boundary of each method.
    #[arg(long = "at")]
    at: Vec<String>,
    /// Where the matrix (matrix.md) and its cells (cells.jsonl) are written.
    #[arg(long, default_value = "results/faults")]
    out: PathBuf,
}

/// One cell's outcome.
#[derive(serde::Serialize)]
struct Cell {
    method: &'static str,
    at: &'static str,
    fault: &'static str,
    /// Orders the matrix's columns.
    #[serde(skip)]
    kind: Fault,
    /// How the migration call ended: migrated, or its error.
    error: Option<String>,
    /// From the fault's injection until the controller returned.
    settle_s: f64,
    /// `corehop recover` ran, as the error asked.
    recovered: bool,
    /// OOM kills on the machine during the cell.
    oom_kills: u64,
    /// Segments `image-corrupt` altered.
    mangled_segments: Option<u64>,
    /// Hosts where the function serves once healed.
    serves_on: Vec<String>,
    client_reconnects: u64,
    client_counter_consecutive: bool,
    retry: Result<(), String>,
    /// Every check that failed (empty: the cell passed).
    failed: Vec<String>,
}

/// The function a method moves: a counter service, as a container or a VM.
struct Service {
    name: &'static str,
    ip: Ipv4Addr,
    runtime: runtime::bundle::Runtime,
}

const CONTAINER_SVC: Service = Service {
    name: "fsvc",
    ip: Ipv4Addr::new(10, 77, 1, 110),
    runtime: runtime::bundle::Runtime::Container,
};
const VM_SVC: Service = Service {
    name: "fvsvc",
    ip: Ipv4Addr::new(10, 77, 1, 111),
    runtime: runtime::bundle::Runtime::Vm,
};

pub fn run(a: FaultsArgs) -> Result<()> {
    let methods: Vec<Method> = if a.methods.is_empty() {
        migrate::METHODS.to_vec()
    } else {
        a.methods.iter().map(|m| m.parse()).collect::<Result<_>>()?
    };
    let faults: Vec<Fault> = if a.faults.is_empty() {
        FAULTS.to_vec()
    } else {
        a.faults.iter().map(|f| f.parse()).collect::<Result<_>>()?
    };
    let exe = std::env::current_exe()?;
    let spec = lab::spec::LabSpec::default();
    lab::down()?;
    lab::up(&spec, &exe)?;
    let cells = (|| {
        let mut cells = Vec::new();
        for method in methods {
            let svc = match method {
                Method::VmPreCopy => &VM_SVC,
                _ => &CONTAINER_SVC,
            };
            let creds = Credentials::controller()?;
            start(&spec, &creds, &exe, svc)?;
            // A clean migration names the method's boundaries (and warms both hosts).
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let s = seen.clone();
            let to = other(&where_it_serves(&spec, &creds, svc.name)?)?;
            migrate::migrate_observed(
                &spec,
                &creds,
                svc.name,
                to,
                method,
                Box::new(move |b| s.lock().unwrap().push(b)),
            )
            .with_context(|| format!("a clean {method:?} migration failed"))?;
            let boundaries: Vec<Boundary> = seen.lock().unwrap().clone();
            for at in boundaries
                .into_iter()
                .filter(|b| a.at.is_empty() || a.at.iter().any(|x| x == b.as_str()))
            {
                for &fault in &faults {
                    // A hung cell starts the lab afresh, with new keys.
                    let c = cell(
                        &spec,
                        &Credentials::controller()?,
                        &exe,
                        svc,
                        method,
                        at,
                        fault,
                    )?;
                    eprintln!(
                        "{:<14} {:<14} {:<18} {}",
                        method.as_str(),
                        at.as_str(),
                        fault.label(method),
                        verdict(&c)
                    );
                    cells.push(c);
                }
            }
            remove(&spec, &Credentials::controller()?, svc.name);
        }
        Ok::<_, anyhow::Error>(cells)
    })();
    let down = lab::down();
    let cells = cells?;
    down?;
    std::fs::create_dir_all(&a.out)?;
    let mut jsonl = String::new();
    for c in &cells {
        jsonl.push_str(&serde_json::to_string(c)?);
        jsonl.push('\n');
    }
    std::fs::write(a.out.join("cells.jsonl"), jsonl)?;
    let text = matrix(&cells);
    std::fs::write(a.out.join("matrix.md"), &text)?;
    println!("{text}");
    let failed = cells.iter().filter(|c| !c.failed.is_empty()).count();
    if failed > 0 {
        bail!("{failed} of {} cells failed", cells.len());
    }
    Ok(())
}

fn verdict(c: &Cell) -> String {
    let how = match (&c.error, c.recovered) {
        (None, _) => "migrated".to_string(),
        (Some(_), true) => "recovered".to_string(),
        (Some(_), false) => "rolled back".to_string(),
    };
    // What the fault did, where it is not plain to see.
    let mut did = Vec::new();
    let s = |n: u64| if n == 1 { "" } else { "s" };
    if c.oom_kills > 0 {
        did.push(format!("{} OOM kill{}", c.oom_kills, s(c.oom_kills)));
    }
    if let Some(n) = c.mangled_segments {
        did.push(format!("{n} segment{} altered", s(n)));
    }
    let did = if did.is_empty() {
        String::new()
    } else {
        format!(" ({})", did.join(", "))
    };
    if c.failed.is_empty() {
        format!("ok, {how} in {:.1} s{did}", c.settle_s)
    } else {
        format!(
            "FAILED ({how}, {:.1} s{did}): {}",
            c.settle_s,
            c.failed.join("; ")
        )
    }
}

fn matrix(cells: &[Cell]) -> String {
    let mut out = format!(
        "# Fault matrix\n\nEach fault injected as the controller starts the step; a cell passes when the controller returned within {} s, the function serves at exactly one place once the fault is healed (a cut link comes back after {} s; a killed agent is restarted by `lab up`; `corehop recover` runs where the error asks for it; a killed controller is followed by `corehop migrate --resume`), the client's TCP connection and counter survived, and a retry succeeded.\n",
        BOUND.as_secs(),
        LINK_OUTAGE.as_secs()
    );
    let mut methods: Vec<&str> = cells.iter().map(|c| c.method).collect();
    methods.dedup();
    for m in methods {
        let rows: Vec<&Cell> = cells.iter().filter(|c| c.method == m).collect();
        let mut columns: Vec<(Fault, &str)> = rows.iter().map(|c| (c.kind, c.fault)).collect();
        columns.sort_by_key(|(k, _)| FAULTS.iter().position(|x| x == k));
        columns.dedup();
        let faults: Vec<&str> = columns.iter().map(|(_, label)| *label).collect();
        let mut ats: Vec<&str> = rows.iter().map(|c| c.at).collect();
        ats.dedup();
        out.push_str(&format!(
            "\n## {m}\n\n| step | {} |\n|---|{}\n",
            faults.join(" | "),
            "---|".repeat(faults.len())
        ));
        for at in ats {
            let line: Vec<String> = faults
                .iter()
                .map(|f| {
                    rows.iter()
                        .find(|c| c.at == at && c.fault == *f)
                        .map_or("-".into(), |c| verdict(c))
                })
                .collect();
            out.push_str(&format!("| {at} | {} |\n", line.join(" | ")));
        }
    }
    let failed = cells.iter().filter(|c| !c.failed.is_empty()).count();
    out.push_str(&format!("\n{} cells, {failed} failed.\n", cells.len()));
    out
}

#[allow(clippy::too_many_arguments)]
fn cell(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    exe: &Path,
    svc: &Service,
    method: Method,
    at: Boundary,
    fault: Fault,
) -> Result<Cell> {
    let from = where_it_serves(spec, creds, svc.name)?;
    let to = other(&from)?;
    let _unfault = Unfault;
    let oom_kills_before = oom_kills();
    let stop = Arc::new(AtomicBool::new(false));
    let client = client(svc, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let injected = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let problems = Problems::default();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (spec, creds, name, inj) = (spec.clone(), creds.clone(), svc.name, injected.clone());
        let (from, problems) = (from.clone(), problems.clone());
        let exe = exe.to_path_buf();
        std::thread::spawn(move || {
            if fault == Fault::ControllerKilled {
                let r = killed_controller(&exe, &spec, &creds, name, to, method, at, &inj);
                let _ = tx.send(r.map_err(|e| format!("{e:#}")));
                return;
            }
            let observer = Box::new(move |b: Boundary| {
                if b == at {
                    if let Err(e) = fault.inject(method, name, &from, to, &problems) {
                        problems.lock().unwrap().push(format!("{e:#}"));
                    }
                    *inj.lock().unwrap() = Some(Instant::now());
                }
            });
            let r = migrate::migrate_observed(&spec, &creds, name, to, method, observer);
            let _ = tx.send(r.map(|_| ()).map_err(|e| format!("{e:#}")));
        });
    }
    let t = Instant::now();
    let ended = rx.recv_timeout(GIVE_UP);
    let settle_s = injected
        .lock()
        .unwrap()
        .map_or(t, |i| i)
        .elapsed()
        .as_secs_f64();
    // What the fault did, read before it is undone.
    let oom_kills = oom_kills().saturating_sub(oom_kills_before);
    let mangled_segments = (fault == Fault::ImageCorrupt)
        .then(|| mangled(to))
        .flatten();
    let mut failed: Vec<String> = problems
        .lock()
        .unwrap()
        .iter()
        .map(|p| format!("cannot inject: {p}"))
        .collect();
    unfault()?;
    let Ok(error) = ended.map(|r| r.err()) else {
        // A hung controller: the cell fails, and the lab starts afresh for the next one
        // (the hung call ends with an error once its agents are gone).
        stop.store(true, Ordering::SeqCst);
        failed.push(format!(
            "HUNG: the controller had not returned after {} s (the lab was started afresh)",
            GIVE_UP.as_secs()
        ));
        lab::down()?;
        lab::up(spec, exe)?;
        start(spec, &Credentials::controller()?, exe, svc)?;
        return Ok(Cell {
            method: method.as_str(),
            at: at.as_str(),
            fault: fault.label(method),
            kind: fault,
            error: None,
            settle_s,
            recovered: false,
            oom_kills,
            mangled_segments,
            serves_on: vec![],
            client_reconnects: 0,
            client_counter_consecutive: false,
            retry: Err("not tried".into()),
            failed,
        });
    };
    heal(spec, exe, svc.name)?;
    if let (Some(n @ 1..), None) = (mangled_segments, &error) {
        failed.push(format!(
            "{n} segments were altered in transit, yet the migration succeeded"
        ));
    }
    if settle_s > BOUND.as_secs_f64() {
        failed.push(format!("settled after {settle_s:.1} s"));
    }
    let recovered = match error.as_deref().and_then(recover_advice) {
        Some((host, round)) => {
            if let Err(e) = migrate::recover(spec, creds, svc.name, &host, &round) {
                failed.push(format!("recover on {host} failed: {e:#}"));
            }
            true
        }
        None => false,
    };
    let serves_on = serving_hosts(spec, creds, svc.name);
    if serves_on.len() != 1 {
        failed.push(format!("serves on {serves_on:?}"));
    }
    let retry = match serves_on.first() {
        Some(h) => migrate::migrate(spec, creds, svc.name, other(h)?, method)
            .map(|_| ())
            .map_err(|e| format!("{e:#}")),
        None => Err("nowhere to retry from".into()),
    };
    if let Err(e) = &retry {
        failed.push(format!("retry failed: {e}"));
    }
    stop.store(true, Ordering::SeqCst);
    let probe = join(client);
    let (client_reconnects, client_counter_consecutive) = match &probe {
        Ok(p) => (p.reconnects, p.counter_consecutive),
        Err(_) => (u64::MAX, false),
    };
    match probe {
        Ok(p) if p.reconnects == 0 && p.counter_consecutive => {}
        Ok(p) => failed.push(format!(
            "client: {} reconnects, counter consecutive {}",
            p.reconnects, p.counter_consecutive
        )),
        Err(e) => failed.push(format!("client: {e:#}")),
    }
    Ok(Cell {
        method: method.as_str(),
        at: at.as_str(),
        fault: fault.label(method),
        kind: fault,
        error,
        settle_s,
        recovered,
        oom_kills,
        mangled_segments,
        serves_on,
        client_reconnects,
        client_counter_consecutive,
        retry,
        failed,
    })
}

/// `corehop migrate` as a process of its own, SIGKILLed once it logs that step `at`
/// begins (`injected` is then), followed by `corehop migrate --resume`'s work. Answers an
/// error when the resume rolled the migration back, as a controller's failure would.
#[allow(clippy::too_many_arguments)]
fn killed_controller(
    exe: &Path,
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    name: &str,
    to: &str,
    method: Method,
    at: Boundary,
    injected: &std::sync::Mutex<Option<Instant>>,
) -> Result<()> {
    use std::io::BufRead;
    let mut c = std::process::Command::new(exe)
        .args(["migrate", name, "--to", to, "--method", method.as_str()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let want = format!("{name}: step {} begins", at.as_str());
    let stderr = std::io::BufReader::new(c.stderr.take().context("no stderr")?);
    let (tx, rx) = std::sync::mpsc::channel();
    // Read to its end: the controller never blocks on its log.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains(&want) {
                let _ = tx.send(());
            }
        }
    });
    let reached = rx.recv_timeout(GIVE_UP);
    let _ = c.kill();
    let _ = c.wait();
    *injected.lock().unwrap() = Some(Instant::now());
    if reached.is_err() {
        bail!("the controller ended before step {}", at.as_str());
    }
    match migrate::resume(spec, creds, name)? {
        migrate::Resumed::Finished { .. } => Ok(()),
        r => bail!("controller killed; --resume {r}"),
    }
}

/// Lifts the faults that would outlive a cell (the destination's memory limit, the
/// mangling rule) however the cell ends, also by an error or a panic.
struct Unfault;

impl Drop for Unfault {
    fn drop(&mut self) {
        if let Err(e) = unfault() {
            tracing::warn!("cannot undo a fault: {e:#}");
        }
    }
}

fn unfault() -> Result<()> {
    for h in HOSTS {
        MemCg::of(h).heal()?;
        if lab::net::netns_exists(&lab::net::host_ns(h)) {
            unmangle(h)?;
        }
    }
    Ok(())
}

/// Undoes the fault: links up, dead agents restarted, the full disk gone.
fn heal(spec: &lab::spec::LabSpec, exe: &Path, name: &str) -> Result<()> {
    for h in HOSTS {
        set_link(h, "up")?;
        let full = disk_full_dir(h, name);
        if runtime::containers::is_mount_point(&full) {
            runtime::containers::unmount(&full);
        }
    }
    lab::up(spec, exe)
}

/// `corehop recover NAME --on HOST --round ROUND`, where a failed rollback's error says to
/// run it.
fn recover_advice(error: &str) -> Option<(String, String)> {
    let rest = &error[error.find("corehop recover ")? + "corehop recover ".len()..];
    let mut words = rest.split_whitespace();
    let _name = words.next()?;
    let mut host = None;
    let mut round = "final".to_string();
    while let Some(w) = words.next() {
        match w {
            "--on" => host = words.next().map(str::to_string),
            "--round" => {
                round = words
                    .next()?
                    .trim_end_matches(['`', ')', ',', ';'])
                    .to_string()
            }
            _ => break,
        }
    }
    Some((host?, round))
}

fn other(host: &str) -> Result<&'static str> {
    match host {
        "node-a" => Ok("node-b"),
        "node-b" => Ok("node-a"),
        h => bail!("the function serves on {h}, not on node-a or node-b"),
    }
}

fn serving_hosts(spec: &lab::spec::LabSpec, creds: &Credentials, name: &str) -> Vec<String> {
    HOSTS
        .iter()
        .filter(|h| {
            lab::agent_addr(spec, h)
                .and_then(|a| agent::Client::connect(a, creds))
                .and_then(|mut c| c.ps())
                .is_ok_and(|ps| ps.iter().any(|i| i.name == name && i.state == "running"))
        })
        .map(|h| h.to_string())
        .collect()
}

fn where_it_serves(spec: &lab::spec::LabSpec, creds: &Credentials, name: &str) -> Result<String> {
    match serving_hosts(spec, creds, name).as_slice() {
        [h] => Ok(h.clone()),
        hs => bail!("{name} serves on {hs:?}, not on exactly one host"),
    }
}

fn start(spec: &lab::spec::LabSpec, creds: &Credentials, exe: &Path, svc: &Service) -> Result<()> {
    let mut cs = runtime::ContainerSpec::new(
        svc.name,
        exe.to_path_buf(),
        vec!["testsvc".into()],
        svc.ip,
        spec.prefix_len,
        runtime::flavor::DEFAULT_FLAVOR,
    )?;
    cs.runtime = svc.runtime;
    agent::Client::connect(lab::agent_addr(spec, "node-a")?, creds)?.run(&cs)?;
    // A VM's guest boots for seconds after its QEMU started: the cells' clients would find
    // nobody listening yet.
    let target = SocketAddr::from((svc.ip, 7000));
    join(on_host("ran", move || {
        let until = Instant::now() + SERVICE_BOOT;
        loop {
            match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > until => bail!(
                    "{target} does not answer {} s after its start: {e}",
                    SERVICE_BOOT.as_secs()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }))
}

fn remove(spec: &lab::spec::LabSpec, creds: &Credentials, name: &str) {
    for h in HOSTS {
        if let Ok(mut c) = lab::agent_addr(spec, h).and_then(|a| agent::Client::connect(a, creds)) {
            let _ = c.remove(name);
        }
    }
}

/// A client on host `ran` holding one TCP connection to the service until `stop`.
fn client(
    svc: &Service,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<measure::probe::ProbeReport>> {
    let target = SocketAddr::from((svc.ip, 7000));
    on_host("ran", move || {
        measure::probe::tcp(target, Duration::from_millis(20), &|| {
            stop.load(Ordering::SeqCst)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recover_advice_is_read_from_a_failed_rollback() {
        let e = "migration of svc failed in phase checkpoint: ROLLBACK FAILED, svc may be down: x; its frozen image is on node-a: once node-a's agent answers again, `corehop recover svc --on node-a --round final` resumes it (or finds it still running)";
        assert_eq!(recover_advice(e), Some(("node-a".into(), "final".into())));
        assert_eq!(recover_advice("svc is running again on node-a"), None);
        assert_eq!(recover_advice("corehop recover svc"), None);
    }
}
