//! Attach benchmark: 100 UEs (RAN_BENCH_UES) against the real HSS, MME and SPGW in a
//! network namespace of its own, as in tests/e2e.rs. Prints the attach rate (UEs/s) and
//! the attach latency (Initial UE Message → Attach Complete) p50/p90/p99/max.
//!
//! `cargo bench -p ran --bench attach` (root). RAN_BENCH_CONCURRENCY sets how many UEs
//! attach at once (default: the config's 16). Under `cargo test --benches` it only says
//! how to run it, so test runs stay short.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("attach benchmark: run it with `cargo bench -p ran --bench attach` (as root)");
        return;
    }
    if !is_root() {
        eprintln!("attach benchmark skipped: it creates a network namespace, run it as root");
        return;
    }
    init_tracing();
    let n = env_usize("RAN_BENCH_UES", 100);
    let defaults = ran::Config::default();
    let concurrency = env_usize("RAN_BENCH_CONCURRENCY", defaults.attach_concurrency);
    let dir = TempDir::new("bench");
    let ns = Netns::new("bench");
    let report = ns.run(|| async {
        let _epc = start_epc(&dir.0).await;
        let cfg = ran::Config {
            attach_concurrency: concurrency,
            attach_timeout_ms: 30_000,
            duration_ms: Some(1000),
            ..ran_config(n)
        };
        ran::run(cfg, std::future::pending()).await
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("attach benchmark failed: {e:#}");
            std::process::exit(1);
        }
    };
    let mut lat: Vec<f64> = report.ues.iter().map(|u| u.attach_ms).collect();
    lat.sort_by(f64::total_cmp);
    let first_start = report
        .ues
        .iter()
        .map(|u| u.attached_at_ms - u.attach_ms)
        .fold(f64::INFINITY, f64::min);
    let last_done = report
        .ues
        .iter()
        .map(|u| u.attached_at_ms)
        .fold(0.0, f64::max);
    let span_s = (last_done - first_start) / 1e3;
    let pings_ok = report.ues.iter().filter(|u| u.pings_received > 0).count();
    let detached = report.ues.iter().filter(|u| u.detached).count();
    println!("attach benchmark: {n} UEs, concurrency {concurrency}");
    println!(
        "  attached {} / failed {} in {:.3} s: {:.1} UEs/s",
        report.ues.len(),
        report.attach_failures.len(),
        span_s,
        report.ues.len() as f64 / span_s
    );
    println!(
        "  attach latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  UEs with ping replies {pings_ok}, detached cleanly {detached}, S1 setups {}",
        report.s1_setups
    );
    for f in &report.attach_failures {
        println!("  failure {}: {:?} {}", f.imsi, f.kind, f.reason);
    }
    // Let the namespace go only after the runtime thread ended.
    std::thread::sleep(Duration::from_millis(10));
}
