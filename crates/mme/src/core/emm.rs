//! EMM: the attach (authentication, security mode), the uplink NAS messages of a UE
//! and the detach, with the NAS security context that protects them (TS 24.301 §5).

use proto_diameter::s6a::EutranVector;
use proto_nas::{
    cause as emm, msg, Direction, Guti, Nas, NasSecurity, PdnConnectivity, SecurityHeader,
};
use proto_s1ap::{causes, Ecgi, S1ap, STmsi, Tai};
use proto_sctp::AssocId;
use tracing::{info, warn};

use super::context::{Ue, UeState, Vector};
use super::{Action, MmeCore};

impl MmeCore {
    /// The NAS message of an INITIAL UE MESSAGE: an attach, or a detach or service
    /// request from ECM-IDLE.
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
                    guti.and_then(|g| {
                        self.ues
                            .values()
                            .find(|u| u.guti == g)
                            .map(|u| u.imsi.clone())
                    })
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
                let found = guti.and_then(|g| self.ues.values().find(|u| u.guti == g));
                let Some(ue) = found.map(|u| u.mme_ue_id) else {
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
                    u.assoc = Some(assoc);
                    u.enb_ue_id = Some(enb_ue_id);
                }
                self.on_detach(ue, switch_off);
            }
            Nas::ServiceRequest { .. } => {
                self.on_service_request(assoc, enb_ue_id, nas, tai, ecgi, s_tmsi)
            }
            other => warn!(%assoc, enb_ue_id, "initial NAS message not handled: {other:?}"),
        }
    }

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
        let Some(imsi) = imsi else {
            info!(%assoc, enb_ue_id, "attach with an unknown GUTI: reject #9");
            self.reject_new(
                assoc,
                mme_ue_id,
                enb_ue_id,
                msg::attach_reject(emm::UE_IDENTITY_CANNOT_BE_DERIVED),
            );
            return;
        };
        // A UE attaching again replaces its old context (and its old session).
        let old: Vec<u32> = self
            .ues
            .values()
            .filter(|u| u.imsi == imsi)
            .map(|u| u.mme_ue_id)
            .collect();
        for o in old {
            info!(imsi, old = o, "re-attach replaces the previous UE context");
            if let Some(u) = self.ues.remove(&o) {
                self.release_stale_s1(&u, assoc, enb_ue_id);
            }
        }
        let m_tmsi = self.next_m_tmsi;
        self.next_m_tmsi = self.next_m_tmsi.wrapping_add(1) | 0xc000_0000;
        info!(imsi, mme_ue_id, enb_ue_id, "attach request");
        self.ues.insert(
            mme_ue_id,
            Ue {
                mme_ue_id,
                enb_ue_id: Some(enb_ue_id),
                assoc: Some(assoc),
                imsi: imsi.clone(),
                guti: Guti {
                    plmn: self.plmn,
                    mme_group_id: self.cfg.mme_group_id,
                    mme_code: self.cfg.mme_code,
                    m_tmsi,
                },
                state: UeState::WaitAuthInfo,
                ue_net_cap,
                pdn: pdn.unwrap_or_default(),
                tai,
                ecgi,
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
                dedicated: Vec::new(),
                paging: None,
            },
        );
        self.changed = true;
        self.actions.push(Action::Air {
            ue: mme_ue_id,
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

    /// Releases the S1 connection a UE context still has, unless it is the one
    /// (`assoc`, `enb_ue_id`) the UE now comes from.
    pub(super) fn release_stale_s1(&mut self, u: &Ue, assoc: AssocId, enb_ue_id: u32) {
        if let (Some(a), Some(e)) = (u.assoc, u.enb_ue_id) {
            if (a, e) != (assoc, enb_ue_id) {
                let cmd = S1ap::UeContextReleaseCommand {
                    mme_ue_id: u.mme_ue_id,
                    enb_ue_id: Some(e),
                    cause: causes::nas_normal_release(),
                };
                self.send(a, &cmd);
            }
        }
    }

    /// A reject (ATTACH or SERVICE REJECT) on an S1 connection that has no UE context,
    /// then its release.
    pub(super) fn reject_new(
        &mut self,
        assoc: AssocId,
        mme_ue_id: u32,
        enb_ue_id: u32,
        reject: proto_nas::Result<Vec<u8>>,
    ) {
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
    fn send_nas(&mut self, ue: u32, plain: proto_nas::Result<Vec<u8>>, sht: SecurityHeader) {
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
                    | Nas::DetachRequest { .. }
            )
        {
            warn!(ue, "dropping unprotected NAS message: {:?}", opened.nas);
            return;
        }
        match opened.nas {
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
                self.changed = true;
                self.actions.push(Action::Ulr { ue, imsi });
            }
            Nas::SecurityModeReject { cause } => {
                warn!(ue, cause, "UE rejected the security mode command");
                self.delete_session_and_release(ue);
            }
            Nas::AttachComplete { ebi } => {
                if u.state != UeState::WaitAttachComplete {
                    warn!(ue, state = ?u.state, "ATTACH COMPLETE out of sequence");
                }
                info!(ue, imsi = %u.imsi, ebi, ip = ?u.ue_ip, "attach complete");
                u.state = UeState::Attached;
                self.changed = true;
            }
            Nas::DetachRequest { switch_off, .. } => self.on_detach(ue, switch_off),
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
        self.send_nas(ue, req, SecurityHeader::Plain);
    }

    fn on_auth_response(&mut self, ue: u32, res: &[u8]) {
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
        self.send_nas(ue, smc, SecurityHeader::IntegrityNewContext);
    }

    fn on_auth_failure(&mut self, ue: u32, cause: u8, auts: Option<[u8; 14]>) {
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

    fn on_detach(&mut self, ue: u32, switch_off: bool) {
        info!(ue, switch_off, "detach request");
        if !switch_off {
            self.send_nas(ue, msg::detach_accept(), SecurityHeader::IntegrityCiphered);
        }
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.state = UeState::Detaching;
        self.changed = true;
        match u.sgw_s11_teid {
            Some(teid) => self.delete_session(ue, teid),
            None => self.detach_complete(ue),
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
