//! `corehop demo`: the main job in one command. A lab with two hosts, a stateful function
//! with a client holding a TCP connection from a third host, a live migration, the phases.
use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const SVC_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);

pub fn run(json: bool) -> Result<()> {
    let exe = std::env::current_exe()?;
    let spec = lab::spec::LabSpec::default();
    step("lab down (clean slate) and lab up: hosts node-a, node-b, ran, pdn");
    lab::down()?;
    lab::up(&spec, &exe)?;
    let token = lab::token()?;
    let result = (|| {
        step("testsvc (a TCP/UDP counter) as a container on node-a");
        let cs = runtime::ContainerSpec::new(
            "testsvc",
            exe.clone(),
            vec!["testsvc".into()],
            SVC_IP,
            spec.prefix_len,
            runtime::flavor::DEFAULT_FLAVOR,
        )?;
        agent::Client::connect(lab::agent_addr(&spec, "node-a")?, &token)?.run(&cs)?;

        step("a client on host `ran` holds one TCP connection, a request every 10 ms");
        let target = SocketAddr::from((SVC_IP, 7000));
        let probe = std::thread::spawn(move || -> Result<measure::probe::ProbeReport> {
            lab::net::enter_netns(&lab::net::host_ns("ran"))?;
            measure::probe::tcp(target, Duration::from_millis(10), Duration::from_secs(5))
        });
        std::thread::sleep(Duration::from_secs(1));
        step("live migration node-a -> node-b, stop-and-copy (CRIU through runc)");
        let r = migrate::migrate(
            &spec,
            &token,
            "testsvc",
            "node-b",
            migrate::Method::StopAndCopy,
        )?;
        let p = probe
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        if json {
            println!("{}", serde_json::json!({"migration": r, "client": p}));
        } else {
            print_report(&r);
            println!(
                "\nclient on ran: {} requests, {} answered, {} reconnects, longest gap {:.1} ms, counter {}..{} ({})",
                p.sent,
                p.answered,
                p.reconnects,
                p.max_gap_ms,
                p.first_counter.unwrap_or(0),
                p.last_counter.unwrap_or(0),
                if p.counter_consecutive { "state kept, no request lost" } else { "COUNTER JUMPED" }
            );
        }
        if p.reconnects > 0 || !p.counter_consecutive {
            bail!("the client's connection or the service's state did not survive");
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
