//! Issue 2's acceptance: a stateful service migrates between two host namespaces with its
//! TCP connection and its counter intact; bad requests fail cleanly and leave it running.
mod common;
use common::*;
use std::time::Duration;

const SVC: &str = "10.77.1.100";

fn ps() -> Vec<serde_json::Value> {
    json(&ok(&["ps", "--json"])).as_array().unwrap().clone()
}

fn host_of(name: &str) -> String {
    ps().iter()
        .find(|c| c["name"] == name)
        .map(|c| c["host"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The service's counter; it must keep growing (state alive).
fn counter() -> u64 {
    svc_counter(SVC).expect("the service answers")
}

#[test]
fn testsvc_migrates_with_tcp_connection_and_state() {
    let _lab = Lab::up();
    ok(&[
        "run", "svc", "--host", "node-a", "--ip", SVC, "--", BIN, "testsvc",
    ]);
    assert_eq!(host_of("svc"), "node-a");
    let before = counter();

    // A client on another host holds one TCP connection through two migrations.
    let probe = on_host(
        "ran",
        &[
            "probe",
            "tcp",
            &format!("{SVC}:7000"),
            "--interval-ms",
            "10",
            "--duration",
            "6",
            "--json",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let r1 = json(&ok(&[
        "migrate",
        "svc",
        "--to",
        "node-b",
        "--method",
        "stop-and-copy",
        "--json",
    ]));
    let r2 = json(&ok(&["migrate", "svc", "--to", "node-a", "--json"]));
    let out = probe.wait_with_output().unwrap();
    let p = json(&String::from_utf8_lossy(&out.stdout));

    for (r, from, to) in [(&r1, "node-a", "node-b"), (&r2, "node-b", "node-a")] {
        assert_eq!(r["name"], "svc");
        assert_eq!(r["method"], "stop-and-copy");
        assert_eq!(
            (r["from"].as_str().unwrap(), r["to"].as_str().unwrap()),
            (from, to)
        );
        let ph = &r["phases"];
        let sum: f64 = ["checkpoint_ms", "transfer_ms", "network_ms", "restore_ms"]
            .iter()
            .map(|k| {
                ph[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("phase {k} missing in {r}"))
            })
            .sum();
        assert!(
            (sum - r["total_ms"].as_f64().unwrap()).abs() < 0.01,
            "total is the sum of phases: {r}"
        );
        assert!(r["downtime_ms"].as_f64().unwrap() > 0.0);
        assert!(
            r["image_bytes"].as_u64().unwrap() > 10_000,
            "a real CRIU image moved: {r}"
        );
    }
    assert_eq!(
        p["reconnects"], 0,
        "the TCP connection survived both migrations: {p}"
    );
    assert_eq!(
        p["counter_consecutive"], true,
        "no request lost or repeated: {p}"
    );
    assert_eq!(p["sent"], p["answered"], "every request answered: {p}");
    assert!(
        p["first_counter"].as_u64().unwrap() > before,
        "state carried over: {p}"
    );
    assert!(
        p["max_gap_ms"].as_f64().unwrap() > 20.0,
        "the probe saw the downtime: {p}"
    );
    assert_eq!(host_of("svc"), "node-a");
    // The image moved over the fabric, through the agents of each host.
    assert!(std::path::Path::new("/var/lib/corehop/hosts/node-a/containers/svc").exists());
    assert!(!std::path::Path::new("/var/lib/corehop/hosts/node-b/containers/svc").exists());
}

#[test]
fn bad_requests_fail_clearly_and_leave_the_source_running() {
    let _lab = Lab::up();
    ok(&[
        "run", "svc", "--host", "node-a", "--ip", SVC, "--", BIN, "testsvc",
    ]);
    let mut last = counter();
    let mut still_running = |what: &str| {
        assert_eq!(host_of("svc"), "node-a", "after {what}");
        let now = counter();
        assert!(
            now > last,
            "after {what}: counter went from {last} to {now}"
        );
        last = now;
    };

    let e = fails(&["migrate", "nosuch", "--to", "node-b"]);
    assert!(e.contains("no function named \"nosuch\""), "{e}");
    let e = fails(&["migrate", "svc", "--to", "node-z"]);
    assert!(e.contains("unknown host \"node-z\""), "{e}");
    let e = fails(&["migrate", "svc", "--to", "node-a"]);
    assert!(e.contains("already runs on node-a"), "{e}");
    let e = fails(&["migrate", "svc", "--to", "node-b", "--method", "teleport"]);
    assert!(e.contains("unknown method"), "{e}");
    let e = fails(&["migrate", "../etc", "--to", "node-b"]);
    assert!(e.contains("invalid container name"), "{e}");
    still_running("bad arguments");

    // Keys of another lab: every agent refuses us.
    let tls = std::path::Path::new("/run/corehop/tls");
    let other = std::env::temp_dir().join(format!("corehop-other-lab-{}", std::process::id()));
    let lo = std::net::Ipv4Addr::LOCALHOST.into();
    lab::pki::ensure(&other, &[], lo).unwrap();
    let ours: Vec<_> = ["controller.pem", "controller.key"]
        .iter()
        .map(|f| std::fs::read(tls.join(f)).unwrap())
        .collect();
    for f in ["controller.pem", "controller.key"] {
        std::fs::copy(other.join(f), tls.join(f)).unwrap();
    }
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    for (f, data) in ["controller.pem", "controller.key"].iter().zip(&ours) {
        std::fs::write(tls.join(f), data).unwrap();
    }
    let _ = std::fs::remove_dir_all(&other);
    assert!(e.contains("refused us"), "{e}");
    assert!(
        std::fs::read_to_string("/run/corehop/hosts/node-a/agent.log")
            .unwrap()
            .contains("refused: TLS handshake failed")
    );
    still_running("a stranger's keys");

    // Destination agent down.
    let pidfile = "/run/corehop/hosts/node-b/pids/agent.pid";
    let kill_agent = || {
        let pid = std::fs::read_to_string(pidfile).unwrap();
        std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    };
    kill_agent();
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    assert!(e.contains("not reachable"), "{e}");
    still_running("the destination agent down");

    // Destination without a working CRIU.
    let mut agent = std::process::Command::new(BIN)
        .args([
            "agent",
            "--host",
            "node-b",
            "--netns",
            "ch-node-b",
            "--listen",
            "10.77.0.12:7070",
        ])
        .args([
            "--ca",
            "/run/corehop/tls/ca.pem",
            "--cert",
            "/run/corehop/tls/node-b.pem",
            "--key",
            "/run/corehop/tls/node-b.key",
            "--criu",
            "/bin/false",
        ])
        .spawn()
        .unwrap();
    std::fs::write(pidfile, agent.id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let e = fails(&["migrate", "svc", "--to", "node-b"]);
    assert!(e.contains("node-b has no working CRIU"), "{e}");
    still_running("a destination without CRIU");

    // With the fault gone (`lab up` restarts missing agents), the same migration works.
    agent.kill().unwrap();
    agent.wait().unwrap();
    ok(&["lab", "up"]);
    ok(&["migrate", "svc", "--to", "node-b"]);
    assert_eq!(host_of("svc"), "node-b");
    assert!(counter() > last);
}

#[test]
fn lab_down_leaves_nothing_behind_and_is_idempotent() {
    let lab = Lab::up();
    // One container restored by CRIU (runc does not know it) and one started by runc.
    ok(&["run", "svc", "--host", "node-a", "--", BIN, "testsvc"]);
    ok(&["migrate", "svc", "--to", "node-b"]);
    ok(&["run", "svc2", "--host", "node-a", "--", BIN, "testsvc"]);
    ok(&["lab", "rate", "node-a", "100mbit"]);
    let st = json(&ok(&["lab", "status", "--json"]));
    assert_eq!(st[0]["rate"], "100Mbit", "{st}");
    // Twice, and with the lab's lock still held: dropping `lab` would let the next test
    // start its lab while this one looks for leftovers.
    ok(&["lab", "down"]);
    ok(&["lab", "down"]);
    let links = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        !links.contains("chfab0") && !links.contains("chh-"),
        "links left: {links}"
    );
    let ns = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        !ns.lines()
            .any(|l| l.starts_with("ch-") || l.starts_with("chc-")),
        "namespaces left: {ns}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("/run/corehop") && !mounts.contains("/var/lib/corehop"),
        "mounts left"
    );
    for ctrl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        assert!(
            !ctrl.path().join("corehop").exists(),
            "cgroup left in {}",
            ctrl.path().display()
        );
    }
    assert!(!std::path::Path::new("/run/corehop/hosts").exists());
    let procs = String::from_utf8_lossy(
        &std::process::Command::new("pgrep")
            .args(["-f", "corehop (agent|testsvc)"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(procs.trim().is_empty(), "processes left: {procs}");
    drop(lab);
}
