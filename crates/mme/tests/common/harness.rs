//! An MmeCore driven with S1AP bytes and synthetic S6a/S11 answers: the eNBs, the
//! SPGW's and HSS's answers and a whole attach, on any of the test associations.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mme::{Action, Config, MmeCore, UeState};
use proto_diameter::base::ResultCode;
use proto_diameter::s6a::{
    Ambr, ApnConfiguration, Arp, AuthInfoAnswer, EutranVector, SubscriptionData,
    UpdateLocationAnswer,
};
use proto_gtpv2c::{self as gtp, BearerContext, Fteid, Paa};
use proto_nas::{Direction, Nas};
use proto_s1ap::{self as s1ap, Ecgi, RRCEstablishmentCause, S1ap, Tai};
use proto_sctp::AssocId;

use super::{Reaction, TestUe, PLMN};

/// The time every input of a test brings unless the test moves it (one instant for
/// the whole run, so that deadlines can be computed from it).
pub fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

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
    core_with(Config::default())
}

pub fn s1(c: &mut MmeCore, m: S1ap) {
    s1_on(c, A, m);
}

/// `m` from the eNB of `assoc`.
pub fn s1_on(c: &mut MmeCore, assoc: AssocId, m: S1ap) {
    c.on_s1ap(t0(), assoc, &s1ap::encode(&m).unwrap());
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
            periodic_rau_tau_timer: None,
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
    c.on_aia(t0(), id, Ok(aia));
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
        t0(),
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
    let (id, _) = attach_to_accept_at(c, at, ue);
    s1_on(c, at.assoc, ics_response_at(at, id, 0x77));
    c.take_actions();
    modify_bearer_ok(c, id);
    let complete = ue.attach_complete(5);
    s1_on(c, at.assoc, uplink_at(at, id, complete));
    let v = view(c, id);
    assert_eq!((v.state, v.emm_procedure), (UeState::Attached, None));
    id
}

/// An attach up to the INITIAL CONTEXT SETUP REQUEST with the ATTACH ACCEPT, which
/// the UE has taken; returns the MME UE id and the request.
pub fn attach_to_accept(
    c: &mut MmeCore,
    ue: &mut TestUe,
) -> (u32, Box<s1ap::InitialContextSetupRequest>) {
    attach_to_accept_at(c, ON_A, ue)
}

/// An attach up to the ULR: authenticated, NAS security active; returns the MME UE id.
pub fn secure(c: &mut MmeCore, ue: &mut TestUe) -> u32 {
    secure_at(c, ON_A, ue)
}

pub fn secure_at(c: &mut MmeCore, at: At, ue: &mut TestUe) -> u32 {
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
    id
}

pub fn attach_to_accept_at(
    c: &mut MmeCore,
    at: At,
    ue: &mut TestUe,
) -> (u32, Box<s1ap::InitialContextSetupRequest>) {
    let id = secure_at(c, at, ue);
    c.on_ula(t0(), id, Ok(ula()));
    c.take_actions();
    c.on_s11(t0(), id, Ok(create_session_response()));
    let [S1ap::InitialContextSetupRequest(ics)] = &sent_on(at.assoc, &c.take_actions())[..] else {
        panic!()
    };
    assert!(matches!(
        ue.on_downlink(ics.erabs[0].nas.as_ref().unwrap()),
        Reaction::Accepted { .. }
    ));
    (id, ics.clone())
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
        t0(),
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

/// A core with `cfg`, eNB A's association up.
pub fn core_with(cfg: Config) -> MmeCore {
    let mut c = MmeCore::new(cfg).unwrap();
    c.on_sctp_up(A, "10.77.0.21:40000".parse::<SocketAddr>().unwrap());
    c
}

/// The eNB's UE CONTEXT RELEASE COMPLETE.
pub fn release_complete(c: &mut MmeCore, id: u32) {
    s1(
        c,
        S1ap::UeContextReleaseComplete {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
        },
    );
}

/// The SPGW's DELETE SESSION RESPONSE, accepted.
pub fn session_deleted(c: &mut MmeCore, id: u32, now: Instant) {
    c.on_s11(
        now,
        id,
        Ok(gtp::Message::DeleteSessionResponse(
            gtp::DeleteSessionResponse {
                cause: 16,
                recovery: None,
            },
        )),
    );
}

/// Every downlink NAS PDU among `actions` (DOWNLINK NAS TRANSPORTs only).
pub fn nas_sent(actions: &[Action]) -> Vec<Vec<u8>> {
    sent(actions)
        .into_iter()
        .filter_map(|m| match m {
            S1ap::DownlinkNasTransport { nas, .. } => Some(nas),
            _ => None,
        })
        .collect()
}

/// Runs a NAS timer of period `t` started at `from` through its four retransmissions
/// (one DOWNLINK NAS TRANSPORT each, returned) and the fifth expiry, whose actions are
/// returned.
pub fn expire_five_times(
    c: &mut MmeCore,
    from: Instant,
    t: Duration,
) -> (Vec<Vec<u8>>, Vec<Action>) {
    let again = (1..=4u32)
        .map(|n| {
            c.on_timer(from + t * n);
            let [pdu] = &nas_sent(&c.take_actions())[..] else {
                panic!("expiry {n}: one retransmission")
            };
            pdu.clone()
        })
        .collect();
    c.on_timer(from + t * 5);
    (again, c.take_actions())
}

/// The reject sent on an S1 connection that has no UE context, followed by that
/// connection's release: the NAS message.
pub fn rejected(out: &[S1ap]) -> Nas {
    let [S1ap::DownlinkNasTransport { mme_ue_id, nas, .. }, S1ap::UeContextReleaseCommand {
        mme_ue_id: released,
        enb_ue_id: Some(ENB_UE),
        ..
    }] = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(mme_ue_id, released);
    proto_nas::msg::parse(nas, Direction::Downlink).unwrap()
}

/// The one UE view of `id`.
pub fn view(c: &MmeCore, id: u32) -> mme::UeView {
    c.ues()
        .into_iter()
        .find(|v| v.mme_ue_s1ap_id == id)
        .expect("UE context")
}

pub fn s_tmsi_of(ue: &TestUe) -> s1ap::STmsi {
    let g = ue.guti().unwrap();
    s1ap::STmsi {
        mme_code: g.mme_code,
        m_tmsi: g.m_tmsi,
    }
}

pub fn initial_ue(nas: Vec<u8>, s_tmsi: s1ap::STmsi, rrc_cause: RRCEstablishmentCause) -> S1ap {
    S1ap::InitialUeMessage {
        enb_ue_id: ENB_UE,
        nas,
        tai: tai(),
        ecgi: ecgi(),
        s_tmsi: Some(s_tmsi),
        rrc_cause,
    }
}

/// SERVICE REQUEST → ICS without NAS and with the UE's KeNB → ICS response → Modify
/// Bearer with the eNB's new F-TEID.
pub fn serve(c: &mut MmeCore, ue: &mut TestUe, id: u32, enb_teid: u32) {
    let sr = ue.service_request();
    s1(
        c,
        initial_ue(sr, s_tmsi_of(ue), RRCEstablishmentCause::mo_Data),
    );
    let out = sent(&c.take_actions());
    let [S1ap::InitialContextSetupRequest(ics)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(ics.mme_ue_id, id);
    assert_eq!(ics.erabs.len(), 1);
    assert_eq!(
        ics.erabs[0].nas, None,
        "no NAS PDU in a service request's ICS"
    );
    assert_eq!((ics.erabs[0].sgw_teid, ics.erabs[0].erab_id), (0x99, 5));
    assert_eq!(
        Some(ics.kenb),
        ue.kenb(),
        "KeNB from the service request's COUNT"
    );
    assert_eq!(c.ues()[0].state, UeState::WaitServiceSetup);
    s1(c, ics_response(id, enb_teid));
    let acts = c.take_actions();
    match &s11_sent(&acts)[..] {
        [(0x55, gtp::Message::ModifyBearerRequest(r))] => {
            assert_eq!(r.bearer_contexts[0].fteid(0).unwrap().teid, enb_teid)
        }
        other => panic!("{other:?}"),
    }
    modify_bearer_ok(c, id);
}

/// An attached UE gone idle, with the eNBs of [`more_enbs`] besides A.
pub fn idle_ue(n: u32) -> (MmeCore, TestUe, u32) {
    idle_ue_in(core(), n)
}

/// [`idle_ue`] on the core `c`.
pub fn idle_ue_in(mut c: MmeCore, n: u32) -> (MmeCore, TestUe, u32) {
    setup(&mut c);
    more_enbs(&mut c);
    let mut ue = TestUe::example(n);
    let id = attach(&mut c, &mut ue);
    go_idle(&mut c, id);
    (c, ue, id)
}

/// The PAGINGs among `actions`: to which eNBs, and that each names the UE.
pub fn pagings(actions: &[Action], ue: &TestUe) -> Vec<AssocId> {
    sent_to(actions)
        .into_iter()
        .map(|(assoc, m)| {
            let S1ap::Paging(p) = m else { panic!("{m:?}") };
            assert_eq!(p.identity, s1ap::PagingIdentity::STmsi(s_tmsi_of(ue)));
            let imsi: u64 = ue.imsi.parse().unwrap();
            assert_eq!(u64::from(p.ue_identity_index), imsi % 1024);
            assert_eq!(p.tais, vec![tai()]);
            assert_eq!(p.cn_domain, s1ap::CNDomain::ps);
            assoc
        })
        .collect()
}
