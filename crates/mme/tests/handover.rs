//! Several eNBs and handover between them, driven with S1AP bytes: X2 (PATH SWITCH
//! REQUEST) and S1 (HANDOVER REQUIRED .. NOTIFY), their failure, cancel and timeout
//! paths, the NH/NCC chain, and malformed messages.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::harness::*;
use common::{TestUe, PLMN};
use mme::{Action, Config, EcmState, HandoverPhase, MmeCore, UeState};
use proto_gtpv2c as gtp;
use proto_s1ap::{self as s1ap, causes, Ecgi, S1ap};
use proto_sctp::AssocId;

/// The target's S1 connection: eNB B's id for the UE, its S1-U F-TEID and cell.
const ON_B: At = At {
    assoc: B,
    enb_ue_id: 9,
};
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 22);
const B_TEID: u32 = 0x9abc;
const B_CELL: Ecgi = Ecgi {
    plmn: PLMN,
    cell_id: 0x20,
};
/// What the UE security capabilities of the test UE give in S1AP.
const CAPS: (u8, u8) = (0xc0, 0xc0);

/// A core with eNBs A, B and OTHER_TA and one UE attached on A.
fn attached(n: u32) -> (MmeCore, TestUe, u32) {
    let mut c = core();
    setup(&mut c);
    more_enbs(&mut c);
    let mut ue = TestUe::example(n);
    let id = attach(&mut c, &mut ue);
    (c, ue, id)
}

/// The NH chain the UE derives (TS 33.401 A.4): the `n`th NH after the KeNB of its
/// attach, which the SECURITY MODE COMPLETE's uplink COUNT 0 gave (A.3).
fn nh(ue: &TestUe, n: usize) -> [u8; 32] {
    let kasme = aia_for(ue).vectors[0].kasme;
    let mut key = aka::kenb(&kasme, 0);
    for _ in 0..n {
        key = aka::nh(&kasme, &key);
    }
    key
}

fn bearer(enb_addr: Ipv4Addr, enb_teid: u32) -> s1ap::ErabSetup {
    s1ap::ErabSetup {
        erab_id: 5,
        enb_addr,
        enb_teid,
    }
}

fn path_switch(to: At, id: u32, caps: (u8, u8)) -> S1ap {
    S1ap::PathSwitchRequest(Box::new(s1ap::PathSwitchRequest {
        enb_ue_id: to.enb_ue_id,
        source_mme_ue_id: id,
        erabs: vec![bearer(B_ADDR, B_TEID)],
        tai: tai(),
        ecgi: B_CELL,
        ue_sec_enc: caps.0,
        ue_sec_int: caps.1,
    }))
}

fn modify_bearer_refused(c: &mut MmeCore, id: u32) {
    c.on_s11(
        t0(),
        id,
        Ok(gtp::Message::ModifyBearerResponse(
            gtp::ModifyBearerResponse {
                cause: gtp::cause::CONTEXT_NOT_FOUND,
                ..Default::default()
            },
        )),
    );
}

/// The one MODIFY BEARER REQUEST among `acts`: to the SGW's TEID, with the eNB's
/// F-TEID and the cell in the ULI.
fn assert_modify_bearer(acts: &[Action], addr: Ipv4Addr, teid: u32, cell: u32) {
    match &s11_sent(acts)[..] {
        [(0x55, gtp::Message::ModifyBearerRequest(r))] => {
            let f = r.bearer_contexts[0].fteid(0).unwrap();
            assert_eq!((f.teid, f.ipv4), (teid, Some(addr)));
            assert_eq!(r.bearer_contexts[0].ebi, 5);
            assert_eq!(r.uli.as_ref().unwrap().ecgi.unwrap().eci, cell);
        }
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------ several eNBs

#[test]
fn each_enb_serves_its_own_ues_and_paging_follows_the_tai_list() {
    let mut c = core();
    setup(&mut c);
    more_enbs(&mut c);
    let ids: Vec<_> = c.enbs().iter().map(|e| e.enb_id).collect();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3)], "one S1 Setup each");
    // Two UEs, one per eNB, with the same eNB UE S1AP ID: the association tells them apart.
    let mut ue1 = TestUe::example(21);
    let mut ue2 = TestUe::example(22);
    let on_b = At {
        assoc: B,
        enb_ue_id: ENB_UE,
    };
    let id1 = attach(&mut c, &mut ue1);
    let id2 = attach_at(&mut c, on_b, &mut ue2);
    assert_ne!(id1, id2);
    let (v1, v2) = (view(&c, id1), view(&c, id2));
    assert_eq!((v1.enb_id, v1.enb_ue_s1ap_id), (Some(1), Some(ENB_UE)));
    assert_eq!((v2.enb_id, v2.enb_ue_s1ap_id), (Some(2), Some(ENB_UE)));
    // UE 1's ids from eNB B are an unknown pair there.
    s1_on(&mut c, B, uplink_at(on_b, id1, vec![0x07, 0x5d]));
    let out = sent_on(B, &c.take_actions());
    assert!(
        matches!(&out[..], [S1ap::ErrorIndication { mme_ue_id: Some(m), cause: Some(cause), .. }]
            if *m == id1 && *cause == causes::unknown_pair()),
        "{out:?}"
    );
    // UE 2 goes idle from B; downlink data pages it on the eNBs of its TAI list
    // (TAC 1: A and B), never on OTHER_TA (TAC 7).
    go_idle_at(&mut c, on_b, id2);
    assert_eq!(view(&c, id1).ecm_state, EcmState::Connected);
    assert_eq!(view(&c, id2).ecm_state, EcmState::Idle);
    let ddn = gtp::Message::DownlinkDataNotification(gtp::DownlinkDataNotification {
        ebis: vec![5],
        ..Default::default()
    });
    c.on_s11_request(Instant::now(), id2, ddn);
    let paged: Vec<AssocId> = sent_to(&c.take_actions())
        .into_iter()
        .map(|(a, m)| {
            assert!(matches!(m, S1ap::Paging(_)), "{m:?}");
            a
        })
        .collect();
    assert_eq!(paged, vec![A, B]);
}

// ------------------------------------------------------------------ X2

#[test]
fn x2_handover_switches_the_path_and_moves_the_context() {
    let (mut c, mut ue, id) = attached(23);
    assert_eq!(view(&c, id).ncc, Some(1), "the KeNB's NH has NCC 1");
    s1_on(&mut c, B, path_switch(ON_B, id, CAPS));
    let acts = c.take_actions();
    assert!(
        sent_to(&acts).is_empty(),
        "nothing to an eNB before the SGW answers"
    );
    assert_modify_bearer(&acts, B_ADDR, B_TEID, B_CELL.cell_id);
    let v = view(&c, id);
    assert_eq!(v.handover, Some(HandoverPhase::PathSwitch));
    assert_eq!(
        (v.enb_id, v.enb_s1u_teid),
        (Some(1), Some(0x77)),
        "still on A"
    );
    modify_bearer_ok(&mut c, id);
    let out = sent_on(B, &c.take_actions());
    let [S1ap::PathSwitchRequestAcknowledge {
        mme_ue_id,
        enb_ue_id: 9,
        security,
        ue_sec: None,
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*mme_ue_id, id);
    // TS 33.401 §7.2.8.4.2: NCC one up from the KeNB's NH (1), the NH after it.
    assert_eq!(security.ncc, 2);
    assert_eq!(security.nh, nh(&ue, 2));
    let v = view(&c, id);
    assert_eq!(v.handover, None);
    assert_eq!((v.enb_id, v.enb_ue_s1ap_id), (Some(2), Some(9)));
    assert_eq!((v.cell_id, v.tac), (0x20, 1));
    assert_eq!(
        (v.enb_s1u_teid, v.enb_s1u_addr),
        (Some(B_TEID), Some(B_ADDR))
    );
    assert!(v.bearer_active);
    assert_eq!((v.state, v.ncc), (UeState::Attached, Some(2)));
    // The source is not released by the MME (the target does it over X2), and its
    // old ids are no longer the UE's.
    s1(&mut c, uplink(id, vec![0x07, 0x5d]));
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::ErrorIndication { .. }]
    ));
    // Back to A over X2: the chain moves on.
    let back = At {
        assoc: A,
        enb_ue_id: 31,
    };
    s1(&mut c, path_switch(back, id, CAPS));
    assert_modify_bearer(&c.take_actions(), B_ADDR, B_TEID, B_CELL.cell_id);
    modify_bearer_ok(&mut c, id);
    let out = sent(&c.take_actions());
    let [S1ap::PathSwitchRequestAcknowledge { security, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!((security.ncc, security.nh), (3, nh(&ue, 3)));
    // The UE's NAS goes on over its new connection: a detach from A's new id.
    let det = ue.detach_request(false);
    s1(&mut c, uplink_at(back, id, det));
    assert!(matches!(
        &s11_sent(&c.take_actions())[..],
        [(0x55, gtp::Message::DeleteSessionRequest(_))]
    ));
}

#[test]
fn path_switch_is_refused_for_what_cannot_switch() {
    let (mut c, _ue, id) = attached(24);
    let refusal = |c: &mut MmeCore, assoc: AssocId, m: S1ap| -> s1ap::Cause {
        s1_on(c, assoc, m);
        let acts = c.take_actions();
        assert!(s11_sent(&acts).is_empty());
        match &sent_on(assoc, &acts)[..] {
            [S1ap::PathSwitchRequestFailure {
                enb_ue_id: 9,
                cause,
                ..
            }] => cause.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        refusal(&mut c, B, path_switch(ON_B, id + 50, CAPS)),
        causes::unknown_mme_ue_id()
    );
    let S1ap::PathSwitchRequest(mut no_default) = path_switch(ON_B, id, CAPS) else {
        unreachable!()
    };
    no_default.erabs[0].erab_id = 6;
    assert_eq!(
        refusal(&mut c, B, S1ap::PathSwitchRequest(no_default)),
        causes::ho_failure_in_target()
    );
    // An association that never did S1 Setup.
    c.on_sctp_up(AssocId(8), "10.77.0.29:1".parse().unwrap());
    assert_eq!(
        refusal(&mut c, AssocId(8), path_switch(ON_B, id, CAPS)),
        causes::protocol_semantic_error()
    );
    // One path switch at a time.
    s1_on(&mut c, B, path_switch(ON_B, id, CAPS));
    c.take_actions();
    assert_eq!(
        refusal(&mut c, B, path_switch(ON_B, id, CAPS)),
        causes::interaction_with_other_procedure()
    );
    let v = view(&c, id);
    assert_eq!((v.enb_id, v.ncc), (Some(1), Some(1)));
}

#[test]
fn a_failed_modify_bearer_gives_path_switch_request_failure() {
    let (mut c, _ue, id) = attached(25);
    // Refused by the SGW, then no answer at all (T3/N3 ran out in the shell).
    for refuse in [
        modify_bearer_refused as fn(&mut MmeCore, u32),
        |c: &mut MmeCore, id| c.on_s11(t0(), id, Err("no response from the SPGW".into())),
    ] {
        s1_on(&mut c, B, path_switch(ON_B, id, CAPS));
        c.take_actions();
        refuse(&mut c, id);
        let out = sent_on(B, &c.take_actions());
        assert!(
            matches!(&out[..], [S1ap::PathSwitchRequestFailure { mme_ue_id, enb_ue_id: 9, cause }]
                if *mme_ue_id == id && *cause == causes::ho_failure_in_target()),
            "{out:?}"
        );
        let v = view(&c, id);
        assert_eq!(v.handover, None);
        assert_eq!(
            (v.enb_id, v.enb_s1u_teid, v.ncc),
            (Some(1), Some(0x77), Some(1))
        );
        assert_eq!(v.state, UeState::Attached);
    }
}

#[test]
fn path_switch_with_other_security_capabilities_gets_the_stored_ones() {
    let (mut c, ue, id) = attached(26);
    s1_on(&mut c, B, path_switch(ON_B, id, (0xe0, 0xe0)));
    c.take_actions();
    modify_bearer_ok(&mut c, id);
    let out = sent_on(B, &c.take_actions());
    let [S1ap::PathSwitchRequestAcknowledge {
        ue_sec, security, ..
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    // TS 33.401 §7.2.4.2.2: the MME's stored capabilities go back to the target.
    assert_eq!(*ue_sec, Some(CAPS));
    assert_eq!(security.nh, nh(&ue, 2));
}

// ------------------------------------------------------------------ S1

fn target_enb_b() -> s1ap::TargetEnb {
    s1ap::TargetEnb {
        plmn: PLMN,
        enb_id: 2,
        tai: tai(),
    }
}

const S2T: [u8; 4] = [0x40, 0x01, 0x02, 0x03];
const T2S: [u8; 3] = [0x00, 0x01, 0x80];

fn handover_required(id: u32, target: s1ap::TargetEnb) -> S1ap {
    S1ap::HandoverRequired(Box::new(s1ap::HandoverRequired {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
        cause: s1ap::Cause::radioNetwork(
            s1ap::CauseRadioNetwork::handover_desirable_for_radio_reason,
        ),
        target,
        source_to_target: S2T.to_vec(),
    }))
}

/// HANDOVER REQUIRED from A at `now`; returns the HANDOVER REQUEST B got.
fn prepare(c: &mut MmeCore, now: Instant, id: u32) -> s1ap::HandoverRequest {
    c.on_s1ap(
        now,
        A,
        &s1ap::encode(&handover_required(id, target_enb_b())).unwrap(),
    );
    let out = sent_on(B, &c.take_actions());
    let [S1ap::HandoverRequest(r)] = &out[..] else {
        panic!("{out:?}")
    };
    *r.clone()
}

fn request_ack(id: u32, admitted: Vec<s1ap::ErabSetup>) -> S1ap {
    S1ap::HandoverRequestAcknowledge {
        mme_ue_id: id,
        enb_ue_id: ON_B.enb_ue_id,
        admitted,
        target_to_source: T2S.to_vec(),
    }
}

/// Prepared and acknowledged: the HANDOVER COMMAND has gone to A.
fn execute(c: &mut MmeCore, now: Instant, id: u32) {
    prepare(c, now, id);
    s1_on(c, B, request_ack(id, vec![bearer(B_ADDR, B_TEID)]));
    let out = sent(&c.take_actions());
    assert!(
        matches!(&out[..], [S1ap::HandoverCommand { mme_ue_id, enb_ue_id: ENB_UE, target_to_source }]
            if *mme_ue_id == id && target_to_source[..] == T2S),
        "{out:?}"
    );
    assert_eq!(view(c, id).handover, Some(HandoverPhase::Executing));
}

/// HANDOVER NOTIFY from B: the UE is in B's cell.
fn notify(id: u32, enb_ue_id: u32) -> S1ap {
    S1ap::HandoverNotify {
        mme_ue_id: id,
        enb_ue_id,
        tai: tai(),
        ecgi: B_CELL,
    }
}

fn release_command_to(assoc: AssocId, acts: &[Action], id: u32, enb_ue_id: u32) -> s1ap::Cause {
    match &sent_on(assoc, acts)[..] {
        [S1ap::UeContextReleaseCommand {
            mme_ue_id,
            enb_ue_id: Some(e),
            cause,
        }] if *mme_ue_id == id && *e == enb_ue_id => cause.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn s1_handover_moves_the_ue_and_releases_the_source() {
    let (mut c, ue, id) = attached(27);
    let t0 = Instant::now();
    let r = prepare(&mut c, t0, id);
    assert_eq!(r.mme_ue_id, id);
    assert_eq!(r.source_to_target, S2T, "the container passes through");
    assert_eq!(r.erabs.len(), 1);
    let e = &r.erabs[0];
    assert_eq!(
        (e.erab_id, e.qci, e.sgw_teid, e.nas.as_ref()),
        (5, 9, 0x99, None)
    );
    assert_eq!(e.sgw_addr, Ipv4Addr::new(10, 77, 1, 30));
    assert_eq!((r.ambr_dl, r.ambr_ul), (100_000_000, 50_000_000));
    assert_eq!((r.ue_sec_enc, r.ue_sec_int), CAPS);
    assert_eq!((r.security.ncc, r.security.nh), (2, nh(&ue, 2)));
    assert_eq!(view(&c, id).handover, Some(HandoverPhase::Preparing));
    let ts1relocoverall = Duration::from_millis(Config::default().ts1relocoverall_ms);
    assert_eq!(c.next_deadline(), Some(t0 + ts1relocoverall));
    s1_on(&mut c, B, request_ack(id, vec![bearer(B_ADDR, B_TEID)]));
    let out = sent(&c.take_actions());
    assert!(
        matches!(&out[..], [S1ap::HandoverCommand { .. }]),
        "{out:?}"
    );
    // The PDCP state goes from the source to the target, named by the target's ids.
    let bearers = vec![s1ap::BearerStatus {
        erab_id: 5,
        ul_pdcp_sn: 4,
        ul_hfn: 0,
        dl_pdcp_sn: 9,
        dl_hfn: 1,
    }];
    let status = s1ap::StatusTransfer {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
        bearers: bearers.clone(),
    };
    s1(&mut c, S1ap::EnbStatusTransfer(status));
    assert_eq!(
        sent_on(B, &c.take_actions()),
        vec![S1ap::MmeStatusTransfer(s1ap::StatusTransfer {
            mme_ue_id: id,
            enb_ue_id: ON_B.enb_ue_id,
            bearers,
        })]
    );
    // The UE arrives: the SGW switches to the target, the source is released.
    s1_on(&mut c, B, notify(id, ON_B.enb_ue_id));
    let acts = c.take_actions();
    assert_modify_bearer(&acts, B_ADDR, B_TEID, B_CELL.cell_id);
    assert_eq!(
        release_command_to(A, &acts, id, ENB_UE),
        causes::successful_handover()
    );
    let v = view(&c, id);
    assert_eq!(v.handover, None);
    assert_eq!(
        (v.enb_id, v.enb_ue_s1ap_id, v.cell_id),
        (Some(2), Some(9), 0x20)
    );
    assert_eq!(v.enb_s1u_teid, Some(B_TEID));
    modify_bearer_ok(&mut c, id);
    assert!(view(&c, id).bearer_active);
    // The source's completion leaves the context (now on B) alone.
    s1(
        &mut c,
        S1ap::UeContextReleaseComplete {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
        },
    );
    assert!(c.take_actions().is_empty());
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.ecm_state, v.enb_id),
        (UeState::Attached, EcmState::Connected, Some(2))
    );
    assert_eq!(c.next_deadline(), None);
    // The UE lives on at B: idle from there.
    go_idle_at(&mut c, ON_B, id);
    assert_eq!(view(&c, id).state, UeState::Idle);
}

#[test]
fn s1_handover_preparation_failures() {
    let (mut c, _ue, id) = attached(28);
    let prep_failure = |c: &mut MmeCore| -> s1ap::Cause {
        match &sent(&c.take_actions())[..] {
            [S1ap::HandoverPreparationFailure {
                mme_ue_id,
                enb_ue_id: ENB_UE,
                cause,
            }] if *mme_ue_id == id => cause.clone(),
            other => panic!("{other:?}"),
        }
    };
    // No association with the target eNB, or one of another PLMN.
    for target in [
        s1ap::TargetEnb {
            enb_id: 99,
            ..target_enb_b()
        },
        s1ap::TargetEnb {
            plmn: [0x02, 0xf8, 0x39],
            ..target_enb_b()
        },
    ] {
        s1(&mut c, handover_required(id, target));
        assert_eq!(prep_failure(&mut c), causes::unknown_target_id());
    }
    // The target refuses: its cause goes to the source.
    prepare(&mut c, Instant::now(), id);
    let no_room = s1ap::Cause::radioNetwork(
        s1ap::CauseRadioNetwork::no_radio_resources_available_in_target_cell,
    );
    s1_on(
        &mut c,
        B,
        S1ap::HandoverFailure {
            mme_ue_id: id,
            cause: no_room.clone(),
        },
    );
    assert_eq!(prep_failure(&mut c), no_room);
    assert_eq!(view(&c, id).handover, None);
    // The target admits only another bearer: failure to the source, release at the target.
    prepare(&mut c, Instant::now(), id);
    let other = s1ap::ErabSetup {
        erab_id: 6,
        ..bearer(B_ADDR, B_TEID)
    };
    s1_on(&mut c, B, request_ack(id, vec![other]));
    let acts = c.take_actions();
    let to_a: Vec<_> = sent_to(&acts)
        .into_iter()
        .filter(|(a, _)| *a == A)
        .collect();
    assert!(
        matches!(&to_a[..], [(_, S1ap::HandoverPreparationFailure { .. })]),
        "{to_a:?}"
    );
    let to_b: Vec<Action> = acts
        .into_iter()
        .filter(|a| matches!(a, Action::S1ap { assoc, .. } if *assoc == B))
        .collect();
    release_command_to(B, &to_b, id, ON_B.enb_ue_id);
    // One handover at a time.
    prepare(&mut c, Instant::now(), id);
    s1(&mut c, handover_required(id, target_enb_b()));
    assert_eq!(
        prep_failure(&mut c),
        causes::interaction_with_other_procedure()
    );
    // The UE stayed on A all along.
    let v = view(&c, id);
    assert_eq!((v.enb_id, v.state), (Some(1), UeState::Attached));
}

#[test]
fn cancel_is_acknowledged_and_a_prepared_target_released() {
    let (mut c, _ue, id) = attached(29);
    let cancel = S1ap::HandoverCancel {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
        cause: causes::handover_cancelled(),
    };
    let ack = S1ap::HandoverCancelAcknowledge {
        mme_ue_id: id,
        enb_ue_id: ENB_UE,
    };
    // Cancelled while preparing: the target's late acknowledge is released.
    prepare(&mut c, Instant::now(), id);
    s1(&mut c, cancel.clone());
    assert_eq!(sent(&c.take_actions()), vec![ack.clone()]);
    assert_eq!(view(&c, id).handover, None);
    s1_on(&mut c, B, request_ack(id, vec![bearer(B_ADDR, B_TEID)]));
    let acts = c.take_actions();
    assert_eq!(
        release_command_to(B, &acts, id, ON_B.enb_ue_id),
        causes::handover_cancelled()
    );
    let complete_at_b = S1ap::UeContextReleaseComplete {
        mme_ue_id: id,
        enb_ue_id: ON_B.enb_ue_id,
    };
    s1_on(&mut c, B, complete_at_b.clone());
    assert!(c.take_actions().is_empty());
    // Cancelled while executing: acknowledged, and the target released at once.
    execute(&mut c, Instant::now(), id);
    s1(&mut c, cancel.clone());
    let acts = c.take_actions();
    let to_a: Vec<_> = sent_to(&acts)
        .into_iter()
        .filter(|(a, _)| *a == A)
        .collect();
    assert_eq!(to_a, vec![(A, ack.clone())]);
    let to_b: Vec<Action> = acts
        .into_iter()
        .filter(|a| matches!(a, Action::S1ap { assoc, .. } if *assoc == B))
        .collect();
    assert_eq!(
        release_command_to(B, &to_b, id, ON_B.enb_ue_id),
        causes::handover_cancelled()
    );
    s1_on(&mut c, B, complete_at_b);
    assert!(c.take_actions().is_empty());
    // A cancel with nothing to cancel is acknowledged too (TS 36.413 §8.4.5.2).
    s1(&mut c, cancel);
    assert_eq!(sent(&c.take_actions()), vec![ack]);
    let v = view(&c, id);
    assert_eq!(
        (v.enb_id, v.state, v.handover),
        (Some(1), UeState::Attached, None)
    );
    // The UE still works on A: its release to idle goes through.
    go_idle(&mut c, id);
}

#[test]
fn ts1relocoverall_ends_a_handover_that_never_completes() {
    let (mut c, _ue, id) = attached(30);
    let t = Duration::from_millis(Config::default().ts1relocoverall_ms);
    // No answer from the target: the source hears TS1RELOCprep expiry.
    let t0 = Instant::now();
    prepare(&mut c, t0, id);
    c.on_timer(t0 + t - Duration::from_millis(1));
    assert!(c.take_actions().is_empty());
    c.on_timer(t0 + t);
    assert_eq!(
        sent(&c.take_actions()),
        vec![S1ap::HandoverPreparationFailure {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            cause: causes::ts1relocprep_expiry()
        }]
    );
    assert_eq!((view(&c, id).handover, c.next_deadline()), (None, None));
    // Commanded, but the UE never reaches the target: its connection is released.
    let t1 = t0 + 2 * t;
    execute(&mut c, t1, id);
    c.on_timer(t1 + t);
    let acts = c.take_actions();
    assert_eq!(
        release_command_to(B, &acts, id, ON_B.enb_ue_id),
        causes::ts1relocoverall_expiry()
    );
    // A late HANDOVER NOTIFY is an unknown pair; the UE stays on A.
    s1_on(&mut c, B, notify(id, ON_B.enb_ue_id));
    let acts = c.take_actions();
    assert!(s11_sent(&acts).is_empty());
    assert!(matches!(
        &sent_on(B, &acts)[..],
        [S1ap::ErrorIndication { .. }]
    ));
    let v = view(&c, id);
    assert_eq!(
        (v.enb_id, v.state, v.handover),
        (Some(1), UeState::Attached, None)
    );
}

#[test]
fn a_lost_association_ends_the_handover() {
    let (mut c, _ue, id) = attached(31);
    // The target goes while preparing: the source is told.
    prepare(&mut c, Instant::now(), id);
    c.on_sctp_down(t0(), B);
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::HandoverPreparationFailure { .. }]
    ));
    assert_eq!(view(&c, id).handover, None);
    // The source goes while executing: the UE is idle, the prepared target released.
    more_enbs(&mut c);
    execute(&mut c, Instant::now(), id);
    c.on_sctp_down(t0(), A);
    let acts = c.take_actions();
    assert_eq!(
        release_command_to(B, &acts, id, ON_B.enb_ue_id),
        causes::handover_cancelled()
    );
    let v = view(&c, id);
    assert_eq!(
        (v.state, v.ecm_state, v.handover),
        (UeState::Idle, EcmState::Idle, None)
    );
    // The source goes during a path switch: the target hears it failed.
    let (mut c, _ue, id) = attached(34);
    s1_on(&mut c, B, path_switch(ON_B, id, CAPS));
    c.take_actions();
    c.on_sctp_down(t0(), A);
    let out = sent_on(B, &c.take_actions());
    assert!(
        matches!(
            &out[..],
            [S1ap::PathSwitchRequestFailure { enb_ue_id: 9, .. }]
        ),
        "{out:?}"
    );
    assert_eq!(view(&c, id).handover, None);
}

#[test]
fn handover_messages_out_of_place_or_malformed_change_nothing() {
    let (mut c, _ue, id) = attached(32);
    let before = view(&c, id);
    // No handover in progress: status transfer dropped, notify and failure refused.
    s1(
        &mut c,
        S1ap::EnbStatusTransfer(s1ap::StatusTransfer {
            mme_ue_id: id,
            enb_ue_id: ENB_UE,
            bearers: vec![s1ap::BearerStatus {
                erab_id: 5,
                ul_pdcp_sn: 1,
                ul_hfn: 0,
                dl_pdcp_sn: 1,
                dl_hfn: 0,
            }],
        }),
    );
    assert!(c.take_actions().is_empty());
    s1_on(&mut c, B, notify(id, ON_B.enb_ue_id));
    assert!(matches!(
        &sent_on(B, &c.take_actions())[..],
        [S1ap::ErrorIndication { .. }]
    ));
    s1_on(
        &mut c,
        B,
        S1ap::HandoverFailure {
            mme_ue_id: id,
            cause: causes::radio_unspecified(),
        },
    );
    assert!(c.take_actions().is_empty());
    // A HANDOVER REQUIRED with the wrong eNB UE S1AP ID is an unknown pair.
    s1(
        &mut c,
        S1ap::HandoverRequired(Box::new(s1ap::HandoverRequired {
            enb_ue_id: ENB_UE + 1,
            ..match handover_required(id, target_enb_b()) {
                S1ap::HandoverRequired(r) => *r,
                _ => unreachable!(),
            }
        })),
    );
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::ErrorIndication { .. }]
    ));
    // Truncated and corrupted handover PDUs: an ERROR INDICATION or nothing, never a
    // handover.
    let good = [
        s1ap::encode(&handover_required(id, target_enb_b())).unwrap(),
        s1ap::encode(&path_switch(ON_B, id, CAPS)).unwrap(),
        s1ap::encode(&request_ack(id, vec![bearer(B_ADDR, B_TEID)])).unwrap(),
    ];
    let now = Instant::now();
    for pdu in &good {
        for cut in 0..pdu.len() {
            c.on_s1ap(now, B, &pdu[..cut]);
            for a in c.take_actions() {
                let Action::S1ap { pdu, .. } = a else {
                    panic!("{a:?}")
                };
                let m = s1ap::decode(&pdu).unwrap();
                assert!(
                    matches!(
                        m,
                        S1ap::ErrorIndication { .. } | S1ap::UeContextReleaseCommand { .. }
                    ),
                    "{m:?}"
                );
            }
        }
    }
    // Not intra-LTE: the HandoverType octet of the HANDOVER REQUIRED changed.
    let mut bad = good[0].clone();
    let at = bad
        .windows(5)
        .position(|w| w == [0x00, 0x01, 0x00, 0x01, 0x00])
        .expect("the HandoverType IE");
    bad[at + 4] = 0x20;
    c.on_s1ap(now, A, &bad);
    assert!(matches!(
        &sent(&c.take_actions())[..],
        [S1ap::ErrorIndication {
            mme_ue_id: None,
            ..
        }]
    ));
    let after = view(&c, id);
    assert_eq!(after.handover, None);
    assert_eq!(
        (after.enb_id, after.enb_ue_s1ap_id, after.ncc),
        (before.enb_id, before.enb_ue_s1ap_id, before.ncc)
    );
    // The UE is unharmed: an S1 handover still works.
    execute(&mut c, Instant::now(), id);
}

#[test]
fn the_ue_dump_shows_where_the_ue_is_and_its_handover() {
    let (mut c, _ue, id) = attached(33);
    prepare(&mut c, Instant::now(), id);
    let json = serde_json::to_value(view(&c, id)).unwrap();
    assert_eq!(json["enb_id"], 1);
    assert_eq!(json["cell_id"], 0x10);
    assert_eq!(json["tac"], 1);
    assert_eq!(json["handover"], "Preparing");
    assert_eq!(json["ncc"], 2);
}
