//! EMM: the attach (identification, authentication, security mode), GUTI
//! reallocation, the uplink NAS messages of a UE, and what a procedure's last timer
//! expiry does, with the NAS security context that protects them (TS 24.301 §5).

use std::time::Instant;

use proto_diameter::s6a::EutranVector;
use proto_nas::{
    cause as emm, msg, Direction, Guti, Nas, NasSecurity, PdnConnectivity, SecurityHeader,
};
use proto_s1ap::{causes, Ecgi, S1ap, STmsi, Tai};
use proto_sctp::AssocId;
use tracing::{info, warn};

use super::context::{EcmState, Ue, UeState, Vector};
use super::timers::EmmProcedure;
use super::{Action, MmeCore};

impl MmeCore {
    /// The NAS message of an INITIAL UE MESSAGE: an attach, or a detach, service
    /// request or tracking area update from ECM-IDLE.
    pub(super) fn on_initial_nas(
        &mut self,
        assoc: AssocId,
        enb_ue_id: u32,
        nas: &[u8],
        tai: Tai,
        ecgi: Ecgi,
        s_tmsi: Option<STmsi>,
    ) {
        let opened = match proto_nas::security::open(nas, None, Direction::Uplink) {
            Ok(o) => o,
            Err(e) => {
                warn!(%assoc, enb_ue_id, "dropping undecodable initial NAS message: {e}");
                return;
            }
        };
        match opened.nas {
            Nas::AttachRequest {
                imsi,
                guti,
                ue_network_capability,
                pdn,
                ..
            } => {
                let imsi = imsi.or_else(|| {
                    let ue = guti.and_then(|g| self.ue_by_guti(&g))?;
                    self.ues.get(&ue).map(|u| u.imsi.clone())
                });
                self.start_attach(
                    assoc,
                    enb_ue_id,
                    imsi,
                    ue_network_capability,
                    pdn,
                    tai,
                    ecgi,
                );
            }
            Nas::DetachRequest {
                guti, switch_off, ..
            } => {
                // A detach from ECM-IDLE: the UE is known by its GUTI, and its NAS
                // security context must verify the message.
                let Some((ue, g)) = guti.and_then(|g| Some((self.ue_by_guti(&g)?, g))) else {
                    warn!(%assoc, enb_ue_id, "detach from an unknown GUTI ignored");
                    return;
                };
                if let Some(u) = self.ues.get_mut(&ue) {
                    if let Some(sec) = u.sec.as_mut() {
                        if let Err(e) = sec.unprotect(nas, Direction::Uplink) {
                            warn!(ue, "idle-mode detach fails NAS integrity: {e}");
                            return;
                        }
                    }
                    u.confirm_guti(g.m_tmsi);
                }
                self.connect_from_idle(ue, assoc, enb_ue_id, tai, ecgi);
                self.on_detach(ue, switch_off);
            }
            Nas::ServiceRequest { .. } => {
                self.on_service_request(assoc, enb_ue_id, nas, tai, ecgi, s_tmsi)
            }
            Nas::TrackingAreaUpdateRequest { old_guti, .. } => {
                self.on_tau_from_idle(assoc, enb_ue_id, nas, tai, ecgi, old_guti)
            }
            other => warn!(%assoc, enb_ue_id, "initial NAS message not handled: {other:?}"),
        }
    }

    /// A new UE context for an ATTACH REQUEST; without an IMSI (a GUTI this MME did
    /// not allocate, or from before a restart) the UE is asked for it (TS 24.301
    /// §5.4.4, §5.5.1.2.3).
    #[allow(clippy::too_many_arguments)]
    fn start_attach(
        &mut self,
        assoc: AssocId,
        enb_ue_id: u32,
        imsi: Option<String>,
        ue_net_cap: Vec<u8>,
        pdn: Option<PdnConnectivity>,
        tai: Tai,
        ecgi: Ecgi,
    ) {
        let mme_ue_id = self.new_mme_ue_id();
        let guti = self.new_guti();
        info!(mme_ue_id, enb_ue_id, ?imsi, "attach request");
        self.ues.insert(
            mme_ue_id,
            Ue {
                mme_ue_id,
                enb_ue_id: Some(enb_ue_id),
                assoc: Some(assoc),
                imsi: String::new(),
                guti,
                new_guti: None,
                state: UeState::WaitIdentity,
                ue_net_cap,
                pdn: pdn.unwrap_or_default(),
                tai,
                ecgi,
                registered_tai: tai,
                vector: None,
                ksi: 0,
                sec: None,
                sub: None,
                // Our S11 TEID is the MME UE S1AP ID: unique per MME, never 0.
                mme_s11_teid: mme_ue_id,
                sgw_s11_teid: None,
                ue_ip: None,
                ue_ipv6: None,
                sgw_s1u: None,
                enb_s1u: None,
                bearer_active: false,
                remove_on_release: false,
                timers: Default::default(),
                pending_detach: None,
                release_after_tau: false,
                downlink_waiting: false,
                ho: Default::default(),
                dedicated: Vec::new(),
            },
        );
        self.changed = true;
        match imsi {
            Some(imsi) => self.attach_with_imsi(mme_ue_id, imsi),
            None => {
                info!(mme_ue_id, "attach with an unknown GUTI: identity request");
                self.send_supervised(
                    mme_ue_id,
                    EmmProcedure::Identification,
                    msg::identity_request(),
                    SecurityHeader::Plain,
                );
            }
        }
    }

    /// The attach goes on with the UE's IMSI: a context the IMSI had before (and its
    /// session) is replaced, and the HSS is asked for a vector.
    fn attach_with_imsi(&mut self, ue: u32, imsi: String) {
        let Some((assoc, enb_ue_id)) = self.ues.get(&ue).and_then(|u| u.assoc.zip(u.enb_ue_id))
        else {
            return;
        };
        let old: Vec<u32> = self
            .ues
            .values()
            .filter(|u| u.imsi == imsi && u.mme_ue_id != ue)
            .map(|u| u.mme_ue_id)
            .collect();
        for o in old {
            info!(imsi, old = o, "re-attach replaces the previous UE context");
            self.release_stale_s1(o, assoc, enb_ue_id);
            self.forget_ue(o);
        }
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.imsi = imsi.clone();
        u.state = UeState::WaitAuthInfo;
        self.changed = true;
        self.actions.push(Action::Air {
            ue,
            imsi,
            resync: None,
        });
    }

    /// A fresh MME UE S1AP ID (never 0: it is also our S11 TEID).
    pub(super) fn new_mme_ue_id(&mut self) -> u32 {
        let id = self.next_mme_ue_id;
        self.next_mme_ue_id = self.next_mme_ue_id.wrapping_add(1).max(1);
        id
    }

    /// A GUTI with a fresh M-TMSI. M-TMSIs are never handed out twice in a run, so a
    /// GUTI of an aborted procedure cannot come to name another UE.
    pub(super) fn new_guti(&mut self) -> Guti {
        let m_tmsi = self.next_m_tmsi;
        self.next_m_tmsi = self.next_m_tmsi.wrapping_add(1) | 0xc000_0000;
        Guti {
            plmn: self.plmn,
            mme_group_id: self.cfg.mme_group_id,
            mme_code: self.cfg.mme_code,
            m_tmsi,
        }
    }

    /// Releases the S1 connection UE context `ue` still has, unless it is the one
    /// (`assoc`, `enb_ue_id`) the UE now comes from.
    pub(super) fn release_stale_s1(&mut self, ue: u32, assoc: AssocId, enb_ue_id: u32) {
        let Some((a, e)) = self.ues.get(&ue).and_then(|u| u.assoc.zip(u.enb_ue_id)) else {
            return;
        };
        if (a, e) != (assoc, enb_ue_id) {
            let cmd = S1ap::UeContextReleaseCommand {
                mme_ue_id: ue,
                enb_ue_id: Some(e),
                cause: causes::nas_normal_release(),
            };
            self.send(a, &cmd);
        }
    }

    /// A reject (ATTACH, SERVICE or TRACKING AREA UPDATE REJECT) on an S1 connection
    /// that has no UE context, then its release.
    pub(super) fn reject_new(
        &mut self,
        assoc: AssocId,
        enb_ue_id: u32,
        reject: proto_nas::Result<Vec<u8>>,
    ) {
        let mme_ue_id = self.new_mme_ue_id();
        if let Ok(nas) = reject {
            self.send(
                assoc,
                &S1ap::DownlinkNasTransport {
                    mme_ue_id,
                    enb_ue_id,
                    nas,
                },
            );
        }
        self.send(
            assoc,
            &S1ap::UeContextReleaseCommand {
                mme_ue_id,
                enb_ue_id: Some(enb_ue_id),
                cause: causes::nas_normal_release(),
            },
        );
    }

    /// Sends a NAS message to the UE, protected with `sht` once a security context is
    /// in use (see [`protect`]).
    pub(super) fn send_nas(
        &mut self,
        ue: u32,
        plain: proto_nas::Result<Vec<u8>>,
        sht: SecurityHeader,
    ) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let (Some(assoc), Some(enb_ue_id)) = (u.assoc, u.enb_ue_id) else {
            warn!(ue, "no S1 connection to send NAS on");
            return;
        };
        match protect(u.sec.as_mut(), plain, sht) {
            Ok(nas) => self.send(
                assoc,
                &S1ap::DownlinkNasTransport {
                    mme_ue_id: ue,
                    enb_ue_id,
                    nas,
                },
            ),
            Err(e) => warn!(ue, "cannot build NAS message: {e}"),
        }
    }

    /// Attach fails after the context exists: ATTACH REJECT, release, forget the UE.
    pub(super) fn reject(&mut self, ue: u32, cause: u8) {
        info!(ue, cause, "attach reject");
        self.send_nas(
            ue,
            msg::attach_reject(cause),
            SecurityHeader::IntegrityCiphered,
        );
        self.delete_session_and_release(ue);
    }

    pub(super) fn on_uplink_nas(&mut self, ue: u32, nas: &[u8]) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let opened = match proto_nas::security::open(nas, u.sec.as_mut(), Direction::Uplink) {
            Ok(o) => o,
            Err(e) => {
                // TS 24.301 §4.4.4.3: a message failing the integrity check is discarded.
                warn!(ue, imsi = %u.imsi, "dropping uplink NAS message: {e}");
                return;
            }
        };
        // Once security is active, only protected messages are taken, except those
        // TS 24.301 §4.4.4.3 lists as allowed plain (authentication failure etc.).
        if u.sec.is_some()
            && !opened.verified
            && u.state != UeState::WaitSecurityModeComplete
            && !matches!(
                opened.nas,
                Nas::AuthenticationResponse { .. }
                    | Nas::AuthenticationFailure { .. }
                    | Nas::SecurityModeReject { .. }
                    | Nas::IdentityResponse { .. }
                    | Nas::DetachRequest { .. }
            )
        {
            warn!(ue, "dropping unprotected NAS message: {:?}", opened.nas);
            return;
        }
        match opened.nas {
            Nas::IdentityResponse { imsi: Some(imsi) } if u.state == UeState::WaitIdentity => {
                if self.complete(ue, EmmProcedure::Identification) {
                    info!(ue, imsi, "identity response");
                    self.attach_with_imsi(ue, imsi);
                }
            }
            Nas::AuthenticationResponse { res } => self.on_auth_response(ue, &res),
            Nas::AuthenticationFailure { cause, auts } => self.on_auth_failure(ue, cause, auts),
            Nas::SecurityModeComplete if u.state == UeState::WaitSecurityModeComplete => {
                if !opened.verified {
                    warn!(
                        ue,
                        "SECURITY MODE COMPLETE not integrity protected: dropped"
                    );
                    return;
                }
                info!(ue, imsi = %u.imsi, eea = ?u.sec.as_ref().map(|s| s.eea), "NAS security active");
                u.state = UeState::WaitUpdateLocation;
                let imsi = u.imsi.clone();
                self.complete(ue, EmmProcedure::SecurityModeControl);
                self.actions.push(Action::Ulr { ue, imsi });
            }
            Nas::SecurityModeReject { cause } => {
                warn!(ue, cause, "UE rejected the security mode command");
                self.complete(ue, EmmProcedure::SecurityModeControl);
                self.delete_session_and_release(ue);
            }
            Nas::AttachComplete { ebi } => {
                if u.state != UeState::WaitAttachComplete {
                    warn!(ue, state = ?u.state, "ATTACH COMPLETE out of sequence");
                }
                info!(ue, imsi = %u.imsi, ebi, ip = ?u.ue_ip, "attach complete");
                u.state = UeState::Attached;
                self.complete(ue, EmmProcedure::Attach);
                self.changed = true;
            }
            Nas::TrackingAreaUpdateRequest {
                update_type,
                active,
                old_guti,
                bearers,
                ..
            } => self.on_tau(
                ue,
                update_type,
                active,
                old_guti,
                bearers,
                opened.count,
                false,
            ),
            Nas::TrackingAreaUpdateComplete => self.on_tau_complete(ue),
            Nas::GutiReallocationComplete => {
                if self.complete(ue, EmmProcedure::GutiReallocation) {
                    self.guti_confirmed(ue);
                } else {
                    warn!(ue, "GUTI REALLOCATION COMPLETE out of sequence");
                }
            }
            Nas::DetachRequest { switch_off, .. } => self.on_detach(ue, switch_off),
            Nas::DetachAccept => self.on_detach_accept(ue),
            Nas::ActivateDedicatedBearerAccept { ebi } => self.on_dedicated_bearer_accept(ue, ebi),
            other => warn!(ue, state = ?u.state, "uplink NAS message not handled: {other:?}"),
        }
    }

    /// AUTHENTICATION REQUEST with a fresh vector from the HSS; the new KASME gets a
    /// new eKSI and the old security context is dropped.
    pub(super) fn authenticate(&mut self, ue: u32, v: EutranVector) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        // eKSI: a new value for each new KASME (TS 24.301 §9.9.3.21), 0..=6.
        u.ksi = if u.vector.is_some() {
            (u.ksi + 1) % 7
        } else {
            0
        };
        u.vector = Some(Vector {
            rand: v.rand,
            xres: v.xres,
            kasme: v.kasme,
        });
        u.sec = None;
        u.state = UeState::WaitAuthResponse;
        let req = msg::authentication_request(u.ksi, &v.rand, &v.autn);
        self.changed = true;
        self.send_supervised(ue, EmmProcedure::Authentication, req, SecurityHeader::Plain);
    }

    fn on_auth_response(&mut self, ue: u32, res: &[u8]) {
        if !self.complete(ue, EmmProcedure::Authentication) {
            warn!(ue, "AUTHENTICATION RESPONSE out of sequence");
            return;
        }
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let (Some(v), UeState::WaitAuthResponse) = (&u.vector, u.state) else {
            warn!(ue, state = ?u.state, "AUTHENTICATION RESPONSE out of sequence");
            return;
        };
        if v.xres != res {
            info!(ue, imsi = %u.imsi, "RES does not match XRES: authentication reject");
            self.send_nas(ue, msg::authentication_reject(), SecurityHeader::Plain);
            return self.release(ue, causes::nas_authentication_failure(), true);
        }
        let caps = &u.ue_net_cap;
        let eea = select_alg(caps.first().copied().unwrap_or(0x80), &[2, 1, 3, 0]).unwrap_or(0);
        let eia = select_alg(caps.get(1).copied().unwrap_or(0), &[2, 1, 3]);
        let Some(eia) = eia else {
            warn!(ue, "UE supports no integrity algorithm we use");
            return self.reject(ue, emm::NON_EPS_AUTH_UNACCEPTABLE);
        };
        match NasSecurity::new(v.kasme, u.ksi, eea, eia) {
            Ok(sec) => u.sec = Some(sec),
            Err(e) => {
                warn!(ue, "cannot create NAS security context: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        }
        u.state = UeState::WaitSecurityModeComplete;
        let smc = msg::security_mode_command(u.ksi, eea, eia, &u.ue_net_cap);
        self.changed = true;
        // SMC: integrity protected with the new context, not ciphered (TS 33.401 §7.2.4.4).
        self.send_supervised(
            ue,
            EmmProcedure::SecurityModeControl,
            smc,
            SecurityHeader::IntegrityNewContext,
        );
    }

    fn on_auth_failure(&mut self, ue: u32, cause: u8, auts: Option<[u8; 14]>) {
        if !self.complete(ue, EmmProcedure::Authentication) {
            warn!(ue, cause, "AUTHENTICATION FAILURE out of sequence");
            return;
        }
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        match (cause, auts, &u.vector) {
            (emm::SYNCH_FAILURE, Some(auts), Some(v)) if u.state == UeState::WaitAuthResponse => {
                // Resynchronise the SQN with the HSS: AIR with RAND || AUTS.
                info!(ue, imsi = %u.imsi, "synch failure: resynchronising with the HSS");
                let mut resync = [0u8; 30];
                resync[..16].copy_from_slice(&v.rand);
                resync[16..].copy_from_slice(&auts);
                u.state = UeState::WaitAuthInfo;
                let imsi = u.imsi.clone();
                self.actions.push(Action::Air {
                    ue,
                    imsi,
                    resync: Some(resync),
                });
            }
            _ => {
                info!(ue, imsi = %u.imsi, cause, "authentication failure from UE");
                self.send_nas(ue, msg::authentication_reject(), SecurityHeader::Plain);
                self.release(ue, causes::nas_authentication_failure(), true);
            }
        }
    }

    /// GUTI REALLOCATION COMMAND (TS 24.301 §5.4.1) to a connected, attached UE, under
    /// T3450. Until the UE completes, both its GUTIs identify it.
    pub fn reallocate_guti(&mut self, mme_ue_id: u32, now: Instant) -> anyhow::Result<()> {
        self.now = now;
        let Some(u) = self.ues.get(&mme_ue_id) else {
            anyhow::bail!("no UE context with MME UE S1AP ID {mme_ue_id}");
        };
        if u.state != UeState::Attached || u.ecm_state() != EcmState::Connected {
            anyhow::bail!(
                "UE {mme_ue_id} is {:?}, {:?}: GUTI reallocation needs an attached, connected UE",
                u.state,
                u.ecm_state()
            );
        }
        if let Some(r) = &u.timers.nas {
            anyhow::bail!("UE {mme_ue_id} is busy with {:?}", r.procedure);
        }
        let guti = self.new_guti();
        let cmd = msg::guti_reallocation_command(&guti, self.plmn, &self.cfg.tacs);
        if let Some(u) = self.ues.get_mut(&mme_ue_id) {
            info!(ue = mme_ue_id, imsi = %u.imsi, m_tmsi = guti.m_tmsi, "GUTI reallocation");
            u.new_guti = Some(guti);
        }
        self.send_supervised(
            mme_ue_id,
            EmmProcedure::GutiReallocation,
            cmd,
            SecurityHeader::IntegrityCiphered,
        );
        Ok(())
    }

    /// The UE completed a procedure that gave it a new GUTI: that one is now current.
    pub(super) fn guti_confirmed(&mut self, ue: u32) {
        if let Some(u) = self.ues.get_mut(&ue) {
            if let Some(g) = u.new_guti {
                u.confirm_guti(g.m_tmsi);
                self.changed = true;
            }
        }
    }

    /// A procedure's fifth timer expiry, as TS 24.301 says for each.
    pub(super) fn abort(&mut self, ue: u32, procedure: EmmProcedure) {
        match procedure {
            // §5.4.4.6, §5.4.2.7, §5.4.3.7: the attach is aborted and the NAS signalling
            // connection released; there is no session yet.
            EmmProcedure::Identification
            | EmmProcedure::Authentication
            | EmmProcedure::SecurityModeControl => {
                self.release(ue, causes::nas_normal_release(), true)
            }
            // §5.5.1.2.7 c: the attach is aborted, the MME enters EMM-DEREGISTERED.
            EmmProcedure::Attach => self.delete_session_and_release(ue),
            // §5.5.3.2.7 c, §5.4.1.4 c: aborted; the old and the new GUTI stay valid
            // until the UE uses one of them. A UE that came from idle for the update
            // goes back.
            EmmProcedure::TrackingAreaUpdate => self.end_tau(ue),
            EmmProcedure::GutiReallocation => {}
            // §5.5.2.3.4 c: the detach is aborted and the UE is EMM-DEREGISTERED:
            // locally, the session and the context go.
            EmmProcedure::Detach => self.deregister(ue),
        }
    }

    /// The S1 connection went away during a procedure (TS 24.301 "lower layer
    /// failure"): the procedure is over; a network detach is then done locally.
    pub(super) fn lower_layer_failure(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.release_after_tau = false;
        if let Some(r) = u.timers.nas.take() {
            info!(ue, procedure = ?r.procedure, "S1 connection lost during the procedure");
            self.changed = true;
            if r.procedure == EmmProcedure::Detach {
                self.deregister(ue);
            }
        }
    }
}

/// Picks the first of `preferred` algorithms whose bit the UE sets in `octet`
/// (UE network capability: bit 8 = algorithm 0, bit 7 = algorithm 1, ...).
fn select_alg(octet: u8, preferred: &[u8]) -> Option<u8> {
    preferred.iter().copied().find(|a| octet & (0x80 >> a) != 0)
}

/// A downlink NAS message as it goes out: protected with `sht` when the UE has a
/// security context, plain before it has one (an early ATTACH REJECT, a detach
/// without authentication) or when `sht` is `Plain`.
pub(super) fn protect(
    sec: Option<&mut NasSecurity>,
    plain: proto_nas::Result<Vec<u8>>,
    sht: SecurityHeader,
) -> proto_nas::Result<Vec<u8>> {
    plain.and_then(|p| match (sec, sht) {
        (Some(sec), sht) if sht != SecurityHeader::Plain => {
            sec.protect(&p, sht, Direction::Downlink)
        }
        _ => Ok(p),
    })
}
