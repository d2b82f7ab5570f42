//! `corehop demo`: the main job in one command. A lab with two hosts; a stateful test
//! service migrated with a client holding its TCP connection; then the EPC (HSS, MME,
//! SPGW) on node-a with one attached UE pinging the PDN, and each function migrated live
//! to node-b in turn, with a table of migration time, phases, downtime, UE service
//! recovery (DP_GTP, DP_SGi, CP_S1-MME) and data moved.
use crate::nf::{self, Nf};
use crate::session::{join, on_host, UeSession};
use agent::tls::Credentials;
use anyhow::{bail, Context, Result};
use measure::gaps::longest;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
/// How long after a function resumes an outage may still end and count as its recovery.
const RECOVERY_GRACE_MS: u64 = 3000;

pub fn run(json: bool) -> Result<()> {
    let exe = std::env::current_exe()?;
    let spec = lab::spec::LabSpec::default();
    step("lab down (clean slate), lab up: hosts node-a, node-b, ran, pdn, one agent each");
    lab::down()?;
    lab::up(&spec, &exe)?;
    let result = (|| {
        let creds = Credentials::controller()?;
        let svc = testsvc(&spec, &creds, &exe)?;
        let epc = epc(&spec, &creds)?;
        if json {
            println!("{}", serde_json::json!({"testsvc": svc, "epc": epc}));
        } else {
            print_epc_table(&epc);
        }
        Ok(())
    })();
    step("lab down");
    lab::down().context("lab down")?;
    result
}

fn step(s: &str) {
    eprintln!("==> {s}");
}

fn testsvc(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    exe: &std::path::Path,
) -> Result<serde_json::Value> {
    step("testsvc (a TCP/UDP counter) as a container on node-a");
    let cs = runtime::ContainerSpec::new(
        "testsvc",
        exe.to_path_buf(),
        vec!["testsvc".into()],
        SVC_IP,
        spec.prefix_len,
        runtime::flavor::DEFAULT_FLAVOR,
    )?;
    agent::Client::connect(lab::agent_addr(spec, "node-a")?, creds)?.run(&cs)?;
    step("a client on host `ran` holds one TCP connection, a request every 10 ms");
    let target = SocketAddr::from((SVC_IP, 7000));
    let probe = on_host("ran", move || {
        measure::probe::tcp(
            target,
            Duration::from_millis(10),
            &measure::probe::after(Duration::from_secs(4)),
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    step("live migration of testsvc node-a -> node-b, stop-and-copy (CRIU over its RPC)");
    let r = migrate::migrate(
        spec,
        creds,
        "testsvc",
        "node-b",
        migrate::Method::StopAndCopy,
    )?;
    let p = join(probe)?;
    print_report(&r);
    println!(
        "  client on ran: {} requests, {} answered, {} reconnects, longest gap {:.1} ms, counter {}..{} ({})",
        p.sent, p.answered, p.reconnects, p.max_gap_ms, p.first_counter.unwrap_or(0), p.last_counter.unwrap_or(0),
        if p.counter_consecutive { "state kept, no request lost" } else { "COUNTER JUMPED" }
    );
    if p.reconnects > 0 || !p.counter_consecutive {
        bail!("the client's connection or the service's state did not survive");
    }
    agent::Client::connect(lab::agent_addr(spec, "node-b")?, creds)?.remove("testsvc")?;
    Ok(serde_json::json!({"migration": r, "client": p}))
}

/// One row of the EPC table.
#[derive(serde::Serialize)]
struct Row {
    migration: migrate::Report,
    /// Longest outages overlapping the migration (None: none beyond the probe's threshold).
    dp_gtp_ms: Option<f64>,
    dp_sgi_ms: Option<f64>,
    cp_s1_mme_ms: Option<f64>,
}

fn epc(spec: &lab::spec::LabSpec, creds: &Credentials) -> Result<Vec<Row>> {
    step("EPC: HSS, SPGW, MME as containers on node-a");
    nf::start_epc(spec, creds, "node-a", runtime::flavor::DEFAULT_FLAVOR)?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let spgw_ip = nf::container(
        Nf::Spgw,
        &nf::default_config(Nf::Spgw)?,
        "",
        spec.prefix_len,
        "medium",
    )?
    .service_ip;
    // DP_SGi: UE pings leaving the SPGW towards the PDN, seen at the PDN host.
    let sgi = on_host("pdn", move || {
        measure::wire::sniff(spgw_ip, 1, Duration::from_millis(25), &st)
    });

    step("one UE attaches from host `ran` and pings the pdn host every 10 ms through GTP-U");
    let ue = UeSession::start(spec);
    let mut reports = vec![];
    if ue.is_ok() {
        std::thread::sleep(Duration::from_secs(1));
        for f in ["hss", "mme", "spgw"] {
            step(&format!(
                "live migration of {f} node-a -> node-b, stop-and-copy, UE attached"
            ));
            match migrate::migrate(spec, creds, f, "node-b", migrate::Method::StopAndCopy) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(RECOVERY_GRACE_MS));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sgi = join(sgi)?;
    let ue = ue?.finish()?;
    if reports.len() < 3 {
        bail!("not every function migrated");
    }
    println!(
        "\nUE {}: IP {}, {} pings sent, {} answered; {} S1 Setup(s), {} association loss(es)",
        ue.ues[0].imsi,
        ue.ues[0].ue_ip,
        ue.ues[0].pings_sent,
        ue.ues[0].pings_received,
        ue.s1_setups,
        ue.association_losses
    );
    Ok(reports
        .into_iter()
        .map(|r| {
            let (from, to) = (r.frozen_unix_ms, r.resumed_unix_ms + RECOVERY_GRACE_MS);
            let w = ue.recovery.within(from, to);
            Row {
                dp_gtp_ms: longest(
                    &w.dp_gtp
                        .into_iter()
                        .flat_map(|(_, o)| o)
                        .collect::<Vec<_>>(),
                ),
                dp_sgi_ms: longest(&sgi.overlapping(from, to)),
                cp_s1_mme_ms: longest(&w.cp_s1_mme),
                migration: r,
            }
        })
        .collect())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn print_epc_table(rows: &[Row]) {
    println!("\nEPC functions migrated node-a -> node-b with one attached UE (stop-and-copy), times in ms:");
    println!(
        "{:<5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>10} {:>9}",
        "nf",
        "Tc",
        "Tt",
        "Tn",
        "Tr",
        "total",
        "downtime",
        "DP_GTP",
        "DP_SGi",
        "CP_S1-MME",
        "data MB"
    );
    for r in rows {
        let m = &r.migration;
        let p = |k: &str| {
            m.phases
                .get(k)
                .map(|v| format!("{v:.0}"))
                .unwrap_or_default()
        };
        println!(
            "{:<5} {:>8} {:>8} {:>8} {:>8} {:>8.0} {:>9.0} {:>7} {:>7} {:>10} {:>9.2}",
            m.name,
            p("checkpoint"),
            p("transfer"),
            p("network"),
            p("restore"),
            m.total_ms,
            m.downtime_ms,
            ms(r.dp_gtp_ms),
            ms(r.dp_sgi_ms),
            ms(r.cp_s1_mme_ms),
            m.image_bytes as f64 / 1e6
        );
    }
    println!("(- : no outage beyond the probe's resolution: pings and S1AP probes every 10 ms)");
}

pub fn print_report(r: &migrate::Report) {
    println!(
        "\n{} migrated {} -> {} ({})",
        r.name, r.from, r.to, r.method
    );
    println!("  {:<16} {:>10}", "phase", "ms");
    for (k, v) in &r.phases.0 {
        println!("  {:<16} {:>10.1}", k, v);
    }
    println!("  {:<16} {:>10.1}", "total", r.total_ms);
    println!("  {:<16} {:>10.1}", "downtime", r.downtime_ms);
    println!("  {:<16} {:>10}", "image bytes", r.image_bytes);
    println!(
        "  (destination prepared beforehand in {:.1} ms)",
        r.prepare_ms
    );
}
