//! `corehop hss ...` (the subscriber database) and `corehop ran` (the eNB and UE emulator).
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum HssCmd {
    /// Add one subscriber.
    Add {
        #[arg(long)]
        imsi: String,
        /// K, 32 hex digits.
        #[arg(long)]
        k: String,
        /// OPc, 32 hex digits.
        #[arg(long)]
        opc: String,
        #[arg(long, default_value = "8000")]
        amf: String,
        #[arg(long, default_value = "0")]
        sqn: String,
        #[arg(long)]
        msisdn: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// List subscribers (IMSI, AMF, SQN, MSISDN; keys are not printed).
    List {
        #[command(flatten)]
        db: Db,
    },
    /// Import subscribers from a CSV file (imsi,k,opc,amf,sqn[,msisdn]); all or nothing.
    Import {
        file: PathBuf,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Args)]
pub struct Db {
    /// The SQLite database; default: the one of the running `hss` container.
    #[arg(long)]
    db: Option<PathBuf>,
}

impl Db {
    fn open(&self) -> Result<hss::Store> {
        let path = match &self.db {
            Some(p) => p.clone(),
            None => running_hss_db()?,
        };
        hss::Store::open(&path)
            .with_context(|| format!("cannot open subscriber database {}", path.display()))
    }
}

/// The database lives on the HSS container's tmpfs. SQLite resolves symlinks, so a
/// /proc/PID/root path would lead it back to the host's own /var: instead this process
/// (single-threaded here) joins the container's mount namespace and reads the HSS's config.
fn running_hss_db() -> Result<PathBuf> {
    let spec = lab::current().context("no --db given and no lab is up")?;
    let pid = spec
        .hosts
        .iter()
        .filter_map(|h| crate::cmd::client(&spec, &h.name).and_then(|mut c| c.ps()).ok())
        .flatten()
        .find(|c| c.name == "hss" && c.state == "running")
        .and_then(|c| c.pid)
        .context("no --db given and no running hss container (start one with `corehop nf start hss --host node-a`)")?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    // SAFETY: setns on a valid namespace fd; no other thread exists yet.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot enter the hss container");
    }
    let cfg = hss::Config::load(Path::new(&crate::nf::Nf::Hss.config_path()))?;
    Ok(cfg.db_path)
}

pub fn hss(c: HssCmd, json: bool) -> Result<()> {
    match c {
        HssCmd::Add {
            imsi,
            k,
            opc,
            amf,
            sqn,
            msisdn,
            db,
        } => {
            let sub = hss::Subscriber::parse(&imsi, &k, &opc, &amf, &sqn, msisdn.as_deref())?;
            db.open()?.add(&sub)?;
            println!("added {imsi}");
        }
        HssCmd::Import { file, db } => {
            let n = db.open()?.import_csv(&file)?;
            println!("imported {n} subscribers from {}", file.display());
        }
        HssCmd::List { db } => {
            let subs = db.open()?.list()?;
            if json {
                let rows: Vec<_> = subs
                    .iter()
                    .map(|s| serde_json::json!({"imsi": s.imsi, "amf": hss::store::hex(&s.amf), "sqn": s.sqn, "msisdn": s.msisdn}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<16} {:<5} {:>14} msisdn", "imsi", "amf", "sqn");
                for s in subs {
                    println!(
                        "{:<16} {:<5} {:>14} {}",
                        s.imsi,
                        hss::store::hex(&s.amf),
                        s.sqn,
                        s.msisdn.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct RanArgs {
    /// Lab host the eNB runs on.
    #[arg(long, default_value = "ran")]
    host: String,
    /// Run the eNB where this process is, outside any lab (a guest, a real machine): the
    /// --config file gives its addresses and --subscribers its USIMs.
    #[arg(long, conflicts_with_all = ["host", "downlink_from"], requires_all = ["config", "subscribers"])]
    here: bool,
    /// RAN config (TOML: `[[enbs]]`, timers, ...); the other flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of UEs [default: 1].
    #[arg(long)]
    ues: Option<usize>,
    /// Where UEs ping through their tunnels (default: the pdn host).
    #[arg(long)]
    ping: Option<Ipv4Addr>,
    /// Interval between a UE's pings, ms [default: 100].
    #[arg(long)]
    ping_interval_ms: Option<u64>,
    /// Seconds to run after attaching (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// USIMs (CSV as the HSS imports); default: the HSS's 1000 test subscribers.
    #[arg(long)]
    subscribers: Option<PathBuf>,
    /// Row of the first UE in the subscriber list.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Control-plane probe (S1AP round trip) interval, ms; 0 disables it [default: 100].
    #[arg(long)]
    cp_probe_ms: Option<u64>,
    /// Release a UE to ECM-IDLE after this long without signalling, ms; its next ping (or
    /// a paging for its downlink) brings it back with a Service Request. Default: never.
    #[arg(long)]
    idle_after_ms: Option<u64>,
    /// The UEs' traffic model: `static` (attach, ping, detach at the end), `mixed`
    /// (idle/active cycles, paging, TAU, handovers, re-attach), or a TOML model file.
    #[arg(long, value_name = "NAME|FILE")]
    traffic: Option<String>,
    /// Seed of the traffic model's random times (same seed, same plan) [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Lab host whose namespace sends downlink datagrams to the UEs (e.g. `pdn`; it gets
    /// a route to the UE pool via the SPGW), so that idle UEs are paged. Default: no
    /// downlink traffic.
    #[arg(long, value_name = "HOST")]
    downlink_from: Option<String>,
}

pub fn ran(a: RanArgs, json: bool) -> Result<()> {
    let spec = if a.here { None } else { Some(lab::current()?) };
    let host = match &spec {
        Some(s) => Some(s.host(&a.host)?.clone()),
        None => None,
    };
    if let Some(d) = a.duration {
        if !(d > 0.0 && d < 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
    }
    let subscribers = match a.subscribers {
        Some(p) => p,
        None => {
            let p = lab::paths::host_run_dir(&a.host).join("subscribers.csv");
            std::fs::write(&p, crate::nf::default_subscribers_csv())?;
            p
        }
    };
    let base = match (&a.config, &host) {
        (Some(p), _) => ran::Config::load(p)?,
        (None, Some(h)) => ran::Config {
            s1u_address: h.addr,
            ..Default::default()
        },
        (None, None) => bail!("--here needs --config"),
    };
    let downlink_from_netns = match (&a.downlink_from, &spec) {
        (Some(h), Some(spec)) => {
            spec.host(h)
                .with_context(|| format!("--downlink-from {h}"))?;
            Some(lab::net::host_ns(h))
        }
        _ => base.downlink_from_netns.clone(),
    };
    let cfg = ran::Config {
        ues: a.ues.unwrap_or(base.ues),
        subscribers,
        first_imsi_index: a.first,
        ping_target: a.ping.unwrap_or(match &spec {
            Some(s) => s
                .host("pdn")
                .map(|h| h.addr)
                .unwrap_or(Ipv4Addr::new(10, 77, 0, 31)),
            None => base.ping_target,
        }),
        ping_interval_ms: a.ping_interval_ms.unwrap_or(base.ping_interval_ms).max(1),
        duration_ms: a.duration.map(|d| (d * 1000.0) as u64).or(base.duration_ms),
        cp_probe_interval_ms: a.cp_probe_ms.unwrap_or(base.cp_probe_interval_ms),
        idle_after_ms: a.idle_after_ms.or(base.idle_after_ms),
        traffic: a.traffic.clone().unwrap_or(base.traffic.clone()),
        seed: a.seed.unwrap_or(base.seed),
        downlink_from_netns,
        ..base
    };
    // Bad flags or model files fail here, before anything is set up.
    cfg.validate()?;
    if let (Some(h), Some(ns)) = (&a.downlink_from, &cfg.downlink_from_netns) {
        crate::session::route_downlink(ns).with_context(|| format!("--downlink-from {h}"))?;
    }
    // The eNB lives on its host: enter that namespace before any socket exists.
    if spec.is_some() {
        lab::net::enter_netns(&lab::net::host_ns(&a.host))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(async move {
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        ran::run(cfg, stop).await
    })?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{:<16} {:<12} {:>10} {:>10} {:>10} {:>6} {:>6} {:>10}",
            "imsi", "ue ip", "enb teid", "sgw teid", "attach ms", "sent", "recv", "max gap ms"
        );
        for u in &report.ues {
            println!(
                "{:<16} {:<12} {:>10} {:>10} {:>10.1} {:>6} {:>6} {:>10.1}",
                u.imsi,
                u.ue_ip,
                u.enb_teid,
                u.sgw_teid,
                u.attach_ms,
                u.pings_sent,
                u.pings_received,
                u.max_ping_gap_ms
            );
        }
        for f in &report.attach_failures {
            println!("attach failed: {f:?}");
        }
        println!(
            "control plane: {} probes, {} answered, max gap {:.1} ms; S1 setups {}",
            report.cp_probe.sent,
            report.cp_probe.answered,
            report.cp_probe.max_gap_ms,
            report.s1_setups
        );
        print_procedures(&report.procedures);
    }
    Ok(())
}

/// The per-procedure table of `corehop ran` (the JSON has the records too).
fn print_procedures(p: &ran::Procedures) {
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "procedure", "count", "ok", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (kind, s) in &p.by_kind {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let l = |f: fn(&ran::Percentiles) -> f64| s.latency_ms.as_ref().map_or(f64::NAN, f);
        println!(
            "{name:<24} {:>7} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            s.count,
            s.succeeded,
            s.failed,
            l(|p| p.p50),
            l(|p| p.p90),
            l(|p| p.p99),
            l(|p| p.max)
        );
        for (why, n) in &s.failures {
            println!("    {n} x {why}");
        }
    }
    if !p.skipped.is_empty() {
        println!("events without a procedure: {:?}", p.skipped);
    }
    if p.downlink_sent > 0 {
        println!(
            "downlink: {} datagrams sent, {} received",
            p.downlink_sent, p.downlink_received
        );
    }
}
