//! Issue 7, the paper's Table 2: a VM migration whose destination cannot take the VM (too
//! little memory, a CPU model its processors lack) is refused in the pre-live phase, with
//! the VM still serving at the source, and succeeds once the destination is fixed.
mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const SVC: &str = "10.77.1.100";

/// Restarts a host's agent as `lab up` would, without the capacity limits of the lab file.
fn restart_agent_unlimited(host: &str, addr: &str) -> std::process::Child {
    let pidfile = format!("/run/corehop/hosts/{host}/pids/agent.pid");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let child = Command::new(BIN)
        .args([
            "agent",
            "--host",
            host,
            "--netns",
            &format!("ch-{host}"),
            "--listen",
            &format!("{addr}:7070"),
        ])
        .args(["--ca", "/run/corehop/tls/ca.pem"])
        .args(["--cert", &format!("/run/corehop/tls/{host}.pem")])
        .args(["--key", &format!("/run/corehop/tls/{host}.key")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(&pidfile, child.id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    child
}

#[test]
fn pre_live_checks_refuse_a_destination_that_cannot_take_the_vm() {
    let tmp = TempDir::new("prelive");
    let labfile = tmp.0.join("lab.toml");
    std::fs::write(
        &labfile,
        "[[host]]\nname = \"node-a\"\naddr = \"10.77.0.11\"\n\
         [[host]]\nname = \"node-b\"\naddr = \"10.77.0.12\"\nmemory_mb = 64\n\
         [[host]]\nname = \"node-c\"\naddr = \"10.77.0.13\"\ncpu_models = [\"Nehalem\"]\n\
         [[host]]\nname = \"ran\"\naddr = \"10.77.0.21\"\n\
         [[host]]\nname = \"pdn\"\naddr = \"10.77.0.31\"\n",
    )
    .unwrap();
    let _lab = Lab::up_with(&labfile);
    ok(&[
        "run",
        "vsvc",
        "--host",
        "node-a",
        "--runtime",
        "vm",
        "--ip",
        SVC,
        "--",
        BIN,
        "testsvc",
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = loop {
        if let Some(c) = svc_counter(SVC) {
            break c;
        }
        assert!(Instant::now() < deadline, "the VM did not come up");
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut still_serving = |what: &str| {
        let now = svc_counter(SVC).unwrap_or_else(|| panic!("the VM stopped serving after {what}"));
        assert!(now > last, "after {what}: {now} <= {last}");
        last = now;
        let c = containers();
        assert!(
            c.iter()
                .any(|c| c["name"] == "vsvc" && c["host"] == "node-a"),
            "{c:?}"
        );
    };

    let e = fails(&["migrate", "vsvc", "--to", "node-b"]);
    assert!(
        e.contains("phase pre_live") && e.contains("but node-b has only 64 MB available"),
        "{e}"
    );
    still_serving("a destination with too little memory");
    let e = fails(&["migrate", "vsvc", "--to", "node-c"]);
    assert!(e.contains("phase pre_live") && e.contains("qemu64"), "{e}");
    still_serving("a destination without the VM's CPU model");

    // The faults gone (the destinations' agents without the limits), both work.
    let mut b = restart_agent_unlimited("node-b", "10.77.0.12");
    let mut c = restart_agent_unlimited("node-c", "10.77.0.13");
    let r = json(&ok(&["migrate", "vsvc", "--to", "node-b", "--json"]));
    assert_eq!(r["method"], "vm-pre-copy", "{r}");
    let r = json(&ok(&["migrate", "vsvc", "--to", "node-c", "--json"]));
    assert_eq!(r["to"], "node-c", "{r}");
    let now = svc_counter(SVC).expect("the VM serves at node-c");
    assert!(now > last);
    for a in [&mut b, &mut c] {
        let _ = a.kill();
        let _ = a.wait();
    }
}
