//! The NAS timers of the MME core, driven with S1AP bytes and time: each supervised
//! message is sent again on the first four expiries (protected messages with a new
//! NAS COUNT), and the fifth expiry aborts its procedure as TS 24.301 says.

mod common;

use std::time::Duration;

use common::harness::*;
use common::{Reaction, TestUe};
use mme::{Config, EmmProcedure, MmeCore, UeState};
use proto_gtpv2c as gtp;
use proto_nas::Nas;
use proto_s1ap::S1ap;

const T: Duration = Duration::from_secs(6);

/// The NAS message inside a protected PDU, read without its context (EEA2 ciphers
/// most, so only the header is checked here; the UE proves the rest).
fn seq(pdu: &[u8]) -> u8 {
    pdu[5]
}

#[test]
fn authentication_request_is_sent_again_then_the_attach_is_aborted() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(20);
    let (id, out) = start(&mut c, &ue, aia_for(&ue));
    let (_, first) = downlink(&out);
    let v = view(&c, id);
    assert_eq!(v.emm_procedure, Some(EmmProcedure::Authentication));
    assert_eq!(v.nas_timer.as_deref(), Some("T3460"));
    assert_eq!(c.next_deadline(), Some(t0() + T));
    // Not yet due.
    c.on_timer(t0() + T - Duration::from_millis(1));
    assert!(c.take_actions().is_empty());
    // Four retransmissions of the same plain message.
    for n in 1..=4u32 {
        c.on_timer(t0() + T * n);
        assert_eq!(
            nas_sent(&c.take_actions()),
            vec![first.clone()],
            "expiry {n}"
        );
        assert_eq!(view(&c, id).nas_timer_expiries, n);
        assert_eq!(c.next_deadline(), Some(t0() + T * (n + 1)));
    }
    // The fifth expiry: the NAS signalling connection is released, the context goes.
    c.on_timer(t0() + T * 5);
    let out = sent(&c.take_actions());
    assert!(
        matches!(&out[..], [S1ap::UeContextReleaseCommand { mme_ue_id, .. }] if *mme_ue_id == id),
        "{out:?}"
    );
    assert_eq!(view(&c, id).emm_procedure, None);
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
    let stats = c.timer_stats();
    assert_eq!(
        (stats.nas_retransmissions, stats.procedures_aborted),
        (4, 1)
    );
    // The UE's late answer to a retransmission finds nothing.
    let Reaction::Reply(res) = ue.on_downlink(&first) else {
        panic!()
    };
    s1(&mut c, uplink(id, res));
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::ErrorIndication { .. }]
    ));
}

#[test]
fn a_retransmitted_challenge_is_answered_and_the_attach_goes_on() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(21);
    let (id, out) = start(&mut c, &ue, aia_for(&ue));
    let (_, first) = downlink(&out);
    c.on_timer(t0() + T);
    let again = nas_sent(&c.take_actions());
    assert_eq!(again, vec![first.clone()]);
    // The UE saw both: the same RES twice; the first ends T3460, the second is late.
    let Reaction::Reply(res) = ue.on_downlink(&first) else {
        panic!()
    };
    let Reaction::Reply(res2) = ue.on_downlink(&again[0]) else {
        panic!()
    };
    assert_eq!(res, res2);
    s1(&mut c, uplink(id, res));
    let (_, smc) = downlink(&sent(&c.take_actions()));
    assert_eq!(
        view(&c, id).emm_procedure,
        Some(EmmProcedure::SecurityModeControl)
    );
    s1(&mut c, uplink(id, res2));
    assert!(c.take_actions().is_empty(), "a late RES is ignored");
    assert_eq!(view(&c, id).state, UeState::WaitSecurityModeComplete);
    let Reaction::Reply(done) = ue.on_downlink(&smc) else {
        panic!()
    };
    s1(&mut c, uplink(id, done));
    assert_eq!(view(&c, id).state, UeState::WaitUpdateLocation);
}

/// T3460 on the SECURITY MODE COMMAND: each one goes out with the next downlink COUNT
/// (TS 24.301 §4.4.3.1), and the UE takes a retransmitted one.
#[test]
fn security_mode_command_is_sent_again_with_a_new_count() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(22);
    let (id, out) = start(&mut c, &ue, aia_for(&ue));
    let Reaction::Reply(res) = ue.on_downlink(&downlink(&out).1) else {
        panic!()
    };
    let t1 = t0() + Duration::from_millis(300);
    c.on_s1ap(t1, A, &proto_s1ap::encode(&uplink(id, res)).unwrap());
    let (_, smc) = downlink(&sent(&c.take_actions()));
    assert_eq!((smc[0], seq(&smc)), (0x37, 0));
    let mut last = smc;
    for n in 1..=4u32 {
        c.on_timer(t1 + T * n);
        let again = nas_sent(&c.take_actions());
        assert_eq!(again.len(), 1);
        assert_eq!((again[0][0], seq(&again[0])), (0x37, n as u8), "new COUNT");
        assert_eq!(&again[0][6..], &last[6..], "the same command inside");
        last = again[0].clone();
    }
    // The UE answers the last retransmission: security mode control is done.
    let Reaction::Reply(done) = ue.on_downlink(&last) else {
        panic!()
    };
    s1(&mut c, uplink(id, done));
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.emm_procedure),
        (UeState::WaitUpdateLocation, None)
    );
    assert_eq!(v.dl_nas_count, Some(5));
    c.on_timer(t1 + T * 5);
    assert!(c
        .take_actions()
        .iter()
        .all(|a| !matches!(a, mme::Action::S1ap { .. })));
}

#[test]
fn security_mode_command_unanswered_aborts_the_attach() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(23);
    let (id, out) = start(&mut c, &ue, aia_for(&ue));
    let Reaction::Reply(res) = ue.on_downlink(&downlink(&out).1) else {
        panic!()
    };
    s1(&mut c, uplink(id, res));
    c.take_actions();
    let (_, acts) = expire_five_times(&mut c, t0(), T);
    assert!(matches!(
        &sent(&acts)[..],
        [S1ap::UeContextReleaseCommand { .. }]
    ));
    assert!(s11_sent(&acts).is_empty(), "no session yet");
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
}

/// T3450 on the ATTACH ACCEPT: sent again in DOWNLINK NAS TRANSPORTs, ciphered with a
/// new COUNT each time; the fifth expiry aborts the attach (EMM-DEREGISTERED, TS
/// 24.301 §5.5.1.2.7 c): the session is deleted and the context released.
#[test]
fn attach_accept_is_sent_again_then_the_attach_is_aborted() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(24);
    let (id, ics) = attach_to_accept(&mut c, &mut ue);
    let accept = ics.erabs[0].nas.clone().unwrap();
    assert_eq!((accept[0], seq(&accept)), (0x27, 1));
    s1(&mut c, ics_response(id, 0x77));
    c.take_actions();
    modify_bearer_ok(&mut c, id);
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.emm_procedure, v.nas_timer.as_deref()),
        (
            UeState::WaitAttachComplete,
            Some(EmmProcedure::Attach),
            Some("T3450")
        )
    );
    let (again, acts) = expire_five_times(&mut c, t0(), T);
    for (n, pdu) in again.iter().enumerate() {
        assert_eq!((pdu[0], seq(pdu)), (0x27, 2 + n as u8));
        assert!(
            matches!(ue.on_downlink(pdu), Reaction::Accepted { .. }),
            "the UE deciphers it"
        );
    }
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
    assert!(matches!(
        &sent(&acts)[..],
        [S1ap::UeContextReleaseCommand { .. }]
    ));
    session_deleted(&mut c, id, t0() + T * 5);
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
    // The GUTI of the aborted attach names no UE now: a TAU with it is rejected #9.
    let tau = ue.tau_request(proto_nas::UpdateType::Periodic, false);
    s1(
        &mut c,
        initial_ue(
            tau,
            s_tmsi_of(&ue),
            proto_s1ap::RRCEstablishmentCause::mo_Signalling,
        ),
    );
    assert_eq!(
        rejected(&sent(&c.take_actions())),
        Nas::TrackingAreaUpdateReject { cause: 9 }
    );
}

#[test]
fn attach_complete_stops_t3450() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(25);
    let id = attach(&mut c, &mut ue);
    assert_eq!(view(&c, id).nas_timer.as_deref(), None);
    assert_eq!(c.next_deadline(), None);
    c.on_timer(t0() + T * 10);
    assert!(c.take_actions().is_empty());
}

/// The timers come from the configuration.
#[test]
fn configured_timer_values_are_used() {
    let cfg = Config {
        t3460_ms: 250,
        ..Config::default()
    };
    let mut c = MmeCore::new(cfg).unwrap();
    c.on_sctp_up(A, "10.77.0.21:40000".parse().unwrap());
    setup(&mut c);
    let ue = TestUe::example(26);
    start(&mut c, &ue, aia_for(&ue));
    assert_eq!(c.next_deadline(), Some(t0() + Duration::from_millis(250)));
    assert!(MmeCore::new(Config {
        t3450_ms: 0,
        ..Config::default()
    })
    .is_err());
}

/// The mobile reachable timer runs while the UE is ECM-IDLE; a service request stops
/// it; on expiry the UE is implicitly detached: DELETE SESSION, no NAS, no S1AP, and
/// the context goes with the answer (TS 24.301 §5.3.7).
#[test]
fn mobile_reachable_timer_detaches_an_idle_ue_implicitly() {
    let cfg = Config {
        mobile_reachable_ms: Some(60_000),
        ..Config::default()
    };
    let mut c = MmeCore::new(cfg).unwrap();
    c.on_sctp_up(A, "10.77.0.21:40000".parse().unwrap());
    setup(&mut c);
    let mut ue = TestUe::example(27);
    let id = attach(&mut c, &mut ue);
    go_idle(&mut c, id);
    let reachable = t0() + Duration::from_secs(60);
    assert!(view(&c, id).mobile_reachable);
    assert_eq!(c.next_deadline(), Some(reachable));
    // Any NAS from the UE stops it: a service request, then idle again restarts it.
    serve(&mut c, &mut ue, id, 0x78);
    assert!(!view(&c, id).mobile_reachable);
    assert_eq!(c.next_deadline(), None);
    go_idle(&mut c, id);
    c.on_timer(reachable - Duration::from_millis(1));
    assert!(c.take_actions().is_empty());
    c.on_timer(reachable);
    let acts = c.take_actions();
    assert!(sent(&acts).is_empty(), "implicit: nothing to the UE or eNB");
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
    assert_eq!(view(&c, id).state, UeState::Detaching);
    session_deleted(&mut c, id, reachable);
    assert!(c.ues().is_empty());
    assert!(sent(&c.take_actions()).is_empty());
    assert_eq!(c.timer_stats().implicit_detaches, 1);
}

/// An S1 connection lost during a procedure ends it (lower layer failure): no
/// retransmission goes into the void.
#[test]
fn release_during_a_procedure_stops_its_timer() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(28);
    let id = attach(&mut c, &mut ue);
    c.reallocate_guti(id, t0()).unwrap();
    c.take_actions();
    go_idle(&mut c, id);
    let v = view(&c, id);
    assert_eq!((v.emm_procedure, v.state), (None, UeState::Idle));
    assert!(v.new_guti.is_some(), "both GUTIs stay valid");
    c.on_timer(t0() + T);
    assert!(c.take_actions().is_empty());
}

/// The eNB fails the INITIAL CONTEXT SETUP that carried the ATTACH ACCEPT: the
/// attach is over, and T3450 with it (no ATTACH ACCEPT to a context being removed).
#[test]
fn a_failed_context_setup_stops_t3450() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(29);
    let (id, _) = attach_to_accept(&mut c, &mut ue);
    assert_eq!(view(&c, id).nas_timer.as_deref(), Some("T3450"));
    s1(
        &mut c,
        S1ap::InitialContextSetupFailure {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            cause: proto_s1ap::causes::radio_unspecified(),
        },
    );
    let acts = c.take_actions();
    assert!(matches!(
        &sent(&acts)[..],
        [S1ap::UeContextReleaseCommand { .. }]
    ));
    assert_eq!(view(&c, id).nas_timer.as_deref(), None);
    c.on_timer(t0() + T);
    assert!(c.take_actions().is_empty());
}
