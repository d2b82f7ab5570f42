//! An MmeCore driven with S1AP bytes and synthetic S6a/S11 answers: the eNBs, the
//! SPGW's and HSS's answers and a whole attach, on any of the test associations.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use mme::{Action, Config, MmeCore, UeState};
use proto_diameter::base::ResultCode;
use proto_diameter::s6a::{
    Ambr, ApnConfiguration, Arp, AuthInfoAnswer, EutranVector, SubscriptionData,
    UpdateLocationAnswer,
};
use proto_gtpv2c::{self as gtp, BearerContext, Fteid, Paa};
use proto_s1ap::{self as s1ap, Ecgi, RRCEstablishmentCause, S1ap, Tai};
use proto_sctp::AssocId;

use super::{Reaction, TestUe, PLMN};

/// The first eNB (eNB ID 1, TAC 1), and the eNB UE S1AP ID its UEs get.
pub const A: AssocId = AssocId(1);
pub const ENB_UE: u32 = 77;

/// One S1 connection of a UE: the eNB's association and its id for the UE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub assoc: AssocId,
    pub enb_ue_id: u32,
}

pub const ON_A: At = At {
    assoc: A,
    enb_ue_id: ENB_UE,
};

pub fn core() -> MmeCore {
    let mut c = MmeCore::new(Config::default()).unwrap();
    c.on_sctp_up(A, "10.77.0.21:40000".parse::<SocketAddr>().unwrap());
    c
}

pub fn s1(c: &mut MmeCore, m: S1ap) {
    s1_on(c, A, m);
}

/// `m` from the eNB of `assoc`.
pub fn s1_on(c: &mut MmeCore, assoc: AssocId, m: S1ap) {
    c.on_s1ap(Instant::now(), assoc, &s1ap::encode(&m).unwrap());
}

/// The S1AP messages the core sent, decoded: all to A.
pub fn sent(actions: &[Action]) -> Vec<S1ap> {
    sent_on(A, actions)
}

/// The S1AP messages the core sent, decoded: all to `to`.
pub fn sent_on(to: AssocId, actions: &[Action]) -> Vec<S1ap> {
    sent_to(actions)
        .into_iter()
        .map(|(assoc, m)| {
            assert_eq!(assoc, to, "{m:?}");
            m
        })
        .collect()
}

pub fn setup(c: &mut MmeCore) {
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

pub fn tai() -> Tai {
    Tai { plmn: PLMN, tac: 1 }
}

pub fn ecgi() -> Ecgi {
    Ecgi {
        plmn: PLMN,
        cell_id: 0x10,
    }
}

pub fn uplink(mme_ue_id: u32, nas: Vec<u8>) -> S1ap {
    uplink_at(ON_A, mme_ue_id, nas)
}

pub fn uplink_at(at: At, mme_ue_id: u32, nas: Vec<u8>) -> S1ap {
    S1ap::UplinkNasTransport {
        mme_ue_id,
        enb_ue_id: at.enb_ue_id,
        nas,
        tai: tai(),
        ecgi: ecgi(),
    }
}

/// The single downlink NAS PDU among `out`, with the MME UE id it was sent for.
pub fn downlink(out: &[S1ap]) -> (u32, Vec<u8>) {
    downlink_at(ON_A, out)
}

pub fn downlink_at(at: At, out: &[S1ap]) -> (u32, Vec<u8>) {
    let d: Vec<_> = out
        .iter()
        .filter_map(|m| match m {
            S1ap::DownlinkNasTransport {
                mme_ue_id,
                enb_ue_id,
                nas,
            } => {
                assert_eq!(*enb_ue_id, at.enb_ue_id);
                Some((*mme_ue_id, nas.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(d.len(), 1, "{out:?}");
    d[0].clone()
}

pub fn aia_for(ue: &TestUe) -> AuthInfoAnswer {
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

pub fn ula() -> UpdateLocationAnswer {
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

/// The SPGW's session: S11 TEID 0x55, S1-U TEID 0x99, UE address 10.45.0.2.
pub fn create_session_response() -> gtp::Message {
    let sgw_s1u = Fteid::v4(gtp::iface::S1U_SGW, 0x99, Ipv4Addr::new(10, 77, 1, 30));
    gtp::Message::CreateSessionResponse(gtp::CreateSessionResponse {
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
    })
}

/// Runs an attach up to the AUTHENTICATION REQUEST; returns the MME UE id.
pub fn start(c: &mut MmeCore, ue: &TestUe, aia: AuthInfoAnswer) -> (u32, Vec<S1ap>) {
    start_at(c, ON_A, ue, aia)
}

pub fn start_at(c: &mut MmeCore, at: At, ue: &TestUe, aia: AuthInfoAnswer) -> (u32, Vec<S1ap>) {
    s1_on(
        c,
        at.assoc,
        S1ap::InitialUeMessage {
            enb_ue_id: at.enb_ue_id,
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
    (id, sent_on(at.assoc, &c.take_actions()))
}

/// The S1AP messages the core sent, decoded, with the association each went to.
pub fn sent_to(actions: &[Action]) -> Vec<(AssocId, S1ap)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::S1ap { assoc, pdu, .. } => Some((*assoc, s1ap::decode(pdu).unwrap())),
            _ => None,
        })
        .collect()
}

/// The S11 messages among `actions`, with the SGW TEID each goes to.
pub fn s11_sent(actions: &[Action]) -> Vec<(u32, gtp::Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::S11 { teid, msg, .. } => Some((*teid, msg.clone())),
            _ => None,
        })
        .collect()
}

pub fn ics_response(id: u32, enb_teid: u32) -> S1ap {
    ics_response_at(ON_A, id, enb_teid)
}

pub fn ics_response_at(at: At, id: u32, enb_teid: u32) -> S1ap {
    S1ap::InitialContextSetupResponse {
        mme_ue_id: id,
        enb_ue_id: at.enb_ue_id,
        erabs: vec![s1ap::ErabSetup {
            erab_id: 5,
            enb_addr: Ipv4Addr::new(10, 77, 0, 21),
            enb_teid,
        }],
    }
}

pub fn modify_bearer_ok(c: &mut MmeCore, id: u32) {
    c.on_s11(
        id,
        Ok(gtp::Message::ModifyBearerResponse(
            gtp::ModifyBearerResponse {
                cause: 16,
                ..Default::default()
            },
        )),
    );
}

/// A whole attach; returns the MME UE id (eNB S1-U TEID 0x77, SGW TEID 0x55).
pub fn attach(c: &mut MmeCore, ue: &mut TestUe) -> u32 {
    attach_at(c, ON_A, ue)
}

pub fn attach_at(c: &mut MmeCore, at: At, ue: &mut TestUe) -> u32 {
    let (id, out) = start_at(c, at, ue, aia_for(ue));
    let Reaction::Reply(res) = ue.on_downlink(&downlink_at(at, &out).1) else {
        panic!()
    };
    s1_on(c, at.assoc, uplink_at(at, id, res));
    let smc = downlink_at(at, &sent_on(at.assoc, &c.take_actions())).1;
    let Reaction::Reply(done) = ue.on_downlink(&smc) else {
        panic!()
    };
    s1_on(c, at.assoc, uplink_at(at, id, done));
    c.take_actions();
    c.on_ula(id, Ok(ula()));
    c.take_actions();
    c.on_s11(id, Ok(create_session_response()));
    let [S1ap::InitialContextSetupRequest(ics)] = &sent_on(at.assoc, &c.take_actions())[..] else {
        panic!()
    };
    assert!(matches!(
        ue.on_downlink(ics.erabs[0].nas.as_ref().unwrap()),
        Reaction::Accepted { .. }
    ));
    s1_on(c, at.assoc, ics_response_at(at, id, 0x77));
    c.take_actions();
    modify_bearer_ok(c, id);
    let complete = ue.attach_complete(5);
    s1_on(c, at.assoc, uplink_at(at, id, complete));
    let v = c
        .ues()
        .into_iter()
        .find(|v| v.mme_ue_s1ap_id == id)
        .unwrap();
    assert_eq!(v.state, UeState::Attached);
    id
}

/// eNB-initiated release (user inactivity) to ECM-IDLE.
pub fn go_idle(c: &mut MmeCore, id: u32) {
    go_idle_at(c, ON_A, id)
}

pub fn go_idle_at(c: &mut MmeCore, at: At, id: u32) {
    s1_on(
        c,
        at.assoc,
        S1ap::UeContextReleaseRequest {
            mme_ue_id: id,
            enb_ue_id: at.enb_ue_id,
            cause: s1ap::causes::user_inactivity(),
        },
    );
    let acts = c.take_actions();
    assert!(
        matches!(
            &s11_sent(&acts)[..],
            [(0x55, gtp::Message::ReleaseAccessBearersRequest(_))]
        ),
        "{acts:?}"
    );
    let out = sent_on(at.assoc, &acts);
    assert!(
        matches!(
            &out[..],
            [S1ap::UeContextReleaseCommand {
                enb_ue_id: Some(e),
                ..
            }] if *e == at.enb_ue_id
        ),
        "{out:?}"
    );
    c.on_s11(
        id,
        Ok(gtp::Message::ReleaseAccessBearersResponse(
            gtp::CauseRecovery {
                cause: 16,
                recovery: None,
            },
        )),
    );
    s1_on(
        c,
        at.assoc,
        S1ap::UeContextReleaseComplete {
            mme_ue_id: id,
            enb_ue_id: at.enb_ue_id,
        },
    );
    assert!(c.take_actions().is_empty());
}

/// Two more eNBs: B (eNB ID 2) serves TAC 1 (the UE's), OTHER_TA (eNB ID 3) only TAC 7.
pub const B: AssocId = AssocId(2);
pub const OTHER_TA: AssocId = AssocId(3);

pub fn more_enbs(c: &mut MmeCore) {
    for (assoc, enb_id, tac) in [(B, 2, 1), (OTHER_TA, 3, 7)] {
        c.on_sctp_up(assoc, "10.77.0.23:40000".parse().unwrap());
        let setup = S1ap::S1SetupRequest(s1ap::S1SetupRequest {
            plmn: PLMN,
            enb_id,
            enb_name: None,
            tacs: vec![tac],
        });
        s1_on(c, assoc, setup);
    }
    c.take_actions();
}
