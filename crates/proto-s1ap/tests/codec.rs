//! S1AP codec: known octets, round trips of every modelled message, garbage, and a
//! tshark check of S1AP+NAS carried over SCTP/UDP 9899.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Instant;

use proto_nas::{msg, Direction, NasSecurity, SecurityHeader};
use proto_s1ap::*;
use proto_sctp::pcap::PcapWriter;
use proto_sctp::{SctpConfig, SctpStack};

const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn tai() -> Tai {
    Tai { plmn: PLMN, tac: 1 }
}

fn ecgi() -> Ecgi {
    Ecgi {
        plmn: PLMN,
        cell_id: 0x0001_2301,
    }
}

/// UE CONTEXT RELEASE REQUEST from oxirush-s1ap's docs (MME UE 42, eNB UE 7, user
/// inactivity), as Wireshark shows it.
#[test]
fn known_ue_context_release_request() {
    let bytes = h("0012401500000300000002002a000800020007000240020280");
    let m = decode(&bytes).unwrap();
    assert_eq!(
        m,
        S1ap::UeContextReleaseRequest {
            mme_ue_id: 42,
            enb_ue_id: 7,
            cause: causes::user_inactivity()
        }
    );
    assert_eq!(encode(&m).unwrap(), bytes);
}

/// An INITIAL UE MESSAGE without its mandatory TAI/ECGI is an error, not a panic.
#[test]
fn missing_mandatory_ie_is_an_error() {
    assert!(decode(&h("000c4011000002000800020007001a000403074171")).is_err());
}

/// S1 SETUP FAILURE of oxirush-s1ap's docs decodes with its cause.
#[test]
fn known_s1_setup_failure() {
    assert!(matches!(
        decode(&h("401100080000010002400145")).unwrap(),
        S1ap::S1SetupFailure { .. }
    ));
}

fn all_messages() -> Vec<S1ap> {
    let attach =
        msg::attach_request("001010000000001", &[0xe0, 0xe0], &Default::default()).unwrap();
    let auth = msg::authentication_request(0, &[1; 16], &[2; 16]).unwrap();
    // A protected SECURITY MODE COMMAND: tshark decodes the integrity-only envelope.
    let mut sec = NasSecurity::new([7; 32], 0, 2, 2).unwrap();
    let smc = sec
        .protect(
            &msg::security_mode_command(0, 2, 2, &[0xe0, 0xe0]).unwrap(),
            SecurityHeader::IntegrityNewContext,
            Direction::Downlink,
        )
        .unwrap();
    let accept = msg::attach_accept(&msg::AttachAcceptParams {
        guti: proto_nas::Guti {
            plmn: PLMN,
            mme_group_id: 1,
            mme_code: 1,
            m_tmsi: 0xc000_0001,
        },
        tai_plmn: PLMN,
        tacs: vec![1],
        t3412: 0x49,
        ebi: 5,
        pti: 1,
        qci: 9,
        apn: "internet".into(),
        ue_ipv4: [10, 45, 0, 2],
    })
    .unwrap();
    vec![
        S1ap::S1SetupRequest(S1SetupRequest {
            plmn: PLMN,
            enb_id: 0x12345,
            enb_name: Some("corehop-enb".into()),
            tacs: vec![1],
        }),
        S1ap::S1SetupResponse(S1SetupResponse {
            mme_name: Some("corehop-mme".into()),
            plmn: PLMN,
            mme_group_id: 1,
            mme_code: 1,
            relative_capacity: 255,
        }),
        S1ap::S1SetupFailure {
            cause: causes::unknown_plmn(),
        },
        S1ap::InitialUeMessage {
            enb_ue_id: 1,
            nas: attach,
            tai: tai(),
            ecgi: ecgi(),
        },
        S1ap::DownlinkNasTransport {
            mme_ue_id: 100,
            enb_ue_id: 1,
            nas: auth,
        },
        S1ap::UplinkNasTransport {
            mme_ue_id: 100,
            enb_ue_id: 1,
            nas: msg::authentication_response(&[3; 8]).unwrap(),
            tai: tai(),
            ecgi: ecgi(),
        },
        S1ap::DownlinkNasTransport {
            mme_ue_id: 100,
            enb_ue_id: 1,
            nas: smc,
        },
        S1ap::InitialContextSetupRequest(Box::new(InitialContextSetupRequest {
            mme_ue_id: 100,
            enb_ue_id: 1,
            ambr_dl: 100_000_000,
            ambr_ul: 50_000_000,
            erabs: vec![ErabToSetup {
                erab_id: 5,
                qci: 9,
                arp_priority: 8,
                sgw_addr: Ipv4Addr::new(10, 77, 1, 30),
                sgw_teid: 0x1234,
                nas: Some(accept),
            }],
            ue_sec_enc: 0xc0,
            ue_sec_int: 0xc0,
            kenb: [9; 32],
        })),
        S1ap::InitialContextSetupResponse {
            mme_ue_id: 100,
            enb_ue_id: 1,
            erabs: vec![ErabSetup {
                erab_id: 5,
                enb_addr: Ipv4Addr::new(10, 77, 0, 21),
                enb_teid: 0x5678,
            }],
        },
        S1ap::InitialContextSetupFailure {
            mme_ue_id: 100,
            enb_ue_id: 1,
            cause: causes::radio_unspecified(),
        },
        S1ap::UplinkNasTransport {
            mme_ue_id: 100,
            enb_ue_id: 1,
            nas: msg::attach_complete(5).unwrap(),
            tai: tai(),
            ecgi: ecgi(),
        },
        S1ap::UeContextReleaseRequest {
            mme_ue_id: 100,
            enb_ue_id: 1,
            cause: causes::user_inactivity(),
        },
        S1ap::UeContextReleaseCommand {
            mme_ue_id: 100,
            enb_ue_id: Some(1),
            cause: causes::nas_detach(),
        },
        S1ap::UeContextReleaseCommand {
            mme_ue_id: 100,
            enb_ue_id: None,
            cause: causes::nas_normal_release(),
        },
        S1ap::UeContextReleaseComplete {
            mme_ue_id: 100,
            enb_ue_id: 1,
        },
        S1ap::ErrorIndication {
            mme_ue_id: Some(100),
            enb_ue_id: None,
            cause: Some(causes::unknown_mme_ue_id()),
        },
        S1ap::ErrorIndication {
            mme_ue_id: None,
            enb_ue_id: None,
            cause: Some(causes::protocol_transfer_syntax_error()),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for m in all_messages() {
        let bytes = encode(&m).unwrap();
        assert_eq!(decode(&bytes).unwrap(), m, "{}", hex::encode(&bytes));
    }
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let mut seed = 0xdead_beefu32;
    let mut next = || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (seed >> 16) as u8
    };
    for m in all_messages() {
        let good = encode(&m).unwrap();
        for i in 0..good.len() {
            // Truncations and single-octet corruptions of real messages.
            let _ = decode(&good[..i]);
            let mut bad = good.clone();
            bad[i] ^= next() | 1;
            let _ = decode(&bad);
        }
    }
    for len in 0..300 {
        let junk: Vec<u8> = (0..len).map(|_| next()).collect();
        let _ = decode(&junk);
    }
    assert!(decode(&[]).is_err());
}

/// Sends every message over an in-memory SCTP association (real SCTP packets, PPID
/// 18, UDP 9899) and has tshark decode the capture: S1AP and NAS-EPS present, nothing
/// malformed, no expert errors.
#[test]
fn tshark_decodes_s1ap_and_nas_over_sctp_udp() {
    let enb: SocketAddr = "10.77.0.21:40000".parse().unwrap();
    let mme: SocketAddr = "10.77.1.20:9899".parse().unwrap();
    let now = Instant::now();
    let mut pcap = PcapWriter::new();
    let mut c = SctpStack::new(SctpConfig::default(), false);
    let mut s = SctpStack::new(SctpConfig::default(), true);
    let ca = c.connect(now, mme).unwrap();
    let pump = |c: &mut SctpStack, s: &mut SctpStack, pcap: &mut PcapWriter| {
        for _ in 0..50 {
            let mut moved = false;
            while let Some((_, d)) = c.poll_transmit() {
                pcap.udp(enb, mme, &d);
                s.handle_datagram(now, enb, &d);
                moved = true;
            }
            while let Some((_, d)) = s.poll_transmit() {
                pcap.udp(mme, enb, &d);
                c.handle_datagram(now, mme, &d);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    };
    pump(&mut c, &mut s, &mut pcap);
    let messages = all_messages();
    for m in &messages {
        c.send(now, ca, m.stream(), &encode(m).unwrap()).unwrap();
        pump(&mut c, &mut s, &mut pcap);
    }
    let dir = std::env::temp_dir().join(format!("proto-s1ap-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("s1ap.pcap");
    std::fs::write(&file, pcap.bytes()).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-Y", "s1ap", "-T", "fields", "-E", "separator=|"])
        .args(["-e", "frame.protocols", "-e", "s1ap.procedureCode"])
        .args(["-e", "_ws.malformed", "-e", "_ws.expert.severity"])
        .output();
    let verbose = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .arg("-V")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("tshark is required (apt-get install tshark)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        messages.len(),
        "one S1AP frame per message:\n{text}"
    );
    for l in &lines {
        let f: Vec<&str> = l.split('|').collect();
        assert!(f[0].contains("sctp:s1ap"), "{l}");
        assert!(f.get(2).is_none_or(|m| m.is_empty()), "malformed: {l}");
        // 8388608 = PI_ERROR.
        assert!(
            !f.get(3).is_some_and(|s| s.contains("8388608")),
            "expert error: {l}"
        );
    }
    let nas_frames = lines.iter().filter(|l| l.contains("nas-eps")).count();
    assert!(nas_frames >= 6, "NAS-EPS decoded in S1AP frames:\n{text}");
    let v = String::from_utf8_lossy(&verbose.unwrap().stdout).to_string();
    for want in [
        "S1SetupRequest",
        "InitialUEMessage",
        "Attach request",
        "Authentication request",
        "Security mode command",
        "InitialContextSetupRequest",
        "Attach accept",
        "Activate default EPS bearer context request",
        "UEContextReleaseCommand",
        "ErrorIndication",
    ] {
        assert!(v.contains(want), "tshark -V shows no {want:?}");
    }
    assert!(!v.contains("Malformed"), "malformed packet in:\n{v}");
}
