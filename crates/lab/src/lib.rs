//! The lab: hosts emulated as network namespaces on one fabric bridge, each with its own
//! NIC rate, state folders and agent. On real machines only the agent part is used.
pub mod hold;
pub mod net;
pub mod nl;
pub mod paths;
pub mod pki;
pub mod sh;
pub mod spec;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sh::{run, run_quiet};
use spec::{LabSpec, AGENT_PORT};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Loads the spec of the lab that is up.
pub fn current() -> Result<LabSpec> {
    let text = std::fs::read_to_string(paths::lab_file())
        .context("no lab is up: run `corehop lab up` first")?;
    serde_json::from_str(&text).context("the lab state file is corrupt: run `corehop lab down`")
}

pub fn agent_addr(spec: &LabSpec, host: &str) -> Result<SocketAddr> {
    Ok(SocketAddr::from((spec.host(host)?.addr, AGENT_PORT)))
}

/// Brings the lab up: fabric bridge, hosts, link rates, one agent per host started from
/// `exe` (the corehop binary). Idempotent: what exists is kept.
pub fn up(spec: &LabSpec, exe: &Path) -> Result<()> {
    spec.validate()?;
    if let Ok(old) = current() {
        if &old != spec {
            bail!("a different lab is up; run `corehop lab down` first");
        }
    }
    std::fs::create_dir_all(paths::RUN_DIR)?;
    let hosts: Vec<_> = spec
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h.addr.into()))
        .collect();
    pki::ensure(&pki::dir(), &hosts, spec.controller.into())?;
    std::fs::write(paths::lab_file(), serde_json::to_vec_pretty(spec)?)?;

    let br = net::FABRIC_BRIDGE;
    if !run_quiet("ip", &["link", "show", br]) {
        run("ip", &["link", "add", br, "type", "bridge"])?;
    }
    run(
        "ip",
        &[
            "addr",
            "replace",
            &format!("{}/{}", spec.controller, spec.prefix_len),
            "dev",
            br,
        ],
    )?;
    run("ip", &["link", "set", br, "up"])?;
    // Lets the bridge carry traffic the root netfilter would otherwise filter.
    run_quiet("sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=0"]);

    let master = SocketAddr::from((spec.controller, MASTER_PORT));
    start_master(master, exe)?;
    for h in &spec.hosts {
        host_up(spec, h)?;
        start_agent(h, exe, master)?;
    }
    for h in &spec.hosts {
        wait_port(
            SocketAddr::from((h.addr, AGENT_PORT)),
            Duration::from_secs(10),
        )
        .with_context(|| {
            format!(
                "the agent of {} did not start; see its log {}",
                h.name,
                paths::host_run_dir(&h.name).join("agent.log").display()
            )
        })?;
    }
    Ok(())
}

fn host_up(spec: &LabSpec, h: &spec::HostSpec) -> Result<()> {
    let ns = net::host_ns(&h.name);
    let port = net::host_port(&h.name);
    net::add_netns(&ns)?;
    if !run_quiet("ip", &["link", "show", &port]) {
        run(
            "ip",
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                net::HOST_UPLINK,
                "netns",
                &ns,
            ],
        )?;
    }
    run(
        "ip",
        &["link", "set", &port, "master", net::FABRIC_BRIDGE, "up"],
    )?;
    if !run_quiet("ip", &["-n", &ns, "link", "show", net::HOST_BRIDGE]) {
        run(
            "ip",
            &["-n", &ns, "link", "add", net::HOST_BRIDGE, "type", "bridge"],
        )?;
    }
    run(
        "ip",
        &[
            "-n",
            &ns,
            "link",
            "set",
            net::HOST_UPLINK,
            "master",
            net::HOST_BRIDGE,
            "up",
        ],
    )?;
    // A bridge takes the lowest MAC of its ports unless set: without a fixed one, the
    // host's MAC would change as containers come and go, and peers' ARP caches go stale.
    let mac = net::mac_for(h.addr);
    run(
        "ip",
        &["-n", &ns, "link", "set", net::HOST_BRIDGE, "address", &mac],
    )?;
    run(
        "ip",
        &[
            "-n",
            &ns,
            "addr",
            "replace",
            &format!("{}/{}", h.addr, spec.prefix_len),
            "dev",
            net::HOST_BRIDGE,
        ],
    )?;
    run("ip", &["-n", &ns, "link", "set", net::HOST_BRIDGE, "up"])?;
    // Forwarding for the functions' traffic; and probes ping through the kernel's ICMP
    // datagram sockets, which a new namespace allows to no group by default.
    sysctl_in(
        &ns,
        &[
            "net.ipv4.ip_forward=1",
            "net.ipv4.ping_group_range=0 2147483647",
        ],
    )?;
    // The functions' namespaces get TCP and UDP hash tables of their own, sized for a
    // function: CRIU's socket collection walks the whole table of every socket family in
    // the frozen window (the host-wide 262144 TCP buckets of these machines: ~4 ms per
    // dump, measured). Older kernels lack the knobs (5.19 and 6.2); a dump is slower there.
    if sysctl_in(
        &ns,
        &[
            "net.ipv4.tcp_child_ehash_entries=1024",
            "net.ipv4.udp_child_hash_entries=1024",
        ],
    )
    .is_err()
    {
        tracing::warn!(
            "{}: no per-namespace socket hash tables on this kernel",
            h.name
        );
    }
    // The NIC is shaped in both directions: host egress on its uplink, ingress on the
    // fabric port (a bridge port's egress), as a real NIC limits both.
    set_host_rate(&h.name, h.rate.as_deref())?;
    for d in [
        paths::host_state_dir(&h.name),
        paths::pid_dir(&h.name),
        paths::runc_root(&h.name),
    ] {
        std::fs::create_dir_all(&d)?;
    }
    Ok(())
}

/// Sets (or with `None` clears) the NIC rate of a host, both directions.
pub fn set_host_rate(host: &str, rate: Option<&str>) -> Result<()> {
    net::set_rate(Some(&net::host_ns(host)), net::HOST_UPLINK, rate)?;
    net::set_rate(None, &net::host_port(host), rate)
}

/// Port of the tunnel master on the controller's address.
pub const MASTER_PORT: u16 = 7071;
/// Where the tunnel master keeps the lists (its default `--dir`).
pub const MASTER_DIR: &str = "/var/lib/corehop/master";

/// The tunnel master runs in the root namespace, on the controller's fabric address.
fn start_master(listen: SocketAddr, exe: &Path) -> Result<()> {
    std::fs::create_dir_all(paths::lab_pid_dir())?;
    let pidfile = paths::lab_pid_dir().join("master.pid");
    if pid_alive(&pidfile) {
        return Ok(());
    }
    let log = log_file(&Path::new(paths::RUN_DIR).join("master.log"))?;
    let child = spawn_detached(
        std::process::Command::new(exe)
            .args(["tunnel-master", "--listen", &listen.to_string()])
            .args(tls_args(pki::MASTER))
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    std::fs::write(pidfile, child.to_string())?;
    wait_port(listen, Duration::from_secs(10)).context("the tunnel master did not start")
}

/// The `--ca`, `--cert` and `--key` arguments of a daemon that is `who`.
fn tls_args(who: &str) -> Vec<std::ffi::OsString> {
    let f = pki::files_in(&pki::dir(), who);
    [("--ca", f.ca), ("--cert", f.cert), ("--key", f.key)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.into(), path.into_os_string()])
        .collect()
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

fn start_agent(h: &spec::HostSpec, exe: &Path, master: SocketAddr) -> Result<()> {
    let pidfile = paths::agent_pidfile(&h.name);
    if pid_alive(&pidfile) {
        return Ok(());
    }
    let log = log_file(&paths::host_run_dir(&h.name).join("agent.log"))?;
    let listen = format!("{}:{}", h.addr, AGENT_PORT);
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "agent",
        "--host",
        &h.name,
        "--netns",
        &net::host_ns(&h.name),
        "--listen",
        &listen,
    ])
    .args(["--master", &master.to_string()])
    .args(tls_args(&h.name));
    if let Some(m) = h.memory_mb {
        cmd.args(["--memory-mb", &m.to_string()]);
    }
    for model in h.cpu_models.iter().flatten() {
        cmd.args(["--cpu-model", model]);
    }
    if let Some(cpus) = &h.cpus {
        cmd.args(["--cpus", cpus]);
    }
    let child = spawn_detached(cmd.stdout(log.try_clone()?).stderr(log))?;
    std::fs::write(pidfile, child.to_string())?;
    Ok(())
}

/// Starts a process in its own session so it outlives the command that started it.
pub fn spawn_detached(cmd: &mut std::process::Command) -> Result<u32> {
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
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("cannot spawn process")?;
    let pid = child.id();
    // Reaped when it ends: a long-lived caller (the fault harness restarting agents) would
    // keep each one that ended as a zombie, which reads as alive in /proc.
    std::thread::spawn(move || child.wait());
    Ok(pid)
}

fn pid_of(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// The pid the lab recorded for `host`'s agent (it may have died since).
pub fn agent_pid(host: &str) -> Option<i32> {
    pid_of(&paths::agent_pidfile(host))
}

/// Every process on the machine for which `pred(pid)` holds.
pub fn pids_where(pred: impl Fn(i32) -> bool) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pred(pid))
        .collect()
}

/// Alive means running: a zombie whose parent has not reaped it yet counts as dead.
fn pid_alive(pidfile: &Path) -> bool {
    pid_of(pidfile).is_some_and(|p| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    })
}

fn wait_port(addr: SocketAddr, within: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > within {
            bail!("nothing listens on {addr} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, data)?;
    Ok(())
}

/// Emulates the sudden death of a host: its agent and every function on it are killed,
/// their service IPs vanish and its NIC goes down. `lab up` brings the host back empty.
pub fn fail_host(spec: &LabSpec, host: &str) -> Result<()> {
    spec.host(host)?;
    kill_pids(&paths::pid_dir(host));
    kill_containers(host);
    let prefix = format!("{}c-{host}-", net::PREFIX);
    for ns in net::lab_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
    {
        net::del_netns(&ns);
    }
    // Its mounts first (the agent's tmpfs of functions, a prepared restore's bind of the
    // shared rootfs): removing the folder must not reach through them.
    let state = paths::host_state_dir(host);
    unmount_under(&[&format!("{}/", state.display())]);
    let _ = std::fs::remove_dir_all(state);
    run("ip", &["link", "set", &net::host_port(host), "down"])?;
    Ok(())
}

fn kill_containers(host: &str) {
    let root = paths::runc_root(host);
    let root = root.to_string_lossy();
    if let Ok(ids) = run("runc", &["--root", &root, "list", "-q"]) {
        for id in ids.lines() {
            run_quiet("runc", &["--root", &root, "kill", id, "KILL"]);
            run_quiet("runc", &["--root", &root, "delete", "-f", id]);
        }
    }
}

/// Removes everything the lab created, found by name prefix and known folders, so it also
/// works after a crash and when run twice.
pub fn down() -> Result<()> {
    let hosts_dir = Path::new(paths::RUN_DIR).join("hosts");
    let hosts: Vec<String> = std::fs::read_dir(&hosts_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    kill_pids(&paths::lab_pid_dir());
    for host in &hosts {
        kill_pids(&paths::pid_dir(host));
        kill_containers(host);
    }
    for ns in net::lab_namespaces() {
        net::del_netns(&ns);
    }
    for link in run("ip", &["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
    {
        if let Some(name) = link.split(": ").nth(1).and_then(|n| n.split('@').next()) {
            if name.starts_with(&format!("{}h-", net::PREFIX)) || name == net::FABRIC_BRIDGE {
                run_quiet("ip", &["link", "del", name]);
            }
        }
    }
    unmount_under(&[paths::RUN_DIR, "/var/lib/corehop"]);
    remove_cgroups();
    let _ = std::fs::remove_dir_all(&hosts_dir);
    let _ = std::fs::remove_dir_all(paths::STATE_DIR);
    // A new lab gets new keys (an operator's, in COREHOP_TLS_DIR, are not ours to remove).
    let _ = std::fs::remove_dir_all(Path::new(paths::RUN_DIR).join("tls"));
    let _ = std::fs::remove_dir_all(paths::lab_pid_dir());
    let _ = std::fs::remove_dir_all(MASTER_DIR);
    let _ = std::fs::remove_file(paths::lab_file());
    Ok(())
}

/// Sets `settings` (`key=value`) in namespace `ns`.
fn sysctl_in(ns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["netns", "exec", ns, "sysctl", "-qw"];
    args.extend_from_slice(settings);
    run("ip", &args).map(|_| ())
}

/// Kills every process with a pid file in `dir` and waits (up to 5 s) until each is gone:
/// an agent still alive after `down` would hold its port against the next lab's.
fn kill_pids(dir: &Path) {
    let pidfiles: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for f in &pidfiles {
        if let Some(pid) = pid_of(f).filter(|&p| p > 0) {
            // SAFETY: kill(2) of a pid the lab recorded.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pidfiles.iter().any(|f| pid_alive(f)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unmount_under(prefixes: &[&str]) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| prefixes.iter().any(|pre| p.starts_with(pre)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        run_quiet("umount", &["-l", p]);
    }
}

/// Deletes the lab's cgroups under every controller, deepest first.
fn remove_cgroups() {
    fn rm_tree(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rm_tree(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for ctrl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = ctrl.path().join("corehop");
        if p.exists() {
            rm_tree(&p);
        }
    }
}

/// What `lab status` reports for a host.
#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub addr: Ipv4Addr,
    pub namespace: bool,
    pub rate: Option<String>,
    pub agent_pid: Option<i32>,
}

pub fn status(spec: &LabSpec) -> Vec<HostStatus> {
    spec.hosts
        .iter()
        .map(|h| {
            let pidfile = paths::agent_pidfile(&h.name);
            HostStatus {
                name: h.name.clone(),
                addr: h.addr,
                namespace: net::netns_exists(&net::host_ns(&h.name)),
                rate: net::get_rate(Some(&net::host_ns(&h.name)), net::HOST_UPLINK),
                agent_pid: pid_alive(&pidfile).then(|| pid_of(&pidfile)).flatten(),
            }
        })
        .collect()
}
