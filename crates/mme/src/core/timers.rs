//! Every per-UE timer of the core in one place: the NAS retransmission timers T3450,
//! T3460, T3470 and T3422 (TS 24.301 §10.2), paging's T3413 and the mobile reachable
//! timer (§5.3.7). [`MmeCore::next_deadline`] and [`MmeCore::on_timer`] are what the
//! shell drives; what an expiry means for a procedure is EMM's (`emm::abort`).
//!
//! Time comes in from the shell (`now`): the core reads no clock.

use std::time::{Duration, Instant};

use proto_gtpv2c as gtp;
use proto_nas::SecurityHeader;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Action, MmeCore};
use crate::Config;

/// Retransmissions of a supervised NAS message before its procedure is aborted: "this
/// retransmission is repeated four times, i.e. on the fifth expiry ..." (TS 24.301).
pub(super) const MAX_RETRANSMISSIONS: u32 = 4;

/// A network-initiated EMM procedure waiting for the UE's answer under a NAS timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmmProcedure {
    /// IDENTITY REQUEST sent (T3470).
    Identification,
    /// AUTHENTICATION REQUEST sent (T3460).
    Authentication,
    /// SECURITY MODE COMMAND sent (T3460).
    SecurityModeControl,
    /// ATTACH ACCEPT sent, ATTACH COMPLETE awaited (T3450).
    Attach,
    /// TRACKING AREA UPDATE ACCEPT with a new GUTI sent, COMPLETE awaited (T3450).
    TrackingAreaUpdate,
    /// GUTI REALLOCATION COMMAND sent (T3450).
    GutiReallocation,
    /// Network-initiated DETACH REQUEST sent (T3422).
    Detach,
}

impl EmmProcedure {
    /// The name of the timer supervising the procedure.
    pub fn timer(self) -> &'static str {
        match self {
            EmmProcedure::Identification => "T3470",
            EmmProcedure::Authentication | EmmProcedure::SecurityModeControl => "T3460",
            EmmProcedure::Attach
            | EmmProcedure::TrackingAreaUpdate
            | EmmProcedure::GutiReallocation => "T3450",
            EmmProcedure::Detach => "T3422",
        }
    }

    fn duration(self, cfg: &Config) -> Duration {
        Duration::from_millis(match self {
            EmmProcedure::Identification => cfg.t3470_ms,
            EmmProcedure::Authentication | EmmProcedure::SecurityModeControl => cfg.t3460_ms,
            EmmProcedure::Attach
            | EmmProcedure::TrackingAreaUpdate
            | EmmProcedure::GutiReallocation => cfg.t3450_ms,
            EmmProcedure::Detach => cfg.t3422_ms,
        })
    }
}

/// A supervised downlink NAS message and its timer.
#[derive(Debug, Clone)]
pub(super) struct Retransmission {
    pub(super) procedure: EmmProcedure,
    pub(super) deadline: Instant,
    /// Expiries so far (each but the fifth sent the message again).
    pub(super) expiries: u32,
    /// The message before protection: a retransmission is protected again with the
    /// next downlink NAS COUNT ("after each new or retransmitted outbound security
    /// protected NAS message, the sender shall increase the NAS COUNT", TS 24.301
    /// §4.4.3.1), so the UE's replay check takes it.
    plain: Vec<u8>,
    sht: SecurityHeader,
}

/// A paging in progress (TS 23.401 §5.3.4.3 for downlink data, §5.3.8.3 for a
/// network-initiated detach of an idle UE).
#[derive(Debug, Clone, Copy)]
pub(super) struct Paging {
    /// T3413 expiry.
    pub(super) deadline: Instant,
    pub(super) retries_left: u32,
    /// A Downlink Data Notification started or joined it: the SGW hears if it fails.
    pub(super) downlink_data: bool,
}

/// The timers of one UE.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// At most one network-initiated procedure runs at a time.
    pub(super) nas: Option<Retransmission>,
    pub(super) paging: Option<Paging>,
    /// Mobile reachable timer expiry, while ECM-IDLE.
    pub(super) mobile_reachable: Option<Instant>,
}

impl Timers {
    fn next(&self) -> Option<Instant> {
        [
            self.nas.as_ref().map(|r| r.deadline),
            self.paging.map(|p| p.deadline),
            self.mobile_reachable,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// What the EMM timers did, since the MME started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TimerStats {
    /// Supervised NAS messages sent again on a timer expiry.
    pub nas_retransmissions: u64,
    /// Procedures aborted on the fifth expiry.
    pub procedures_aborted: u64,
    /// UEs implicitly detached on the mobile reachable timer.
    pub implicit_detaches: u64,
    /// Pagings given up after the last T3413.
    pub pagings_failed: u64,
}

impl MmeCore {
    /// Sends a NAS message that a timer supervises, protected with `sht`.
    pub(super) fn send_supervised(
        &mut self,
        ue: u32,
        procedure: EmmProcedure,
        plain: proto_nas::Result<Vec<u8>>,
        sht: SecurityHeader,
    ) {
        match plain {
            Ok(p) => {
                self.supervise(ue, procedure, p.clone(), sht);
                self.send_nas(ue, Ok(p), sht);
            }
            Err(e) => warn!(ue, ?procedure, "cannot build NAS message: {e}"),
        }
    }

    /// Starts the procedure's timer for `plain`, sent by the caller (the ATTACH ACCEPT
    /// goes inside the INITIAL CONTEXT SETUP); it replaces any other procedure's.
    pub(super) fn supervise(
        &mut self,
        ue: u32,
        procedure: EmmProcedure,
        plain: Vec<u8>,
        sht: SecurityHeader,
    ) {
        let deadline = self.now + procedure.duration(&self.cfg);
        if let Some(u) = self.ues.get_mut(&ue) {
            u.timers.nas = Some(Retransmission {
                procedure,
                deadline,
                expiries: 0,
                plain,
                sht,
            });
            self.changed = true;
        }
    }

    /// The UE answered `procedure`: its timer stops. False if that procedure was not
    /// running (an answer out of sequence).
    pub(super) fn complete(&mut self, ue: u32, procedure: EmmProcedure) -> bool {
        let Some(u) = self.ues.get_mut(&ue) else {
            return false;
        };
        if u.timers.nas.as_ref().map(|r| r.procedure) != Some(procedure) {
            return false;
        }
        u.timers.nas = None;
        self.changed = true;
        true
    }

    /// Starts the mobile reachable timer of a UE that went ECM-IDLE.
    pub(super) fn start_mobile_reachable(&mut self, ue: u32) {
        let deadline = self.cfg.mobile_reachable().map(|d| self.now + d);
        if let Some(u) = self.ues.get_mut(&ue) {
            u.timers.mobile_reachable = deadline;
        }
    }

    /// Starts paging a UE (T3413), or joins the paging already running.
    pub(super) fn start_paging(&mut self, ue: u32, downlink_data: bool) {
        let deadline = self.now + Duration::from_millis(self.cfg.t3413_ms);
        let retries_left = self.cfg.paging_retries;
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        match u.timers.paging.as_mut() {
            Some(p) => p.downlink_data |= downlink_data,
            None => {
                u.timers.paging = Some(Paging {
                    deadline,
                    retries_left,
                    downlink_data,
                });
                self.changed = true;
                self.page(ue);
            }
        }
    }

    /// What the EMM timers did so far.
    pub fn timer_stats(&self) -> TimerStats {
        self.timer_stats.clone()
    }

    /// When [`MmeCore::on_timer`] next has something to do: the earliest timer of any
    /// UE, or of an S1 handover (TS1RELOCoverall, kept by `handover`).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ues
            .values()
            .filter_map(|u| u.timers.next())
            .chain(self.handover_deadline())
            .min()
    }

    /// Every timer expiry up to `now`.
    pub fn on_timer(&mut self, now: Instant) {
        self.now = now;
        self.on_handover_timer(now);
        let due: Vec<u32> = self
            .ues
            .values()
            .filter(|u| u.timers.next().is_some_and(|d| d <= now))
            .map(|u| u.mme_ue_id)
            .collect();
        for ue in due {
            let Some(t) = self.ues.get(&ue).map(|u| &u.timers) else {
                continue;
            };
            let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
            let (nas, paging, reachable) = (
                due(t.nas.as_ref().map(|r| r.deadline)),
                due(t.paging.map(|p| p.deadline)),
                due(t.mobile_reachable),
            );
            if nas {
                self.on_nas_timer(ue);
            }
            if paging {
                self.on_t3413(ue);
            }
            if reachable {
                self.on_mobile_reachable(ue);
            }
        }
    }

    /// A NAS timer expired: the message again (new COUNT), or on the fifth expiry the
    /// procedure aborted.
    fn on_nas_timer(&mut self, ue: u32) {
        let now = self.now;
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let Some(r) = u.timers.nas.as_mut() else {
            return;
        };
        r.expiries += 1;
        self.changed = true;
        if r.expiries <= MAX_RETRANSMISSIONS {
            info!(ue, procedure = ?r.procedure, expiry = r.expiries, "{} expired: sent again", r.procedure.timer());
            r.deadline = now + r.procedure.duration(&self.cfg);
            let (plain, sht) = (r.plain.clone(), r.sht);
            self.timer_stats.nas_retransmissions += 1;
            self.send_nas(ue, Ok(plain), sht);
            return;
        }
        let procedure = r.procedure;
        u.timers.nas = None;
        warn!(ue, imsi = %u.imsi, ?procedure, "{} expired a fifth time: procedure aborted", procedure.timer());
        self.timer_stats.procedures_aborted += 1;
        self.abort(ue, procedure);
    }

    /// T3413 expired: page again, or after the last retry give up. Downlink data: tell
    /// the SGW (DOWNLINK DATA NOTIFICATION FAILURE INDICATION, TS 23.401 §5.3.4.3: "UE
    /// not responding"), which may then drop what it buffered. A detach waiting for the
    /// UE is done locally (TS 23.401 §5.3.8.3).
    fn on_t3413(&mut self, ue: u32) {
        let deadline = self.now + Duration::from_millis(self.cfg.t3413_ms);
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let Some(p) = u.timers.paging.as_mut() else {
            return;
        };
        if p.retries_left > 0 {
            p.retries_left -= 1;
            p.deadline = deadline;
            self.page(ue);
            return;
        }
        info!(ue, imsi = %u.imsi, "paging: no answer");
        let downlink_data = p.downlink_data;
        u.timers.paging = None;
        self.changed = true;
        self.timer_stats.pagings_failed += 1;
        if let (true, Some(teid)) = (downlink_data, u.sgw_s11_teid) {
            self.actions.push(Action::S11 {
                ue,
                teid,
                msg: gtp::Message::DownlinkDataNotificationFailureIndication(
                    gtp::DownlinkDataNotificationFailureIndication {
                        cause: gtp::cause::UE_NOT_RESPONDING,
                    },
                ),
            });
        }
        if u.pending_detach.take().is_some() {
            info!(ue, "detach of an unreachable UE done locally");
            self.deregister(ue);
        }
    }

    /// The UE stayed ECM-IDLE past the mobile reachable timer: implicit detach (TS
    /// 24.301 §5.3.7), without NAS: the session goes, then the context.
    fn on_mobile_reachable(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.timers.mobile_reachable = None;
        info!(ue, imsi = %u.imsi, "mobile reachable timer expired: implicit detach");
        self.timer_stats.implicit_detaches += 1;
        self.deregister(ue);
    }
}
