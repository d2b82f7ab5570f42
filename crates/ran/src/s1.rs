//! One eNB's S1-MME: one SCTP-over-UDP association, S1 Setup, and a dispatcher that
//! routes UE-associated S1AP messages to the UE tasks by eNB UE S1AP ID and probe
//! answers to the CP probe, PAGING to idle UEs by S-TMSI, and a HANDOVER REQUEST to the
//! UE whose S1 handover to this eNB is under way (by its S-GW TEID). If the association is lost
//! it is re-established with a new S1 Setup (counted in the report), as an eNB does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use proto_s1ap::asn::s1ap::S1AP_PDU;
use proto_s1ap::asn::S1apPduKind;
use proto_s1ap::{Ecgi, PagingIdentity, S1SetupRequest, S1ap, STmsi, Tai};
use proto_sctp::{AssocId, SctpClient, SctpEvent, SctpSender};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Config, EnbConfig, S1Transport};
use crate::procedure::Control;
use crate::report::Idle;

/// S1AP procedure code of eNB Configuration Update (TS 36.413 §9.3.7).
const PROC_ENB_CONFIGURATION_UPDATE: u8 = 29;

/// The answer to one eNB Configuration Update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    Acknowledge,
    Failure,
}

struct UeEntry {
    mme_ue_id: Option<u32>,
    tx: mpsc::UnboundedSender<S1ap>,
}

/// Counted as the UEs do them; see [`Idle`].
#[derive(Default)]
pub struct IdleCounts {
    pub releases: AtomicU64,
    pub service_requests_mo: AtomicU64,
    pub service_requests_mt: AtomicU64,
    /// PAGINGs that matched one of our idle UEs.
    pub pagings: AtomicU64,
    pub service_rejects: AtomicU64,
}

impl IdleCounts {
    pub fn report(&self) -> Idle {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Idle {
            releases: n(&self.releases),
            service_requests_mo: n(&self.service_requests_mo),
            service_requests_mt: n(&self.service_requests_mt),
            pagings: n(&self.pagings),
            service_rejects: n(&self.service_rejects),
        }
    }
}

/// Shared S1-MME state of one eNB: the current association and the UE routing table.
pub struct S1 {
    pub enb: EnbConfig,
    link: Mutex<Option<(SctpSender, AssocId)>>,
    ues: Mutex<HashMap<u32, UeEntry>>,
    /// ECM-IDLE UEs: no eNB UE S1AP ID, reachable only by paging their S-TMSI.
    idle: Mutex<HashMap<STmsi, mpsc::UnboundedSender<Control>>>,
    /// UEs on their way here by S1 handover, by the S-GW TEID of their bearer: the
    /// HANDOVER REQUEST has no eNB UE S1AP ID yet.
    incoming: Mutex<HashMap<u32, mpsc::UnboundedSender<Control>>>,
    /// Shared by the RAN's eNBs: an id is never any other UE's on any eNB, so a UE that
    /// moved on can never touch another's entry with its old id.
    next_enb_ue_id: Arc<AtomicU32>,
    pub tai: Tai,
    pub ecgi: Ecgi,
    pub s1_setups: AtomicU32,
    pub association_losses: AtomicU32,
    pub dropped: AtomicU64,
    /// Idle-mode procedures, for the report.
    pub idle_counts: IdleCounts,
    /// Set by [`S1::close`]: the association's end is ours, do not re-establish it.
    closing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means another task panicked mid-update of a routing table entry;
    // the table itself stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl S1 {
    /// One eNB of the RAN; `ids` allocates eNB UE S1AP IDs for all of them.
    pub fn new(cfg: &Config, enb: EnbConfig, ids: Arc<AtomicU32>) -> anyhow::Result<S1> {
        let plmn = cfg.plmn()?;
        Ok(S1 {
            link: Mutex::new(None),
            ues: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            next_enb_ue_id: ids,
            tai: Tai { plmn, tac: enb.tac },
            ecgi: Ecgi {
                plmn,
                cell_id: enb.cell_id(),
            },
            enb,
            s1_setups: AtomicU32::new(0),
            association_losses: AtomicU32::new(0),
            dropped: AtomicU64::new(0),
            idle_counts: IdleCounts::default(),
            closing: AtomicBool::new(false),
        })
    }

    /// Encodes and sends one message on its stream (TS 36.412 §7).
    pub fn send(&self, msg: &S1ap) -> anyhow::Result<()> {
        let bytes = proto_s1ap::encode(msg).context("cannot encode S1AP")?;
        self.send_raw(msg.stream(), bytes)
    }

    pub fn send_raw(&self, stream: u16, bytes: Vec<u8>) -> anyhow::Result<()> {
        let link = lock(&self.link);
        let Some((sender, assoc)) = link.as_ref() else {
            bail!("no S1-MME association");
        };
        sender
            .send(*assoc, stream, Bytes::from(bytes))
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// A new UE: its eNB UE S1AP ID (24 bits, never reused in a run on any eNB) and the channel on
    /// which its downlink S1AP arrives.
    pub fn register(&self) -> (u32, mpsc::UnboundedReceiver<S1ap>) {
        let id = self.next_enb_ue_id.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.ues).insert(
            id,
            UeEntry {
                mme_ue_id: None,
                tx,
            },
        );
        (id, rx)
    }

    pub fn set_mme_ue_id(&self, enb_ue_id: u32, mme_ue_id: u32) {
        if let Some(e) = lock(&self.ues).get_mut(&enb_ue_id) {
            e.mme_ue_id = Some(mme_ue_id);
        }
    }

    pub fn unregister(&self, enb_ue_id: u32) {
        lock(&self.ues).remove(&enb_ue_id);
    }

    /// The UE went idle: its S1AP id is gone, a PAGING for `s_tmsi` reaches it on `ctl`.
    pub fn park(&self, enb_ue_id: u32, s_tmsi: STmsi, ctl: mpsc::UnboundedSender<Control>) {
        self.unregister(enb_ue_id);
        self.camp(s_tmsi, ctl);
    }

    /// An idle UE camps here (after parking, or reselecting this eNB's cell): a PAGING
    /// for `s_tmsi` reaches it on `ctl`.
    pub fn camp(&self, s_tmsi: STmsi, ctl: mpsc::UnboundedSender<Control>) {
        lock(&self.idle).insert(s_tmsi, ctl);
    }

    /// The UE leaves ECM-IDLE (service request, re-attach, end of run).
    pub fn unpark(&self, s_tmsi: STmsi) {
        lock(&self.idle).remove(&s_tmsi);
    }

    /// An S1 handover of the UE with bearer `sgw_teid` to this eNB is being prepared.
    pub fn expect_handover(&self, sgw_teid: u32, ctl: mpsc::UnboundedSender<Control>) {
        lock(&self.incoming).insert(sgw_teid, ctl);
    }

    pub fn unexpect_handover(&self, sgw_teid: u32) {
        lock(&self.incoming).remove(&sgw_teid);
    }

    /// HANDOVER REQUEST: to the UE expected with its bearer, else HANDOVER FAILURE (an
    /// emulated eNB has no radio for a UE it does not know).
    fn handover_request(&self, r: Box<proto_s1ap::HandoverRequest>) {
        let ue = r
            .erabs
            .iter()
            .find_map(|e| lock(&self.incoming).remove(&e.sgw_teid));
        let mme_ue_id = r.mme_ue_id;
        if ue.is_some_and(|ctl| ctl.send(Control::HandoverRequest(r)).is_ok()) {
            return;
        }
        warn!(
            mme_ue_id,
            "HANDOVER REQUEST for no UE of ours: HANDOVER FAILURE"
        );
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.send(&S1ap::HandoverFailure {
            mme_ue_id,
            cause: proto_s1ap::Cause::radioNetwork(
                proto_s1ap::CauseRadioNetwork::no_radio_resources_available_in_target_cell,
            ),
        }) {
            debug!("HANDOVER FAILURE not sent: {e:#}");
        }
    }

    /// A PAGING for our TAI wakes the idle UE of its S-TMSI (TS 36.304 §7); PAGING for
    /// UEs we do not have is normal for an eNB and not counted as dropped.
    fn page(&self, identity: &PagingIdentity, tais: &[Tai]) {
        let PagingIdentity::STmsi(t) = identity else {
            debug!("PAGING by IMSI ignored: our UEs always have a GUTI when idle");
            return;
        };
        if !tais.contains(&self.tai) {
            return;
        }
        if let Some(ctl) = lock(&self.idle).get(t) {
            if ctl.send(Control::Paged).is_ok() {
                self.idle_counts.pagings.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Routes a UE-associated message; `false` if no UE has those ids.
    fn route(&self, enb_ue_id: Option<u32>, mme_ue_id: Option<u32>, msg: S1ap) -> bool {
        let ues = lock(&self.ues);
        let entry = match enb_ue_id {
            Some(e) => ues.get(&e),
            None => ues
                .values()
                .find(|u| u.mme_ue_id.is_some() && u.mme_ue_id == mme_ue_id),
        };
        entry.is_some_and(|u| u.tx.send(msg).is_ok())
    }

    /// Brings up the association and runs S1 Setup.
    pub async fn connect(&self, cfg: &Config) -> anyhow::Result<SctpClient> {
        let local = std::net::SocketAddr::new(self.enb.bind(), 0);
        let timeout = Config::ms(cfg.s1_setup_timeout_ms);
        let client = match cfg.s1_transport {
            S1Transport::Udp => {
                SctpClient::connect(local, cfg.mme, cfg.sctp_config(), timeout).await
            }
            S1Transport::Kernel => {
                SctpClient::connect_kernel(local, cfg.mme, cfg.sctp_config(), timeout).await
            }
        };
        let mut client =
            client.with_context(|| format!("no S1-MME association with the MME at {}", cfg.mme))?;
        let setup = S1ap::S1SetupRequest(S1SetupRequest {
            plmn: self.tai.plmn,
            enb_id: self.enb.enb_id,
            enb_name: Some(self.enb.name.clone()),
            tacs: vec![self.enb.tac],
        });
        let bytes = proto_s1ap::encode(&setup)?;
        client
            .send(setup.stream(), Bytes::from(bytes))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let answer = tokio::time::timeout(timeout, async {
            while let Some(ev) = client.recv().await {
                match ev {
                    SctpEvent::Message(m) => match proto_s1ap::decode(&m.payload) {
                        Ok(S1ap::S1SetupResponse(r)) => return Ok(r),
                        Ok(S1ap::S1SetupFailure { cause }) => {
                            bail!("the MME refused S1 Setup: {cause:?}")
                        }
                        Ok(other) => debug!("before S1 Setup Response: {other:?} ignored"),
                        Err(e) => {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                            warn!("malformed S1AP from the MME dropped: {e}");
                        }
                    },
                    SctpEvent::Down { reason, .. } => bail!("association lost: {reason}"),
                    SctpEvent::Up { .. } => {}
                }
            }
            bail!("SCTP driver stopped")
        })
        .await
        .map_err(|_| anyhow::anyhow!("no S1 Setup Response within {timeout:?}"))??;
        info!(
            enb = %self.enb.name,
            mme = ?answer.mme_name,
            group = answer.mme_group_id,
            code = answer.mme_code,
            "S1 Setup done"
        );
        self.s1_setups.fetch_add(1, Ordering::Relaxed);
        *lock(&self.link) = Some((client.sender(), client.assoc()));
        Ok(client)
    }

    /// Receives on the association until the task is dropped: UE messages to their
    /// tasks, probe answers to `probe`. Re-establishes a lost association.
    pub async fn dispatch(
        self: Arc<Self>,
        cfg: Config,
        mut client: SctpClient,
        probe: mpsc::UnboundedSender<(ProbeAnswer, Instant)>,
    ) {
        loop {
            let ev = client.recv().await;
            if self.closing.load(Ordering::Relaxed) {
                return;
            }
            match ev {
                Some(SctpEvent::Message(m)) => self.on_message(&m.payload, &probe),
                Some(SctpEvent::Up { .. }) => {}
                Some(SctpEvent::Down { reason, .. }) => {
                    warn!("S1-MME association lost: {reason}; re-establishing");
                    self.association_losses.fetch_add(1, Ordering::Relaxed);
                    *lock(&self.link) = None;
                    client = self.reconnect(&cfg).await;
                }
                None => {
                    warn!("SCTP driver stopped; re-establishing");
                    *lock(&self.link) = None;
                    client = self.reconnect(&cfg).await;
                }
            }
        }
    }

    async fn reconnect(&self, cfg: &Config) -> SctpClient {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connect(cfg).await {
                Ok(c) => return c,
                Err(e) => {
                    warn!("S1-MME re-establishment failed: {e:#}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn on_message(&self, payload: &[u8], probe: &mpsc::UnboundedSender<(ProbeAnswer, Instant)>) {
        let now = Instant::now();
        let msg = match proto_s1ap::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                warn!("malformed S1AP from the MME dropped: {e}");
                return;
            }
        };
        let (enb, mme) = match &msg {
            S1ap::DownlinkNasTransport {
                enb_ue_id,
                mme_ue_id,
                ..
            } => (Some(*enb_ue_id), Some(*mme_ue_id)),
            S1ap::InitialContextSetupRequest(r) => (Some(r.enb_ue_id), Some(r.mme_ue_id)),
            S1ap::HandoverCommand {
                enb_ue_id,
                mme_ue_id,
                ..
            }
            | S1ap::HandoverPreparationFailure {
                enb_ue_id,
                mme_ue_id,
                ..
            }
            | S1ap::HandoverCancelAcknowledge {
                enb_ue_id,
                mme_ue_id,
            }
            | S1ap::PathSwitchRequestAcknowledge {
                enb_ue_id,
                mme_ue_id,
                ..
            }
            | S1ap::PathSwitchRequestFailure {
                enb_ue_id,
                mme_ue_id,
                ..
            }
            | S1ap::MmeStatusTransfer(proto_s1ap::StatusTransfer {
                enb_ue_id,
                mme_ue_id,
                ..
            }) => (Some(*enb_ue_id), Some(*mme_ue_id)),
            S1ap::UeContextReleaseCommand {
                enb_ue_id,
                mme_ue_id,
                ..
            } => (*enb_ue_id, Some(*mme_ue_id)),
            S1ap::ErrorIndication {
                enb_ue_id,
                mme_ue_id,
                cause,
            } => {
                warn!(
                    ?enb_ue_id,
                    ?mme_ue_id,
                    ?cause,
                    "S1AP Error Indication from the MME"
                );
                if enb_ue_id.is_none() && mme_ue_id.is_none() {
                    return;
                }
                (*enb_ue_id, *mme_ue_id)
            }
            S1ap::Other { procedure_code, .. }
                if *procedure_code == PROC_ENB_CONFIGURATION_UPDATE =>
            {
                if let Some(a) = probe_answer(payload) {
                    let _ = probe.send((a, now));
                }
                return;
            }
            S1ap::Paging(p) => {
                self.page(&p.identity, &p.tais);
                return;
            }
            S1ap::HandoverRequest(_) => {
                if let S1ap::HandoverRequest(r) = msg {
                    self.handover_request(r);
                }
                return;
            }
            other => {
                debug!("S1AP {other:?} ignored");
                return;
            }
        };
        if !self.route(enb, mme, msg) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            debug!(?enb, ?mme, "S1AP for an unknown UE dropped");
        }
    }

    /// Closes the association (ABORT), e.g. at the end of the run.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        if let Some((sender, assoc)) = lock(&self.link).take() {
            let _ = sender.close(assoc);
        }
    }
}

/// ENB CONFIGURATION UPDATE without IEs: a pure round trip that changes nothing at the
/// MME (every IE of the message is optional, TS 36.413 §9.1.8.7).
pub fn enb_configuration_update() -> anyhow::Result<Vec<u8>> {
    let pdu = proto_s1ap::asn::build_s1ap!(
        InitiatingMessage,
        ENBConfigurationUpdate,
        ENBConfigurationUpdate,
    )?;
    Ok(pdu.encode()?.to_vec())
}

/// Classifies an S1AP PDU of procedure 29 (the typed layer reports it as `Other`).
fn probe_answer(payload: &[u8]) -> Option<ProbeAnswer> {
    match S1AP_PDU::decode(payload).ok()?.kind() {
        S1apPduKind::Successful_ENBConfigurationUpdate => Some(ProbeAnswer::Acknowledge),
        S1apPduKind::Unsuccessful_ENBConfigurationUpdate => Some(ProbeAnswer::Failure),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one eNB of the default config.
    fn lab_enb() -> S1 {
        let cfg = Config::default();
        let enb = cfg.enb_list(&crate::traffic::Model::default()).remove(0);
        S1::new(&cfg, enb, Arc::new(AtomicU32::new(1))).unwrap()
    }

    #[test]
    fn configuration_update_and_its_answers() {
        let b = enb_configuration_update().unwrap();
        // initiatingMessage, procedure 29, criticality reject, empty IE container.
        assert_eq!(&b[..2], &[0x00, 29]);
        assert!(matches!(
            proto_s1ap::decode(&b).unwrap(),
            S1ap::Other {
                procedure_code: 29,
                ..
            }
        ));
        let ack = {
            proto_s1ap::asn::build_s1ap!(
                SuccessfulOutcome,
                ENBConfigurationUpdate,
                ENBConfigurationUpdateAcknowledge,
            )
            .unwrap()
            .encode()
            .unwrap()
            .to_vec()
        };
        assert_eq!(probe_answer(&ack), Some(ProbeAnswer::Acknowledge));
        assert_eq!(probe_answer(&b), None, "our own request is not an answer");
        assert_eq!(probe_answer(&[0xff, 0x00]), None);
    }

    /// Bad S1AP from the network is counted and dropped; messages for unknown UEs too.
    #[test]
    fn garbage_and_strays_are_dropped() {
        let s1 = lab_enb();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (id, mut ue) = s1.register();
        let mut x = 0x2545_f491u32;
        for len in 0..400usize {
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Some(b) = v.get_mut(1) {
                *b = [11, 9, 23, 29][len % 4]; // DL NAS, ICS, release, config update
            }
            s1.on_message(&v, &tx);
        }
        assert!(s1.dropped.load(Ordering::Relaxed) > 0);
        // A well-formed message for an unknown UE is dropped; for ours it is routed.
        let dl = |enb_ue_id| {
            proto_s1ap::encode(&S1ap::DownlinkNasTransport {
                mme_ue_id: 7,
                enb_ue_id,
                nas: vec![0x07, 0x44, 0x08],
            })
            .unwrap()
        };
        let before = s1.dropped.load(Ordering::Relaxed);
        s1.on_message(&dl(id + 100), &tx);
        assert_eq!(s1.dropped.load(Ordering::Relaxed), before + 1);
        s1.on_message(&dl(id), &tx);
        assert!(matches!(
            ue.try_recv(),
            Ok(S1ap::DownlinkNasTransport { .. })
        ));
        assert!(rx.try_recv().is_err(), "nothing taken for a probe answer");
    }

    /// PAGING reaches a parked (idle) UE by S-TMSI if our TAI is listed; nothing else
    /// is woken or counted as dropped.
    #[test]
    fn paging_wakes_the_idle_ue_of_its_s_tmsi() {
        let s1 = lab_enb();
        let (probe, _) = mpsc::unbounded_channel();
        let (id, _rx) = s1.register();
        let (ctl, mut woken) = mpsc::unbounded_channel();
        let ours = STmsi {
            mme_code: 1,
            m_tmsi: 0x1234,
        };
        s1.park(id, ours, ctl);
        let paging = |m_tmsi, tac| {
            proto_s1ap::encode(&S1ap::Paging(proto_s1ap::Paging {
                ue_identity_index: 7,
                identity: PagingIdentity::STmsi(STmsi { m_tmsi, ..ours }),
                cn_domain: proto_s1ap::CNDomain::ps,
                tais: vec![Tai { tac, ..s1.tai }],
            }))
            .unwrap()
        };
        s1.on_message(&paging(0x9999, s1.tai.tac), &probe);
        s1.on_message(&paging(0x1234, s1.tai.tac + 1), &probe);
        assert!(woken.try_recv().is_err(), "another UE, another TA");
        s1.on_message(&paging(0x1234, s1.tai.tac), &probe);
        assert_eq!(woken.try_recv(), Ok(Control::Paged));
        assert_eq!(s1.idle_counts.report().pagings, 1);
        // Parked means unroutable by the old eNB UE S1AP ID.
        assert!(!s1.route(
            Some(id),
            None,
            S1ap::Paging(proto_s1ap::Paging {
                ue_identity_index: 0,
                identity: PagingIdentity::STmsi(ours),
                cn_domain: proto_s1ap::CNDomain::ps,
                tais: vec![],
            })
        ));
        s1.unpark(ours);
        s1.on_message(&paging(0x1234, s1.tai.tac), &probe);
        assert!(woken.try_recv().is_err(), "connected again: not paged");
        assert_eq!(s1.dropped.load(Ordering::Relaxed), 0);
    }
}
