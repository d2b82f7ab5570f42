//! The MME state machine driven with S1AP bytes and synthetic S6a/S11 answers.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::harness::*;
use common::{Reaction, TestUe};
use mme::s11::S11Answers;
use mme::{Action, Config, EcmState, MmeCore, UeState};
use proto_diameter::base::ResultCode;
use proto_gtpv2c::{self as gtp, Paa};
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

// ---- S6a: Purge UE after a detach, Cancel Location from the HSS ----

fn delete_session_ok(c: &mut MmeCore, id: u32) {
    c.on_s11(
        t0(),
        id,
        Ok(gtp::Message::DeleteSessionResponse(
            gtp::DeleteSessionResponse {
                cause: 16,
                recovery: None,
            },
        )),
    );
}

fn release_complete(c: &mut MmeCore, id: u32) {
    s1(
        c,
        S1ap::UeContextReleaseComplete {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
        },
    );
}

fn purges(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Pur { imsi } => Some(imsi.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn detach_completion_purges_the_ue_at_the_hss() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(1);
    let id = attach(&mut c, &mut ue);
    let det = ue.detach_request(true);
    s1(&mut c, uplink(id, det));
    // Switch-off: no DETACH ACCEPT, the session is deleted first; no purge yet.
    let acts = c.take_actions();
    assert!(purges(&acts).is_empty(), "{acts:?}");
    delete_session_ok(&mut c, id);
    let acts = c.take_actions();
    assert_eq!(purges(&acts), [ue.imsi.clone()]);
    assert!(matches!(
        &sent(&acts)[..],
        [S1ap::UeContextReleaseCommand {
            enb_ue_id: Some(ENB_UE),
            ..
        }]
    ));
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
    assert!(c.take_actions().is_empty(), "one PUR per detach");
}

#[test]
fn cancel_location_of_a_connected_ue_deletes_the_session_and_releases_without_nas() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(1);
    let id = attach(&mut c, &mut ue);
    c.take_actions();
    assert!(c.on_cancel_location(
        t0(),
        &ue.imsi,
        proto_diameter::codes::CANCELLATION_TYPE_MME_UPDATE_PROCEDURE
    ));
    let acts = c.take_actions();
    assert!(
        matches!(
            &s11_sent(&acts)[..],
            [(0x55, gtp::Message::DeleteSessionRequest(r))] if r.linked_ebi == Some(5)
        ),
        "{acts:?}"
    );
    // The S1 connection goes with the context; no DOWNLINK NAS (no DETACH REQUEST).
    let out = sent(&acts);
    assert!(
        matches!(
            &out[..],
            [S1ap::UeContextReleaseCommand { mme_ue_id, enb_ue_id: Some(ENB_UE), cause }]
                if *mme_ue_id == id && *cause == s1ap::causes::nas_detach()
        ),
        "{out:?}"
    );
    assert!(purges(&acts).is_empty(), "no PUR after the HSS cancelled");
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
    // The late Delete Session Response finds no context and changes nothing.
    delete_session_ok(&mut c, id);
    assert!(c.take_actions().is_empty());
    // A second CLR: no context, nothing to do (the CLA is still success, at the edge).
    assert!(!c.on_cancel_location(
        t0(),
        &ue.imsi,
        proto_diameter::codes::CANCELLATION_TYPE_MME_UPDATE_PROCEDURE
    ));
    assert!(c.take_actions().is_empty());
}

#[test]
fn cancel_location_of_an_idle_ue_removes_it_at_once() {
    let (mut c, mut ue, id) = idle_ue(1);
    assert!(c.on_cancel_location(
        t0(),
        &ue.imsi,
        proto_diameter::codes::CANCELLATION_TYPE_MME_UPDATE_PROCEDURE
    ));
    let acts = c.take_actions();
    // No S1 connection to release, no paging: only the Delete Session.
    assert!(
        matches!(
            &acts[..],
            [Action::S11 { ue, teid: 0x55, msg: gtp::Message::DeleteSessionRequest(_) }] if *ue == id
        ),
        "{acts:?}"
    );
    assert!(c.ues().is_empty());
    // Its S-TMSI is unknown now: a SERVICE REQUEST gets a SERVICE REJECT.
    let sr = ue.service_request();
    let s_tmsi = s_tmsi_of(&ue);
    s1(
        &mut c,
        initial_ue(sr, s_tmsi, RRCEstablishmentCause::mo_Data),
    );
    assert_service_reject(&mut c);
}

/// A withdrawn subscription detaches the UE by the network (TS 23.401 §5.3.8.3): an idle
/// UE is paged first, and keeps its context and session until the detach is done.
#[test]
fn withdrawn_subscription_of_an_idle_ue_pages_it_for_the_network_detach() {
    let (mut c, ue, id) = idle_ue(1);
    assert!(c.on_cancel_location(
        t0(),
        &ue.imsi,
        proto_diameter::codes::CANCELLATION_TYPE_SUBSCRIPTION_WITHDRAWAL
    ));
    let acts = c.take_actions();
    assert_eq!(pagings(&acts, &ue).len(), 2, "{acts:?}");
    assert!(s11_sent(&acts).is_empty(), "{acts:?}");
    let v = view(&c, id);
    assert!(v.detach_pending && v.paging, "{v:?}");
}

// ---- ESM: PDN types IPv6 and IPv4v6 ----

#[test]
fn ipv6_and_ipv4v6_pdn_types_reach_the_spgw_and_the_ue_gets_its_interface_id() {
    let v6 = "2001:db8:77:1::abcd".parse::<std::net::Ipv6Addr>().unwrap();
    let v4 = Ipv4Addr::new(10, 45, 0, 9);
    for (pdn_type, given, want_v4) in [
        (
            gtp::pdn_type::IPV6,
            Paa::Ipv6 {
                prefix_len: 64,
                addr: v6,
            },
            None,
        ),
        (
            gtp::pdn_type::IPV4V6,
            Paa::Ipv4v6 {
                prefix_len: 64,
                v6,
                v4,
            },
            Some(v4.octets()),
        ),
    ] {
        let mut c = core();
        setup(&mut c);
        let mut ue = TestUe::example(1);
        ue.set_pdn_type(pdn_type);
        let id = secure(&mut c, &mut ue);
        c.on_ula(t0(), id, Ok(ula()));
        // The Create Session Request carries the UE's PDN type and a PAA of that type
        // with unspecified addresses.
        let acts = c.take_actions();
        let [(0, gtp::Message::CreateSessionRequest(csr))] = &s11_sent(&acts)[..] else {
            panic!("{acts:?}")
        };
        assert_eq!(csr.pdn_type, Some(pdn_type));
        match (&csr.paa, pdn_type) {
            (
                Some(Paa::Ipv6 {
                    prefix_len: 64,
                    addr,
                }),
                gtp::pdn_type::IPV6,
            ) => {
                assert!(addr.is_unspecified())
            }
            (
                Some(Paa::Ipv4v6 {
                    prefix_len: 64,
                    v6,
                    v4,
                }),
                gtp::pdn_type::IPV4V6,
            ) => {
                assert!(v6.is_unspecified() && v4.is_unspecified())
            }
            other => panic!("{other:?}"),
        }
        let gtp::Message::CreateSessionResponse(mut resp) = create_session_response() else {
            unreachable!()
        };
        resp.paa = Some(given);
        c.on_s11(t0(), id, Ok(gtp::Message::CreateSessionResponse(resp)));
        // The ATTACH ACCEPT's PDN address: the interface identifier only (IPv6), or
        // with the IPv4 address (IPv4v6).
        let [S1ap::InitialContextSetupRequest(ics)] = &sent(&c.take_actions())[..] else {
            panic!()
        };
        assert_eq!(
            ue.on_downlink(ics.erabs[0].nas.as_ref().unwrap()),
            Reaction::AcceptedV6 {
                ip: want_v4,
                iid: [0, 0, 0, 0, 0, 0, 0xab, 0xcd],
                ebi: 5
            }
        );
        let v = &c.ues()[0];
        assert_eq!(
            (v.ue_ipv6, v.ue_ip),
            (Some(v6), want_v4.map(Ipv4Addr::from))
        );
    }
}

// ---- ESM: a dedicated bearer the SPGW asks for ----

/// The SPGW's core with the session `attach` set up (SGW S11 TEID 0x55, S1-U 0x99,
/// eNB TEID 0x77), as the tunnel list would restore it.
fn spgw_with_session(id: u32, imsi: &str) -> spgw::Core {
    let mut s = spgw::Core::new(spgw::CoreConfig {
        s11_addr: Ipv4Addr::new(10, 77, 1, 30),
        s1u_addr: Ipv4Addr::new(10, 77, 1, 30),
        recovery: 0,
        pool: spgw::IpPool::new(Ipv4Addr::new(10, 45, 0, 0), 16, &[]).unwrap(),
        pool6: None,
        dns: vec![],
        mtu: 1400,
    });
    s.restore(vec![spgw::Tunnel {
        imsi: imsi.into(),
        apn: "internet".into(),
        ebi: 5,
        ue_ip: Some(Ipv4Addr::new(10, 45, 0, 2)),
        ue_ipv6_prefix: None,
        mme_s11_teid: id,
        mme_s11_addr: Some(Ipv4Addr::new(10, 77, 1, 20)),
        sgw_s11_teid: 0x55,
        sgw_s1u_teid: 0x99,
        enb_teid: Some(0x77),
        enb_addr: Some(Ipv4Addr::new(10, 77, 0, 21)),
        idle: false,
        arp: None,
        dedicated: vec![],
    }])
    .unwrap();
    s
}

fn voice(imsi: &str) -> spgw::BearerRequest {
    spgw::BearerRequest {
        imsi: imsi.into(),
        apn: None,
        qci: 1,
        arp: spgw::BearerArp {
            priority_level: 2,
            pci: true,
            pvi: true,
        },
        mbr_uplink_kbps: 128,
        mbr_downlink_kbps: 128,
        gbr_uplink_kbps: 64,
        gbr_downlink_kbps: 64,
        filters: vec![spgw::Filter {
            id: 1,
            direction: gtp::tft::direction::BIDIRECTIONAL,
            precedence: 10,
            remote_addr: Some(Ipv4Addr::new(10, 45, 0, 1)),
            remote_mask: None,
            protocol: Some(17),
            remote_port: Some(5001),
        }],
    }
}

/// What the MME shell sends for an S11Answer action.
fn s11_answers(actions: &[Action], s11: &mut S11Answers, now: Instant) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::S11Answer { id, teid, msg } => s11.answer(now, *id, *teid, msg.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn create_bearer_from_the_spgw_sets_up_an_erab_and_the_ue_bearer_then_answers() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(1);
    let id = attach(&mut c, &mut ue);
    c.take_actions();
    let mut spgw = spgw_with_session(id, &ue.imsi);
    let mut s11 = S11Answers::new(&Config::default());
    let now = Instant::now();
    let mme_addr: SocketAddr = "10.77.1.20:2123".parse().unwrap();

    let (cbreq, to) = spgw.create_bearer(&voice(&ue.imsi), now).unwrap();
    assert_eq!(to, mme_addr);
    assert!(
        s11.on_request(&mut c, now, SPGW.parse().unwrap(), &cbreq)
            .is_none(),
        "answered later"
    );
    // E-RAB SETUP REQUEST: EBI 6, QCI 1, toward the SGW's new S1-U F-TEID, with the
    // ACTIVATE DEDICATED EPS BEARER CONTEXT REQUEST for the UE.
    let acts = c.take_actions();
    let [S1ap::ErabSetupRequest {
        mme_ue_id,
        enb_ue_id: ENB_UE,
        erabs,
    }] = &sent(&acts)[..]
    else {
        panic!("{acts:?}")
    };
    assert_eq!(*mme_ue_id, id);
    let e = &erabs[0];
    assert_eq!((e.erab_id, e.qci, e.arp_priority), (6, 1, 2));
    // A GBR bearer carries its bit rates, in bit/s on S1AP.
    assert_eq!(
        e.gbr.map(|g| (g.mbr_uplink, g.gbr_downlink)),
        Some((128_000, 64_000))
    );
    let sgw_s1u = gtp::decode(&cbreq).unwrap();
    let gtp::Message::CreateBearerRequest(r) = sgw_s1u.msg else {
        panic!()
    };
    assert_eq!(e.sgw_teid, r.bearer_contexts[0].fteid(0).unwrap().teid);
    // A retransmission of the request while in progress changes nothing.
    assert!(s11
        .on_request(&mut c, now, SPGW.parse().unwrap(), &cbreq)
        .is_none());
    assert!(c.take_actions().is_empty());

    // The eNB sets the E-RAB up; no answer yet (the UE has not accepted).
    s1(
        &mut c,
        S1ap::ErabSetupResponse {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            erabs: vec![s1ap::ErabSetup {
                erab_id: 6,
                enb_addr: Ipv4Addr::new(10, 77, 0, 21),
                enb_teid: 0x66,
            }],
            failed: vec![],
        },
    );
    assert!(c.take_actions().is_empty());
    // The UE accepts (protected, its COUNT continuing): CREATE BEARER RESPONSE.
    let Reaction::Reply(accept) = ue.on_downlink(e.nas.as_ref().unwrap()) else {
        panic!("the UE does not accept the bearer")
    };
    s1(&mut c, uplink(id, accept));
    let acts = c.take_actions();
    let answers = s11_answers(&acts, &mut s11, now);
    let [cbresp] = &answers[..] else {
        panic!("{acts:?}")
    };
    let m = gtp::decode(cbresp).unwrap();
    assert_eq!((m.seq, m.teid), (sgw_s1u.seq, Some(0x55)));
    let gtp::Message::CreateBearerResponse(resp) = &m.msg else {
        panic!("{m:?}")
    };
    assert_eq!(resp.cause, gtp::cause::REQUEST_ACCEPTED);
    let b = &resp.bearer_contexts[0];
    assert_eq!(b.ebi, 6);
    assert_eq!(
        b.fteid(0).map(|f| (f.iface, f.teid)),
        Some((gtp::iface::S1U_ENODEB, 0x66))
    );
    assert_eq!(c.ues()[0].dedicated_ebis, [6]);
    // The SPGW takes it: the bearer joins its tunnel.
    assert!(spgw.handle_s11(cbresp, mme_addr, now).changed);
    let d = &spgw.tunnels()[0].dedicated;
    assert_eq!((d[0].ebi, d[0].enb_teid, d[0].qci), (6, 0x66, 1));
    // A retransmission after the answer gets the cached answer.
    assert_eq!(
        s11.on_request(&mut c, now, SPGW.parse().unwrap(), &cbreq)
            .as_ref(),
        Some(cbresp)
    );
    write_and_check_s11_pcap(&[(&cbreq, true), (cbresp, false)]);

    // A second one the eNB cannot set up: refused to the SGW, EBI 7 free again.
    let (cbreq2, _) = spgw.create_bearer(&voice(&ue.imsi), now).unwrap();
    s11.on_request(&mut c, now, SPGW.parse().unwrap(), &cbreq2);
    let acts = c.take_actions();
    assert!(
        matches!(&sent(&acts)[..], [S1ap::ErabSetupRequest { erabs, .. }] if erabs[0].erab_id == 7)
    );
    s1(
        &mut c,
        S1ap::ErabSetupResponse {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            erabs: vec![],
            failed: vec![s1ap::ErabFailed {
                erab_id: 7,
                cause: s1ap::causes::radio_unspecified(),
            }],
        },
    );
    let answers = s11_answers(&c.take_actions(), &mut s11, now);
    let m = gtp::decode(&answers[0]).unwrap();
    assert!(
        matches!(m.msg, gtp::Message::CreateBearerResponse(ref r) if r.cause == gtp::cause::UE_NOT_RESPONDING)
    );
    assert!(!spgw.handle_s11(&answers[0], mme_addr, now).changed);
    assert_eq!(c.ues()[0].dedicated_ebis, [6]);
}

#[test]
fn create_bearer_for_an_idle_or_unknown_ue_is_refused_at_once() {
    let (mut c, ue, id) = idle_ue(1);
    let mut spgw = spgw_with_session(id, &ue.imsi);
    let mut s11 = S11Answers::new(&Config::default());
    let now = Instant::now();
    let (req, _) = spgw.create_bearer(&voice(&ue.imsi), now).unwrap();
    s11.on_request(&mut c, now, SPGW.parse().unwrap(), &req);
    let acts = c.take_actions();
    assert!(sent(&acts).is_empty(), "no E-RAB setup toward an idle UE");
    let answers = s11_answers(&acts, &mut s11, now);
    let m = gtp::decode(&answers[0]).unwrap();
    assert!(
        matches!(m.msg, gtp::Message::CreateBearerResponse(ref r) if r.cause == gtp::cause::UNABLE_TO_PAGE_UE)
    );
    // To a TEID that names no UE: Context not found, to TEID 0.
    let mut other = spgw_with_session(id + 100, &ue.imsi);
    let (req, _) = other.create_bearer(&voice(&ue.imsi), now).unwrap();
    s11.on_request(&mut c, now, SPGW.parse().unwrap(), &req);
    let answers = s11_answers(&c.take_actions(), &mut s11, now);
    let m = gtp::decode(&answers[0]).unwrap();
    assert_eq!(m.teid, Some(0));
    assert!(
        matches!(m.msg, gtp::Message::CreateBearerResponse(ref r) if r.cause == gtp::cause::CONTEXT_NOT_FOUND)
    );
}

/// The Create Bearer exchange as UDP on port 2123 in Wireshark: both messages decode,
/// nothing malformed, the bearer's QoS, TFT and F-TEIDs shown.
fn write_and_check_s11_pcap(msgs: &[(&[u8], bool)]) {
    let sgw: std::net::SocketAddrV4 = "10.77.1.30:2123".parse().unwrap();
    let mme: std::net::SocketAddrV4 = "10.77.1.20:2123".parse().unwrap();
    let mut pcap = proto_gtpu::pcap::UdpPcap::new();
    for (i, (bytes, from_sgw)) in msgs.iter().enumerate() {
        let (src, dst) = if *from_sgw { (sgw, mme) } else { (mme, sgw) };
        pcap.push(Duration::from_millis(i as u64), src, dst, bytes)
            .unwrap();
    }
    let path = std::env::temp_dir().join(format!("corehop-mme-cb-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap.to_bytes()).unwrap();
    let out = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-V"])
        .output()
        .expect("tshark is required");
    let _ = std::fs::remove_file(&path);
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !v.contains("Malformed"), "{v}");
    for want in [
        "Create Bearer Request",
        "Create Bearer Response",
        "Label (QCI): 1",
        "Packet filter direction: Bidirectional",
        "S1-U eNodeB GTP-U",
        "Cause: Request accepted (16)",
    ] {
        assert!(v.contains(want), "tshark shows no {want:?}:\n{v}");
    }
}
