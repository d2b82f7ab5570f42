//! ECM-IDLE: the S1 release that leaves a UE registered but idle (TS 23.401 §5.3.5),
//! the SERVICE REQUEST that brings it back (§5.3.4.1, TS 24.301 §5.6.1) and the
//! paging a Downlink Data Notification starts (§5.3.4.3), with T3413.
//!
//! Time comes in from the shell (`now`): the core reads no clock.

use std::time::{Duration, Instant};

use proto_gtpv2c as gtp;
use proto_nas::{cause as emm, msg, Direction, Nas};
use proto_s1ap::{self as s1ap, Ecgi, S1ap, STmsi, Tai};
use proto_sctp::AssocId;
use tracing::{info, warn};

use super::context::{EcmState, Paging, UeState};
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
    /// uplink COUNT the request used (TS 33.401 §7.2.6.1, A.3).
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
                    .find(|u| u.guti.m_tmsi == s.m_tmsi && u.sec.is_some() && u.sgw_s1u.is_some())
                    .map(|u| u.mme_ue_id)
            });
        let Some(ue) = found else {
            // TS 24.301 §5.6.1.5 #9: the UE deletes its GUTI and attaches again.
            info!(%assoc, enb_ue_id, ?s_tmsi, "service request from an unknown S-TMSI: reject #9");
            return self.service_reject_new(assoc, enb_ue_id);
        };
        let Some(mut u) = self.ues.remove(&ue) else {
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
                self.ues.insert(ue, u);
                return self.service_reject_new(assoc, enb_ue_id);
            }
        };
        self.release_stale_s1(&u, assoc, enb_ue_id);
        let kenb = u.sec.as_ref().zip(count).map(|(sec, c)| sec.kenb(c));
        if u.paging.take().is_some() {
            info!(ue, imsi = %u.imsi, "paged UE answered");
        }
        u.assoc = Some(assoc);
        u.enb_ue_id = Some(enb_ue_id);
        u.enb_s1u = None;
        u.bearer_active = false;
        u.tai = tai;
        u.ecgi = ecgi;
        u.state = UeState::WaitServiceSetup;
        info!(ue, imsi = %u.imsi, ul_count = ?count, "service request");
        let ics = kenb.and_then(|k| context_setup_request(&mut u, enb_ue_id, k, None));
        self.ues.insert(ue, u);
        self.changed = true;
        if let Some(ics) = ics {
            self.send(assoc, &ics);
        }
    }

    /// SERVICE REJECT #9 on an S1 connection that has no UE context, and its release.
    fn service_reject_new(&mut self, assoc: AssocId, enb_ue_id: u32) {
        let id = self.new_mme_ue_id();
        self.reject_new(
            assoc,
            id,
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
        match msg {
            gtp::Message::DownlinkDataNotification(d) => Some(self.on_ddn(now, teid, &d)),
            other => {
                warn!(teid, "unexpected S11 request {}", other.name());
                None
            }
        }
    }

    /// DOWNLINK DATA NOTIFICATION (TS 23.401 §5.3.4.3): page an idle UE; for a
    /// connected one, give the SGW the eNB's F-TEID again.
    fn on_ddn(
        &mut self,
        now: Instant,
        teid: u32,
        d: &gtp::DownlinkDataNotification,
    ) -> (u32, gtp::Message) {
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
                if u.paging.is_none() {
                    info!(ue = teid, imsi = %u.imsi, ebis = ?d.ebis, "downlink data: paging");
                    u.paging = Some(Paging {
                        deadline: now + Duration::from_millis(self.cfg.t3413_ms),
                        retries_left: self.cfg.paging_retries,
                    });
                    self.changed = true;
                    self.page(teid);
                }
                ack(sgw_teid, gtp::cause::REQUEST_ACCEPTED)
            }
            (_, false) => {
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
    fn page(&mut self, ue: u32) {
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

    /// When [`MmeCore::on_timer`] next has something to do (the earliest T3413 or
    /// TS1RELOCoverall).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ues
            .values()
            .filter_map(|u| u.paging.map(|p| p.deadline))
            .chain(self.handover_deadline())
            .min()
    }

    /// T3413 expiries up to `now`: page again, or after the last retry give up and
    /// tell the SGW (DOWNLINK DATA NOTIFICATION FAILURE INDICATION, TS 23.401
    /// §5.3.4.3: "UE not responding"), which may then drop what it buffered. And the
    /// S1 handovers' TS1RELOCoverall (core/handover.rs).
    pub fn on_timer(&mut self, now: Instant) {
        self.on_handover_timer(now);
        let due: Vec<u32> = self
            .ues
            .values()
            .filter(|u| u.paging.is_some_and(|p| p.deadline <= now))
            .map(|u| u.mme_ue_id)
            .collect();
        let t3413 = Duration::from_millis(self.cfg.t3413_ms);
        for ue in due {
            let Some(u) = self.ues.get_mut(&ue) else {
                continue;
            };
            let Some(p) = u.paging.as_mut() else {
                continue;
            };
            if p.retries_left > 0 {
                p.retries_left -= 1;
                p.deadline = now + t3413;
                self.page(ue);
                continue;
            }
            info!(ue, imsi = %u.imsi, "paging: no answer");
            u.paging = None;
            self.changed = true;
            if let Some(teid) = u.sgw_s11_teid {
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
        }
    }
}
