//! Issue 13, part 1: an EPC corehop did not write, on the wire. Debian's NextEPC 0.3.10
//! MME (`nextepc-mmed`, kernel SCTP) runs unmodified in a QEMU guest on node-a whose
//! kernel has SCTP with RFC 6951 UDP encapsulation; corehop's eNB emulator attaches a UE
//! through it over SCTP-in-UDP, NextEPC authenticates the UE against corehop's HSS (S6a)
//! and creates its session on corehop's SPGW (S11), and the UE pings the pdn host. Then
//! the HSS and the SPGW migrate live while NextEPC keeps serving: its one S6a connection
//! and its S11 peer survive, and a UE attaching afterwards goes through both moved
//! functions. Every frame of the exchange decodes in tshark with nothing malformed.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// NextEPC's MME takes the address corehop's MME has by default, which the RAN uses.
const MME_IP: &str = "10.77.1.20";
const NEXTEPC: &str = "/usr/bin/nextepc-mmed";
const PLUGINS: &str = "/usr/lib/nextepc/freeDiameter";
const LOG: &str = "/tmp/nextepc-mme.log";
/// Rewrites the destination port of GTPv2-C messages from the SPGW's port 2123 to 2123,
/// before conntrack sees it (raw priority), so that every one is rewritten.
const S11_ANSWERS_TO_SERVER_PORT: &str = "nft add table ip s11 && \
    nft add chain ip s11 answers '{ type filter hook prerouting priority -300; }' && \
    nft add rule ip s11 answers ip saddr 10.77.1.30 udp sport 2123 udp dport != 2123 \
    udp dport set 2123";

/// NextEPC's YAML: S1AP and GTP-C bound to the one service address (a Linux SCTP endpoint
/// with a single address sends no address parameters in its INIT ACK), the lab's PLMN and
/// TAC, EIA2 before EIA1 (the UE's), EEA0 first so that tshark reads the NAS, and
/// corehop's SPGW as both S-GW and P-GW.
fn mme_yaml() -> String {
    format!(
        "\
logger:
    file: {LOG}
    trace:
        app: 1
        s1ap: 1
        nas: 1
        diameter: 1
        gtpv2: 1
parameter:
    no_ipv6: true
mme:
    freeDiameter: /etc/nextepc/freeDiameter/mme.conf
    s1ap:
      addr: {MME_IP}
    gtpc:
      addr: {MME_IP}
      port: 2123
    gummei:
      plmn_id:
        mcc: 001
        mnc: 01
      mme_gid: 1
      mme_code: 1
    tai:
      plmn_id:
        mcc: 001
        mnc: 01
      tac: 1
    security:
        integrity_order : [ EIA2, EIA1, EIA0 ]
        ciphering_order : [ EEA0, EEA2, EEA1 ]
    network_name:
        full: corehop
sgw:
    gtpc:
      addr: 10.77.1.30
pgw:
    gtpc:
      addr: 10.77.1.30
"
    )
}

/// freeDiameter's own file: the HSS's realm (NextEPC asks for Destination-Realm = its own
/// realm and no Destination-Host, so the realms must match to route), no TLS, a 3 s
/// reconnect timer (a broken connection would show as a second CER), every dictionary
/// NextEPC's Debian config loads.
fn freediameter_conf() -> String {
    let hss = hss::Config::default();
    let mut s = format!(
        "Identity = \"mme-nextepc.{realm}\";\nRealm = \"{realm}\";\nListenOn = \"{MME_IP}\";\n\
         No_SCTP;\nSecPort = 0;\nTcTimer = 3;\nTwTimer = 6;\n",
        realm = hss.origin_realm
    );
    for p in plugins() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        match name.as_str() {
            "dbg_msg_dumps.so" => s += "LoadExtension = \"dbg_msg_dumps.so\" : \"0x8888\";\n",
            _ => s += &format!("LoadExtension = \"{name}\";\n"),
        }
    }
    s += &format!(
        "ConnectPeer = \"{}\" {{ ConnectTo = \"{}\"; No_TLS; }};\n",
        hss.origin_host, hss.advertised_ip
    );
    s
}

/// The freeDiameter extensions NextEPC loads with dlopen (no `ldd` lists them), in the
/// order of Debian's config: each dictionary after those it extends.
const EXTENSIONS: &[&str] = &[
    "dbg_msg_dumps.so",
    "dict_rfc5777.so",
    "dict_mip6i.so",
    "dict_nasreq.so",
    "dict_nas_mipv6.so",
    "dict_dcca.so",
    "dict_dcca_3gpp.so",
    "dict_s6a.so",
];

fn plugins() -> Vec<PathBuf> {
    EXTENSIONS
        .iter()
        .map(|e| {
            let p = Path::new(PLUGINS).join(e);
            assert!(
                p.is_file(),
                "{}: missing (make setup installs nextepc-mme)",
                p.display()
            );
            p
        })
        .collect()
}

/// NextEPC's log, read through the guest agent; empty while the guest is not up.
fn guest_log() -> String {
    let run = lab::paths::host_state_dir("node-a").join("containers/nextepc/vm/run");
    vm::guest_agent::read_file(&vm::guest_agent::socket(&run), LOG, Duration::from_secs(5))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until the guest's NextEPC log says `what` (its S6a peer open, say).
fn wait_log(what: &str, within: Duration) {
    let t = Instant::now();
    loop {
        if guest_log().contains(what) {
            return;
        }
        if t.elapsed() > within {
            let console = std::fs::read_to_string(
                lab::paths::host_state_dir("node-a").join("containers/nextepc/vm/run/console.log"),
            )
            .unwrap_or_default();
            panic!(
                "NextEPC's log never said {what:?} within {within:?}\nlog:\n{}\nconsole:\n{console}",
                guest_log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Frames matching `filter`. NextEPC ciphers NAS with EEA0 (its ciphering order's first),
/// so tshark reads the protected messages with its null-cipher option.
fn count(pcap: &Path, filter: &str) -> usize {
    let args = [
        "-o",
        "nas-eps.null_decipher:TRUE",
        "-Y",
        filter,
        "-T",
        "fields",
        "-e",
        "frame.number",
    ];
    tshark(pcap, &args)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn nextepcs_mme_serves_corehops_ues_while_corehops_hss_and_spgw_migrate() {
    if let Some(why) = cannot_boot_guests() {
        eprintln!(
            "SKIPPED: NextEPC's MME runs in a QEMU guest, which this machine cannot boot: {why}"
        );
        return;
    }
    assert!(
        Path::new(NEXTEPC).is_file(),
        "{NEXTEPC} missing: make setup installs nextepc-mme"
    );
    let _lab = Lab::up();
    let tmp = TempDir::new("nextepc");
    let caps = [
        Capture::start(None, "chfab0", &tmp.0.join("fabric.pcap")),
        Capture::start(Some("ch-node-a"), "br0", &tmp.0.join("node-a.pcap")),
    ];
    ok(&["nf", "start", "hss", "--host", "node-a"]);
    ok(&["nf", "start", "spgw", "--host", "node-b"]);

    let yaml = tmp.0.join("mme.conf");
    std::fs::write(&yaml, mme_yaml()).unwrap();
    let fd = tmp.0.join("freediameter.conf");
    std::fs::write(&fd, freediameter_conf()).unwrap();
    let mut args: Vec<String> = [
        "run",
        "nextepc",
        "--host",
        "node-a",
        "--runtime",
        "vm",
        "--ip",
        MME_IP,
        "--guest-modules",
        "sctp",
        // Before NextEPC opens its socket, which takes the port from the namespace then.
        "--guest-init",
        "sysctl -w net.sctp.udp_port=9899",
        // NextEPC 0.3.10 sends its S11 requests from a socket it never reads (gtp_client()
        // without sock_register(), lib/gtp/gtp_path.c) and takes answers only on its server
        // port; TS 29.274 §4.2.2.2 sends a response to the request's source port, as
        // corehop's SPGW does. One stateless rule at the guest's edge bridges the two,
        // leaving both programs as they are.
        "--guest-program",
        "/usr/sbin/nft",
        "--guest-init",
        S11_ANSWERS_TO_SERVER_PORT,
    ]
    .map(String::from)
    .to_vec();
    for p in plugins() {
        args.push("--guest-program".into());
        args.push(p.to_string_lossy().into_owned());
    }
    args.push("--file".into());
    args.push(format!("/etc/nextepc/mme.conf={}", yaml.display()));
    args.push("--file".into());
    args.push(format!(
        "/etc/nextepc/freeDiameter/mme.conf={}",
        fd.display()
    ));
    args.extend(
        [
            "--",
            NEXTEPC,
            "-f",
            "/etc/nextepc/mme.conf",
            "-p",
            "/tmp/nextepc-mmed.pid",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    // What NextEPC's freeDiameter logs once CER/CEA with corehop's HSS succeeded.
    wait_log("CONNECTED TO 'hss.corehop.lab'", Duration::from_secs(60));

    // No eNB Configuration Update probe: NextEPC 0.3.10 does not implement the procedure.
    let ran = Ran::one_ue(&["--cp-probe-ms", "0"]);
    let attached = Instant::now();
    let tunnels_before = loop {
        // Complete once NextEPC's Modify Bearer gave the SPGW the eNB's end.
        let t = spgw_tunnels();
        if t.as_array()
            .unwrap()
            .first()
            .is_some_and(|u| !u["enb_teid"].is_null())
        {
            break t;
        }
        assert!(
            attached.elapsed() < Duration::from_secs(30),
            "no complete session on corehop's SPGW 30 s after the attach through NextEPC: {t}\n{}",
            guest_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));

    let mut reports = vec![];
    for (nf, to) in [("hss", "node-b"), ("spgw", "node-a")] {
        reports.push(json(&ok(&["migrate", nf, "--to", to, "--json"])));
        assert_eq!(host_of(nf), to);
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        spgw_tunnels(),
        tunnels_before,
        "the SPGW's tunnel list is what it was before it moved"
    );
    let r = ran.finish();
    let ue = &r["ues"][0];
    assert!(
        r["attach_failures"].as_array().unwrap().is_empty(),
        "the UE attached through NextEPC: {r}\n{}",
        guest_log()
    );
    assert_eq!(ue["ue_ip"], tunnels_before[0]["ue_ip"], "{r}");
    let outages = r["recovery"]["dp_gtp"][0]["outages"].as_array().unwrap();
    assert!(
        outages.iter().all(|o| o["recovered"] == true),
        "pings to the pdn host resumed after every migration: {r}"
    );
    assert!(
        ue["pings_received"].as_u64().unwrap() > 100,
        "the UE pinged the pdn host through corehop's SPGW: {r}"
    );
    assert_eq!(r["s1_setups"], 1, "one S1 Setup with NextEPC: {r}");
    assert_eq!(
        r["association_losses"], 0,
        "kernel SCTP association kept: {r}"
    );
    assert!(
        ue["detached"].as_bool().unwrap(),
        "detached through NextEPC: {ue}"
    );

    // After both moves NextEPC still reaches them: a new UE is authenticated by the moved
    // HSS and gets its session from the moved SPGW.
    let again = json(&ok(&[
        "ran",
        "--json",
        "--ues",
        "1",
        "--duration",
        "2",
        "--first",
        "1",
        "--cp-probe-ms",
        "0",
    ]));
    assert!(
        again["attach_failures"].as_array().unwrap().is_empty(),
        "an attach through NextEPC after the migrations: {again}\n{}",
        guest_log()
    );
    assert!(
        again["ues"][0]["pings_received"].as_u64().unwrap() > 0,
        "{again}"
    );

    let pcaps: Vec<_> = caps.into_iter().map(|c| c.stop()).collect();
    // One TCP connection and one CER from NextEPC over the whole run: CRIU carried the
    // established S6a connection with the HSS.
    let cer = "diameter.cmd.code == 257 && diameter.flags.request == 1";
    let cers: usize = pcaps.iter().map(|p| count(p, cer)).sum();
    assert!(cers >= 1, "NextEPC's CER on the wire");
    assert_eq!(
        count(&pcaps[1], cer),
        cers,
        "NextEPC sent its CER before the HSS left node-a, and never again"
    );
    assert_eq!(cers, 1, "one S6a connection for the whole run");
    // NextEPC's S1AP (over SCTP in UDP), S6a and S11 all appear, and nothing is malformed.
    for (filter, what) in [
        ("s1ap.procedureCode == 17", "S1 Setup with NextEPC"),
        ("nas_eps.nas_msg_emm_type == 0x42", "Attach Accept"),
        ("diameter.cmd.code == 318", "AIR/AIA"),
        ("diameter.cmd.code == 316", "ULR/ULA"),
        ("gtpv2.message_type == 32", "Create Session Request"),
        ("gtpv2.message_type == 34", "Modify Bearer Request"),
        ("gtpv2.message_type == 36", "Delete Session Request"),
    ] {
        let n: usize = pcaps.iter().map(|p| count(p, filter)).sum();
        assert!(n > 0, "no {what} on the wire");
    }
    for p in &pcaps {
        let bad = malformed(p);
        assert!(
            bad.trim().is_empty(),
            "malformed frames in {}: {bad}",
            p.display()
        );
    }
    eprintln!(
        "NextEPC MME: HSS downtime {} ms, SPGW downtime {} ms, DP_GTP outages {outages:?}",
        reports[0]["downtime_ms"], reports[1]["downtime_ms"]
    );
}
