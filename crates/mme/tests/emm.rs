//! The MME's EMM procedures besides attach and TAU, driven with S1AP bytes and time:
//! identification (TS 24.301 §5.4.4), GUTI reallocation (§5.4.1) and the network's
//! detach (§5.5.2.3), with their timers' expiries and unexpected messages.

mod common;

use std::time::Duration;

use common::harness::*;
use common::{Reaction, TestUe};
use mme::{Action, EcmState, EmmProcedure, UeState};
use proto_gtpv2c as gtp;
use proto_nas::{msg, Direction, Guti, Nas};
use proto_s1ap::{RRCEstablishmentCause, S1ap};

const T: Duration = Duration::from_secs(6);

/// A GUTI of another MME (MME code 9).
const FOREIGN: Guti = Guti {
    plmn: common::PLMN,
    mme_group_id: 1,
    mme_code: 9,
    m_tmsi: 0x1234,
};

fn attach_by_guti(c: &mut mme::MmeCore, ue: &TestUe, guti: &Guti) {
    s1(
        c,
        S1ap::InitialUeMessage {
            enb_ue_id: ENB_UE,
            nas: ue.attach_request_by_guti(guti),
            tai: tai(),
            ecgi: ecgi(),
            s_tmsi: None,
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
        },
    );
}

/// An ATTACH REQUEST with a GUTI this MME does not know is never rejected: IDENTITY
/// REQUEST, and the attach goes on with the IMSI of the IDENTITY RESPONSE.
#[test]
fn attach_with_an_unknown_guti_asks_for_the_imsi() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(60);
    attach_by_guti(&mut c, &ue, &FOREIGN);
    let acts = c.take_actions();
    assert!(acts.iter().all(|a| !matches!(a, Action::Air { .. })));
    let (id, req) = downlink(&sent(&acts));
    assert_eq!(
        msg::parse(&req, Direction::Downlink).unwrap(),
        Nas::IdentityRequest { identity_type: 1 }
    );
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.nas_timer.as_deref()),
        (UeState::WaitIdentity, Some("T3470"))
    );
    // T3470 sends it again.
    c.on_timer(t0() + T);
    assert_eq!(nas_sent(&c.take_actions()), vec![req.clone()]);
    let Reaction::Reply(resp) = ue.on_downlink(&req) else {
        panic!()
    };
    s1(&mut c, uplink(id, resp.clone()));
    let acts = c.take_actions();
    assert!(
        matches!(&acts[..], [Action::Air { ue: u, imsi, resync: None }] if *u == id && *imsi == ue.imsi),
        "{acts:?}"
    );
    assert_eq!(view(&c, id).emm_procedure, None);
    // A second IDENTITY RESPONSE (to the retransmission) changes nothing.
    s1(&mut c, uplink(id, resp));
    assert!(c.take_actions().is_empty());
    // And the attach completes as usual.
    c.on_aia(t0(), id, Ok(aia_for(&ue)));
    let Reaction::Reply(res) = ue.on_downlink(&downlink(&sent(&c.take_actions())).1) else {
        panic!()
    };
    s1(&mut c, uplink(id, res));
    assert_eq!(view(&c, id).state, UeState::WaitSecurityModeComplete);
}

#[test]
fn attach_with_a_guti_of_this_mme_needs_no_identification() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(61);
    let first = attach(&mut c, &mut ue);
    let guti = ue.guti().unwrap();
    attach_by_guti(&mut c, &ue, &guti);
    let acts = c.take_actions();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Air { imsi, .. } if *imsi == ue.imsi)),
        "{acts:?}"
    );
    // The old context (and its session) is replaced.
    assert!(c.ues().iter().all(|v| v.mme_ue_s1ap_id != first));
}

#[test]
fn identity_request_unanswered_aborts_the_attach() {
    let mut c = core();
    setup(&mut c);
    let ue = TestUe::example(62);
    attach_by_guti(&mut c, &ue, &FOREIGN);
    let (id, _) = downlink(&sent(&c.take_actions()));
    let (_, acts) = expire_five_times(&mut c, t0(), T);
    assert!(matches!(
        &sent(&acts)[..],
        [S1ap::UeContextReleaseCommand { .. }]
    ));
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
}

#[test]
fn identity_response_without_an_imsi_or_unasked_is_ignored() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(63);
    attach_by_guti(&mut c, &ue, &FOREIGN);
    let (id, _) = downlink(&sent(&c.take_actions()));
    // IDENTITY RESPONSE carrying no identity the parser knows: T3470 keeps running.
    s1(&mut c, uplink(id, vec![0x07, 0x56, 0x01, 0xf0]));
    assert!(c.take_actions().is_empty());
    assert_eq!(
        view(&c, id).emm_procedure,
        Some(EmmProcedure::Identification)
    );
    // An attached UE sending an IDENTITY RESPONSE nobody asked for: dropped.
    let mut c = core();
    setup(&mut c);
    let id = attach(&mut c, &mut ue);
    let resp = ue.protect(msg::identity_response(&ue.imsi).unwrap());
    s1(&mut c, uplink(id, resp));
    assert!(c.take_actions().is_empty());
    assert_eq!(view(&c, id).state, UeState::Attached);
}

/// GUTI REALLOCATION COMMAND under T3450; the old GUTI stays valid until the
/// COMPLETE, then only the new one resolves.
#[test]
fn guti_reallocation_makes_the_new_guti_current_on_complete() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(64);
    let id = attach(&mut c, &mut ue);
    let old = ue.guti().unwrap();
    c.reallocate_guti(id, t0()).unwrap();
    let [cmd] = &nas_sent(&c.take_actions())[..] else {
        panic!()
    };
    assert_eq!(cmd[0], 0x27, "integrity protected and ciphered");
    let v = view(&c, id);
    assert_eq!(
        (v.emm_procedure, v.nas_timer.as_deref(), v.m_tmsi),
        (
            Some(EmmProcedure::GutiReallocation),
            Some("T3450"),
            old.m_tmsi
        )
    );
    assert!(v.new_guti.is_some());
    // A second one while this runs is refused.
    assert!(c.reallocate_guti(id, t0()).is_err());
    // T3450: the command again, with a new COUNT; the UE takes it.
    c.on_timer(t0() + T);
    let [again] = &nas_sent(&c.take_actions())[..] else {
        panic!()
    };
    assert_eq!(again[5], cmd[5] + 1);
    let Reaction::Reply(complete) = ue.on_downlink(again) else {
        panic!()
    };
    let new = ue.guti().unwrap();
    assert_ne!(new, old);
    s1(&mut c, uplink(id, complete));
    let v = view(&c, id);
    assert_eq!(
        (v.emm_procedure, v.new_guti.as_deref(), v.m_tmsi),
        (None, None, new.m_tmsi)
    );
    // From idle, the old S-TMSI is refused and the new one served.
    go_idle(&mut c, id);
    let sr = ue.service_request();
    let old_s_tmsi = proto_s1ap::STmsi {
        mme_code: old.mme_code,
        m_tmsi: old.m_tmsi,
    };
    s1(
        &mut c,
        initial_ue(sr, old_s_tmsi, RRCEstablishmentCause::mo_Data),
    );
    assert_eq!(
        rejected(&sent(&c.take_actions())),
        Nas::ServiceReject { cause: 9 }
    );
    serve(&mut c, &mut ue, id, 0x7d);
    // A late COMPLETE does nothing.
    let late = ue.protect(msg::guti_reallocation_complete().unwrap());
    s1(&mut c, uplink(id, late));
    assert!(c.take_actions().is_empty());
}

#[test]
fn guti_reallocation_needs_an_attached_connected_ue() {
    let (mut c, _ue, id) = idle_ue(65);
    assert!(c.reallocate_guti(id, t0()).is_err(), "idle");
    assert!(c.reallocate_guti(id + 100, t0()).is_err(), "unknown");
    let mut c = core();
    setup(&mut c);
    let ue = TestUe::example(66);
    let (id, _) = start(&mut c, &ue, aia_for(&ue));
    assert!(c.reallocate_guti(id, t0()).is_err(), "attach not done");
    assert!(c.take_actions().is_empty());
}

#[test]
fn guti_reallocation_unanswered_keeps_both_gutis() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(67);
    let id = attach(&mut c, &mut ue);
    c.reallocate_guti(id, t0()).unwrap();
    c.take_actions();
    let (_, acts) = expire_five_times(&mut c, t0(), T);
    assert!(acts.is_empty(), "aborted, nothing sent");
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.emm_procedure, v.ecm_state),
        (UeState::Attached, None, EcmState::Connected)
    );
    assert!(v.new_guti.is_some());
    // The UE still on the old GUTI is served from idle.
    go_idle(&mut c, id);
    serve(&mut c, &mut ue, id, 0x7e);
}

/// Network-initiated detach of a connected UE: DETACH REQUEST (re-attach required)
/// under T3422; the DETACH ACCEPT deletes the session, releases and forgets.
#[test]
fn network_detach_of_a_connected_ue() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(68);
    let id = attach(&mut c, &mut ue);
    c.network_detach(id, true, t0()).unwrap();
    let [req] = &nas_sent(&c.take_actions())[..] else {
        panic!()
    };
    assert_eq!(view(&c, id).nas_timer.as_deref(), Some("T3422"));
    c.on_timer(t0() + T);
    let [again] = &nas_sent(&c.take_actions())[..] else {
        panic!()
    };
    assert_eq!(again[5], req[5] + 1, "new COUNT");
    let Reaction::Reply(accept) = ue.on_downlink(again) else {
        panic!()
    };
    s1(&mut c, uplink(id, accept.clone()));
    let acts = c.take_actions();
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
    assert_eq!(view(&c, id).state, UeState::Detaching);
    // A second DETACH ACCEPT is out of sequence.
    s1(
        &mut c,
        uplink(id, ue.protect(msg::detach_accept().unwrap())),
    );
    assert!(c.take_actions().is_empty());
    session_deleted(&mut c, id, t0() + T);
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::UeContextReleaseCommand { .. }]
    ));
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
}

#[test]
fn network_detach_unanswered_is_done_locally() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(69);
    let id = attach(&mut c, &mut ue);
    c.network_detach(id, false, t0()).unwrap();
    let [req] = &nas_sent(&c.take_actions())[..] else {
        panic!()
    };
    let plain = ue.on_downlink(req);
    assert!(matches!(plain, Reaction::Reply(_)), "the UE decodes it");
    let (_, acts) = expire_five_times(&mut c, t0(), T);
    assert!(nas_sent(&acts).is_empty());
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
    session_deleted(&mut c, id, t0() + T * 5);
    release_complete(&mut c, id);
    assert!(c.ues().is_empty());
}

/// An idle UE is paged first; its SERVICE REQUEST gets the DETACH REQUEST.
#[test]
fn network_detach_of_an_idle_ue_pages_it_first() {
    let (mut c, mut ue, id) = idle_ue(70);
    c.network_detach(id, true, t0()).unwrap();
    let acts = c.take_actions();
    assert_eq!(pagings(&acts, &ue), vec![A, B]);
    let v = view(&c, id);
    assert!(v.paging && v.detach_pending);
    let sr = ue.service_request();
    s1(
        &mut c,
        initial_ue(sr, s_tmsi_of(&ue), RRCEstablishmentCause::mt_Access),
    );
    let out = sent(&c.take_actions());
    let [S1ap::InitialContextSetupRequest(_), S1ap::DownlinkNasTransport { nas, .. }] = &out[..]
    else {
        panic!("{out:?}")
    };
    let v = view(&c, id);
    assert_eq!(
        (v.paging, v.detach_pending, v.nas_timer.as_deref()),
        (false, false, Some("T3422"))
    );
    let Reaction::Reply(accept) = ue.on_downlink(nas) else {
        panic!()
    };
    s1(&mut c, ics_response(id, 0x7f));
    c.take_actions();
    s1(&mut c, uplink(id, accept));
    assert!(matches!(
        &s11_sent(&c.take_actions())[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
}

/// Paging gets no answer: the detach is done locally (no Failure Indication: no
/// downlink data was waiting).
#[test]
fn network_detach_of_an_unreachable_idle_ue_is_local() {
    let (mut c, ue, id) = idle_ue(71);
    c.network_detach(id, false, t0()).unwrap();
    c.take_actions();
    let t3413 = Duration::from_millis(2000);
    for n in 1..=2u32 {
        c.on_timer(t0() + t3413 * n);
        assert_eq!(pagings(&c.take_actions(), &ue).len(), 2);
    }
    c.on_timer(t0() + t3413 * 3);
    let acts = c.take_actions();
    assert!(sent(&acts).is_empty());
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
    session_deleted(&mut c, id, t0() + t3413 * 3);
    assert!(c.ues().is_empty());
    assert!(c.network_detach(id, false, t0()).is_err(), "gone");
}

/// The UE's own DETACH REQUEST crossing ours: it is answered and wins; T3422 stops.
#[test]
fn ue_detach_crossing_the_network_detach() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(72);
    let id = attach(&mut c, &mut ue);
    c.network_detach(id, true, t0()).unwrap();
    c.take_actions();
    let det = ue.detach_request(false);
    s1(&mut c, uplink(id, det));
    let acts = c.take_actions();
    assert_eq!(
        ue.on_downlink(&downlink(&sent(&acts)).1),
        Reaction::DetachAccept
    );
    assert_eq!(view(&c, id).nas_timer.as_deref(), None);
    c.on_timer(t0() + T);
    assert!(nas_sent(&c.take_actions()).is_empty());
}
