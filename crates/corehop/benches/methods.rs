//! The four migration methods side by side on the test service (a TCP/UDP counter): N
//! migrations each (default 3; `COREHOP_BENCH_RUNS=N` or a number argument), back and forth
//! between node-a and node-b, then a table of mean downtime, total migration time and bytes
//! moved, with each method's ratio to VM PreCopy measured in the same run. Needs root, the
//! lab's setup (`make setup`, `scripts/setup-vm.sh`); it waits for lab tests to finish:
//! `cargo bench -p corehop --bench methods`.
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_corehop");

fn corehop(args: &[&str]) -> Result<String, String> {
    let o = Command::new(BIN)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run corehop: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "corehop {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The lab, torn down when the bench ends, also on failure.
struct Lab;

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = corehop(&["lab", "down"]);
    }
}

struct Row {
    method: &'static str,
    downtime: Vec<f64>,
    total: Vec<f64>,
    bytes: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| std::env::var("COREHOP_BENCH_RUNS").ok()?.parse().ok())
        .unwrap_or(3);
    if runs == 0 {
        return Err("the number of runs must be at least 1".into());
    }
    // The lab is machine-wide: wait for the tests (which hold this lock) to finish.
    let lock = std::fs::File::create("/run/lock/corehop-lab-tests.lock")
        .map_err(|e| format!("cannot open the lab lock: {e}"))?;
    // SAFETY: flock on an fd we own; released when `lock` closes at the end.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err("cannot lock the lab".into());
    }
    corehop(&["lab", "down"])?;
    corehop(&["lab", "up"])?;
    let _lab = Lab;
    // The same program as a container and as a VM, each with its own service IP.
    let svc = ["svc", "10.77.1.100", "container"];
    let vsvc = ["vsvc", "10.77.1.101", "vm"];
    for [name, ip, rt] in [svc, vsvc] {
        corehop(&[
            "run",
            name,
            "--host",
            "node-a",
            "--ip",
            ip,
            "--runtime",
            rt,
            "--",
            BIN,
            "testsvc",
        ])?;
    }
    // Let the guest boot before its first migration.
    std::thread::sleep(std::time::Duration::from_secs(10));
    let mut rows = vec![];
    for (method, name) in [
        ("vm-pre-copy", vsvc[0]),
        ("stop-and-copy", svc[0]),
        ("pre-copy", svc[0]),
        ("post-copy", svc[0]),
    ] {
        let mut row = Row {
            method,
            downtime: vec![],
            total: vec![],
            bytes: vec![],
        };
        for i in 0..runs {
            let json = corehop(&[
                "migrate", name, "--to", "node-b", "--method", method, "--json",
            ])
            .and_then(|_| {
                // Measured on the way back, so every run starts from node-a's state.
                corehop(&[
                    "migrate", name, "--to", "node-a", "--method", method, "--json",
                ])
            })?;
            let r: serde_json::Value =
                serde_json::from_str(json.trim()).map_err(|e| format!("bad report: {e}"))?;
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            eprintln!("{method} run {}: {}", i + 1, r);
            row.downtime.push(f("downtime_ms"));
            row.total.push(f("total_ms"));
            row.bytes.push(f("image_bytes"));
        }
        rows.push(row);
    }
    let vm_down = mean(&rows[0].downtime);
    let vm_total = mean(&rows[0].total);
    println!("\n{runs} runs each, testsvc, node-a <-> node-b (ratios: method / VM PreCopy)");
    println!(
        "{:<14} {:>13} {:>10} {:>13} {:>10} {:>14}",
        "method", "downtime ms", "vs VM", "total ms", "vs VM", "bytes"
    );
    for r in &rows {
        let (d, t) = (mean(&r.downtime), mean(&r.total));
        println!(
            "{:<14} {:>13.1} {:>10.3} {:>13.1} {:>10.3} {:>14.0}",
            r.method,
            d,
            d / vm_down,
            t,
            t / vm_total,
            mean(&r.bytes)
        );
    }
    Ok(())
}
