//! S1AP: the eNB associations, the per-message handlers of what eNBs send, and the
//! UE-associated procedures the MME starts (initial context setup, context release).

use std::net::SocketAddr;
use std::time::Instant;

use proto_gtpv2c as gtp;
use proto_nas::{cause as emm, msg, Direction, SecurityHeader};
use proto_s1ap::{self as s1ap, causes, Ecgi, S1ap, STmsi, Tai};
use proto_sctp::AssocId;
use tracing::{debug, info, warn};

use super::context::{Enb, Ue, UeState};
use super::emm::protect;
use super::esm::{pdn_address, DEFAULT_EBI};
use super::s11::modify_bearer_request;
use super::timers::EmmProcedure;
use super::{Action, MmeCore};

impl MmeCore {
    pub fn on_sctp_up(&mut self, assoc: AssocId, peer: SocketAddr) {
        self.enbs.insert(
            assoc,
            Enb {
                peer,
                enb_id: None,
                name: None,
                tacs: Vec::new(),
            },
        );
    }

    /// The association is gone: its UEs lose their S1 connection (ECM-IDLE), and the
    /// SGW the eNB's end of their tunnels.
    pub fn on_sctp_down(&mut self, now: Instant, assoc: AssocId) {
        self.now = now;
        self.handover_assoc_down(assoc);
        self.enbs.remove(&assoc);
        let gone: Vec<u32> = self
            .ues
            .values()
            .filter(|u| u.assoc == Some(assoc))
            .map(|u| u.mme_ue_id)
            .collect();
        for ue in gone {
            let Some(u) = self.ues.get_mut(&ue) else {
                continue;
            };
            u.assoc = None;
            u.enb_ue_id = None;
            if u.state == UeState::Attached {
                u.state = UeState::Idle;
                self.release_access_bearers(ue);
                self.start_mobile_reachable(ue);
            }
            self.changed = true;
            self.lower_layer_failure(ue);
        }
    }

    pub(super) fn send(&mut self, assoc: AssocId, m: &S1ap) {
        match s1ap::encode(m) {
            Ok(pdu) => self.actions.push(Action::S1ap {
                assoc,
                stream: m.stream(),
                pdu,
            }),
            Err(e) => warn!(%assoc, "cannot encode S1AP {m:?}: {e}"),
        }
    }

    /// An S1AP PDU from the eNB of `assoc`, received at `now`.
    pub fn on_s1ap(&mut self, now: Instant, assoc: AssocId, bytes: &[u8]) {
        self.now = now;
        // An association we have not seen come up (e.g. after a restart): track it.
        self.enbs.entry(assoc).or_insert_with(|| Enb {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            enb_id: None,
            name: None,
            tacs: Vec::new(),
        });
        let m = match s1ap::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                warn!(%assoc, len = bytes.len(), "dropping undecodable S1AP PDU: {e}");
                // TS 36.413 §10.2: report syntax errors with an ERROR INDICATION.
                self.send(
                    assoc,
                    &S1ap::ErrorIndication {
                        mme_ue_id: None,
                        enb_ue_id: None,
                        cause: Some(causes::protocol_transfer_syntax_error()),
                    },
                );
                return;
            }
        };
        debug!(%assoc, "S1AP in: {}", short(&m));
        match m {
            S1ap::S1SetupRequest(r) => self.on_s1_setup(assoc, r),
            S1ap::InitialUeMessage {
                enb_ue_id,
                nas,
                tai,
                ecgi,
                s_tmsi,
                ..
            } => self.on_initial_ue(assoc, enb_ue_id, &nas, tai, ecgi, s_tmsi),
            S1ap::UplinkNasTransport {
                mme_ue_id,
                enb_ue_id,
                nas,
                tai,
                ecgi,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    if let Some(u) = self.ues.get_mut(&ue) {
                        u.tai = tai;
                        u.ecgi = ecgi;
                    }
                    self.on_uplink_nas(ue, &nas);
                }
            }
            S1ap::InitialContextSetupResponse {
                mme_ue_id,
                enb_ue_id,
                erabs,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    self.on_ics_response(ue, &erabs);
                }
            }
            S1ap::ErabSetupResponse {
                mme_ue_id,
                enb_ue_id,
                erabs,
                failed,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    self.on_erab_setup_response(ue, &erabs, &failed);
                }
            }
            S1ap::InitialContextSetupFailure {
                mme_ue_id,
                enb_ue_id,
                cause,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    warn!(ue, ?cause, "initial context setup failed");
                    // A service request that fails leaves the UE registered, idle.
                    if self.ues.get(&ue).map(|u| u.state) == Some(UeState::WaitServiceSetup) {
                        self.release_to_idle(ue, causes::radio_unspecified());
                    } else {
                        self.delete_session_and_release(ue);
                    }
                }
            }
            S1ap::UeContextReleaseRequest {
                mme_ue_id,
                enb_ue_id,
                cause,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    info!(ue, ?cause, "eNB requests UE context release");
                    self.release_to_idle(ue, cause);
                }
            }
            S1ap::UeContextReleaseComplete {
                mme_ue_id,
                enb_ue_id,
            } => {
                if self.left_s1_released(assoc, mme_ue_id, enb_ue_id) {
                    return;
                }
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    self.on_release_complete(ue);
                }
            }
            S1ap::PathSwitchRequest(r) => self.on_path_switch_request(assoc, &r),
            S1ap::HandoverRequired(r) => self.on_handover_required(now, assoc, *r),
            S1ap::HandoverRequestAcknowledge {
                mme_ue_id,
                enb_ue_id,
                admitted,
                target_to_source,
            } => self.on_handover_request_ack(
                assoc,
                mme_ue_id,
                enb_ue_id,
                &admitted,
                target_to_source,
            ),
            S1ap::HandoverFailure { mme_ue_id, cause } => {
                self.on_handover_failure(assoc, mme_ue_id, cause)
            }
            S1ap::EnbStatusTransfer(t) => self.on_enb_status_transfer(assoc, t),
            S1ap::HandoverNotify {
                mme_ue_id,
                enb_ue_id,
                tai,
                ecgi,
            } => self.on_handover_notify(assoc, mme_ue_id, enb_ue_id, tai, ecgi),
            S1ap::HandoverCancel {
                mme_ue_id,
                enb_ue_id,
                cause,
            } => self.on_handover_cancel(assoc, mme_ue_id, enb_ue_id, cause),
            S1ap::ErrorIndication {
                mme_ue_id,
                enb_ue_id,
                cause,
            } => warn!(%assoc, ?mme_ue_id, ?enb_ue_id, ?cause, "ERROR INDICATION from eNB"),
            S1ap::Other { .. } if is_enb_configuration_update(bytes) => {
                self.ack_enb_configuration_update(assoc)
            }
            other => {
                warn!(%assoc, "unexpected S1AP message from an eNB: {}", short(&other));
            }
        }
    }

    /// ENB CONFIGURATION UPDATE (TS 36.413 §8.7.4): this MME keeps nothing that the
    /// update could change, so it only acknowledges. The RAN emulator sends empty ones
    /// as an S1-MME round-trip probe (CP_S1-MME recovery during a migration).
    fn ack_enb_configuration_update(&mut self, assoc: AssocId) {
        let ack = s1ap::asn::build_s1ap!(
            SuccessfulOutcome,
            ENBConfigurationUpdate,
            ENBConfigurationUpdateAcknowledge,
        )
        .and_then(|pdu| pdu.encode());
        match ack {
            // Non-UE-associated signalling: stream 0 (TS 36.412 §7).
            Ok(pdu) => self.actions.push(Action::S1ap {
                assoc,
                stream: 0,
                pdu: pdu.to_vec(),
            }),
            Err(e) => warn!(%assoc, "cannot encode ENB CONFIGURATION UPDATE ACKNOWLEDGE: {e}"),
        }
    }

    fn on_s1_setup(&mut self, assoc: AssocId, r: s1ap::S1SetupRequest) {
        if r.plmn != self.plmn {
            warn!(%assoc, enb = r.enb_id, "S1 Setup from another PLMN rejected");
            self.send(
                assoc,
                &S1ap::S1SetupFailure {
                    cause: causes::unknown_plmn(),
                },
            );
            return;
        }
        info!(%assoc, enb = r.enb_id, name = ?r.enb_name, tacs = ?r.tacs, "S1 Setup");
        if let Some(e) = self.enbs.get_mut(&assoc) {
            e.enb_id = Some(r.enb_id);
            e.name = r.enb_name;
            e.tacs = r.tacs;
        }
        let resp = S1ap::S1SetupResponse(s1ap::S1SetupResponse {
            mme_name: Some(self.cfg.mme_name.clone()),
            plmn: self.plmn,
            mme_group_id: self.cfg.mme_group_id,
            mme_code: self.cfg.mme_code,
            relative_capacity: self.cfg.relative_capacity,
        });
        self.send(assoc, &resp);
        self.changed = true;
    }

    /// The UE of a UE-associated message, checking the id pair (TS 36.413 §10.6).
    pub(super) fn ue_for(&mut self, assoc: AssocId, mme_ue_id: u32, enb_ue_id: u32) -> Option<u32> {
        match self.ues.get(&mme_ue_id) {
            Some(u) if u.assoc == Some(assoc) && u.enb_ue_id == Some(enb_ue_id) => Some(mme_ue_id),
            found => {
                warn!(%assoc, mme_ue_id, enb_ue_id, known = found.is_some(), "unknown UE S1AP ID pair");
                let cause = if found.is_some() {
                    causes::unknown_pair()
                } else {
                    causes::unknown_mme_ue_id()
                };
                self.error_indication(assoc, mme_ue_id, enb_ue_id, cause);
                None
            }
        }
    }

    /// ERROR INDICATION for a UE-associated message the MME cannot take.
    pub(super) fn error_indication(
        &mut self,
        assoc: AssocId,
        mme_ue_id: u32,
        enb_ue_id: u32,
        cause: s1ap::Cause,
    ) {
        self.send(
            assoc,
            &S1ap::ErrorIndication {
                mme_ue_id: Some(mme_ue_id),
                enb_ue_id: Some(enb_ue_id),
                cause: Some(cause),
            },
        );
    }

    fn on_initial_ue(
        &mut self,
        assoc: AssocId,
        enb_ue_id: u32,
        nas: &[u8],
        tai: Tai,
        ecgi: Ecgi,
        s_tmsi: Option<STmsi>,
    ) {
        if !self.enbs.get(&assoc).is_some_and(|e| e.enb_id.is_some()) {
            warn!(%assoc, "INITIAL UE MESSAGE before S1 Setup");
            self.send(
                assoc,
                &S1ap::ErrorIndication {
                    mme_ue_id: None,
                    enb_ue_id: Some(enb_ue_id),
                    cause: Some(causes::protocol_semantic_error()),
                },
            );
            return;
        }
        self.on_initial_nas(assoc, enb_ue_id, nas, tai, ecgi, s_tmsi);
    }

    /// INITIAL CONTEXT SETUP REQUEST carrying the ATTACH ACCEPT, once the SPGW has
    /// given the session.
    pub(super) fn send_context_setup(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let (Some(sub), Some(pdn_address), Some(sec)) = (&u.sub, pdn_address(u), &u.sec) else {
            return;
        };
        let accept = msg::attach_accept(&msg::AttachAcceptParams {
            guti: u.guti,
            tai_plmn: self.plmn,
            tacs: self.cfg.tacs.clone(),
            t3412: self.cfg.t3412,
            ebi: DEFAULT_EBI,
            pti: u.pdn.pti,
            qci: sub.qci,
            apn: sub.apn.clone(),
            pdn_address,
        });
        // KeNB from the uplink NAS COUNT of the last message received (the SECURITY
        // MODE COMPLETE), TS 33.401 §7.2.6.1 / A.3; the UE derives the same.
        let ul = sec.count(Direction::Uplink).unwrap_or(1).saturating_sub(1);
        let kenb = sec.kenb(ul);
        let (Some(assoc), Some(enb_ue_id)) = (u.assoc, u.enb_ue_id) else {
            return;
        };
        let accept_plain = accept.clone();
        let nas = match protect(u.sec.as_mut(), accept, SecurityHeader::IntegrityCiphered) {
            Ok(n) => n,
            Err(e) => {
                warn!(ue, "cannot build ATTACH ACCEPT: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        };
        u.state = UeState::WaitContextSetup;
        self.changed = true;
        if let Some(ics) = context_setup_request(u, enb_ue_id, kenb, Some(nas)) {
            self.send(assoc, &ics);
        }
        // Sent again in DOWNLINK NAS TRANSPORTs if the ATTACH COMPLETE does not come.
        if let Ok(plain) = accept_plain {
            self.supervise(
                ue,
                EmmProcedure::Attach,
                plain,
                SecurityHeader::IntegrityCiphered,
            );
        }
    }

    fn on_ics_response(&mut self, ue: u32, erabs: &[s1ap::ErabSetup]) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let Some(e) = erabs.iter().find(|e| e.erab_id == DEFAULT_EBI) else {
            warn!(ue, "context setup response without the default E-RAB");
            return self.delete_session_and_release(ue);
        };
        u.enb_s1u = Some((e.enb_addr, e.enb_teid));
        // The user plane is up: what the SGW held flows now.
        u.downlink_waiting = false;
        match u.state {
            UeState::WaitContextSetup => u.state = UeState::WaitAttachComplete,
            UeState::WaitServiceSetup => {
                info!(ue, imsi = %u.imsi, "service request done: ECM-CONNECTED");
                u.state = UeState::Attached;
            }
            _ => {}
        }
        self.changed = true;
        let Some(sgw_teid) = u.sgw_s11_teid else {
            return;
        };
        self.actions.push(Action::S11 {
            ue,
            teid: sgw_teid,
            msg: gtp::Message::ModifyBearerRequest(modify_bearer_request(e.enb_addr, e.enb_teid)),
        });
    }

    /// Deletes the S11 session (if any) and releases the UE for good.
    pub(super) fn delete_session_and_release(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if let Some(teid) = u.sgw_s11_teid.take() {
            self.delete_session(ue, teid);
        }
        self.release(ue, causes::nas_normal_release(), true);
    }

    /// UE CONTEXT RELEASE COMMAND; with `remove` the context goes once the eNB
    /// completes (or at once when there is no S1 connection).
    pub(super) fn release(&mut self, ue: u32, cause: s1ap::Cause, remove: bool) {
        self.abort_handover(ue);
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.remove_on_release |= remove;
        if remove {
            // A context on its way out sends nothing more.
            u.timers = Default::default();
        }
        self.changed = true;
        match (u.assoc, u.enb_ue_id) {
            (Some(assoc), Some(enb_ue_id)) => {
                u.state = UeState::Releasing;
                self.send(
                    assoc,
                    &S1ap::UeContextReleaseCommand {
                        mme_ue_id: ue,
                        enb_ue_id: Some(enb_ue_id),
                        cause,
                    },
                );
            }
            _ => self.on_release_complete(ue),
        }
    }

    fn on_release_complete(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        self.changed = true;
        if u.remove_on_release || u.sec.is_none() {
            self.forget_ue(ue);
        } else {
            u.assoc = None;
            u.enb_ue_id = None;
            u.state = UeState::Idle;
            let page = std::mem::take(&mut u.downlink_waiting);
            self.start_mobile_reachable(ue);
            self.lower_layer_failure(ue);
            if page {
                self.start_paging(ue, true);
            }
        }
    }
}

/// INITIAL CONTEXT SETUP REQUEST for the default bearer, toward the SGW's S1-U
/// F-TEID: the attach's carries the ATTACH ACCEPT in `nas`, the service request's none.
/// The NH chain of later handovers starts again from this KeNB.
pub(super) fn context_setup_request(
    u: &mut Ue,
    enb_ue_id: u32,
    kenb: [u8; 32],
    nas: Option<Vec<u8>>,
) -> Option<S1ap> {
    let (Some(sub), Some(sgw)) = (&u.sub, u.sgw_s1u) else {
        return None;
    };
    u.ho.new_kenb(u.sec.as_ref(), &kenb);
    let (ue_sec_enc, ue_sec_int) = s1ap_security_capabilities(&u.ue_net_cap);
    Some(S1ap::InitialContextSetupRequest(Box::new(
        s1ap::InitialContextSetupRequest {
            mme_ue_id: u.mme_ue_id,
            enb_ue_id,
            ambr_dl: u64::from(sub.ambr_dl),
            ambr_ul: u64::from(sub.ambr_ul),
            erabs: vec![s1ap::ErabToSetup {
                erab_id: DEFAULT_EBI,
                qci: sub.qci,
                arp_priority: sub.arp_priority,
                sgw_addr: sgw.0,
                sgw_teid: sgw.1,
                nas,
                gbr: None,
            }],
            ue_sec_enc,
            ue_sec_int,
            kenb,
        },
    )))
}

/// The first octets of S1AP's encryption and integrity algorithm bit strings from the
/// UE network capability: NAS's octets have EEA0/EIA0 first, S1AP's start at 1.
pub(super) fn s1ap_security_capabilities(ue_net_cap: &[u8]) -> (u8, u8) {
    (
        ue_net_cap.first().copied().unwrap_or(0) << 1,
        ue_net_cap.get(1).copied().unwrap_or(0) << 1,
    )
}

/// Whether a PDU (decoded as `S1ap::Other`) is an ENB CONFIGURATION UPDATE request.
fn is_enb_configuration_update(bytes: &[u8]) -> bool {
    s1ap::asn::s1ap::S1AP_PDU::decode(bytes)
        .is_ok_and(|p| p.kind() == s1ap::asn::S1apPduKind::Initiating_ENBConfigurationUpdate)
}

/// One-line description of an S1AP message for logs (no NAS bytes).
fn short(m: &S1ap) -> String {
    let s = format!("{m:?}");
    match s.find(['(', '{']) {
        Some(i) => s[..i].trim().to_string(),
        None => s,
    }
}
