//! Issue 7's failure handling (the paper's Table 1): each fault is injected into a real
//! migration; it must end with a clear error naming the failed phase, the function running
//! at the source from its frozen point (the client's TCP connection and counter intact),
//! and a retry that succeeds once the fault is gone.
mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SVC: &str = "10.77.1.100";

/// A client on host `ran` holding one TCP connection to the service for the whole test.
fn client(secs: u32) -> Child {
    on_host(
        "ran",
        &[
            "probe",
            "tcp",
            &format!("{SVC}:7000"),
            "--interval-ms",
            "20",
            "--duration",
            &secs.to_string(),
            "--json",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap()
}

/// The client's verdict: it never reconnected and the counter never skipped or repeated.
fn client_kept_state(c: Child) {
    let out = c.wait_with_output().unwrap();
    let p = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(p["reconnects"], 0, "the TCP connection survived: {p}");
    assert_eq!(
        p["counter_consecutive"], true,
        "state resumed from the frozen point: {p}"
    );
    assert!(p["answered"].as_u64().unwrap() > 10, "{p}");
}

fn start_svc() -> Child {
    ok(&[
        "run", "svc", "--host", "node-a", "--ip", SVC, "--", BIN, "testsvc",
    ]);
    let c = client(40);
    std::thread::sleep(Duration::from_millis(500));
    c
}

/// Waits until `path` exists, then calls `f`: CRIU (started ahead by the agent) creates its
/// log the moment it takes a dump or restore request.
fn when_exists(
    path: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::path::Path::new(path).exists() {
                f();
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    })
}

fn kill_agent(host: &str) {
    let pid = std::fs::read_to_string(format!("/run/corehop/hosts/{host}/pids/agent.pid")).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
}

fn svc_runs_on(host: &str) {
    let c = containers();
    let svc: Vec<_> = c
        .iter()
        .filter(|c| c["name"] == "svc" && c["state"] == "running")
        .collect();
    assert_eq!(svc.len(), 1, "svc runs exactly once: {c:?}");
    assert_eq!(svc[0]["host"], host, "{c:?}");
}

#[test]
fn destination_disk_full() {
    let _lab = Lab::up();
    let c = start_svc();
    let images = "/var/lib/corehop/hosts/node-b/containers/svc/images";
    std::fs::create_dir_all(images).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs", images])
        .status()
        .unwrap()
        .success());
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    let _ = Command::new("umount").arg(images).status();
    assert!(
        e.contains("failed in phase transfer") && e.contains("svc is running again on node-a"),
        "{e}"
    );
    assert!(
        e.contains("disk full") || e.contains("No space left"),
        "{e}"
    );
    svc_runs_on("node-a");
    ok(&["migrate", "svc", "--to", "node-b"]);
    svc_runs_on("node-b");
    client_kept_state(c);
}

#[test]
fn rootfs_mismatch_is_refused_before_the_source_stops() {
    let _lab = Lab::up();
    let tmp = TempDir::new("rootfs");
    let app = tmp.0.join("app");
    std::fs::copy(BIN, &app).unwrap();
    ok(&[
        "run",
        "svc",
        "--host",
        "node-a",
        "--ip",
        SVC,
        "--",
        app.to_str().unwrap(),
        "testsvc",
    ]);
    let c = client(20);
    std::thread::sleep(Duration::from_millis(500));
    // The destination would build its rootfs from a program that changed meanwhile.
    let original = std::fs::read(&app).unwrap();
    std::fs::write(&app, [original.as_slice(), b"\0"].concat()).unwrap();
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    assert!(e.contains("rootfs of svc on node-b differs"), "{e}");
    svc_runs_on("node-a");
    std::fs::write(&app, &original).unwrap();
    ok(&["migrate", "svc", "--to", "node-b"]);
    svc_runs_on("node-b");
    client_kept_state(c);
}

#[test]
fn destination_link_cut_while_it_is_prepared() {
    let _lab = Lab::up();
    let c = start_svc();
    // 0.05 s in, the destination is being prepared: its answer sits in its send queue, and
    // only the connections' bound on a silent peer ends the controller's wait.
    let cutter = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(50));
        link("chh-node-b", "down");
    });
    let t = Instant::now();
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    let took = t.elapsed();
    cutter.join().unwrap();
    link("chh-node-b", "up");
    assert!(took < Duration::from_secs(15), "took {took:?}: {e}");
    assert!(e.contains("node-b"), "{e}");
    svc_runs_on("node-a");
    ok(&["migrate", "svc", "--to", "node-b"]);
    svc_runs_on("node-b");
    client_kept_state(c);
}

fn link(dev: &str, state: &str) {
    assert!(Command::new("ip")
        .args(["link", "set", dev, state])
        .status()
        .unwrap()
        .success());
}

#[test]
fn network_cut_during_the_transfer() {
    let _lab = Lab::up();
    let c = start_svc();
    // A slow link makes the transfer last; the link is cut once the checkpoint is done.
    ok(&["lab", "rate", "node-b", "2mbit"]);
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            // CRIU writes its statistics once the dump is done.
            if Path::new("/var/lib/corehop/hosts/node-a/containers/svc/work/final/stats-dump")
                .exists()
            {
                Command::new("ip")
                    .args(["link", "set", "chh-node-b", "down"])
                    .status()
                    .unwrap();
                flag.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    watcher.join().unwrap();
    assert!(cut.load(Ordering::SeqCst), "the link was cut");
    assert!(
        e.contains("failed in phase transfer") && e.contains("svc is running again on node-a"),
        "{e}"
    );
    svc_runs_on("node-a");
    Command::new("ip")
        .args(["link", "set", "chh-node-b", "up"])
        .status()
        .unwrap();
    ok(&["lab", "rate", "node-b", "none"]);
    ok(&["migrate", "svc", "--to", "node-b"]);
    svc_runs_on("node-b");
    client_kept_state(c);
}

#[test]
fn destination_agent_killed_mid_restore() {
    let _lab = Lab::up();
    let c = start_svc();
    let killer = when_exists(
        "/var/lib/corehop/hosts/node-b/containers/svc/work/restore-final/restore.log",
        || kill_agent("node-b"),
    );
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    assert!(killer.join().unwrap(), "the restore was caught");
    assert!(
        e.contains("failed in phase restore") && e.contains("svc is running again on node-a"),
        "{e}"
    );
    // The restarted agent fences what the interrupted restore left behind.
    ok(&["lab", "up"]);
    let log = std::fs::read_to_string("/run/corehop/hosts/node-b/agent.log").unwrap();
    assert!(
        log.contains("svc: its restore here was interrupted"),
        "{log}"
    );
    svc_runs_on("node-a");
    ok(&["migrate", "svc", "--to", "node-b"]);
    svc_runs_on("node-b");
    client_kept_state(c);
}

#[test]
fn source_agent_killed_mid_checkpoint() {
    let _lab = Lab::up();
    let c = start_svc();
    let killer = when_exists(
        "/var/lib/corehop/hosts/node-a/containers/svc/work/final/dump.log",
        || kill_agent("node-a"),
    );
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    assert!(killer.join().unwrap(), "the checkpoint was caught");
    // The controller cannot know whether the dump finished without its agent (here CRIU's
    // next notification finds no agent and CRIU aborts, leaving the function running with
    // its link down): the error says how to bring it back, and `recover` finds whichever
    // state it is in and makes it reachable.
    assert!(
        e.contains("failed in phase checkpoint") && e.contains("ROLLBACK FAILED"),
        "{e}"
    );
    assert!(
        e.contains("corehop recover svc --on node-a --round final"),
        "{e}"
    );
    ok(&["lab", "up"]);
    ok(&["recover", "svc", "--on", "node-a", "--round", "final"]);
    svc_runs_on("node-a");
    ok(&["migrate", "svc", "--to", "node-b"]);
    svc_runs_on("node-b");
    client_kept_state(c);
}

/// Starts `corehop migrate svc` with `method` and returns it once it logs that `step`
/// begins: the controller to stop or kill there.
fn controller_at(to: &str, method: &str, step: &str) -> Child {
    use std::io::BufRead;
    let mut c = Command::new(BIN)
        .args(["migrate", "svc", "--to", to, "--method", method])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let want = format!("svc: step {step} begins");
    let stderr = std::io::BufReader::new(c.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // Drained to the end, so that the controller never blocks on its log.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains(&want) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = c.kill();
        let _ = c.wait();
        panic!("the controller ended before step {step}");
    }
    c
}

fn signal(c: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &c.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// A controller killed at any step of a migration leaves its journal at the source, and
/// `migrate --resume` settles it, finished or rolled back, with the client's connection
/// intact; while a controller lives (here stopped), a second one is refused.
#[test]
fn a_killed_controller_is_settled_by_resume_and_a_second_one_is_refused() {
    let _lab = Lab::up();
    let c = start_svc();
    let mut at = "node-a";
    let mut first = controller_at("node-b", "stop-and-copy", "prepare");
    signal(&first, "-STOP");
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    assert!(
        e.contains("svc is being migrated to node-b (stop-and-copy) by another controller"),
        "{e}"
    );
    let e = fails(&["migrate", "svc", "--resume"]);
    assert!(e.contains("still alive"), "{e}");
    signal(&first, "-KILL");
    first.wait().unwrap();
    let steps: &[(&str, &[&str])] = &[
        (
            "stop-and-copy",
            &["prepare", "checkpoint", "transfer", "restore"],
        ),
        ("pre-copy", &["pre_dump", "dump", "dump_transfer"]),
        ("post-copy", &["checkpoint", "restore"]),
    ];
    let mut settled = vec![];
    for (method, steps) in steps {
        for step in *steps {
            // The first kill was at stop-and-copy's prepare, already done above.
            let to = if at == "node-a" { "node-b" } else { "node-a" };
            if (*method, *step) != ("stop-and-copy", "prepare") {
                let mut ctl = controller_at(to, method, step);
                signal(&ctl, "-KILL");
                ctl.wait().unwrap();
            }
            let out = ok(&["migrate", "svc", "--resume"]);
            if out.contains("finished") {
                at = to;
            } else {
                assert!(
                    out.contains(&format!("rolled back: it runs on {at}")),
                    "{out}"
                );
            }
            svc_runs_on(at);
            settled.push(format!("{method} {step}: {}", out.trim()));
            // Settled: no journal left, and a new migration is not refused.
            let e = fails(&["migrate", "svc", "--resume"]);
            assert!(e.contains("no interrupted migration"), "{e}");
        }
    }
    eprintln!("{}", settled.join("\n"));
    let to = if at == "node-a" { "node-b" } else { "node-a" };
    ok(&["migrate", "svc", "--to", to]);
    svc_runs_on(to);
    client_kept_state(c);
}
