//! Issue 13, part 1, the other direction: corehop's MME accepts an eNB on Linux's own SCTP
//! with RFC 6951 UDP encapsulation, as an srsRAN or OAI eNB on a current Linux connects
//! after `sysctl net.sctp.udp_port=9899`. corehop's eNB emulator, given the kernel
//! transport, runs in a QEMU guest on the ran host (the lab's host kernel has no SCTP);
//! its UE attaches through corehop's MME and pings the pdn host, and the MME migrates
//! while the kernel's association stays up: Linux's SCTP retransmits through the freeze
//! and the restored user-space stack carries on with it.
mod common;
use common::*;
use std::time::{Duration, Instant};

const ENB_IP: &str = "10.77.1.150";
const RAN_TOML: &str = "/etc/corehop/ran.toml";
const SUBSCRIBERS: &str = "/etc/corehop/subscribers.csv";
/// How long the guest's eNB runs after its attach, seconds.
const RUN_SECS: u64 = 30;

fn console() -> String {
    std::fs::read_to_string(
        lab::paths::host_state_dir("ran").join("containers/enb/vm/run/console.log"),
    )
    .unwrap_or_default()
}

/// The eNB's JSON report, from the guest's console once the program has ended.
fn report(within: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let c = console();
        if c.contains("/bin/app exited") {
            let line = c
                .lines()
                .find(|l| l.starts_with("{\"started_unix_ms\""))
                .unwrap_or_else(|| panic!("no report on the guest's console:\n{c}"));
            return json(line);
        }
        assert!(
            t.elapsed() < within,
            "the guest's eNB did not finish within {within:?}:\n{c}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn an_enb_on_linux_sctp_attaches_through_corehops_mme_and_keeps_its_association_across_a_migration()
{
    if let Some(why) = cannot_boot_guests() {
        eprintln!("SKIPPED: the kernel-SCTP eNB runs in a QEMU guest, which this machine cannot boot: {why}");
        return;
    }
    let _lab = Lab::up();
    let tmp = TempDir::new("kernel-enb");
    let cap = Capture::start(None, "chfab0", &tmp.0.join("fabric.pcap"));
    start_epc("node-a");

    let cfg = ran::Config {
        bind: ENB_IP.parse().unwrap(),
        s1u_address: ENB_IP.parse().unwrap(),
        subscribers: SUBSCRIBERS.into(),
        ping_interval_ms: 20,
        duration_ms: Some(RUN_SECS * 1000),
        cp_probe_interval_ms: 50,
        s1_transport: ran::S1Transport::Kernel,
        ..Default::default()
    };
    let toml_file = tmp.0.join("ran.toml");
    std::fs::write(&toml_file, toml::to_string(&cfg).unwrap()).unwrap();
    let subs = tmp.0.join("subscribers.csv");
    std::fs::write(&subs, hss::store::to_csv(&hss::default_subscribers(1))).unwrap();
    ok(&[
        "run",
        "enb",
        "--host",
        "ran",
        "--runtime",
        "vm",
        "--ip",
        ENB_IP,
        "--guest-modules",
        "sctp",
        "--guest-init",
        "sysctl -w net.sctp.udp_port=9899",
        "--file",
        &format!("{RAN_TOML}={}", toml_file.display()),
        "--file",
        &format!("{SUBSCRIBERS}={}", subs.display()),
        "--",
        BIN,
        "ran",
        "--here",
        "--config",
        RAN_TOML,
        "--subscribers",
        SUBSCRIBERS,
        "--json",
    ]);
    let t = Instant::now();
    while spgw_tunnels().as_array().unwrap().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest's UE did not attach within 60 s:\n{}",
            console()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let m = json(&ok(&["migrate", "mme", "--to", "node-b", "--json"]));
    assert_eq!(host_of("mme"), "node-b");

    let r = report(Duration::from_secs(RUN_SECS + 60));
    let _ = corehop(&["rm", "enb"]);
    assert!(
        r["attach_failures"].as_array().unwrap().is_empty(),
        "attached over kernel SCTP: {r}"
    );
    assert_eq!(r["s1_setups"], 1, "one S1 Setup: {r}");
    assert_eq!(
        r["association_losses"], 0,
        "Linux's association survived the MME's migration: {r}"
    );
    let probe = &r["cp_probe"];
    assert!(
        probe["answered"].as_u64().unwrap() > 100,
        "eNB Configuration Updates answered before and after: {r}"
    );
    let ue = &r["ues"][0];
    assert!(ue["pings_received"].as_u64().unwrap() > 100, "{ue}");
    assert!(ue["detached"].as_bool().unwrap(), "{ue}");

    let pcap = cap.stop();
    // Linux's SCTP in UDP: from the kernel's tunneling port, to the MME's; the handshake
    // once, and every frame decodes.
    let inits = tshark(
        &pcap,
        &[
            "-Y",
            &format!("sctp.chunk_type == 1 && ip.src == {ENB_IP} && udp.srcport == 9899"),
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
    );
    assert_eq!(
        inits.lines().count(),
        1,
        "one INIT from the kernel: {inits}"
    );
    let bad = malformed(&pcap);
    assert!(bad.trim().is_empty(), "malformed frames: {bad}");
    eprintln!(
        "kernel-SCTP eNB: MME downtime {} ms, CP_S1-MME longest probe gap {} ms, DP longest ping gap {} ms",
        m["downtime_ms"], probe["max_gap_ms"], ue["max_ping_gap_ms"]
    );
}
