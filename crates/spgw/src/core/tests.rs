use super::*;
use proto_gtpv2c::{rat_type, BearerQos, Gtpv2};

fn core() -> Core {
    Core::new(CoreConfig {
        s11_addr: Ipv4Addr::new(10, 77, 1, 30),
        s1u_addr: Ipv4Addr::new(10, 77, 1, 30),
        recovery: 4,
        dns: vec![Ipv4Addr::new(8, 8, 8, 8)],
        mtu: 1400,
        pool: IpPool::new(
            Ipv4Addr::new(10, 45, 0, 0),
            16,
            &[Ipv4Addr::new(10, 45, 0, 1)],
        )
        .unwrap(),
    })
}

const MME: &str = "10.77.1.20:2123";

fn csr(imsi: &str, seq: u32) -> Vec<u8> {
    Gtpv2 {
        teid: Some(0),
        seq,
        msg: Message::CreateSessionRequest(CreateSessionRequest {
            imsi: imsi.into(),
            msisdn: None,
            mei: None,
            uli: None,
            serving_network: None,
            rat_type: rat_type::EUTRAN,
            sender_fteid: Fteid::v4(iface::S11_MME, 0x77, Ipv4Addr::new(10, 77, 1, 20)),
            pgw_s5s8_fteid: None,
            apn: "internet".into(),
            selection_mode: None,
            pdn_type: Some(pdn_type::IPV4),
            paa: None,
            apn_restriction: None,
            ambr: None,
            pco: Some(proto_gtpv2c::Pco {
                containers: vec![(proto_gtpv2c::pco::id::DNS_IPV4, vec![])],
            }),
            bearer_contexts: vec![BearerContext {
                ebi: 5,
                qos: Some(BearerQos::default_bearer()),
                ..Default::default()
            }],
            recovery: None,
        }),
    }
    .encode()
    .unwrap()
}

fn reply(c: &mut Core, b: &[u8]) -> Gtpv2 {
    let out = c.handle_s11(b, MME.parse().unwrap(), Instant::now());
    proto_gtpv2c::decode(&out.reply.expect("a reply")).unwrap()
}

#[test]
fn create_modify_delete() {
    let mut c = core();
    let t0 = Instant::now();
    let first = c
        .handle_s11(&csr("001010000000001", 1), MME.parse().unwrap(), t0)
        .reply
        .unwrap();
    let r = proto_gtpv2c::decode(&first).unwrap();
    assert_eq!(r.teid, Some(0x77));
    let Message::CreateSessionResponse(resp) = r.msg else {
        panic!("{r:?}")
    };
    assert_eq!(resp.cause, cause::REQUEST_ACCEPTED);
    assert_eq!(resp.paa, Some(Paa::Ipv4(Ipv4Addr::new(10, 45, 0, 2))));
    assert_eq!(resp.pco.unwrap().dns_servers(), [Ipv4Addr::new(8, 8, 8, 8)]);
    let s11 = resp.sender_fteid.unwrap().teid;
    let s1u = resp.bearer_contexts[0].fteid(0).unwrap().teid;
    assert_ne!(s11, s1u);
    // Retransmission: the same bytes again, no second session.
    let again = c.handle_s11(
        &csr("001010000000001", 1),
        MME.parse().unwrap(),
        t0 + Duration::from_secs(3),
    );
    assert_eq!(again.reply.unwrap(), first);
    assert!(!again.changed);
    assert_eq!(c.tunnels().len(), 1);

    let mbr = Gtpv2 {
        teid: Some(s11),
        seq: 2,
        msg: Message::ModifyBearerRequest(ModifyBearerRequest {
            bearer_contexts: vec![BearerContext {
                ebi: 5,
                fteids: vec![(
                    0,
                    Fteid::v4(iface::S1U_ENODEB, 0x99, Ipv4Addr::new(10, 77, 0, 21)),
                )],
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    let r = reply(&mut c, &mbr.encode().unwrap());
    let Message::ModifyBearerResponse(m) = r.msg else {
        panic!()
    };
    assert_eq!(m.cause, cause::REQUEST_ACCEPTED);
    let t = &c.tunnels()[0];
    assert_eq!(
        (t.enb_teid, t.enb_addr),
        (Some(0x99), Some(Ipv4Addr::new(10, 77, 0, 21)))
    );

    // Downlink to the UE goes to the eNB F-TEID.
    let pkt =
        proto_gtpu::icmp::echo_request(Ipv4Addr::new(8, 8, 8, 8), t.ue_ip, 1, 1, b"x").unwrap();
    let SgiAction::ToEnb(g, to) = c.handle_sgi(&pkt, t0) else {
        panic!()
    };
    assert_eq!(to, "10.77.0.21:2152".parse().unwrap());
    assert_eq!(
        proto_gtpu::decode(&g).unwrap(),
        Gtpu::GPdu {
            teid: 0x99,
            seq: None,
            payload: &pkt
        }
    );

    // Uplink from the UE's address is forwarded, a spoofed source is not.
    let up =
        proto_gtpu::icmp::echo_request(t.ue_ip, Ipv4Addr::new(10, 45, 0, 1), 1, 1, b"x").unwrap();
    let g = proto_gtpu::encode_gpdu(s1u, &up).unwrap();
    assert_eq!(
        c.handle_s1u(&g, "10.77.0.21:2152".parse().unwrap()),
        S1uAction::ToSgi(&up)
    );
    let g = proto_gtpu::encode_gpdu(s1u, &pkt).unwrap();
    assert_eq!(
        c.handle_s1u(&g, "10.77.0.21:2152".parse().unwrap()),
        S1uAction::Nothing
    );

    // S1 release: downlink stops until the next Modify Bearer.
    let rab = Gtpv2 {
        teid: Some(s11),
        seq: 10,
        msg: Message::ReleaseAccessBearersRequest(Default::default()),
    };
    let r = reply(&mut c, &rab.encode().unwrap());
    assert!(
        matches!(r.msg, Message::ReleaseAccessBearersResponse(x) if x.cause == cause::REQUEST_ACCEPTED)
    );
    assert_eq!(c.tunnels()[0].enb_teid, None);
    assert!(matches!(c.handle_sgi(&pkt, t0), SgiAction::Notify(..)));
    reply(&mut c, &Gtpv2 { seq: 11, ..mbr }.encode().unwrap());
    assert!(matches!(c.handle_sgi(&pkt, t0), SgiAction::ToEnb(..)));

    let dsr = Gtpv2 {
        teid: Some(s11),
        seq: 3,
        msg: Message::DeleteSessionRequest(DeleteSessionRequest {
            linked_ebi: Some(5),
            ..Default::default()
        }),
    };
    let r = reply(&mut c, &dsr.encode().unwrap());
    assert_eq!(r.teid, Some(0x77));
    assert!(matches!(
        r.msg,
        Message::DeleteSessionResponse(DeleteSessionResponse {
            cause: cause::REQUEST_ACCEPTED,
            ..
        })
    ));
    assert!(c.tunnels().is_empty());
    // Unknown TEID now.
    let r = reply(&mut c, &Gtpv2 { seq: 4, ..dsr }.encode().unwrap());
    assert!(matches!(
        r.msg,
        Message::DeleteSessionResponse(DeleteSessionResponse {
            cause: cause::CONTEXT_NOT_FOUND,
            ..
        })
    ));
    assert_eq!(r.teid, Some(0));
}

#[test]
fn unknown_teid_gets_error_indication_and_echo_is_answered() {
    let mut c = core();
    let g = proto_gtpu::encode_gpdu(0xdead, b"\x45").unwrap();
    let S1uAction::Reply(b, to) = c.handle_s1u(&g, "10.77.0.21:40000".parse().unwrap()) else {
        panic!()
    };
    assert_eq!(to, "10.77.0.21:2152".parse().unwrap());
    assert_eq!(
        proto_gtpu::decode(&b).unwrap(),
        Gtpu::ErrorIndication {
            teid: 0xdead,
            peer: "10.77.1.30".parse().unwrap()
        }
    );
    let e = Gtpu::EchoRequest { seq: 9 }.encode().unwrap();
    let S1uAction::Reply(b, _) = c.handle_s1u(&e, "10.77.0.21:2152".parse().unwrap()) else {
        panic!()
    };
    assert_eq!(
        proto_gtpu::decode(&b).unwrap(),
        Gtpu::EchoResponse {
            seq: 9,
            recovery: 0
        }
    );
    let r = reply(
        &mut c,
        &Gtpv2 {
            teid: None,
            seq: 5,
            msg: Message::EchoRequest(Echo { recovery: 1 }),
        }
        .encode()
        .unwrap(),
    );
    assert_eq!(r.msg, Message::EchoResponse(Echo { recovery: 4 }));
}

#[test]
fn same_sequence_number_other_request_is_not_a_retransmission() {
    // An MME that restarted numbers from 1 again: its first Create Session Request
    // (another UE) must get a session of its own, not the cached answer of the old
    // instance's request 1.
    let mut c = core();
    let t0 = Instant::now();
    let a = reply(&mut c, &csr("001010000000001", 1));
    let b = c
        .handle_s11(&csr("001010000000002", 1), MME.parse().unwrap(), t0)
        .reply
        .unwrap();
    assert_ne!(proto_gtpv2c::decode(&b).unwrap(), a);
    assert_eq!(c.tunnels().len(), 2);
}

#[test]
fn garbage_is_dropped() {
    let mut c = core();
    for b in [
        &b""[..],
        b"\x48",
        b"garbage!garbage!",
        &[0x48, 32, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0],
    ] {
        assert!(c
            .handle_s11(b, MME.parse().unwrap(), Instant::now())
            .reply
            .is_none());
        assert_eq!(c.handle_s1u(b, MME.parse().unwrap()), S1uAction::Nothing);
        assert_eq!(c.handle_sgi(b, Instant::now()), SgiAction::Nothing);
    }
}

#[test]
fn reattach_replaces_session_and_restore_round_trips() {
    let mut c = core();
    reply(&mut c, &csr("001010000000001", 1));
    reply(&mut c, &csr("001010000000002", 2));
    reply(&mut c, &csr("001010000000001", 3));
    let ts = c.tunnels();
    assert_eq!(ts.len(), 2);
    let mut d = core();
    d.restore(ts.clone()).unwrap();
    assert_eq!(d.tunnels(), ts);
    // New sessions after a restore never collide with restored TEIDs/addresses.
    let r = reply(&mut d, &csr("001010000000003", 1));
    let Message::CreateSessionResponse(resp) = r.msg else {
        panic!()
    };
    let ip = resp.paa.unwrap().ipv4().unwrap();
    assert!(ts
        .iter()
        .all(|t| t.ue_ip != ip && t.sgw_s11_teid != resp.sender_fteid.unwrap().teid));
    // Duplicates are refused.
    let mut e = core();
    assert!(e.restore([ts.clone(), ts].concat()).is_err());
}

#[test]
fn sync_makes_the_table_exactly_the_list_or_nothing() {
    let mut master = core();
    reply(&mut master, &csr("001010000000001", 1));
    let old = master.tunnels();
    reply(&mut master, &csr("001010000000002", 2));
    let current = master.tunnels();
    // A SPGW restored from an older checkpoint knows only the first tunnel.
    let mut restored = core();
    restored.restore(old.clone()).unwrap();
    restored.sync(current.clone()).unwrap();
    assert_eq!(restored.tunnels(), current);
    // A list that shrank frees addresses; a bad list changes nothing.
    restored.sync(old.clone()).unwrap();
    assert_eq!(restored.tunnels(), old);
    assert!(restored.sync([current.clone(), current].concat()).is_err());
    assert_eq!(restored.tunnels(), old);
}

#[test]
fn pdn_types() {
    let mut c = core();
    let with_type = |t: u8| {
        let mut m = proto_gtpv2c::decode(&csr("001010000000009", u32::from(t))).unwrap();
        if let Message::CreateSessionRequest(r) = &mut m.msg {
            r.pdn_type = Some(t);
        }
        m.encode().unwrap()
    };
    let cause_of = |g: Gtpv2| match g.msg {
        Message::CreateSessionResponse(r) => (r.cause, r.paa),
        other => panic!("{other:?}"),
    };
    let (c6, paa6) = cause_of(reply(&mut c, &with_type(pdn_type::IPV6)));
    assert_eq!((c6, paa6), (cause::PREFERRED_PDN_TYPE_NOT_SUPPORTED, None));
    let (c46, paa46) = cause_of(reply(&mut c, &with_type(pdn_type::IPV4V6)));
    assert_eq!(c46, cause::NEW_PDN_TYPE_NETWORK_PREFERENCE);
    assert!(matches!(paa46, Some(Paa::Ipv4(_))));
}

#[test]
fn pool_exhaustion_and_exclusion() {
    let mut p = IpPool::new(
        Ipv4Addr::new(10, 0, 0, 0),
        30,
        &[Ipv4Addr::new(10, 0, 0, 1)],
    )
    .unwrap();
    assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(p.allocate(), None);
    p.release(Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert!(!p.reserve(Ipv4Addr::new(10, 0, 0, 3)));
}
