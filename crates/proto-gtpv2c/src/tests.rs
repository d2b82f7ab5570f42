use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

#[test]
fn every_sample_round_trips() {
    for m in samples::all() {
        let b = m.encode().unwrap();
        assert_eq!(decode(&b).unwrap(), m, "{}", m.msg.name());
        let h = decode_header(&b).unwrap();
        assert_eq!((h.seq, h.teid, h.end), (m.seq, m.teid, b.len()));
    }
}

#[test]
fn echo_request_known_bytes() {
    let b = Gtpv2 {
        teid: None,
        seq: 0x010203,
        msg: Message::EchoRequest(Echo { recovery: 5 }),
    }
    .encode()
    .unwrap();
    assert_eq!(b, [0x40, 1, 0, 9, 1, 2, 3, 0, 3, 0, 1, 0, 5]);
}

#[test]
fn known_ie_bytes() {
    // IMSI 001010000000001 -> TBCD (low nibble first) 00 01 01 00 00 00 00 f1 ; APN "internet".
    let Message::CreateSessionRequest(csr) = samples::all().remove(2).msg else {
        unreachable!()
    };
    let mut o = Vec::new();
    put_ie(&mut o, ie_type::IMSI, 0, |o| put_tbcd(o, &csr.imsi)).unwrap();
    assert_eq!(o, [1, 0, 8, 0, 0x00, 0x01, 0x01, 0, 0, 0, 0, 0xf1]);
    o.clear();
    put_ie(&mut o, ie_type::APN, 0, |o| put_apn(o, "internet")).unwrap();
    assert_eq!(&o[..5], [71, 0, 9, 0, 8]);
    // PLMN 001/01 -> 00 f1 10.
    assert_eq!(Plmn::TEST.encode().unwrap(), [0x00, 0xf1, 0x10]);
    let p3 = Plmn {
        mcc: 310,
        mnc: 260,
        mnc_3_digits: true,
    };
    assert_eq!(p3.encode().unwrap(), [0x13, 0x00, 0x62]);
    assert_eq!(Plmn::decode(&p3.encode().unwrap(), 0).unwrap(), p3);
    // F-TEID S1-U SGW, TEID 0x300, 10.77.1.30.
    o.clear();
    Fteid::v4(iface::S1U_SGW, 0x300, "10.77.1.30".parse().unwrap())
        .encode(&mut o)
        .unwrap();
    assert_eq!(o, [0x81, 0, 0, 3, 0, 10, 77, 1, 30]);
}

#[test]
fn unknown_ies_are_skipped() {
    let m = &samples::all()[0];
    let mut b = m.encode().unwrap();
    // Append a Private Extension-like unknown IE (type 200, 3 bytes) and fix the length.
    b.extend_from_slice(&[200, 0, 3, 0, 1, 2, 3]);
    let len = (b.len() - 4) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(&decode(&b).unwrap(), m);
}

#[test]
fn missing_mandatory_ie_is_err() {
    let b = Gtpv2 {
        teid: Some(1),
        seq: 1,
        msg: Message::ModifyBearerRequest(ModifyBearerRequest::default()),
    }
    .encode()
    .unwrap();
    // Same bytes re-labelled as a Delete Session Response: the Cause is missing.
    let mut d = b.clone();
    d[1] = msg_type::DELETE_SESSION_RESPONSE;
    assert_eq!(decode(&d), Err(Error::MissingIe(ie_type::CAUSE)));
    d[1] = msg_type::CREATE_SESSION_REQUEST;
    assert!(decode(&d).is_err());
}

#[test]
fn bad_values_fail_to_encode() {
    let mut m = samples::all().remove(2);
    if let Message::CreateSessionRequest(c) = &mut m.msg {
        c.imsi = "00101abc".into();
    }
    assert!(m.encode().is_err());
    let mut m = samples::all().remove(2);
    if let Message::CreateSessionRequest(c) = &mut m.msg {
        c.apn = "a..b".into();
    }
    assert!(m.encode().is_err());
}

#[test]
fn garbage_is_err_never_panics() {
    assert!(decode(&[]).is_err());
    assert!(decode(&[0x48, 32, 0, 4, 0, 0]).is_err());
    assert!(decode(&[0x20, 1, 0, 4, 0, 0, 1, 0]).is_err()); // version 1
    assert!(decode(&[0x48, 32, 0, 2, 0, 0]).is_err()); // length shorter than TEID header
                                                       // Truncate every sample at every length, and flip bytes: never panic.
    for m in samples::all() {
        let b = m.encode().unwrap();
        for n in 0..b.len() {
            let _ = decode(&b[..n]);
            let mut c = b.clone();
            c[n] ^= 0xff;
            let _ = decode(&c);
            let mut c = b.clone();
            c[n] = c[n].wrapping_add(1);
            let _ = decode(&c);
        }
    }
    let types: Vec<u8> = samples::all().iter().map(|m| m.msg.msg_type()).collect();
    let mut x: u32 = 0xdead_beef;
    for n in 0..40_000 {
        let len = n % 96;
        let mut v: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        if len >= 4 {
            v[0] = 0x48;
            v[1] = types[v[1] as usize % types.len()];
            let l = (len - 4) as u16;
            v[2..4].copy_from_slice(&l.to_be_bytes());
        }
        let _ = decode(&v);
    }
}

#[test]
fn new_messages_known_bytes() {
    // DDN with EBI 5 and ARP PCI=1 PL=8 PVI=1: 0x40 | 8 << 2 | 1 = 0x61.
    let b = Gtpv2 {
        teid: Some(0x100),
        seq: 0x10,
        msg: Message::DownlinkDataNotification(DownlinkDataNotification {
            cause: None,
            ebis: vec![5],
            arp: Some(BearerQos::default_bearer().arp()),
        }),
    }
    .encode()
    .unwrap();
    #[rustfmt::skip]
    let want = [
        0x48, 176, 0, 18, 0, 0, 1, 0, 0, 0, 0x10, 0,
        73, 0, 1, 0, 5,
        155, 0, 1, 0, 0x61,
    ];
    assert_eq!(b, want);
    // Dedicated bearers to delete go in EBI instance 1, the PDN's in instance 0.
    let b = Gtpv2 {
        teid: Some(0x100),
        seq: 0x12,
        msg: Message::DeleteBearerRequest(DeleteBearerRequest {
            ebis: vec![6, 7],
            ..Default::default()
        }),
    }
    .encode()
    .unwrap();
    assert_eq!(&b[12..], [73, 0, 1, 1, 6, 73, 0, 1, 1, 7]);
    let pdn = Gtpv2 {
        teid: Some(0x100),
        seq: 0x13,
        msg: Message::DeleteBearerRequest(DeleteBearerRequest {
            linked_ebi: Some(5),
            ebis: vec![],
            cause: Some(5), // ISR deactivation
        }),
    };
    let b = pdn.encode().unwrap();
    assert_eq!(&b[12..], [73, 0, 1, 0, 5, 2, 0, 2, 0, 5, 0]);
    assert_eq!(decode(&b).unwrap(), pdn);
    // PAA IPv6: type 2, prefix length 64, then the 16 octets.
    let paa = Paa::Ipv6 {
        prefix_len: 64,
        addr: "2001:db8:45:1::2".parse().unwrap(),
    };
    let mut o = Vec::new();
    paa.encode(&mut o).unwrap();
    assert_eq!(&o[..4], [2, 64, 0x20, 0x01]);
    assert_eq!(o.len(), 18);
    assert_eq!(paa.ipv6(), Some(("2001:db8:45:1::2".parse().unwrap(), 64)));
    assert_eq!(paa.ipv4(), None);
}

/// Vectors from the tests of the gtp-rs project (github.com/ErvinsK/gtp-rs), built
/// independently of this codec.
#[test]
fn third_party_vectors() {
    // Create Bearer Request: Linked EBI 5, PCO, one Bearer Context with EBI 0,
    // an S5/S8-U PGW F-TEID (instance 2), Bearer QoS (PL 11, QCI 9) and Charging ID.
    #[rustfmt::skip]
    let cbreq = [
        0x48, 0x5f, 0x00, 0x5d, 0x09, 0x09, 0xa4, 0x56, 0x00, 0x00, 0x2f, 0x00, 0x49, 0x00, 0x01,
        0x00, 0x05, 0x4e, 0x00, 0x14, 0x00, 0x80, 0x80, 0x21, 0x10, 0x02, 0x00, 0x00, 0x10, 0x81,
        0x06, 0x08, 0x08, 0x08, 0x08, 0x83, 0x06, 0x0a, 0x40, 0xd0, 0x61, 0x5d, 0x00, 0x34, 0x00,
        0x49, 0x00, 0x01, 0x00, 0x00, 0x57, 0x00, 0x09, 0x02, 0x85, 0x3b, 0x95, 0x98, 0x5a, 0x3e,
        0x99, 0x89, 0x55, 0x50, 0x00, 0x16, 0x00, 0x2c, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5e,
        0x00, 0x04, 0x00, 0x01, 0x62, 0x9c, 0xc4,
    ];
    let m = decode(&cbreq).unwrap();
    assert_eq!((m.teid, m.seq), (Some(0x0909_a456), 0x2f));
    let Message::CreateBearerRequest(r) = m.msg else {
        panic!("{m:?}")
    };
    assert_eq!(r.linked_ebi, 5);
    let bc = &r.bearer_contexts[0];
    assert_eq!(bc.ebi, 0);
    assert_eq!(
        bc.fteid(2),
        Some(&Fteid::v4(
            iface::S5S8_PGW_GTPU,
            0x3b95_985a,
            Ipv4Addr::new(62, 153, 137, 85)
        ))
    );
    let qos = bc.qos.unwrap();
    assert_eq!(
        (qos.priority_level, qos.qci, qos.pci, qos.pvi),
        (11, 9, false, false)
    );
    assert_eq!(bc.charging_id, Some(23_239_876));

    // Downlink Data Notification: Cause 6, EBI 5, ARP 0, then IMSI, Sender F-TEID,
    // Indication, Load and Overload Control (grouped) and Paging and Service
    // Information, all skipped. gtp-rs numbers this message 179 (PGW Restart
    // Notification in Table 6.1-1); it is 176 here.
    #[rustfmt::skip]
    let mut ddn = vec![
        0x48, 0xb3, 0x00, 0x7d, 0x09, 0x09, 0xa4, 0x56, 0x00, 0x00, 0x2f, 0x00, 0x02, 0x00, 0x02,
        0x00, 0x06, 0x00, 0x49, 0x00, 0x01, 0x00, 0x05, 0x9b, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x06, 0x00, 0x09, 0x41, 0x50, 0x01, 0x01, 0x37, 0x57, 0x00, 0x09, 0x00, 0x85, 0x3b, 0x95,
        0x98, 0x5a, 0x3e, 0x99, 0x89, 0x55, 0x4d, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xb5, 0x00, 0x1f, 0x00, 0xb7, 0x00, 0x04, 0x00, 0xff, 0xaa,
        0xee, 0x11, 0xb6, 0x00, 0x01, 0x00, 0x60, 0xb8, 0x00, 0x0e, 0x00, 0x64, 0x04, 0x74, 0x65,
        0x73, 0x74, 0x03, 0x6e, 0x65, 0x74, 0x03, 0x63, 0x6f, 0x6d, 0xb4, 0x00, 0x12, 0x00, 0xb7,
        0x00, 0x04, 0x00, 0xff, 0xaa, 0xee, 0x11, 0xb6, 0x00, 0x01, 0x00, 0x60, 0x9c, 0x00, 0x01,
        0x00, 0x7f, 0xba, 0x00, 0x03, 0x00, 0x05, 0x01, 0x03,
    ];
    assert_eq!(decode(&ddn), Err(Error::UnknownMessageType(179)));
    ddn[1] = msg_type::DOWNLINK_DATA_NOTIFICATION;
    let m = decode(&ddn).unwrap();
    assert_eq!(
        m.msg,
        Message::DownlinkDataNotification(DownlinkDataNotification {
            cause: Some(cause::ERROR_INDICATION_RECEIVED),
            ebis: vec![5],
            arp: Some(Arp {
                pci: false,
                priority_level: 0,
                pvi: false
            }),
        })
    );
    assert!(m.msg.is_request());
}

#[test]
fn request_classification() {
    use msg_type::*;
    for t in [
        DOWNLINK_DATA_NOTIFICATION,
        CREATE_BEARER_REQUEST,
        DELETE_BEARER_REQUEST,
    ] {
        assert!(is_request(t), "{t}");
    }
    for t in [
        DOWNLINK_DATA_NOTIFICATION_ACKNOWLEDGE,
        DOWNLINK_DATA_NOTIFICATION_FAILURE_INDICATION,
        CREATE_BEARER_RESPONSE,
        DELETE_BEARER_RESPONSE,
    ] {
        assert!(!is_request(t), "{t}");
    }
}

#[test]
fn new_messages_reject_what_they_cannot_mean() {
    let enc = |msg| {
        Gtpv2 {
            teid: Some(1),
            seq: 1,
            msg,
        }
        .encode()
        .unwrap()
    };
    // Nothing to delete, no bearer to create, and no Cause in a response.
    let b = enc(Message::DeleteBearerRequest(DeleteBearerRequest::default()));
    assert_eq!(decode(&b), Err(Error::MissingIe(ie_type::EBI)));
    let b = enc(Message::CreateBearerRequest(CreateBearerRequest {
        linked_ebi: 5,
        bearer_contexts: vec![],
    }));
    assert_eq!(decode(&b), Err(Error::MissingIe(ie_type::BEARER_CONTEXT)));
    let mut c = b.clone();
    c[1] = msg_type::CREATE_BEARER_RESPONSE;
    assert_eq!(decode(&c), Err(Error::MissingIe(ie_type::CAUSE)));
    c[1] = msg_type::DOWNLINK_DATA_NOTIFICATION_FAILURE_INDICATION;
    assert_eq!(decode(&c), Err(Error::MissingIe(ie_type::CAUSE)));
    let b = enc(Message::CreateBearerResponse(CreateBearerResponse {
        cause: cause::REQUEST_ACCEPTED,
        ..Default::default()
    }));
    assert_eq!(decode(&b), Err(Error::MissingIe(ie_type::BEARER_CONTEXT)));
    // A prefix longer than 128 bits is neither sent nor accepted.
    let paa = Paa::Ipv6 {
        prefix_len: 129,
        addr: Ipv6Addr::UNSPECIFIED,
    };
    assert!(paa.encode(&mut Vec::new()).is_err());
    let paa_with = |len: u8| {
        let mut v = vec![pdn_type::IPV6, len];
        v.extend_from_slice(&[0; 16]);
        let raw = RawIe {
            ty: ie_type::PAA,
            instance: 0,
            value: &v,
        };
        Paa::decode(&raw)
    };
    assert!(paa_with(129).is_err());
    assert!(paa_with(128).is_ok());
}
