//! The UE of the MME tests: proto-nas's `UeNas` (what the RAN emulator uses), with
//! the example subscribers of crates/hss/subscribers.example.csv.

#![allow(dead_code)]

pub mod harness;

use proto_nas::{Guti, UeEvent, UeNas, UpdateType, Usim};

pub const PLMN: [u8; 3] = [0x00, 0xf1, 0x10];

/// What the UE did with a downlink NAS message (UeEvent, reduced for asserts).
#[derive(Debug, PartialEq)]
pub enum Reaction {
    Reply(Vec<u8>),
    Accepted {
        guti: Guti,
        ip: [u8; 4],
        ebi: u8,
    },
    /// An ATTACH ACCEPT of an IPv6 or IPv4v6 PDN connection.
    AcceptedV6 {
        ip: Option<[u8; 4]>,
        iid: [u8; 8],
        ebi: u8,
    },
    AuthReject,
    AttachReject(u8),
    DetachAccept,
    Other(String),
}

pub struct TestUe {
    pub imsi: String,
    nas: UeNas,
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
        let usim = Usim {
            imsi: imsi.into(),
            k: hex16(k),
            opc: hex16(opc),
            sqn_ms: None,
        };
        TestUe {
            imsi: imsi.into(),
            nas: UeNas::new(usim, PLMN),
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

    /// Makes the USIM believe it has seen SQN `sqn` (forces a synch failure).
    pub fn set_sqn_ms(&mut self, sqn: u64) {
        self.nas.usim.sqn_ms = Some(sqn);
    }

    /// Offers only EEA0 (and EIA1/EIA2): the MME then uses the null cipher, which
    /// tshark reads.
    pub fn only_null_ciphering(&mut self) {
        self.nas.ue_network_capability = vec![0x80, 0x60];
    }

    /// The PDN type of the PDN CONNECTIVITY REQUEST in the ATTACH REQUEST.
    pub fn set_pdn_type(&mut self, pdn_type: u8) {
        self.nas.pdn.pdn_type = pdn_type;
    }

    pub fn set_wrong_res(&mut self) {
        self.nas.corrupt_res = true;
    }

    pub fn attach_request(&self) -> Vec<u8> {
        proto_nas::msg::attach_request(&self.imsi, &self.nas.ue_network_capability, &self.nas.pdn)
            .unwrap()
    }

    /// ATTACH REQUEST by a GUTI this MME may not know.
    pub fn attach_request_by_guti(&self, guti: &Guti) -> Vec<u8> {
        proto_nas::msg::attach_request_by_guti(guti, &self.nas.ue_network_capability, &self.nas.pdn)
            .unwrap()
    }

    /// Any uplink message, protected with the UE's context.
    pub fn protect(&mut self, plain: Vec<u8>) -> Vec<u8> {
        self.nas.protect(plain).unwrap()
    }

    /// TRACKING AREA UPDATE REQUEST with the UE's GUTI, integrity protected.
    pub fn tau_request(&mut self, update_type: UpdateType, active: bool) -> Vec<u8> {
        self.nas.tau_request(update_type, active).unwrap()
    }

    pub fn kenb(&self) -> Option<[u8; 32]> {
        self.nas.kenb()
    }

    pub fn attach_complete(&mut self, ebi: u8) -> Vec<u8> {
        self.nas.attach_complete(ebi).unwrap()
    }

    pub fn detach_request(&mut self, switch_off: bool) -> Vec<u8> {
        self.nas.detach_request(switch_off).unwrap()
    }

    /// The short SERVICE REQUEST from ECM-IDLE.
    pub fn service_request(&mut self) -> Vec<u8> {
        self.nas.service_request().unwrap()
    }

    pub fn guti(&self) -> Option<Guti> {
        self.nas.guti()
    }

    pub fn on_downlink(&mut self, pdu: &[u8]) -> Reaction {
        match self.nas.on_downlink(pdu).expect("downlink NAS handled") {
            UeEvent::Send(b) => Reaction::Reply(b),
            UeEvent::Attached {
                ipv4,
                ipv6_iid: Some(iid),
                ebi,
                ..
            } => Reaction::AcceptedV6 { ip: ipv4, iid, ebi },
            UeEvent::Attached {
                guti, ipv4, ebi, ..
            } => Reaction::Accepted {
                guti: guti.expect("GUTI"),
                ip: ipv4.expect("IPv4"),
                ebi,
            },
            UeEvent::AuthenticationRejected => Reaction::AuthReject,
            UeEvent::AttachRejected { cause } => Reaction::AttachReject(cause),
            UeEvent::DetachAccepted => Reaction::DetachAccept,
            UeEvent::Other(n) => Reaction::Other(format!("{n:?}")),
        }
    }
}
