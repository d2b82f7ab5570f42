//! Issue 4's acceptance: each EPC function migrates live while a UE stays attached, and
//! the UE and the captures show nothing but a pause; an SPGW restored from an older
//! checkpoint after its host died gets its newer tunnels from the tunnel master.
mod common;
use common::*;
use std::time::Duration;

fn count(pcap: &std::path::Path, filter: &str) -> usize {
    tshark(pcap, &["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The MME's UE contexts without the NAS counts (they advance with every probe).
fn sqn_of(imsi: &str) -> u64 {
    let subs = json(&ok(&["hss", "list", "--json"]));
    subs.as_array()
        .unwrap()
        .iter()
        .find(|s| s["imsi"] == imsi)
        .unwrap()["sqn"]
        .as_u64()
        .unwrap()
}

#[test]
fn each_function_migrates_with_the_ue_attached() {
    let _lab = Lab::up();
    let tmp = TempDir::new("epc-mig");
    let caps = [
        Capture::start(None, "chfab0", &tmp.0.join("fabric.pcap")),
        Capture::start(Some("ch-node-a"), "br0", &tmp.0.join("node-a.pcap")),
        Capture::start(Some("ch-node-b"), "br0", &tmp.0.join("node-b.pcap")),
    ];
    start_epc("node-a");
    // The rootfs is read-only; what a function writes lives on its one tmpfs (/run; /var
    // and /tmp point there), which moves with it.
    let hss_pid = containers().iter().find(|c| c["name"] == "hss").unwrap()["pid"]
        .as_i64()
        .unwrap();
    let mounts = std::fs::read_to_string(format!("/proc/{hss_pid}/mountinfo")).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/")
                && l.split(' ').nth(5).unwrap().starts_with("ro")),
        "{mounts}"
    );
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/run") && l.contains(" - tmpfs ")),
        "{mounts}"
    );
    let var = std::fs::read_link(format!("/proc/{hss_pid}/root/var")).unwrap();
    assert_eq!(var, std::path::Path::new("run"));

    let ran = Ran::one_ue(&["--cp-probe-ms", "50"]);
    std::thread::sleep(Duration::from_secs(3));
    let tunnels_before = spgw_tunnels();
    let contexts_before = mme_contexts();
    let sqn_before = sqn_of("001010000000001");
    assert_eq!(
        tunnels_before.as_array().unwrap().len(),
        1,
        "{tunnels_before}"
    );
    assert_eq!(contexts_before[0]["state"], "Attached", "{contexts_before}");

    let mut reports = vec![];
    for nf in ["spgw", "mme", "hss"] {
        reports.push(json(&ok(&["migrate", nf, "--to", "node-b", "--json"])));
        assert_eq!(host_of(nf), "node-b");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        spgw_tunnels(),
        tunnels_before,
        "tunnel list identical after the migrations"
    );
    assert_eq!(
        mme_contexts(),
        contexts_before,
        "UE contexts (IDs, TEIDs, security) intact"
    );
    let r = ran.finish();

    let ue = &r["ues"][0];
    assert_eq!(ue["ue_ip"], tunnels_before[0]["ue_ip"], "same UE IP");
    assert_eq!(
        ue["sgw_teid"], tunnels_before[0]["sgw_s1u_teid"],
        "same TEIDs"
    );
    assert_eq!(ue["enb_teid"], tunnels_before[0]["enb_teid"]);
    let outages = r["recovery"]["dp_gtp"][0]["outages"].as_array().unwrap();
    assert!(
        !outages.is_empty(),
        "the SPGW migration must be seen by the UE: {r}"
    );
    assert!(
        outages.iter().all(|o| o["recovered"] == true),
        "pings resumed after every outage: {r}"
    );
    assert_eq!(r["s1_setups"], 1, "no new S1 Setup: {r}");
    assert_eq!(r["association_losses"], 0, "SCTP association kept: {r}");
    assert!(r["cp_probe"]["answered"].as_u64().unwrap() > 100, "{r}");
    assert!(ue["detached"].as_bool().unwrap(), "{ue}");

    // The HSS's database moved with it: the SQN goes on, no resynchronisation.
    let again = json(&ok(&["ran", "--json", "--ues", "1", "--duration", "0.5"]));
    assert_eq!(
        again["attach_failures"].as_array().unwrap().len(),
        0,
        "{again}"
    );
    assert!(
        again["ues"][0]["ue_auth_failure_cause"].is_null(),
        "{again}"
    );
    assert!(sqn_of("001010000000001") > sqn_before);

    let pcaps: Vec<_> = caps.into_iter().map(|c| c.stop()).collect();
    let all = |f: &str| pcaps.iter().map(|p| count(p, f)).sum::<usize>();
    // Two eNB runs (the one across the migrations and the re-attach check afterwards):
    // one SCTP INIT, one S1 Setup and one Initial UE Message each, no other.
    assert_eq!(
        count(&pcaps[0], "sctp.chunk_type == 1"),
        2,
        "no SCTP INIT after the first"
    );
    assert_eq!(
        count(
            &pcaps[0],
            "s1ap.procedureCode == 17 && s1ap.S1SetupRequest_element"
        ),
        2,
        "no new S1 Setup"
    );
    assert_eq!(
        count(&pcaps[0], "s1ap.procedureCode == 12"),
        2,
        "no re-attach during the migrations"
    );
    assert_eq!(
        all("diameter.cmd.code == 257 && diameter.flags.request == 1"),
        1,
        "Diameter CER only once"
    );
    assert_eq!(
        all("tcp.dstport == 3868 && tcp.flags.syn == 1 && tcp.flags.ack == 0"),
        1,
        "one S6a TCP connection"
    );
    assert_eq!(
        all("tcp.flags.reset == 1 && tcp.port == 3868"),
        0,
        "S6a TCP never reset"
    );
    // The images crossed the fabric sealed: every agent connection that carried bytes
    // began with a TLS ClientHello (a capture can miss a segment, so a record is not always
    // reassembled: connections are counted, not frames), and neither UE 1's K (in the HSS's
    // memory) nor an image file's name is in the capture.
    let streams = |filter: &str| {
        let mut s: Vec<String> = tshark(
            &pcaps[0],
            &["-Y", filter, "-T", "fields", "-e", "tcp.stream"],
        )
        .lines()
        .map(str::to_string)
        .collect();
        s.sort();
        s.dedup();
        s
    };
    let carried = streams("tcp.port == 7070 && tcp.len > 0");
    assert!(carried.len() > 5, "{carried:?}");
    assert_eq!(
        streams("tcp.port == 7070 && tls.handshake.type == 1"),
        carried,
        "agent connections that are not TLS"
    );
    assert!(count(&pcaps[0], "tcp.port == 7070 && tls.app_data") > 10);
    let raw = std::fs::read(&pcaps[0]).unwrap();
    let k1: [u8; 16] = [
        0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0, 0, 0, 1,
    ];
    for secret in [&k1[..], b"inventory.img", b"pages-1.img"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret),
            "{:?} readable on the fabric",
            String::from_utf8_lossy(secret)
        );
    }
    for (nf, rep) in ["spgw", "mme", "hss"].iter().zip(&reports) {
        eprintln!("{nf}: {rep}");
    }
}

#[test]
fn spgw_restored_after_host_death_gets_newer_tunnels_from_the_master() {
    let tmp = TempDir::new("host-death");
    let labfile = tmp.0.join("lab.toml");
    let mut hosts = String::new();
    for (n, a) in [
        ("node-a", 11),
        ("node-b", 12),
        ("ran", 21),
        ("ran2", 22),
        ("pdn", 31),
    ] {
        hosts += &format!("[[host]]\nname = \"{n}\"\naddr = \"10.77.0.{a}\"\n");
    }
    std::fs::write(&labfile, hosts).unwrap();
    let _lab = Lab::up_with(&labfile);
    ok(&["nf", "start", "hss", "--host", "node-b"]);
    ok(&["nf", "start", "mme", "--host", "node-b"]);
    ok(&["nf", "start", "spgw", "--host", "node-a"]);

    let ue1 = Ran::one_ue(&[]);
    std::thread::sleep(Duration::from_secs(2));
    // The last checkpoint knows UE 1 only.
    ok(&["checkpoint", "spgw", "--to", "node-b"]);
    let ue2 = Ran::one_ue(&["--host", "ran2", "--first", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    let before = spgw_tunnels();
    assert_eq!(before.as_array().unwrap().len(), 2, "{before}");

    ok(&["lab", "fail", "node-a"]);
    std::thread::sleep(Duration::from_millis(500));
    ok(&["recover", "spgw", "--on", "node-b"]);
    assert_eq!(host_of("spgw"), "node-b");
    assert_eq!(
        spgw_tunnels(),
        before,
        "the tunnel created after the checkpoint came back from the master"
    );
    let log = std::fs::read_to_string("/run/corehop/hosts/node-b/agent.log").unwrap();
    assert!(log.contains("spgw: tunnel list of 2 tunnels from the tunnel master"));

    for (r, what) in [
        (ue1.finish(), "UE 1 (in the checkpoint)"),
        (ue2.finish(), "UE 2 (after the checkpoint)"),
    ] {
        let outages = r["recovery"]["dp_gtp"][0]["outages"]
            .as_array()
            .unwrap()
            .clone();
        assert!(
            outages.iter().all(|o| o["recovered"] == true),
            "{what}: pings resumed: {r}"
        );
        assert_eq!(
            r["attach_failures"].as_array().unwrap().len(),
            0,
            "{what}: {r}"
        );
        let u = &r["ues"][0];
        assert!(
            u["pings_received"].as_u64().unwrap() * 10 > u["pings_sent"].as_u64().unwrap() * 6,
            "{what}: {u}"
        );
    }
}
