//! Issue 3's acceptance: the EPC in containers on a lab host, a UE attached from the `ran`
//! host pinging the `pdn` host through GTP-U, every interface captured, and tshark decoding
//! S1AP, NAS-EPS, SCTP, Diameter, GTPv2 and GTP with nothing malformed.
mod common;
use common::*;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn ran(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ran", "--json"];
    all.extend_from_slice(args);
    json(&ok(&all))
}

/// Garbage at every interface of the core, from the pdn host (so the captures can tell it
/// from the real eNB traffic).
fn send_garbage() {
    std::thread::spawn(|| {
        lab::net::enter_netns("ch-pdn").unwrap();
        let junk: Vec<Vec<u8>> = vec![
            vec![0xff; 40],
            vec![0x30, 0x01, 0x00, 0x08, 1, 2, 3, 4],
            b"hello".to_vec(),
            vec![0; 3],
        ];
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        for j in &junk {
            for dst in ["10.77.1.20:9899", "10.77.1.30:2123", "10.77.1.30:2152"] {
                u.send_to(j, dst).unwrap();
            }
            if let Ok(mut t) = TcpStream::connect_timeout(
                &"10.77.1.10:3868".parse::<SocketAddr>().unwrap(),
                Duration::from_secs(1),
            ) {
                use std::io::Write;
                let _ = t.write_all(j);
            }
        }
    })
    .join()
    .unwrap();
}

#[test]
fn ue_attaches_pings_the_pdn_and_every_protocol_decodes() {
    let _lab = Lab::up();
    let tmp = TempDir::new("epc");
    // Every interface: the fabric (S1-MME, S1-U, SGi towards the PDN), node-a's bridge
    // (S6a and S11 between functions on the same host), and the SPGW's SGi device.
    let mut caps = vec![
        Capture::start(None, "chfab0", &tmp.0.join("fabric.pcap")),
        Capture::start(Some("ch-node-a"), "br0", &tmp.0.join("node-a.pcap")),
    ];
    start_epc("node-a");
    caps.push(Capture::start(
        Some("chc-node-a-spgw"),
        "sgi0",
        &tmp.0.join("sgi.pcap"),
    ));

    let r = ran(&["--ues", "2", "--duration", "3", "--ping-interval-ms", "50"]);
    assert_eq!(r["attach_failures"].as_array().unwrap().len(), 0, "{r}");
    let ues = r["ues"].as_array().unwrap();
    assert_eq!(ues.len(), 2);
    assert_ne!(ues[0]["ue_ip"], ues[1]["ue_ip"]);
    for u in ues {
        assert!(u["ue_ip"].as_str().unwrap().starts_with("10.45."), "{u}");
        let (sent, got) = (
            u["pings_sent"].as_u64().unwrap(),
            u["pings_received"].as_u64().unwrap(),
        );
        assert!(
            sent > 20 && got + 2 >= sent,
            "pings through GTP-U and SGi to the pdn host: {u}"
        );
        assert!(u["detached"].as_bool().unwrap(), "{u}");
    }
    assert!(r["cp_probe"]["answered"].as_u64().unwrap() > 0, "{r}");

    // Bad input at every interface, then a new UE still attaches and pings.
    send_garbage();
    let r = ran(&["--ues", "1", "--first", "5", "--duration", "1"]);
    assert_eq!(
        r["attach_failures"].as_array().unwrap().len(),
        0,
        "after garbage: {r}"
    );
    assert!(
        r["ues"][0]["pings_received"].as_u64().unwrap() > 0,
        "after garbage: {r}"
    );

    // An IMSI the HSS does not know gets Attach Reject #8 (TS 29.272 Annex A).
    let unknown = tmp.0.join("unknown.csv");
    std::fs::write(&unknown, "imsi,k,opc,amf,sqn\n001019999999999,000102030405060708090a0b0c0d0e0f,000102030405060708090a0b0c0d0e0f,8000,0\n").unwrap();
    let r = ran(&[
        "--ues",
        "1",
        "--duration",
        "0.5",
        "--subscribers",
        unknown.to_str().unwrap(),
    ]);
    let f = &r["attach_failures"][0];
    assert_eq!(f["kind"], "attach_reject", "{r}");
    assert_eq!(f["emm_cause"], 8, "{r}");
    // A USIM with the wrong key rejects the network's AUTN (MAC failure, #20).
    let wrong = tmp.0.join("wrong.csv");
    std::fs::write(&wrong, "imsi,k,opc,amf,sqn\n001010000000009,ffffffffffffffffffffffffffffffff,000102030405060708090a0b0c0d0e0f,8000,0\n").unwrap();
    let r = ran(&[
        "--ues",
        "1",
        "--duration",
        "0.5",
        "--subscribers",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(r["attach_failures"][0]["ue_auth_failure_cause"], 20, "{r}");
    for nf in ["hss", "mme", "spgw"] {
        assert!(
            ok(&["ps"])
                .lines()
                .any(|l| l.starts_with(nf) && l.contains("running")),
            "{nf} survived"
        );
    }

    let pcaps: Vec<_> = caps.into_iter().map(|c| c.stop()).collect();
    let mut protocols = String::new();
    for p in &pcaps {
        protocols += &tshark(p, &["-T", "fields", "-e", "frame.protocols"]);
        // Our garbage is malformed by design; everything else must decode cleanly.
        let bad = tshark(p, &["-Y", "(_ws.malformed || _ws.expert.severity == error) && !(ip.src == 10.77.0.31 && (udp.dstport in {9899, 2123, 2152} || tcp.dstport == 3868))", "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info"]);
        assert!(
            bad.trim().is_empty(),
            "malformed packets in {}: {bad}",
            p.display()
        );
    }
    for proto in [
        "s1ap", "nas-eps", "sctp", "diameter", "gtpv2", "gtp", "icmp",
    ] {
        assert!(
            protocols
                .split(|c: char| c == ':' || c.is_whitespace())
                .any(|p| p == proto),
            "{proto} not seen in the captures"
        );
    }
    // Attach Accept and later NAS travel ciphered (EEA2), as on a real network.
    let s1ap = tshark(
        &pcaps[0],
        &["-Y", "s1ap", "-T", "fields", "-e", "_ws.col.Info"],
    );
    for msg in [
        "S1SetupRequest",
        "InitialUEMessage",
        "InitialContextSetupRequest",
        "Attach request",
        "Authentication request",
        "Security mode command",
        "InitialContextSetupResponse",
    ] {
        assert!(s1ap.contains(msg), "{msg} missing from S1AP: {s1ap}");
    }
    let s6a = tshark(
        &pcaps[1],
        &["-Y", "diameter", "-T", "fields", "-e", "diameter.cmd.code"],
    );
    for code in ["257", "318", "316"] {
        assert!(
            s6a.lines().any(|l| l.trim() == code),
            "Diameter command {code} missing: {s6a}"
        );
    }
}
