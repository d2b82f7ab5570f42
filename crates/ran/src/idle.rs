//! ECM-IDLE as the UE and its eNB live it: the eNB's release for user inactivity
//! (UE CONTEXT RELEASE REQUEST, TS 23.401 §5.3.5), the SERVICE REQUEST from idle for
//! uplink data (mo-Data) or a PAGING (mt-Access) under T3417, the INITIAL CONTEXT SETUP
//! that brings the bearer back on a new eNB TEID, and the re-attach after a SERVICE
//! REJECT.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use proto_nas::msg::Nas;
use proto_nas::UeEvent;
use proto_s1ap::{causes, InitialContextSetupRequest, RRCEstablishmentCause, S1ap, STmsi};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::procedure::{Bearer, End, Ue};
use crate::report::ProcedureKind;

/// EMM cause #9, "UE identity cannot be derived by the network" (TS 24.301 Annex A).
const CAUSE_IDENTITY_NOT_DERIVED: u8 = 9;

/// Why a SERVICE REQUEST did not bring the UE back.
enum ServiceFailure {
    /// SERVICE REJECT with this EMM cause: the UE must attach again.
    Rejected(u8),
    Other(String),
}

impl Ue<'_> {
    pub(crate) async fn release_to_idle(&mut self) {
        let t = Instant::now();
        let r = self.go_idle().await;
        self.record(ProcedureKind::Release, t, &r);
    }

    /// The eNB releases the UE for user inactivity (TS 23.401 §5.3.5): UE CONTEXT
    /// RELEASE REQUEST, the MME's COMMAND answered with COMPLETE; the eNB then forgets
    /// the UE's S1AP id and downlink TEID, the UE keeps its NAS context and GUTI.
    async fn go_idle(&mut self) -> Result<(), String> {
        let (Some(mme_ue_id), Some(guti), Some(key)) =
            (self.mme_ue_id, self.nas.guti(), self.tunnel)
        else {
            return Err("not attached".into());
        };
        self.s1()
            .send(&S1ap::UeContextReleaseRequest {
                mme_ue_id,
                enb_ue_id: self.enb_ue_id,
                cause: causes::user_inactivity(),
            })
            .map_err(|e| format!("{e:#}"))?;
        let wait = Config::ms(self.sh.cfg.detach_timeout_ms);
        let released = timeout(wait, async {
            while let Some(m) = self.rx.recv().await {
                match m {
                    S1ap::UeContextReleaseCommand { mme_ue_id, .. } => return Some(mme_ue_id),
                    other => debug!("S1AP while releasing ignored: {other:?}"),
                }
            }
            None
        })
        .await;
        let Ok(Some(mme_ue_id)) = released else {
            return Err(format!("no UE Context Release Command within {wait:?}"));
        };
        self.release_complete(mme_ue_id);
        let s_tmsi = STmsi {
            mme_code: guti.mme_code,
            m_tmsi: guti.m_tmsi,
        };
        self.s1().park(self.enb_ue_id, s_tmsi, self.ctl_tx.clone());
        self.sh.dp.suspend(key, self.wake());
        self.mme_ue_id = None;
        self.idle = Some(s_tmsi);
        self.s1()
            .idle_counts
            .releases
            .fetch_add(1, Ordering::Relaxed);
        info!(imsi = %self.imsi, "idle");
        Ok(())
    }

    /// Back from idle with a SERVICE REQUEST under T3417 (TS 24.301 §5.6.1.6: on expiry
    /// the UE aborts and tries again, up to `nas_attempts` times), recorded as `kind`
    /// from `started`; after a SERVICE REJECT the UE attaches again. `Some` if the UE's
    /// registration ended.
    pub(crate) async fn serve(
        &mut self,
        cause: RRCEstablishmentCause,
        kind: ProcedureKind,
        started: Instant,
    ) -> Option<End> {
        let t3417 = Config::ms(self.sh.cfg.t3417_ms);
        let attempts = self.sh.cfg.nas_attempts;
        let mut r = Err(format!("T3417 expired {attempts} times"));
        for attempt in 1..=attempts {
            match timeout(t3417, self.service_request(cause)).await {
                Ok(Ok(())) => {
                    r = Ok(());
                    break;
                }
                Ok(Err(ServiceFailure::Rejected(c))) => {
                    self.record(kind, started, &Err(format!("SERVICE REJECT #{c}")));
                    info!(imsi = %self.imsi, cause = c, "SERVICE REJECT: attaching again");
                    return self.reattach(c).await;
                }
                Ok(Err(ServiceFailure::Other(e))) => {
                    // Still idle at the MME too (it keeps the context); the next uplink
                    // data or paging tries again.
                    self.back_to_idle();
                    r = Err(e);
                    break;
                }
                Err(_) => {
                    warn!(imsi = %self.imsi, attempt, "T3417 expired");
                    self.back_to_idle();
                }
            }
        }
        if r.is_ok() && cause != RRCEstablishmentCause::mt_Access {
            // Buffered downlink is delivered with the bearer: no paging for it now.
            self.downlink_pending = None;
        }
        self.record(kind, started, &r);
        None
    }

    /// A failed service request: the new S1 connection is dropped, the UE stays idle.
    pub(crate) fn back_to_idle(&mut self) {
        if let Some(s_tmsi) = self.idle {
            self.s1().park(self.enb_ue_id, s_tmsi, self.ctl_tx.clone());
            if let Some(key) = self.tunnel {
                self.sh.dp.suspend(key, self.wake());
            }
        }
        self.mme_ue_id = None;
    }

    /// SERVICE REQUEST in an INITIAL UE MESSAGE with the S-TMSI; the INITIAL CONTEXT
    /// SETUP (without NAS) answered with a new downlink TEID.
    async fn service_request(
        &mut self,
        cause: RRCEstablishmentCause,
    ) -> Result<(), ServiceFailure> {
        let Some(s_tmsi) = self.idle else {
            return Ok(());
        };
        let sr = self
            .nas
            .service_request()
            .map_err(|e| ServiceFailure::Other(format!("SERVICE REQUEST: {e}")))?;
        self.s1().unpark(s_tmsi);
        let (enb_ue_id, rx) = self.s1().register();
        (self.enb_ue_id, self.rx, self.mme_ue_id) = (enb_ue_id, rx, None);
        let counts = &self.s1().idle_counts;
        let counter = if cause == RRCEstablishmentCause::mt_Access {
            &counts.service_requests_mt
        } else {
            &counts.service_requests_mo
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.s1()
            .send(&S1ap::InitialUeMessage {
                enb_ue_id,
                nas: sr,
                tai: self.s1().tai,
                ecgi: self.s1().ecgi,
                s_tmsi: Some(s_tmsi),
                rrc_cause: cause,
            })
            .map_err(|e| ServiceFailure::Other(format!("{e:#}")))?;
        let mut rejected = None;
        while let Some(m) = self.rx.recv().await {
            match m {
                S1ap::DownlinkNasTransport { mme_ue_id, nas, .. } => {
                    self.learn_mme_id(mme_ue_id);
                    if let Some(UeEvent::Other(Nas::ServiceReject { cause })) = self.nas_step(&nas)
                    {
                        self.s1()
                            .idle_counts
                            .service_rejects
                            .fetch_add(1, Ordering::Relaxed);
                        rejected = Some(cause);
                    }
                }
                S1ap::InitialContextSetupRequest(r) => {
                    self.learn_mme_id(r.mme_ue_id);
                    return self.resume(&r);
                }
                S1ap::UeContextReleaseCommand {
                    mme_ue_id, cause, ..
                } => {
                    self.release_complete(mme_ue_id);
                    return Err(match rejected {
                        Some(c) => ServiceFailure::Rejected(c),
                        None => ServiceFailure::Other(format!("released by the MME: {cause:?}")),
                    });
                }
                other => debug!("S1AP during service request ignored: {other:?}"),
            }
        }
        Err(ServiceFailure::Other("S1 dispatcher gone".into()))
    }

    /// INITIAL CONTEXT SETUP for a service request: the bearer on a new eNB TEID.
    fn resume(&mut self, r: &InitialContextSetupRequest) -> Result<(), ServiceFailure> {
        let (Some(erab), Some(key)) = (r.erabs.first(), self.tunnel) else {
            let _ = self.s1().send(&S1ap::InitialContextSetupFailure {
                mme_ue_id: r.mme_ue_id,
                enb_ue_id: self.enb_ue_id,
                cause: causes::radio_unspecified(),
            });
            return Err(ServiceFailure::Other(
                "Initial Context Setup without an E-RAB".into(),
            ));
        };
        if self.nas.kenb() != Some(r.kenb) {
            warn!(imsi = %self.imsi, "KeNB of the service request's context setup differs from the UE's");
        }
        let (enb_teid, resp) = self.setup_response(r, erab.erab_id);
        self.s1()
            .send(&resp)
            .map_err(|e| ServiceFailure::Other(format!("{e:#}")))?;
        let Some(ue_ip) = self.sh.dp.ue_ip(key) else {
            return Err(ServiceFailure::Other("no tunnel".into()));
        };
        let sgw = SocketAddr::from((erab.sgw_addr, proto_gtpu::GTPU_PORT));
        self.sh
            .dp
            .resume(key, self.enb, enb_teid, ue_ip, sgw, erab.sgw_teid);
        self.bearer = Some(Bearer::of(erab));
        self.ue_sec = (r.ue_sec_enc, r.ue_sec_int);
        self.idle = None;
        info!(imsi = %self.imsi, enb_teid, "connected again");
        Ok(())
    }

    /// After a SERVICE REJECT: for #9 the UE deletes its GUTI and KSI (TS 24.301
    /// §5.6.1.5), i.e. starts from a fresh NAS state with the same USIM, and attaches.
    /// Other causes are handled the same way: the emulator has no other way back.
    async fn reattach(&mut self, cause: u8) -> Option<End> {
        if cause != CAUSE_IDENTITY_NOT_DERIVED {
            debug!(imsi = %self.imsi, cause, "SERVICE REJECT handled like #9");
        }
        self.idle = None;
        self.attach_again().await
    }
}
