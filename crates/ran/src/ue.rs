//! The UE's NAS side, sans-IO: a USIM (K, OPc, SQN_MS) and the EMM/ESM state of
//! attach, authentication, security mode and detach. It takes downlink NAS PDUs and
//! says what to send back; the eNB part carries the octets in S1AP.
//!
//! Codecs and NAS security are `proto-nas`; the USIM computations are `aka`.

use std::net::Ipv4Addr;

use proto_nas::msg::{self, Nas};
use proto_nas::{cause, Direction, Guti, NasSecurity, PdnConnectivity, SecurityHeader};

use crate::report::FailureKind;

/// UE network capability octets 1–2 (TS 24.301 §9.9.3.34): EEA0/128-EEA1/128-EEA2 and
/// EIA0/128-EIA1/128-EIA2, the set commercial UEs and srsUE advertise.
pub const UE_NETWORK_CAPABILITY: [u8; 2] = [0xe0, 0xe0];

/// EMM cause #23, UE security capabilities mismatch (TS 24.301 §9.9.3.9).
const UE_SECURITY_CAPABILITIES_MISMATCH: u8 = 23;
/// EMM cause #24, security mode rejected, unspecified.
const SECURITY_MODE_REJECTED: u8 = 24;

/// One USIM: the subscriber row the HSS also has.
#[derive(Clone)]
pub struct Usim {
    pub imsi: String,
    pub k: [u8; 16],
    pub opc: [u8; 16],
    /// Highest SQN accepted so far (TS 33.102 §6.3.3 SQN_MS). Starts at the CSV's value:
    /// the HSS hands out SQNs above it.
    pub sqn_ms: u64,
}

impl std::fmt::Debug for Usim {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usim")
            .field("imsi", &self.imsi)
            .field("sqn_ms", &self.sqn_ms)
            .finish_non_exhaustive()
    }
}

impl From<&hss::Subscriber> for Usim {
    fn from(s: &hss::Subscriber) -> Self {
        Usim {
            imsi: s.imsi.clone(),
            k: s.k,
            opc: s.opc,
            sqn_ms: s.sqn,
        }
    }
}

/// What the network gave the UE in ATTACH ACCEPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub ue_ip: Ipv4Addr,
    pub ebi: u8,
    pub guti: Option<Guti>,
}

/// The outcome of one downlink NAS PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this uplink NAS PDU.
    Send(Vec<u8>),
    /// ATTACH ACCEPT taken: send the PDU (ATTACH COMPLETE) once the bearer is set up.
    Accepted(Accepted, Vec<u8>),
    /// The network ended the attach (reject); nothing to send.
    Rejected {
        kind: FailureKind,
        cause: Option<u8>,
    },
    /// DETACH ACCEPT.
    DetachAccepted,
    /// Nothing to do (logged by the caller).
    Ignored(String),
}

/// The UE's NAS state.
pub struct UeNas {
    pub usim: Usim,
    plmn: [u8; 3],
    pdn: PdnConnectivity,
    /// KASME and its eKSI from the last successful AKA.
    kasme: Option<([u8; 32], u8)>,
    sec: Option<NasSecurity>,
    pub guti: Option<Guti>,
    /// The cause of the UE's own AUTHENTICATION FAILURE, if it sent one.
    pub auth_failure_cause: Option<u8>,
}

impl UeNas {
    pub fn new(usim: Usim, plmn: [u8; 3], apn: &str) -> UeNas {
        UeNas {
            usim,
            plmn,
            pdn: PdnConnectivity {
                pti: 1,
                pdn_type: 1,
                apn: Some(apn.to_string()),
            },
            kasme: None,
            sec: None,
            guti: None,
            auth_failure_cause: None,
        }
    }

    /// ATTACH REQUEST with the PDN CONNECTIVITY REQUEST, identified by IMSI (plain:
    /// this emulator keeps no security context across runs).
    pub fn attach_request(&self) -> proto_nas::Result<Vec<u8>> {
        msg::attach_request(&self.usim.imsi, &UE_NETWORK_CAPABILITY, &self.pdn)
    }

    /// The NAS security context, once SECURITY MODE COMMAND was taken.
    pub fn security(&self) -> Option<&NasSecurity> {
        self.sec.as_ref()
    }

    /// UE-originating DETACH REQUEST (not switch-off, so the network answers with DETACH
    /// ACCEPT), integrity protected and ciphered.
    pub fn detach_request(&mut self) -> proto_nas::Result<Vec<u8>> {
        let guti = self
            .guti
            .ok_or_else(|| proto_nas::NasError::Value("no GUTI to detach with".into()))?;
        let ksi = self.kasme.map(|(_, ksi)| ksi).unwrap_or(7);
        let plain = msg::detach_request(false, &guti, ksi)?;
        self.protect(&plain, SecurityHeader::IntegrityCiphered)
    }

    fn protect(&mut self, plain: &[u8], sht: SecurityHeader) -> proto_nas::Result<Vec<u8>> {
        match self.sec.as_mut() {
            Some(sec) => sec.protect(plain, sht, Direction::Uplink),
            None => Ok(plain.to_vec()),
        }
    }

    /// Handles one downlink NAS PDU. `Err` means the PDU was malformed or failed its
    /// integrity check: the caller logs and drops it (TS 24.301 §4.4.4.2: discard).
    pub fn on_downlink(&mut self, pdu: &[u8]) -> proto_nas::Result<Step> {
        let header = SecurityHeader::of(pdu)?;
        // SECURITY MODE COMMAND arrives with a *new* context that the UE builds from the
        // command's own algorithms: read it unverified first, then verify with the new keys.
        if header == SecurityHeader::IntegrityNewContext {
            let peek = proto_nas::security::open(pdu, None, Direction::Downlink)?;
            if let Nas::SecurityModeCommand {
                eea,
                eia,
                ksi,
                replayed_ue_capability,
            } = peek.nas
            {
                return self.security_mode_command(pdu, eea, eia, ksi, &replayed_ue_capability);
            }
        }
        let opened = proto_nas::security::open(pdu, self.sec.as_mut(), Direction::Downlink)?;
        Ok(match opened.nas {
            Nas::AuthenticationRequest { ksi, rand, autn } => {
                self.authenticate(ksi, &rand, &autn)?
            }
            Nas::AuthenticationReject => Step::Rejected {
                kind: FailureKind::AuthenticationReject,
                cause: self.auth_failure_cause,
            },
            Nas::AttachReject { cause } => Step::Rejected {
                kind: FailureKind::AttachReject,
                cause: Some(cause),
            },
            Nas::AttachAccept {
                guti, ebi, ue_ipv4, ..
            } => {
                let Some(ip) = ue_ipv4 else {
                    return Ok(Step::Ignored(
                        "ATTACH ACCEPT without an IPv4 PDN address".into(),
                    ));
                };
                if self.sec.is_none() || !opened.verified {
                    // TS 24.301 §4.4.4.2: an ATTACH ACCEPT must be integrity protected.
                    return Ok(Step::Ignored("ATTACH ACCEPT without integrity".into()));
                }
                self.guti = guti;
                let complete = msg::attach_complete(ebi)?;
                let complete = self.protect(&complete, SecurityHeader::IntegrityCiphered)?;
                Step::Accepted(
                    Accepted {
                        ue_ip: Ipv4Addr::from(ip),
                        ebi,
                        guti,
                    },
                    complete,
                )
            }
            Nas::DetachAccept => Step::DetachAccepted,
            Nas::EmmStatus { cause } => Step::Ignored(format!("EMM STATUS cause #{cause}")),
            Nas::SecurityModeCommand { .. } => {
                Step::Ignored("SECURITY MODE COMMAND without a new context".into())
            }
            other => Step::Ignored(format!("unexpected downlink NAS {other:?}")),
        })
    }

    /// USIM side of EPS AKA (TS 33.401 §6.1.1, TS 33.102 §6.3.3).
    fn authenticate(
        &mut self,
        ksi: u8,
        rand: &[u8; 16],
        autn: &[u8; 16],
    ) -> proto_nas::Result<Step> {
        let u = &self.usim;
        let Ok((res, ck, ik, sqn)) = aka::check_autn(&u.k, &u.opc, rand, autn) else {
            self.auth_failure_cause = Some(cause::MAC_FAILURE);
            return Ok(Step::Send(msg::authentication_failure(
                cause::MAC_FAILURE,
                None,
            )?));
        };
        // The AMF separation bit must be set for E-UTRAN (TS 33.401 §6.1.1).
        if autn[6] & 0x80 == 0 {
            self.auth_failure_cause = Some(cause::NON_EPS_AUTH_UNACCEPTABLE);
            return Ok(Step::Send(msg::authentication_failure(
                cause::NON_EPS_AUTH_UNACCEPTABLE,
                None,
            )?));
        }
        if sqn <= u.sqn_ms {
            // Replayed or stale SQN: ask the HSS to resynchronise from SQN_MS.
            let auts = aka::generate_auts(&u.k, &u.opc, rand, u.sqn_ms);
            self.auth_failure_cause = Some(cause::SYNCH_FAILURE);
            return Ok(Step::Send(msg::authentication_failure(
                cause::SYNCH_FAILURE,
                Some(auts),
            )?));
        }
        self.usim.sqn_ms = sqn;
        self.auth_failure_cause = None;
        self.kasme = Some((aka::kasme_from_autn(&ck, &ik, &self.plmn, autn), ksi & 0x07));
        Ok(Step::Send(msg::authentication_response(&res)?))
    }

    fn security_mode_command(
        &mut self,
        pdu: &[u8],
        eea: u8,
        eia: u8,
        ksi: u8,
        replayed: &[u8],
    ) -> proto_nas::Result<Step> {
        let reject = |c| Ok(Step::Send(msg::security_mode_reject(c)?));
        let Some((kasme, our_ksi)) = self.kasme else {
            return reject(SECURITY_MODE_REJECTED);
        };
        // Bidding-down check (TS 24.301 §5.4.3.3): the replayed capabilities must be ours.
        if replayed.get(..2) != Some(&UE_NETWORK_CAPABILITY[..]) || ksi & 0x07 != our_ksi {
            return reject(UE_SECURITY_CAPABILITIES_MISMATCH);
        }
        let Ok(mut sec) = NasSecurity::new(kasme, our_ksi, eea, eia) else {
            return reject(UE_SECURITY_CAPABILITIES_MISMATCH);
        };
        // Verifies the MAC with the new keys; a failure is a dropped message (Err).
        sec.unprotect(pdu, Direction::Downlink)?;
        let complete = msg::security_mode_complete()?;
        let wire = sec.protect(
            &complete,
            SecurityHeader::IntegrityCipheredNewContext,
            Direction::Uplink,
        )?;
        self.sec = Some(sec);
        Ok(Step::Send(wire))
    }
}

#[cfg(test)]
mod tests {
    //! The UE against a scripted network side built from the same crates the MME uses.
    use super::*;

    const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

    fn usim() -> Usim {
        Usim {
            imsi: "001010000000001".into(),
            k: [0x46; 16],
            opc: [0xcd; 16],
            sqn_ms: 0,
        }
    }

    fn vector(u: &Usim, sqn: u64, amf: [u8; 2]) -> aka::Vector {
        aka::generate_vector(&u.k, &u.opc, &amf, sqn, &[7; 16])
    }

    fn send(s: Step) -> Vec<u8> {
        match s {
            Step::Send(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_attach_and_detach() {
        let mut ue = UeNas::new(usim(), PLMN, "internet");
        let req = msg::parse(&ue.attach_request().unwrap(), Direction::Uplink).unwrap();
        assert!(
            matches!(req, Nas::AttachRequest { imsi: Some(ref i), .. } if i == "001010000000001")
        );

        // Authentication.
        let v = vector(&ue.usim, 32, [0x80, 0]);
        let areq = msg::authentication_request(1, &v.rand, &v.autn).unwrap();
        let resp = send(ue.on_downlink(&areq).unwrap());
        assert_eq!(
            msg::parse(&resp, Direction::Uplink).unwrap(),
            Nas::AuthenticationResponse {
                res: v.xres.to_vec()
            }
        );
        assert_eq!(ue.usim.sqn_ms, 32);

        // Security mode, with the MME's context from the HSS's KASME.
        let mut mme = NasSecurity::new(v.kasme, 1, 2, 2).unwrap();
        let smc = msg::security_mode_command(1, 2, 2, &UE_NETWORK_CAPABILITY).unwrap();
        let smc = mme
            .protect(
                &smc,
                SecurityHeader::IntegrityNewContext,
                Direction::Downlink,
            )
            .unwrap();
        let done = send(ue.on_downlink(&smc).unwrap());
        let o = mme.unprotect(&done, Direction::Uplink).unwrap();
        assert_eq!(o.nas, Nas::SecurityModeComplete);

        // Attach accept → complete.
        let guti = Guti {
            plmn: PLMN,
            mme_group_id: 1,
            mme_code: 1,
            m_tmsi: 0xc000_0001,
        };
        let acc = msg::attach_accept(&msg::AttachAcceptParams {
            guti,
            tai_plmn: PLMN,
            tacs: vec![1],
            t3412: 0x49,
            ebi: 5,
            pti: 1,
            qci: 9,
            apn: "internet".into(),
            ue_ipv4: [10, 45, 0, 2],
        })
        .unwrap();
        let acc = mme
            .protect(&acc, SecurityHeader::IntegrityCiphered, Direction::Downlink)
            .unwrap();
        let Step::Accepted(a, complete) = ue.on_downlink(&acc).unwrap() else {
            panic!()
        };
        assert_eq!(a.ue_ip, Ipv4Addr::new(10, 45, 0, 2));
        assert_eq!((a.ebi, a.guti), (5, Some(guti)));
        let o = mme.unprotect(&complete, Direction::Uplink).unwrap();
        assert_eq!(o.nas, Nas::AttachComplete { ebi: 5 });

        // Detach.
        let det = ue.detach_request().unwrap();
        let o = mme.unprotect(&det, Direction::Uplink).unwrap();
        assert!(
            matches!(o.nas, Nas::DetachRequest { switch_off: false, guti: Some(g), .. } if g == guti)
        );
        let da = mme
            .protect(
                &msg::detach_accept().unwrap(),
                SecurityHeader::IntegrityCiphered,
                Direction::Downlink,
            )
            .unwrap();
        assert_eq!(ue.on_downlink(&da).unwrap(), Step::DetachAccepted);
        // A replayed DETACH ACCEPT fails the COUNT check: an error, not a panic.
        assert!(ue.on_downlink(&da).is_err());
    }

    #[test]
    fn wrong_key_gives_mac_failure_then_reject() {
        let mut other = usim();
        other.k = [0x99; 16];
        let v = vector(&other, 32, [0x80, 0]);
        let mut ue = UeNas::new(usim(), PLMN, "internet");
        let f = send(
            ue.on_downlink(&msg::authentication_request(0, &v.rand, &v.autn).unwrap())
                .unwrap(),
        );
        assert_eq!(
            msg::parse(&f, Direction::Uplink).unwrap(),
            Nas::AuthenticationFailure {
                cause: cause::MAC_FAILURE,
                auts: None
            }
        );
        assert_eq!(
            ue.on_downlink(&msg::authentication_reject().unwrap())
                .unwrap(),
            Step::Rejected {
                kind: FailureKind::AuthenticationReject,
                cause: Some(cause::MAC_FAILURE)
            }
        );
    }

    #[test]
    fn stale_sqn_gives_synch_failure_with_valid_auts() {
        let mut u = usim();
        u.sqn_ms = 100;
        let v = vector(&u, 64, [0x80, 0]);
        let mut ue = UeNas::new(u.clone(), PLMN, "internet");
        let f = send(
            ue.on_downlink(&msg::authentication_request(0, &v.rand, &v.autn).unwrap())
                .unwrap(),
        );
        let Nas::AuthenticationFailure {
            cause: 21,
            auts: Some(auts),
        } = msg::parse(&f, Direction::Uplink).unwrap()
        else {
            panic!()
        };
        assert_eq!(aka::verify_auts(&u.k, &u.opc, &v.rand, &auts), Ok(100));
        // Non-EPS AMF (separation bit clear) is refused with #26.
        let v = vector(&u, 200, [0, 0]);
        let f = send(
            ue.on_downlink(&msg::authentication_request(0, &v.rand, &v.autn).unwrap())
                .unwrap(),
        );
        assert!(matches!(
            msg::parse(&f, Direction::Uplink).unwrap(),
            Nas::AuthenticationFailure { cause: 26, .. }
        ));
    }

    #[test]
    fn attach_reject_and_bad_input() {
        let mut ue = UeNas::new(usim(), PLMN, "internet");
        assert_eq!(
            ue.on_downlink(&msg::attach_reject(8).unwrap()).unwrap(),
            Step::Rejected {
                kind: FailureKind::AttachReject,
                cause: Some(8)
            }
        );
        // SMC before authentication: rejected, not a panic.
        let smc = msg::security_mode_command(0, 2, 2, &UE_NETWORK_CAPABILITY).unwrap();
        let mut fake = NasSecurity::new([1; 32], 0, 2, 2).unwrap();
        let smc = fake
            .protect(
                &smc,
                SecurityHeader::IntegrityNewContext,
                Direction::Downlink,
            )
            .unwrap();
        let rej = send(ue.on_downlink(&smc).unwrap());
        assert!(matches!(
            msg::parse(&rej, Direction::Uplink).unwrap(),
            Nas::SecurityModeReject { cause: 24 }
        ));
        // Garbage.
        let mut x = 0x9e37_79b9u32;
        for len in 0..300 {
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = ue.on_downlink(&v);
            if let Some(b) = v.first_mut() {
                *b = 0x37; // integrity, new context: exercises the SMC path
            }
            let _ = ue.on_downlink(&v);
        }
        assert!(ue.on_downlink(&[]).is_err());
        assert!(ue.detach_request().is_err(), "no GUTI yet");
    }
}
