//! Detach, all three ways (TS 24.301 §5.5.2, TS 23.401 §5.3.8): UE-initiated,
//! network-initiated (DETACH REQUEST under T3422; an idle UE is paged first) and
//! implicit (the mobile reachable timer, in `timers`). Each ends in [`MmeCore::deregister`]:
//! the session is deleted, the S1 connection released, the context forgotten.

use std::time::Instant;

use proto_nas::{msg, SecurityHeader};
use tracing::{info, warn};

use super::context::{EcmState, UeState};
use super::timers::EmmProcedure;
use super::MmeCore;

impl MmeCore {
    /// The UE's DETACH REQUEST. One that crosses our own (TS 24.301 §5.5.2.3.4 e) ends
    /// ours: the UE's is answered and done.
    pub(super) fn on_detach(&mut self, ue: u32, switch_off: bool) {
        info!(ue, switch_off, "detach request");
        if let Some(u) = self.ues.get_mut(&ue) {
            u.timers.nas = None;
            u.pending_detach = None;
        }
        if !switch_off {
            self.send_nas(ue, msg::detach_accept(), SecurityHeader::IntegrityCiphered);
        }
        self.deregister(ue);
    }

    /// EMM-DEREGISTERED: DELETE SESSION first; the S1 release (and the context's
    /// removal) follows its answer. Without a session, the release at once.
    pub(super) fn deregister(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.state = UeState::Detaching;
        u.timers.paging = None;
        u.timers.mobile_reachable = None;
        self.changed = true;
        match u.sgw_s11_teid {
            Some(teid) => self.delete_session(ue, teid),
            None => self.detach_complete(ue),
        }
    }

    /// Network-initiated detach (TS 24.301 §5.5.2.3): DETACH REQUEST with "re-attach
    /// required" or "re-attach not required" under T3422. An idle UE is paged first
    /// and sent the request once it answers, or detached locally if it does not (TS
    /// 23.401 §5.3.8.3).
    pub fn network_detach(
        &mut self,
        mme_ue_id: u32,
        reattach_required: bool,
        now: Instant,
    ) -> anyhow::Result<()> {
        self.now = now;
        let Some(u) = self.ues.get_mut(&mme_ue_id) else {
            anyhow::bail!("no UE context with MME UE S1AP ID {mme_ue_id}");
        };
        if !u.registered() && u.state != UeState::Releasing {
            anyhow::bail!("UE {mme_ue_id} is not registered ({:?})", u.state);
        }
        info!(ue = mme_ue_id, imsi = %u.imsi, reattach_required, "network-initiated detach");
        if u.ecm_state() == EcmState::Idle || u.state == UeState::Releasing {
            u.pending_detach = Some(reattach_required);
            self.changed = true;
            self.start_paging(mme_ue_id, false);
        } else {
            self.send_detach_request(mme_ue_id, reattach_required);
        }
        Ok(())
    }

    /// The network's DETACH REQUEST, under T3422.
    pub(super) fn send_detach_request(&mut self, ue: u32, reattach_required: bool) {
        self.send_supervised(
            ue,
            EmmProcedure::Detach,
            msg::network_detach_request(reattach_required, None),
            SecurityHeader::IntegrityCiphered,
        );
    }

    /// The UE's DETACH ACCEPT to our DETACH REQUEST.
    pub(super) fn on_detach_accept(&mut self, ue: u32) {
        if !self.complete(ue, EmmProcedure::Detach) {
            warn!(ue, "DETACH ACCEPT without a detach in progress");
            return;
        }
        info!(ue, "network-initiated detach accepted");
        self.deregister(ue);
    }
}
