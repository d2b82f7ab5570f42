//! Writes the seed corpora under fuzz/corpus/<target>/ from the crates' own builders
//! and samples: `cargo run --example gen_seeds` (from fuzz/, a normal build).
//! Files are named by content hash, so running it again changes nothing.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use proto_diameter::base::{self, Identity, ResultCode};
use proto_diameter::codes::*;
use proto_diameter::s6a::*;
use proto_nas::{msg, Direction, NasSecurity, SecurityHeader};
use proto_s1ap::*;
use proto_sctp::{wire, SctpConfig, SctpStack};

const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

fn fnv(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn put(target: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{:016x}", fnv(data))), data).unwrap();
}

fn with(prefix: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![prefix];
    v.extend_from_slice(data);
    v
}

struct Nas {
    attach: Vec<u8>,
    auth: Vec<u8>,
    smc: Vec<u8>,
    accept: Vec<u8>,
}

fn nas() -> Nas {
    let attach =
        msg::attach_request("001010000000001", &[0xe0, 0xe0], &Default::default()).unwrap();
    let auth = msg::authentication_request(0, &[1; 16], &[2; 16]).unwrap();
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
    Nas {
        attach,
        auth,
        smc,
        accept,
    }
}

fn s1ap_seeds() {
    let n = nas();
    let tai = Tai { plmn: PLMN, tac: 1 };
    let ecgi = Ecgi {
        plmn: PLMN,
        cell_id: 0x0001_2301,
    };
    let msgs = vec![
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
            nas: n.attach.clone(),
            tai,
            ecgi,
            s_tmsi: None,
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
        },
        S1ap::DownlinkNasTransport {
            mme_ue_id: 100,
            enb_ue_id: 1,
            nas: n.smc.clone(),
        },
        S1ap::UplinkNasTransport {
            mme_ue_id: 100,
            enb_ue_id: 1,
            nas: msg::authentication_response(&[3; 8]).unwrap(),
            tai,
            ecgi,
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
                nas: Some(n.accept.clone()),
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
    ];
    for m in &msgs {
        put("s1ap", &encode(m).unwrap());
    }
}

fn nas_seeds() {
    let n = nas();
    let up = 0x80;
    let plain_dl = [
        n.auth.clone(),
        n.accept.clone(),
        msg::security_mode_command(0, 2, 2, &[0xe0, 0xe0]).unwrap(),
        msg::attach_reject(7).unwrap(),
        msg::detach_accept().unwrap(),
    ];
    let plain_ul = [
        n.attach.clone(),
        msg::authentication_response(&[3; 8]).unwrap(),
        msg::authentication_failure(21, Some([5; 14])).unwrap(),
        msg::security_mode_complete().unwrap(),
        msg::attach_complete(5).unwrap(),
    ];
    for p in &plain_dl {
        put("nas", &with(0, p)); // parse
        put("nas", &with(3, p)); // protect -> open, EEA0/EIA1 integrity only
    }
    put("nas", &with(0x7b, &n.accept)); // protect -> open, ciphered EEA2/EIA3
    for p in &plain_ul {
        put("nas", &with(up, p));
    }
    put("nas", &with(up | 0x43 | 0x14, &plain_ul[3]));
    put("nas", &with(1, &n.smc)); // open without a context
    put("nas", &with(2, &n.smc)); // open with the fixed (wrong) context
}

fn diameter_seeds() {
    let mme = Identity {
        origin_host: "mme.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        host_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 20)),
        product_name: "corehop".into(),
        origin_state_id: 1_700_000_000,
    };
    let hss = Identity {
        origin_host: "hss.corehop.lab".into(),
        host_ip: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 10)),
        origin_state_id: 7,
        ..mme.clone()
    };
    let cer = base::cer(&mme);
    let dwr = base::dwr(&mme);
    let air = AuthInfoRequest {
        session_id: "mme.corehop.lab;1;1".into(),
        origin_host: "mme.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        destination_host: None,
        destination_realm: "corehop.lab".into(),
        imsi: "001010000000001".into(),
        visited_plmn_id: PLMN,
        num_vectors: 1,
        immediate_response_preferred: true,
        resync_info: Some([6; 30]),
    }
    .to_message();
    let aia = AuthInfoAnswer {
        session_id: "mme.corehop.lab;1;1".into(),
        origin_host: "hss.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        result: ResultCode::SUCCESS,
        vectors: vec![EutranVector {
            rand: [1; 16],
            xres: vec![2; 8],
            autn: [3; 16],
            kasme: [4; 32],
        }],
    }
    .to_message(&air);
    let ulr = UpdateLocationRequest {
        session_id: "mme.corehop.lab;1;2".into(),
        origin_host: "mme.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        destination_host: Some("hss.corehop.lab".into()),
        destination_realm: "corehop.lab".into(),
        imsi: "001010000000001".into(),
        visited_plmn_id: PLMN,
        rat_type: RAT_TYPE_EUTRAN,
        ulr_flags: ULR_FLAG_S6A_S6D_INDICATOR,
    }
    .to_message();
    let ula = UpdateLocationAnswer {
        session_id: "mme.corehop.lab;1;2".into(),
        origin_host: "hss.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        result: ResultCode::SUCCESS,
        ula_flags: Some(ULA_FLAG_SEPARATION_INDICATION),
        subscription: Some(SubscriptionData {
            msisdn: Some("4412345".into()),
            subscriber_status: SUBSCRIBER_STATUS_SERVICE_GRANTED,
            network_access_mode: NETWORK_ACCESS_MODE_ONLY_PACKET,
            ambr: Ambr {
                uplink: 100_000_000,
                downlink: 200_000_000,
            },
            default_context_identifier: 1,
            apns: vec![ApnConfiguration {
                context_identifier: 1,
                apn: "internet".into(),
                pdn_type: PDN_TYPE_IPV4,
                qci: 9,
                arp: Arp {
                    priority_level: 8,
                    pre_emption_capability: PRE_EMPTION_CAPABILITY_DISABLED,
                    pre_emption_vulnerability: PRE_EMPTION_VULNERABILITY_ENABLED,
                },
                ambr: None,
            }],
        }),
    }
    .to_message(&ulr);
    let all = [
        base::cea(&cer, &hss, DIAMETER_SUCCESS),
        cer.clone(),
        base::dwa(&dwr, &hss),
        dwr.clone(),
        base::dpr(&mme, DISCONNECT_CAUSE_REBOOTING),
        base::error_answer(&air, &hss, 5001, "user unknown"),
        air,
        aia,
        ulr,
        ula,
    ];
    for (i, m) in all.iter().enumerate() {
        put("diameter", &with((i * 37) as u8, &m.encode()));
    }
    // A stream of two messages plus a partial third (framer).
    let mut stream = cer.encode();
    stream.extend_from_slice(&dwr.encode());
    stream.extend_from_slice(&dwr.encode()[..10]);
    put("diameter", &with(0x55, &stream));
}

fn gtpv2c_seeds() {
    for m in proto_gtpv2c::samples::all() {
        put("gtpv2c", &m.encode().unwrap());
    }
}

fn gtpu_seeds() {
    use proto_gtpu::{icmp, Gtpu};
    let ping = icmp::echo_request(
        Ipv4Addr::new(10, 45, 0, 2),
        Ipv4Addr::new(10, 77, 0, 31),
        7,
        1,
        b"corehop",
    )
    .unwrap();
    put("gtpu", &ping);
    let msgs = [
        Gtpu::EchoRequest { seq: 1 },
        Gtpu::EchoResponse {
            seq: 1,
            recovery: 0,
        },
        Gtpu::ErrorIndication {
            teid: 0x1234,
            peer: IpAddr::V4(Ipv4Addr::new(10, 77, 1, 30)),
        },
        Gtpu::EndMarker { teid: 0x1234 },
        Gtpu::GPdu {
            teid: 0x5678,
            seq: None,
            payload: &ping,
        },
        Gtpu::GPdu {
            teid: 0x5678,
            seq: Some(9),
            payload: &ping,
        },
    ];
    for m in &msgs {
        put("gtpu", &m.encode().unwrap());
    }
}

/// A real association's packets (server's view): INIT, COOKIE ECHO, DATA, SACK...
fn sctp_seeds() {
    let server_addr: SocketAddr = "10.77.1.20:9899".parse().unwrap();
    let client_addr: SocketAddr = "10.77.0.21:9899".parse().unwrap();
    let now = Instant::now();
    let mut server = SctpStack::new(SctpConfig::default(), true);
    let mut client = SctpStack::new(SctpConfig::default(), false);
    let id = client.connect(now, server_addr).unwrap();
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    let mut sent = false;
    for _ in 0..8 {
        while let Some((_, p)) = client.poll_transmit() {
            to_server.push(p.to_vec());
            server.handle_datagram(now, client_addr, &p);
        }
        while let Some((_, p)) = server.poll_transmit() {
            to_client.push(p.to_vec());
            client.handle_datagram(now, server_addr, &p);
        }
        if !sent && client.send(now, id, 0, b"\x00\x11\x00\x00").is_ok() {
            sent = true;
        }
    }
    let hb = wire::heartbeat_packet(9899, 9899, 0, b"12345678");
    let abort = wire::abort_packet(9899, 9899, 0);
    let frame = |flags: u8, pkts: &[&Vec<u8>]| {
        let mut v = vec![flags];
        for p in pkts {
            v.push(p.len().min(255) as u8);
            v.extend_from_slice(&p[..p.len().min(255)]);
        }
        v
    };
    // Raw INIT on a fresh server; the same with its checksum kept.
    put("sctp", &frame(0, &[&to_server[0]]));
    put("sctp", &frame(4, &[&to_server[0]]));
    // After the handshake, with the right tag: DATA/SACK, HEARTBEAT, ABORT.
    for p in to_server.iter().skip(1) {
        put("sctp", &frame(1 | 2 | 0x20, &[p, &hb]));
    }
    put("sctp", &frame(1 | 2, &[&abort]));
    // The client side fed the server's packets.
    for p in &to_client {
        put("sctp", &frame(1 | 2 | 8, &[p]));
    }
}

fn agent_seeds() {
    let frame = |json: &str| {
        let mut v = vec![0u8];
        v.extend_from_slice(&(json.len() as u32).to_be_bytes());
        v.extend_from_slice(json.as_bytes());
        v
    };
    let spec = r#"{"name":"mme","program":"/usr/local/bin/corehop","args":["nf","run","mme"],"service_ip":"10.77.1.20","prefix_len":16,"flavor_name":"small","flavor":{"cpus":0.5,"memory_mb":256},"tun":false,"tunnel_list":{"file":"/run/t","sync_file":"/run/s"},"sgi":{"name":"sgi0","address":"10.45.0.1/16","mtu":1400}}"#;
    let reqs = [
        r#"{"op":"hello"}"#.to_string(),
        r#"{"op":"ps"}"#.to_string(),
        format!(r#"{{"op":"run","spec":{spec}}}"#),
        format!(r#"{{"op":"prepare","spec":{spec}}}"#),
        r#"{"op":"checkpoint","name":"mme","round":"r1","leave_running":false,"parent":"r0","pre_dump":true}"#.to_string(),
        r#"{"op":"push","name":"mme","round":"r1","to":"10.77.0.12:7070"}"#.to_string(),
        r#"{"op":"receive","name":"mme","round":"r1","size":1234,"sha256":"00ff"}"#.to_string(),
        r#"{"op":"restore","name":"mme","round":"r1"}"#.to_string(),
        r#"{"op":"plug","name":"spgw"}"#.to_string(),
    ];
    for r in &reqs {
        put("agent_frame", &frame(r));
    }
    // Two frames back to back.
    let mut two = frame(&reqs[0]);
    two.extend_from_slice(&frame(&reqs[7])[1..]);
    put("agent_frame", &two);
    // A client's proof during the handshake.
    let proof = r#"{"nonce":"00112233","mac":"deadbeef"}"#;
    let mut p = vec![1u8];
    p.extend_from_slice(&(proof.len() as u32).to_be_bytes());
    p.extend_from_slice(proof.as_bytes());
    put("agent_frame", &p);
}

fn main() {
    s1ap_seeds();
    nas_seeds();
    diameter_seeds();
    gtpv2c_seeds();
    gtpu_seeds();
    sctp_seeds();
    agent_seeds();
}
