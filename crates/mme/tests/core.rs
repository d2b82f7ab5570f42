//! The MME state machine driven with S1AP bytes and synthetic S6a/S11 answers.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::harness::*;
use common::{Reaction, TestUe};
use mme::s11::S11Answers;
use mme::{Action, Config, EcmState, MmeCore, UeState};
use proto_diameter::base::ResultCode;
use proto_gtpv2c as gtp;
use proto_s1ap::{self as s1ap, RRCEstablishmentCause, S1ap};
use proto_sctp::AssocId;

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
    c.on_ula(t0(), id, Ok(ula()));
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
    c.on_s11(t0(), id, Ok(create_session_response()));
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
    s1(&mut c, ics_response(id, 0x77));
    let acts = c.take_actions();
    match &acts[..] {
        [Action::S11 {
            teid: 0x55,
            msg: gtp::Message::ModifyBearerRequest(r),
            ..
        }] => assert_eq!(r.bearer_contexts[0].fteid(0).unwrap().teid, 0x77),
        other => panic!("{other:?}"),
    }
    modify_bearer_ok(&mut c, id);
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
    session_deleted(&mut c, id, t0());
    let out = sent(&c.take_actions());
    assert!(matches!(
        &out[..],
        [S1ap::UeContextReleaseCommand {
            enb_ue_id: Some(ENB_UE),
            ..
        }]
    ));
    release_complete(&mut c, id);
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
    release_complete(&mut c, id);
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
        c.on_s1ap(t0(), A, junk);
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
        t0(),
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
    c.on_s1ap(t0(), A, &update);
    let acts = c.take_actions();
    let [Action::S1ap { stream: 0, pdu, .. }] = &acts[..] else {
        panic!("{acts:?}")
    };
    assert_eq!(
        S1AP_PDU::decode(pdu).unwrap().kind(),
        S1apPduKind::Successful_ENBConfigurationUpdate
    );
    c.on_s1ap(t0(), A, pdu);
    assert!(sent(&c.take_actions()).is_empty());
}

// ------------------------------------------------------------------ ECM-IDLE

#[test]
fn release_to_idle_keeps_the_registration_and_the_tunnel() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(5);
    let id = attach(&mut c, &mut ue);
    assert_eq!(c.ues()[0].ecm_state, EcmState::Connected);
    go_idle(&mut c, id);
    let v = &c.ues()[0];
    assert_eq!((v.state, v.ecm_state), (UeState::Idle, EcmState::Idle));
    assert_eq!((v.enb_ue_s1ap_id, v.enb.as_deref()), (None, None));
    assert_eq!((v.enb_s1u_teid, v.bearer_active), (None, false));
    // Kept: GUTI, security context and COUNTs, session and SGW tunnel.
    assert_eq!(v.m_tmsi, ue.guti().unwrap().m_tmsi);
    assert_eq!((v.ul_nas_count, v.dl_nas_count), (Some(2), Some(2)));
    assert_eq!((v.sgw_s11_teid, v.sgw_s1u_teid), (Some(0x55), Some(0x99)));
    assert_eq!(v.ue_ip, Some(Ipv4Addr::new(10, 45, 0, 2)));
    // The state file shows the ECM state.
    let json = serde_json::to_value(v).unwrap();
    assert_eq!(json["ecm_state"], "Idle");
}

#[test]
fn service_request_from_idle_reconnects_and_the_nas_count_continues() {
    let (mut c, mut ue, id) = idle_ue(6);
    serve(&mut c, &mut ue, id, 0x78);
    let v = &c.ues()[0];
    assert_eq!(
        (v.state, v.ecm_state),
        (UeState::Attached, EcmState::Connected)
    );
    assert_eq!(
        (v.enb_ue_s1ap_id, v.enb_s1u_teid),
        (Some(ENB_UE), Some(0x78))
    );
    assert!(v.bearer_active);
    assert_eq!(v.ul_nas_count, Some(3), "the SERVICE REQUEST used COUNT 2");
    // The next uplink NAS message (COUNT 3) is taken: a detach goes through.
    let det = ue.detach_request(false);
    s1(&mut c, uplink(id, det));
    let acts = c.take_actions();
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
    assert_eq!(
        ue.on_downlink(&downlink(&sent(&acts)).1),
        Reaction::DetachAccept
    );
    // Twice idle and back: still the same context.
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(6);
    let id = attach(&mut c, &mut ue);
    for teid in [0x80, 0x81] {
        go_idle(&mut c, id);
        serve(&mut c, &mut ue, id, teid);
    }
    assert_eq!(c.ues()[0].ul_nas_count, Some(4));
}

/// A SERVICE REJECT #9 on the new S1 connection, then its release; nothing else.
fn assert_service_reject(c: &mut MmeCore) {
    assert_eq!(
        rejected(&sent(&c.take_actions())),
        proto_nas::Nas::ServiceReject { cause: 9 }
    );
}

#[test]
fn service_request_with_a_bad_mac_is_rejected_and_the_context_kept() {
    let (mut c, mut ue, id) = idle_ue(7);
    let mut sr = ue.service_request();
    let last = sr.len() - 1;
    sr[last] ^= 0x01;
    s1(
        &mut c,
        initial_ue(sr, s_tmsi_of(&ue), RRCEstablishmentCause::mo_Data),
    );
    assert_service_reject(&mut c);
    let v = &c.ues()[0];
    assert_eq!((v.state, v.ecm_state), (UeState::Idle, EcmState::Idle));
    assert_eq!(v.mme_ue_s1ap_id, id);
    assert_eq!(
        v.ul_nas_count,
        Some(2),
        "a failed MAC does not move the COUNT"
    );
}

#[test]
fn service_request_from_an_unknown_s_tmsi_is_rejected() {
    let (mut c, mut ue, _) = idle_ue(8);
    let sr = ue.service_request();
    let mut s_tmsi = s_tmsi_of(&ue);
    s_tmsi.m_tmsi ^= 0x0100;
    s1(
        &mut c,
        initial_ue(sr, s_tmsi, RRCEstablishmentCause::mo_Data),
    );
    assert_service_reject(&mut c);
    assert_eq!(c.ues()[0].state, UeState::Idle);
}

fn ddn_bytes(seq: u32, teid: u32) -> Vec<u8> {
    gtp::Gtpv2 {
        teid: Some(teid),
        seq,
        msg: gtp::Message::DownlinkDataNotification(gtp::DownlinkDataNotification {
            ebis: vec![5],
            ..Default::default()
        }),
    }
    .encode()
    .unwrap()
}

const SPGW: &str = "10.77.1.30:2123";

/// Feeds a DDN's bytes through the S11 answers; returns the decoded answer.
fn ddn(c: &mut MmeCore, s11: &mut S11Answers, now: Instant, seq: u32, teid: u32) -> gtp::Gtpv2 {
    let out = s11
        .on_request(c, now, SPGW.parse().unwrap(), &ddn_bytes(seq, teid))
        .expect("an answer");
    gtp::decode(&out).unwrap()
}

fn assert_ack(m: &gtp::Gtpv2, seq: u32, teid: u32, cause: u8) {
    assert_eq!((m.seq, m.teid), (seq, Some(teid)));
    assert_eq!(
        m.msg,
        gtp::Message::DownlinkDataNotificationAcknowledge(gtp::CauseRecovery {
            cause,
            recovery: None
        })
    );
}

#[test]
fn downlink_data_pages_the_idle_ue_and_its_service_request_ends_it() {
    let (mut c, mut ue, id) = idle_ue(9);
    let mut s11 = S11Answers::new(&Config::default());
    let t0 = Instant::now();
    // The notification goes to our S11 TEID; the answer to the SGW's.
    let ack = ddn(&mut c, &mut s11, t0, 0x101, id);
    assert_ack(&ack, 0x101, 0x55, gtp::cause::REQUEST_ACCEPTED);
    let acts = c.take_actions();
    assert_eq!(
        pagings(&acts, &ue),
        vec![A, B],
        "the eNBs serving TAC 1 only"
    );
    assert!(c.ues()[0].paging);
    assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(2000)));
    // The paged UE answers: ICS, Modify Bearer, connected; paging over.
    serve(&mut c, &mut ue, id, 0x79);
    let v = &c.ues()[0];
    assert_eq!(
        (v.state, v.ecm_state, v.paging),
        (UeState::Attached, EcmState::Connected, false)
    );
    assert_eq!(c.next_deadline(), None);
    c.on_timer(t0 + Duration::from_secs(60));
    assert!(c.take_actions().is_empty());
}

#[test]
fn paging_is_repeated_on_t3413_then_given_up_with_a_failure_indication() {
    let (mut c, mut ue, id) = idle_ue(10);
    let mut s11 = S11Answers::new(&Config::default());
    let t0 = Instant::now();
    ddn(&mut c, &mut s11, t0, 7, id);
    assert_eq!(pagings(&c.take_actions(), &ue).len(), 2);
    let t3413 = Duration::from_millis(2000);
    // Not yet due: nothing.
    c.on_timer(t0 + t3413 - Duration::from_millis(1));
    assert!(c.take_actions().is_empty());
    // Two retries (paging_retries = 2), T3413 apart.
    let mut now = t0;
    for _ in 0..2 {
        now += t3413;
        c.on_timer(now);
        assert_eq!(pagings(&c.take_actions(), &ue), vec![A, B]);
        assert_eq!(c.next_deadline(), Some(now + t3413));
    }
    // The last T3413 runs out: TS 23.401 §5.3.4.3, the SGW is told, no more paging.
    now += t3413;
    c.on_timer(now);
    let acts = c.take_actions();
    assert!(sent(&acts).is_empty());
    assert_eq!(
        s11_sent(&acts),
        vec![(
            0x55,
            gtp::Message::DownlinkDataNotificationFailureIndication(
                gtp::DownlinkDataNotificationFailureIndication {
                    cause: gtp::cause::UE_NOT_RESPONDING
                }
            )
        )]
    );
    let v = &c.ues()[0];
    assert_eq!((v.state, v.paging), (UeState::Idle, false));
    // Only the mobile reachable timer is left (T3412 54 min + 4 min, from going idle).
    assert_eq!(
        c.next_deadline(),
        Some(common::harness::t0() + Duration::from_secs(58 * 60))
    );
    assert_eq!(c.timer_stats().pagings_failed, 1);
    // Still registered: a later service request is served.
    serve(&mut c, &mut ue, id, 0x7a);
}

#[test]
fn duplicate_ddn_is_answered_from_the_cache_and_pages_once() {
    let (mut c, ue, id) = idle_ue(11);
    let mut s11 = S11Answers::new(&Config::default());
    let t0 = Instant::now();
    let first = ddn(&mut c, &mut s11, t0, 0x33, id);
    assert_eq!(pagings(&c.take_actions(), &ue), vec![A, B]);
    // The SGW's retransmission (same bytes): the same answer, no second paging.
    let again = ddn(&mut c, &mut s11, t0 + Duration::from_millis(1000), 0x33, id);
    assert_eq!(again, first);
    assert!(c.take_actions().is_empty());
    // A new notification while paging: acknowledged, but the paging is not restarted.
    let other = ddn(&mut c, &mut s11, t0 + Duration::from_millis(1500), 0x34, id);
    assert_ack(&other, 0x34, 0x55, gtp::cause::REQUEST_ACCEPTED);
    assert!(c.take_actions().is_empty());
    assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(2000)));
}

#[test]
fn ddn_for_a_connected_ue_or_an_unknown_teid() {
    let mut c = core();
    setup(&mut c);
    let mut s11 = S11Answers::new(&Config::default());
    let mut ue = TestUe::example(12);
    let id = attach(&mut c, &mut ue);
    let t0 = Instant::now();
    // Connected: no paging; the SGW gets the eNB's F-TEID again.
    let ack = ddn(&mut c, &mut s11, t0, 0x40, id);
    assert_ack(&ack, 0x40, 0x55, gtp::cause::REQUEST_ACCEPTED);
    let acts = c.take_actions();
    assert!(sent(&acts).is_empty());
    match &s11_sent(&acts)[..] {
        [(0x55, gtp::Message::ModifyBearerRequest(r))] => {
            assert_eq!(r.bearer_contexts[0].fteid(0).unwrap().teid, 0x77)
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.ues()[0].paging);
    // No UE behind the TEID: Context Not Found, to TEID 0.
    let ack = ddn(&mut c, &mut s11, t0, 0x41, id + 100);
    assert_ack(&ack, 0x41, 0, gtp::cause::CONTEXT_NOT_FOUND);
    assert!(c.take_actions().is_empty());
}

#[test]
fn echo_from_the_spgw_is_answered() {
    let mut c = core();
    let mut s11 = S11Answers::new(&Config::default());
    let echo = gtp::Gtpv2 {
        teid: None,
        seq: 9,
        msg: gtp::Message::EchoRequest(gtp::Echo { recovery: 3 }),
    }
    .encode()
    .unwrap();
    let out = s11
        .on_request(&mut c, Instant::now(), SPGW.parse().unwrap(), &echo)
        .unwrap();
    let m = gtp::decode(&out).unwrap();
    assert_eq!(m.seq, 9);
    assert!(matches!(m.msg, gtp::Message::EchoResponse(_)));
}
