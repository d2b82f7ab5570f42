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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    DstLinkCut,
    SrcLinkCut,
    DstAgentKilled,
    SrcAgentKilled,
    CriuKilled,
    DstDiskFull,
}

const FAULTS: &[Fault] = &[
    Fault::DstLinkCut,
    Fault::SrcLinkCut,
    Fault::DstAgentKilled,
    Fault::SrcAgentKilled,
    Fault::CriuKilled,
    Fault::DstDiskFull,
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
        }
    }

    /// Applied on the controller's thread, just before it starts the step.
    fn inject(self, name: &str, from: &str, to: &str) -> Result<()> {
        match self {
            Fault::DstLinkCut => cut_link(to),
            Fault::SrcLinkCut => cut_link(from),
            Fault::DstAgentKilled => kill_agent(to),
            Fault::SrcAgentKilled => kill_agent(from),
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
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        FAULTS
            .iter()
            .copied()
            .find(|f| f.as_str() == s)
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
    /// How the migration call ended: migrated, or its error.
    error: Option<String>,
    /// From the fault's injection until the controller returned.
    settle_s: f64,
    /// `corehop recover` ran, as the error asked.
    recovered: bool,
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
                        fault.as_str(),
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
    if c.failed.is_empty() {
        format!("ok, {how} in {:.1} s", c.settle_s)
    } else {
        format!(
            "FAILED ({how}, {:.1} s): {}",
            c.settle_s,
            c.failed.join("; ")
        )
    }
}

fn matrix(cells: &[Cell]) -> String {
    let mut out = format!(
        "# Fault matrix\n\nEach fault injected as the controller starts the step; a cell passes when the controller returned within {} s, the function serves at exactly one place once the fault is healed (a cut link comes back after {} s; a killed agent is restarted by `lab up`; `corehop recover` runs where the error asks for it), the client's TCP connection and counter survived, and a retry succeeded.\n",
        BOUND.as_secs(),
        LINK_OUTAGE.as_secs()
    );
    let mut methods: Vec<&str> = cells.iter().map(|c| c.method).collect();
    methods.dedup();
    for m in methods {
        let rows: Vec<&Cell> = cells.iter().filter(|c| c.method == m).collect();
        let mut faults: Vec<&str> = rows.iter().map(|c| c.fault).collect();
        faults.sort_by_key(|f| FAULTS.iter().position(|x| x.as_str() == *f));
        faults.dedup();
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
    let stop = Arc::new(AtomicBool::new(false));
    let client = client(svc, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let injected = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (spec, creds, name, inj) = (spec.clone(), creds.clone(), svc.name, injected.clone());
        let from = from.clone();
        std::thread::spawn(move || {
            let observer = Box::new(move |b: Boundary| {
                if b == at {
                    if let Err(e) = fault.inject(name, &from, to) {
                        tracing::warn!("cannot inject {}: {e:#}", fault.as_str());
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
    let Ok(error) = ended.map(|r| r.err()) else {
        // A hung controller: the cell fails, and the lab starts afresh for the next one
        // (the hung call ends with an error once its agents are gone).
        stop.store(true, Ordering::SeqCst);
        lab::down()?;
        lab::up(spec, exe)?;
        start(spec, &Credentials::controller()?, exe, svc)?;
        return Ok(Cell {
            method: method.as_str(),
            at: at.as_str(),
            fault: fault.as_str(),
            error: None,
            settle_s,
            recovered: false,
            serves_on: vec![],
            client_reconnects: 0,
            client_counter_consecutive: false,
            retry: Err("not tried".into()),
            failed: vec![format!(
                "HUNG: the controller had not returned after {} s (the lab was started afresh)",
                GIVE_UP.as_secs()
            )],
        });
    };
    heal(spec, exe, svc.name)?;
    let mut failed = Vec::new();
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
        fault: fault.as_str(),
        error,
        settle_s,
        recovered,
        serves_on,
        client_reconnects,
        client_counter_consecutive,
        retry,
        failed,
    })
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
    Ok(())
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
