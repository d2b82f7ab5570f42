//! Tracking area update (TS 24.301 §5.5.3, TS 23.401 §5.3.3 without an MME or SGW
//! change), normal and periodic, from ECM-IDLE (in an INITIAL UE MESSAGE, identified
//! by the old GUTI and integrity protected with the current context) and in
//! ECM-CONNECTED.
//!
//! The TRACKING AREA UPDATE ACCEPT carries T3412 and the TAI list; when the UE's TAI
//! changed it also carries a new GUTI, and T3450 runs until TRACKING AREA UPDATE
//! COMPLETE. With the "active" flag the bearer is set up again (INITIAL CONTEXT SETUP,
//! as for a service request); otherwise a UE that came from idle is released once the
//! update is done (§5.3.3.2 step 21).

use proto_nas::{cause as emm, msg, Direction, Guti, Nas, SecurityHeader, UpdateType};
use proto_s1ap::{causes, Ecgi, Tai};
use proto_sctp::AssocId;
use tracing::{info, warn};

use super::context::UeState;
use super::esm::DEFAULT_EBI;
use super::s1ap::context_setup_request;
use super::timers::EmmProcedure;
use super::MmeCore;

impl MmeCore {
    /// A TAU REQUEST from ECM-IDLE. A GUTI that names no registered UE here, or a
    /// request its context does not verify, gets TAU REJECT #9: the UE then attaches
    /// again (§5.5.3.2.5). The context stays: a forged request must not detach the UE.
    pub(super) fn on_tau_from_idle(
        &mut self,
        assoc: AssocId,
        enb_ue_id: u32,
        nas: &[u8],
        tai: Tai,
        ecgi: Ecgi,
        old_guti: Option<Guti>,
    ) {
        let found = old_guti
            .and_then(|g| self.ue_by_guti(&g))
            .filter(|ue| self.ues.get(ue).is_some_and(|u| u.registered()));
        let opened = found.and_then(|ue| {
            let u = self.ues.get_mut(&ue)?;
            match u.sec.as_mut()?.unprotect(nas, Direction::Uplink) {
                Ok(o) => Some((ue, o)),
                Err(e) => {
                    warn!(ue, imsi = %u.imsi, "TAU request fails NAS integrity: {e}");
                    None
                }
            }
        });
        let Some((
            ue,
            proto_nas::Opened {
                nas:
                    Nas::TrackingAreaUpdateRequest {
                        update_type,
                        active,
                        old_guti,
                        bearers,
                        ..
                    },
                count,
                ..
            },
        )) = opened
        else {
            info!(%assoc, enb_ue_id, ?old_guti, "TAU from an unknown or unverified GUTI: reject #9");
            return self.reject_new(
                assoc,
                enb_ue_id,
                msg::tracking_area_update_reject(emm::UE_IDENTITY_CANNOT_BE_DERIVED),
            );
        };
        self.connect_from_idle(ue, assoc, enb_ue_id, tai, ecgi);
        self.on_tau(ue, update_type, active, old_guti, bearers, count, true);
    }

    /// A verified TAU REQUEST of UE `ue`, which now has an S1 connection. `ul_count`
    /// is the request's uplink NAS COUNT (the KeNB of the bearer set-up comes from it,
    /// TS 33.401 §7.2.6.1, A.3).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_tau(
        &mut self,
        ue: u32,
        update_type: UpdateType,
        active: bool,
        old_guti: Option<Guti>,
        bearers: Option<Vec<u8>>,
        ul_count: Option<u32>,
        from_idle: bool,
    ) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if let Some(g) = old_guti {
            u.confirm_guti(g.m_tmsi);
        }
        // A new tracking area (the eNB's TAI against the one the UE registered in)
        // gets a new GUTI.
        let moved = u.registered_tai != u.tai;
        u.registered_tai = u.tai;
        let keeps_bearer = u.sgw_s1u.is_some();
        info!(ue, imsi = %u.imsi, ?update_type, active, from_idle, moved, tac = u.tai.tac, "tracking area update");
        let new_guti = moved.then(|| self.new_guti());
        let accept = msg::tracking_area_update_accept(&msg::TauAcceptParams {
            guti: new_guti,
            tai_plmn: self.plmn,
            tacs: self.cfg.tacs.clone(),
            t3412: self.cfg.t3412,
            // The EPS bearer context status says which bearers the UE keeps (§5.5.3.2.4).
            bearers: bearers.map(|_| keeps_bearer.then_some(DEFAULT_EBI).into_iter().collect()),
        });
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.new_guti = new_guti.or(u.new_guti);
        self.changed = true;
        let Ok(plain) = accept else {
            warn!(ue, "cannot build TAU ACCEPT: {accept:?}");
            return;
        };
        let sht = SecurityHeader::IntegrityCiphered;
        let bring_up = from_idle && active && keeps_bearer;
        if bring_up {
            // The accept rides in the INITIAL CONTEXT SETUP that sets the bearer up.
            let kenb = u.sec.as_ref().zip(ul_count).map(|(s, c)| s.kenb(c));
            let nas = super::emm::protect(u.sec.as_mut(), Ok(plain.clone()), sht);
            u.state = UeState::WaitServiceSetup;
            let ics = match (kenb, nas, u.assoc, u.enb_ue_id) {
                (Some(k), Ok(nas), Some(assoc), Some(e)) => {
                    context_setup_request(u, e, k, Some(nas)).map(|m| (assoc, m))
                }
                _ => None,
            };
            if let Some((assoc, ics)) = ics {
                self.send(assoc, &ics);
            }
        } else {
            self.send_nas(ue, Ok(plain.clone()), sht);
        }
        match new_guti {
            Some(_) => {
                if let Some(u) = self.ues.get_mut(&ue) {
                    u.release_after_tau = from_idle && !bring_up;
                }
                self.supervise(ue, EmmProcedure::TrackingAreaUpdate, plain, sht);
            }
            None if from_idle && !bring_up => {
                self.release_to_idle(ue, causes::nas_normal_release())
            }
            None => {}
        }
    }

    /// TRACKING AREA UPDATE COMPLETE: the new GUTI is the UE's; a UE that came from
    /// idle without the active flag goes back.
    pub(super) fn on_tau_complete(&mut self, ue: u32) {
        if !self.complete(ue, EmmProcedure::TrackingAreaUpdate) {
            warn!(ue, "TAU COMPLETE out of sequence");
            return;
        }
        self.guti_confirmed(ue);
        self.end_tau(ue);
    }

    /// The update is over (completed, or aborted on T3450): a UE that came from idle
    /// without the active flag goes back.
    pub(super) fn end_tau(&mut self, ue: u32) {
        let release = self
            .ues
            .get_mut(&ue)
            .is_some_and(|u| std::mem::take(&mut u.release_after_tau));
        if release {
            self.release_to_idle(ue, causes::nas_normal_release());
        }
    }
}
