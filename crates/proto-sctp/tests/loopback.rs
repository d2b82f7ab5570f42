//! Two stacks talking: in memory (sans-IO, virtual clock, pcap for tshark) and over
//! real UDP sockets on loopback (the tokio driver).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto_sctp::pcap::PcapWriter;
use proto_sctp::{SctpClient, SctpConfig, SctpEvent, SctpServer, SctpStack, PPID_S1AP};

const ENB: &str = "10.77.0.21:40000";
const MME: &str = "10.77.1.20:9899";
/// A real S1AP PDU (UE Context Release Request, from oxirush-s1ap's docs), so that
/// tshark's S1AP dissector behind PPID 18 has something valid to decode.
const S1AP_PDU: [u8; 25] = [
    0x00, 0x12, 0x40, 0x15, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x2a, 0x00, 0x08, 0x00,
    0x02, 0x00, 0x07, 0x00, 0x02, 0x40, 0x02, 0x02, 0x80,
];

/// Moves datagrams between the two stacks until both are quiet, recording them.
/// `drop_to_server` simulates a paused/unreachable server.
fn pump(
    c: &mut SctpStack,
    s: &mut SctpStack,
    now: Instant,
    pcap: &mut PcapWriter,
    drop_to_server: bool,
) -> (Vec<SctpEvent>, Vec<SctpEvent>) {
    let (ca, sa): (SocketAddr, SocketAddr) = (ENB.parse().unwrap(), MME.parse().unwrap());
    let (mut ce, mut se) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let mut moved = false;
        while let Some((to, d)) = c.poll_transmit() {
            assert_eq!(to, sa);
            moved = true;
            if !drop_to_server {
                pcap.udp(ca, sa, &d);
                s.handle_datagram(now, ca, &d);
            }
        }
        while let Some((to, d)) = s.poll_transmit() {
            assert_eq!(to, ca);
            moved = true;
            pcap.udp(sa, ca, &d);
            c.handle_datagram(now, sa, &d);
        }
        ce.extend(std::iter::from_fn(|| c.poll_event()));
        se.extend(std::iter::from_fn(|| s.poll_event()));
        if !moved {
            break;
        }
    }
    (ce, se)
}

fn messages(ev: &[SctpEvent]) -> Vec<(u16, u32, Vec<u8>)> {
    ev.iter()
        .filter_map(|e| match e {
            SctpEvent::Message(m) => Some((m.stream, m.ppid, m.payload.to_vec())),
            _ => None,
        })
        .collect()
}

/// Runs a whole association in memory and returns its pcap.
fn scripted_association() -> Vec<u8> {
    let cfg = SctpConfig::default();
    let mut pcap = PcapWriter::new();
    let mut c = SctpStack::new(cfg.clone(), false);
    let mut s = SctpStack::new(cfg.clone(), true);
    let mut now = Instant::now();
    let ca = c.connect(now, MME.parse().unwrap()).unwrap();
    let (ce, se) = pump(&mut c, &mut s, now, &mut pcap, false);
    assert!(
        matches!(ce[..], [SctpEvent::Up { assoc, .. }] if assoc == ca),
        "{ce:?}"
    );
    let sa = match se[..] {
        [SctpEvent::Up { assoc, peer }] => {
            assert_eq!(peer, ENB.parse().unwrap());
            assoc
        }
        _ => panic!("{se:?}"),
    };

    c.send(now, ca, 0, &S1AP_PDU).unwrap();
    c.send(now, ca, 1, &S1AP_PDU).unwrap();
    let (_, se) = pump(&mut c, &mut s, now, &mut pcap, false);
    assert_eq!(
        messages(&se),
        vec![
            (0, PPID_S1AP, S1AP_PDU.to_vec()),
            (1, PPID_S1AP, S1AP_PDU[..].to_vec())
        ]
    );
    s.send(now, sa, 1, &S1AP_PDU).unwrap();
    let (ce, _) = pump(&mut c, &mut s, now, &mut pcap, false);
    assert_eq!(messages(&ce), vec![(1, PPID_S1AP, S1AP_PDU.to_vec())]);

    // Let SACK timers fire, then an idle period so HEARTBEAT/HEARTBEAT ACK happen.
    for _ in 0..3 {
        now += Duration::from_millis(cfg.heartbeat_interval_ms + 10);
        c.handle_timeout(now);
        s.handle_timeout(now);
        pump(&mut c, &mut s, now, &mut pcap, false);
    }
    assert_eq!(c.associations().len(), 1, "heartbeats answered: still up");
    c.close(now, ca).unwrap();
    let (ce, se) = pump(&mut c, &mut s, now, &mut pcap, false);
    assert!(matches!(ce[..], [SctpEvent::Down { .. }]), "{ce:?}");
    assert!(
        matches!(se[..], [SctpEvent::Down { assoc, .. }] if assoc == sa),
        "{se:?}"
    );
    pcap.bytes().to_vec()
}

#[test]
fn in_memory_association_exchanges_s1ap_messages() {
    scripted_association();
}

#[test]
fn heartbeat_detects_a_dead_peer() {
    let cfg = SctpConfig::default();
    let mut pcap = PcapWriter::new();
    let mut c = SctpStack::new(cfg.clone(), false);
    let mut s = SctpStack::new(cfg.clone(), true);
    let mut now = Instant::now();
    let ca = c.connect(now, MME.parse().unwrap()).unwrap();
    pump(&mut c, &mut s, now, &mut pcap, false);
    let mut down = None;
    for _ in 0..(cfg.max_missed_heartbeats + 3) {
        now += Duration::from_millis(cfg.heartbeat_interval_ms + 10);
        c.handle_timeout(now);
        let (ce, _) = pump(&mut c, &mut s, now, &mut pcap, true);
        if let Some(e) = ce.into_iter().find(|e| matches!(e, SctpEvent::Down { .. })) {
            down = Some(e);
            break;
        }
    }
    assert!(
        matches!(&down, Some(SctpEvent::Down { assoc, reason }) if *assoc == ca && reason.contains("HEARTBEAT")),
        "{down:?}"
    );
}

#[test]
fn garbage_datagrams_are_dropped() {
    let mut s = SctpStack::new(SctpConfig::default(), true);
    let now = Instant::now();
    let from: SocketAddr = ENB.parse().unwrap();
    for len in 0..80usize {
        let junk: Vec<u8> = (0..len).map(|i| (i * 131 + len) as u8).collect();
        s.handle_datagram(now, from, &junk);
        // Same junk with a valid checksum reaches the chunk parser.
        let mut fixed = junk.clone();
        proto_sctp::wire::fix_checksum(&mut fixed);
        s.handle_datagram(now, from, &fixed);
    }
    assert!(s.associations().is_empty());
}

/// A client-only stack (the eNB) that gets an INIT matching none of its associations
/// drops it: sctp-proto used to panic on its missing server config (found by the
/// `sctp` fuzz target, fuzz/corpus/sctp/regression-client-init).
#[test]
fn stray_init_to_a_client_is_dropped() {
    // Common header (checksum fixed below), a short INIT (initiate tag 0x00e300ff),
    // then a skippable unknown chunk: exactly what the fuzzer sent.
    let init: [u8; 36] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xef, 0x20, 0xb5, 0xf6, 0x01, 0x35, 0x00,
        0x10, 0x00, 0xe3, 0x00, 0xff, 0x3b, 0xff, 0xff, 0xff, 0xbd, 0x8c, 0x5a, 0x0f, 0x80, 0x08,
        0x00, 0x06, 0x82, 0xc0, 0x00, 0x00,
    ];
    let mut c = SctpStack::new(SctpConfig::default(), false);
    let now = Instant::now();
    let mut pkt = init.to_vec();
    proto_sctp::wire::fix_checksum(&mut pkt);
    for from in [MME, "10.77.0.99:9899"] {
        c.handle_datagram(now, from.parse().unwrap(), &pkt);
    }
    assert!(c.associations().is_empty());
    assert!(c.poll_event().is_none());
    // The same stack still connects normally afterwards.
    let mut s = SctpStack::new(SctpConfig::default(), true);
    let id = c.connect(now, MME.parse().unwrap()).unwrap();
    let (ce, _) = pump(&mut c, &mut s, now, &mut PcapWriter::new(), false);
    assert!(
        ce.iter()
            .any(|e| matches!(e, SctpEvent::Up { assoc, .. } if *assoc == id)),
        "{ce:?}"
    );
}

/// tshark decodes the captured association: all chunk types, PPID 18, good CRC32c.
#[test]
fn tshark_decodes_sctp_over_udp() {
    if Command::new("tshark").arg("-v").output().is_err() {
        panic!("tshark is required for the wire-format test (apt-get install tshark)");
    }
    let dir = std::env::temp_dir().join(format!("proto-sctp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sctp-udp.pcap");
    std::fs::write(&file, scripted_association()).unwrap();
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&file)
        .args([
            "-o",
            "sctp.checksum:CRC 32c",
            "-T",
            "fields",
            "-e",
            "sctp.chunk_type",
            "-e",
            "sctp.data_payload_proto_id",
            "-e",
            "sctp.checksum.status",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.severity",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let chunk_types: Vec<&str> = text
        .lines()
        .flat_map(|l| l.split('\t').next().unwrap_or("").split(','))
        .collect();
    for (t, name) in [
        ("1", "INIT"),
        ("2", "INIT ACK"),
        ("10", "COOKIE ECHO"),
        ("11", "COOKIE ACK"),
        ("0", "DATA"),
        ("3", "SACK"),
        ("4", "HEARTBEAT"),
        ("5", "HEARTBEAT ACK"),
        ("6", "ABORT"),
    ] {
        assert!(chunk_types.contains(&t), "no {name} chunk in:\n{text}");
    }
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.get(2), Some(&"1"), "checksum not good: {line}");
        assert!(f.get(3).is_none_or(|m| m.is_empty()), "malformed: {line}");
        if f[0].split(',').any(|t| t == "0") {
            assert!(
                f[1].split(',').all(|p| p == "18"),
                "DATA PPID is not 18: {line}"
            );
        }
    }
    // Expert info of error severity (e.g. bad checksum) anywhere fails the test.
    assert!(!text.contains("8388608"), "expert errors:\n{text}");
}

#[tokio::test]
async fn udp_driver_loopback() {
    let cfg = SctpConfig::default();
    let dir = std::env::temp_dir().join(format!("proto-sctp-udp-{}", std::process::id()));
    let pcap = dir.join("server.pcap");
    let server_cfg = SctpConfig {
        pcap: Some(pcap.clone()),
        ..cfg.clone()
    };
    let mut server = SctpServer::bind("127.0.0.1:0".parse().unwrap(), server_cfg)
        .await
        .unwrap();
    let mut client = SctpClient::connect(
        "127.0.0.1:0".parse().unwrap(),
        server.local_addr(),
        cfg,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let up = tokio::time::timeout(Duration::from_secs(5), server.recv())
        .await
        .unwrap();
    let sa = match up {
        Some(SctpEvent::Up { assoc, peer }) => {
            assert_eq!(peer, client.local_addr());
            assoc
        }
        other => panic!("{other:?}"),
    };
    for i in 0..20u8 {
        client
            .send(u16::from(i % 3), Bytes::from(vec![i; 100 + usize::from(i)]))
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        match tokio::time::timeout(Duration::from_secs(5), server.recv())
            .await
            .unwrap()
        {
            Some(SctpEvent::Message(m)) => {
                assert_eq!(m.ppid, PPID_S1AP);
                assert_eq!(m.assoc, sa);
                assert_eq!(m.stream, u16::from(m.payload[0] % 3));
                got.push(m.payload[0]);
            }
            other => panic!("{other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
    server
        .sender()
        .send(sa, 0, Bytes::from_static(b"reply"))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .unwrap()
    {
        Some(SctpEvent::Message(m)) => assert_eq!(&m.payload[..], b"reply"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.sender().associations().await.unwrap().len(), 1);
    client.close().unwrap();
    match tokio::time::timeout(Duration::from_secs(5), server.recv())
        .await
        .unwrap()
    {
        Some(SctpEvent::Down { assoc, .. }) => assert_eq!(assoc, sa),
        other => panic!("{other:?}"),
    }
}

/// sctp-proto fails a packet on chunks it does not handle; the stack hides them, so
/// DATA bundled with a HEARTBEAT ACK, an ERROR or a skippable unknown chunk arrives.
#[test]
fn foreign_chunks_do_not_lose_bundled_data() {
    let cfg = SctpConfig::default();
    let mut pcap = PcapWriter::new();
    let mut c = SctpStack::new(cfg.clone(), false);
    let mut s = SctpStack::new(cfg, true);
    let now = Instant::now();
    let enb: SocketAddr = ENB.parse().unwrap();
    let ca = c.connect(now, MME.parse().unwrap()).unwrap();
    pump(&mut c, &mut s, now, &mut pcap, false);
    for (i, extra) in [
        vec![5u8, 0, 0, 8, 0, 1, 0, 4],    // HEARTBEAT ACK
        vec![9u8, 0, 0, 8, 0, 6, 0, 4],    // ERROR (unrecognized chunk cause)
        vec![0xc7u8, 0, 0, 8, 1, 2, 3, 4], // unknown type 0xc7: skip and report
    ]
    .into_iter()
    .enumerate()
    {
        c.send(now, ca, 1, &S1AP_PDU).unwrap();
        let (_, pkt) = c.poll_transmit().expect("DATA packet");
        let mut pkt = pkt.to_vec();
        pkt.extend_from_slice(&extra);
        proto_sctp::wire::fix_checksum(&mut pkt);
        s.handle_datagram(now, enb, &pkt);
        let got: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            messages(&got),
            vec![(1, PPID_S1AP, S1AP_PDU.to_vec())],
            "case {i}"
        );
        pump(&mut c, &mut s, now, &mut pcap, false);
    }
    assert_eq!(s.associations().len(), 1);
}
