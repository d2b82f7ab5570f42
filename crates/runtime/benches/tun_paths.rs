//! corehop's SPGW moved between two namespaces both ways its TUN file can travel (issue 13),
//! interleaved, and what each costs the SGi side:
//! - signal: it closes its TUN fd on SIGUSR1 before the dump and re-opens the device the
//!   runtime pre-created on SIGUSR2, queued at CRIU's network-unlock (the agent's
//!   `checkpoint_signals`); SGi is down from SIGUSR1 until it has re-opened;
//! - inherit: `release_tun_on_signal = false`; the dump records the device, the destination
//!   made it and its file ahead (runtime::tun) and CRIU hands the file back; SGi is down
//!   from the dump until the restore.
//!
//! Root; CRIU with scripts/criu/tun-external.patch:
//! `COREHOP_BIN=target/release/corehop [COREHOP_CRIU=...] [RUNS=5] cargo bench -p runtime --bench tun_paths`
#[path = "../tests/common/mod.rs"]
mod common;

use common::{dump, restore, Host};
use runtime::containers::signal_pid;
use runtime::ContainerSpec;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ID: &str = "spgw";
const CONFIG: &str = "/etc/corehop/spgw.toml";

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Signal,
    Inherit,
}

/// One migration's times, in ms from the moment SGi stops being served.
struct Run {
    /// Until the function let go of its TUN (signal; none for inherit).
    release: f64,
    /// Reading the TUN devices, which the dump does before it freezes (inherit; part of
    /// `dump`, shown apart).
    discover: f64,
    dump: f64,
    /// CRIU's own figures of the dump: seizing the tasks, and how long they stayed frozen.
    criu_freezing: f64,
    criu_frozen: f64,
    restore: f64,
    /// From the restore until the restored task holds its TUN file again.
    reattach: f64,
}

impl Run {
    fn outage(&self) -> f64 {
        self.release + self.dump + self.restore + self.reattach
    }
}

fn main() {
    let bin = PathBuf::from(std::env::var("COREHOP_BIN").unwrap_or_else(|_| {
        eprintln!("set COREHOP_BIN to a corehop binary (cargo build --release -p corehop)");
        std::process::exit(2)
    }));
    let criu = PathBuf::from(
        std::env::var("COREHOP_CRIU").unwrap_or_else(|_| "/usr/local/sbin/criu".into()),
    );
    if !runtime::tun::criu_restores_tun(&criu) {
        eprintln!(
            "{} lacks scripts/criu/tun-external.patch (make setup), or set COREHOP_CRIU",
            criu.display()
        );
        std::process::exit(2);
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut all: Vec<(Way, Run)> = Vec::new();
    println!(
        "path     release     dump (discover freezing frozen)  restore reattach   outage  (ms)"
    );
    for i in 0..runs {
        for path in [Way::Signal, Way::Inherit] {
            let r = once(&bin, &criu, path, i).unwrap_or_else(|e| panic!("run {i}: {e:#}"));
            println!(
                "{:<8} {:>7.1} {:>8.1} {:>10.2} {:>8.1} {:>6.1} {:>8.1} {:>8.1} {:>8.1}",
                name(path),
                r.release,
                r.dump,
                r.discover,
                r.criu_freezing,
                r.criu_frozen,
                r.restore,
                r.reattach,
                r.outage()
            );
            all.push((path, r));
        }
    }
    for path in [Way::Signal, Way::Inherit] {
        let mut o: Vec<f64> = all
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, r)| r.outage())
            .collect();
        o.sort_by(f64::total_cmp);
        println!(
            "{:<8} SGi outage median {:.1} ms (min {:.1}, max {:.1}, {} runs)",
            name(path),
            o[o.len() / 2],
            o[0],
            o[o.len() - 1],
            o.len()
        );
    }
}

fn name(p: Way) -> &'static str {
    match p {
        Way::Signal => "signal",
        Way::Inherit => "inherit",
    }
}

fn spec(bin: &Path, path: Way) -> ContainerSpec {
    let mut s = ContainerSpec::new(
        ID,
        bin.into(),
        ["nf", "run", ID, "--config", CONFIG]
            .map(String::from)
            .to_vec(),
        "10.77.1.30".parse().unwrap(),
        16,
        "small",
    )
    .unwrap();
    let config = match path {
        Way::Signal => "",
        Way::Inherit => "release_tun_on_signal = false\n",
    };
    s.files = vec![(CONFIG.into(), config.into())];
    s.tun = true;
    s.caps = vec!["CAP_NET_ADMIN".into()];
    s.sgi = Some(runtime::sgi::SgiSpec {
        name: "sgi0".into(),
        address: "10.45.0.1/16".into(),
        mtu: 1400,
    });
    if path == Way::Signal {
        s.checkpoint_signals = Some(("USR1".into(), "USR2".into()));
    }
    s
}

/// Polls (as the agent does) until `pid` holds a TUN file or not.
fn await_tun(pid: i64, held: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while runtime::tun::tun_fds(pid).is_empty() == held {
        anyhow::ensure!(
            Instant::now() < deadline,
            "TUN file of {pid} not {held} within 3 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn once(bin: &Path, criu: &Path, path: Way, i: usize) -> anyhow::Result<Run> {
    let spec = spec(bin, path);
    let sgi = spec.sgi.clone().unwrap();
    let tag = format!("{}{i}", &name(path)[..1]);
    let src = Host::new(ID, &format!("{tag}s"), criu);
    let dst = Host::new(ID, &format!("{tag}d"), criu);
    src.prepare(&spec);
    runtime::sgi::init(&src.netns, &sgi)?;
    src.runc.run(ID, &src.bundle(), &src.dir.join("log"))?;
    let pid = src.pid();
    await_tun(pid, true)?;
    // The destination as the agent prepares it: the SGi device, and for the inherit path
    // the TUN devices the source reports and their files.
    dst.prepare(&spec);
    runtime::sgi::init(&dst.netns, &sgi)?;
    let tuns = match path {
        Way::Signal => vec![],
        Way::Inherit => src.containers.tun_devices(ID, &src.netns_path())?,
    };
    let warm = dst.warm_restore(&tuns);
    let swrk = src.containers.warm_dump()?;
    let images = src.dir.join("images");

    let t = Instant::now();
    src.containers.tun_devices(ID, &src.netns_path())?;
    let discover = if path == Way::Inherit { ms(t) } else { 0.0 };
    let t = Instant::now();
    if path == Way::Signal {
        signal_pid(pid, "USR1")?;
        await_tun(pid, false)?;
    }
    let release = ms(t);
    let t = Instant::now();
    dump(&src, &spec, &images, swrk)?;
    let dump_ms = ms(t);
    let criu = runtime::criu_stats::read_dump(&src.dir.join("work-dump"))?;
    let t = Instant::now();
    let mut restored = 0;
    let pid = restore(&dst, &spec, &images, warm, |script, p| {
        match script {
            "post-restore" => restored = p,
            "network-unlock" if path == Way::Signal => signal_pid(restored.into(), "USR2")?,
            _ => {}
        }
        Ok(())
    })?;
    let restore_ms = ms(t);
    let t = Instant::now();
    await_tun(pid, true)?;
    Ok(Run {
        release,
        discover,
        dump: dump_ms,
        criu_freezing: criu.freezing_ms,
        criu_frozen: criu.frozen_ms,
        restore: restore_ms,
        reattach: ms(t),
    })
}
