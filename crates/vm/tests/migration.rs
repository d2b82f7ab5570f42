//! End-to-end test of the VM baseline (needs root, qemu-system-x86 and
//! `scripts/setup-vm.sh` done): two hosts as network namespaces `vmt-a` and `vmt-b`, each
//! with a bridge `br0`, joined by a veth. A counter service boots in a VM in vmt-a; a
//! client in vmt-b keeps one TCP connection busy (`inc` every 10 ms) while the VM is
//! live-migrated to a QEMU in vmt-b. The connection must keep answering with the counter
//! going on, and the VM migrates back the same way. Before that: a migration to nowhere
//! and one whose link is cut fail with the source still running, and the pre-live checks
//! reject destinations without enough memory or without the CPU model, and a TLS destination
//! refuses a source in clear and one of another host. The way there is TLS, the way back
//! clear. The measured numbers are printed (`cargo test -p vm -- --nocapture`).
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm::qmp::CpuDefinition;
use vm::{HostCaps, Image, MigrateOptions, MigrationError, PreLiveError, Vm, VmSpec};

const NS_A: &str = "vmt-a";
const NS_B: &str = "vmt-b";
const VETH_A: &str = "vmt-va";
const VETH_B: &str = "vmt-vb";
const HOST_A: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const HOST_B: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 10);
const PORT: u16 = 7000;

/// The tests share the namespace names, so they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 `ip`");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two hosts; removed on drop, also when the test fails (and at creation, in case a
/// killed earlier run left them).
struct TestLab;

impl TestLab {
    fn new() -> TestLab {
        TestLab::clean();
        for (ns, addr) in [(NS_A, HOST_A), (NS_B, HOST_B)] {
            lab::net::add_netns(ns).unwrap();
            ip(&["-n", ns, "link", "add", "br0", "type", "bridge"]);
            // A fixed MAC, as the lab gives its hosts: otherwise the bridge takes the
            // lowest MAC of its ports, which changes as VM taps come and go, and the
            // other host's ARP entry goes stale (the way back then times out).
            let mac = lab::net::mac_for(addr);
            ip(&["-n", ns, "link", "set", "br0", "address", &mac]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "br0"]);
            ip(&["-n", ns, "link", "set", "br0", "up"]);
        }
        ip(&[
            "-n", NS_A, "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns",
            NS_B,
        ]);
        for (ns, veth) in [(NS_A, VETH_A), (NS_B, VETH_B)] {
            ip(&["-n", ns, "link", "set", veth, "master", "br0", "up"]);
        }
        TestLab
    }

    fn clean() {
        // del_netns kills what still runs inside (QEMUs), and the veth goes with the ns.
        lab::net::del_netns(NS_A);
        lab::net::del_netns(NS_B);
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        TestLab::clean();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("vm-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on a thread inside network namespace `ns` (sockets and processes it creates
/// belong there).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            lab::net::enter_netns(ns).unwrap();
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test creates network namespaces and taps: run it as root"
    );
}

/// The service in the guest: `corehop testsvc` (a TCP counter) when the project binary
/// is built, else the same protocol from busybox `nc` and a shell loop.
fn service(dir: &Path) -> (PathBuf, Vec<String>, Vec<(String, String)>) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("COREHOP_BIN").map(PathBuf::from),
        Some(manifest.join("../../target/debug/corehop")),
        Some(manifest.join("../../target/release/corehop")),
    ];
    if let Some(bin) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        println!("service: {} testsvc", bin.display());
        return (
            bin,
            vec![
                "testsvc".into(),
                "--tcp".into(),
                format!("0.0.0.0:{PORT}"),
                "--udp".into(),
                "0.0.0.0:7001".into(),
            ],
            Vec::new(),
        );
    }
    println!("service: busybox nc counter (no corehop binary found; set COREHOP_BIN)");
    let app = dir.join("app.sh");
    std::fs::write(
        &app,
        format!("#!/bin/sh\necho 0 >/tmp/count\nexec nc -ll -p {PORT} -e /bin/counter\n"),
    )
    .unwrap();
    let counter = dir.join("counter.sh");
    std::fs::write(
        &counter,
        "#!/bin/sh\nwhile read -r l; do case \"$l\" in inc*) n=$(( $(cat /tmp/count) + 1 )); echo $n >/tmp/count; echo $n ;; esac; done\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in [&app, &counter] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (
        app,
        Vec::new(),
        vec![(counter.display().to_string(), "/bin/counter".into())],
    )
}

/// One `inc` on a fresh connection, answered within `t`.
fn inc_once(t: Duration) -> std::io::Result<u64> {
    let addr = SocketAddr::from((VM_IP, PORT));
    let mut s = TcpStream::connect_timeout(&addr, t)?;
    s.set_read_timeout(Some(t))?;
    s.write_all(b"inc\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad answer {line:?}")))
}

/// What the client saw on its one connection.
#[derive(Debug, Default)]
struct ClientLog {
    /// (time of the answer, value)
    answers: Vec<(Instant, u64)>,
    error: Option<String>,
}

impl ClientLog {
    fn max_gap(&self) -> Duration {
        self.answers
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or_default()
    }
}

/// Sends `inc` every 10 ms on one connection until `stop`, checking each answer.
fn client(stop: Arc<AtomicBool>) -> ClientLog {
    let mut log = ClientLog::default();
    let addr = SocketAddr::from((VM_IP, PORT));
    let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            log.error = Some(format!("connect: {e}"));
            return log;
        }
    };
    // Generous: the connection must survive the stop-and-copy and TCP's retransmission.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = w.write_all(b"inc\n") {
            log.error = Some(format!("write: {e}"));
            break;
        }
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => {
                log.error = Some("connection closed".into());
                break;
            }
            Ok(_) => match line.trim().parse::<u64>() {
                Ok(v) => log.answers.push((Instant::now(), v)),
                Err(_) => {
                    log.error = Some(format!("bad answer {line:?}"));
                    break;
                }
            },
            Err(e) => {
                log.error = Some(format!("read: {e}"));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    log
}

fn caps_with(base: &HostCaps, f: impl FnOnce(&mut HostCaps)) -> HostCaps {
    let mut c = base.clone();
    f(&mut c);
    c
}

#[test]
fn vm_live_migration_keeps_tcp_connection_and_state() {
    require_root();
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = vm::guest_kernel().expect("guest kernel");
    let tmp = TempDir::new("mig");

    let (program, args, files) = service(&tmp.0);
    let t = Instant::now();
    let img = Image::build(
        &program,
        &args,
        &files,
        &vm::image::GuestSetup::default(),
        &tmp.0.join("initrd.gz"),
    )
    .unwrap();
    println!(
        "image: {} ({} KiB, {} files) built in {:.2?}",
        img.path.display(),
        img.size / 1024,
        img.files.len(),
        t.elapsed()
    );

    let _lab = TestLab::new();
    let spec = VmSpec {
        pid_dir: Some(tmp.0.join("pids-a")),
        ..VmSpec::new("svc", VM_IP, 24, &kernel, &img.path)
    };

    // A CPU model QEMU does not know fails at start with QEMU's own words.
    let bad = VmSpec {
        cpu_model: "nosuchcpu".into(),
        ..spec.clone()
    };
    let e = in_ns(NS_A, || Vm::start(&bad, &tmp.0.join("bad"))).unwrap_err();
    let msg = format!("{e:#}");
    println!("start with an unknown CPU model: {msg}");
    assert!(msg.contains("nosuchcpu"), "{msg}");

    let mut src = in_ns(NS_A, || Vm::start(&spec, &tmp.0.join("a"))).unwrap();
    let pid_file = tmp.0.join("pids-a/vm-svc.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        src.pid().to_string()
    );
    println!(
        "VM {} started (pid {}, accel {})",
        spec.name,
        src.pid(),
        src.accel()
    );

    // Boot: until the service answers from the other host.
    let (app_started, boot) = in_ns(NS_B, || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut app_started = None;
        loop {
            let console = std::fs::read(src.console_log()).unwrap_or_default();
            let console = String::from_utf8_lossy(&console);
            if app_started.is_none() && console.contains(vm::image::APP_STARTED) {
                app_started = Some(src.started_at().elapsed());
            }
            if inc_once(Duration::from_millis(500)).is_ok() {
                return (app_started, src.started_at().elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the service did not answer within 120 s; console: {console}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    println!(
        "boot: QEMU start -> /bin/app started {app_started:.2?} (guest uptime then {:.2?}); -> service answers {boot:.2?}",
        src.guest_boot_time()
    );
    // A second VM of the same name on the same host is refused (it would share the tap).
    let e = in_ns(NS_A, || Vm::start(&spec, &tmp.0.join("a2"))).unwrap_err();
    assert!(format!("{e:#}").contains("already running"), "{e:#}");

    // Table 2's network interruption: the link between the hosts dies during the copy;
    // the migration is cancelled at its deadline and the source runs on.
    let dst_spec = VmSpec {
        pid_dir: Some(tmp.0.join("pids-b")),
        ..spec.clone()
    };
    {
        let dst0 = in_ns(NS_B, || {
            Vm::start_incoming(
                &dst_spec,
                &tmp.0.join("b0"),
                SocketAddr::from((HOST_B, 4443)),
                None,
            )
        })
        .unwrap();
        let uri = dst0.incoming_uri().unwrap().to_string();
        let cutter = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            ip(&["-n", NS_A, "link", "set", VETH_A, "down"]);
        });
        let opts = MigrateOptions {
            max_bandwidth: 16 << 20,
            timeout: Duration::from_secs(3),
            ..MigrateOptions::default()
        };
        let e = vm::migrate_with(&mut src, &uri, &opts).unwrap_err();
        cutter.join().unwrap();
        ip(&["-n", NS_A, "link", "set", VETH_A, "up"]);
        println!("link cut during migration: {e}");
        assert!(matches!(e, MigrationError::Timeout { .. }), "{e:?}");
        assert_eq!(e.source_status(), Some("running"));
        assert!(src.status().unwrap().running);
        // The half-fed destination is dropped (killed) here.
    }
    in_ns(NS_B, || inc_once(Duration::from_secs(10))).expect("the service survives");

    let stop = Arc::new(AtomicBool::new(false));
    let client_thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            lab::net::enter_netns(NS_B).unwrap();
            client(stop)
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // A failed migration (nothing listens) leaves the source running.
    let e = vm::migrate(&mut src, &format!("tcp:{HOST_B}:4999"), 256 << 20).unwrap_err();
    println!("migration to nowhere: {e}");
    assert!(matches!(e, MigrationError::Failed { .. }), "{e:?}");
    assert_eq!(e.source_status(), Some("running"));
    assert!(src.status().unwrap().running);

    // The stream is mutual TLS with the agents' kind of keys: a destination refuses a
    // source in clear and one that is not the host it was told of, and the source runs on.
    let keys = tmp.0.join("tls");
    lab::pki::ensure(
        &keys,
        &[(NS_A, HOST_A.into()), (NS_B, HOST_B.into())],
        HOST_A.into(),
    )
    .unwrap();
    let tls = |who: &str, peer: &str| vm::StreamTls {
        keys: lab::pki::files_in(&keys, who),
        peer: peer.into(),
    };
    for (port, expects, sends) in [(4446, NS_A, None), (4447, "vmt-x", Some(tls(NS_A, NS_B)))] {
        let refusing = in_ns(NS_B, || {
            Vm::start_incoming(
                &dst_spec,
                &tmp.0.join(format!("b{port}")),
                SocketAddr::from((HOST_B, port)),
                Some(&tls(NS_B, expects)),
            )
        })
        .unwrap();
        let opts = MigrateOptions {
            tls: sends.clone(),
            timeout: Duration::from_secs(20),
            ..MigrateOptions::default()
        };
        let uri = refusing.incoming_uri().unwrap().to_string();
        let e = vm::migrate_with(&mut src, &uri, &opts).unwrap_err();
        println!(
            "TLS destination expecting {expects}, source with TLS {}: {e}",
            sends.is_some()
        );
        assert!(matches!(e, MigrationError::Failed { .. }), "{e:?}");
        assert_eq!(e.source_status(), Some("running"));
    }

    // The destination: the same machine, waiting for the state in vmt-b.
    let listen = SocketAddr::from((HOST_B, 4444));
    let mut dst = in_ns(NS_B, || {
        Vm::start_incoming(&dst_spec, &tmp.0.join("b"), listen, Some(&tls(NS_B, NS_A)))
    })
    .unwrap();
    assert_eq!(dst.status().unwrap().status, "inmigrate");
    let caps = HostCaps::of_vm(NS_B, &mut dst).unwrap();
    assert!(caps.cpu_models.iter().any(|m| m.name == "qemu64"));
    assert!(caps.cpu_expansions.contains_key("qemu64"));
    vm::pre_live_checks(&mut src, &caps).unwrap();

    // Pre-live checks (Table 2) reject what cannot work, naming it, before any copy.
    let little = caps_with(&caps, |c| c.mem_available = 200 << 20);
    let e = vm::pre_live_checks(&mut src, &little).unwrap_err();
    println!("pre-live, little memory: {e}");
    assert!(
        matches!(
            e,
            PreLiveError::NotEnoughMemory {
                need_mb: 384,
                available_mb: 200,
                ..
            }
        ),
        "{e:?}"
    );
    let no_model = caps_with(&caps, |c| c.cpu_models.retain(|m| m.name != "qemu64"));
    let e = vm::pre_live_checks(&mut src, &no_model).unwrap_err();
    println!("pre-live, unknown CPU model: {e}");
    assert!(matches!(e, PreLiveError::CpuModelUnknown { ref model, .. } if model == "qemu64"));
    assert!(e.to_string().contains("qemu64"));
    let unusable = caps_with(&caps, |c| {
        c.cpu_models = vec![CpuDefinition {
            name: "qemu64".into(),
            unavailable_features: Some(vec!["sse4.2".into()]),
            ..CpuDefinition::default()
        }]
    });
    let e = vm::pre_live_checks(&mut src, &unusable).unwrap_err();
    println!("pre-live, model unusable there: {e}");
    assert!(matches!(e, PreLiveError::CpuModelUnusable { .. }), "{e:?}");
    let other_family = caps_with(&caps, |c| {
        if let Some(p) = c.cpu_expansions.get_mut("qemu64") {
            p.insert("sse2".into(), false);
        }
    });
    let e = vm::pre_live_checks(&mut src, &other_family).unwrap_err();
    println!("pre-live, feature missing: {e}");
    assert!(
        matches!(e, PreLiveError::CpuFeaturesMissing { ref features, .. } if features == &["sse2".to_string()]),
        "{e:?}"
    );
    let old = caps_with(&caps, |c| c.qemu_version.major = 2);
    assert!(matches!(
        vm::pre_live_checks(&mut src, &old),
        Err(PreLiveError::QemuTooOld { .. })
    ));
    // A rejected migration starts nothing: the source runs, QEMU never began migrating.
    let e = vm::live_migrate(&mut src, &mut dst, &little, &MigrateOptions::default()).unwrap_err();
    assert!(matches!(e, MigrationError::PreLive(_)), "{e:?}");
    assert!(src.status().unwrap().running);
    assert_eq!(dst.status().unwrap().status, "inmigrate");

    // The live migration, sealed.
    let opts = MigrateOptions {
        max_bandwidth: 512 << 20,
        tls: Some(tls(NS_A, NS_B)),
        ..MigrateOptions::default()
    };
    let stats = vm::live_migrate(&mut src, &mut dst, &caps, &opts).unwrap();
    let migrated_at = Instant::now();
    println!(
        "migration stats:\n{}",
        serde_json::to_string_pretty(&stats).unwrap()
    );
    assert_eq!(stats.status, "completed");
    assert!(stats.total_time_ms > 0);
    assert!(stats.ram_transferred > 0);
    assert!(stats.ram_total >= spec.memory_mb << 20);
    assert!(stats.dirty_sync_count >= 1);
    assert!(stats.vm_ms > 0.0 && stats.live_ms > 0.0 && stats.post_ms > 0.0);
    assert!(dst.status().unwrap().running);
    assert_eq!(src.status().unwrap().status, "postmigrate");
    src.quit().unwrap();
    assert!(!pid_file.exists(), "quit removes the pid file");

    // And back to vmt-a in clear, with less bandwidth: a migrated VM moves like any other.
    std::thread::sleep(Duration::from_millis(500));
    let back_spec = VmSpec {
        pid_dir: Some(tmp.0.join("pids-a")),
        ..spec.clone()
    };
    let back_listen = SocketAddr::from((HOST_A, 4445));
    let mut back = in_ns(NS_A, || {
        Vm::start_incoming(&back_spec, &tmp.0.join("a-back"), back_listen, None)
    })
    .unwrap();
    let caps_a = HostCaps::of_vm(NS_A, &mut back).unwrap();
    let slow = MigrateOptions {
        max_bandwidth: 64 << 20,
        ..MigrateOptions::default()
    };
    let stats_back = vm::live_migrate(&mut dst, &mut back, &caps_a, &slow).unwrap();
    let migrated_back_at = Instant::now();
    for (what, s) in [("vmt-a -> vmt-b", &stats), ("vmt-b -> vmt-a", &stats_back)] {
        println!(
            "{what}: {} MiB/s max: Tvm {:.0} ms = Tpre {:.1} + Tl {:.0} + Tpost {:.1} (downtime {} ms, resume {:.1} ms); QEMU total {} ms; RAM {} of {} MiB sent, {} dirty syncs, {:.0} Mbit/s",
            s.max_bandwidth >> 20,
            s.vm_ms,
            s.pre_ms,
            s.live_ms,
            s.post_ms,
            s.downtime_ms,
            s.resume_ms.unwrap_or(0.0),
            s.total_time_ms,
            s.ram_transferred >> 20,
            s.ram_total >> 20,
            s.dirty_sync_count,
            s.mbps
        );
    }
    assert_eq!(stats_back.status, "completed");
    assert!(stats_back.ram_transferred > 0);
    assert!(back.status().unwrap().running);
    dst.quit().unwrap();

    // The same connection keeps answering, from vmt-b and then from vmt-a again.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let log = client_thread.join().unwrap();
    assert!(log.error.is_none(), "client: {:?}", log.error);
    let between = log
        .answers
        .iter()
        .filter(|(t, _)| *t > migrated_at && *t < migrated_back_at)
        .count();
    assert!(between > 10, "only {between} answers from vmt-b");
    let after = log
        .answers
        .iter()
        .filter(|(t, _)| *t > migrated_back_at)
        .count();
    assert!(after > 10, "only {after} answers after the way back");
    for w in log.answers.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "the counter must go on, step by step");
    }
    let last = log.answers.last().map(|a| a.1).unwrap_or(0);
    println!(
        "client: {} answers on one connection, counter {}..{}, longest gap {:.2?} (application-level downtime)",
        log.answers.len(),
        log.answers.first().map(|a| a.1).unwrap_or(0),
        last,
        log.max_gap()
    );
    // And a new connection from the other host sees the same counter.
    let v = in_ns(NS_B, || inc_once(Duration::from_secs(5))).unwrap();
    assert_eq!(v, last + 1);

    // A handle can be given up and taken again (an agent restarting), then quit.
    let pid = back.detach();
    let back_pid_file = tmp.0.join("pids-a/vm-svc.pid");
    assert!(back_pid_file.exists(), "a detached VM keeps its pid file");
    let mut back = Vm::attach(&back_spec, &tmp.0.join("a-back")).unwrap();
    assert_eq!(back.pid(), pid);
    assert_eq!(back.incoming_uri(), Some("tcp:10.231.0.1:4445"));
    assert!(back.status().unwrap().running);
    back.quit().unwrap();
    assert!(!back_pid_file.exists(), "quit removes the pid file");
    assert!(
        in_ns(NS_B, || inc_once(Duration::from_secs(1))).is_err(),
        "the service is gone with its VM"
    );
}
