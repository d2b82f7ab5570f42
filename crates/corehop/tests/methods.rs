//! Issue 5's acceptance: the four migration methods — container StopandCopy, PreCopy and
//! PostCopy, and VM PreCopy — each move the test service with its TCP connection and
//! counter kept, and the EPC functions with a UE attached; a method that does not fit the
//! function's runtime is refused with the function left running. Phases are printed
//! (`cargo test --test methods -- --nocapture`).
mod common;
use common::*;
use std::time::{Duration, Instant};

const SVC: &str = "10.77.1.100";

/// A TCP client on the ran host holding one connection to the counter at `ip` for `secs`.
fn probe(ip: &str, secs: f64) -> std::process::Child {
    on_host(
        "ran",
        &[
            "probe",
            "tcp",
            &format!("{ip}:7000"),
            "--interval-ms",
            "10",
            "--duration",
            &secs.to_string(),
            "--json",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap()
}

fn probe_result(p: std::process::Child) -> serde_json::Value {
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success(), "probe failed");
    json(&String::from_utf8_lossy(&out.stdout))
}

/// The connection survived every migration and no request was lost or repeated.
fn assert_kept(p: &serde_json::Value) {
    assert_eq!(p["reconnects"], 0, "the TCP connection survived: {p}");
    assert_eq!(p["counter_consecutive"], true, "counter kept: {p}");
    assert_eq!(p["sent"], p["answered"], "every request answered: {p}");
}

fn phase(r: &serde_json::Value, k: &str) -> f64 {
    r["phases"][format!("{k}_ms")]
        .as_f64()
        .unwrap_or_else(|| panic!("phase {k} missing in {r}"))
}

/// Checks a report's method, phases (total is their sum) and downtime formula.
fn check_report(r: &serde_json::Value, method: &str, phases: &[&str], down: &[&str]) {
    assert_eq!(r["method"], method, "{r}");
    let sum: f64 = phases.iter().map(|k| phase(r, k)).sum();
    let total = r["total_ms"].as_f64().unwrap();
    assert!(
        (sum - total).abs() < 0.01,
        "total is the sum of phases: {r}"
    );
    assert_eq!(r["phases"].as_object().unwrap().len(), phases.len(), "{r}");
    let downtime = r["downtime_ms"].as_f64().unwrap();
    let parts: f64 = down.iter().map(|k| phase(r, k)).sum();
    // The controller's downtime spans exactly these phases (plus bookkeeping between them).
    assert!(
        downtime >= parts * 0.99 && downtime < total + 1.0,
        "downtime {downtime} vs its phases {parts}: {r}"
    );
    eprintln!("{method}: {r}");
}

fn wait_answering(ip: &str, within: Duration) {
    let t = Instant::now();
    while svc_counter(ip).is_none() {
        assert!(t.elapsed() < within, "{ip} not answering after {within:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn testsvc_container_moves_with_each_container_method() {
    let _lab = Lab::up();
    ok(&[
        "run", "svc", "--host", "node-a", "--ip", SVC, "--", BIN, "testsvc",
    ]);
    let p = probe(SVC, 9.0);
    std::thread::sleep(Duration::from_millis(800));
    let pre = json(&ok(&[
        "migrate", "svc", "--to", "node-b", "--method", "pre-copy", "--json",
    ]));
    let post = json(&ok(&[
        "migrate",
        "svc",
        "--to",
        "node-a",
        "--method",
        "post-copy",
        "--json",
    ]));
    let sc = json(&ok(&[
        "migrate",
        "svc",
        "--to",
        "node-b",
        "--method",
        "stop-and-copy",
        "--json",
    ]));
    // A container method on a container, and VM PreCopy refused for it: still running.
    let e = fails(&[
        "migrate",
        "svc",
        "--to",
        "node-a",
        "--method",
        "vm-pre-copy",
    ]);
    assert!(
        e.contains("is a container") && e.contains("pre-copy"),
        "{e}"
    );
    let e = fails(&["migrate", "svc", "--to", "node-a", "--method", "live"]);
    assert!(
        e.contains("unknown method") && e.contains("post-copy"),
        "{e}"
    );
    assert_eq!(host_of("svc"), "node-b");
    let pr = probe_result(p);
    assert_kept(&pr);

    check_report(
        &pre,
        "pre-copy",
        &[
            "pre_dump",
            "pre_transfer",
            "dump",
            "dump_transfer",
            "network",
            "restore",
        ],
        &["dump", "dump_transfer", "network", "restore"],
    );
    let rounds: Vec<u64> = pre["round_bytes"]
        .as_array()
        .unwrap_or_else(|| panic!("bytes per round: {pre}"))
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(rounds.len(), 2, "{pre}");
    assert!(
        rounds[1] < rounds[0] / 2,
        "the final round ships only what changed: {pre}"
    );
    assert_eq!(
        pre["image_bytes"].as_u64().unwrap(),
        rounds.iter().sum::<u64>()
    );

    check_report(
        &post,
        "post-copy",
        &["checkpoint", "transfer", "network", "restore"],
        &["checkpoint", "transfer", "network", "restore"],
    );
    assert!(post["last_page_ms"].as_f64().is_some(), "{post}");
    assert!(
        post["image_bytes"].as_u64().unwrap() < sc["image_bytes"].as_u64().unwrap(),
        "lazy memory stayed out of PostCopy's images: {post} vs {sc}"
    );
    check_report(
        &sc,
        "stop-and-copy",
        &["checkpoint", "transfer", "network", "restore"],
        &["checkpoint", "transfer", "network", "restore"],
    );
    assert!(sc.get("round_bytes").is_none(), "one round, no list: {sc}");
    eprintln!(
        "probe: {} requests, max gap {} ms",
        pr["sent"], pr["max_gap_ms"]
    );
}

#[test]
fn testsvc_vm_moves_with_vm_pre_copy() {
    let _lab = Lab::up();
    ok(&[
        "run",
        "vsvc",
        "--host",
        "node-a",
        "--ip",
        SVC,
        "--runtime",
        "vm",
        "--",
        BIN,
        "testsvc",
    ]);
    let vm = containers()
        .into_iter()
        .find(|c| c["name"] == "vsvc")
        .unwrap();
    assert_eq!(vm["runtime"], "vm", "{vm}");
    assert_eq!(vm["state"], "running", "{vm}");
    wait_answering(SVC, Duration::from_secs(60));

    // Long enough to cover pre_live (an image build and a QEMU start at the destination).
    let p = probe(SVC, 12.0);
    std::thread::sleep(Duration::from_millis(800));
    // Container methods are refused for a VM, and it keeps serving.
    let e = fails(&["migrate", "vsvc", "--to", "node-b", "--method", "pre-copy"]);
    assert!(
        e.contains("runs as a VM") && e.contains("vm-pre-copy"),
        "{e}"
    );
    let tmp = TempDir::new("vm-mig");
    let fabric = Capture::start(None, "chfab0", &tmp.0.join("fabric.pcap"));
    let r = json(&ok(&["migrate", "vsvc", "--to", "node-b", "--json"]));
    let fabric = fabric.stop();
    let pr = probe_result(p);
    assert_eq!(host_of("vsvc"), "node-b");
    assert_kept(&pr);
    check_report(&r, "vm-pre-copy", &["pre_live", "live", "post"], &["post"]);
    let qemu = r["qemu_downtime_ms"].as_f64().unwrap();
    assert!(r["downtime_ms"].as_f64().unwrap() >= qemu, "{r}");
    assert!(
        r["image_bytes"].as_u64().unwrap() > 1 << 20,
        "guest RAM moved: {r}"
    );
    // The guest's RAM crossed the fabric sealed: QEMU's stream began with a TLS ClientHello,
    // and neither its header (magic and version) nor a RAM block's name is in the capture.
    let hellos = tshark(
        &fabric,
        &[
            "-Y",
            "tcp.dstport == 7073 && tls.handshake.type == 1",
            "-T",
            "fields",
            "-e",
            "tcp.stream",
        ],
    );
    assert_eq!(
        hellos.lines().count(),
        1,
        "one TLS stream to QEMU: {hellos}"
    );
    let raw = std::fs::read(&fabric).unwrap();
    assert!(raw.len() > 1 << 20, "the capture holds the stream");
    for clear in [&b"QEVM\0\0\0\x03"[..], b"pc.ram"] {
        assert!(
            !raw.windows(clear.len()).any(|w| w == clear),
            "{:?} readable on the fabric",
            String::from_utf8_lossy(clear)
        );
    }
    // The source QEMU is gone; `lab down` (the guard) ends the destination's.
    assert_eq!(containers().len(), 1);
    eprintln!(
        "probe: {} requests, max gap {} ms",
        pr["sent"], pr["max_gap_ms"]
    );
}

/// The UE stayed attached on one association and its pings came back after every outage.
fn assert_ue_kept(r: &serde_json::Value) {
    let outages = r["recovery"]["dp_gtp"][0]["outages"].as_array().unwrap();
    assert!(
        outages.iter().all(|o| o["recovered"] == true),
        "pings resumed after every outage: {r}"
    );
    assert_eq!(r["s1_setups"], 1, "no new S1 Setup: {r}");
    assert_eq!(r["association_losses"], 0, "SCTP association kept: {r}");
    assert_eq!(r["attach_failures"].as_array().unwrap().len(), 0, "{r}");
    assert!(r["ues"][0]["detached"].as_bool().unwrap(), "{r}");
}

/// Every function migrates with `method` from node-a to node-b while one UE stays attached:
/// tunnel list and MME contexts unchanged, one S1 Setup, one association, pings resume.
fn epc_moves_with(method: &str) {
    let _lab = Lab::up();
    start_epc("node-a");
    let ran = Ran::one_ue(&["--cp-probe-ms", "50"]);
    std::thread::sleep(Duration::from_secs(3));
    let tunnels_before = spgw_tunnels();
    let contexts_before = mme_contexts();
    assert_eq!(contexts_before[0]["state"], "Attached", "{contexts_before}");
    let mut reports = vec![];
    for nf in ["spgw", "mme", "hss"] {
        let r = json(&ok(&[
            "migrate", nf, "--to", "node-b", "--method", method, "--json",
        ]));
        assert_eq!(host_of(nf), "node-b");
        reports.push((nf, r));
        std::thread::sleep(Duration::from_millis(1200));
    }
    assert_eq!(spgw_tunnels(), tunnels_before, "tunnel list identical");
    assert_eq!(mme_contexts(), contexts_before, "UE contexts intact");
    let r = ran.finish();
    assert_ue_kept(&r);
    assert!(r["cp_probe"]["answered"].as_u64().unwrap() > 100, "{r}");
    for (nf, rep) in &reports {
        // Nothing but CRIU (PostCopy's lazy-pages daemon) starts in the frozen window.
        let programs = rep["window"]["programs"].as_array().unwrap();
        assert!(
            programs.iter().all(|p| p == "criu"),
            "{nf}: processes started in the frozen window: {programs:?}"
        );
        eprintln!(
            "{nf} {}: phases {} downtime {} ms, bytes {} per round {} last page {}",
            rep["method"],
            rep["phases"],
            rep["downtime_ms"],
            rep["image_bytes"],
            rep["round_bytes"],
            rep["last_page_ms"]
        );
    }
}

#[test]
fn epc_functions_move_with_pre_copy() {
    epc_moves_with("pre-copy");
}

#[test]
fn epc_functions_move_with_post_copy() {
    epc_moves_with("post-copy");
}

/// The guests boot for a few seconds under TCG: attach until the core answers.
fn await_attach() {
    let t = Instant::now();
    loop {
        let o = corehop(&["ran", "--json", "--ues", "1", "--duration", "0.5"]);
        if o.status.success()
            && json(&String::from_utf8_lossy(&o.stdout))["attach_failures"]
                .as_array()
                .is_some_and(|a| a.is_empty())
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "EPC with VMs never attached a UE"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The SPGW as a VM (its SGi TUN, forwarding and NAT inside the guest) moves with QEMU
/// pre-copy while a UE pings the PDN host through it: the tunnel list, read from the guest
/// through its agent, is the same before and after, and so are the UE's IP and TEIDs.
#[test]
fn spgw_moves_as_a_vm_with_the_ue_pinging_the_pdn() {
    let _lab = Lab::up();
    ok(&["nf", "start", "hss", "--host", "node-a"]);
    ok(&["nf", "start", "spgw", "--host", "node-a", "--runtime", "vm"]);
    ok(&["nf", "start", "mme", "--host", "node-a"]);
    let spgw = containers()
        .into_iter()
        .find(|c| c["name"] == "spgw")
        .unwrap();
    assert_eq!(spgw["runtime"], "vm", "{spgw}");
    await_attach();
    // The PDN host has no route to the UE pool: replies come back only through the NAT.
    let route = on_host("pdn", &["ip", "route", "get", "10.45.0.2"])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(!route.contains("via 10.77.1.30"), "{route}");
    let ran = Ran::one_ue(&["--cp-probe-ms", "50"]);
    std::thread::sleep(Duration::from_secs(3));
    let before = spgw_tunnels();
    assert_eq!(before.as_array().map(Vec::len), Some(1), "{before}");
    let r = json(&ok(&["migrate", "spgw", "--to", "node-b", "--json"]));
    assert_eq!(r["method"], "vm-pre-copy", "{r}");
    assert_eq!(host_of("spgw"), "node-b");
    assert_eq!(containers().len(), 3, "the source VM is gone");
    assert_eq!(
        spgw_tunnels(),
        before,
        "tunnel list identical (guest RAM moved)"
    );
    let ran = ran.finish();
    assert_ue_kept(&ran);
    let ue = &ran["ues"][0];
    let t = &before[0];
    assert_eq!(
        t["ue_ip"], ue["ue_ip"],
        "the UE kept its tunnel's IP: {ue} {t}"
    );
    assert_eq!(t["sgw_s1u_teid"], ue["sgw_teid"], "{ue} {t}");
    assert_eq!(t["enb_teid"], ue["enb_teid"], "{ue} {t}");
    // Pings went on after the move: the UE's last ping came back after the migration.
    let resumed = ran["recovery"]["dp_gtp"][0]["outages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["recovered"] == true);
    assert!(
        resumed && ue["pings_received"].as_u64().unwrap() > 200,
        "{ue}"
    );
    eprintln!(
        "spgw vm-pre-copy: total {} ms, phases {}, downtime {} ms (QEMU {} ms), bytes {}; UE longest gap {} ms",
        r["total_ms"],
        r["phases"],
        r["downtime_ms"],
        r["qemu_downtime_ms"],
        r["image_bytes"],
        ue["max_ping_gap_ms"]
    );
}

#[test]
fn hss_and_mme_move_as_vms_with_the_ue_attached() {
    let _lab = Lab::up();
    ok(&["nf", "start", "hss", "--host", "node-a", "--runtime", "vm"]);
    ok(&["nf", "start", "spgw", "--host", "node-a"]);
    ok(&["nf", "start", "mme", "--host", "node-a", "--runtime", "vm"]);
    await_attach();
    let ran = Ran::one_ue(&["--cp-probe-ms", "50"]);
    std::thread::sleep(Duration::from_secs(3));
    let mut reports = vec![];
    for nf in ["mme", "hss"] {
        let r = json(&ok(&["migrate", nf, "--to", "node-b", "--json"]));
        assert_eq!(r["method"], "vm-pre-copy", "{r}");
        assert_eq!(host_of(nf), "node-b");
        reports.push((nf, r));
        std::thread::sleep(Duration::from_secs(2));
    }
    let r = ran.finish();
    assert_ue_kept(&r);
    for (nf, rep) in &reports {
        eprintln!(
            "{nf} vm-pre-copy: phases {} downtime {} ms (QEMU {} ms), bytes {}",
            rep["phases"], rep["downtime_ms"], rep["qemu_downtime_ms"], rep["image_bytes"]
        );
    }
}
