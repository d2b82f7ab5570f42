//! `corehop experiment` and `corehop report`: the paper's evaluation on this lab. The
//! runner (crates/experiment) expands the plan and keeps the raw data resumable; this is
//! its executor: for each run it sets the case's flavor, NIC rate and CPU load, starts the
//! probes (ICMP at 1 ms, an application-level probe, an attached UE for EPC functions),
//! migrates the function to the other node and turns what the probes saw during the
//! migration into the run's KPIs.
use crate::nf::{self, Nf};
use crate::session::{join, on_host, UeSession};
use agent::tls::Credentials;
use anyhow::{Context, Result};
use clap::Args;
use experiment::{Case, Executor, Function, LoadWhere, Record};
use measure::gaps::{longest, Series};
use runtime::bundle::Runtime;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const NODES: [&str; 2] = ["node-a", "node-b"];
const TESTSVC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
/// CPU-load generators: one per node, each with its own service IP.
const LOAD_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 77, 1, 240), Ipv4Addr::new(10, 77, 1, 241)];
/// Outages ending this long after the function resumed still belong to its migration.
const GRACE_MS: u64 = 2000;
/// Probe period (the paper pings at 1 ms).
const PROBE: Duration = Duration::from_millis(1);

#[derive(Args)]
pub struct ExperimentArgs {
    /// The plan (TOML), e.g. plans/quick.toml or plans/paper.toml.
    plan: PathBuf,
    /// Runs per case (default: the plan's).
    #[arg(long)]
    runs: Option<u32>,
    /// Results folder; an interrupted experiment resumes where it stopped.
    #[arg(long)]
    out: PathBuf,
    /// Run again the runs that failed before.
    #[arg(long)]
    retry_failed: bool,
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    let plan = experiment::Plan::load(&a.plan)?;
    let spec = lab::current().context("the experiment runs on the lab: `corehop lab up` first")?;
    for n in NODES.iter().chain(["ran", "pdn"].iter()) {
        spec.host(n)
            .context("the experiment needs the default lab's hosts")?;
    }
    let mut ex = LabExecutor {
        spec,
        creds: Credentials::controller()?,
        placed: None,
    };
    let opts = experiment::RunOptions {
        runs_override: a.runs,
        handle_signals: true,
        progress: true,
        retry_failed: a.retry_failed,
        ..Default::default()
    };
    let sum = experiment::run_plan_with(&plan, &mut ex, &a.out, &opts)?;
    ex.clear();
    eprintln!(
        "{} runs planned, {} already done, {} executed ({} failed){}",
        sum.planned,
        sum.already_done,
        sum.executed,
        sum.failed,
        if sum.interrupted {
            ", interrupted: run again to resume"
        } else {
            ""
        }
    );
    let r = experiment::report(&a.out, &[])?;
    eprintln!("report: {}", r.path.display());
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    /// The benchmark plan.
    #[arg(long, default_value = "plans/bench.toml")]
    plan: PathBuf,
    /// Runs per case (default: the plan's, ten).
    #[arg(long)]
    runs: Option<u32>,
    /// Results folder: raw records, the report, and `bench.md` (the table with the
    /// machine's description). An interrupted benchmark resumes where it stopped.
    #[arg(long, default_value = "results/bench")]
    out: PathBuf,
}

/// `corehop bench`: the downtime benchmark in one lab session of its own (lab down, up, the
/// plan's runs interleaved round by round, lab down), then its table.
pub fn bench(a: BenchArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let spec = lab::spec::LabSpec::default();
    lab::down()?;
    lab::up(&spec, &exe)?;
    let ran = run(ExperimentArgs {
        plan: a.plan,
        runs: a.runs,
        out: a.out.clone(),
        retry_failed: false,
    });
    let down = lab::down();
    ran?;
    down?;
    let records = experiment::load_records(&a.out)?;
    let table = experiment::bench::table(&records);
    let text = format!(
        "# Downtime benchmark\n\n{}\n\np50 / p95 over the runs of each function and method, interleaved round by round in one lab session; ratios are p50 against VM PreCopy of the same function from the same session. Data moved: checkpoint images (containers) or QEMU's migration stream (VM). Processes: programs exec'd on the machine inside the container's frozen window.\n\n{table}",
        machine()
    );
    std::fs::write(a.out.join("bench.md"), &text)?;
    println!("{text}");
    Ok(())
}

/// CPU model, core count, kernel, and whether the VM baseline ran on KVM or TCG.
fn machine() -> String {
    let cpu = LabExecutor::host_cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let accel = match vm::image::guest_kernel() {
        Ok(k) if vm::kvm_works(&k) => "KVM",
        Ok(_) => "TCG (no working KVM)",
        Err(_) => "unknown (no guest kernel)",
    };
    format!(
        "Machine: {cpu}, {cores} cores, Linux {}, VMs on {accel}.",
        kernel.trim()
    )
}

pub fn report(dir: &std::path::Path, with: &[std::path::PathBuf]) -> Result<()> {
    let r = experiment::report(dir, with)?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{} ({} tables, {} figures)",
        r.path.display(),
        r.tables.len(),
        r.figures.len()
    );
    Ok(())
}

struct LabExecutor {
    spec: lab::spec::LabSpec,
    creds: Credentials,
    /// The function currently deployed: (function, flavor, host).
    placed: Option<(Function, String, Runtime, String)>,
}

/// Probes running while a function migrates; each returns its series when stopped.
struct Probes {
    stop: Arc<AtomicBool>,
    icmp: JoinHandle<Result<Series>>,
    app: Option<JoinHandle<Result<Series>>>,
    sgi: Option<JoinHandle<Result<Series>>>,
    ue: Option<UeSession>,
}

fn nf_of(f: Function) -> Option<Nf> {
    match f {
        Function::Hss => Some(Nf::Hss),
        Function::Mme => Some(Nf::Mme),
        Function::Spgw => Some(Nf::Spgw),
        Function::Testsvc => None,
    }
}

impl LabExecutor {
    fn client(&self, host: &str) -> Result<agent::Client> {
        agent::Client::connect(lab::agent_addr(&self.spec, host)?, &self.creds)
    }

    /// Removes whatever the executor deployed.
    fn clear(&mut self) {
        for n in NODES {
            if let Ok(mut c) = self.client(n) {
                for info in c.ps().unwrap_or_default() {
                    let _ = c.remove(&info.name);
                }
            }
        }
        self.placed = None;
    }

    /// Deploys the case's function(s) with its flavor on node-a unless already there. EPC
    /// functions bring the rest of the EPC along (the UE needs all three).
    fn deploy(&mut self, case: &Case) -> Result<String> {
        // The VM method migrates the function as a VM (vCPUs and RAM from the flavor).
        let rt = if case.method == experiment::Method::VmPreCopy {
            Runtime::Vm
        } else {
            Runtime::Container
        };
        if let Some((f, fl, r, host)) = &self.placed {
            if *f == case.function && *fl == case.flavor && *r == rt {
                return Ok(host.clone());
            }
        }
        self.clear();
        let mut a = self.client("node-a")?;
        let prefix = self.spec.prefix_len;
        let exe = std::env::current_exe()?;
        match nf_of(case.function) {
            None => {
                let mut cs = runtime::ContainerSpec::new(
                    "testsvc",
                    exe,
                    vec!["testsvc".into()],
                    TESTSVC_IP,
                    prefix,
                    &case.flavor,
                )?;
                cs.runtime = rt;
                a.run(&cs)?;
            }
            Some(target) => {
                for f in [Nf::Hss, Nf::Spgw, Nf::Mme] {
                    // Only the function under test gets the case's flavor.
                    let flavor = if f == target {
                        case.flavor.as_str()
                    } else {
                        runtime::flavor::DEFAULT_FLAVOR
                    };
                    let mut cs = nf::container(
                        f,
                        &nf::default_config(f)?,
                        &nf::default_subscribers_csv(),
                        prefix,
                        flavor,
                    )?;
                    if f == target {
                        cs.runtime = rt;
                    }
                    a.run(&cs)?;
                }
            }
        }
        self.placed = Some((case.function, case.flavor.clone(), rt, "node-a".into()));
        self.await_ready(case.function, rt)?;
        Ok("node-a".into())
    }

    /// Waits until the function is reachable from the `ran` host, by TCP where it listens
    /// on TCP: a container takes a moment to listen, a VM's guest seconds to boot (TCG).
    fn await_ready(&self, f: Function, rt: Runtime) -> Result<()> {
        let (ip, tcp) = match nf_of(f) {
            None => (TESTSVC_IP, Some(7000)),
            Some(nf) => {
                let c = nf::container(
                    nf,
                    &nf::default_config(nf)?,
                    "",
                    self.spec.prefix_len,
                    "medium",
                )?;
                (c.service_ip, (nf == Nf::Hss).then_some(3868))
            }
        };
        // The SPGW answers GTP-U Echo once its user plane runs: for a VM, after its guest
        // set up the SGi NAT and started it, which a ping (answered as soon as the
        // guest's NIC is up) would not tell.
        let gtpu = nf_of(f) == Some(Nf::Spgw);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let ready = move || -> bool {
            match tcp {
                Some(port) => std::net::TcpStream::connect_timeout(
                    &SocketAddr::from((ip, port)),
                    Duration::from_secs(1),
                )
                .is_ok(),
                None if gtpu => measure::app::gtpu_echo_answered(ip, Duration::from_millis(500))
                    .unwrap_or(false),
                None => {
                    let stop = AtomicBool::new(false);
                    std::thread::scope(|sc| {
                        let h =
                            sc.spawn(|| measure::wire::ping(ip, Duration::from_millis(200), &stop));
                        std::thread::sleep(Duration::from_millis(500));
                        stop.store(true, Ordering::Relaxed);
                        h.join()
                            .ok()
                            .and_then(|r| r.ok())
                            .is_some_and(|r| r.answered > 0)
                    })
                }
            }
        };
        join(on_host("ran", move || {
            while !ready() {
                if std::time::Instant::now() > deadline {
                    anyhow::bail!("the function did not come up within 120 s");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        }))?;
        // A VM's function that does not listen on TCP gets time to start after its NIC is up.
        if tcp.is_none() && !gtpu && rt == Runtime::Vm {
            std::thread::sleep(Duration::from_secs(3));
        }
        Ok(())
    }

    fn set_rates(&self, rate: &str) -> Result<()> {
        for n in NODES {
            lab::set_host_rate(n, Some(rate))?;
        }
        Ok(())
    }

    /// CPU load inside a cgroup on the chosen nodes: a busy loop limited to `percent` of the
    /// host's CPUs (its cpuset's, where the lab gives it one; else the machine's).
    fn start_load(&self, case: &Case) -> Result<()> {
        if case.load_percent == 0 {
            return Ok(());
        }
        for (i, n) in NODES.iter().enumerate() {
            let cpus = match &self.spec.host(n)?.cpus {
                Some(list) => lab::spec::parse_cpu_list(list)?.len(),
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            } as f64;
            let from_src = matches!(case.load_where, LoadWhere::Source | LoadWhere::Both)
                && Some(*n) == self.source();
            let at_dst = matches!(case.load_where, LoadWhere::Destination | LoadWhere::Both)
                && Some(*n) != self.source();
            if !(from_src || at_dst) {
                continue;
            }
            let mut cs = runtime::ContainerSpec::new(
                "load",
                std::env::current_exe()?,
                vec!["burn".into()],
                LOAD_IPS[i],
                self.spec.prefix_len,
                "tiny",
            )?;
            cs.flavor = runtime::Flavor {
                cpus: cpus * f64::from(case.load_percent) / 100.0,
                memory_mb: 64,
            };
            cs.flavor_name = format!("load-{}%", case.load_percent);
            self.client(n)?.run(&cs)?;
        }
        Ok(())
    }

    fn stop_load(&self) {
        for n in NODES {
            if let Ok(mut c) = self.client(n) {
                let _ = c.remove("load");
            }
        }
    }

    fn source(&self) -> Option<&str> {
        self.placed.as_ref().map(|(_, _, _, h)| h.as_str())
    }

    fn start_probes(&self, case: &Case) -> Result<Probes> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ip, app_target) = match nf_of(case.function) {
            None => (TESTSVC_IP, None),
            Some(f) => {
                let c = nf::container(
                    f,
                    &nf::default_config(f)?,
                    "",
                    self.spec.prefix_len,
                    "medium",
                )?;
                (c.service_ip, Some(f))
            }
        };
        let s = stop.clone();
        let icmp = on_host("ran", move || Ok(measure::wire::ping(ip, PROBE, &s)?.gaps));
        let s = stop.clone();
        let app = match app_target {
            // The counter service: one TCP connection, a request per period.
            None => Some(on_host("ran", move || {
                Ok(
                    measure::probe::tcp(SocketAddr::from((ip, 7000)), PROBE, &|| {
                        s.load(Ordering::Relaxed)
                    })?
                    .gaps,
                )
            })),
            Some(Nf::Hss) => Some(on_host("ran", move || {
                measure::app::diameter_watchdog(SocketAddr::from((ip, 3868)), PROBE, &s)
            })),
            Some(Nf::Spgw) => Some(on_host("ran", move || {
                measure::app::gtpu_echo(ip, PROBE, &s)
            })),
            // The MME's application probe is the eNB's S1AP round trip (CP_S1-MME).
            Some(Nf::Mme) => None,
        };
        let sgi = match app_target {
            Some(Nf::Spgw) => {
                let s = stop.clone();
                Some(on_host("pdn", move || {
                    measure::wire::sniff(ip, 1, Duration::from_millis(20), &s)
                }))
            }
            _ => None,
        };
        let ue = match app_target {
            Some(_) => Some(UeSession::start(&self.spec)?),
            None => None,
        };
        Ok(Probes {
            stop,
            icmp,
            app,
            sgi,
            ue,
        })
    }
}

impl LabExecutor {
    fn host_cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown".into())
    }
}

impl Executor for LabExecutor {
    fn cpu_model(&self) -> String {
        Self::host_cpu_model()
    }

    fn run(&mut self, case: &Case, run_index: u32) -> Result<Record> {
        let method: migrate::Method = case.method.as_str().parse()?;
        let from = self.deploy(case)?;
        let to = NODES.iter().find(|n| **n != from).unwrap().to_string();
        let name = match nf_of(case.function) {
            Some(f) => f.name(),
            None => "testsvc",
        };
        self.set_rates(&case.nic_rate.to_string())?;
        self.start_load(case)?;
        let probes = self.start_probes(case);
        let result = probes.and_then(|p| {
            std::thread::sleep(Duration::from_millis(500));
            let m = migrate::migrate(&self.spec, &self.creds, name, &to, method);
            if m.is_ok() {
                std::thread::sleep(Duration::from_millis(GRACE_MS));
            }
            p.stop.store(true, Ordering::Relaxed);
            let ue = p.ue.map(UeSession::finish);
            let icmp = join(p.icmp);
            let app = p.app.map(join);
            let sgi = p.sgi.map(join);
            let m = m?;
            self.placed.as_mut().unwrap().3 = to.clone();
            // Every freeze counts: the window opens at the first round's.
            let (a, b) = (m.first_frozen_unix_ms, m.resumed_unix_ms + GRACE_MS);
            let mut r = Record::new(case, run_index);
            r.phases = m
                .phases
                .0
                .iter()
                .map(|(p, v)| (p.as_str().to_string(), *v))
                .collect();
            r.frozen_ms = Some(m.frozen_ms);
            r.longest_freeze_ms = Some(m.longest_freeze_ms);
            r.window = m
                .window
                .as_ref()
                .map(|w| serde_json::to_value(w).unwrap_or_default());
            r.total_ms = m.total_ms;
            r.downtime_ms = m.downtime_ms;
            r.image_bytes = m.image_bytes;
            r.round_bytes = m.round_bytes.clone();
            r.icmp_downtime_ms = longest(&icmp?.overlapping(a, b));
            if let Some(app) = app {
                r.app_downtime_ms = longest(&app?.overlapping(a, b));
            }
            if let Some(sgi) = sgi {
                r.dp_sgi_ms = longest(&sgi?.overlapping(a, b));
            }
            if let Some(ue) = ue {
                let w = ue?.recovery.within(a, b);
                r.dp_gtp_ms = longest(
                    &w.dp_gtp
                        .into_iter()
                        .flat_map(|(_, o)| o)
                        .collect::<Vec<_>>(),
                );
                r.cp_s1mme_ms = longest(&w.cp_s1_mme);
                if case.function == Function::Mme {
                    r.app_downtime_ms = r.cp_s1mme_ms;
                }
            }
            Ok(r)
        });
        self.stop_load();
        if result.is_err() {
            // Start the next run from a clean deployment.
            self.clear();
        }
        result
    }
}

/// `corehop burn`: keeps every CPU it may use busy (the CPU-load generator).
pub fn burn() -> ! {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for _ in 1..n {
        std::thread::spawn(|| loop {
            std::hint::spin_loop();
        });
    }
    loop {
        std::hint::spin_loop();
    }
}
