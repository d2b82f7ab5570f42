//! A minimal UE for the MME tests: builds uplink NAS and reacts to downlink NAS
//! with proto-nas and aka (what the RAN emulator's UE does, reduced to the test).

#![allow(dead_code)]

use proto_nas::{msg, Direction, Guti, Nas, NasSecurity, SecurityHeader};

pub const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];
/// EEA0-2 / EIA0-2.
pub const UE_NET_CAP: [u8; 2] = [0xe0, 0xe0];

/// What the UE did with a downlink NAS message.
#[derive(Debug, PartialEq)]
pub enum Reaction {
    /// Send this uplink NAS PDU.
    Reply(Vec<u8>),
    Accepted {
        guti: Guti,
        ip: [u8; 4],
        ebi: u8,
    },
    AuthReject,
    AttachReject(u8),
    DetachAccept,
    Other(Nas),
}

pub struct TestUe {
    pub imsi: String,
    k: [u8; 16],
    opc: [u8; 16],
    /// Answer with a wrong RES (to test AUTHENTICATION REJECT).
    pub wrong_res: bool,
    kasme: Option<[u8; 32]>,
    pub sec: Option<NasSecurity>,
    pub guti: Option<Guti>,
}

fn hex16(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

impl TestUe {
    pub fn new(imsi: &str, k: &str, opc: &str) -> TestUe {
        TestUe {
            imsi: imsi.into(),
            k: hex16(k),
            opc: hex16(opc),
            wrong_res: false,
            kasme: None,
            sec: None,
            guti: None,
        }
    }

    /// Subscriber N of crates/hss/subscribers.example.csv.
    pub fn example(n: u32) -> TestUe {
        TestUe::new(
            &format!("00101{n:010}"),
            &format!("465b5ce8b199b49faa5f0a2e{n:08}"),
            &format!("cd63cb71954a9f4e48a5994e{n:08}"),
        )
    }

    pub fn attach_request(&self) -> Vec<u8> {
        msg::attach_request(&self.imsi, &UE_NET_CAP, &Default::default()).unwrap()
    }

    pub fn kenb(&self) -> Option<[u8; 32]> {
        // The UE's last uplink COUNT is the SECURITY MODE COMPLETE's.
        let sec = self.sec.as_ref()?;
        Some(sec.kenb(sec.count(Direction::Uplink)?.checked_sub(1)?))
    }

    fn protect(&mut self, plain: Vec<u8>) -> Vec<u8> {
        let sec = self.sec.as_mut().expect("security context");
        sec.protect(&plain, SecurityHeader::IntegrityCiphered, Direction::Uplink)
            .unwrap()
    }

    pub fn attach_complete(&mut self, ebi: u8) -> Vec<u8> {
        let p = msg::attach_complete(ebi).unwrap();
        self.protect(p)
    }

    pub fn detach_request(&mut self, switch_off: bool) -> Vec<u8> {
        let guti = self.guti.expect("attached");
        let ksi = self.sec.as_ref().map(|s| s.ksi).unwrap_or(7);
        let p = msg::detach_request(switch_off, &guti, ksi).unwrap();
        self.protect(p)
    }

    pub fn on_downlink(&mut self, pdu: &[u8]) -> Reaction {
        // A SECURITY MODE COMMAND is verified with the context it starts.
        if pdu.first().map(|b| b >> 4) == Some(3) {
            let kasme = self.kasme.expect("authenticated");
            let inner = msg::parse(&pdu[6..], Direction::Downlink).unwrap();
            let Nas::SecurityModeCommand { eea, eia, ksi, .. } = inner else {
                panic!("new-context header on {inner:?}");
            };
            let mut sec = NasSecurity::new(kasme, ksi, eea, eia).unwrap();
            sec.unprotect(pdu, Direction::Downlink).expect("SMC MAC");
            let done = msg::security_mode_complete().unwrap();
            let wire = sec
                .protect(
                    &done,
                    SecurityHeader::IntegrityCipheredNewContext,
                    Direction::Uplink,
                )
                .unwrap();
            self.sec = Some(sec);
            return Reaction::Reply(wire);
        }
        let opened = proto_nas::security::open(pdu, self.sec.as_mut(), Direction::Downlink)
            .expect("downlink NAS opens");
        match opened.nas {
            Nas::AuthenticationRequest { rand, autn, .. } => {
                let (res, ck, ik, _sqn) =
                    aka::check_autn(&self.k, &self.opc, &rand, &autn).expect("AUTN valid");
                self.kasme = Some(aka::kasme_from_autn(&ck, &ik, &PLMN, &autn));
                let mut res = res.to_vec();
                if self.wrong_res {
                    res[0] ^= 0xff;
                }
                Reaction::Reply(msg::authentication_response(&res).unwrap())
            }
            Nas::AuthenticationReject => Reaction::AuthReject,
            Nas::AttachReject { cause } => Reaction::AttachReject(cause),
            Nas::AttachAccept {
                guti, ue_ipv4, ebi, ..
            } => {
                self.guti = guti;
                Reaction::Accepted {
                    guti: guti.expect("GUTI"),
                    ip: ue_ipv4.expect("IPv4"),
                    ebi,
                }
            }
            Nas::DetachAccept => Reaction::DetachAccept,
            other => Reaction::Other(other),
        }
    }
}
