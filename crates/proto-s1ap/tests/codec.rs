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

/// HANDOVER REQUEST of srsRAN 4G's lib/test/asn1/s1ap_test.cc (test_ho_request): E-RAB 5
/// on S-GW TEID b7361c56, with a real Source-to-Target container.
const SRSRAN_HO_REQUEST: &str = "00010080e600000800000002006400010001000002400200000042000a183b9aca00603b9aca000035001900001b00144a1f0a0021f0b7361c5600093c0000008f4001000068007574005f0a100c81a00000180002e87fe40000150000000591000002900978000000627c1f50298f00e9ce021300009501004640000001901384001c006700a0518041400670dfbc44006b01400080020800c14ca2d54e2803517240e0591401217b000009f1070019b0100009f1070019c02100001f006b000518000c000000280021108b0dabd7e59834b3ef6cc1aaa727fbf45308ff74947ca71bd9b437b902786212";

#[test]
fn known_srsran_handover_request() {
    let S1ap::HandoverRequest(r) = decode(&h(SRSRAN_HO_REQUEST)).unwrap() else {
        panic!("not a HANDOVER REQUEST");
    };
    assert_eq!(r.mme_ue_id, 100);
    assert_eq!(r.cause, causes::radio_unspecified());
    assert_eq!((r.ambr_dl, r.ambr_ul), (1_000_000_000, 1_000_000_000));
    let e = &r.erabs[..];
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].erab_id, e[0].qci, e[0].sgw_teid), (5, 9, 0xb736_1c56));
    assert_eq!(e[0].sgw_addr, Ipv4Addr::new(10, 0, 33, 240));
    assert_eq!((r.ue_sec_enc, r.ue_sec_int), (0xc0, 0xc0));
    assert_eq!(r.security.ncc, 2);
    assert_eq!(r.security.nh[..2], [0x8b, 0x0d]);
    assert_eq!(r.source_to_target.len(), 116);
    // srsRAN's E-RAB item has an extension we drop; the rest survives re-encoding.
    let m = S1ap::HandoverRequest(r);
    assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
}

/// PAGING of srsRAN 4G's s1ap_test.cc (test_paging): by IMSI, CN domain PS, one TAI.
#[test]
fn known_srsran_paging() {
    let bytes = h("000a402a00000400504002b4c0002b40096854020430687405f7006d400100002e400b00002f40060054f24004d2");
    let m = decode(&bytes).unwrap();
    assert_eq!(
        m,
        S1ap::Paging(Paging {
            ue_identity_index: 723,
            identity: PagingIdentity::Imsi(h("54020430687405f7")),
            cn_domain: CNDomain::ps,
            tais: vec![Tai {
                plmn: [0x54, 0xf2, 0x40],
                tac: 1234
            }],
        })
    );
    assert_eq!(encode(&m).unwrap(), bytes);
}

/// A handover type other than intra-LTE, or a NAS PDU where none goes, is refused.
#[test]
fn unmodelled_forms_are_errors() {
    let mut ho = h(SRSRAN_HO_REQUEST);
    // HandoverType IE (id 1): intralte (0x00) -> ltetoutran (0x20).
    let at = ho
        .windows(5)
        .position(|w| w == [0x00, 0x01, 0x00, 0x01, 0x00])
        .unwrap();
    ho[at + 4] = 0x20;
    assert!(matches!(decode(&ho), Err(S1apError::Value(_))));
    let S1ap::HandoverRequest(mut r) = decode(&h(SRSRAN_HO_REQUEST)).unwrap() else {
        unreachable!()
    };
    r.erabs[0].nas = Some(vec![0x07]);
    assert!(encode(&S1ap::HandoverRequest(r)).is_err());
    let mut bearer = dedicated_bearer();
    bearer.nas = None;
    assert!(encode(&S1ap::ErabSetupRequest {
        mme_ue_id: 1,
        enb_ue_id: 1,
        erabs: vec![bearer]
    })
    .is_err());
}

/// The container of a real HANDOVER REQUEST: tshark decodes its RRC content.
fn source_to_target() -> Vec<u8> {
    match decode(&h(SRSRAN_HO_REQUEST)).unwrap() {
        S1ap::HandoverRequest(r) => r.source_to_target,
        _ => unreachable!(),
    }
}

/// TargeteNB-ToSourceeNB-TransparentContainer (APER) holding the smallest RRC
/// HandoverCommand (criticalExtensionsFuture, UPER 0x80).
const TARGET_TO_SOURCE: [u8; 3] = [0x00, 0x01, 0x80];

const S_TMSI: STmsi = STmsi {
    mme_code: 1,
    m_tmsi: 0xc000_0001,
};

/// A dedicated bearer, QCI 7, with its ACTIVATE DEDICATED EPS BEARER CONTEXT REQUEST
/// (EBI 6 linked to 5, one UDP packet filter) in an integrity-only envelope: an ESM
/// message on S1 is always security protected.
fn dedicated_bearer() -> ErabToSetup {
    ErabToSetup {
        erab_id: 6,
        qci: 7,
        arp_priority: 9,
        sgw_addr: Ipv4Addr::new(10, 77, 1, 30),
        sgw_teid: 0x2345,
        nas: Some(h("1700000000016200c505010706213101023011")),
        gbr: None,
    }
}

/// A GBR bearer (QCI 1) with the bit rates S1AP requires for it.
fn gbr_bearer() -> ErabToSetup {
    ErabToSetup {
        erab_id: 7,
        qci: 1,
        gbr: Some(GbrQos {
            mbr_downlink: 128_000,
            mbr_uplink: 128_000,
            gbr_downlink: 64_000,
            gbr_uplink: 64_000,
        }),
        ..dedicated_bearer()
    }
}

fn target_enb() -> TargetEnb {
    TargetEnb {
        plmn: PLMN,
        enb_id: 0x12346,
        tai: Tai { plmn: PLMN, tac: 2 },
    }
}

fn target_ecgi() -> Ecgi {
    Ecgi {
        plmn: PLMN,
        cell_id: 0x0123_4601,
    }
}

fn security() -> SecurityContext {
    SecurityContext {
        ncc: 1,
        nh: [0x5a; 32],
    }
}

/// Idle mode, dedicated bearers and both handovers, as the MME and the eNB emulator
/// will exchange them.
fn mobility_messages() -> Vec<S1ap> {
    let bearers = vec![BearerStatus {
        erab_id: 5,
        ul_pdcp_sn: 4,
        ul_hfn: 0,
        dl_pdcp_sn: 5,
        dl_hfn: 1,
    }];
    let target_tunnel = ErabSetup {
        erab_id: 5,
        enb_addr: Ipv4Addr::new(10, 77, 0, 22),
        enb_teid: 0x9abc,
    };
    vec![
        S1ap::Paging(Paging {
            // IMSI 001010000000001 mod 1024.
            ue_identity_index: 1,
            identity: PagingIdentity::STmsi(S_TMSI),
            cn_domain: CNDomain::ps,
            tais: vec![tai(), Tai { plmn: PLMN, tac: 2 }],
        }),
        S1ap::InitialUeMessage {
            enb_ue_id: 2,
            // SERVICE REQUEST (security header 12, KSI 0, seq 1, short MAC).
            nas: h("c7010203"),
            tai: tai(),
            ecgi: ecgi(),
            s_tmsi: Some(S_TMSI),
            rrc_cause: RRCEstablishmentCause::mt_Access,
        },
        S1ap::InitialUeMessage {
            enb_ue_id: 3,
            nas: h("c7010203"),
            tai: tai(),
            ecgi: ecgi(),
            s_tmsi: Some(S_TMSI),
            rrc_cause: RRCEstablishmentCause::mo_Data,
        },
        S1ap::ErabSetupRequest {
            mme_ue_id: 100,
            enb_ue_id: 1,
            erabs: vec![dedicated_bearer(), gbr_bearer()],
        },
        S1ap::ErabSetupResponse {
            mme_ue_id: 100,
            enb_ue_id: 1,
            erabs: vec![ErabSetup {
                erab_id: 6,
                enb_addr: Ipv4Addr::new(10, 77, 0, 21),
                enb_teid: 0x6789,
            }],
            failed: vec![],
        },
        S1ap::ErabSetupResponse {
            mme_ue_id: 100,
            enb_ue_id: 1,
            erabs: vec![],
            failed: vec![ErabFailed {
                erab_id: 7,
                cause: causes::radio_unspecified(),
            }],
        },
        S1ap::HandoverRequired(Box::new(HandoverRequired {
            mme_ue_id: 100,
            enb_ue_id: 1,
            cause: Cause::radioNetwork(CauseRadioNetwork::handover_desirable_for_radio_reason),
            target: target_enb(),
            source_to_target: source_to_target(),
        })),
        S1ap::HandoverRequest(Box::new(HandoverRequest {
            mme_ue_id: 100,
            cause: Cause::radioNetwork(CauseRadioNetwork::handover_desirable_for_radio_reason),
            ambr_dl: 100_000_000,
            ambr_ul: 50_000_000,
            erabs: vec![ErabToSetup {
                nas: None,
                ..dedicated_bearer()
            }],
            source_to_target: source_to_target(),
            ue_sec_enc: 0xc0,
            ue_sec_int: 0xc0,
            security: security(),
        })),
        S1ap::HandoverRequestAcknowledge {
            mme_ue_id: 100,
            enb_ue_id: 7,
            admitted: vec![target_tunnel],
            target_to_source: TARGET_TO_SOURCE.to_vec(),
        },
        S1ap::HandoverFailure {
            mme_ue_id: 100,
            cause: Cause::radioNetwork(
                CauseRadioNetwork::no_radio_resources_available_in_target_cell,
            ),
        },
        S1ap::HandoverCommand {
            mme_ue_id: 100,
            enb_ue_id: 1,
            target_to_source: TARGET_TO_SOURCE.to_vec(),
        },
        S1ap::HandoverPreparationFailure {
            mme_ue_id: 100,
            enb_ue_id: 1,
            cause: Cause::radioNetwork(CauseRadioNetwork::ho_target_not_allowed),
        },
        S1ap::EnbStatusTransfer(StatusTransfer {
            mme_ue_id: 100,
            enb_ue_id: 1,
            bearers: bearers.clone(),
        }),
        S1ap::MmeStatusTransfer(StatusTransfer {
            mme_ue_id: 100,
            enb_ue_id: 7,
            bearers,
        }),
        S1ap::HandoverNotify {
            mme_ue_id: 100,
            enb_ue_id: 7,
            tai: target_enb().tai,
            ecgi: target_ecgi(),
        },
        // The source's release once the UE is at the target.
        S1ap::UeContextReleaseCommand {
            mme_ue_id: 100,
            enb_ue_id: Some(1),
            cause: causes::successful_handover(),
        },
        S1ap::HandoverCancel {
            mme_ue_id: 100,
            enb_ue_id: 1,
            cause: Cause::radioNetwork(CauseRadioNetwork::handover_cancelled),
        },
        S1ap::HandoverCancelAcknowledge {
            mme_ue_id: 100,
            enb_ue_id: 1,
        },
        S1ap::PathSwitchRequest(Box::new(PathSwitchRequest {
            enb_ue_id: 8,
            source_mme_ue_id: 100,
            erabs: vec![target_tunnel],
            tai: target_enb().tai,
            ecgi: target_ecgi(),
            ue_sec_enc: 0xc0,
            ue_sec_int: 0xc0,
        })),
        S1ap::PathSwitchRequestAcknowledge {
            mme_ue_id: 100,
            enb_ue_id: 8,
            security: security(),
            ue_sec: None,
        },
        // The target eNB sent other UE security capabilities: the MME's go back.
        S1ap::PathSwitchRequestAcknowledge {
            mme_ue_id: 100,
            enb_ue_id: 8,
            security: security(),
            ue_sec: Some((0xe0, 0x40)),
        },
        S1ap::PathSwitchRequestFailure {
            mme_ue_id: 100,
            enb_ue_id: 8,
            cause: causes::radio_unspecified(),
        },
    ]
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
        pdn_address: msg::PdnAddress::Ipv4([10, 45, 0, 2]),
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
            s_tmsi: None,
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
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
                gbr: None,
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
    .into_iter()
    .chain(mobility_messages())
    .collect()
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
        .args(["-e", "s1ap.m_TMSI", "-e", "s1ap.gTP_TEID"])
        .args(["-e", "s1ap.RRC_Establishment_Cause", "-e", "s1ap.CNDomain"])
        .args(["-e", "s1ap.pDCP_SN", "-e", "s1ap.macroENB_ID"])
        .args([
            "-e",
            "s1ap.nextHopChainingCount",
            "-e",
            "s1ap.encryptionAlgorithms",
        ])
        .args(["-e", "s1ap.radioNetwork"])
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
    // Per frame, in the order sent: procedure code and the fields each message sets.
    let hex = |f: &str| f.replace(':', "").to_lowercase();
    let fields: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('|').map(hex).collect())
        .collect();
    for (m, f) in messages.iter().zip(&fields) {
        let code = proto_s1ap::asn::s1ap::S1AP_PDU::decode(&encode(m).unwrap())
            .unwrap()
            .procedure_code();
        assert_eq!(f[1], code.to_string(), "procedureCode of {m:?}: {f:?}");
        let want: &[(usize, &str)] = match m {
            S1ap::Paging(_) => &[(4, "3221225473"), (7, "0")],
            S1ap::InitialUeMessage {
                s_tmsi: Some(_),
                rrc_cause,
                ..
            } => &[
                (4, "3221225473"),
                (
                    6,
                    if *rrc_cause == RRCEstablishmentCause::mt_Access {
                        "2"
                    } else {
                        "4"
                    },
                ),
            ],
            S1ap::InitialUeMessage { .. } => &[(6, "3")],
            S1ap::ErabSetupRequest { .. } => &[(5, "00002345,00002345")],
            S1ap::HandoverRequest(_) => &[(5, "00002345"), (10, "1")],
            S1ap::HandoverRequestAcknowledge { .. } | S1ap::PathSwitchRequest(_) => {
                &[(5, "00009abc")]
            }
            S1ap::EnbStatusTransfer(_) | S1ap::MmeStatusTransfer(_) => &[(8, "4,5")],
            // The 20-bit eNB ID 0x12346, shown as its octets.
            S1ap::HandoverRequired(_) => &[(9, "123460")],
            // NCC 1; the UE security capabilities only when the MME corrects them.
            S1ap::PathSwitchRequestAcknowledge { ue_sec: None, .. } => &[(10, "1"), (11, "")],
            S1ap::PathSwitchRequestAcknowledge {
                ue_sec: Some(_), ..
            } => &[(10, "1"), (11, "e000")],
            // radioNetwork causes 4: handover-cancelled, 2: successful-handover.
            S1ap::HandoverCancel { .. } => &[(12, "4")],
            S1ap::UeContextReleaseCommand { cause, .. }
                if *cause == causes::successful_handover() =>
            {
                &[(12, "2")]
            }
            _ => &[],
        };
        for (i, v) in want {
            assert_eq!(f.get(*i).map(String::as_str), Some(*v), "{m:?}: {f:?}");
        }
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
        "Paging",
        "Security header for the SERVICE REQUEST message",
        "Activate dedicated EPS bearer context request",
        "E-RABSetupResponse",
        "e-RAB-GuaranteedBitrateDL: 64000bits/s",
        "HandoverRequired",
        "HandoverPreparationInformation",
        "HandoverRequestAcknowledge",
        "HandoverCommand",
        "ENBStatusTransfer",
        "MMEStatusTransfer",
        "HandoverNotify",
        "HandoverCancelAcknowledge",
        "PathSwitchRequestAcknowledge",
        "PathSwitchRequestFailure",
    ] {
        assert!(v.contains(want), "tshark -V shows no {want:?}");
    }
    assert!(!v.contains("Malformed"), "malformed packet in:\n{v}");
}
