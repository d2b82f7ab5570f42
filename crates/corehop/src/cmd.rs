//! The subcommands' bodies: parse, call the library crates, print tables or JSON.
use agent::tls::Credentials;
use agent::Client;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lab::spec::LabSpec;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum LabCmd {
    /// Create the hosts (default lab: node-a, node-b, ran, pdn) and start their agents.
    Up {
        /// A lab file (TOML) describing hosts, addresses and link rates.
        file: Option<PathBuf>,
    },
    /// Show hosts, link rates and agents.
    Status,
    /// Remove every namespace, link, container, mount and cgroup of the lab.
    Down,
    /// Set a host's NIC rate (tc syntax, e.g. 100mbit), or `none` to remove shaping.
    Rate { host: String, rate: String },
    /// Emulate a host's sudden death: agent and functions killed, NIC down (`lab up` revives it).
    Fail { host: String },
}

pub fn lab(c: LabCmd, json: bool) -> Result<()> {
    match c {
        LabCmd::Up { file } => {
            let spec = match file {
                Some(f) => LabSpec::load(&f)?,
                None => LabSpec::default(),
            };
            lab::up(&spec, &std::env::current_exe()?)?;
            print_status(&spec, json)
        }
        LabCmd::Status => print_status(&lab::current()?, json),
        LabCmd::Down => {
            lab::down()?;
            if !json {
                println!("lab removed");
            }
            Ok(())
        }
        LabCmd::Fail { host } => lab::fail_host(&lab::current()?, &host),
        LabCmd::Rate { host, rate } => {
            let spec = lab::current()?;
            spec.host(&host)?;
            let rate = (rate != "none").then_some(rate);
            if let Some(r) = &rate {
                lab::spec::parse_rate_bits(r)?;
            }
            lab::set_host_rate(&host, rate.as_deref())
        }
    }
}

fn print_status(spec: &LabSpec, json: bool) -> Result<()> {
    let st = lab::status(spec);
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<13} {:<9} {:<10} agent",
        "host", "address", "netns", "rate"
    );
    for h in st {
        println!(
            "{:<8} {:<13} {:<9} {:<10} {}",
            h.name,
            h.addr,
            if h.namespace { "up" } else { "MISSING" },
            h.rate.as_deref().unwrap_or("-"),
            h.agent_pid
                .map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "DOWN".into())
        );
    }
    Ok(())
}

/// A daemon's keys (`lab up` makes the lab's; on real machines, the operator's PEM files).
#[derive(Args)]
pub struct TlsArgs {
    /// The CA whose certificates every peer must hold.
    #[arg(long)]
    ca: PathBuf,
    /// This daemon's certificate (chain), for its fabric address.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key.
    #[arg(long)]
    key: PathBuf,
}

impl TlsArgs {
    fn load(&self) -> Result<Credentials> {
        Credentials::load(&lab::pki::Files {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        })
    }
}

#[derive(Args)]
pub struct AgentArgs {
    #[arg(long)]
    host: String,
    /// Address to serve the API on (the host's fabric address).
    #[arg(long)]
    listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
    /// Network namespace to serve from (the lab's host namespace).
    #[arg(long)]
    netns: Option<String>,
    /// State folder of this host (default /var/lib/corehop/hosts/HOST).
    #[arg(long)]
    state: Option<PathBuf>,
    /// The criu binary to use.
    #[arg(long, default_value = "/usr/local/sbin/criu")]
    criu: PathBuf,
    /// Address of the tunnel master (global proactive GTP Tunnel List Handler).
    #[arg(long)]
    master: Option<SocketAddr>,
    /// Memory (MiB) this host offers VMs, if less than the machine's.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// CPU models this host supports (repeat the flag), if not every model QEMU knows.
    #[arg(long = "cpu-model")]
    cpu_models: Vec<String>,
    /// The machine's CPUs this host runs on (a cpuset list such as `0` or `2-3`): the
    /// agent, and the functions, CRIU and QEMU it starts.
    #[arg(long)]
    cpus: Option<String>,
}

pub fn agent(a: AgentArgs) -> Result<()> {
    if let Some(ns) = &a.netns {
        lab::net::enter_netns(ns)?;
    }
    if let Some(cpus) = &a.cpus {
        // Before any thread exists: each one, and every process started, inherits the mask.
        pin_to(&lab::spec::parse_cpu_list(cpus).with_context(|| format!("--cpus {cpus:?}"))?)?;
    }
    let tls = a.tls.load()?;
    let state = a
        .state
        .unwrap_or_else(|| lab::paths::host_state_dir(&a.host));
    agent::server::serve(agent::server::Config {
        host: a.host,
        listen: a.listen,
        state,
        tls,
        criu: a.criu,
        master: a.master,
        memory_mb: a.memory_mb,
        cpu_models: (!a.cpu_models.is_empty()).then_some(a.cpu_models),
        cpus: a.cpus,
    })
}

/// Confines this process (its calling thread, and what it starts from now on) to `cpus`.
fn pin_to(cpus: &[usize]) -> Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET only writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the set lives through the call, which reads size_of::<cpu_set_t>() bytes.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        bail!(
            "cannot run on CPUs {cpus:?}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct MasterArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[command(flatten)]
    tls: TlsArgs,
    /// Folder keeping the lists (default /var/lib/corehop/master).
    #[arg(long, default_value = lab::MASTER_DIR)]
    dir: PathBuf,
}

pub fn tunnel_master(a: MasterArgs) -> Result<()> {
    agent::master::serve(a.listen, a.dir, a.tls.load()?)
}

pub fn client(spec: &LabSpec, host: &str) -> Result<Client> {
    Client::connect(lab::agent_addr(spec, host)?, &Credentials::controller()?)
}

#[derive(Args)]
pub struct RunArgs {
    name: String,
    #[arg(long)]
    host: String,
    /// tiny, small, medium or large (CPU quota and memory limit).
    #[arg(long, default_value = runtime::flavor::DEFAULT_FLAVOR)]
    flavor: String,
    /// Service IP on the fabric (default: the next free one from 10.77.1.100).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// Environment variables (KEY=VALUE) for the program.
    #[arg(long = "env")]
    env: Vec<String>,
    /// container (runc) or vm (QEMU, the paper's baseline).
    #[arg(long, default_value = "container")]
    runtime: runtime::bundle::Runtime,
    /// Give the program /dev/net/tun and CAP_NET_ADMIN (a VPN server, a user-plane
    /// function): the TUN devices it opens migrate with it.
    #[arg(long)]
    tun: bool,
    /// An extra capability for the program (CAP_NET_ADMIN, CAP_NET_RAW, ...); repeatable.
    #[arg(long = "cap")]
    caps: Vec<String>,
    /// A text file of this machine placed read-only in the container, as INSIDE=HOST
    /// (e.g. /etc/openvpn/server.conf=server.conf); repeatable.
    #[arg(long = "file", value_parser = parse_file_arg)]
    files: Vec<(String, PathBuf)>,
    /// With --runtime vm: a file of this machine copied to the same path in the guest with
    /// its shared libraries (a plugin the program loads with dlopen, a tool an
    /// --guest-init command runs); repeatable.
    #[arg(long = "guest-program")]
    guest_programs: Vec<PathBuf>,
    /// With --runtime vm: a kernel module list of scripts/setup-vm.sh the guest loads
    /// (`sctp`: the kernel's SCTP with UDP encapsulation; `lab`); repeatable.
    #[arg(long = "guest-modules")]
    guest_modules: Vec<String>,
    /// With --runtime vm: a shell command the guest runs before the program, e.g.
    /// `sysctl -w net.sctp.udp_port=9899`; repeatable, run in order.
    #[arg(long = "guest-init")]
    guest_init: Vec<String>,
    /// The program (a path or a name found in PATH) and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(a: RunArgs, json: bool) -> Result<()> {
    let spec = lab::current()?;
    spec.host(&a.host)?;
    let program = resolve_program(&a.command[0])?;
    let service_ip = match a.ip {
        Some(ip) => ip,
        None => free_service_ip(&spec)?,
    };
    let mut cs = runtime::ContainerSpec::new(
        &a.name,
        program,
        a.command[1..].to_vec(),
        service_ip,
        spec.prefix_len,
        &a.flavor,
    )?;
    cs.env = a.env;
    cs.runtime = a.runtime;
    cs.tun = a.tun;
    cs.caps = a.caps;
    if a.tun && !cs.caps.iter().any(|c| c == "CAP_NET_ADMIN") {
        cs.caps.push("CAP_NET_ADMIN".into());
    }
    for (inside, host) in a.files {
        let text = std::fs::read_to_string(&host).with_context(|| {
            format!("--file {inside}={}: cannot read it as text", host.display())
        })?;
        cs.files.push((inside, text));
    }
    if cs.runtime == runtime::bundle::Runtime::Vm && !cs.env.is_empty() {
        bail!("--env is not supported with --runtime vm (the guest's init starts the program with its own environment)");
    }
    cs.guest = runtime::bundle::GuestExtras {
        programs: a
            .guest_programs
            .iter()
            // Absolute but with its links kept: the guest program looks for it by that name.
            .map(|p| match std::path::absolute(p) {
                Ok(abs) if abs.is_file() => Ok(abs),
                _ => bail!("--guest-program {}: no such file", p.display()),
            })
            .collect::<Result<_>>()?,
        modules: a.guest_modules,
        init: a.guest_init,
    };
    if cs.runtime != runtime::bundle::Runtime::Vm && !cs.guest.is_empty() {
        bail!("--guest-program, --guest-modules and --guest-init need --runtime vm (a container shares this host's kernel and files)");
    }
    if let Some(m) = cs.guest.modules.iter().find(|m| {
        m.is_empty()
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        bail!("--guest-modules {m:?}: expected the name of a module list of scripts/setup-vm.sh, e.g. sctp");
    }
    if all_containers(&spec)?.iter().any(|c| c.name == cs.name) {
        bail!("a container named {:?} already exists in the lab", cs.name);
    }
    start(&spec, &a.host, &cs, json)
}

/// Starts a container or VM on `host` and says where it runs.
pub fn start(spec: &LabSpec, host: &str, cs: &runtime::ContainerSpec, json: bool) -> Result<()> {
    let info = client(spec, host)?.run(cs)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "{} running on {} at {}",
            info.name, info.host, info.service_ip
        );
    }
    Ok(())
}

/// `--file INSIDE=HOST`: INSIDE must be absolute.
fn parse_file_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((inside, host)) if inside.starts_with('/') && !host.is_empty() => {
            Ok((inside.into(), host.into()))
        }
        _ => Err(format!(
            "{s:?}: expected INSIDE=HOST with an absolute INSIDE path, e.g. /etc/app.conf=app.conf"
        )),
    }
}

fn resolve_program(p: &str) -> Result<PathBuf> {
    if p.contains('/') {
        return std::fs::canonicalize(p).with_context(|| format!("program {p} not found"));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .with_context(|| format!("program {p:?} not found in PATH"))
}

/// Containers of every host whose agent answers; a host that does not is reported on
/// stderr and skipped, so one dead agent does not hide the rest of the lab.
fn all_containers(spec: &LabSpec) -> Result<Vec<agent::api::ContainerInfo>> {
    let creds = Credentials::controller()?;
    let mut out = Vec::new();
    for h in &spec.hosts {
        match Client::connect(lab::agent_addr(spec, &h.name)?, &creds).and_then(|mut c| c.ps()) {
            Ok(list) => out.extend(list),
            Err(e) => eprintln!("warning: host {} skipped: {e:#}", h.name),
        }
    }
    Ok(out)
}

fn free_service_ip(spec: &LabSpec) -> Result<Ipv4Addr> {
    let used: Vec<Ipv4Addr> = all_containers(spec)?.iter().map(|c| c.service_ip).collect();
    (100..=250u8)
        .map(|i| Ipv4Addr::new(10, 77, 1, i))
        .find(|ip| !used.contains(ip))
        .context("no free service IP left in 10.77.1.100-250")
}

pub fn ps(json: bool) -> Result<()> {
    let all = all_containers(&lab::current()?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<8} {:<13} {:<8} {:<10} {:<13} pid",
        "name", "host", "service ip", "flavor", "runtime", "state"
    );
    for c in all {
        println!(
            "{:<12} {:<8} {:<13} {:<8} {:<10} {:<13} {}",
            c.name,
            c.host,
            c.service_ip,
            c.flavor,
            c.runtime.as_str(),
            c.state,
            c.pid.map(|p| p.to_string()).unwrap_or_default()
        );
    }
    Ok(())
}

pub fn rm(name: &str) -> Result<()> {
    let spec = lab::current()?;
    for c in all_containers(&spec)? {
        if c.name == name {
            return client(&spec, &c.host)?.remove(name);
        }
    }
    bail!("no container named {name:?} in the lab")
}

#[derive(Args)]
pub struct MigrateArgs {
    name: String,
    #[arg(long, required_unless_present = "resume")]
    to: Option<String>,
    /// stop-and-copy, pre-copy or post-copy for a container; vm-pre-copy for a VM.
    /// Default: stop-and-copy for a container, vm-pre-copy for a VM.
    #[arg(long, conflicts_with = "resume")]
    method: Option<String>,
    /// Settle a migration of NAME whose controller died: finish it if the function already
    /// runs at its destination, else roll it back to its source.
    #[arg(long, conflicts_with = "to")]
    resume: bool,
}

pub fn migrate(a: MigrateArgs, json: bool) -> Result<()> {
    lab::spec::validate_name(&a.name, "container")?;
    let spec = lab::current()?;
    let creds = Credentials::controller()?;
    let Some(to) = a.to else {
        let r = migrate::resume(&spec, &creds, &a.name)?;
        if json {
            println!(
                "{}",
                serde_json::json!({ "name": a.name, "resumed": r.to_string() })
            );
        } else {
            println!("{}: {r}", a.name);
        }
        return Ok(());
    };
    spec.host(&to)?;
    let method: migrate::Method = match &a.method {
        Some(m) => m.parse()?,
        None => {
            let runtime = all_containers(&spec)?
                .into_iter()
                .find(|c| c.name == a.name)
                .map(|c| c.runtime)
                .with_context(|| {
                    format!(
                        "no function named {:?} in the lab (see `corehop ps`)",
                        a.name
                    )
                })?;
            migrate::Method::default_for(runtime)
        }
    };
    // Each step as it starts: what a user watching a long migration (or a harness that
    // kills the controller at a step) needs.
    let name = a.name.clone();
    let steps = Box::new(move |b: migrate::Boundary| {
        tracing::info!("{name}: step {} begins", b.as_str());
    });
    let r = migrate::migrate_observed(&spec, &creds, &a.name, &to, method, steps)?;
    print_migration(&r, json)
}

#[derive(Args)]
pub struct ProbeArgs {
    /// tcp or udp
    proto: String,
    target: SocketAddr,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Seconds to probe for; SIGINT or SIGTERM ends the probe sooner, with its report.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

pub fn probe(a: ProbeArgs, json: bool) -> Result<()> {
    if !(a.duration > 0.0 && a.duration < 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    let (i, d) = (
        Duration::from_millis(a.interval_ms.max(1)),
        Duration::from_secs_f64(a.duration),
    );
    // A caller that cannot know how long what it watches takes (a migration) stops the
    // probe when it is over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let until = measure::probe::after(d);
    let done = || until() || stop.load(std::sync::atomic::Ordering::SeqCst);
    let r = match a.proto.as_str() {
        "tcp" => measure::probe::tcp(a.target, i, &done)?,
        "udp" => measure::probe::udp(a.target, i, &done)?,
        p => bail!("unknown probe {p:?}: use tcp or udp"),
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {}: {} sent, {} answered, {} reconnects, max gap {:.1} ms, counter {:?}..{:?} consecutive={}",
            r.proto, r.target, r.sent, r.answered, r.reconnects, r.max_gap_ms, r.first_counter, r.last_counter,
            r.counter_consecutive
        );
    }
    Ok(())
}

/// Prints a migration report as a table, or as one JSON line.
fn print_migration(r: &migrate::Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        crate::demo::print_report(r);
        if let Some(how) = &r.pre_copy {
            println!("  pre-copy rounds: {how}");
        }
        if let Some(rounds) = &r.dump_bytes {
            println!("  image bytes per round: {rounds:?}");
        }
        if let Some(rounds) = &r.round_bytes {
            println!("  bytes sent per round: {rounds:?}");
        }
        if let Some(ms) = r.last_page_ms {
            println!("  last page {ms:.1} ms after the resume");
        }
        if let Some(ms) = r.qemu_downtime_ms {
            println!("  QEMU's own downtime {ms:.1} ms");
        }
    }
    Ok(())
}

pub fn standby(name: &str, to: &str, json: bool) -> Result<()> {
    let spec = lab::current()?;
    spec.host(to)?;
    print_migration(
        &migrate::standby(&spec, &Credentials::controller()?, name, to)?,
        json,
    )
}

pub fn recover(name: &str, on: &str, round: &str, json: bool) -> Result<()> {
    let spec = lab::current()?;
    spec.host(on)?;
    match migrate::recover(&spec, &Credentials::controller()?, name, on, round)? {
        Some(r) => print_migration(&r, json),
        None => {
            eprintln!("{name} already runs on {on}: nothing to recover");
            Ok(())
        }
    }
}
