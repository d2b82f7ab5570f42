//! One UE's life as its eNBs relay it: attach (Initial UE Message … Attach Complete,
//! Initial Context Setup with the eNB's S1-U TEID, T3410), the attached state driven by
//! the traffic model ([`crate::traffic`]), and detach (Detach Request → Accept, UE
//! Context Release, T3421), by the model or when the run stops. Each procedure is
//! recorded ([`crate::report::ProcedureRecord`]); ECM-IDLE is in [`crate::idle`], TAU
//! and handovers in [`crate::mobility`].

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use crate::downlink::Downlink;
use crate::report::{AttachFailure, Clock, FailureKind, ProcedureKind, ProcedureRecord, Progress};
use crate::s1::S1;
use crate::traffic::{Event, Model, Schedule};

/// After a reject the MME releases the UE context; how long to wait for that.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Downlink data sent to an idle UE that is not paged within this long is a failed
/// service request after paging (the SPGW's DDN retransmissions and the MME's T3413
/// take a few seconds at most).
const PAGING_WAIT: Duration = Duration::from_secs(10);

/// What a UE task is told besides its S1AP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Uplink data while idle (from the ping loop): SERVICE REQUEST, mo-Data.
    Uplink,
    /// A PAGING for our S-TMSI: SERVICE REQUEST, mt-Access.
    Paged,
    /// S1 handover: the target eNB got the MME's HANDOVER REQUEST for this UE.
    HandoverRequest(Box<proto_s1ap::HandoverRequest>),
}

/// The procedures of all UEs as they finish, and the model events skipped.
#[derive(Default)]
pub struct Log {
    pub records: Mutex<Vec<ProcedureRecord>>,
    pub skipped: Mutex<BTreeMap<String, u64>>,
    pub downlink_sent: AtomicU64,
}

/// What every UE task shares.
#[derive(Clone)]
pub struct Shared {
    pub cfg: Arc<Config>,
    pub model: Arc<Model>,
    /// The eNBs' S1-MME, by eNB index.
    pub enbs: Arc<Vec<Arc<S1>>>,
    pub dp: DataPlane,
    pub downlink: Option<Arc<Downlink>>,
    pub log: Arc<Log>,
    pub clock: Clock,
    pub plmn: [u8; 3],
    pub attach_slots: Arc<Semaphore>,
    /// `Some(t)`: the run stopped at `t` (pings stopped then); detach now.
    pub stop: watch::Receiver<Option<Instant>>,
    /// True: start nothing new (see `run_with_control`).
    pub quiet: watch::Receiver<bool>,
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
        downlink_sent: u64,
        detach_error: Option<String>,
    },
    Failed(AttachFailure),
}

pub(crate) struct Failure {
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

/// The UE's S1AP context as its current eNB holds it, and its traffic plan.
pub(crate) struct Ue<'a> {
    pub(crate) sh: &'a Shared,
    pub(crate) imsi: String,
    pub(crate) nas: UeNas,
    /// Cause of the USIM's own AUTHENTICATION FAILURE (#20 MAC, #21 synch), if sent:
    /// reported with the network's verdict.
    auth_failure_cause: Option<u8>,
    /// Cause of the UE's SECURITY MODE REJECT, if sent.
    smc_reject_cause: Option<u8>,
    /// Index of the eNB serving (or, idle, camping) the UE.
    pub(crate) enb: usize,
    pub(crate) enb_ue_id: u32,
    pub(crate) mme_ue_id: Option<u32>,
    pub(crate) rx: mpsc::UnboundedReceiver<S1ap>,
    pub(crate) ctl_tx: mpsc::UnboundedSender<Control>,
    pub(crate) ctl: mpsc::UnboundedReceiver<Control>,
    /// The S-TMSI while in ECM-IDLE.
    pub(crate) idle: Option<STmsi>,
    /// The data-plane tunnel's key once attached (kept across idle and re-attach).
    pub(crate) tunnel: Option<u32>,
    /// The E-RAB of the default bearer while registered.
    pub(crate) bearer: Option<Bearer>,
    pub(crate) schedule: Schedule,
    /// UE security capabilities (EEA, EIA octets) the MME gave the eNB, for a handover.
    pub(crate) ue_sec: (u8, u8),
    /// Downlink sent while idle, not yet answered by a paging: when, and the tunnel's
    /// late-downlink count then.
    pub(crate) downlink_pending: Option<(Instant, u64)>,
    downlink_sent: u64,
}

/// The UE's default bearer as the eNB knows it: E-RAB id (= EBI) and S-GW F-TEID.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bearer {
    pub(crate) erab_id: u8,
    pub(crate) sgw_addr: Ipv4Addr,
    pub(crate) sgw_teid: u32,
}

impl Bearer {
    pub(crate) fn of(e: &proto_s1ap::ErabToSetup) -> Bearer {
        Bearer {
            erab_id: e.erab_id,
            sgw_addr: e.sgw_addr,
            sgw_teid: e.sgw_teid,
        }
    }
}

impl Ue<'_> {
    /// The S1-MME of the UE's eNB.
    pub(crate) fn s1(&self) -> &Arc<S1> {
        &self.sh.enbs[self.enb]
    }

    /// Records one finished procedure.
    pub(crate) fn record(&self, kind: ProcedureKind, started: Instant, r: &Result<(), String>) {
        let end = Instant::now();
        let c = self.sh.clock;
        let rec = ProcedureRecord {
            imsi: self.imsi.clone(),
            kind,
            start_unix_ms: c.unix_ms(started),
            end_unix_ms: c.unix_ms(end),
            latency_ms: end.saturating_duration_since(started).as_secs_f64() * 1e3,
            ok: r.is_ok(),
            reason: r.as_ref().err().cloned(),
        };
        if let Err(why) = r {
            warn!(imsi = %self.imsi, ?kind, "procedure failed: {why}");
        }
        self.sh
            .log
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
    }

    /// A model event the UE's state does not allow.
    pub(crate) fn skip(&self, e: Event) {
        self.count_skipped(e.name());
    }

    /// Counts a model event that led to no procedure, under `what`.
    fn count_skipped(&self, what: &str) {
        debug!(imsi = %self.imsi, what, "event without a procedure");
        *self
            .sh
            .log
            .skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what.to_string())
            .or_default() += 1;
    }

    pub(crate) fn uplink(&self, nas: Vec<u8>) -> anyhow::Result<()> {
        let mme_ue_id = self
            .mme_ue_id
            .ok_or_else(|| anyhow::anyhow!("no MME UE S1AP ID yet"))?;
        self.s1().send(&S1ap::UplinkNasTransport {
            mme_ue_id,
            enb_ue_id: self.enb_ue_id,
            nas,
            tai: self.s1().tai,
            ecgi: self.s1().ecgi,
        })
    }

    pub(crate) fn learn_mme_id(&mut self, id: u32) {
        if self.mme_ue_id != Some(id) {
            self.mme_ue_id = Some(id);
            self.s1().set_mme_ue_id(self.enb_ue_id, id);
        }
    }

    /// A new S1 connection at the UE's eNB (new eNB UE S1AP ID), the old one forgotten.
    pub(crate) fn new_connection(&mut self) {
        self.s1().unregister(self.enb_ue_id);
        let (enb_ue_id, rx) = self.s1().register();
        (self.enb_ue_id, self.rx, self.mme_ue_id) = (enb_ue_id, rx, None);
    }

    /// Where a ping of the idle UE goes: waking it, if the model says pings do.
    pub(crate) fn wake(&self) -> Option<mpsc::UnboundedSender<Control>> {
        self.sh.model.pings_wake_idle.then(|| self.ctl_tx.clone())
    }

    pub(crate) fn release_complete(&self, mme_ue_id: u32) {
        if let Err(e) = self.s1().send(&S1ap::UeContextReleaseComplete {
            mme_ue_id,
            enb_ue_id: self.enb_ue_id,
        }) {
            warn!(imsi = %self.imsi, "UE Context Release Complete not sent: {e:#}");
        }
    }

    /// A downlink NAS PDU; malformed or unverifiable ones are logged and dropped
    /// (TS 24.301 §4.4.4.2).
    pub(crate) fn nas_step(&mut self, pdu: &[u8]) -> Option<UeEvent> {
        match self.nas.on_downlink(pdu) {
            Ok(ev) => {
                if let UeEvent::Send(up) = &ev {
                    self.note_auth_failure(up);
                }
                Some(ev)
            }
            Err(e) => {
                self.s1().dropped.fetch_add(1, Ordering::Relaxed);
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

    /// An attach with T3410 (TS 24.301 §5.5.1.2.6): on expiry the UE aborts and
    /// starts again on a new S1 connection, up to `nas_attempts` times.
    async fn attach_with_retries(&mut self) -> Result<Attached, Failure> {
        let started = Instant::now();
        let t3410 = Config::ms(self.sh.cfg.t3410_ms);
        for attempt in 1..=self.sh.cfg.nas_attempts {
            if attempt > 1 {
                warn!(imsi = %self.imsi, attempt, "T3410 expired: attaching again");
                self.new_connection();
                self.fresh_nas();
            }
            if let Ok(r) = timeout(t3410, self.attach(started)).await {
                return r;
            }
        }
        Err(Failure::new(
            FailureKind::Timeout,
            self.auth_failure_cause,
            format!("T3410 expired {} times", self.sh.cfg.nas_attempts),
        ))
    }

    /// A NAS state without GUTI or security context, same USIM (TS 24.301 §5.5.1.2.6:
    /// what an attach needs after its failure or a detach).
    fn fresh_nas(&mut self) {
        let mut nas = UeNas::new(self.nas.usim.clone(), self.sh.plmn);
        nas.pdn = self.nas.pdn.clone();
        self.nas = nas;
    }

    async fn attach(&mut self, started: Instant) -> Result<Attached, Failure> {
        let req = self.nas.attach_request().map_err(|e| {
            Failure::new(
                FailureKind::Subscriber,
                None,
                format!("ATTACH REQUEST: {e}"),
            )
        })?;
        self.s1()
            .send(&S1ap::InitialUeMessage {
                enb_ue_id: self.enb_ue_id,
                nas: req,
                tai: self.s1().tai,
                ecgi: self.s1().ecgi,
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
            let _ = ue.s1().send(&S1ap::InitialContextSetupFailure {
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
        self.s1()
            .send(&resp)
            .and_then(|_| self.uplink(complete))
            .map_err(|e| Failure::new(FailureKind::Protocol, None, format!("{e:#}")))?;
        let now = Instant::now();
        let sgw = SocketAddr::from((erab.sgw_addr, proto_gtpu::GTPU_PORT));
        match self.tunnel {
            Some(key) => self
                .sh
                .dp
                .resume(key, self.enb, enb_teid, ue_ip, sgw, erab.sgw_teid),
            None => {
                self.sh
                    .dp
                    .add(self.enb, enb_teid, ue_ip, sgw, erab.sgw_teid);
                self.tunnel = Some(enb_teid);
            }
        }
        self.bearer = Some(Bearer::of(erab));
        self.ue_sec = (r.ue_sec_enc, r.ue_sec_int);
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
    pub(crate) fn setup_response(
        &self,
        r: &InitialContextSetupRequest,
        erab_id: u8,
    ) -> (u32, S1ap) {
        let enb_teid = self.sh.dp.allocate_teid();
        let resp = S1ap::InitialContextSetupResponse {
            mme_ue_id: r.mme_ue_id,
            enb_ue_id: self.enb_ue_id,
            erabs: vec![ErabSetup {
                erab_id,
                enb_addr: self.s1().enb.s1u_address,
                enb_teid,
            }],
        };
        (enb_teid, resp)
    }

    /// Attached: answer what the MME sends, go idle and come back when told, run the
    /// traffic model's events, until the run stops.
    async fn attached(&mut self) -> End {
        let mut stop = self.sh.stop.clone();
        let idle_after = self.sh.model.idle_after_ms.or(self.sh.cfg.idle_after_ms);
        let mut next_event = self.next_event();
        let mut quiet = self.sh.quiet.clone();
        // A caller that dropped its end can no longer make the run quiet.
        let mut quiet_open = true;
        loop {
            let hushed = *quiet.borrow_and_update();
            if stop.borrow_and_update().is_some() {
                // A detach needs a signalling connection (TS 24.301 §5.5.2.2.1).
                if self.idle.is_some() {
                    self.serve(
                        RRCEstablishmentCause::mo_Signalling,
                        ProcedureKind::ServiceRequest,
                        Instant::now(),
                    )
                    .await;
                }
                return match self.idle {
                    None => End::Registered,
                    Some(_) => End::Lost("still idle at the end: no detach".into()),
                };
            }
            let idle = self.idle.is_some();
            // Inactivity as the eNB sees it: no signalling for `idle_after_ms`.
            let inactive = async move {
                match (idle_after, idle, hushed) {
                    (Some(ms), false, false) => tokio::time::sleep(Config::ms(ms)).await,
                    _ => std::future::pending().await,
                }
            };
            let event = async move {
                match next_event.filter(|_| !hushed) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let pending = self.downlink_pending;
            let paging_late = async move {
                match pending {
                    Some((t, _)) => tokio::time::sleep_until((t + PAGING_WAIT).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = stop.changed() => if r.is_err() { return End::Registered },
                r = quiet.changed(), if quiet_open => quiet_open = r.is_ok(),
                _ = inactive => self.release_to_idle().await,
                _ = event => {
                    next_event = self.next_event();
                    let e = self.schedule.pick();
                    if let Some(end) = self.on_event(e).await {
                        return end;
                    }
                }
                _ = paging_late => {
                    if let Some((t, late)) = self.downlink_pending.take() {
                        let key = self.tunnel.unwrap_or_default();
                        if self.sh.dp.late_downlink(key) > late {
                            // It reached the eNB on the released TEID just after the
                            // release: lost, so nothing to page for (the SGW never
                            // buffered it).
                            self.count_skipped("downlink_lost_in_release");
                        } else {
                            let why = format!("no PAGING within {PAGING_WAIT:?} of the downlink data");
                            self.record(ProcedureKind::ServiceRequestPaging, t, &Err(why));
                        }
                    }
                }
                c = self.ctl.recv() => match c {
                    Some(Control::Uplink) if idle => {
                        let r = self
                            .serve(RRCEstablishmentCause::mo_Data, ProcedureKind::ServiceRequest, Instant::now())
                            .await;
                        if let Some(end) = r {
                            return end;
                        }
                    }
                    Some(Control::Paged) if idle => {
                        let t = self.downlink_pending.take().map_or_else(Instant::now, |p| p.0);
                        let r = self
                            .serve(RRCEstablishmentCause::mt_Access, ProcedureKind::ServiceRequestPaging, t)
                            .await;
                        if let Some(end) = r {
                            return end;
                        }
                    }
                    Some(c) => debug!(imsi = %self.imsi, ?c, "control not for this state ignored"),
                    None => return End::Registered,
                },
                // An idle UE has no S1 connection: its channel closed with it (parked), and
                // a paging reaches it through `ctl`.
                m = self.rx.recv(), if !idle => match m {
                    Some(S1ap::UeContextReleaseCommand { mme_ue_id, cause, .. }) => {
                        warn!(imsi = %self.imsi, ?cause, "UE context released by the MME while attached");
                        self.release_complete(mme_ue_id);
                        return End::Lost("released by the MME before the detach".into());
                    }
                    Some(S1ap::DownlinkNasTransport { nas, .. }) => {
                        if let Some(s) = self.nas_step(&nas) {
                            debug!(imsi = %self.imsi, "downlink NAS while attached: {s:?}");
                        }
                    }
                    Some(other) => debug!("S1AP while attached ignored: {other:?}"),
                    None => return End::Registered,
                },
            }
        }
    }

    /// When the model's next event for this UE comes.
    fn next_event(&mut self) -> Option<tokio::time::Instant> {
        self.schedule
            .next_delay()
            .map(|d| tokio::time::Instant::now() + d)
    }

    /// Runs one model event; `Some` if the UE's registration ended with it.
    async fn on_event(&mut self, e: Event) -> Option<End> {
        let idle = self.idle.is_some();
        match e {
            // Connected, uplink data just flows on the bearer: no procedure.
            Event::Uplink if !idle => self.skip(e),
            Event::Uplink => {
                if let Some(key) = self.tunnel {
                    self.sh.dp.hold_ping(key);
                }
                let r = self
                    .serve(
                        RRCEstablishmentCause::mo_Data,
                        ProcedureKind::ServiceRequest,
                        Instant::now(),
                    )
                    .await;
                return r;
            }
            Event::Downlink => self.downlink(e),
            Event::Detach if idle => self.skip(e),
            Event::Detach => return self.detach_and_reattach().await,
            Event::PeriodicTau => return self.periodic_tau(e).await,
            Event::Move => return self.move_to_another_enb(e).await,
        }
        None
    }

    /// One datagram from the pdn host to the UE; if idle, it should be paged.
    fn downlink(&mut self, e: Event) {
        let ip = self.tunnel.and_then(|k| self.sh.dp.ue_ip(k));
        let (Some(dl), Some(ip)) = (&self.sh.downlink, ip) else {
            return self.skip(e);
        };
        if dl.send(ip) {
            self.downlink_sent += 1;
            self.sh.log.downlink_sent.fetch_add(1, Ordering::Relaxed);
            if let (Some(_), None, Some(key)) = (self.idle, self.downlink_pending, self.tunnel) {
                self.downlink_pending = Some((Instant::now(), self.sh.dp.late_downlink(key)));
            }
        }
    }

    /// A new attach from a fresh NAS state (after a detach or a SERVICE REJECT),
    /// recorded as a re-attach; `Some` if it failed.
    pub(crate) async fn attach_again(&mut self) -> Option<End> {
        let started = Instant::now();
        // Downlink sent before is gone with the old PDN connection.
        self.downlink_pending = None;
        self.fresh_nas();
        self.new_connection();
        let t = Config::ms(self.sh.cfg.attach_timeout_ms);
        let r = match timeout(t, self.attach_with_retries()).await {
            Ok(Ok(a)) => {
                info!(imsi = %self.imsi, ip = %a.ue_ip, "attached again");
                Ok(())
            }
            Ok(Err(f)) => Err(f.reason),
            Err(_) => Err(format!("not attached within {t:?}")),
        };
        self.record(ProcedureKind::Reattach, started, &r);
        r.err().map(End::Lost)
    }

    /// A detach by the traffic model, then after `reattach_after_ms` an attach again.
    async fn detach_and_reattach(&mut self) -> Option<End> {
        let started = Instant::now();
        let r = self.detach().await;
        self.record(ProcedureKind::Detach, started, &r);
        // Accepted or not, the UE is deregistered now (TS 24.301 §5.5.2.2.4).
        self.s1().unregister(self.enb_ue_id);
        self.bearer = None;
        if let Some(key) = self.tunnel {
            self.sh.dp.suspend(key, None);
        }
        let mut stop = self.sh.stop.clone();
        let mut quiet = self.sh.quiet.clone();
        tokio::select! {
            _ = tokio::time::sleep(Config::ms(self.sh.model.reattach_after_ms)) => {}
            // A quiet run wants every UE registered: no waiting.
            Ok(_) = quiet.wait_for(|q| *q) => {}
            _ = stop.wait_for(Option::is_some) => return Some(End::Detached),
        }
        self.attach_again().await
    }

    /// DETACH REQUEST → DETACH ACCEPT → UE CONTEXT RELEASE COMMAND/COMPLETE. T3421
    /// runs until the accept: on expiry the request goes again (TS 24.301 §5.5.2.2.4),
    /// up to `nas_attempts` times; then the release has `detach_timeout_ms`.
    async fn detach(&mut self) -> Result<(), String> {
        let t3421 = Config::ms(self.sh.cfg.t3421_ms);
        let release = Config::ms(self.sh.cfg.detach_timeout_ms);
        let attempts = self.sh.cfg.nas_attempts;
        let mut accepted = false;
        for attempt in 1..=attempts {
            if attempt > 1 {
                warn!(imsi = %self.imsi, attempt, "T3421 expired: DETACH REQUEST again");
            }
            let req = self.nas.detach_request(false).map_err(|e| e.to_string())?;
            self.uplink(req).map_err(|e| format!("{e:#}"))?;
            let mut deadline = tokio::time::Instant::now() + t3421;
            loop {
                let m = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Err(_) if accepted => {
                        return Err(format!("no UE Context Release Command within {release:?}"))
                    }
                    Err(_) => break,
                    Ok(None) => return Err("S1 dispatcher gone".into()),
                    Ok(Some(m)) => m,
                };
                match m {
                    S1ap::DownlinkNasTransport { nas, .. } => {
                        if let Some(UeEvent::DetachAccepted) = self.nas_step(&nas) {
                            if !accepted {
                                accepted = true;
                                deadline = tokio::time::Instant::now() + release;
                            }
                        }
                    }
                    S1ap::UeContextReleaseCommand { mme_ue_id, .. } => {
                        self.release_complete(mme_ue_id);
                        return if accepted {
                            Ok(())
                        } else {
                            Err("UE context released without DETACH ACCEPT".into())
                        };
                    }
                    // E.g. the MME lost this UE's context with the old association.
                    S1ap::ErrorIndication { cause, .. } => {
                        return Err(format!("S1AP Error Indication: {cause:?}"));
                    }
                    other => debug!("S1AP during detach ignored: {other:?}"),
                }
            }
        }
        Err(format!("T3421 expired {attempts} times"))
    }
}

/// How a UE's attached life ended.
pub(crate) enum End {
    /// Still registered: detach it.
    Registered,
    /// Detached by the traffic model (and the run stopped before the re-attach).
    Detached,
    /// Deregistered otherwise: why.
    Lost(String),
}

/// Runs UE number `index` from attach to detach, on eNB `index % eNBs`.
pub async fn run_ue(sh: Shared, usim: Usim, index: usize) -> Outcome {
    let imsi = usim.imsi.clone();
    let enb = index % sh.enbs.len();
    let (enb_ue_id, rx) = sh.enbs[enb].register();
    let (ctl_tx, ctl) = mpsc::unbounded_channel();
    let mut nas = UeNas::new(usim, sh.plmn);
    nas.pdn.apn = Some(sh.cfg.apn.clone());
    let mut ue = Ue {
        sh: &sh,
        imsi: imsi.clone(),
        nas,
        auth_failure_cause: None,
        smc_reject_cause: None,
        enb,
        enb_ue_id,
        mme_ue_id: None,
        rx,
        ctl_tx,
        ctl,
        idle: None,
        tunnel: None,
        bearer: None,
        ue_sec: (0, 0),
        schedule: Schedule::new(&sh.model, sh.cfg.seed, index, sh.cfg.ues),
        downlink_pending: None,
        downlink_sent: 0,
    };
    let started = Instant::now();
    let result = {
        // Closed only when the run ends; then attaching is pointless anyway.
        let Ok(_slot) = sh.attach_slots.acquire().await else {
            sh.enbs[enb].unregister(enb_ue_id);
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
        match timeout(t, ue.attach_with_retries()).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                FailureKind::Timeout,
                ue.auth_failure_cause,
                format!("attach not complete within {t:?}"),
            )),
        }
    };
    ue.record(
        ProcedureKind::Attach,
        started,
        &result.as_ref().map(|_| ()).map_err(|f| f.reason.clone()),
    );
    sh.progress.send_modify(|p| match &result {
        Ok(_) => p.attached += 1,
        Err(_) => p.failed += 1,
    });
    let outcome = match result {
        Err(f) => {
            warn!(%imsi, kind = ?f.kind, cause = ?f.cause, "attach failed: {}", f.reason);
            Outcome::Failed(AttachFailure {
                imsi,
                enb_ue_s1ap_id: ue.enb_ue_id,
                kind: f.kind,
                emm_cause: f.cause,
                ue_auth_failure_cause: ue.auth_failure_cause,
                reason: f.reason,
                at_ms: sh.clock.ms(Instant::now()),
            })
        }
        Ok(attached) => {
            info!(%imsi, ip = %attached.ue_ip, ms = attached.attach_ms, "attached");
            let end = ue.attached().await;
            let stopped_at = (*sh.stop.borrow()).unwrap_or_else(Instant::now);
            let pings = ue.tunnel.and_then(|key| sh.dp.remove(key, stopped_at));
            let detach_error = match end {
                End::Registered => {
                    let t = Instant::now();
                    let r = ue.detach().await;
                    ue.record(ProcedureKind::Detach, t, &r);
                    r.err()
                }
                End::Detached => None,
                End::Lost(why) => Some(why),
            };
            if let Some(e) = &detach_error {
                warn!(%imsi, "detach: {e}");
            }
            Outcome::Done {
                imsi,
                attached,
                pings,
                downlink_sent: ue.downlink_sent,
                detach_error,
            }
        }
    };
    ue.s1().unregister(ue.enb_ue_id);
    if let Some(s_tmsi) = ue.idle {
        ue.s1().unpark(s_tmsi);
    }
    outcome
}
