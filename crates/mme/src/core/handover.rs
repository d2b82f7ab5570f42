//! Handover between eNBs of this MME, the SGW staying (TS 23.401 §5.5.1, TS 36.413
//! §8.4): X2-based with PATH SWITCH REQUEST (§5.5.1.1.2) and S1-based (§5.5.1.2.2),
//! with the NH/NCC chain the target eNB derives its KeNB from (TS 33.401 §7.2.8).
//!
//! The MME UE S1AP ID stays the UE's across a handover (it keys the UE contexts and is
//! our S11 TEID); the target's S1 connection differs by association and eNB UE S1AP ID.
//! One handover at a time per UE. An S1 handover is bounded by TS1RELOCoverall: the
//! deadline lives in [`Phase`], [`MmeCore::handover_deadline`] and
//! [`MmeCore::on_handover_timer`] are what the core's timer calls.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proto_gtpv2c as gtp;
use proto_nas::NasSecurity;
use proto_s1ap::{self as s1ap, causes, Cause, Ecgi, S1ap, StatusTransfer, Tai};
use proto_sctp::AssocId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::context::UeState;
use super::esm::DEFAULT_EBI;
use super::s11::{modify_bearer_request, uli};
use super::s1ap::s1ap_security_capabilities;
use super::{Action, MmeCore};

/// One S1 connection of a UE: the association and the eNB's id for the UE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct S1Link {
    assoc: AssocId,
    enb_ue_id: u32,
}

/// The MME's locally kept NH and NCC (TS 33.401 §7.2.8.1): an INITIAL CONTEXT
/// SETUP's KeNB counts as NCC 0 and gives the first NH, NCC 1; each handover moves one
/// step and sends the fresh pair (§7.2.8.4), so the first target gets NCC 2.
#[derive(Debug, Clone, Copy)]
struct NextHop {
    nh: [u8; 32],
    /// 0..=7: S1AP carries three bits, and the UE resynchronises on them.
    ncc: u8,
}

/// What the handover in progress waits for.
#[derive(Debug, Clone)]
enum Phase {
    /// X2: the target asked for the path switch; the SGW's Modify Bearer answer.
    PathSwitch {
        target: S1Link,
        enb_s1u: (Ipv4Addr, u32),
        tai: Tai,
        ecgi: Ecgi,
        /// Our stored capabilities, when the target's differ (TS 33.401 §7.2.4.2.2).
        ue_sec: Option<(u8, u8)>,
    },
    /// S1: HANDOVER REQUEST sent; the target's acknowledge.
    Preparing { target: AssocId, deadline: Instant },
    /// HANDOVER COMMAND sent to the source; the target's HANDOVER NOTIFY.
    Executing {
        target: S1Link,
        enb_s1u: (Ipv4Addr, u32),
        deadline: Instant,
    },
}

/// A handover in progress as the UE dump shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandoverPhase {
    PathSwitch,
    Preparing,
    Executing,
}

/// A UE's handover state.
#[derive(Debug, Default)]
pub(super) struct HoState {
    next_hop: Option<NextHop>,
    phase: Option<Phase>,
    /// The S1 connection a handover left (the source after an S1 handover, a prepared
    /// target after a cancel or a timeout), being released: its UE CONTEXT RELEASE
    /// COMPLETE leaves the context alone.
    leaving: Option<S1Link>,
}

impl HoState {
    /// A KeNB went to an eNB in an INITIAL CONTEXT SETUP: the chain starts again.
    pub(super) fn new_kenb(&mut self, sec: Option<&NasSecurity>, kenb: &[u8; 32]) {
        self.next_hop = sec.map(|s| NextHop {
            nh: s.next_hop(kenb),
            ncc: 1,
        });
    }

    pub(super) fn phase(&self) -> Option<HandoverPhase> {
        self.phase.as_ref().map(|p| match p {
            Phase::PathSwitch { .. } => HandoverPhase::PathSwitch,
            Phase::Preparing { .. } => HandoverPhase::Preparing,
            Phase::Executing { .. } => HandoverPhase::Executing,
        })
    }

    pub(super) fn ncc(&self) -> Option<u8> {
        self.next_hop.map(|n| n.ncc)
    }

    /// The fresh {NH, NCC} for a target eNB: NCC plus one, the next NH of the chain.
    fn take_next_hop(&mut self, sec: &NasSecurity) -> Option<s1ap::SecurityContext> {
        let cur = self.next_hop?;
        let next = NextHop {
            nh: sec.next_hop(&cur.nh),
            ncc: (cur.ncc + 1) % 8,
        };
        self.next_hop = Some(next);
        Some(s1ap::SecurityContext {
            ncc: next.ncc,
            nh: next.nh,
        })
    }
}

impl MmeCore {
    // ------------------------------------------------------------------ X2

    /// PATH SWITCH REQUEST (TS 36.413 §8.4.4): the UE came over X2 to the eNB of
    /// `assoc`; the SGW gets its downlink F-TEID, and the answer decides.
    pub(super) fn on_path_switch_request(&mut self, assoc: AssocId, r: &s1ap::PathSwitchRequest) {
        let ue = r.source_mme_ue_id;
        let target = S1Link {
            assoc,
            enb_ue_id: r.enb_ue_id,
        };
        let set_up = self.enbs.get(&assoc).is_some_and(|e| e.enb_id.is_some());
        let refusal = match self.ues.get(&ue) {
            None => Some(causes::unknown_mme_ue_id()),
            Some(_) if !set_up => Some(causes::protocol_semantic_error()),
            Some(u) if u.state != UeState::Attached || u.ho.phase.is_some() => {
                Some(causes::interaction_with_other_procedure())
            }
            Some(u) if u.sec.is_none() || u.ho.next_hop.is_none() => {
                Some(causes::nas_authentication_failure())
            }
            Some(u) if u.sgw_s11_teid.is_none() => Some(causes::ho_failure_in_target()),
            Some(_) => None,
        };
        let bearer = r.erabs.iter().find(|e| e.erab_id == DEFAULT_EBI);
        let (Some(u), None, Some(bearer)) = (self.ues.get_mut(&ue), &refusal, bearer) else {
            let cause = refusal.unwrap_or_else(causes::ho_failure_in_target);
            warn!(%assoc, ue, enb_ue_id = r.enb_ue_id, ?cause, "path switch refused");
            return self.path_switch_failure(target, ue, cause);
        };
        let ours = s1ap_security_capabilities(&u.ue_net_cap);
        let ue_sec = (ours != (r.ue_sec_enc, r.ue_sec_int)).then(|| {
            warn!(ue, target = ?(r.ue_sec_enc, r.ue_sec_int), ?ours,
                "path switch: the target's UE security capabilities differ; ours go back");
            ours
        });
        let enb_s1u = (bearer.enb_addr, bearer.enb_teid);
        info!(ue, imsi = %u.imsi, %assoc, enb_ue_id = r.enb_ue_id, "X2 handover: path switch");
        u.ho.phase = Some(Phase::PathSwitch {
            target,
            enb_s1u,
            tai: r.tai,
            ecgi: r.ecgi,
            ue_sec,
        });
        self.changed = true;
        self.modify_bearer(ue, enb_s1u, r.tai, r.ecgi);
    }

    /// The SGW's answer to a path switch's Modify Bearer; false if the UE is in none.
    pub(super) fn on_path_switch_answer(
        &mut self,
        ue: u32,
        resp: &Result<gtp::Message, String>,
    ) -> bool {
        let Some(u) = self.ues.get_mut(&ue) else {
            return false;
        };
        let accepted = match resp {
            Ok(gtp::Message::ModifyBearerResponse(r)) => gtp::cause::is_accepted(r.cause),
            Err(_) => false,
            Ok(_) => return false,
        };
        let Some(Phase::PathSwitch {
            target,
            enb_s1u,
            tai,
            ecgi,
            ue_sec,
        }) =
            u.ho.phase
                .take_if(|p| matches!(p, Phase::PathSwitch { .. }))
        else {
            return false;
        };
        self.changed = true;
        let security = match (accepted, &u.sec) {
            (true, Some(sec)) => u.ho.take_next_hop(sec),
            _ => None,
        };
        let Some(security) = security else {
            // The UE stays the source's: the eNBs end the handover (TS 36.413 §8.4.4.3).
            warn!(ue, ?resp, "path switch: the SGW did not switch the bearer");
            self.path_switch_failure(target, ue, causes::ho_failure_in_target());
            return true;
        };
        u.assoc = Some(target.assoc);
        u.enb_ue_id = Some(target.enb_ue_id);
        u.enb_s1u = Some(enb_s1u);
        u.bearer_active = true;
        u.tai = tai;
        u.ecgi = ecgi;
        info!(ue, imsi = %u.imsi, ncc = security.ncc, "X2 handover done");
        // The source eNB is not told: the target releases it over X2 (TS 23.401 §5.5.1.1.2).
        self.send(
            target.assoc,
            &S1ap::PathSwitchRequestAcknowledge {
                mme_ue_id: ue,
                enb_ue_id: target.enb_ue_id,
                security,
                ue_sec,
            },
        );
        true
    }

    fn path_switch_failure(&mut self, target: S1Link, mme_ue_id: u32, cause: Cause) {
        self.send(
            target.assoc,
            &S1ap::PathSwitchRequestFailure {
                mme_ue_id,
                enb_ue_id: target.enb_ue_id,
                cause,
            },
        );
    }

    // ------------------------------------------------------------------ S1

    /// HANDOVER REQUIRED from the source eNB (TS 36.413 §8.4.1): HANDOVER REQUEST to
    /// the target eNB with the UE's bearer, its security and the source's container.
    pub(super) fn on_handover_required(
        &mut self,
        now: Instant,
        assoc: AssocId,
        r: s1ap::HandoverRequired,
    ) {
        let Some(ue) = self.ue_for(assoc, r.mme_ue_id, r.enb_ue_id) else {
            return;
        };
        let source = S1Link {
            assoc,
            enb_ue_id: r.enb_ue_id,
        };
        let target = (r.target.plmn == self.plmn)
            .then(|| {
                self.enbs
                    .iter()
                    .find(|(_, e)| e.enb_id == Some(r.target.enb_id))
                    .map(|(a, _)| *a)
            })
            .flatten();
        let deadline = now + Duration::from_millis(self.cfg.ts1relocoverall_ms);
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let Some(target) = target else {
            warn!(ue, target = ?r.target, "handover to an eNB without an association");
            return self.preparation_failure(ue, source, causes::unknown_target_id());
        };
        if u.state != UeState::Attached || u.ho.phase.is_some() {
            warn!(ue, state = ?u.state, phase = ?u.ho.phase, "handover required while busy");
            return self.preparation_failure(
                ue,
                source,
                causes::interaction_with_other_procedure(),
            );
        }
        let (Some(sub), Some(sgw), Some(sec)) = (&u.sub, u.sgw_s1u, &u.sec) else {
            return self.preparation_failure(ue, source, causes::ho_failure_in_target());
        };
        let (ue_sec_enc, ue_sec_int) = s1ap_security_capabilities(&u.ue_net_cap);
        let (ambr_dl, ambr_ul) = (u64::from(sub.ambr_dl), u64::from(sub.ambr_ul));
        let erab = s1ap::ErabToSetup {
            erab_id: DEFAULT_EBI,
            qci: sub.qci,
            arp_priority: sub.arp_priority,
            sgw_addr: sgw.0,
            sgw_teid: sgw.1,
            nas: None,
            // Only the default (non-GBR) bearer moves (no dedicated bearers in handover).
            gbr: None,
        };
        let Some(security) = u.ho.take_next_hop(sec) else {
            return self.preparation_failure(ue, source, causes::ho_failure_in_target());
        };
        info!(ue, imsi = %u.imsi, from = %assoc, to = %target, ncc = security.ncc, "S1 handover: preparing");
        u.ho.phase = Some(Phase::Preparing { target, deadline });
        self.changed = true;
        let request = S1ap::HandoverRequest(Box::new(s1ap::HandoverRequest {
            mme_ue_id: ue,
            cause: r.cause,
            ambr_dl,
            ambr_ul,
            erabs: vec![erab],
            source_to_target: r.source_to_target,
            ue_sec_enc,
            ue_sec_int,
            security,
        }));
        self.send(target, &request);
    }

    fn preparation_failure(&mut self, mme_ue_id: u32, source: S1Link, cause: Cause) {
        self.send(
            source.assoc,
            &S1ap::HandoverPreparationFailure {
                mme_ue_id,
                enb_ue_id: source.enb_ue_id,
                cause,
            },
        );
    }

    /// The UE's S1 connection now, if it has one.
    fn s1_link(&self, ue: u32) -> Option<S1Link> {
        let u = self.ues.get(&ue)?;
        Some(S1Link {
            assoc: u.assoc?,
            enb_ue_id: u.enb_ue_id?,
        })
    }

    /// HANDOVER REQUEST ACKNOWLEDGE: the target is ready; HANDOVER COMMAND to the
    /// source. A late one (the handover was cancelled or timed out) is released.
    pub(super) fn on_handover_request_ack(
        &mut self,
        assoc: AssocId,
        mme_ue_id: u32,
        enb_ue_id: u32,
        admitted: &[s1ap::ErabSetup],
        target_to_source: Vec<u8>,
    ) {
        let target = S1Link { assoc, enb_ue_id };
        let source = self.s1_link(mme_ue_id);
        let Some(u) = self.ues.get_mut(&mme_ue_id) else {
            warn!(%assoc, mme_ue_id, "handover request acknowledge for no UE");
            return self.error_indication(assoc, mme_ue_id, enb_ue_id, causes::unknown_mme_ue_id());
        };
        let (deadline, source) = match (&u.ho.phase, source) {
            (
                Some(Phase::Preparing {
                    target: t,
                    deadline,
                }),
                Some(s),
            ) if *t == assoc => (*deadline, s),
            _ => {
                warn!(mme_ue_id, %assoc, "handover request acknowledge out of a preparation");
                return self.release_left(mme_ue_id, target, causes::handover_cancelled());
            }
        };
        let Some(bearer) = admitted.iter().find(|e| e.erab_id == DEFAULT_EBI) else {
            warn!(mme_ue_id, "the target did not admit the default bearer");
            u.ho.phase = None;
            self.changed = true;
            self.preparation_failure(mme_ue_id, source, causes::ho_failure_in_target());
            return self.release_left(mme_ue_id, target, causes::ho_failure_in_target());
        };
        u.ho.phase = Some(Phase::Executing {
            target,
            enb_s1u: (bearer.enb_addr, bearer.enb_teid),
            deadline,
        });
        self.changed = true;
        info!(
            mme_ue_id,
            target_enb_ue_id = enb_ue_id,
            "S1 handover: command to the source"
        );
        self.send(
            source.assoc,
            &S1ap::HandoverCommand {
                mme_ue_id,
                enb_ue_id: source.enb_ue_id,
                target_to_source,
            },
        );
    }

    /// HANDOVER FAILURE: the target cannot take the UE; the source is told why.
    pub(super) fn on_handover_failure(&mut self, assoc: AssocId, mme_ue_id: u32, cause: Cause) {
        let source = self.s1_link(mme_ue_id);
        let Some(u) = self.ues.get_mut(&mme_ue_id) else {
            return warn!(%assoc, mme_ue_id, "handover failure for no UE");
        };
        match (&u.ho.phase, source) {
            (Some(Phase::Preparing { target, .. }), Some(source)) if *target == assoc => {
                info!(mme_ue_id, ?cause, "S1 handover: the target failed");
                u.ho.phase = None;
                self.changed = true;
                self.preparation_failure(mme_ue_id, source, cause);
            }
            _ => warn!(%assoc, mme_ue_id, "handover failure out of a preparation"),
        }
    }

    /// The target's S1 connection of an S1 handover in execution.
    fn executing_target(&self, ue: u32) -> Option<S1Link> {
        match self.ues.get(&ue)?.ho.phase {
            Some(Phase::Executing { target, .. }) => Some(target),
            _ => None,
        }
    }

    /// ENB STATUS TRANSFER from the source, relayed to the target as MME STATUS TRANSFER.
    pub(super) fn on_enb_status_transfer(&mut self, assoc: AssocId, t: StatusTransfer) {
        let Some(ue) = self.ue_for(assoc, t.mme_ue_id, t.enb_ue_id) else {
            return;
        };
        let Some(target) = self.executing_target(ue) else {
            return warn!(ue, "eNB status transfer out of a handover execution");
        };
        let relayed = S1ap::MmeStatusTransfer(StatusTransfer {
            enb_ue_id: target.enb_ue_id,
            ..t
        });
        self.send(target.assoc, &relayed);
    }

    /// HANDOVER NOTIFY: the UE is on the target. The SGW gets its F-TEID, the source
    /// its release (cause successful handover).
    pub(super) fn on_handover_notify(
        &mut self,
        assoc: AssocId,
        mme_ue_id: u32,
        enb_ue_id: u32,
        tai: Tai,
        ecgi: Ecgi,
    ) {
        let here = S1Link { assoc, enb_ue_id };
        let source = self.s1_link(mme_ue_id);
        let ue = self.ues.get(&mme_ue_id);
        let attached = ue.is_some_and(|u| u.state == UeState::Attached);
        let enb_s1u = match ue.and_then(|u| u.ho.phase.as_ref()) {
            Some(Phase::Executing {
                target, enb_s1u, ..
            }) if *target == here && attached => *enb_s1u,
            _ => {
                warn!(%assoc, mme_ue_id, enb_ue_id, "handover notify out of a handover execution");
                return self.error_indication(assoc, mme_ue_id, enb_ue_id, causes::unknown_pair());
            }
        };
        let Some(u) = self.ues.get_mut(&mme_ue_id) else {
            return;
        };
        u.ho.phase = None;
        u.assoc = Some(assoc);
        u.enb_ue_id = Some(enb_ue_id);
        u.enb_s1u = Some(enb_s1u);
        u.bearer_active = false;
        u.tai = tai;
        u.ecgi = ecgi;
        self.changed = true;
        info!(mme_ue_id, imsi = %u.imsi, %assoc, enb_ue_id, "S1 handover done");
        self.modify_bearer(mme_ue_id, enb_s1u, tai, ecgi);
        if let Some(source) = source {
            self.release_left(mme_ue_id, source, causes::successful_handover());
        }
    }

    /// HANDOVER CANCEL from the source (TS 36.413 §8.4.5): always acknowledged; a
    /// target already prepared is released.
    pub(super) fn on_handover_cancel(
        &mut self,
        assoc: AssocId,
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: Cause,
    ) {
        let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) else {
            return;
        };
        info!(ue, ?cause, "S1 handover cancelled by the source");
        self.abort_handover(ue);
        self.send(
            assoc,
            &S1ap::HandoverCancelAcknowledge {
                mme_ue_id,
                enb_ue_id,
            },
        );
    }

    /// Ends the UE's handover without completing it (a cancel, the UE's release, its
    /// source gone): a prepared target is released, a path switch refused.
    pub(super) fn abort_handover(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let Some(phase) = u.ho.phase.take() else {
            return;
        };
        self.changed = true;
        match phase {
            Phase::Executing { target, .. } => {
                self.release_left(ue, target, causes::handover_cancelled())
            }
            Phase::PathSwitch { target, .. } => {
                self.path_switch_failure(target, ue, causes::ho_failure_in_target())
            }
            Phase::Preparing { .. } => {}
        }
    }

    /// UE CONTEXT RELEASE COMMAND to an S1 connection the UE left or never took.
    fn release_left(&mut self, ue: u32, link: S1Link, cause: Cause) {
        if let Some(u) = self.ues.get_mut(&ue) {
            u.ho.leaving = Some(link);
        }
        self.send(
            link.assoc,
            &S1ap::UeContextReleaseCommand {
                mme_ue_id: ue,
                enb_ue_id: Some(link.enb_ue_id),
                cause,
            },
        );
    }

    /// The UE CONTEXT RELEASE COMPLETE of a connection a handover left: true if it
    /// was one (the UE context stays as it is).
    pub(super) fn left_s1_released(
        &mut self,
        assoc: AssocId,
        mme_ue_id: u32,
        enb_ue_id: u32,
    ) -> bool {
        let Some(u) = self.ues.get_mut(&mme_ue_id) else {
            return false;
        };
        let taken =
            u.ho.leaving
                .take_if(|l| *l == S1Link { assoc, enb_ue_id })
                .is_some();
        if taken {
            info!(mme_ue_id, %assoc, enb_ue_id, "the S1 connection a handover left is released");
        }
        taken
    }

    /// The association is gone: handovers toward it end (a preparing source hears of
    /// it), a UE whose source it was goes idle without its handover, releases there
    /// are over.
    pub(super) fn handover_assoc_down(&mut self, assoc: AssocId) {
        let ues: Vec<u32> = self.ues.keys().copied().collect();
        for ue in ues {
            let source = self.s1_link(ue);
            let Some(u) = self.ues.get_mut(&ue) else {
                continue;
            };
            if u.ho.leaving.is_some_and(|l| l.assoc == assoc) {
                u.ho.leaving = None;
            }
            let target = match &u.ho.phase {
                Some(Phase::PathSwitch { target, .. } | Phase::Executing { target, .. }) => {
                    target.assoc
                }
                Some(Phase::Preparing { target, .. }) => *target,
                None => continue,
            };
            if target == assoc {
                let preparing = matches!(u.ho.phase.take(), Some(Phase::Preparing { .. }));
                self.changed = true;
                match source {
                    Some(source) if preparing && source.assoc != assoc => {
                        self.preparation_failure(ue, source, causes::ho_failure_in_target())
                    }
                    _ => {}
                }
            } else if source.is_some_and(|s| s.assoc == assoc) {
                self.abort_handover(ue);
            }
        }
    }

    // ------------------------------------------------------------------ timer

    /// The earliest TS1RELOCoverall of an S1 handover.
    pub(super) fn handover_deadline(&self) -> Option<Instant> {
        self.ues
            .values()
            .filter_map(|u| match u.ho.phase {
                Some(Phase::Preparing { deadline, .. } | Phase::Executing { deadline, .. }) => {
                    Some(deadline)
                }
                _ => None,
            })
            .min()
    }

    /// TS1RELOCoverall expiries up to `now`: a preparation the target never answered
    /// fails towards the source; an execution the UE never completed releases the
    /// target's connection (the source eNB, whose own timer runs too, releases its own).
    pub(super) fn on_handover_timer(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .ues
            .values()
            .filter(|u| match u.ho.phase {
                Some(Phase::Preparing { deadline, .. } | Phase::Executing { deadline, .. }) => {
                    deadline <= now
                }
                _ => false,
            })
            .map(|u| u.mme_ue_id)
            .collect();
        for ue in due {
            let source = self.s1_link(ue);
            let Some(u) = self.ues.get_mut(&ue) else {
                continue;
            };
            warn!(ue, imsi = %u.imsi, phase = ?u.ho.phase, "S1 handover: TS1RELOCoverall expired");
            self.changed = true;
            match u.ho.phase.take() {
                Some(Phase::Preparing { .. }) => {
                    if let Some(source) = source {
                        self.preparation_failure(ue, source, causes::ts1relocprep_expiry());
                    }
                }
                Some(Phase::Executing { target, .. }) => {
                    self.release_left(ue, target, causes::ts1relocoverall_expiry())
                }
                _ => {}
            }
        }
    }

    // ------------------------------------------------------------------ S11

    /// MODIFY BEARER REQUEST with the eNB's new F-TEID and the UE's new location.
    fn modify_bearer(&mut self, ue: u32, enb_s1u: (Ipv4Addr, u32), tai: Tai, ecgi: Ecgi) {
        let Some(teid) = self.ues.get(&ue).and_then(|u| u.sgw_s11_teid) else {
            return;
        };
        let msg = gtp::ModifyBearerRequest {
            uli: Some(uli(&self.cfg, tai, ecgi)),
            ..modify_bearer_request(enb_s1u.0, enb_s1u.1)
        };
        self.actions.push(Action::S11 {
            ue,
            teid,
            msg: gtp::Message::ModifyBearerRequest(msg),
        });
    }
}
