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
    let mut x: u32 = 0xdead_beef;
    for n in 0..20_000 {
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
            v[1] = 32 + (v[1] % 6);
            let l = (len - 4) as u16;
            v[2..4].copy_from_slice(&l.to_be_bytes());
        }
        let _ = decode(&v);
    }
}
