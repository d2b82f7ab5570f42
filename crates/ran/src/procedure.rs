//! One UE's life as the eNB relays it: attach (Initial UE Message … Attach Complete,
//! Initial Context Setup with the eNB's S1-U TEID), the attached state, ECM-IDLE (UE
//! Context Release for user inactivity; back with a SERVICE REQUEST for uplink data or
//! a PAGING), and detach (Detach Request → Accept, UE Context Release) when the run
//! stops.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use proto_nas::msg::Nas;
use proto_nas::{Direction, SecurityHeader, UeEvent, UeNas, Usim};
use proto_s1ap::{
    causes, ErabSetup, InitialContextSetupRequest, RRCEstablishmentCause, S1ap, STmsi,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{timeout, Duration};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::dataplane::{DataPlane, PingStats};
use crate::report::{AttachFailure, Clock, FailureKind, Progress};
use crate::s1::S1;

/// After a reject the MME releases the UE context; how long to wait for that.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// EMM cause #9, "UE identity cannot be derived by the network" (TS 24.301 Annex A).
const CAUSE_IDENTITY_NOT_DERIVED: u8 = 9;

/// What a UE task is told besides its S1AP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Uplink data while idle (from the ping loop): SERVICE REQUEST, mo-Data.
    Uplink,
    /// A PAGING for our S-TMSI: SERVICE REQUEST, mt-Access.
    Paged,
}

/// What every UE task shares.
#[derive(Clone)]
pub struct Shared {
    pub cfg: Arc<Config>,
    pub s1: Arc<S1>,
    pub dp: DataPlane,
    pub clock: Clock,
    pub plmn: [u8; 3],
    pub attach_slots: Arc<Semaphore>,
    /// `Some(t)`: the run stopped at `t` (pings stopped then); detach now.
    pub stop: watch::Receiver<Option<Instant>>,
    /// Live counts for the caller (and for the run to know when all attaches ended).
    pub progress: Arc<watch::Sender<Progress>>,
}

/// A finished attach.
#[derive(Debug, Clone)]
pub struct Attached {
    pub enb_ue_id: u32,
    pub mme_ue_id: u32,
    pub ue_ip: Ipv4Addr,
    pub enb_teid: u32,
    pub sgw_addr: Ipv4Addr,
    pub sgw_teid: u32,
    pub attach_ms: f64,
    pub attached_at_ms: f64,
    pub kenb_match: bool,
}

#[derive(Debug)]
pub enum Outcome {
    Done {
        imsi: String,
        attached: Attached,
        pings: Option<PingStats>,
        detach_error: Option<String>,
    },
    Failed(AttachFailure),
}

struct Failure {
    kind: FailureKind,
    cause: Option<u8>,
    reason: String,
}

impl Failure {
    fn new(kind: FailureKind, cause: Option<u8>, reason: impl Into<String>) -> Failure {
        Failure {
            kind,
            cause,
            reason: reason.into(),
        }
    }
}

/// The UE's S1AP context as the eNB holds it.
struct Ue<'a> {
    sh: &'a Shared,
    imsi: String,
    nas: UeNas,
    /// Cause of the USIM's own AUTHENTICATION FAILURE (#20 MAC, #21 synch), if sent:
    /// reported with the network's verdict.
    auth_failure_cause: Option<u8>,
    /// Cause of the UE's SECURITY MODE REJECT, if sent.
    smc_reject_cause: Option<u8>,
    enb_ue_id: u32,
    mme_ue_id: Option<u32>,
    rx: mpsc::UnboundedReceiver<S1ap>,
    ctl_tx: mpsc::UnboundedSender<Control>,
    ctl: mpsc::UnboundedReceiver<Control>,
    /// The S-TMSI while in ECM-IDLE.
    idle: Option<STmsi>,
    /// The data-plane tunnel's key once attached (kept across idle and re-attach).
    tunnel: Option<u32>,
}

/// Why a SERVICE REQUEST did not bring the UE back.
enum ServiceFailure {
    /// SERVICE REJECT with this EMM cause: the UE must attach again.
    Rejected(u8),
    Other(String),
}

impl Ue<'_> {
    fn uplink(&self, nas: Vec<u8>) -> anyhow::Result<()> {
        let mme_ue_id = self
            .mme_ue_id
            .ok_or_else(|| anyhow::anyhow!("no MME UE S1AP ID yet"))?;
        self.sh.s1.send(&S1ap::UplinkNasTransport {
            mme_ue_id,
            enb_ue_id: self.enb_ue_id,
            nas,
            tai: self.sh.s1.tai,
            ecgi: self.sh.s1.ecgi,
        })
    }

    fn learn_mme_id(&mut self, id: u32) {
        if self.mme_ue_id != Some(id) {
            self.mme_ue_id = Some(id);
            self.sh.s1.set_mme_ue_id(self.enb_ue_id, id);
        }
    }

    fn release_complete(&self, mme_ue_id: u32) {
        if let Err(e) = self.sh.s1.send(&S1ap::UeContextReleaseComplete {
            mme_ue_id,
            enb_ue_id: self.enb_ue_id,
        }) {
            warn!(imsi = %self.imsi, "UE Context Release Complete not sent: {e:#}");
        }
    }

    /// A downlink NAS PDU; malformed or unverifiable ones are logged and dropped
    /// (TS 24.301 §4.4.4.2).
    fn nas_step(&mut self, pdu: &[u8]) -> Option<UeEvent> {
        match self.nas.on_downlink(pdu) {
            Ok(ev) => {
                if let UeEvent::Send(up) = &ev {
                    self.note_auth_failure(up);
                }
                Some(ev)
            }
            Err(e) => {
                self.sh.s1.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(imsi = %self.imsi, "downlink NAS dropped: {e}");
                None
            }
        }
    }

    /// Remembers when the UE itself refused the network: AUTHENTICATION FAILURE from
    /// the USIM or SECURITY MODE REJECT (both always sent plain, so readable here).
    fn note_auth_failure(&mut self, uplink: &[u8]) {
        if SecurityHeader::of(uplink) != Ok(SecurityHeader::Plain) {
            return;
        }
        match proto_nas::msg::parse(uplink, Direction::Uplink) {
            Ok(Nas::AuthenticationFailure { cause, .. }) => {
                info!(imsi = %self.imsi, cause, "USIM rejected the network's challenge");
                self.auth_failure_cause = Some(cause);
            }
            Ok(Nas::SecurityModeReject { cause }) => {
                info!(imsi = %self.imsi, cause, "UE rejected the SECURITY MODE COMMAND");
                self.smc_reject_cause = Some(cause);
            }
            _ => {}
        }
    }

    async fn attach(&mut self) -> Result<Attached, Failure> {
        let started = Instant::now();
        let req = self.nas.attach_request().map_err(|e| {
            Failure::new(
                FailureKind::Subscriber,
                None,
                format!("ATTACH REQUEST: {e}"),
            )
        })?;
        self.sh
            .s1
            .send(&S1ap::InitialUeMessage {
                enb_ue_id: self.enb_ue_id,
                nas: req,
                tai: self.sh.s1.tai,
                ecgi: self.sh.s1.ecgi,
                s_tmsi: None,
                rrc_cause: RRCEstablishmentCause::mo_Signalling,
            })
            .map_err(|e| Failure::new(FailureKind::Protocol, None, format!("{e:#}")))?;
        // A reject seen; the attach is over once the MME releases the context.
        let mut rejected: Option<Failure> = None;
        loop {
            let msg = if rejected.is_some() {
                match timeout(RELEASE_WAIT, self.rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                self.rx.recv().await
            };
            let Some(msg) = msg else {
                return Err(Failure::new(
                    FailureKind::Protocol,
                    None,
                    "S1 dispatcher gone",
                ));
            };
            match msg {
                S1ap::DownlinkNasTransport { mme_ue_id, nas, .. } => {
                    self.learn_mme_id(mme_ue_id);
                    match self.nas_step(&nas) {
                        Some(UeEvent::Send(pdu)) => {
                            if let Err(e) = self.uplink(pdu) {
                                return Err(Failure::new(
                                    FailureKind::Protocol,
                                    None,
                                    format!("{e:#}"),
                                ));
                            }
                        }
                        Some(UeEvent::AuthenticationRejected) => {
                            let c = self.auth_failure_cause;
                            info!(imsi = %self.imsi, ue_cause = ?c, "AUTHENTICATION REJECT");
                            rejected = Some(Failure::new(
                                FailureKind::AuthenticationReject,
                                c,
                                "AUTHENTICATION REJECT",
                            ));
                        }
                        Some(UeEvent::AttachRejected { cause }) => {
                            info!(imsi = %self.imsi, cause, "ATTACH REJECT");
                            rejected = Some(Failure::new(
                                FailureKind::AttachReject,
                                Some(cause),
                                format!("ATTACH REJECT #{cause}"),
                            ));
                        }
                        Some(UeEvent::Attached { .. }) => {
                            // The accept belongs in the Initial Context Setup (TS 23.401
                            // §5.3.2.1 step 17); without the bearer there is nothing to do.
                            warn!(imsi = %self.imsi, "ATTACH ACCEPT outside Initial Context Setup ignored");
                        }
                        Some(UeEvent::DetachAccepted) => {}
                        Some(UeEvent::Other(n)) => {
                            debug!(imsi = %self.imsi, "downlink NAS ignored: {n:?}")
                        }
                        None => {}
                    }
                }
                S1ap::InitialContextSetupRequest(r) => {
                    self.learn_mme_id(r.mme_ue_id);
                    return self.context_setup(&r, started);
                }
                S1ap::UeContextReleaseCommand {
                    mme_ue_id, cause, ..
                } => {
                    self.release_complete(mme_ue_id);
                    return Err(rejected.unwrap_or_else(|| {
                        // The MME ended the attach without a reject: say why if the UE
                        // refused something first.
                        let (kind, ue_cause) =
                            match (self.smc_reject_cause, self.auth_failure_cause) {
                                (Some(c), _) => (FailureKind::SecurityModeReject, Some(c)),
                                (None, Some(c)) => (FailureKind::AuthenticationFailure, Some(c)),
                                (None, None) => (FailureKind::Released, None),
                            };
                        Failure::new(
                            kind,
                            ue_cause,
                            format!("UE context released by the MME: {cause:?}"),
                        )
                    }));
                }
                S1ap::ErrorIndication { cause, .. } => {
                    return Err(Failure::new(
                        FailureKind::Protocol,
                        None,
                        format!("S1AP Error Indication: {cause:?}"),
                    ));
                }
                other => debug!("unexpected S1AP during attach: {other:?}"),
            }
        }
        Err(rejected.unwrap_or_else(|| Failure::new(FailureKind::Protocol, None, "attach ended")))
    }

    /// INITIAL CONTEXT SETUP REQUEST: take the ATTACH ACCEPT, answer with our S1-U TEID,
    /// then send ATTACH COMPLETE (after the RRC reconfiguration a real eNB would do).
    fn context_setup(
        &mut self,
        r: &InitialContextSetupRequest,
        started: Instant,
    ) -> Result<Attached, Failure> {
        let fail = |ue: &Self, why: String| {
            let _ = ue.sh.s1.send(&S1ap::InitialContextSetupFailure {
                mme_ue_id: r.mme_ue_id,
                enb_ue_id: ue.enb_ue_id,
                cause: causes::radio_unspecified(),
            });
            Failure::new(FailureKind::ContextSetup, None, why)
        };
        let Some(erab) = r.erabs.first() else {
            return Err(fail(self, "Initial Context Setup without an E-RAB".into()));
        };
        let Some(nas) = erab.nas.as_deref() else {
            return Err(fail(
                self,
                "Initial Context Setup without ATTACH ACCEPT".into(),
            ));
        };
        let (ue_ip, ebi) = match self.nas_step(nas) {
            Some(UeEvent::Attached {
                ipv4: Some(ip),
                ebi,
                ..
            }) => (Ipv4Addr::from(ip), ebi),
            Some(UeEvent::AttachRejected { cause }) => {
                return Err(Failure::new(
                    FailureKind::AttachReject,
                    Some(cause),
                    "ATTACH REJECT inside Initial Context Setup",
                ))
            }
            other => {
                return Err(fail(
                    self,
                    format!("Initial Context Setup NAS is not a usable ATTACH ACCEPT: {other:?}"),
                ))
            }
        };
        if self.nas.guti().is_none() {
            // Without a GUTI the UE could not detach later (TS 24.301 §5.5.2.2.1).
            return Err(fail(self, "ATTACH ACCEPT without a GUTI".into()));
        }
        // Checked before ATTACH COMPLETE advances the uplink COUNT the UE derives from.
        let kenb_match = self.nas.kenb() == Some(r.kenb);
        if !kenb_match {
            // Both ends derive KeNB with aka::kenb from the SECURITY MODE COMPLETE's
            // COUNT; a difference would break AS security on a real radio.
            warn!(imsi = %self.imsi, "KeNB of the Initial Context Setup differs from the UE's");
        }
        let complete = self.nas.attach_complete(ebi).map_err(|e| {
            Failure::new(FailureKind::Protocol, None, format!("ATTACH COMPLETE: {e}"))
        })?;
        let (enb_teid, resp) = self.setup_response(r, erab.erab_id);
        self.sh
            .s1
            .send(&resp)
            .and_then(|_| self.uplink(complete))
            .map_err(|e| Failure::new(FailureKind::Protocol, None, format!("{e:#}")))?;
        let now = Instant::now();
        let sgw = SocketAddr::from((erab.sgw_addr, proto_gtpu::GTPU_PORT));
        match self.tunnel {
            Some(key) => self.sh.dp.resume(key, enb_teid, ue_ip, sgw, erab.sgw_teid),
            None => {
                self.sh.dp.add(enb_teid, ue_ip, sgw, erab.sgw_teid);
                self.tunnel = Some(enb_teid);
            }
        }
        Ok(Attached {
            enb_ue_id: self.enb_ue_id,
            mme_ue_id: r.mme_ue_id,
            ue_ip,
            enb_teid,
            sgw_addr: erab.sgw_addr,
            sgw_teid: erab.sgw_teid,
            attach_ms: now.duration_since(started).as_secs_f64() * 1e3,
            attached_at_ms: self.sh.clock.ms(now),
            kenb_match,
        })
    }

    /// INITIAL CONTEXT SETUP RESPONSE with a fresh eNB S1-U TEID for the E-RAB.
    fn setup_response(&self, r: &InitialContextSetupRequest, erab_id: u8) -> (u32, S1ap) {
        let enb_teid = self.sh.dp.allocate_teid();
        let resp = S1ap::InitialContextSetupResponse {
            mme_ue_id: r.mme_ue_id,
            enb_ue_id: self.enb_ue_id,
            erabs: vec![ErabSetup {
                erab_id,
                enb_addr: self.sh.cfg.s1u_address,
                enb_teid,
            }],
        };
        (enb_teid, resp)
    }

    /// Attached: answer what the MME sends, go idle and come back when told, until the
    /// run stops. Returns false if the UE is no longer registered (released by the MME,
    /// or a re-attach failed), so there is nothing to detach.
    async fn attached(&mut self) -> bool {
        let mut stop = self.sh.stop.clone();
        loop {
            if stop.borrow_and_update().is_some() {
                // A detach needs a signalling connection (TS 24.301 §5.5.2.2.1).
                if self.idle.is_some() {
                    self.serve(RRCEstablishmentCause::mo_Signalling).await;
                }
                return self.idle.is_none();
            }
            // Inactivity as the eNB sees it: no signalling for `idle_after_ms`.
            let inactive = async {
                match (self.sh.cfg.idle_after_ms, self.idle) {
                    (Some(ms), None) => tokio::time::sleep(Config::ms(ms)).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = stop.changed() => if r.is_err() { return true },
                _ = inactive => if let Err(e) = self.go_idle().await {
                    warn!(imsi = %self.imsi, "release to idle: {e}");
                },
                c = self.ctl.recv() => match c {
                    Some(Control::Uplink) if self.idle.is_some() => {
                        if !self.serve(RRCEstablishmentCause::mo_Data).await {
                            return false;
                        }
                    }
                    Some(Control::Paged) if self.idle.is_some() => {
                        if !self.serve(RRCEstablishmentCause::mt_Access).await {
                            return false;
                        }
                    }
                    Some(c) => debug!(imsi = %self.imsi, ?c, "control not for this state ignored"),
                    None => return true,
                },
                // An idle UE has no S1 connection: its channel closed with it (parked), and
                // a paging reaches it through `ctl`.
                m = self.rx.recv(), if self.idle.is_none() => match m {
                    Some(S1ap::UeContextReleaseCommand { mme_ue_id, cause, .. }) => {
                        warn!(imsi = %self.imsi, ?cause, "UE context released by the MME while attached");
                        self.release_complete(mme_ue_id);
                        return false;
                    }
                    Some(S1ap::DownlinkNasTransport { nas, .. }) => {
                        if let Some(s) = self.nas_step(&nas) {
                            debug!(imsi = %self.imsi, "downlink NAS while attached: {s:?}");
                        }
                    }
                    Some(other) => debug!("S1AP while attached ignored: {other:?}"),
                    None => return true,
                },
            }
        }
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
        self.sh
            .s1
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
        self.sh.s1.park(self.enb_ue_id, s_tmsi, self.ctl_tx.clone());
        self.sh.dp.suspend(key, self.ctl_tx.clone());
        self.mme_ue_id = None;
        self.idle = Some(s_tmsi);
        self.sh
            .s1
            .idle_counts
            .releases
            .fetch_add(1, Ordering::Relaxed);
        info!(imsi = %self.imsi, "idle");
        Ok(())
    }

    /// Back from idle with a SERVICE REQUEST; after a SERVICE REJECT the UE attaches
    /// again. False if it is no longer registered then.
    async fn serve(&mut self, cause: RRCEstablishmentCause) -> bool {
        let t = Config::ms(self.sh.cfg.attach_timeout_ms);
        let r = match timeout(t, self.service_request(cause)).await {
            Ok(r) => r,
            Err(_) => Err(ServiceFailure::Other(format!("no answer within {t:?}"))),
        };
        match r {
            Ok(()) => true,
            Err(ServiceFailure::Other(e)) => {
                // Still idle at the MME too (it keeps the context); the next uplink
                // data or paging tries again.
                warn!(imsi = %self.imsi, "service request: {e}");
                self.back_to_idle();
                true
            }
            Err(ServiceFailure::Rejected(c)) => {
                info!(imsi = %self.imsi, cause = c, "SERVICE REJECT: attaching again");
                self.reattach(c).await
            }
        }
    }

    /// A failed service request: the new S1 connection is dropped, the UE stays idle.
    fn back_to_idle(&mut self) {
        if let Some(s_tmsi) = self.idle {
            self.sh.s1.park(self.enb_ue_id, s_tmsi, self.ctl_tx.clone());
            if let Some(key) = self.tunnel {
                self.sh.dp.suspend(key, self.ctl_tx.clone());
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
        self.sh.s1.unpark(s_tmsi);
        let (enb_ue_id, rx) = self.sh.s1.register();
        (self.enb_ue_id, self.rx, self.mme_ue_id) = (enb_ue_id, rx, None);
        let counter = if cause == RRCEstablishmentCause::mt_Access {
            &self.sh.s1.idle_counts.service_requests_mt
        } else {
            &self.sh.s1.idle_counts.service_requests_mo
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.sh
            .s1
            .send(&S1ap::InitialUeMessage {
                enb_ue_id,
                nas: sr,
                tai: self.sh.s1.tai,
                ecgi: self.sh.s1.ecgi,
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
                        self.sh
                            .s1
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
            let _ = self.sh.s1.send(&S1ap::InitialContextSetupFailure {
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
        self.sh
            .s1
            .send(&resp)
            .map_err(|e| ServiceFailure::Other(format!("{e:#}")))?;
        let Some(ue_ip) = self.sh.dp.ue_ip(key) else {
            return Err(ServiceFailure::Other("no tunnel".into()));
        };
        let sgw = SocketAddr::from((erab.sgw_addr, proto_gtpu::GTPU_PORT));
        self.sh.dp.resume(key, enb_teid, ue_ip, sgw, erab.sgw_teid);
        self.idle = None;
        info!(imsi = %self.imsi, enb_teid, "connected again");
        Ok(())
    }

    /// After a SERVICE REJECT: for #9 the UE deletes its GUTI and KSI (TS 24.301
    /// §5.6.1.5), i.e. starts from a fresh NAS state with the same USIM, and attaches.
    /// Other causes are handled the same way: the emulator has no other way back.
    async fn reattach(&mut self, cause: u8) -> bool {
        if cause != CAUSE_IDENTITY_NOT_DERIVED {
            debug!(imsi = %self.imsi, cause, "SERVICE REJECT handled like #9");
        }
        self.idle = None;
        let mut nas = UeNas::new(self.nas.usim.clone(), self.sh.plmn);
        nas.pdn = self.nas.pdn.clone();
        self.nas = nas;
        self.sh.s1.unregister(self.enb_ue_id);
        let (enb_ue_id, rx) = self.sh.s1.register();
        (self.enb_ue_id, self.rx, self.mme_ue_id) = (enb_ue_id, rx, None);
        let t = Config::ms(self.sh.cfg.attach_timeout_ms);
        match timeout(t, self.attach()).await {
            Ok(Ok(a)) => {
                info!(imsi = %self.imsi, ip = %a.ue_ip, "attached again");
                true
            }
            Ok(Err(f)) => {
                warn!(imsi = %self.imsi, "attach after SERVICE REJECT failed: {}", f.reason);
                false
            }
            Err(_) => {
                warn!(imsi = %self.imsi, "attach after SERVICE REJECT not complete within {t:?}");
                false
            }
        }
    }

    /// DETACH REQUEST → DETACH ACCEPT → UE CONTEXT RELEASE COMMAND/COMPLETE.
    async fn detach(&mut self) -> Result<(), String> {
        let req = self.nas.detach_request(false).map_err(|e| e.to_string())?;
        self.uplink(req).map_err(|e| format!("{e:#}"))?;
        let mut accepted = false;
        let wait = Config::ms(self.sh.cfg.detach_timeout_ms);
        let done = timeout(wait, async {
            while let Some(m) = self.rx.recv().await {
                match m {
                    S1ap::DownlinkNasTransport { nas, .. } => {
                        if let Some(UeEvent::DetachAccepted) = self.nas_step(&nas) {
                            accepted = true;
                        }
                    }
                    S1ap::UeContextReleaseCommand { mme_ue_id, .. } => {
                        self.release_complete(mme_ue_id);
                        return Ok(());
                    }
                    // E.g. the MME lost this UE's context with the old association.
                    S1ap::ErrorIndication { cause, .. } => {
                        return Err(format!("S1AP Error Indication: {cause:?}"));
                    }
                    other => debug!("S1AP during detach ignored: {other:?}"),
                }
            }
            Err("S1 dispatcher gone".to_string())
        })
        .await;
        match (done, accepted) {
            (Ok(Ok(())), true) => Ok(()),
            (Ok(Ok(())), false) => Err("UE context released without DETACH ACCEPT".into()),
            (Ok(Err(e)), _) => Err(e),
            (Err(_), a) => Err(format!(
                "no {} within {wait:?}",
                if a {
                    "UE Context Release Command"
                } else {
                    "DETACH ACCEPT"
                }
            )),
        }
    }
}

/// Runs one UE from attach to detach.
pub async fn run_ue(sh: Shared, usim: Usim) -> Outcome {
    let imsi = usim.imsi.clone();
    let (enb_ue_id, rx) = sh.s1.register();
    let (ctl_tx, ctl) = mpsc::unbounded_channel();
    let mut nas = UeNas::new(usim, sh.plmn);
    nas.pdn.apn = Some(sh.cfg.apn.clone());
    let mut ue = Ue {
        sh: &sh,
        imsi: imsi.clone(),
        nas,
        auth_failure_cause: None,
        smc_reject_cause: None,
        enb_ue_id,
        mme_ue_id: None,
        rx,
        ctl_tx,
        ctl,
        idle: None,
        tunnel: None,
    };
    let result = {
        // Closed only when the run ends; then attaching is pointless anyway.
        let Ok(_slot) = sh.attach_slots.acquire().await else {
            sh.s1.unregister(enb_ue_id);
            sh.progress.send_modify(|p| p.failed += 1);
            return Outcome::Failed(AttachFailure {
                imsi,
                enb_ue_s1ap_id: enb_ue_id,
                kind: FailureKind::Protocol,
                emm_cause: None,
                ue_auth_failure_cause: None,
                reason: "run ended before the attach started".into(),
                at_ms: sh.clock.ms(Instant::now()),
            });
        };
        let t = Config::ms(sh.cfg.attach_timeout_ms);
        match timeout(t, ue.attach()).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                FailureKind::Timeout,
                ue.auth_failure_cause,
                format!("attach not complete within {t:?}"),
            )),
        }
    };
    sh.progress.send_modify(|p| match &result {
        Ok(_) => p.attached += 1,
        Err(_) => p.failed += 1,
    });
    let outcome = match result {
        Err(f) => {
            warn!(%imsi, kind = ?f.kind, cause = ?f.cause, "attach failed: {}", f.reason);
            Outcome::Failed(AttachFailure {
                imsi,
                enb_ue_s1ap_id: enb_ue_id,
                kind: f.kind,
                emm_cause: f.cause,
                ue_auth_failure_cause: ue.auth_failure_cause,
                reason: f.reason,
                at_ms: sh.clock.ms(Instant::now()),
            })
        }
        Ok(attached) => {
            info!(%imsi, ip = %attached.ue_ip, ms = attached.attach_ms, "attached");
            let still = ue.attached().await;
            let stopped_at = (*sh.stop.borrow()).unwrap_or_else(Instant::now);
            let pings = ue.tunnel.and_then(|key| sh.dp.remove(key, stopped_at));
            let detach_error = if still {
                ue.detach().await.err()
            } else {
                Some("released by the MME before the detach".into())
            };
            if let Some(e) = &detach_error {
                warn!(%imsi, "detach: {e}");
            }
            Outcome::Done {
                imsi,
                attached,
                pings,
                detach_error,
            }
        }
    };
    sh.s1.unregister(ue.enb_ue_id);
    if let Some(s_tmsi) = ue.idle {
        sh.s1.unpark(s_tmsi);
    }
    outcome
}
