//! S6a: the HSS's answers (authentication information, update location), its
//! Cancel Location, and the Purge UE that ends a detach. The Diameter client that
//! carries them is `crate::s6a`, at the I/O edge.

use std::time::Instant;

use proto_diameter::base::ResultCode;
use proto_diameter::codes::{
    CANCELLATION_TYPE_SUBSCRIPTION_WITHDRAWAL, DIAMETER_ERROR_USER_UNKNOWN,
};
use proto_diameter::s6a::{AuthInfoAnswer, UpdateLocationAnswer};
use proto_nas::cause as emm;
use proto_s1ap::causes;
use tracing::{info, warn};

use super::context::UeState;
use super::{Action, MmeCore};

impl MmeCore {
    pub fn on_aia(&mut self, now: Instant, ue: u32, aia: Result<AuthInfoAnswer, String>) {
        self.now = now;
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if u.state != UeState::WaitAuthInfo {
            warn!(ue, state = ?u.state, "AIA out of sequence ignored");
            return;
        }
        let aia = match aia {
            Ok(a) => a,
            Err(e) => {
                warn!(ue, imsi = %u.imsi, "S6a AIR failed: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        };
        if aia.result != ResultCode::SUCCESS {
            let cause = s6a_reject_cause(aia.result);
            info!(ue, imsi = %u.imsi, result = ?aia.result, cause, "HSS refused authentication info");
            return self.reject(ue, cause);
        }
        let Some(v) = aia.vectors.into_iter().next() else {
            warn!(ue, "AIA without vectors");
            return self.reject(ue, emm::NETWORK_FAILURE);
        };
        self.authenticate(ue, v);
    }

    pub fn on_ula(&mut self, now: Instant, ue: u32, ula: Result<UpdateLocationAnswer, String>) {
        self.now = now;
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if u.state != UeState::WaitUpdateLocation {
            warn!(ue, state = ?u.state, "ULA out of sequence ignored");
            return;
        }
        let ula = match ula {
            Ok(a) => a,
            Err(e) => {
                warn!(ue, "S6a ULR failed: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        };
        if ula.result != ResultCode::SUCCESS {
            let cause = s6a_reject_cause(ula.result);
            return self.reject(ue, cause);
        }
        self.connect_pdn(ue, ula.subscription.as_ref());
    }
}

impl MmeCore {
    /// The detach is done at the SPGW (or there was no session): release the S1
    /// connection, forget the context, and tell the HSS with a Purge UE.
    pub(super) fn detach_complete(&mut self, ue: u32) {
        if let Some(u) = self.ues.get(&ue) {
            self.actions.push(Action::Pur {
                imsi: u.imsi.clone(),
            });
        }
        self.release(ue, causes::nas_detach(), true);
    }

    /// Cancel Location from the HSS (TS 29.272 5.2.1.2). The UE registered at another MME
    /// (TS 23.401 §5.3.2.1 steps 13-14): the context goes without NAS, the session is
    /// deleted at the SPGW and an S1 connection, if any, released, and no Purge UE
    /// follows (the HSS already moved on). Its subscription was withdrawn: the UE is
    /// detached by the network, re-attach not required (TS 23.401 §5.3.8.3). Returns
    /// whether the MME had a context for `imsi`; the CLA is success either way
    /// (29.272 5.2.1.2.2).
    pub fn on_cancel_location(&mut self, now: Instant, imsi: &str, cancellation_type: u32) -> bool {
        self.now = now;
        let Some(ue) = self
            .ues
            .values()
            .find(|u| u.imsi == imsi)
            .map(|u| u.mme_ue_id)
        else {
            info!(%imsi, cancellation_type, "Cancel Location for a UE without context");
            return false;
        };
        if cancellation_type == CANCELLATION_TYPE_SUBSCRIPTION_WITHDRAWAL {
            info!(ue, %imsi, "subscription withdrawn: network-initiated detach");
            if self.network_detach(ue, false, now).is_ok() {
                return true;
            }
            // Not registered yet (an attach in progress): nothing to detach, just forget.
        }
        info!(ue, %imsi, cancellation_type, "location cancelled: UE context removed");
        if let Some(u) = self.ues.get_mut(&ue) {
            // Whatever the UE was doing, its answers from now on find no context to act on.
            u.timers = Default::default();
            if let Some(teid) = u.sgw_s11_teid.take() {
                self.delete_session(ue, teid);
            }
        }
        self.release(ue, causes::nas_detach(), true);
        true
    }
}

/// EMM cause for an S6a failure (TS 29.272 Annex A, Table A.1): unknown user → #8.
fn s6a_reject_cause(rc: ResultCode) -> u8 {
    match rc {
        ResultCode::Experimental { code, .. } if code == DIAMETER_ERROR_USER_UNKNOWN => {
            emm::EPS_AND_NON_EPS_NOT_ALLOWED
        }
        ResultCode::Experimental { code: 5420, .. } => emm::NO_SUITABLE_CELLS,
        _ => emm::NETWORK_FAILURE,
    }
}
