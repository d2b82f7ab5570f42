//! Tracking area update in the MME core (TS 24.301 §5.5.3, TS 23.401 §5.3.3), driven
//! with S1AP bytes: from ECM-IDLE and connected, periodic and normal, with and
//! without the active flag, with a new GUTI and T3450, and the rejects.

mod common;

use std::time::Duration;

use common::harness::*;
use common::{Reaction, TestUe, PLMN};
use mme::{Config, EcmState, EmmProcedure, MmeCore, UeState};
use proto_gtpv2c as gtp;
use proto_nas::{Nas, UpdateType};
use proto_s1ap::{self as s1ap, RRCEstablishmentCause, S1ap, Tai};

/// An MME serving TACs 1 and 2: a UE can move to another of its tracking areas.
fn two_areas(n: u32) -> (MmeCore, TestUe, u32) {
    idle_ue_in(
        core_with(Config {
            tacs: vec![1, 2],
            ..Config::default()
        }),
        n,
    )
}

/// A TAU REQUEST from idle in an INITIAL UE MESSAGE, from a cell of TAC `tac`.
fn tau_from_idle(c: &mut MmeCore, ue: &mut TestUe, kind: UpdateType, active: bool, tac: u16) {
    let nas = ue.tau_request(kind, active);
    s1(
        c,
        S1ap::InitialUeMessage {
            enb_ue_id: ENB_UE,
            nas,
            tai: Tai { plmn: PLMN, tac },
            ecgi: ecgi(),
            s_tmsi: Some(s_tmsi_of(ue)),
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
        },
    );
}

/// What the UE makes of a downlink NAS PDU that is a TAU ACCEPT: the TAU COMPLETE it
/// answers (a new GUTI) or none.
fn accepted(ue: &mut TestUe, nas: &[u8]) -> Option<Vec<u8>> {
    match ue.on_downlink(nas) {
        Reaction::Reply(complete) => Some(complete),
        Reaction::Other(s) if s.starts_with("TrackingAreaUpdateAccept") => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn periodic_tau_from_idle_is_accepted_and_the_ue_released() {
    let (mut c, mut ue, id) = idle_ue(40);
    let m_tmsi = view(&c, id).m_tmsi;
    tau_from_idle(&mut c, &mut ue, UpdateType::Periodic, false, 1);
    let acts = c.take_actions();
    let out = sent(&acts);
    let [S1ap::DownlinkNasTransport { mme_ue_id, nas, .. }, S1ap::UeContextReleaseCommand { cause, .. }] =
        &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*mme_ue_id, id);
    assert_eq!(*cause, s1ap::causes::nas_normal_release());
    assert!(s11_sent(&acts).is_empty(), "no eNB tunnel end to release");
    // Same TAI: no new GUTI, so nothing to complete; T3412 and the TAI list are in.
    let Reaction::Other(text) = ue.on_downlink(nas) else {
        panic!()
    };
    assert!(
        text.starts_with("TrackingAreaUpdateAccept")
            && text.contains("guti: None")
            && text.contains("t3412: Some(73)")
            && text.contains("tai_list: Some([0, 0, 241, 16, 0, 1])"),
        "{text}"
    );
    release_complete(&mut c, id);
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.ecm_state, v.m_tmsi),
        (UeState::Idle, EcmState::Idle, m_tmsi)
    );
    assert!(v.mobile_reachable);
    assert_eq!(v.ul_nas_count, Some(3), "the TAU REQUEST used COUNT 2");
    // Still served by the same GUTI.
    serve(&mut c, &mut ue, id, 0x79);
}

#[test]
fn tau_into_a_new_tracking_area_reallocates_the_guti_under_t3450() {
    let (mut c, mut ue, id) = two_areas(41);
    let old = s_tmsi_of(&ue);
    tau_from_idle(&mut c, &mut ue, UpdateType::TaUpdating, false, 2);
    let out = sent(&c.take_actions());
    let [S1ap::DownlinkNasTransport { nas, .. }] = &out[..] else {
        panic!("{out:?}: no release before the TAU COMPLETE")
    };
    let v = view(&c, id);
    assert_eq!(
        (v.emm_procedure, v.nas_timer.as_deref()),
        (Some(EmmProcedure::TrackingAreaUpdate), Some("T3450"))
    );
    assert!(v.new_guti.is_some());
    let complete = accepted(&mut ue, nas).expect("a new GUTI to complete");
    assert_ne!(s_tmsi_of(&ue), old);
    s1(&mut c, uplink(id, complete));
    let out = sent(&c.take_actions());
    assert!(
        matches!(&out[..], [S1ap::UeContextReleaseCommand { .. }]),
        "{out:?}"
    );
    let v = view(&c, id);
    assert_eq!((v.emm_procedure, v.new_guti.as_deref()), (None, None));
    assert_eq!(v.m_tmsi, s_tmsi_of(&ue).m_tmsi);
    release_complete(&mut c, id);
    // The old S-TMSI no longer resolves; the new one does.
    let sr = ue.service_request();
    s1(&mut c, initial_ue(sr, old, RRCEstablishmentCause::mo_Data));
    assert_eq!(
        rejected(&sent(&c.take_actions())),
        Nas::ServiceReject { cause: 9 }
    );
    assert_eq!(view(&c, id).state, UeState::Idle);
    serve(&mut c, &mut ue, id, 0x7a);
}

/// With the active flag the bearer comes back at once: the TAU ACCEPT rides in an
/// INITIAL CONTEXT SETUP whose KeNB comes from the TAU REQUEST's COUNT.
#[test]
fn tau_with_the_active_flag_sets_the_bearer_up() {
    let (mut c, mut ue, id) = idle_ue(42);
    tau_from_idle(&mut c, &mut ue, UpdateType::TaUpdating, true, 1);
    let out = sent(&c.take_actions());
    let [S1ap::InitialContextSetupRequest(ics)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        Some(ics.kenb),
        ue.kenb(),
        "KeNB from the TAU REQUEST's COUNT"
    );
    assert_eq!(accepted(&mut ue, ics.erabs[0].nas.as_ref().unwrap()), None);
    assert_eq!(view(&c, id).state, UeState::WaitServiceSetup);
    s1(&mut c, ics_response(id, 0x7b));
    let acts = c.take_actions();
    assert!(matches!(
        &s11_sent(&acts)[..],
        [(0x55, gtp::Message::ModifyBearerRequest(_))]
    ));
    modify_bearer_ok(&mut c, id);
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.ecm_state),
        (UeState::Attached, EcmState::Connected)
    );
    assert!(v.bearer_active);
    assert_eq!(c.next_deadline(), None, "mobile reachable timer stopped");
}

#[test]
fn tau_in_connected_mode_is_accepted_without_a_release() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(43);
    let id = attach(&mut c, &mut ue);
    let tau = ue.tau_request(UpdateType::TaUpdating, false);
    s1(&mut c, uplink(id, tau));
    let acts = c.take_actions();
    let nas = nas_sent(&acts);
    assert_eq!(nas.len(), 1);
    assert_eq!(sent(&acts).len(), 1, "no release");
    assert_eq!(accepted(&mut ue, &nas[0]), None);
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.ecm_state, v.emm_procedure),
        (UeState::Attached, EcmState::Connected, None)
    );
}

#[test]
fn tau_from_an_unknown_guti_or_with_a_bad_mac_is_rejected_9() {
    let (mut c, mut ue, id) = idle_ue(44);
    // Another UE's GUTI this MME never allocated.
    let mut stranger = TestUe::example(45);
    let other = attach(&mut c, &mut stranger);
    go_idle(&mut c, other);
    let mut stranger_nas = stranger.tau_request(UpdateType::Periodic, false);
    // Tampered MAC: the context stays, the COUNT does not move.
    stranger_nas[2] ^= 0x01;
    s1(
        &mut c,
        initial_ue(
            stranger_nas,
            s_tmsi_of(&stranger),
            RRCEstablishmentCause::mo_Signalling,
        ),
    );
    assert_eq!(
        rejected(&sent(&c.take_actions())),
        Nas::TrackingAreaUpdateReject { cause: 9 }
    );
    let v = view(&c, other);
    assert_eq!((v.state, v.ul_nas_count), (UeState::Idle, Some(2)));
    // A UE registered at another MME (its M-TMSI is one this MME never gave out).
    let mut far_mme = core();
    setup(&mut far_mme);
    for n in [48, 49] {
        attach(&mut far_mme, &mut TestUe::example(n));
    }
    let mut far = TestUe::example(50);
    attach(&mut far_mme, &mut far);
    go_idle(&mut far_mme, 3);
    assert!(c.ues().iter().all(|v| v.m_tmsi != s_tmsi_of(&far).m_tmsi));
    tau_from_idle(&mut c, &mut far, UpdateType::Periodic, false, 1);
    assert_eq!(
        rejected(&sent(&c.take_actions())),
        Nas::TrackingAreaUpdateReject { cause: 9 }
    );
    assert_eq!(c.ues().len(), 2);
    assert_eq!(view(&c, id).state, UeState::Idle);
    // The right UE with the right MAC is still taken.
    tau_from_idle(&mut c, &mut ue, UpdateType::Periodic, false, 1);
    assert_eq!(nas_sent(&c.take_actions()).len(), 1);
}

/// T3450 on a TAU ACCEPT with a new GUTI: four retransmissions with new COUNTs, then
/// the update is aborted: both GUTIs stay valid and the UE from idle is released.
#[test]
fn tau_accept_unanswered_keeps_both_gutis() {
    let (mut c, mut ue, id) = two_areas(46);
    let old = s_tmsi_of(&ue);
    tau_from_idle(&mut c, &mut ue, UpdateType::TaUpdating, false, 2);
    let [first] = &nas_sent(&c.take_actions())[..] else {
        panic!()
    };
    let (again, acts) = expire_five_times(&mut c, t0(), Duration::from_secs(6));
    let counts: Vec<u8> = again.iter().map(|p| p[5]).collect();
    assert_eq!(
        counts,
        (1..=4).map(|n| first[5] + n).collect::<Vec<_>>(),
        "new COUNTs"
    );
    let out = sent(&acts);
    assert!(
        matches!(&out[..], [S1ap::UeContextReleaseCommand { .. }]),
        "{out:?}"
    );
    release_complete(&mut c, id);
    let v = view(&c, id);
    assert_eq!((v.state, v.emm_procedure), (UeState::Idle, None));
    assert!(v.new_guti.is_some());
    assert_eq!(v.m_tmsi, old.m_tmsi);
    // The UE never saw the accept and still uses the old GUTI: served.
    serve(&mut c, &mut ue, id, 0x7c);
    assert!(
        view(&c, id).new_guti.is_some(),
        "the new one still valid too"
    );
    assert_eq!(c.timer_stats().procedures_aborted, 1);
}

#[test]
fn unexpected_tau_complete_is_ignored() {
    let mut c = core();
    setup(&mut c);
    let mut ue = TestUe::example(47);
    let id = attach(&mut c, &mut ue);
    let before = view(&c, id);
    let complete = ue.protect(proto_nas::msg::tracking_area_update_complete().unwrap());
    s1(&mut c, uplink(id, complete));
    assert!(c.take_actions().is_empty());
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.m_tmsi, v.emm_procedure),
        (before.state, before.m_tmsi, None)
    );
    // A plain TAU REQUEST once security is active is dropped.
    let plain = proto_nas::msg::tracking_area_update_request(
        UpdateType::Periodic,
        false,
        0,
        &ue.guti().unwrap(),
        None,
        None,
    )
    .unwrap();
    s1(&mut c, uplink(id, plain));
    assert!(c.take_actions().is_empty());
}

/// Random octets behind the headers an initial NAS message can have (plain, integrity
/// protected, ciphered, short service request), and truncations of a real TAU
/// REQUEST, from idle: never a panic; a reject at most, and the idle context unharmed.
#[test]
fn garbage_from_idle_never_harms_the_context() {
    let (mut c, mut ue, id) = idle_ue(48);
    let before = view(&c, id);
    let tau = ue.tau_request(UpdateType::Periodic, false);
    let mut seed = 0x2545_f491u32;
    let mut pdus: Vec<Vec<u8>> = (1..tau.len()).map(|n| tau[..n].to_vec()).collect();
    for len in 0..48usize {
        for first in [0x07, 0x17, 0x27, 0xc7] {
            let mut pdu = vec![first, 0x48];
            pdu.extend((0..len).map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            }));
            pdus.push(pdu);
        }
    }
    for pdu in pdus {
        s1(
            &mut c,
            initial_ue(pdu, s_tmsi_of(&ue), RRCEstablishmentCause::mo_Signalling),
        );
        let out = sent(&c.take_actions());
        assert!(
            out.is_empty()
                || matches!(
                    rejected(&out),
                    Nas::TrackingAreaUpdateReject { cause: 9 } | Nas::ServiceReject { cause: 9 }
                ),
            "{out:?}"
        );
    }
    let after = view(&c, id);
    assert_eq!(
        (after.state, after.ul_nas_count, after.m_tmsi),
        (before.state, before.ul_nas_count, before.m_tmsi)
    );
    // The real request still goes through.
    s1(
        &mut c,
        initial_ue(tau, s_tmsi_of(&ue), RRCEstablishmentCause::mo_Signalling),
    );
    assert_eq!(nas_sent(&c.take_actions()).len(), 1);
}

/// A UE released for inactivity moves to a cell of another eNB and its TAU REQUEST may
/// arrive there before the first eNB's UE CONTEXT RELEASE COMPLETE (two associations, no
/// order between them): it is still EMM-REGISTERED, so the TAU is served, not rejected.
/// Seen in the lab under the `mixed` traffic (a TAU REJECT #9 every few hundred TAUs).
#[test]
fn tau_racing_the_release_of_the_old_s1_connection_is_served() {
    let mut c = core_with(Config {
        tacs: vec![1, 2],
        ..Config::default()
    });
    setup(&mut c);
    let mut ue = TestUe::example(43);
    let id = attach(&mut c, &mut ue);
    s1(
        &mut c,
        S1ap::UeContextReleaseRequest {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            cause: s1ap::causes::user_inactivity(),
        },
    );
    c.take_actions();
    assert_eq!(view(&c, id).state, UeState::Releasing);
    tau_from_idle(&mut c, &mut ue, UpdateType::TaUpdating, false, 2);
    let out = sent(&c.take_actions());
    let [S1ap::DownlinkNasTransport { nas, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(
        accepted(&mut ue, nas).is_some(),
        "a TAU ACCEPT with a new GUTI"
    );
    assert_eq!(view(&c, id).ecm_state, EcmState::Connected);
}

/// Downlink data for a UE that is connected only for its TAU (from idle, no active flag):
/// the SGW sends one notification and buffers, so the MME pages the UE once the TAU's
/// connection is released, and the data reaches it. Without this the packet stayed at the
/// SGW (seen in the lab: one paging in ~800 never came).
#[test]
fn downlink_during_a_tau_from_idle_pages_the_ue_after_the_release() {
    let (mut c, mut ue, id) = two_areas(44);
    tau_from_idle(&mut c, &mut ue, UpdateType::TaUpdating, false, 2);
    let out = sent(&c.take_actions());
    let [S1ap::DownlinkNasTransport { nas, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    let ddn = gtp::Message::DownlinkDataNotification(gtp::DownlinkDataNotification {
        ebis: vec![5],
        ..Default::default()
    });
    let (_, ack) = c.on_s11_request(t0(), id, ddn).expect("an acknowledgement");
    assert!(
        matches!(ack, gtp::Message::DownlinkDataNotificationAcknowledge(ref a) if a.cause == gtp::cause::REQUEST_ACCEPTED),
        "{ack:?}"
    );
    let paging = |acts: &[mme::Action]| {
        sent_to(acts)
            .iter()
            .any(|(_, m)| matches!(m, S1ap::Paging(_)))
    };
    // No paging yet: the UE has a connection.
    assert!(!paging(&c.take_actions()));
    let complete = accepted(&mut ue, nas).expect("a new GUTI to complete");
    s1(&mut c, uplink(id, complete));
    let out = sent(&c.take_actions());
    assert!(
        matches!(&out[..], [S1ap::UeContextReleaseCommand { .. }]),
        "{out:?}"
    );
    release_complete(&mut c, id);
    let acts = c.take_actions();
    assert!(paging(&acts), "paged after the release: {acts:?}");
    assert!(view(&c, id).paging);
}
