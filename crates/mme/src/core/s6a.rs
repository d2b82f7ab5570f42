//! S6a: the HSS's answers (authentication information, update location). The
//! Diameter client that carries them is `crate::s6a`, at the I/O edge.

use std::time::Instant;

use proto_diameter::base::ResultCode;
use proto_diameter::codes::DIAMETER_ERROR_USER_UNKNOWN;
use proto_diameter::s6a::{AuthInfoAnswer, UpdateLocationAnswer};
use proto_nas::cause as emm;
use tracing::{info, warn};

use super::context::UeState;
use super::MmeCore;

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
