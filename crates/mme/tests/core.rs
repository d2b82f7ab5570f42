//! The MME state machine driven with S1AP bytes and synthetic S6a/S11 answers.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::{Reaction, TestUe, PLMN};
use mme::{Action, Config, MmeCore, UeState};
use proto_diameter::base::ResultCode;
use proto_diameter::s6a::{
    Ambr, ApnConfiguration, Arp, AuthInfoAnswer, EutranVector, SubscriptionData,
    UpdateLocationAnswer,
};
use proto_gtpv2c::{self as gtp, BearerContext, Fteid, Paa};
use proto_s1ap::{self as s1ap, Ecgi, RRCEstablishmentCause, S1ap, Tai};
use proto_sctp::AssocId;

const A: AssocId = AssocId(1);
const ENB_UE: u32 = 77;

fn core() -> MmeCore {
    let mut c = MmeCore::new(Config::default()).unwrap();
    c.on_sctp_up(A, "10.77.0.21:40000".parse::<SocketAddr>().unwrap());
    c
}

fn s1(c: &mut MmeCore, m: S1ap) {
    c.on_s1ap(A, &s1ap::encode(&m).unwrap());
}

/// The S1AP messages the core sent, decoded.
fn sent(actions: &[Action]) -> Vec<S1ap> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::S1ap { assoc, pdu, .. } => {
                assert_eq!(*assoc, A);
                Some(s1ap::decode(pdu).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn setup(c: &mut MmeCore) {
    s1(
        c,
        S1ap::S1SetupRequest(s1ap::S1SetupRequest {
            plmn: PLMN,
            enb_id: 1,
            enb_name: Some("test".into()),
            tacs: vec![1],
        }),
    );
    let out = sent(&c.take_actions());
    assert!(matches!(&out[..], [S1ap::S1SetupResponse(r)] if r.mme_code == 1 && r.plmn == PLMN));
}

fn tai() -> Tai {
    Tai { plmn: PLMN, tac: 1 }
}

fn ecgi() -> Ecgi {
    Ecgi {
        plmn: PLMN,
        cell_id: 0x10,
    }
}

fn uplink(mme_ue_id: u32, nas: Vec<u8>) -> S1ap {
    S1ap::UplinkNasTransport {
        mme_ue_id,
        enb_ue_id: ENB_UE,
        nas,
        tai: tai(),
        ecgi: ecgi(),
    }
}

/// The single downlink NAS PDU among `out`, with the MME UE id it was sent for.
fn downlink(out: &[S1ap]) -> (u32, Vec<u8>) {
    let d: Vec<_> = out
        .iter()
        .filter_map(|m| match m {
            S1ap::DownlinkNasTransport {
                mme_ue_id,
                enb_ue_id,
                nas,
            } => {
                assert_eq!(*enb_ue_id, ENB_UE);
                Some((*mme_ue_id, nas.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(d.len(), 1, "{out:?}");
    d[0].clone()
}

fn aia_for(ue: &TestUe) -> AuthInfoAnswer {
    let n: u32 = ue.imsi[5..].parse().unwrap();
    let k = format!("465b5ce8b199b49faa5f0a2e{n:08}");
    let opc = format!("cd63cb71954a9f4e48a5994e{n:08}");
    let h = |s: &str| -> [u8; 16] {
        let v: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    };
    let v = aka::generate_vector(&h(&k), &h(&opc), &[0x80, 0], 32, &[0x42; 16]);
    AuthInfoAnswer {
        session_id: "s".into(),
        origin_host: "hss".into(),
        origin_realm: "lab".into(),
        result: ResultCode::SUCCESS,
        vectors: vec![EutranVector {
            rand: v.rand,
            xres: v.xres.to_vec(),
            autn: v.autn,
            kasme: v.kasme,
        }],
    }
}

fn ula() -> UpdateLocationAnswer {
    UpdateLocationAnswer {
        session_id: "s".into(),
        origin_host: "hss".into(),
        origin_realm: "lab".into(),
        result: ResultCode::SUCCESS,
        ula_flags: Some(1),
        subscription: Some(SubscriptionData {
            msisdn: Some("4477".into()),
            subscriber_status: 0,
            network_access_mode: 2,
            ambr: Ambr {
                uplink: 50_000_000,
                downlink: 100_000_000,
            },
            default_context_identifier: 1,
            apns: vec![ApnConfiguration {
                context_identifier: 1,
                apn: "internet".into(),
                pdn_type: 0,
                qci: 9,
                arp: Arp {
                    priority_level: 8,
                    pre_emption_capability: 1,
                    pre_emption_vulnerability: 1,
                },
                ambr: None,
            }],
        }),
    }
}

/// Runs an attach up to the AUTHENTICATION REQUEST; returns the MME UE id.
fn start(c: &mut MmeCore, ue: &TestUe, aia: AuthInfoAnswer) -> (u32, Vec<S1ap>) {
    s1(
        c,
        S1ap::InitialUeMessage {
            enb_ue_id: ENB_UE,
            nas: ue.attach_request(),
            tai: tai(),
            ecgi: ecgi(),
            s_tmsi: None,
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
        },
    );
    let acts = c.take_actions();
    let id = match &acts[..] {
        [Action::Air {
            ue: id,
            imsi,
            resync: None,
        }] => {
            assert_eq!(imsi, &ue.imsi);
            *id
        }
        other => panic!("{other:?}"),
    };
    c.on_aia(id, Ok(aia));
    (id, sent(&c.take_actions()))
}

#[test]
fn full_attach_and_detach() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(1);
    let (id, out) = start(&mut c, &ue, aia_for(&ue));
    // Authentication.
    let Reaction::Reply(res) = ue.on_downlink(&downlink(&out).1) else {
        panic!()
    };
    s1(&mut c, uplink(id, res));
    // Security mode command (integrity protected, new context).
    let (_, smc) = downlink(&sent(&c.take_actions()));
    assert_eq!(smc[0], 0x37);
    let Reaction::Reply(done) = ue.on_downlink(&smc) else {
        panic!()
    };
    s1(&mut c, uplink(id, done));
    let acts = c.take_actions();
    assert!(
        matches!(&acts[..], [Action::Ulr { ue: u, .. }] if *u == id),
        "{acts:?}"
    );
    // Update location, then Create Session towards the SPGW.
    c.on_ula(id, Ok(ula()));
    let acts = c.take_actions();
    let csr = match &acts[..] {
        [Action::S11 {
            teid: 0,
            msg: gtp::Message::CreateSessionRequest(r),
            ..
        }] => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(csr.imsi, ue.imsi);
    assert_eq!(csr.apn, "internet");
    assert_eq!(csr.sender_fteid.teid, id);
    let sgw_s1u = Fteid::v4(gtp::iface::S1U_SGW, 0x99, Ipv4Addr::new(10, 77, 1, 30));
    c.on_s11(
        id,
        Ok(gtp::Message::CreateSessionResponse(
            gtp::CreateSessionResponse {
                cause: gtp::cause::REQUEST_ACCEPTED,
                sender_fteid: Some(Fteid::v4(
                    gtp::iface::S11S4_SGW,
                    0x55,
                    Ipv4Addr::new(10, 77, 1, 30),
                )),
                paa: Some(Paa::Ipv4(Ipv4Addr::new(10, 45, 0, 2))),
                bearer_contexts: vec![BearerContext {
                    ebi: 5,
                    cause: Some(16),
                    fteids: vec![(0, sgw_s1u)],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
    );
    // Initial Context Setup with the ATTACH ACCEPT inside.
    let out = sent(&c.take_actions());
    let ics = match &out[..] {
        [S1ap::InitialContextSetupRequest(r)] => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(ics.erabs[0].sgw_teid, 0x99);
    assert_eq!(ics.erabs[0].sgw_addr, Ipv4Addr::new(10, 77, 1, 30));
    assert_eq!((ics.ue_sec_enc, ics.ue_sec_int), (0xc0, 0xc0));
    let accept = ics.erabs[0].nas.clone().unwrap();
    let Reaction::Accepted { ip, ebi, .. } = ue.on_downlink(&accept) else {
        panic!()
    };
    assert_eq!((ip, ebi), ([10, 45, 0, 2], 5));
    assert_eq!(Some(ics.kenb), ue.kenb(), "UE and MME derive the same KeNB");
    // ICS response → Modify Bearer with the eNB F-TEID.
    s1(
        &mut c,
        S1ap::InitialContextSetupResponse {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            erabs: vec![s1ap::ErabSetup {
                erab_id: 5,
                enb_addr: Ipv4Addr::new(10, 77, 0, 21),
                enb_teid: 0x77,
            }],
        },
    );
    let acts = c.take_actions();
    match &acts[..] {
        [Action::S11 {
            teid: 0x55,
            msg: gtp::Message::ModifyBearerRequest(r),
            ..
        }] => assert_eq!(r.bearer_contexts[0].fteid(0).unwrap().teid, 0x77),
        other => panic!("{other:?}"),
    }
    c.on_s11(
        id,
        Ok(gtp::Message::ModifyBearerResponse(
            gtp::ModifyBearerResponse {
                cause: 16,
                ..Default::default()
            },
        )),
    );
    let complete = ue.attach_complete(5);
    s1(&mut c, uplink(id, complete));
    let v = c.ues();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].state, UeState::Attached);
    assert!(v[0].bearer_active);
    assert_eq!(v[0].ue_ip, Some(Ipv4Addr::new(10, 45, 0, 2)));
    assert_eq!((v[0].ul_nas_count, v[0].dl_nas_count), (Some(2), Some(2)));
    assert!(c.take_changed());

    // Replay of the ATTACH COMPLETE is dropped (COUNT already used).
    // Detach (not switch-off): DETACH ACCEPT, Delete Session, release.
    let det = ue.detach_request(false);
    s1(&mut c, uplink(id, det));
    let acts = c.take_actions();
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::S11 {
            teid: 0x55,
            msg: gtp::Message::DeleteSessionRequest(_),
            ..
        }
    )));
    let (_, acc) = downlink(&sent(&acts));
    assert_eq!(ue.on_downlink(&acc), Reaction::DetachAccept);
    c.on_s11(
        id,
        Ok(gtp::Message::DeleteSessionResponse(
            gtp::DeleteSessionResponse {
                cause: 16,
                recovery: None,
            },
        )),
    );
    let out = sent(&c.take_actions());
    assert!(matches!(
        &out[..],
        [S1ap::UeContextReleaseCommand {
            enb_ue_id: Some(ENB_UE),
            ..
        }]
    ));
    s1(
        &mut c,
        S1ap::UeContextReleaseComplete {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
        },
    );
    assert!(c.ues().is_empty());
}

#[test]
fn wrong_res_gets_authentication_reject() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(2);
    ue.set_wrong_res();
    let (id, out) = start(&mut c, &ue, aia_for(&ue));
    let Reaction::Reply(res) = ue.on_downlink(&downlink(&out).1) else {
        panic!()
    };
    s1(&mut c, uplink(id, res));
    let out = sent(&c.take_actions());
    assert_eq!(ue.on_downlink(&downlink(&out).1), Reaction::AuthReject);
    assert!(out
        .iter()
        .any(|m| matches!(m, S1ap::UeContextReleaseCommand { .. })));
    s1(
        &mut c,
        S1ap::UeContextReleaseComplete {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
        },
    );
    assert!(c.ues().is_empty());
}

#[test]
fn unknown_imsi_gets_attach_reject_8() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(3);
    let mut aia = aia_for(&ue);
    aia.result = ResultCode::USER_UNKNOWN;
    aia.vectors.clear();
    let (_, out) = start(&mut c, &ue, aia);
    assert_eq!(ue.on_downlink(&downlink(&out).1), Reaction::AttachReject(8));
    assert!(out
        .iter()
        .any(|m| matches!(m, S1ap::UeContextReleaseCommand { .. })));
}

#[test]
fn bad_input_never_harms_other_ues() {
    let mut c = core();
    setup(&mut c);
    let ue = TestUe::example(4);
    let (id, _) = start(&mut c, &ue, aia_for(&ue));
    // Garbage S1AP: an ERROR INDICATION, nothing else.
    for junk in [&[][..], &[0xff; 40][..], &[0x00, 0x0c, 0x40, 0x80][..]] {
        c.on_s1ap(A, junk);
        let out = sent(&c.take_actions());
        assert!(
            matches!(&out[..], [S1ap::ErrorIndication { .. }]),
            "{out:?}"
        );
    }
    // Garbage NAS in a valid S1AP message, and an unknown UE id pair.
    s1(&mut c, uplink(id, vec![0x07, 0x5d, 0xff]));
    assert!(c.take_actions().is_empty());
    s1(&mut c, uplink(id + 100, vec![0x07, 0x5d]));
    let out = sent(&c.take_actions());
    assert!(matches!(
        &out[..],
        [S1ap::ErrorIndication {
            mme_ue_id: Some(_),
            ..
        }]
    ));
    // Messages from an association that never did S1 Setup are refused.
    c.on_sctp_up(AssocId(9), "10.77.0.22:1".parse().unwrap());
    c.on_s1ap(
        AssocId(9),
        &s1ap::encode(&S1ap::InitialUeMessage {
            enb_ue_id: 1,
            nas: ue.attach_request(),
            tai: tai(),
            ecgi: ecgi(),
            s_tmsi: None,
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
        })
        .unwrap(),
    );
    assert!(c
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Air { .. })));
    // The first UE is still waiting for its authentication response.
    assert_eq!(c.ues().len(), 1);
    assert_eq!(c.ues()[0].state, UeState::WaitAuthResponse);
}

#[test]
fn s1_setup_from_another_plmn_fails() {
    let mut c = core();
    s1(
        &mut c,
        S1ap::S1SetupRequest(s1ap::S1SetupRequest {
            plmn: [0x02, 0xf8, 0x39],
            enb_id: 1,
            enb_name: None,
            tacs: vec![1],
        }),
    );
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::S1SetupFailure { .. }]
    ));
}

/// The RAN emulator's S1-MME probe: an empty ENB CONFIGURATION UPDATE is acknowledged
/// on stream 0; an acknowledge sent *to* the MME is not answered.
#[test]
fn enb_configuration_update_is_acknowledged() {
    use s1ap::asn::{build_s1ap, s1ap::S1AP_PDU, S1apPduKind};
    let mut c = core();
    setup(&mut c);
    let update = build_s1ap!(
        InitiatingMessage,
        ENBConfigurationUpdate,
        ENBConfigurationUpdate,
    )
    .unwrap()
    .encode()
    .unwrap();
    c.on_s1ap(A, &update);
    let acts = c.take_actions();
    let [Action::S1ap { stream: 0, pdu, .. }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(
        S1AP_PDU::decode(pdu).unwrap().kind(),
        S1apPduKind::Successful_ENBConfigurationUpdate
    );
    c.on_s1ap(A, pdu);
    assert!(sent(&c.take_actions()).is_empty());
}
