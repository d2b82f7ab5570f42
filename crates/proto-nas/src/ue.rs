//! The UE side of NAS, sans-IO, for the RAN emulator and tests: a USIM (Milenage via
//! crate `aka`) and the EMM procedures of attach, identification, GUTI reallocation,
//! tracking area update and detach (either way).
//!
//! Feed it every downlink NAS PDU with [`UeNas::on_downlink`]; send what it returns.

use crate::msg::{self, Guti, Nas, PdnConnectivity, UpdateType};
use crate::security::{self, Direction, NasSecurity, SecurityHeader};
use crate::{cause, NasError, Result};

/// The subscriber's credentials (as in the HSS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usim {
    pub imsi: String,
    pub k: [u8; 16],
    pub opc: [u8; 16],
    /// Highest SQN accepted so far (TS 33.102 §6.3.3 freshness check, simplified to
    /// "must increase"); `None` accepts any SQN first.
    pub sqn_ms: Option<u64>,
}

/// What the UE did with a downlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UeEvent {
    /// Send this uplink NAS PDU.
    Send(Vec<u8>),
    /// ATTACH ACCEPT received: send [`UeNas::attach_complete`] once the eNB set up the
    /// bearer.
    Attached {
        guti: Option<Guti>,
        ipv4: Option<[u8; 4]>,
        /// IPv6 interface identifier (PDN type IPv6 or IPv4v6).
        ipv6_iid: Option<[u8; 8]>,
        ebi: u8,
        apn: Option<String>,
    },
    AuthenticationRejected,
    AttachRejected {
        cause: u8,
    },
    DetachAccepted,
    /// Anything else, decoded.
    Other(Nas),
}

/// One UE's NAS state: USIM, KASME, NAS security context, GUTI.
pub struct UeNas {
    pub usim: Usim,
    /// Serving network PLMN (for KASME, TS 33.401 A.2).
    pub plmn: [u8; 3],
    /// UE network capability octets (EEA, EIA); default EEA0-2 / EIA0-2.
    pub ue_network_capability: Vec<u8>,
    pub pdn: PdnConnectivity,
    /// Test knob: answer authentication with a wrong RES.
    pub corrupt_res: bool,
    kasme: Option<[u8; 32]>,
    sec: Option<NasSecurity>,
    guti: Option<Guti>,
    /// RAND and RES of the last challenge: a retransmitted AUTHENTICATION REQUEST
    /// (same RAND) gets the same RES without running the USIM again, whose SQN check
    /// would refuse it (TS 24.301 §5.4.2.3).
    last_challenge: Option<([u8; 16], Vec<u8>)>,
}

impl UeNas {
    pub fn new(usim: Usim, plmn: [u8; 3]) -> UeNas {
        UeNas {
            usim,
            plmn,
            ue_network_capability: vec![0xe0, 0xe0],
            pdn: PdnConnectivity::default(),
            corrupt_res: false,
            kasme: None,
            sec: None,
            guti: None,
            last_challenge: None,
        }
    }

    pub fn guti(&self) -> Option<Guti> {
        self.guti
    }

    pub fn security(&self) -> Option<&NasSecurity> {
        self.sec.as_ref()
    }

    /// ATTACH REQUEST with the IMSI (plain: no security context is assumed).
    pub fn attach_request(&mut self) -> Result<Vec<u8>> {
        msg::attach_request(&self.usim.imsi, &self.ue_network_capability, &self.pdn)
    }

    /// KeNB as the UE derives it: from the uplink COUNT of its last NAS message (the
    /// SECURITY MODE COMPLETE during an attach), TS 33.401 A.3.
    pub fn kenb(&self) -> Option<[u8; 32]> {
        let sec = self.sec.as_ref()?;
        Some(sec.kenb(sec.count(Direction::Uplink)?.checked_sub(1)?))
    }

    /// An uplink message as the UE sends it: integrity protected and ciphered once a
    /// security context exists, plain before.
    pub fn protect(&mut self, plain: Vec<u8>) -> Result<Vec<u8>> {
        match self.sec.as_mut() {
            Some(sec) => sec.protect(&plain, SecurityHeader::IntegrityCiphered, Direction::Uplink),
            None => Ok(plain),
        }
    }

    /// ATTACH COMPLETE (with ACTIVATE DEFAULT EPS BEARER CONTEXT ACCEPT), protected.
    pub fn attach_complete(&mut self, ebi: u8) -> Result<Vec<u8>> {
        let p = msg::attach_complete(ebi)?;
        self.protect(p)
    }

    /// UE-originating DETACH REQUEST by GUTI, protected.
    pub fn detach_request(&mut self, switch_off: bool) -> Result<Vec<u8>> {
        let guti = self
            .guti
            .ok_or_else(|| NasError::Value("detach before attach: no GUTI".into()))?;
        let ksi = self.sec.as_ref().map(|s| s.ksi).unwrap_or(7);
        let p = msg::detach_request(switch_off, &guti, ksi)?;
        self.protect(p)
    }

    /// TRACKING AREA UPDATE REQUEST with the current GUTI, integrity protected (an
    /// initial NAS message is not ciphered, TS 24.301 §4.4.5); with `active` the UE
    /// asks for its bearer. It reports the default bearer (EBI 5) as active.
    pub fn tau_request(&mut self, update_type: UpdateType, active: bool) -> Result<Vec<u8>> {
        let guti = self
            .guti
            .ok_or_else(|| NasError::Value("tracking area update before attach: no GUTI".into()))?;
        let sec = self.sec.as_mut().ok_or_else(|| {
            NasError::Value("tracking area update without a security context".into())
        })?;
        let p = msg::tracking_area_update_request(
            update_type,
            active,
            sec.ksi,
            &guti,
            None,
            Some(&[5]),
        )?;
        sec.protect(&p, SecurityHeader::Integrity, Direction::Uplink)
    }

    /// The short SERVICE REQUEST from ECM-IDLE (TS 24.301 §5.6.1), with and advancing
    /// the uplink COUNT; the KeNB then comes from that COUNT ([`UeNas::kenb`]).
    pub fn service_request(&mut self) -> Result<Vec<u8>> {
        self.sec
            .as_mut()
            .ok_or_else(|| NasError::Value("service request without a security context".into()))?
            .service_request()
    }

    /// Handles one downlink NAS PDU.
    pub fn on_downlink(&mut self, pdu: &[u8]) -> Result<UeEvent> {
        if security::SecurityHeader::of(pdu)? == SecurityHeader::IntegrityNewContext {
            return self.on_security_mode_command(pdu);
        }
        let opened = security::open(pdu, self.sec.as_mut(), Direction::Downlink)?;
        Ok(match opened.nas {
            Nas::AuthenticationRequest { rand, autn, .. } => self.on_auth_request(&rand, &autn)?,
            Nas::AuthenticationReject => {
                self.sec = None;
                UeEvent::AuthenticationRejected
            }
            Nas::AttachReject { cause } => UeEvent::AttachRejected { cause },
            Nas::AttachAccept {
                guti,
                ue_ipv4,
                ue_ipv6_iid,
                ebi,
                apn,
                ..
            } => {
                if !opened.verified {
                    return Err(NasError::Security("ATTACH ACCEPT not protected".into()));
                }
                if guti.is_some() {
                    self.guti = guti;
                }
                UeEvent::Attached {
                    guti,
                    ipv4: ue_ipv4,
                    ipv6_iid: ue_ipv6_iid,
                    ebi,
                    apn,
                }
            }
            Nas::DetachAccept => UeEvent::DetachAccepted,
            // Asked during an attach, before any security context: answered plain.
            Nas::IdentityRequest { .. } => UeEvent::Send(msg::identity_response(&self.usim.imsi)?),
            Nas::GutiReallocationCommand { guti, .. } if opened.verified => {
                self.guti = Some(guti);
                let c = msg::guti_reallocation_complete()?;
                UeEvent::Send(self.protect(c)?)
            }
            Nas::TrackingAreaUpdateAccept {
                guti: Some(guti), ..
            } if opened.verified => {
                self.guti = Some(guti);
                let c = msg::tracking_area_update_complete()?;
                UeEvent::Send(self.protect(c)?)
            }
            Nas::NetworkDetachRequest { .. } if opened.verified => {
                let a = msg::detach_accept()?;
                UeEvent::Send(self.protect(a)?)
            }
            // A dedicated bearer the network sets up: accepted (TS 24.301 §6.4.2.3).
            Nas::ActivateDedicatedBearerRequest { ebi, .. } if opened.verified => {
                UeEvent::Send(self.protect(msg::activate_dedicated_bearer_accept(ebi)?)?)
            }
            other => UeEvent::Other(other),
        })
    }

    fn on_auth_request(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<UeEvent> {
        if let Some((_, res)) = self.last_challenge.as_ref().filter(|(r, _)| r == rand) {
            return Ok(UeEvent::Send(msg::authentication_response(res)?));
        }
        let u = &self.usim;
        let (mut res, ck, ik, sqn) = match aka::check_autn(&u.k, &u.opc, rand, autn) {
            Ok(x) => x,
            Err(_) => {
                return Ok(UeEvent::Send(msg::authentication_failure(
                    cause::MAC_FAILURE,
                    None,
                )?))
            }
        };
        if let Some(ms) = u.sqn_ms {
            if sqn <= ms {
                let auts = aka::generate_auts(&u.k, &u.opc, rand, ms);
                return Ok(UeEvent::Send(msg::authentication_failure(
                    cause::SYNCH_FAILURE,
                    Some(auts),
                )?));
            }
        }
        self.usim.sqn_ms = Some(sqn);
        self.kasme = Some(aka::kasme_from_autn(&ck, &ik, &self.plmn, autn));
        if self.corrupt_res {
            res[0] ^= 0xff;
        }
        self.last_challenge = Some((*rand, res.to_vec()));
        Ok(UeEvent::Send(msg::authentication_response(&res)?))
    }

    /// SECURITY MODE COMMAND: verified with the new context it starts (TS 24.301
    /// §5.4.3.3), answered with SECURITY MODE COMPLETE under that context.
    fn on_security_mode_command(&mut self, pdu: &[u8]) -> Result<UeEvent> {
        let kasme = self.kasme.ok_or_else(|| {
            NasError::Security("SECURITY MODE COMMAND before authentication".into())
        })?;
        let inner = pdu
            .get(6..)
            .ok_or_else(|| NasError::Decode("short security header".into()))?;
        let Nas::SecurityModeCommand {
            eea,
            eia,
            ksi,
            replayed_ue_capability,
        } = msg::parse(inner, Direction::Downlink)?
        else {
            return Err(NasError::Decode(
                "new-context header on another message".into(),
            ));
        };
        // Bidding-down check: the replayed capability must be what we sent.
        let n = self.ue_network_capability.len().min(2);
        if replayed_ue_capability.get(..n) != self.ue_network_capability.get(..n) {
            return Ok(UeEvent::Send(msg::security_mode_reject(
                crate::cause::SEMANTICALLY_INCORRECT,
            )?));
        }
        let mut sec = NasSecurity::new(kasme, ksi, eea, eia)?;
        sec.unprotect(pdu, Direction::Downlink)?;
        let done = msg::security_mode_complete()?;
        let wire = sec.protect(
            &done,
            SecurityHeader::IntegrityCipheredNewContext,
            Direction::Uplink,
        )?;
        self.sec = Some(sec);
        Ok(UeEvent::Send(wire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 16] = [0x46; 16];
    const OPC: [u8; 16] = [0xcd; 16];
    const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

    fn ue() -> UeNas {
        UeNas::new(
            Usim {
                imsi: "001010000000001".into(),
                k: K,
                opc: OPC,
                sqn_ms: None,
            },
            PLMN,
        )
    }

    fn challenge(sqn: u64) -> (aka::Vector, Vec<u8>) {
        let v = aka::generate_vector(&K, &OPC, &[0x80, 0], sqn, &[7; 16]);
        let pdu = msg::authentication_request(0, &v.rand, &v.autn).unwrap();
        (v, pdu)
    }

    /// The network's side of security mode control with `kasme` (EEA2/EIA2): the UE's
    /// SECURITY MODE COMPLETE verifies under the returned context.
    fn security_mode(ue: &mut UeNas, kasme: [u8; 32]) -> NasSecurity {
        let mut mme = NasSecurity::new(kasme, 0, 2, 2).unwrap();
        let smc = mme
            .protect(
                &msg::security_mode_command(0, 2, 2, &[0xe0, 0xe0]).unwrap(),
                SecurityHeader::IntegrityNewContext,
                Direction::Downlink,
            )
            .unwrap();
        let UeEvent::Send(done) = ue.on_downlink(&smc).unwrap() else {
            panic!()
        };
        let o = mme.unprotect(&done, Direction::Uplink).unwrap();
        assert_eq!(o.nas, Nas::SecurityModeComplete);
        mme
    }

    /// The network side of one attach, checking every UE answer.
    #[test]
    fn attach_against_a_network_context() {
        let mut ue = ue();
        assert!(matches!(
            msg::parse(&ue.attach_request().unwrap(), Direction::Uplink).unwrap(),
            Nas::AttachRequest { .. }
        ));
        let (v, pdu) = challenge(32);
        let UeEvent::Send(resp) = ue.on_downlink(&pdu).unwrap() else {
            panic!()
        };
        assert_eq!(
            msg::parse(&resp, Direction::Uplink).unwrap(),
            Nas::AuthenticationResponse {
                res: v.xres.to_vec()
            }
        );
        let mut mme = security_mode(&mut ue, v.kasme);
        assert_eq!(ue.kenb(), Some(mme.kenb(0)));
        // An unprotected ATTACH ACCEPT is refused once security is on.
        let guti = Guti {
            plmn: PLMN,
            mme_group_id: 1,
            mme_code: 1,
            m_tmsi: 5,
        };
        let accept = msg::attach_accept(&msg::AttachAcceptParams {
            guti,
            tai_plmn: PLMN,
            tacs: vec![1],
            t3412: 0x49,
            ebi: 5,
            pti: 1,
            qci: 9,
            apn: "internet".into(),
            pdn_address: msg::PdnAddress::Ipv4([10, 45, 0, 9]),
        })
        .unwrap();
        assert!(ue.on_downlink(&accept).is_err());
        let wire = mme
            .protect(
                &accept,
                SecurityHeader::IntegrityCiphered,
                Direction::Downlink,
            )
            .unwrap();
        assert_eq!(
            ue.on_downlink(&wire).unwrap(),
            UeEvent::Attached {
                guti: Some(guti),
                ipv4: Some([10, 45, 0, 9]),
                ipv6_iid: None,
                ebi: 5,
                apn: Some("internet".into())
            }
        );
        let c = ue.attach_complete(5).unwrap();
        assert_eq!(
            mme.unprotect(&c, Direction::Uplink).unwrap().nas,
            Nas::AttachComplete { ebi: 5 }
        );
        // TAU: integrity protected only, by the GUTI; a new GUTI in the accept is current
        // and confirmed with TAU COMPLETE.
        let tau = ue.tau_request(UpdateType::TaUpdating, false).unwrap();
        assert_eq!(SecurityHeader::of(&tau).unwrap(), SecurityHeader::Integrity);
        assert!(matches!(
            mme.unprotect(&tau, Direction::Uplink).unwrap().nas,
            Nas::TrackingAreaUpdateRequest { update_type: UpdateType::TaUpdating, old_guti: Some(g), bearers: Some(b), .. }
                if g == guti && b == [5]
        ));
        let new_guti = Guti { m_tmsi: 6, ..guti };
        let tau_accept = msg::tracking_area_update_accept(&msg::TauAcceptParams {
            guti: Some(new_guti),
            tai_plmn: PLMN,
            tacs: vec![1, 2],
            t3412: 0x49,
            bearers: Some(vec![5]),
        })
        .unwrap();
        assert!(
            matches!(ue.on_downlink(&tau_accept).unwrap(), UeEvent::Other(_)),
            "TAU ACCEPT in plain: not taken"
        );
        assert_eq!(ue.guti(), Some(guti));
        let wire = mme
            .protect(
                &tau_accept,
                SecurityHeader::IntegrityCiphered,
                Direction::Downlink,
            )
            .unwrap();
        let UeEvent::Send(c) = ue.on_downlink(&wire).unwrap() else {
            panic!("no TAU COMPLETE")
        };
        assert_eq!(ue.guti(), Some(new_guti));
        assert_eq!(
            mme.unprotect(&c, Direction::Uplink).unwrap().nas,
            Nas::TrackingAreaUpdateComplete
        );
        let guti = new_guti;
        let d = ue.detach_request(true).unwrap();
        assert!(matches!(
            mme.unprotect(&d, Direction::Uplink).unwrap().nas,
            Nas::DetachRequest { switch_off: true, guti: Some(g), .. } if g == guti
        ));
    }

    /// `plain` sent ciphered by the network: the message of the UE's protected answer.
    fn answer(ue: &mut UeNas, mme: &mut NasSecurity, plain: &[u8]) -> Nas {
        let wire = mme
            .protect(
                plain,
                SecurityHeader::IntegrityCiphered,
                Direction::Downlink,
            )
            .unwrap();
        let UeEvent::Send(up) = ue.on_downlink(&wire).unwrap() else {
            panic!()
        };
        mme.unprotect(&up, Direction::Uplink).unwrap().nas
    }

    /// Identification, a retransmitted challenge, then with a context: GUTI
    /// reallocation, TAU accept with a GUTI, and the network's detach, each answered
    /// under the context; unprotected ones are not taken.
    #[test]
    fn network_procedures_answered() {
        let mut ue = ue();
        let UeEvent::Send(id) = ue.on_downlink(&msg::identity_request().unwrap()).unwrap() else {
            panic!()
        };
        assert_eq!(
            msg::parse(&id, Direction::Uplink).unwrap(),
            Nas::IdentityResponse {
                imsi: Some("001010000000001".into())
            }
        );
        let (v, pdu) = challenge(32);
        let first = ue.on_downlink(&pdu).unwrap();
        assert_eq!(ue.on_downlink(&pdu).unwrap(), first, "same RAND, same RES");
        assert_eq!(
            first,
            UeEvent::Send(msg::authentication_response(&v.xres).unwrap())
        );
        let mut mme = security_mode(&mut ue, v.kasme);
        let guti = Guti {
            plmn: PLMN,
            mme_group_id: 1,
            mme_code: 1,
            m_tmsi: 0x77,
        };
        let cmd = msg::guti_reallocation_command(&guti, PLMN, &[1]).unwrap();
        assert!(matches!(ue.on_downlink(&cmd).unwrap(), UeEvent::Other(_)));
        assert_eq!(ue.guti(), None, "a plain command is not taken");
        assert_eq!(
            answer(&mut ue, &mut mme, &cmd),
            Nas::GutiReallocationComplete
        );
        assert_eq!(ue.guti(), Some(guti));
        let tau = ue.tau_request(UpdateType::Periodic, false).unwrap();
        assert_eq!(tau[0], 0x17, "integrity protected, not ciphered");
        assert!(matches!(
            mme.unprotect(&tau, Direction::Uplink).unwrap().nas,
            Nas::TrackingAreaUpdateRequest { old_guti: Some(g), update_type: UpdateType::Periodic, .. } if g == guti
        ));
        let next = Guti {
            m_tmsi: 0x78,
            ..guti
        };
        let accept = msg::tracking_area_update_accept(&msg::TauAcceptParams {
            guti: Some(next),
            tai_plmn: PLMN,
            tacs: vec![1],
            t3412: 0x49,
            bearers: None,
        })
        .unwrap();
        assert_eq!(
            answer(&mut ue, &mut mme, &accept),
            Nas::TrackingAreaUpdateComplete
        );
        assert_eq!(ue.guti(), Some(next));
        let det = msg::network_detach_request(true, None).unwrap();
        assert_eq!(answer(&mut ue, &mut mme, &det), Nas::DetachAccept);
    }

    #[test]
    fn stale_sqn_gives_synch_failure_and_bad_mac_gives_mac_failure() {
        let mut ue = ue();
        ue.usim.sqn_ms = Some(1000);
        let (_, pdu) = challenge(64);
        let UeEvent::Send(f) = ue.on_downlink(&pdu).unwrap() else {
            panic!()
        };
        match msg::parse(&f, Direction::Uplink).unwrap() {
            Nas::AuthenticationFailure {
                cause: cause::SYNCH_FAILURE,
                auts: Some(auts),
            } => {
                // The HSS recovers SQN_MS from AUTS.
                assert_eq!(aka::verify_auts(&K, &OPC, &[7; 16], &auts).ok(), Some(1000));
            }
            other => panic!("{other:?}"),
        }
        let (_, mut pdu) = challenge(2000);
        let last = pdu.len() - 1;
        pdu[last] ^= 1; // AUTN MAC
        let UeEvent::Send(f) = ue.on_downlink(&pdu).unwrap() else {
            panic!()
        };
        assert!(matches!(
            msg::parse(&f, Direction::Uplink).unwrap(),
            Nas::AuthenticationFailure {
                cause: cause::MAC_FAILURE,
                auts: None
            }
        ));
        // SMC before authentication, and garbage, are errors.
        let mut fresh = self::ue();
        assert!(fresh.on_downlink(&[0x37, 0, 0, 0, 0, 0, 7, 0x5d]).is_err());
        assert!(fresh.on_downlink(&[]).is_err());
        assert!(fresh.on_downlink(&[0xff; 9]).is_err());
    }
}
