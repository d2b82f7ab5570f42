//! ECM-IDLE: the S1 release that leaves a UE registered but idle (TS 23.401 §5.3.5),
//! the SERVICE REQUEST that brings it back (§5.3.4.1, TS 24.301 §5.6.1), the new S1
//! connection any message from idle opens, and the paging a Downlink Data
//! Notification starts (§5.3.4.3); its T3413 is in `timers`.

use std::time::Instant;

use proto_gtpv2c as gtp;
use proto_nas::{cause as emm, msg, Direction, Nas};
use proto_s1ap::{self as s1ap, Ecgi, S1ap, STmsi, Tai};
use proto_sctp::AssocId;
use tracing::{info, warn};

use super::context::{EcmState, UeState};
use super::s11::modify_bearer_request;
use super::s1ap::context_setup_request;
use super::{Action, MmeCore};

impl MmeCore {
    /// S1 release keeping the UE registered: the SGW forgets the eNB's S1-U F-TEID
    /// (RELEASE ACCESS BEARERS), then UE CONTEXT RELEASE COMMAND; the eNB's COMPLETE
    /// makes the UE ECM-IDLE. Security context, GUTI, bearers and session stay.
    pub(super) fn release_to_idle(&mut self, ue: u32, cause: s1ap::Cause) {
        self.release_access_bearers(ue);
        self.release(ue, cause, false);
    }

    /// RELEASE ACCESS BEARERS REQUEST if the SGW has an eNB end for the UE's bearer.
    pub(super) fn release_access_bearers(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let (Some(_), Some(teid)) = (u.enb_s1u.take(), u.sgw_s11_teid) else {
            return;
        };
        u.bearer_active = false;
        self.changed = true;
        self.actions.push(Action::S11 {
            ue,
            teid,
            msg: gtp::Message::ReleaseAccessBearersRequest(Default::default()),
        });
    }

    /// The short SERVICE REQUEST of an INITIAL UE MESSAGE: the UE is found by its
    /// S-TMSI and verified with its NAS security context; the KeNB comes from the
    /// uplink COUNT the request used (TS 33.401 §7.2.6.1, A.3). A paged UE that a
    /// detach waits for is sent the DETACH REQUEST.
    pub(super) fn on_service_request(
        &mut self,
        assoc: AssocId,
        enb_ue_id: u32,
        nas: &[u8],
        tai: Tai,
        ecgi: Ecgi,
        s_tmsi: Option<STmsi>,
    ) {
        let found = s_tmsi
            .filter(|s| s.mme_code == self.cfg.mme_code)
            .and_then(|s| {
                self.ues
                    .values()
                    .find(|u| u.has_m_tmsi(s.m_tmsi) && u.sec.is_some() && u.sgw_s1u.is_some())
                    .map(|u| (u.mme_ue_id, s.m_tmsi))
            });
        let Some((ue, m_tmsi)) = found else {
            // TS 24.301 §5.6.1.5 #9: the UE deletes its GUTI and attaches again.
            info!(%assoc, enb_ue_id, ?s_tmsi, "service request from an unknown S-TMSI: reject #9");
            return self.service_reject_new(assoc, enb_ue_id);
        };
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let opened = u
            .sec
            .as_mut()
            .map(|sec| sec.unprotect(nas, Direction::Uplink));
        let count = match opened {
            Some(Ok(o)) if matches!(o.nas, Nas::ServiceRequest { .. }) => o.count,
            other => {
                // The context stays: a forged request must not detach the real UE,
                // and the real one answers #9 with an attach that replaces it.
                warn!(ue, imsi = %u.imsi, "service request fails NAS integrity: reject #9 ({other:?})");
                return self.service_reject_new(assoc, enb_ue_id);
            }
        };
        u.confirm_guti(m_tmsi);
        self.connect_from_idle(ue, assoc, enb_ue_id, tai, ecgi);
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let kenb = u.sec.as_ref().zip(count).map(|(sec, c)| sec.kenb(c));
        u.state = UeState::WaitServiceSetup;
        info!(ue, imsi = %u.imsi, ul_count = ?count, "service request");
        let ics = kenb.and_then(|k| context_setup_request(u, enb_ue_id, k, None));
        let detach = u.pending_detach.take();
        if let Some(ics) = ics {
            self.send(assoc, &ics);
        }
        if let Some(reattach_required) = detach {
            self.send_detach_request(ue, reattach_required);
        }
    }

    /// The UE comes back from ECM-IDLE on a new S1 connection (a service request,
    /// tracking area update or detach, already verified): a stale S1 connection is
    /// released, paging and the mobile reachable timer stop.
    pub(super) fn connect_from_idle(
        &mut self,
        ue: u32,
        assoc: AssocId,
        enb_ue_id: u32,
        tai: Tai,
        ecgi: Ecgi,
    ) {
        self.release_stale_s1(ue, assoc, enb_ue_id);
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if u.timers.paging.take().is_some() {
            info!(ue, imsi = %u.imsi, "paged UE answered");
        }
        u.timers.mobile_reachable = None;
        u.assoc = Some(assoc);
        u.enb_ue_id = Some(enb_ue_id);
        u.enb_s1u = None;
        u.bearer_active = false;
        u.tai = tai;
        u.ecgi = ecgi;
        if u.state == UeState::Idle || u.state == UeState::Releasing {
            u.state = UeState::Attached;
        }
        self.changed = true;
    }

    /// SERVICE REJECT #9 on an S1 connection that has no UE context, and its release.
    fn service_reject_new(&mut self, assoc: AssocId, enb_ue_id: u32) {
        self.reject_new(
            assoc,
            enb_ue_id,
            msg::service_reject(emm::UE_IDENTITY_CANNOT_BE_DERIVED),
        );
    }

    /// A request from the SGW on S11 to our TEID `teid`; returns the response and the
    /// TEID it goes to (the shell's `Responder` numbers and caches it).
    pub fn on_s11_request(
        &mut self,
        now: Instant,
        teid: u32,
        msg: gtp::Message,
    ) -> Option<(u32, gtp::Message)> {
        self.now = now;
        match msg {
            gtp::Message::DownlinkDataNotification(d) => Some(self.on_ddn(teid, &d)),
            other => {
                warn!(teid, "unexpected S11 request {}", other.name());
                None
            }
        }
    }

    /// DOWNLINK DATA NOTIFICATION (TS 23.401 §5.3.4.3): page an idle UE; for a
    /// connected one, give the SGW the eNB's F-TEID again.
    fn on_ddn(&mut self, teid: u32, d: &gtp::DownlinkDataNotification) -> (u32, gtp::Message) {
        let ack = |teid, cause| {
            (
                teid,
                gtp::Message::DownlinkDataNotificationAcknowledge(gtp::CauseRecovery {
                    cause,
                    recovery: None,
                }),
            )
        };
        let Some(u) = self.ues.get_mut(&teid).filter(|u| u.mme_s11_teid == teid) else {
            warn!(teid, "Downlink Data Notification for no UE");
            // TS 29.274 §5.5.2: no context, so the response goes to TEID 0.
            return ack(0, gtp::cause::CONTEXT_NOT_FOUND);
        };
        let Some(sgw_teid) = u.sgw_s11_teid else {
            return ack(0, gtp::cause::CONTEXT_NOT_FOUND);
        };
        let idle = u.ecm_state() == EcmState::Idle || u.state == UeState::Releasing;
        match (u.state, idle) {
            (UeState::Detaching, _) => ack(sgw_teid, gtp::cause::UNABLE_TO_PAGE_UE),
            (_, true) => {
                // One paging per UE: a second notification while it runs only gets
                // its acknowledgement (TS 23.401 §5.3.4.3 step 2a).
                if u.timers.paging.is_none() {
                    info!(ue = teid, imsi = %u.imsi, ebis = ?d.ebis, "downlink data: paging");
                }
                self.start_paging(teid, true);
                ack(sgw_teid, gtp::cause::REQUEST_ACCEPTED)
            }
            (state, false) => {
                if u.enb_s1u.is_none() && state != UeState::WaitServiceSetup {
                    // Connected for signalling only (a TAU from idle without the active
                    // flag): the data waits at the SGW until the UE is paged after the
                    // release (TS 23.401 §5.3.4.3: the SGW buffers until the bearer is up).
                    info!(ue = teid, imsi = %u.imsi, "downlink data during signalling: paging after the release");
                    u.downlink_waiting = true;
                }
                // The SGW lost the eNB's end (e.g. restored from an older state):
                // tell it again; during a service request the Modify Bearer follows.
                if let Some((addr, enb_teid)) = u.enb_s1u {
                    info!(
                        ue = teid,
                        "downlink data for a connected UE: bearer modified again"
                    );
                    self.actions.push(Action::S11 {
                        ue: teid,
                        teid: sgw_teid,
                        msg: gtp::Message::ModifyBearerRequest(modify_bearer_request(
                            addr, enb_teid,
                        )),
                    });
                }
                ack(sgw_teid, gtp::cause::REQUEST_ACCEPTED)
            }
        }
    }

    /// S1AP PAGING to every eNB serving a TAI of the UE's TAI list (TS 36.413 §8.5).
    pub(super) fn page(&mut self, ue: u32) {
        let Some(u) = self.ues.get(&ue) else {
            return;
        };
        let tais: Vec<Tai> = self
            .cfg
            .tacs
            .iter()
            .map(|&tac| Tai {
                plmn: self.plmn,
                tac,
            })
            .collect();
        let paging = S1ap::Paging(s1ap::Paging {
            // TS 36.304 §7.1: UE_ID = IMSI mod 1024.
            ue_identity_index: (u.imsi.parse::<u64>().unwrap_or(0) % 1024) as u16,
            identity: s1ap::PagingIdentity::STmsi(STmsi {
                mme_code: u.guti.mme_code,
                m_tmsi: u.guti.m_tmsi,
            }),
            cn_domain: s1ap::CNDomain::ps,
            tais,
        });
        let enbs: Vec<AssocId> = self
            .enbs
            .iter()
            .filter(|(_, e)| e.enb_id.is_some() && e.tacs.iter().any(|t| self.cfg.tacs.contains(t)))
            .map(|(a, _)| *a)
            .collect();
        for assoc in enbs {
            self.send(assoc, &paging);
        }
    }
}
