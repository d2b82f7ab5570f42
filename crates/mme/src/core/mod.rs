//! The MME's logic without I/O: eNBs (S1 Setup), UE contexts and the attach /
//! detach state machine across S1AP, NAS, S6a and S11.
//!
//! Inputs are S1AP PDUs and the answers of the HSS and SPGW; outputs are [`Action`]s
//! the I/O shell executes. Everything (NAS security contexts with their COUNTs,
//! TEIDs, ids) lives in this struct, i.e. in process memory, so a CRIU checkpoint of
//! the MME carries it. A bad PDU or NAS message is logged and dropped; it never
//! touches other UEs.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use proto_diameter::base::ResultCode;
use proto_diameter::codes::DIAMETER_ERROR_USER_UNKNOWN;
use proto_diameter::s6a::{AuthInfoAnswer, SubscriptionData, UpdateLocationAnswer};
use proto_gtpv2c::{self as gtp, BearerContext, BearerQos, Fteid, Paa};
use proto_nas::{
    cause as emm, msg, Direction, Guti, Nas, NasSecurity, PdnConnectivity, SecurityHeader,
};
use proto_s1ap::{self as s1ap, causes, Ecgi, S1ap, Tai};
use proto_sctp::AssocId;
use tracing::{debug, info, warn};

use crate::Config;

mod context;

use context::{Enb, Subscription, Ue, Vector};
pub use context::{EnbView, UeState, UeView};

/// EPS bearer id of the default bearer.
const DEFAULT_EBI: u8 = 5;

/// What the I/O shell must do. Actions live for one loop turn, so the size of the
/// S11 variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    S1ap {
        assoc: AssocId,
        stream: u16,
        pdu: Vec<u8>,
    },
    /// S6a Authentication-Information-Request for `ue` (the MME UE S1AP ID).
    Air {
        ue: u32,
        imsi: String,
        resync: Option<[u8; 30]>,
    },
    /// S6a Update-Location-Request.
    Ulr { ue: u32, imsi: String },
    /// S11 request to the SPGW, to the SGW's control TEID `teid` (0 for a new session).
    S11 {
        ue: u32,
        teid: u32,
        msg: gtp::Message,
    },
}

pub struct MmeCore {
    plmn: [u8; 3],
    cfg: Config,
    enbs: BTreeMap<AssocId, Enb>,
    ues: BTreeMap<u32, Ue>,
    next_mme_ue_id: u32,
    next_m_tmsi: u32,
    actions: Vec<Action>,
    changed: bool,
}

/// Picks the first of `preferred` algorithms whose bit the UE sets in `octet`
/// (UE network capability: bit 8 = algorithm 0, bit 7 = algorithm 1, ...).
fn select_alg(octet: u8, preferred: &[u8]) -> Option<u8> {
    preferred.iter().copied().find(|a| octet & (0x80 >> a) != 0)
}

impl MmeCore {
    pub fn new(cfg: Config) -> anyhow::Result<MmeCore> {
        cfg.validate()?;
        Ok(MmeCore {
            plmn: cfg.plmn()?,
            cfg,
            enbs: BTreeMap::new(),
            ues: BTreeMap::new(),
            next_mme_ue_id: 1,
            next_m_tmsi: 0xc000_0001,
            actions: Vec::new(),
            changed: false,
        })
    }

    /// Actions produced since the last call.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Whether UE state changed since the last call (the JSON dump must be rewritten).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    // ---- S1AP side -------------------------------------------------------------

    pub fn on_sctp_up(&mut self, assoc: AssocId, peer: SocketAddr) {
        self.enbs.insert(
            assoc,
            Enb {
                peer,
                enb_id: None,
                name: None,
            },
        );
    }

    /// The association is gone: its UEs lose their S1 connection (ECM-IDLE).
    pub fn on_sctp_down(&mut self, assoc: AssocId) {
        self.enbs.remove(&assoc);
        for ue in self.ues.values_mut().filter(|u| u.assoc == Some(assoc)) {
            ue.assoc = None;
            ue.enb_ue_id = None;
            if ue.state == UeState::Attached {
                ue.state = UeState::Idle;
            }
            self.changed = true;
        }
    }

    fn send(&mut self, assoc: AssocId, m: &S1ap) {
        match s1ap::encode(m) {
            Ok(pdu) => self.actions.push(Action::S1ap {
                assoc,
                stream: m.stream(),
                pdu,
            }),
            Err(e) => warn!(%assoc, "cannot encode S1AP {m:?}: {e}"),
        }
    }

    pub fn on_s1ap(&mut self, assoc: AssocId, bytes: &[u8]) {
        // An association we have not seen come up (e.g. after a restart): track it.
        self.enbs.entry(assoc).or_insert_with(|| Enb {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            enb_id: None,
            name: None,
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
            } => self.on_initial_ue(assoc, enb_ue_id, &nas, tai, ecgi),
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
            S1ap::InitialContextSetupFailure {
                mme_ue_id,
                enb_ue_id,
                cause,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    warn!(ue, ?cause, "initial context setup failed");
                    self.delete_session_and_release(ue);
                }
            }
            S1ap::UeContextReleaseRequest {
                mme_ue_id,
                enb_ue_id,
                cause,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    info!(ue, ?cause, "eNB requests UE context release");
                    self.release(ue, cause, false);
                }
            }
            S1ap::UeContextReleaseComplete {
                mme_ue_id,
                enb_ue_id,
            } => {
                if let Some(ue) = self.ue_for(assoc, mme_ue_id, enb_ue_id) {
                    self.on_release_complete(ue);
                }
            }
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
    fn ue_for(&mut self, assoc: AssocId, mme_ue_id: u32, enb_ue_id: u32) -> Option<u32> {
        match self.ues.get(&mme_ue_id) {
            Some(u) if u.assoc == Some(assoc) && u.enb_ue_id == Some(enb_ue_id) => Some(mme_ue_id),
            found => {
                warn!(%assoc, mme_ue_id, enb_ue_id, known = found.is_some(), "unknown UE S1AP ID pair");
                let cause = if found.is_some() {
                    causes::unknown_pair()
                } else {
                    causes::unknown_mme_ue_id()
                };
                self.send(
                    assoc,
                    &S1ap::ErrorIndication {
                        mme_ue_id: Some(mme_ue_id),
                        enb_ue_id: Some(enb_ue_id),
                        cause: Some(cause),
                    },
                );
                None
            }
        }
    }

    fn on_initial_ue(&mut self, assoc: AssocId, enb_ue_id: u32, nas: &[u8], tai: Tai, ecgi: Ecgi) {
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
        let mme_ue_id = self.next_mme_ue_id;
        self.next_mme_ue_id = self.next_mme_ue_id.wrapping_add(1).max(1);
        let Some(imsi) = imsi else {
            info!(%assoc, enb_ue_id, "attach with an unknown GUTI: reject #9");
            self.reject_new(
                assoc,
                mme_ue_id,
                enb_ue_id,
                emm::UE_IDENTITY_CANNOT_BE_DERIVED,
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
                if let (Some(a), Some(e)) = (u.assoc, u.enb_ue_id) {
                    if u.assoc != Some(assoc) || u.enb_ue_id != Some(enb_ue_id) {
                        self.send(
                            a,
                            &S1ap::UeContextReleaseCommand {
                                mme_ue_id: o,
                                enb_ue_id: Some(e),
                                cause: causes::nas_normal_release(),
                            },
                        );
                    }
                }
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
                sgw_s1u: None,
                enb_s1u: None,
                bearer_active: false,
                remove_on_release: false,
            },
        );
        self.changed = true;
        self.actions.push(Action::Air {
            ue: mme_ue_id,
            imsi,
            resync: None,
        });
    }

    /// ATTACH REJECT for a UE that has no context yet, then release its S1 connection.
    fn reject_new(&mut self, assoc: AssocId, mme_ue_id: u32, enb_ue_id: u32, cause: u8) {
        if let Ok(nas) = msg::attach_reject(cause) {
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

    /// Sends a NAS message to the UE, protected (integrity + ciphering) once a
    /// security context is in use.
    fn send_nas(&mut self, ue: u32, plain: proto_nas::Result<Vec<u8>>, sht: SecurityHeader) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let (Some(assoc), Some(enb_ue_id)) = (u.assoc, u.enb_ue_id) else {
            warn!(ue, "no S1 connection to send NAS on");
            return;
        };
        let pdu = plain.and_then(|p| match (&mut u.sec, sht) {
            (_, SecurityHeader::Plain) => Ok(p),
            (Some(sec), sht) => sec.protect(&p, sht, Direction::Downlink),
            (None, _) => Ok(p),
        });
        match pdu {
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
    fn reject(&mut self, ue: u32, cause: u8) {
        info!(ue, cause, "attach reject");
        let sht = if self.ues.get(&ue).is_some_and(|u| u.sec.is_some()) {
            SecurityHeader::IntegrityCiphered
        } else {
            SecurityHeader::Plain
        };
        self.send_nas(ue, msg::attach_reject(cause), sht);
        self.delete_session_and_release(ue);
    }

    fn on_uplink_nas(&mut self, ue: u32, nas: &[u8]) {
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
            other => warn!(ue, state = ?u.state, "uplink NAS message not handled: {other:?}"),
        }
    }

    // ---- Authentication and security ---------------------------------------------

    pub fn on_aia(&mut self, ue: u32, aia: Result<AuthInfoAnswer, String>) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if u.state != UeState::WaitAuthInfo {
            warn!(ue, state = ?u.state, "AIA out of sequence ignored");
            return;
        }
        let aia = match aia {
            Ok(a) => a,
            Err(e) => {
                warn!(ue, imsi = %u.imsi, "S6a AIR failed: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        };
        if aia.result != ResultCode::SUCCESS {
            let cause = s6a_reject_cause(aia.result);
            info!(ue, imsi = %u.imsi, result = ?aia.result, cause, "HSS refused authentication info");
            return self.reject(ue, cause);
        }
        let Some(v) = aia.vectors.into_iter().next() else {
            warn!(ue, "AIA without vectors");
            return self.reject(ue, emm::NETWORK_FAILURE);
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

    // ---- Location update and session ------------------------------------------

    pub fn on_ula(&mut self, ue: u32, ula: Result<UpdateLocationAnswer, String>) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if u.state != UeState::WaitUpdateLocation {
            warn!(ue, state = ?u.state, "ULA out of sequence ignored");
            return;
        }
        let ula = match ula {
            Ok(a) => a,
            Err(e) => {
                warn!(ue, "S6a ULR failed: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        };
        if ula.result != ResultCode::SUCCESS {
            let cause = s6a_reject_cause(ula.result);
            return self.reject(ue, cause);
        }
        let sub = subscription(
            ula.subscription.as_ref(),
            u.pdn.apn.as_deref(),
            &self.cfg.default_apn,
        );
        let (tai, ecgi) = (u.tai, u.ecgi);
        let plmn = gtp_plmn(&self.cfg);
        let csr = gtp::CreateSessionRequest {
            imsi: u.imsi.clone(),
            msisdn: sub.msisdn.clone(),
            uli: Some(gtp::Uli {
                tai: Some(gtp::Tai { plmn, tac: tai.tac }),
                ecgi: Some(gtp::Ecgi {
                    plmn,
                    eci: ecgi.cell_id,
                }),
            }),
            serving_network: Some(plmn),
            rat_type: gtp::rat_type::EUTRAN,
            sender_fteid: Fteid::v4(gtp::iface::S11_MME, u.mme_s11_teid, self.cfg.s11_address),
            pgw_s5s8_fteid: match self.cfg.spgw_s11.ip() {
                std::net::IpAddr::V4(a) => Some(Fteid::v4(gtp::iface::S5S8_PGW_GTPC, 0, a)),
                std::net::IpAddr::V6(_) => None,
            },
            apn: sub.apn.clone(),
            selection_mode: Some(0),
            pdn_type: Some(gtp::pdn_type::IPV4),
            paa: Some(Paa::Ipv4(Ipv4Addr::UNSPECIFIED)),
            apn_restriction: Some(0),
            ambr: Some(gtp::Ambr {
                uplink_kbps: sub.ambr_ul / 1000,
                downlink_kbps: sub.ambr_dl / 1000,
            }),
            pco: None,
            bearer_contexts: vec![BearerContext {
                ebi: DEFAULT_EBI,
                qos: Some(BearerQos {
                    qci: sub.qci,
                    priority_level: sub.arp_priority,
                    ..BearerQos::default_bearer()
                }),
                ..Default::default()
            }],
            recovery: None,
            ..Default::default()
        };
        u.sub = Some(sub);
        u.state = UeState::WaitCreateSession;
        self.changed = true;
        self.actions.push(Action::S11 {
            ue,
            teid: 0,
            msg: gtp::Message::CreateSessionRequest(csr),
        });
    }

    /// The SPGW's answer to a request sent for `ue` (or the error if none came).
    pub fn on_s11(&mut self, ue: u32, resp: Result<gtp::Message, String>) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let m = match resp {
            Ok(m) => m,
            Err(e) => {
                warn!(ue, state = ?u.state, "S11 request failed: {e}");
                return match u.state {
                    UeState::WaitCreateSession => self.reject(ue, emm::NETWORK_FAILURE),
                    UeState::Detaching => self.release(ue, causes::nas_detach(), true),
                    _ => {}
                };
            }
        };
        match m {
            gtp::Message::CreateSessionResponse(r) if u.state == UeState::WaitCreateSession => {
                let s1u = r.bearer_contexts.first().and_then(|b| b.fteid(0)).copied();
                let ip = r.paa.as_ref().and_then(|p| p.ipv4());
                let (true, Some(sgw), Some(ip), Some(s1u)) = (
                    gtp::cause::is_accepted(r.cause),
                    r.sender_fteid,
                    ip,
                    s1u.and_then(|f| f.ipv4.map(|a| (a, f.teid))),
                ) else {
                    warn!(ue, cause = r.cause, "Create Session refused or incomplete");
                    return self.reject(ue, emm::NETWORK_FAILURE);
                };
                u.sgw_s11_teid = Some(sgw.teid);
                u.ue_ip = Some(ip);
                u.sgw_s1u = Some(s1u);
                info!(ue, imsi = %u.imsi, %ip, sgw_s1u_teid = s1u.1, "session created");
                self.send_context_setup(ue);
            }
            gtp::Message::ModifyBearerResponse(r) => {
                if gtp::cause::is_accepted(r.cause) {
                    u.bearer_active = true;
                    debug!(ue, "bearer modified: S1-U active");
                } else {
                    warn!(ue, cause = r.cause, "Modify Bearer refused");
                }
                self.changed = true;
            }
            gtp::Message::DeleteSessionResponse(r) => {
                debug!(ue, cause = r.cause, "session deleted");
                u.sgw_s11_teid = None;
                u.bearer_active = false;
                if u.state == UeState::Detaching {
                    self.release(ue, causes::nas_detach(), true);
                }
                self.changed = true;
            }
            other => warn!(ue, state = ?u.state, "unexpected S11 message {}", other.name()),
        }
    }

    fn send_context_setup(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let (Some(sub), Some(ip), Some(sgw), Some(sec)) = (&u.sub, u.ue_ip, u.sgw_s1u, &u.sec)
        else {
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
            ue_ipv4: ip.octets(),
        });
        // KeNB from the uplink NAS COUNT of the last message received (the SECURITY
        // MODE COMPLETE), TS 33.401 §7.2.6.1 / A.3; the UE derives the same.
        let ul = sec.count(Direction::Uplink).unwrap_or(1).saturating_sub(1);
        let kenb = sec.kenb(ul);
        let caps = &u.ue_net_cap;
        // NAS capability octets have EEA0/EIA0 first; S1AP's bit strings start at 1.
        let (enc, int) = (
            caps.first().copied().unwrap_or(0) << 1,
            caps.get(1).copied().unwrap_or(0) << 1,
        );
        let (ambr_dl, ambr_ul, qci, arp) = (
            u64::from(sub.ambr_dl),
            u64::from(sub.ambr_ul),
            sub.qci,
            sub.arp_priority,
        );
        let (Some(assoc), Some(enb_ue_id)) = (u.assoc, u.enb_ue_id) else {
            return;
        };
        let nas = match accept.and_then(|p| {
            u.sec
                .as_mut()
                .map(|s| s.protect(&p, SecurityHeader::IntegrityCiphered, Direction::Downlink))
                .unwrap_or(Ok(p))
        }) {
            Ok(n) => n,
            Err(e) => {
                warn!(ue, "cannot build ATTACH ACCEPT: {e}");
                return self.reject(ue, emm::NETWORK_FAILURE);
            }
        };
        u.state = UeState::WaitContextSetup;
        self.changed = true;
        let ics = S1ap::InitialContextSetupRequest(Box::new(s1ap::InitialContextSetupRequest {
            mme_ue_id: ue,
            enb_ue_id,
            ambr_dl,
            ambr_ul,
            erabs: vec![s1ap::ErabToSetup {
                erab_id: DEFAULT_EBI,
                qci,
                arp_priority: arp,
                sgw_addr: sgw.0,
                sgw_teid: sgw.1,
                nas: Some(nas),
            }],
            ue_sec_enc: enc,
            ue_sec_int: int,
            kenb,
        }));
        self.send(assoc, &ics);
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
        if u.state == UeState::WaitContextSetup {
            u.state = UeState::WaitAttachComplete;
        }
        self.changed = true;
        let Some(sgw_teid) = u.sgw_s11_teid else {
            return;
        };
        let mbr = gtp::ModifyBearerRequest {
            bearer_contexts: vec![BearerContext {
                ebi: DEFAULT_EBI,
                fteids: vec![(0, Fteid::v4(gtp::iface::S1U_ENODEB, e.enb_teid, e.enb_addr))],
                ..Default::default()
            }],
            ..Default::default()
        };
        self.actions.push(Action::S11 {
            ue,
            teid: sgw_teid,
            msg: gtp::Message::ModifyBearerRequest(mbr),
        });
    }

    // ---- Detach and release ------------------------------------------------------

    fn on_detach(&mut self, ue: u32, switch_off: bool) {
        info!(ue, switch_off, "detach request");
        if !switch_off {
            let sht = if self.ues.get(&ue).is_some_and(|u| u.sec.is_some()) {
                SecurityHeader::IntegrityCiphered
            } else {
                SecurityHeader::Plain
            };
            self.send_nas(ue, msg::detach_accept(), sht);
        }
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.state = UeState::Detaching;
        self.changed = true;
        match u.sgw_s11_teid {
            Some(teid) => self.actions.push(Action::S11 {
                ue,
                teid,
                msg: gtp::Message::DeleteSessionRequest(gtp::DeleteSessionRequest {
                    linked_ebi: Some(DEFAULT_EBI),
                    ..Default::default()
                }),
            }),
            None => self.release(ue, causes::nas_detach(), true),
        }
    }

    /// Deletes the S11 session (if any) and releases the UE for good.
    fn delete_session_and_release(&mut self, ue: u32) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        if let Some(teid) = u.sgw_s11_teid.take() {
            self.actions.push(Action::S11 {
                ue,
                teid,
                msg: gtp::Message::DeleteSessionRequest(gtp::DeleteSessionRequest {
                    linked_ebi: Some(DEFAULT_EBI),
                    ..Default::default()
                }),
            });
        }
        self.release(ue, causes::nas_normal_release(), true);
    }

    /// UE CONTEXT RELEASE COMMAND; with `remove` the context goes once the eNB
    /// completes (or at once when there is no S1 connection).
    fn release(&mut self, ue: u32, cause: s1ap::Cause, remove: bool) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        u.remove_on_release |= remove;
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
            info!(ue, imsi = %u.imsi, "UE context removed");
            self.ues.remove(&ue);
        } else {
            u.assoc = None;
            u.enb_ue_id = None;
            u.state = UeState::Idle;
        }
    }
}

/// EMM cause for an S6a failure (TS 29.272 Annex A, Table A.1): unknown user → #8.
fn s6a_reject_cause(rc: ResultCode) -> u8 {
    match rc {
        ResultCode::Experimental { code, .. } if code == DIAMETER_ERROR_USER_UNKNOWN => {
            emm::EPS_AND_NON_EPS_NOT_ALLOWED
        }
        ResultCode::Experimental { code: 5420, .. } => emm::NO_SUITABLE_CELLS,
        _ => emm::NETWORK_FAILURE,
    }
}

/// The APN and QoS to use: the UE's APN if subscribed, else the default context.
fn subscription(
    sd: Option<&SubscriptionData>,
    requested: Option<&str>,
    default_apn: &str,
) -> Subscription {
    let chosen = sd.and_then(|sd| {
        requested
            .and_then(|r| sd.apns.iter().find(|a| a.apn.eq_ignore_ascii_case(r)))
            .or_else(|| {
                sd.apns
                    .iter()
                    .find(|a| a.context_identifier == sd.default_context_identifier)
            })
            .or(sd.apns.first())
    });
    Subscription {
        msisdn: sd.and_then(|s| s.msisdn.clone()),
        apn: chosen
            .map(|a| a.apn.clone())
            .unwrap_or_else(|| default_apn.to_string()),
        qci: chosen.map(|a| a.qci as u8).unwrap_or(9),
        arp_priority: chosen
            .map(|a| a.arp.priority_level.clamp(1, 15) as u8)
            .unwrap_or(8),
        ambr_ul: sd.map(|s| s.ambr.uplink).unwrap_or(50_000_000),
        ambr_dl: sd.map(|s| s.ambr.downlink).unwrap_or(100_000_000),
    }
}

fn gtp_plmn(cfg: &Config) -> gtp::Plmn {
    gtp::Plmn {
        mcc: cfg.mcc.parse().unwrap_or(1),
        mnc: cfg.mnc.parse().unwrap_or(1),
        mnc_3_digits: cfg.mnc.len() == 3,
    }
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
