//! The in-process lab of the RAN tests and the attach benchmark: a network namespace
//! made by the test (deleted on drop, also on failure), and in it the real HSS
//! (SQLite in a temp dir, the example CSV), MME and SPGW (which creates its SGi TUN
//! `sgi0` there) on loopback addresses. The SGi gateway 10.45.0.1 answers the pings.
//!
//! Same approach as crates/spgw/tests/netns.rs: a thread `setns`-es into the
//! namespace and runs a current_thread tokio runtime, like the CLI.

#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const HSS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
pub const MME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
pub const ENB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
pub const SPGW: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 30);
/// The SGi gateway address inside the SPGW's namespace: the ping target.
pub const SGI_GW: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 1);

pub fn example_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hss/subscribers.example.csv")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 `ip` missing");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("corehop-ran-{tag}-{}", std::process::id());
        // A leftover of a killed earlier run with the same pid would block us.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside the namespace, on a current_thread runtime.
    pub fn run<T: Send, F: Future<Output = T>>(&self, f: impl FnOnce() -> F + Send) -> T {
        let ns = &self.0;
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                lab::net::enter_netns(ns).expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(f())
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("corehop-ran-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running EPC; dropping it stops the three functions.
pub struct Epc {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Epc {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn spawn_nf<F>(name: &'static str, f: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = f.await {
            panic!("{name} stopped: {e:#}");
        }
    })
}

/// Starts HSS, SPGW and MME inside the current namespace.
pub async fn start_epc(dir: &Path) -> Epc {
    let (hss_cfg, spgw_cfg, mme_cfg) = (hss_config(dir), spgw_config(), mme_config());
    let spgw = spgw::Spgw::new(spgw_cfg).expect("SPGW config");
    let mut tasks = vec![spawn_nf("hss", hss::serve(hss_cfg))];
    tasks.push(spawn_nf("spgw", {
        let s = spgw.clone();
        async move { s.run().await }
    }));
    // The MME connects to the HSS at start (and backs off if it cannot).
    wait_tcp(SocketAddr::from((HSS, 3868))).await;
    tasks.push(spawn_nf("mme", mme::serve(mme_cfg)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !spgw.tun_attached() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SPGW did not create sgi0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Epc { tasks }
}

/// The RAN config of the tests: the eNB on 127.0.0.21, pinging the SGi gateway.
pub fn ran_config(ues: usize) -> ran::Config {
    ran::Config {
        mme: SocketAddr::from((MME, 9899)),
        bind: IpAddr::V4(ENB),
        s1u_address: ENB,
        ues,
        subscribers: example_csv(),
        ping_target: SGI_GW,
        ..Default::default()
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A network function on a thread (and tokio runtime) of its own inside the
/// namespace, so that a test can freeze it — block its thread, as a CRIU checkpoint
/// freezes a process — without freezing the RAN.
pub struct NfThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl NfThread {
    pub fn spawn<F>(ns: &Netns, name: &'static str, f: impl FnOnce() -> F + Send + 'static) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + 'static,
    {
        let ns = ns.0.clone();
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let join = std::thread::spawn(move || {
            lab::net::enter_netns(&ns).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            htx.send(rt.handle().clone()).expect("handle");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                tokio::select! {
                    r = f() => if let Err(e) = r { panic!("{name} stopped: {e:#}") },
                    _ = stop_rx => {}
                }
            });
        });
        NfThread {
            handle: hrx.recv().expect("NF thread started"),
            stop: Some(stop),
            join: Some(join),
        }
    }

    /// Blocks the function's thread for `d` (from about now).
    pub fn freeze(&self, d: Duration) {
        self.handle.spawn(async move { std::thread::sleep(d) });
    }
}

impl Drop for NfThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

pub fn hss_config(dir: &Path) -> hss::Config {
    hss::Config {
        listen: SocketAddr::from((HSS, 3868)),
        advertised_ip: IpAddr::V4(HSS),
        db_path: dir.join("hss.db"),
        subscribers_file: Some(example_csv()),
        ..Default::default()
    }
}

pub fn spgw_config() -> spgw::Config {
    spgw::Config {
        s11_bind: SocketAddr::from((SPGW, 2123)),
        s1u_bind: SocketAddr::from((SPGW, 2152)),
        s11_address: SPGW,
        s1u_address: SPGW,
        tunnels_file: None,
        ..Default::default()
    }
}

pub fn mme_config() -> mme::Config {
    mme::Config {
        s1_bind: SocketAddr::from((MME, 9899)),
        hss: SocketAddr::from((HSS, 3868)),
        spgw_s11: SocketAddr::from((SPGW, 2123)),
        s11_bind: SocketAddr::from((MME, 2123)),
        s11_address: MME,
        advertised_ip: IpAddr::V4(MME),
        state_file: None,
        ..Default::default()
    }
}

/// Waits until the SPGW created `sgi0` in the namespace.
pub fn wait_for_sgi(ns: &Netns) {
    for _ in 0..250 {
        let ok = Command::new("ip")
            .args(["-n", &ns.0, "link", "show", "dev", "sgi0"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("SPGW did not create sgi0");
}

/// Waits until something listens on `addr` (the connection is closed at once).
pub async fn wait_tcp(addr: SocketAddr) {
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {addr}");
}

/// The pdn host of the downlink tests: a namespace of its own behind a veth from the
/// core's namespace (which routes the UE pool to the SPGW's `sgi0`), as the lab's pdn
/// host sits behind the SGi.
pub fn pdn_host(core: &Netns, tag: &str) -> Netns {
    let pdn = Netns::new(tag);
    let (a, b) = ("tr-core", "tr-pdn");
    ip(&[
        "link", "add", a, "netns", &core.0, "type", "veth", "peer", "name", b, "netns", &pdn.0,
    ]);
    ip(&["-n", &core.0, "addr", "add", "192.168.77.1/30", "dev", a]);
    ip(&["-n", &pdn.0, "addr", "add", "192.168.77.2/30", "dev", b]);
    ip(&["-n", &core.0, "link", "set", a, "up"]);
    ip(&["-n", &pdn.0, "link", "set", b, "up"]);
    ip(&[
        "-n",
        &pdn.0,
        "route",
        "add",
        "default",
        "via",
        "192.168.77.1",
    ]);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &core.0,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .output()
        .expect("sysctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pdn
}

/// HSS, SPGW and MME each on a thread of its own in `ns` (see [`NfThread`]), started
/// in order (the MME connects to the HSS at start); `mme` is the MME's config.
pub struct ThreadedEpc {
    pub hss: NfThread,
    pub spgw: NfThread,
    pub mme: NfThread,
}

impl ThreadedEpc {
    pub fn start(ns: &Netns, dir: &Path, mme: mme::Config) -> ThreadedEpc {
        let db = dir.to_path_buf();
        let hss = NfThread::spawn(ns, "hss", move || hss::serve(hss_config(&db)));
        let spgw = NfThread::spawn(ns, "spgw", || spgw::serve(spgw_config()));
        wait_for_sgi(ns);
        ns.run(|| wait_tcp(SocketAddr::from((HSS, 3868))));
        let mme = NfThread::spawn(ns, "mme", move || mme::serve(mme));
        ThreadedEpc { hss, spgw, mme }
    }
}

/// Now as UNIX ms, the clock of a migration's window.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
