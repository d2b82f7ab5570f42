//! A UE moving between the RAN's eNBs, and its Tracking Area Updates:
//! - idle, within its TA: cell reselection, no signalling; idle into another TAC: a
//!   normal TAU (TS 24.301 §5.5.3.2) from the new eNB; and the periodic TAU (T3412).
//!   Both from ECM-IDLE: TAU REQUEST in an INITIAL UE MESSAGE with the S-TMSI, TAU
//!   ACCEPT (COMPLETE if it brought a GUTI), the MME's release back to idle; T3430.
//! - connected: X2 handover (TS 36.413 §8.4.4, TS 23.401 §5.5.1.1.2): the X2 part is
//!   inside this process, the target eNB sends PATH SWITCH REQUEST and the source
//!   forgets the UE on the ACKNOWLEDGE; or S1 handover (TS 36.413 §8.4.1–8.4.3, 8.4.6,
//!   8.4.7; TS 23.401 §5.5.1.2.2): HANDOVER REQUIRED from the source, HANDOVER REQUEST
//!   at the target (matched to the UE by its S-GW TEID) answered with the ACKNOWLEDGE,
//!   HANDOVER COMMAND at the source, ENB STATUS TRANSFER, (MME STATUS TRANSFER at the
//!   target) HANDOVER NOTIFY from the target, UE CONTEXT RELEASE of the source.
//!
//! The transparent containers carry the smallest valid RRC content (the emulator has no
//! radio): criticalExtensionsFuture, the target cell, the UE's last cell.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_nas::msg::{Nas, UpdateType};
use proto_nas::UeEvent;
use proto_s1ap::asn::s1ap as asn;
use proto_s1ap::{
    causes, BearerStatus, Cause, CauseRadioNetwork, Ecgi, ErabSetup, HandoverRequest,
    HandoverRequired, PathSwitchRequest, RRCEstablishmentCause, S1ap, STmsi, StatusTransfer,
    TargetEnb,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::procedure::{Bearer, Control, End, Ue};
use crate::report::ProcedureKind;
use crate::s1::S1;
use crate::traffic::{Event, Handovers};

/// How long the UE's arrival at an S1 handover's target waits for the MME STATUS
/// TRANSFER (the MME relays the PDCP state only for bearers that preserve it).
const STATUS_WAIT: Duration = Duration::from_millis(500);

/// RRC content of the smallest valid HandoverPreparationInformation and
/// HandoverCommand (TS 36.331): `criticalExtensionsFuture`, UPER.
const RRC_FUTURE: [u8; 1] = [0x80];

impl Ue<'_> {
    /// The periodic TAU of an idle UE (T3412 expiry).
    pub(crate) async fn periodic_tau(&mut self, e: Event) -> Option<End> {
        if !self.sh.model.tau || self.idle.is_none() {
            self.skip(e);
            return None;
        }
        self.tau(UpdateType::Periodic, ProcedureKind::TauPeriodic)
            .await
    }

    /// The UE moves to another eNB, picked at random.
    pub(crate) async fn move_to_another_enb(&mut self, e: Event) -> Option<End> {
        let n = self.sh.enbs.len();
        if n < 2 {
            self.skip(e);
            return None;
        }
        let target = (self.enb + 1 + self.schedule.index(n - 1)) % n;
        let other_ta = self.sh.enbs[target].tai != self.s1().tai;
        if self.idle.is_some() {
            if other_ta && !self.sh.model.tau {
                self.skip(e);
                return None;
            }
            self.reselect(target);
            if !other_ta {
                return None;
            }
            return self
                .tau(UpdateType::TaUpdating, ProcedureKind::TauNormal)
                .await;
        }
        let s1 = match self.sh.model.handovers {
            Handovers::None => {
                self.skip(e);
                return None;
            }
            Handovers::X2 => false,
            Handovers::S1 => true,
            Handovers::Both => self.schedule.coin(),
        };
        let started = Instant::now();
        if s1 {
            let r = self.s1_handover(target).await;
            self.record(ProcedureKind::S1Handover, started, &r);
        } else {
            let r = self.x2_handover(target).await;
            self.record(ProcedureKind::X2Handover, started, &r);
        }
        None
    }

    /// Idle: the UE now camps on eNB `target`, where a PAGING reaches it.
    fn reselect(&mut self, target: usize) {
        if let Some(s_tmsi) = self.idle {
            self.s1().unpark(s_tmsi);
            self.enb = target;
            // Not `park`: the UE's last eNB UE S1AP ID was the old eNB's, here it may
            // be another UE's.
            self.s1().camp(s_tmsi, self.ctl_tx.clone());
        }
    }

    /// A TAU from ECM-IDLE under T3430 (TS 24.301 §5.5.3.2.6: on expiry the UE aborts
    /// and starts again, up to `nas_attempts` times), recorded as `kind`. After a TAU
    /// REJECT the UE attaches again.
    async fn tau(&mut self, update: UpdateType, kind: ProcedureKind) -> Option<End> {
        let started = Instant::now();
        let t3430 = Config::ms(self.sh.cfg.t3430_ms);
        let attempts = self.sh.cfg.nas_attempts;
        let mut r = Err(format!("T3430 expired {attempts} times"));
        for attempt in 1..=attempts {
            match tokio::time::timeout(t3430, self.tau_once(update)).await {
                Ok(Ok(())) => {
                    r = Ok(());
                    break;
                }
                Ok(Err(TauFailure::Rejected(c))) => {
                    self.record(kind, started, &Err(format!("TAU REJECT #{c}")));
                    self.idle = None;
                    return self.attach_again().await;
                }
                Ok(Err(TauFailure::Other(e))) => {
                    self.back_to_idle();
                    r = Err(e);
                    break;
                }
                Err(_) => {
                    warn!(imsi = %self.imsi, attempt, "T3430 expired");
                    self.back_to_idle();
                }
            }
        }
        self.record(kind, started, &r);
        None
    }

    /// One TAU attempt: TAU REQUEST, ACCEPT (and COMPLETE), then the MME's release
    /// (no "active" flag: the UE has no uplink data) back to ECM-IDLE.
    async fn tau_once(&mut self, update: UpdateType) -> Result<(), TauFailure> {
        let (Some(s_tmsi), Some(_)) = (self.idle, self.bearer) else {
            return Err(TauFailure::Other("not idle with a bearer".into()));
        };
        let req = self
            .nas
            .tau_request(update, false)
            .map_err(|e| TauFailure::Other(format!("TAU REQUEST: {e}")))?;
        self.s1().unpark(s_tmsi);
        let (enb_ue_id, rx) = self.s1().register();
        (self.enb_ue_id, self.rx, self.mme_ue_id) = (enb_ue_id, rx, None);
        self.s1()
            .send(&S1ap::InitialUeMessage {
                enb_ue_id,
                nas: req,
                tai: self.s1().tai,
                ecgi: self.s1().ecgi,
                s_tmsi: Some(s_tmsi),
                rrc_cause: RRCEstablishmentCause::mo_Signalling,
            })
            .map_err(|e| TauFailure::Other(format!("{e:#}")))?;
        let mut outcome = None;
        while let Some(m) = self.rx.recv().await {
            match m {
                S1ap::DownlinkNasTransport { mme_ue_id, nas, .. } => {
                    self.learn_mme_id(mme_ue_id);
                    match self.nas_step(&nas) {
                        // An accept with a new GUTI, answered with TAU COMPLETE.
                        Some(UeEvent::Send(complete)) => {
                            self.uplink(complete)
                                .map_err(|e| TauFailure::Other(format!("{e:#}")))?;
                            outcome = Some(Ok(()));
                        }
                        Some(UeEvent::Other(Nas::TrackingAreaUpdateAccept { .. })) => {
                            outcome = Some(Ok(()));
                        }
                        Some(UeEvent::Other(Nas::TrackingAreaUpdateReject { cause })) => {
                            outcome = Some(Err(TauFailure::Rejected(cause)));
                        }
                        other => debug!(imsi = %self.imsi, "NAS during TAU ignored: {other:?}"),
                    }
                }
                S1ap::UeContextReleaseCommand {
                    mme_ue_id, cause, ..
                } => {
                    self.release_complete(mme_ue_id);
                    let r = outcome.unwrap_or_else(|| {
                        Err(TauFailure::Other(format!(
                            "released by the MME before TAU ACCEPT: {cause:?}"
                        )))
                    });
                    // Idle again, under the GUTI the accept may have changed.
                    if let Some(g) = self.nas.guti() {
                        self.idle = Some(STmsi {
                            mme_code: g.mme_code,
                            m_tmsi: g.m_tmsi,
                        });
                    }
                    self.back_to_idle();
                    return r;
                }
                other => debug!("S1AP during TAU ignored: {other:?}"),
            }
        }
        Err(TauFailure::Other("S1 dispatcher gone".into()))
    }

    /// What a handover needs of a connected UE.
    /// The MME UE S1AP ID, the bearer and the tunnel key.
    fn connected_bearer(&self) -> Result<(u32, Bearer, u32), String> {
        match (self.mme_ue_id, self.bearer, self.tunnel) {
            (Some(m), Some(b), Some(k)) if self.idle.is_none() => Ok((m, b, k)),
            _ => Err("not connected".into()),
        }
    }

    /// X2 handover to eNB `target`: the target's PATH SWITCH REQUEST with its S1-U
    /// F-TEID; on the ACKNOWLEDGE the source releases the UE (X2 UE CONTEXT RELEASE).
    /// On failure the UE stays with the source.
    async fn x2_handover(&mut self, target: usize) -> Result<(), String> {
        let (mme_ue_id, b, key) = self.connected_bearer()?;
        let (erab_id, sgw_addr, sgw_teid) = (b.erab_id, b.sgw_addr, b.sgw_teid);
        let source = (self.enb, self.enb_ue_id, self.sh.dp.enb_teid(key));
        let ue_ip = self.sh.dp.ue_ip(key).ok_or("no tunnel")?;
        let sgw = SocketAddr::from((sgw_addr, proto_gtpu::GTPU_PORT));
        let tgt = self.sh.enbs[target].clone();
        let (enb_ue_id, rx) = tgt.register();
        tgt.set_mme_ue_id(enb_ue_id, mme_ue_id);
        let enb_teid = self.sh.dp.allocate_teid();
        let source_rx = std::mem::replace(&mut self.rx, rx);
        (self.enb, self.enb_ue_id) = (target, enb_ue_id);
        // The UE is in the target cell: its data goes through the target from here on.
        self.sh
            .dp
            .resume(key, target, enb_teid, ue_ip, sgw, sgw_teid);
        let sent = tgt.send(&S1ap::PathSwitchRequest(Box::new(PathSwitchRequest {
            enb_ue_id,
            source_mme_ue_id: mme_ue_id,
            erabs: vec![ErabSetup {
                erab_id,
                enb_addr: tgt.enb.s1u_address,
                enb_teid,
            }],
            tai: tgt.tai,
            ecgi: tgt.ecgi,
            ue_sec_enc: self.ue_sec.0,
            ue_sec_int: self.ue_sec.1,
        })));
        let wait = Config::ms(self.sh.cfg.handover_timeout_ms);
        let answer = match sent {
            Err(e) => Err(format!("{e:#}")),
            Ok(()) => tokio::time::timeout(wait, async {
                while let Some(m) = self.rx.recv().await {
                    match m {
                        S1ap::PathSwitchRequestAcknowledge { mme_ue_id, .. } => {
                            return Ok(mme_ue_id)
                        }
                        S1ap::PathSwitchRequestFailure { cause, .. } => {
                            return Err(format!("PATH SWITCH REQUEST FAILURE: {cause:?}"))
                        }
                        other => debug!("S1AP during path switch ignored: {other:?}"),
                    }
                }
                Err("S1 dispatcher gone".to_string())
            })
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no PATH SWITCH REQUEST ACKNOWLEDGE within {wait:?}"
                ))
            }),
        };
        match answer {
            Ok(mme_ue_id) => {
                self.learn_mme_id(mme_ue_id);
                self.sh.enbs[source.0].unregister(source.1);
                info!(imsi = %self.imsi, enb = %tgt.enb.name, "X2 handover done");
                Ok(())
            }
            Err(e) => {
                // The MME still serves the UE through the source: back there.
                tgt.unregister(enb_ue_id);
                self.rx = source_rx;
                (self.enb, self.enb_ue_id) = (source.0, source.1);
                if let Some(teid) = source.2 {
                    self.sh.dp.resume(key, source.0, teid, ue_ip, sgw, sgw_teid);
                }
                Err(e)
            }
        }
    }

    /// S1 handover to eNB `target` (see the module docs). A preparation failure or
    /// timeout leaves the UE with the source (HANDOVER CANCEL on timeout).
    async fn s1_handover(&mut self, target: usize) -> Result<(), String> {
        let (mme_ue_id, b, key) = self.connected_bearer()?;
        let (erab_id, sgw_addr, sgw_teid) = (b.erab_id, b.sgw_addr, b.sgw_teid);
        let ue_ip = self.sh.dp.ue_ip(key).ok_or("no tunnel")?;
        let sgw = SocketAddr::from((sgw_addr, proto_gtpu::GTPU_PORT));
        let src = self.s1().clone();
        let src_id = self.enb_ue_id;
        let tgt = self.sh.enbs[target].clone();
        let wait = Config::ms(self.sh.cfg.handover_timeout_ms);
        let deadline = tokio::time::Instant::now() + wait;
        tgt.expect_handover(sgw_teid, self.ctl_tx.clone());
        let container = source_to_target(tgt.ecgi, src.ecgi).map_err(|e| format!("{e:#}"))?;
        let r = src.send(&S1ap::HandoverRequired(Box::new(HandoverRequired {
            mme_ue_id,
            enb_ue_id: src_id,
            cause: Cause::radioNetwork(CauseRadioNetwork::handover_desirable_for_radio_reason),
            target: TargetEnb {
                plmn: tgt.tai.plmn,
                enb_id: tgt.enb.enb_id,
                tai: tgt.tai,
            },
            source_to_target: container,
        })));
        if let Err(e) = r {
            tgt.unexpect_handover(sgw_teid);
            return Err(format!("{e:#}"));
        }
        // Preparation: the target admits the UE, the source gets the command.
        let mut admitted: Option<Admitted> = None;
        let mut commanded = false;
        while !(commanded && admitted.is_some()) {
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(S1ap::HandoverCommand { .. }) => commanded = true,
                    Some(S1ap::HandoverPreparationFailure { cause, .. }) => {
                        tgt.unexpect_handover(sgw_teid);
                        if let Some(a) = admitted {
                            tgt.unregister(a.enb_ue_id);
                        }
                        return Err(format!("HANDOVER PREPARATION FAILURE: {cause:?}"));
                    }
                    Some(other) => debug!("S1AP at the source during handover ignored: {other:?}"),
                    None => return Err("S1 dispatcher gone".into()),
                },
                c = self.ctl.recv() => match c {
                    Some(Control::HandoverRequest(req)) if admitted.is_none() => {
                        admitted = Some(admit(&tgt, &req, erab_id, self.sh.dp.allocate_teid())?);
                    }
                    Some(c) => debug!(imsi = %self.imsi, ?c, "control during handover ignored"),
                    None => return Err("UE control channel gone".into()),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tgt.unexpect_handover(sgw_teid);
                    if let Some(a) = admitted {
                        tgt.unregister(a.enb_ue_id);
                    }
                    // TS1RELOCprep expired: the source cancels (TS 36.413 §8.4.5).
                    let _ = src.send(&S1ap::HandoverCancel {
                        mme_ue_id,
                        enb_ue_id: src_id,
                        cause: causes::radio_unspecified(),
                    });
                    return Err(format!("handover not prepared within {wait:?}"));
                }
            }
        }
        let Some(mut a) = admitted else {
            return Err("handover not admitted".into());
        };
        // Execution: the PDCP state to the target, the UE arrives there.
        src.send(&S1ap::EnbStatusTransfer(StatusTransfer {
            mme_ue_id,
            enb_ue_id: src_id,
            bearers: vec![BearerStatus {
                erab_id,
                ul_pdcp_sn: 0,
                ul_hfn: 0,
                dl_pdcp_sn: 0,
                dl_hfn: 0,
            }],
        }))
        .map_err(|e| format!("{e:#}"))?;
        // The UE reaches the target after the MME relayed the PDCP state (MME STATUS
        // TRANSFER): so the MME sees the source's transfer before the target's NOTIFY,
        // which comes on another association.
        let relayed = tokio::time::timeout(STATUS_WAIT, async {
            while let Some(m) = a.rx.recv().await {
                match m {
                    S1ap::MmeStatusTransfer(_) => return true,
                    other => debug!("S1AP at the target before NOTIFY ignored: {other:?}"),
                }
            }
            false
        })
        .await;
        if relayed != Ok(true) {
            debug!(imsi = %self.imsi, "no MME STATUS TRANSFER: the UE arrives anyway");
        }
        let source_rx = std::mem::replace(&mut self.rx, a.rx);
        (self.enb, self.enb_ue_id) = (target, a.enb_ue_id);
        self.learn_mme_id(a.mme_ue_id);
        self.sh
            .dp
            .resume(key, target, a.enb_teid, ue_ip, sgw, sgw_teid);
        tgt.send(&S1ap::HandoverNotify {
            mme_ue_id: a.mme_ue_id,
            enb_ue_id: a.enb_ue_id,
            tai: tgt.tai,
            ecgi: tgt.ecgi,
        })
        .map_err(|e| format!("{e:#}"))?;
        // Completion: the MME releases the source's UE context.
        let released = release_source(source_rx, &src, src_id, deadline).await;
        src.unregister(src_id);
        released?;
        info!(imsi = %self.imsi, enb = %tgt.enb.name, "S1 handover done");
        Ok(())
    }
}

/// Why a TAU did not complete.
enum TauFailure {
    /// TAU REJECT with this EMM cause: the UE attaches again.
    Rejected(u8),
    Other(String),
}

/// The target eNB's side of an S1 handover: a new connection for the UE.
struct Admitted {
    enb_ue_id: u32,
    mme_ue_id: u32,
    enb_teid: u32,
    rx: mpsc::UnboundedReceiver<S1ap>,
}

/// HANDOVER REQUEST at the target: register the UE, answer with the ACKNOWLEDGE and
/// the target's S1-U F-TEID.
fn admit(
    tgt: &Arc<S1>,
    req: &HandoverRequest,
    erab_id: u8,
    enb_teid: u32,
) -> Result<Admitted, String> {
    let (enb_ue_id, rx) = tgt.register();
    tgt.set_mme_ue_id(enb_ue_id, req.mme_ue_id);
    let erab = req.erabs.first().map_or(erab_id, |e| e.erab_id);
    tgt.send(&S1ap::HandoverRequestAcknowledge {
        mme_ue_id: req.mme_ue_id,
        enb_ue_id,
        admitted: vec![ErabSetup {
            erab_id: erab,
            enb_addr: tgt.enb.s1u_address,
            enb_teid,
        }],
        target_to_source: target_to_source().map_err(|e| format!("{e:#}"))?,
    })
    .map_err(|e| format!("{e:#}"))?;
    Ok(Admitted {
        enb_ue_id,
        mme_ue_id: req.mme_ue_id,
        enb_teid,
        rx,
    })
}

/// Waits at the source for the MME's UE CONTEXT RELEASE COMMAND and completes it.
async fn release_source(
    mut rx: mpsc::UnboundedReceiver<S1ap>,
    src: &S1,
    enb_ue_id: u32,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(S1ap::UeContextReleaseCommand { mme_ue_id, .. })) => {
                src.send(&S1ap::UeContextReleaseComplete {
                    mme_ue_id,
                    enb_ue_id,
                })
                .map_err(|e| format!("{e:#}"))?;
                return Ok(());
            }
            Ok(Some(other)) => debug!("S1AP at the source after handover ignored: {other:?}"),
            Ok(None) => return Err("S1 dispatcher gone".into()),
            Err(_) => return Err("no UE CONTEXT RELEASE COMMAND for the source".into()),
        }
    }
}

fn eutran_cgi(e: Ecgi) -> asn::EUTRANCGI {
    asn::EUTRANCGI::new(
        asn::PLMNidentity(asn::TBCDSTRING(e.plmn)),
        asn::CellIdentity(proto_s1ap::asn::aper::Bits::low(u64::from(e.cell_id), 28)),
        None,
    )
}

/// Source eNB to Target eNB Transparent Container (TS 36.413 §9.2.1.56).
fn source_to_target(target: Ecgi, source: Ecgi) -> anyhow::Result<Vec<u8>> {
    let c = asn::SourceeNBToTargeteNBTransparentContainer::new(
        asn::RRCContainer(RRC_FUTURE.to_vec().into()),
        None,
        eutran_cgi(target),
        None,
        asn::UEHistoryInformation(vec![asn::LastVisitedCellItem::e_UTRAN_Cell(
            asn::LastVisitedEUTRANCellInformation::new(
                eutran_cgi(source),
                asn::CellType::new(asn::CellSize::small, None),
                asn::TimeUEStayedInCell(1),
                None,
            ),
        )]),
        None,
    );
    Ok(proto_s1ap::asn::aper::encode(&c)?)
}

/// Target eNB to Source eNB Transparent Container (TS 36.413 §9.2.1.57).
fn target_to_source() -> anyhow::Result<Vec<u8>> {
    let c = asn::TargeteNBToSourceeNBTransparentContainer::new(
        asn::RRCContainer(RRC_FUTURE.to_vec().into()),
        None,
    );
    Ok(proto_s1ap::asn::aper::encode(&c)?)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::process::Command;

    use proto_sctp::pcap::PcapWriter;
    use proto_sctp::{SctpConfig, SctpStack};

    use super::*;

    const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

    /// What the eNBs send in a handover, over a real (in-memory) SCTP association into
    /// a pcap: tshark decodes every message and the containers' content, nothing
    /// malformed.
    #[test]
    fn tshark_decodes_the_enb_side_of_handovers() {
        let source = Ecgi {
            plmn: PLMN,
            cell_id: 0x101,
        };
        let target = Ecgi {
            plmn: PLMN,
            cell_id: 0x201,
        };
        let tai = proto_s1ap::Tai { plmn: PLMN, tac: 2 };
        let erab = ErabSetup {
            erab_id: 5,
            enb_addr: Ipv4Addr::new(10, 77, 0, 22),
            enb_teid: 0x1234,
        };
        let messages = [
            S1ap::HandoverRequired(Box::new(HandoverRequired {
                mme_ue_id: 7,
                enb_ue_id: 1,
                cause: Cause::radioNetwork(CauseRadioNetwork::handover_desirable_for_radio_reason),
                target: TargetEnb {
                    plmn: PLMN,
                    enb_id: 2,
                    tai,
                },
                source_to_target: source_to_target(target, source).unwrap(),
            })),
            S1ap::HandoverRequestAcknowledge {
                mme_ue_id: 8,
                enb_ue_id: 3,
                admitted: vec![erab],
                target_to_source: target_to_source().unwrap(),
            },
            S1ap::EnbStatusTransfer(StatusTransfer {
                mme_ue_id: 7,
                enb_ue_id: 1,
                bearers: vec![BearerStatus {
                    erab_id: 5,
                    ul_pdcp_sn: 0,
                    ul_hfn: 0,
                    dl_pdcp_sn: 0,
                    dl_hfn: 0,
                }],
            }),
            S1ap::HandoverNotify {
                mme_ue_id: 8,
                enb_ue_id: 3,
                tai,
                ecgi: target,
            },
            S1ap::PathSwitchRequest(Box::new(PathSwitchRequest {
                enb_ue_id: 4,
                source_mme_ue_id: 7,
                erabs: vec![erab],
                tai,
                ecgi: target,
                ue_sec_enc: 0xe0,
                ue_sec_int: 0xe0,
            })),
        ];
        let enb: SocketAddr = "10.77.0.22:40000".parse().unwrap();
        let mme: SocketAddr = "10.77.1.20:9899".parse().unwrap();
        let now = std::time::Instant::now();
        let mut pcap = PcapWriter::new();
        let mut c = SctpStack::new(SctpConfig::default(), false);
        let mut s = SctpStack::new(SctpConfig::default(), true);
        let assoc = c.connect(now, mme).unwrap();
        let pump = |c: &mut SctpStack, s: &mut SctpStack, pcap: &mut PcapWriter| loop {
            let mut moved = false;
            while let Some((_, d)) = c.poll_transmit() {
                pcap.udp(enb, mme, &d);
                s.handle_datagram(now, enb, &d);
                moved = true;
            }
            while let Some((_, d)) = s.poll_transmit() {
                pcap.udp(mme, enb, &d);
                c.handle_datagram(now, mme, &d);
                moved = true;
            }
            if !moved {
                break;
            }
        };
        pump(&mut c, &mut s, &mut pcap);
        for m in &messages {
            let bytes = proto_s1ap::encode(m).unwrap();
            c.send(now, assoc, m.stream(), &bytes).unwrap();
            pump(&mut c, &mut s, &mut pcap);
        }
        let file = std::env::temp_dir().join(format!("ran-handover-{}.pcap", std::process::id()));
        std::fs::write(&file, pcap.bytes()).unwrap();
        let tshark = |args: &[&str]| {
            let out = Command::new("tshark")
                .arg("-r")
                .arg(&file)
                .args(args)
                .output()
                .expect("tshark is required (apt-get install tshark)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let codes = tshark(&["-Y", "s1ap", "-T", "fields", "-e", "s1ap.procedureCode"]);
        let malformed = tshark(&["-Y", "_ws.malformed || _ws.expert.severity == error"]);
        let verbose = tshark(&["-V"]);
        let _ = std::fs::remove_file(&file);
        assert!(malformed.trim().is_empty(), "{malformed}");
        // HandoverPreparation 0, HandoverResourceAllocation 1, eNBStatusTransfer 24,
        // HandoverNotification 2, PathSwitchRequest 3.
        let codes: Vec<&str> = codes.lines().collect();
        assert_eq!(codes, ["0", "1", "24", "2", "3"], "{codes:?}");
        for want in [
            "SourceeNB-ToTargeteNB-TransparentContainer",
            // tshark leaves the target's container undecoded here: APER of the
            // container, RRC HandoverCommand criticalExtensionsFuture (0x80).
            "Target-ToSource-TransparentContainer: 000180",
            "criticalExtensions: criticalExtensionsFuture",
            "cell-ID: 0x00000201",
            "cell-Size: small",
            "time-UE-StayedInCell: 1s",
            "handover-desirable-for-radio-reason",
        ] {
            assert!(verbose.contains(want), "{want:?} not in the decode");
        }
    }
}
