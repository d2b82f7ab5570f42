//! Container PreCopy with real CRIU pre-dump rounds. This host's kernel has no soft-dirty
//! tracking, so the migration runs inside a QEMU guest whose kernel (setup-vm.sh's Debian
//! kernel) has it: the guest is a whole lab machine (corehop, runc, CRIU, iproute2, nft,
//! cgroups), where `corehop lab up`, `run` and `migrate --method pre-copy` run while a TCP
//! client on the `ran` host holds its connection. The guest's own lab touches none of the
//! host's namespaces, so no lab lock is taken; the VM lives in a network namespace of this
//! test's thread, gone with it.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Console lines of the guest script below.
const DONE: &str = "corehop-predump: done";
const FAILED: &str = "corehop-predump: failed";
/// Where the guest script leaves its results, read back through the guest agent.
const OUT: &str = "/run/predump";

/// The guest's program (its `/bin/app`): lab up, the test service on node-a, a TCP probe
/// from `ran` across the PreCopy migration to node-b. `$1` is the corehop binary, `$2`
/// iproute2's `ip` (busybox's shell runs its own applets before PATH, and its `ip` has no
/// `netns`).
const SCRIPT: &str = r#"#!/bin/sh
CH=$1
IP=$2
export PATH=@PATH@
out=@OUT@
mkdir -p $out
say() { echo "corehop-predump: $*"; }
# A failure shows what went wrong and the lab's logs on the console and ends the guest
# (init powers off).
fail() {
  for f in "$@" /run/corehop/hosts/*/agent.log /var/lib/corehop/hosts/*/containers/*/log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
  done
  for f in /var/lib/corehop/hosts/*/containers/*/work/*/*.log; do
    [ -f "$f" ] && grep -q Error "$f" && { echo "--- $f"; grep -B 12 Error "$f" | head -n 60; }
  done
  say "failed $(basename "$1")"
  exit 1
}
step() {
  name=$1; shift
  say "$name"
  "$@" >$out/$name.out 2>$out/$name.err || fail $out/$name.err
}
criu check --feature mem_dirty_track >$out/dirty_track.out 2>&1
echo $? >$out/dirty_track.rc
step lab-up $CH lab up
step run $CH run svc --host node-a --ip 10.77.1.100 -- $CH testsvc
n=0
until $IP netns exec ch-ran $CH probe tcp 10.77.1.100:7000 --duration 0.2 --json >/dev/null 2>$out/svc-ready; do
  n=$((n+1)); [ $n -lt 60 ] || fail $out/svc-ready
  sleep 0.5
done
$IP netns exec ch-ran $CH probe tcp 10.77.1.100:7000 --interval-ms 10 --duration 3600 --json \
  >$out/probe.json 2>$out/probe.err &
probe=$!
sleep 2
step migrate $CH migrate svc --to node-b --method pre-copy --json
# The probe saw the whole migration; SIGINT ends it with its report.
sleep 1
kill -INT $probe
wait $probe || fail $out/probe.err
step ps $CH ps --json
say done
exec sleep 100000
"#;

/// Runs `ip args...` in this thread's namespace; panics with its stderr.
fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The console, for failure messages: its last lines.
fn console_tail(path: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn pre_copy_runs_real_criu_pre_dumps_in_a_guest_with_dirty_tracking() {
    let started = Instant::now();
    let tmp = TempDir::new("predump-vm");
    // A network namespace of this thread only: the VM's tap needs a bridge to join, and
    // nothing of it may show in the host's namespaces. QEMU inherits it.
    // SAFETY: unshare affects only the calling thread.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    ip(&["link", "add", "br0", "type", "bridge"]);
    ip(&["link", "set", "br0", "up"]);

    let script = tmp.0.join("predump.sh");
    std::fs::write(
        &script,
        SCRIPT
            .replace("@PATH@", vm::labhost::GUEST_PATH)
            .replace("@OUT@", OUT),
    )
    .unwrap();
    let setup = vm::labhost::lab_host_setup(Path::new(BIN)).expect("lab host setup");
    let initrd = tmp.0.join("initrd.img");
    let ip_tool = vm::labhost::find_in_path("ip").expect("iproute2");
    let args = [BIN.to_string(), ip_tool.to_string_lossy().into_owned()];
    vm::Image::build(&script, &args, &[], &setup, &initrd).expect("guest image");
    let mut spec = vm::VmSpec::new(
        "predump",
        "192.168.231.2".parse().unwrap(),
        24,
        &vm::guest_kernel().expect("guest kernel"),
        &initrd,
    );
    spec.vcpus = 2;
    spec.memory_mb = 2048;
    let mut vm = vm::Vm::start(&spec, &tmp.0.join("run")).expect("QEMU starts");
    let console = vm.console_log();

    let deadline = Instant::now() + Duration::from_secs(360);
    loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
        if text.contains(DONE) {
            break;
        }
        assert!(
            !text.contains(FAILED) && vm.alive(),
            "the guest's script failed:\n{}",
            console_tail(&console)
        );
        assert!(
            Instant::now() < deadline,
            "the guest did not finish within 6 minutes:\n{}",
            console_tail(&console)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let read = |f: &str| {
        let b = vm::guest_agent::read_file(
            &vm.guest_agent_socket(),
            &format!("{OUT}/{f}"),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("guest file {f}: {e:#}"));
        String::from_utf8_lossy(&b).into_owned()
    };
    let dirty_rc = read("dirty_track.rc");
    let dirty_out = read("dirty_track.out");
    let r = json(&read("migrate.out"));
    let p = json(&read("probe.json"));
    let ps = json(&read("ps.out"));
    println!("criu check --feature mem_dirty_track: {}", dirty_out.trim());
    println!("migration: {r}");
    println!(
        "probe: sent {} answered {} reconnects {} consecutive {} max gap {} ms",
        p["sent"], p["answered"], p["reconnects"], p["counter_consecutive"], p["max_gap_ms"]
    );
    vm.quit().expect("QEMU quits");

    assert_eq!(
        dirty_rc.trim(),
        "0",
        "criu check --feature mem_dirty_track failed in the guest: {dirty_out}"
    );
    assert_eq!(r["method"], "pre-copy");
    assert_eq!(
        r["pre_copy"],
        migrate::PRE_COPY_CRIU,
        "real CRIU pre-dump rounds: {r}"
    );
    for k in [
        "pre_dump_ms",
        "pre_transfer_ms",
        "dump_ms",
        "dump_transfer_ms",
    ] {
        assert!(r["phases"][k].as_f64().is_some(), "phase {k} in {r}");
    }
    let sent: Vec<u64> = serde_json::from_value(r["round_bytes"].clone())
        .unwrap_or_else(|e| panic!("round_bytes ({e}): {r}"));
    let dumped: Vec<u64> = serde_json::from_value(r["dump_bytes"].clone())
        .unwrap_or_else(|e| panic!("dump_bytes ({e}): {r}"));
    assert_eq!((sent.len(), dumped.len()), (2, 2), "two rounds: {r}");
    assert!(
        sent[1] < sent[0],
        "the final round carries only what changed since the pre-dump: {r}"
    );
    assert!(
        sent[0] > 100_000,
        "the pre-dump round carried the memory: {r}"
    );
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("node-a"), Some("node-b"))
    );
    let svc = ps
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "svc"))
        .unwrap_or_else(|| panic!("svc in ps: {ps}"));
    assert_eq!(svc["host"], "node-b", "{ps}");
    assert_eq!(p["reconnects"], 0, "the TCP connection survived: {p}");
    assert_eq!(
        p["counter_consecutive"], true,
        "no request lost or repeated: {p}"
    );
    assert_eq!(p["sent"], p["answered"], "every request answered: {p}");
    // The probe ran across the freeze: its longest wait overlaps the migration's downtime
    // (one clock, the guest's).
    let longest = &p["gaps"]["longest"];
    let (start, end) = (
        longest["start_unix_ms"].as_u64().unwrap_or(u64::MAX),
        longest["end_unix_ms"].as_u64().unwrap_or(0),
    );
    let (frozen, resumed) = (
        r["frozen_unix_ms"].as_u64().unwrap(),
        r["resumed_unix_ms"].as_u64().unwrap(),
    );
    assert!(
        start <= resumed && end >= frozen,
        "the probe's longest gap {start}..{end} overlaps the downtime {frozen}..{resumed}"
    );
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
}
