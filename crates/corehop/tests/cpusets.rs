//! Issue 15, for the paper's Fig. 12: lab hosts on CPUs of their own, so that load on the
//! source is not load on the destination. A lab file gives node-a CPU 0 and node-b CPU 1;
//! each agent, the functions it starts and the ones it restores run on its host's CPUs
//! only, before and after a migration each way.
mod common;
use common::*;

/// The CPUs `pid` may run on, as the kernel lists them.
fn allowed(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

fn pid_of(name: &str) -> i64 {
    containers()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["pid"].as_i64())
        .unwrap_or_else(|| panic!("{name} is not running"))
}

#[test]
fn hosts_with_cpusets_keep_their_agents_and_functions_on_their_cpus() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: two hosts on CPUs of their own need a machine with two CPUs");
        return;
    }
    let tmp = TempDir::new("cpusets");
    let labfile = tmp.0.join("lab.toml");
    std::fs::write(
        &labfile,
        "[[host]]\nname = \"node-a\"\naddr = \"10.77.0.11\"\ncpus = \"0\"\n\
         [[host]]\nname = \"node-b\"\naddr = \"10.77.0.12\"\ncpus = \"1\"\n\
         [[host]]\nname = \"ran\"\naddr = \"10.77.0.21\"\n\
         [[host]]\nname = \"pdn\"\naddr = \"10.77.0.31\"\n",
    )
    .unwrap();
    let _lab = Lab::up_with(&labfile);
    for (host, cpus) in [("node-a", "0"), ("node-b", "1")] {
        let pid: i64 = std::fs::read_to_string(lab::paths::agent_pidfile(host))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(allowed(pid), cpus, "{host}'s agent");
    }
    ok(&["run", "svc", "--host", "node-a", "--", BIN, "testsvc"]);
    assert_eq!(allowed(pid_of("svc")), "0", "started on node-a");
    for (to, method, cpus) in [
        ("node-b", "stop-and-copy", "1"),
        ("node-a", "pre-copy", "0"),
    ] {
        ok(&["migrate", "svc", "--to", to, "--method", method]);
        assert_eq!(host_of("svc"), to);
        assert_eq!(allowed(pid_of("svc")), cpus, "restored by {method} on {to}");
    }
}
