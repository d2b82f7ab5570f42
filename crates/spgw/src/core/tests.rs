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
        pool6: None,
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
        proto_gtpu::icmp::echo_request(Ipv4Addr::new(8, 8, 8, 8), t.ue_ip.unwrap(), 1, 1, b"x")
            .unwrap();
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
        proto_gtpu::icmp::echo_request(t.ue_ip.unwrap(), Ipv4Addr::new(10, 45, 0, 1), 1, 1, b"x")
            .unwrap();
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
        .all(|t| t.ue_ip != Some(ip) && t.sgw_s11_teid != resp.sender_fteid.unwrap().teid));
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

// ------------------------------------------------------------ idle UEs

const ENB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);

fn mbr(s11: u32, seq: u32, enb_teid: u32, enb: Ipv4Addr) -> Vec<u8> {
    Gtpv2 {
        teid: Some(s11),
        seq,
        msg: Message::ModifyBearerRequest(ModifyBearerRequest {
            bearer_contexts: vec![BearerContext {
                ebi: 5,
                fteids: vec![(0, Fteid::v4(iface::S1U_ENODEB, enb_teid, enb))],
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
    .encode()
    .unwrap()
}

fn rab(s11: u32, seq: u32) -> Vec<u8> {
    Gtpv2 {
        teid: Some(s11),
        seq,
        msg: Message::ReleaseAccessBearersRequest(Default::default()),
    }
    .encode()
    .unwrap()
}

/// Attaches a UE (Create Session, Modify Bearer with eNB TEID 0x99) and releases its
/// access bearers; returns its S11 TEID and address.
fn idle_ue(c: &mut Core, imsi: &str, seq: u32) -> (u32, Ipv4Addr) {
    let Message::CreateSessionResponse(r) = reply(c, &csr(imsi, seq)).msg else {
        panic!()
    };
    let s11 = r.sender_fteid.unwrap().teid;
    reply(c, &mbr(s11, seq + 1, 0x99, ENB));
    let r = reply(c, &rab(s11, seq + 2));
    assert_eq!(
        r.msg,
        Message::ReleaseAccessBearersResponse(ReleaseAccessBearersResponse {
            cause: cause::REQUEST_ACCEPTED,
            recovery: None
        })
    );
    assert_eq!(r.teid, Some(0x77));
    let ue = c
        .tunnels()
        .iter()
        .find(|t| t.sgw_s11_teid == s11)
        .unwrap()
        .ue_ip
        .unwrap();
    (s11, ue)
}

/// A downlink packet to `ue`, told apart from the others by `n`.
fn down(ue: Ipv4Addr, n: u16) -> Vec<u8> {
    proto_gtpu::icmp::echo_request(Ipv4Addr::new(8, 8, 8, 8), ue, 1, n, b"down").unwrap()
}

fn ddn_ack(s11: u32, seq: u32, c: u8) -> Vec<u8> {
    Gtpv2 {
        teid: Some(s11),
        seq,
        msg: Message::DownlinkDataNotificationAcknowledge(
            proto_gtpv2c::DownlinkDataNotificationAcknowledge {
                cause: c,
                recovery: None,
            },
        ),
    }
    .encode()
    .unwrap()
}

/// The DDN a packet for an idle UE triggered: its decoded form.
fn notified(a: SgiAction) -> Gtpv2 {
    let SgiAction::Notify(b, to) = a else {
        panic!("no DDN: {a:?}")
    };
    assert_eq!(to, MME.parse().unwrap());
    proto_gtpv2c::decode(&b).unwrap()
}

/// The inner packets of G-PDUs, after checking they go to `teid` at `enb`.
fn payloads(gpdus: &[(Vec<u8>, SocketAddr)], teid: u32, enb: Ipv4Addr) -> Vec<Vec<u8>> {
    gpdus
        .iter()
        .map(|(g, to)| {
            assert_eq!(*to, SocketAddr::new(IpAddr::V4(enb), GTPU_PORT));
            match proto_gtpu::decode(g).unwrap() {
                Gtpu::GPdu {
                    teid: t, payload, ..
                } if t == teid => payload.to_vec(),
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn release_access_bearers_makes_the_tunnel_idle_in_the_list() {
    let mut c = core();
    let (s11, ue) = idle_ue(&mut c, "001010000000001", 1);
    let t = &c.tunnels()[0];
    assert_eq!((t.enb_teid, t.enb_addr, t.idle), (None, None, true));
    assert_eq!(
        (t.sgw_s11_teid, t.ue_ip, t.mme_s11_teid),
        (s11, Some(ue), 0x77)
    );
    assert_ne!(t.sgw_s1u_teid, 0);
    let json: serde_json::Value = serde_json::to_value(c.tunnels()).unwrap();
    assert_eq!(json[0]["enb_teid"], serde_json::Value::Null);
    assert_eq!(json[0]["idle"], true);
    // The list round-trips: a restored SPGW knows the UE is idle.
    let mut d = core();
    d.restore(c.tunnels()).unwrap();
    assert!(matches!(
        d.handle_sgi(&down(ue, 1), Instant::now()),
        SgiAction::Notify(..)
    ));
    // A connected UE's entry has no idle key: lists read as before.
    reply(&mut c, &mbr(s11, 20, 0x99, ENB));
    let json = serde_json::to_value(c.tunnels()).unwrap();
    assert!(json[0].get("idle").is_none(), "{json}");
}

#[test]
fn downlink_for_idle_ue_is_buffered_and_one_ddn_sent() {
    let mut c = core();
    let (_, ue) = idle_ue(&mut c, "001010000000001", 1);
    let now = Instant::now();
    let ddn = notified(c.handle_sgi(&down(ue, 1), now));
    assert_eq!(ddn.teid, Some(0x77));
    let Message::DownlinkDataNotification(n) = ddn.msg else {
        panic!("{ddn:?}")
    };
    assert_eq!(n.ebis, [5]);
    assert_eq!(n.arp, Some(BearerQos::default_bearer().arp()));
    assert_eq!(n.cause, None);
    for i in 2..=4 {
        assert_eq!(c.handle_sgi(&down(ue, i), now), SgiAction::Buffered);
    }
    assert_eq!(
        c.idle_stats(),
        IdleStats {
            buffered: 4,
            dropped: 0,
            ddn_sent: 1,
            buffered_now: 4
        }
    );
    // Before the first Modify Bearer the UE is attaching, not idle: no paging.
    let Message::CreateSessionResponse(r) = reply(&mut c, &csr("001010000000002", 9)).msg else {
        panic!()
    };
    let attaching = r.paa.unwrap().ipv4().unwrap();
    assert_eq!(c.handle_sgi(&down(attaching, 1), now), SgiAction::Nothing);
    assert_eq!(c.idle_stats().ddn_sent, 1);
}

#[test]
fn ddn_retransmitted_on_t3_then_given_up_after_n3_dropping_the_buffer() {
    let mut c = core();
    let (_, ue) = idle_ue(&mut c, "001010000000001", 1);
    let t0 = Instant::now();
    let SgiAction::Notify(first, mme) = c.handle_sgi(&down(ue, 1), t0) else {
        panic!()
    };
    c.handle_sgi(&down(ue, 2), t0);
    assert!(c.on_timeout(t0 + Duration::from_millis(999)).is_empty());
    for n in 1..=DDN_TIMERS.n3 {
        let due = t0 + DDN_TIMERS.t3 * n;
        assert_eq!(c.poll_timeout(), Some(due));
        // Byte for byte the first transmission (TS 29.274 §7.6).
        assert_eq!(c.on_timeout(due), vec![(first.clone(), mme)]);
    }
    let last = t0 + DDN_TIMERS.window();
    assert!(c.on_timeout(last).is_empty());
    assert_eq!(c.poll_timeout(), None);
    let s = c.idle_stats();
    assert_eq!((s.dropped, s.buffered_now, s.ddn_sent), (2, 0, 1));
    // The UE is still idle: the next packet pages it again.
    let again = notified(c.handle_sgi(&down(ue, 3), last));
    assert_ne!(again.seq, proto_gtpv2c::decode(&first).unwrap().seq);
    assert_eq!(c.idle_stats().ddn_sent, 2);
}

#[test]
fn ack_then_modify_bearer_flushes_the_buffer_in_order_to_the_new_fteid() {
    let mut c = core();
    let (s11, ue) = idle_ue(&mut c, "001010000000001", 1);
    let now = Instant::now();
    let seq = notified(c.handle_sgi(&down(ue, 1), now)).seq;
    c.handle_sgi(&down(ue, 2), now);
    let out = c.handle_s11(
        &ddn_ack(s11, seq, cause::REQUEST_ACCEPTED),
        MME.parse().unwrap(),
        now,
    );
    assert!(out.reply.is_none() && out.downlink.is_empty() && !out.changed);
    // Acknowledged: the DDN is no longer retransmitted, the UE is being paged.
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.handle_sgi(&down(ue, 3), now), SgiAction::Buffered);
    assert_eq!(c.idle_stats().ddn_sent, 1);

    // Service Request done: the eNB's new F-TEID.
    let enb2 = Ipv4Addr::new(10, 77, 0, 22);
    let out = c.handle_s11(&mbr(s11, 50, 0xab, enb2), MME.parse().unwrap(), now);
    let r = proto_gtpv2c::decode(&out.reply.unwrap()).unwrap();
    assert!(
        matches!(r.msg, Message::ModifyBearerResponse(m) if m.cause == cause::REQUEST_ACCEPTED)
    );
    assert!(out.changed);
    assert_eq!(
        payloads(&out.downlink, 0xab, enb2),
        [down(ue, 1), down(ue, 2), down(ue, 3)]
    );
    assert_eq!(c.idle_stats().buffered_now, 0);
    assert!(!c.tunnels()[0].idle);
    // Then normal forwarding.
    let SgiAction::ToEnb(g, to) = c.handle_sgi(&down(ue, 4), now) else {
        panic!()
    };
    assert_eq!(payloads(&[(g, to)], 0xab, enb2), [down(ue, 4)]);
    // The Modify Bearer retransmitted: its cached answer, nothing sent twice.
    let again = c.handle_s11(&mbr(s11, 50, 0xab, enb2), MME.parse().unwrap(), now);
    assert!(again.reply.is_some() && again.downlink.is_empty());
}

#[test]
fn rejected_ddn_failure_indication_or_deleted_session_drop_the_buffer() {
    let mut c = core();
    let (s11, ue) = idle_ue(&mut c, "001010000000001", 1);
    let now = Instant::now();
    let mme: SocketAddr = MME.parse().unwrap();

    let seq = notified(c.handle_sgi(&down(ue, 1), now)).seq;
    c.handle_s11(&ddn_ack(s11, seq, cause::UNABLE_TO_PAGE_UE), mme, now);
    assert_eq!(c.idle_stats().dropped, 1);
    assert_eq!(c.poll_timeout(), None);

    let seq = notified(c.handle_sgi(&down(ue, 2), now)).seq;
    c.handle_sgi(&down(ue, 3), now);
    c.handle_s11(&ddn_ack(s11, seq, cause::REQUEST_ACCEPTED), mme, now);
    let fail = Gtpv2 {
        teid: Some(s11),
        seq: 77,
        msg: Message::DownlinkDataNotificationFailureIndication(
            proto_gtpv2c::DownlinkDataNotificationFailureIndication {
                cause: cause::UE_NOT_RESPONDING,
            },
        ),
    };
    let out = c.handle_s11(&fail.encode().unwrap(), mme, now);
    assert!(out.reply.is_none());
    assert_eq!(
        (c.idle_stats().dropped, c.idle_stats().buffered_now),
        (3, 0)
    );

    notified(c.handle_sgi(&down(ue, 4), now));
    let dsr = Gtpv2 {
        teid: Some(s11),
        seq: 90,
        msg: Message::DeleteSessionRequest(DeleteSessionRequest::default()),
    };
    reply(&mut c, &dsr.encode().unwrap());
    let s = c.idle_stats();
    assert_eq!((s.dropped, s.buffered_now, s.ddn_sent), (4, 0, 3));
    // A late Acknowledge of the deleted session's DDN changes nothing.
    c.handle_s11(&ddn_ack(s11, seq + 2, cause::REQUEST_ACCEPTED), mme, now);
    assert_eq!(c.idle_stats(), s);
}

#[test]
fn buffer_is_bounded_per_ue_and_in_total_oldest_dropped() {
    let mut c = core();
    let now = Instant::now();
    // One UE: beyond its bound its oldest packets go.
    let (s11, ue) = idle_ue(&mut c, "001010000000001", 1);
    let over = 5;
    for i in 0..(MAX_BUFFERED_PER_UE + over) as u16 {
        c.handle_sgi(&down(ue, i), now);
    }
    let s = c.idle_stats();
    assert_eq!(
        (s.dropped, s.buffered_now),
        (over as u64, MAX_BUFFERED_PER_UE as u64)
    );

    // Fill the total with more idle UEs, each to its own bound.
    for k in 1..MAX_BUFFERED / MAX_BUFFERED_PER_UE {
        let (_, ip) = idle_ue(&mut c, &format!("00101000010{k:04}"), 10 * k as u32 + 10);
        for i in 0..MAX_BUFFERED_PER_UE as u16 {
            c.handle_sgi(&down(ip, i), now);
        }
    }
    assert_eq!(c.idle_stats().buffered_now, MAX_BUFFERED as u64);
    // One more UE's packet: the oldest of all (the first UE's) makes room.
    let (_, last) = idle_ue(&mut c, "001010000009999", 90_000);
    notified(c.handle_sgi(&down(last, 0), now));
    let s = c.idle_stats();
    assert_eq!(
        (s.dropped, s.buffered_now),
        (over as u64 + 1, MAX_BUFFERED as u64)
    );

    let out = c.handle_s11(&mbr(s11, 99_999, 0x42, ENB), MME.parse().unwrap(), now);
    let got = payloads(&out.downlink, 0x42, ENB);
    let want: Vec<Vec<u8>> = (over + 1..MAX_BUFFERED_PER_UE + over)
        .map(|i| down(ue, i as u16))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn release_access_bearers_for_unknown_teid() {
    let mut c = core();
    let (s11, _) = idle_ue(&mut c, "001010000000001", 1);
    let before = c.tunnels();
    let out = c.handle_s11(&rab(s11 + 1000, 40), MME.parse().unwrap(), Instant::now());
    assert!(!out.changed);
    let r = proto_gtpv2c::decode(&out.reply.unwrap()).unwrap();
    // TS 29.274 §5.5.2: TEID 0 when the context is not found.
    assert_eq!(r.teid, Some(0));
    assert_eq!(
        r.msg,
        Message::ReleaseAccessBearersResponse(ReleaseAccessBearersResponse {
            cause: cause::CONTEXT_NOT_FOUND,
            recovery: None
        })
    );
    assert_eq!(c.tunnels(), before);
}

#[test]
fn duplicate_release_access_bearers_is_answered_from_the_cache() {
    let mut c = core();
    let Message::CreateSessionResponse(r) = reply(&mut c, &csr("001010000000001", 1)).msg else {
        panic!()
    };
    let s11 = r.sender_fteid.unwrap().teid;
    let now = Instant::now();
    let mme: SocketAddr = MME.parse().unwrap();
    c.handle_s11(&mbr(s11, 2, 0x99, ENB), mme, now);
    let first = c.handle_s11(&rab(s11, 3), mme, now);
    assert!(first.changed);
    // The UE came back before the MME's retransmission of the release arrived: the
    // duplicate gets the same answer and must not release the new eNB end.
    c.handle_s11(&mbr(s11, 4, 0xab, ENB), mme, now);
    let dup = c.handle_s11(&rab(s11, 3), mme, now + Duration::from_secs(1));
    assert_eq!(dup.reply, first.reply);
    assert!(!dup.changed);
    let t = &c.tunnels()[0];
    assert_eq!((t.enb_teid, t.idle), (Some(0xab), false));
}

fn core6() -> Core {
    let mut c = core();
    c.cfg.pool6 = Some(Ipv6Pool::new("2001:db8:77::".parse().unwrap(), 48).unwrap());
    c
}

/// A Create Session Request of PDN type `t` with the PAA an MME sends (unspecified
/// addresses; `iid` in the IPv6 part).
fn csr_typed(imsi: &str, seq: u32, t: u8, iid: u64) -> Vec<u8> {
    let mut m = proto_gtpv2c::decode(&csr(imsi, seq)).unwrap();
    if let Message::CreateSessionRequest(r) = &mut m.msg {
        r.pdn_type = Some(t);
        let v6 = Ipv6Addr::from(u128::from(iid));
        r.paa = Some(match t {
            pdn_type::IPV6 => Paa::Ipv6 {
                prefix_len: 64,
                addr: v6,
            },
            pdn_type::IPV4V6 => Paa::Ipv4v6 {
                prefix_len: 64,
                v6,
                v4: Ipv4Addr::UNSPECIFIED,
            },
            _ => Paa::Ipv4(Ipv4Addr::UNSPECIFIED),
        });
    }
    m.encode().unwrap()
}

#[test]
fn ipv6_and_ipv4v6_sessions_get_a_64_each_and_route_by_inner_version() {
    let mut c = core6();
    let a = |s: &str| -> Ipv6Addr { s.parse().unwrap() };
    // IPv6: a /64 of the pool (not the SGi one) with interface id 1, no IPv4.
    let r = reply(&mut c, &csr_typed("001010000000001", 1, pdn_type::IPV6, 0));
    let Message::CreateSessionResponse(r6) = r.msg else {
        panic!("{r:?}")
    };
    assert_eq!(r6.cause, cause::REQUEST_ACCEPTED);
    assert_eq!(
        r6.paa,
        Some(Paa::Ipv6 {
            prefix_len: 64,
            addr: a("2001:db8:77:1::1")
        })
    );
    // IPv4v6 with the MME's interface id: both, the id kept.
    let r = reply(
        &mut c,
        &csr_typed("001010000000002", 2, pdn_type::IPV4V6, 0xabcd),
    );
    let Message::CreateSessionResponse(r46) = r.msg else {
        panic!("{r:?}")
    };
    assert_eq!(r46.cause, cause::REQUEST_ACCEPTED);
    assert_eq!(
        r46.paa,
        Some(Paa::Ipv4v6 {
            prefix_len: 64,
            v6: a("2001:db8:77:2::abcd"),
            v4: Ipv4Addr::new(10, 45, 0, 2)
        })
    );
    let ts = c.tunnels();
    assert_eq!(
        (ts[0].ue_ip, ts[0].ue_ipv6_prefix),
        (None, Some(a("2001:db8:77:1::")))
    );
    assert_eq!(
        (ts[1].ue_ip, ts[1].ue_ipv6_prefix),
        (
            Some(Ipv4Addr::new(10, 45, 0, 2)),
            Some(a("2001:db8:77:2::"))
        )
    );
    // The list keeps the prefix; an IPv6-only entry has no ue_ip at all.
    let json = serde_json::to_value(&ts).unwrap();
    assert_eq!(json[0]["ue_ipv6_prefix"], "2001:db8:77:1::");
    assert!(json[0].get("ue_ip").is_none());

    // Both eNB F-TEIDs set.
    for (i, t) in ts.iter().enumerate() {
        let enb = Ipv4Addr::new(10, 77, 0, 21 + i as u8);
        reply(
            &mut c,
            &mbr(t.sgw_s11_teid, 10 + i as u32, 0x90 + i as u32, enb),
        );
    }
    // Downlink to any address of a UE's /64 takes its tunnel; IPv4 to the dual-stack UE
    // too; an address outside every /64 goes nowhere.
    let t0 = Instant::now();
    let pdn = a("2001:db8:ffff::8");
    for (dst, teid) in [
        (IpAddr::V6(a("2001:db8:77:1::1")), 0x90),
        (IpAddr::V6(a("2001:db8:77:1::77")), 0x90),
        (IpAddr::V6(a("2001:db8:77:2::abcd")), 0x91),
        (IpAddr::V4(Ipv4Addr::new(10, 45, 0, 2)), 0x91),
    ] {
        let src = match dst {
            IpAddr::V6(_) => IpAddr::V6(pdn),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        };
        let p = proto_gtpu::icmp::echo_request(src, dst, 1, 1, b"down").unwrap();
        let SgiAction::ToEnb(g, _) = c.handle_sgi(&p, t0) else {
            panic!("no tunnel for {dst}")
        };
        assert!(matches!(proto_gtpu::decode(&g).unwrap(), Gtpu::GPdu { teid: t, .. } if t == teid));
    }
    let p = proto_gtpu::icmp::echo_request(pdn, a("2001:db8:77:3::1"), 1, 1, b"").unwrap();
    assert_eq!(c.handle_sgi(&p, t0), SgiAction::Nothing);

    // Uplink: from the UE's /64 it goes to SGi; from another /64 (spoofed) or
    // link-local it does not.
    let s1u = ts[0].sgw_s1u_teid;
    let from = "10.77.0.21:2152".parse().unwrap();
    let up = proto_gtpu::icmp::echo_request(a("2001:db8:77:1::1234"), pdn, 1, 1, b"").unwrap();
    let g = proto_gtpu::encode_gpdu(s1u, &up).unwrap();
    assert_eq!(c.handle_s1u(&g, from), S1uAction::ToSgi(&up));
    // Its Router Solicitation gets the Router Advertisement of its /64, to its eNB.
    let rs = proto_gtpu::icmp::router_solicitation(a("fe80::1234")).unwrap();
    let g = proto_gtpu::encode_gpdu(s1u, &rs).unwrap();
    let S1uAction::Reply(adv, to) = c.handle_s1u(&g, from) else {
        panic!("no Router Advertisement")
    };
    assert_eq!(to, "10.77.0.21:2152".parse().unwrap());
    let Gtpu::GPdu {
        teid: 0x90,
        payload,
        ..
    } = proto_gtpu::decode(&adv).unwrap()
    else {
        panic!()
    };
    assert_eq!(payload[40], 134);
    assert_eq!(&payload[72..88], &a("2001:db8:77:1::").octets());
    assert_eq!(&payload[24..40], &a("fe80::1234").octets());
    for src in ["2001:db8:77:2::abcd", "fe80::1"] {
        let spoofed = proto_gtpu::icmp::echo_request(a(src), pdn, 1, 1, b"").unwrap();
        let g = proto_gtpu::encode_gpdu(s1u, &spoofed).unwrap();
        assert_eq!(c.handle_s1u(&g, from), S1uAction::Nothing, "{src}");
    }

    // Restored elsewhere: the prefixes are reserved, so a new UE gets the next /64.
    let mut d = core6();
    d.restore(c.tunnels()).unwrap();
    let r = reply(&mut d, &csr_typed("001010000000003", 1, pdn_type::IPV6, 0));
    let Message::CreateSessionResponse(r3) = r.msg else {
        panic!()
    };
    assert!(
        matches!(r3.paa, Some(Paa::Ipv6 { addr, .. }) if prefix64(addr) == a("2001:db8:77:3::"))
    );
    // A list with a prefix cannot go to an SPGW without an IPv6 pool.
    assert!(core().restore(c.tunnels()).is_err());

    // Deleting the IPv6 session frees its /64.
    let dsr = Gtpv2 {
        teid: Some(ts[0].sgw_s11_teid),
        seq: 20,
        msg: Message::DeleteSessionRequest(DeleteSessionRequest {
            linked_ebi: Some(5),
            ..Default::default()
        }),
    };
    reply(&mut c, &dsr.encode().unwrap());
    let p = proto_gtpu::icmp::echo_request(pdn, a("2001:db8:77:1::1"), 1, 1, b"").unwrap();
    assert_eq!(c.handle_sgi(&p, t0), SgiAction::Nothing);
}

/// An IPv4/UDP packet (checksums zero: filters do not look at them).
fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
    p.extend_from_slice(&src.0.octets());
    p.extend_from_slice(&dst.0.octets());
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

fn voice_bearer(imsi: &str) -> BearerRequest {
    BearerRequest {
        imsi: imsi.into(),
        apn: None,
        qci: 1,
        arp: BearerArp {
            priority_level: 2,
            pci: true,
            pvi: true,
        },
        mbr_uplink_kbps: 128,
        mbr_downlink_kbps: 128,
        gbr_uplink_kbps: 64,
        gbr_downlink_kbps: 64,
        filters: vec![Filter {
            id: 1,
            direction: proto_gtpv2c::tft::direction::BIDIRECTIONAL,
            precedence: 10,
            remote_addr: Some(Ipv4Addr::new(10, 45, 0, 1)),
            remote_mask: None,
            protocol: Some(17),
            remote_port: Some(5001),
        }],
    }
}

#[test]
fn create_bearer_request_response_and_the_dedicated_user_plane() {
    let mut c = core();
    let t0 = Instant::now();
    reply(&mut c, &csr("001010000000001", 1));
    let s11 = c.tunnels()[0].sgw_s11_teid;
    let enb = Ipv4Addr::new(10, 77, 0, 21);
    reply(&mut c, &mbr(s11, 2, 0x99, enb));
    assert!(c
        .create_bearer(&voice_bearer("001019999999999"), t0)
        .is_err());

    let (bytes, to) = c
        .create_bearer(&voice_bearer("001010000000001"), t0)
        .unwrap();
    assert_eq!(to, MME.parse().unwrap());
    let req = proto_gtpv2c::decode(&bytes).unwrap();
    assert_eq!(req.teid, Some(0x77), "to the MME's S11 TEID");
    let Message::CreateBearerRequest(cb) = &req.msg else {
        panic!("{req:?}")
    };
    assert_eq!(cb.linked_ebi, 5);
    let b = &cb.bearer_contexts[0];
    assert_eq!(b.ebi, 0, "the MME assigns it");
    let q = b.qos.unwrap();
    assert_eq!(
        (q.qci, q.priority_level, q.gbr_downlink, q.mbr_uplink),
        (1, 2, 64, 128)
    );
    let f = b.tft.as_ref().unwrap().filters[0];
    assert_eq!(
        (f.remote, f.protocol, f.remote_port),
        (
            Some((Ipv4Addr::new(10, 45, 0, 1), Ipv4Addr::BROADCAST)),
            Some(17),
            Some(5001)
        )
    );
    let sgw_s1u = *b.fteid(0).unwrap();
    assert_eq!(sgw_s1u.iface, iface::S1U_SGW);
    assert_ne!(sgw_s1u.teid, c.tunnels()[0].sgw_s1u_teid);
    // Unanswered, it is retransmitted with the same bytes.
    assert_eq!(c.on_timeout(t0 + DDN_TIMERS.t3), vec![(bytes.clone(), to)]);

    // The MME's response: EBI 6, the eNB's F-TEID for it.
    let resp = Gtpv2 {
        teid: Some(s11),
        seq: req.seq,
        msg: Message::CreateBearerResponse(proto_gtpv2c::CreateBearerResponse {
            cause: cause::REQUEST_ACCEPTED,
            bearer_contexts: vec![BearerContext {
                ebi: 6,
                cause: Some(cause::REQUEST_ACCEPTED),
                fteids: vec![(0, Fteid::v4(iface::S1U_ENODEB, 0x66, enb)), (1, sgw_s1u)],
                ..Default::default()
            }],
            recovery: None,
        }),
    };
    let out = c.handle_s11(&resp.encode().unwrap(), MME.parse().unwrap(), t0);
    assert!(out.changed && out.reply.is_none());
    let d = &c.tunnels()[0].dedicated;
    assert_eq!(
        (
            d.len(),
            d[0].ebi,
            d[0].qci,
            d[0].sgw_s1u_teid,
            d[0].enb_teid
        ),
        (1, 6, 1, sgw_s1u.teid, 0x66)
    );
    // Answered: no more retransmissions; a second copy of the response changes nothing.
    assert!(c.on_timeout(t0 + Duration::from_secs(10)).is_empty());
    assert!(
        !c.handle_s11(&resp.encode().unwrap(), MME.parse().unwrap(), t0)
            .changed
    );

    // Downlink matching the filter takes the dedicated bearer, the rest the default.
    let ue = c.tunnels()[0].ue_ip.unwrap();
    for (src, teid) in [
        ((Ipv4Addr::new(10, 45, 0, 1), 5001), 0x66),
        ((Ipv4Addr::new(10, 45, 0, 1), 5002), 0x99),
        ((Ipv4Addr::new(8, 8, 8, 8), 5001), 0x99),
    ] {
        let SgiAction::ToEnb(g, _) = c.handle_sgi(&udp(src, (ue, 4000)), t0) else {
            panic!()
        };
        assert!(
            matches!(proto_gtpu::decode(&g).unwrap(), Gtpu::GPdu { teid: t, .. } if t == teid),
            "{src:?}"
        );
    }
    // Uplink on the dedicated TEID reaches SGi.
    let up = udp((ue, 4000), (Ipv4Addr::new(10, 45, 0, 1), 5001));
    let g = proto_gtpu::encode_gpdu(sgw_s1u.teid, &up).unwrap();
    assert_eq!(
        c.handle_s1u(&g, "10.77.0.21:2152".parse().unwrap()),
        S1uAction::ToSgi(&up)
    );

    // The list carries it: a restored SPGW serves it and never hands its TEID out again.
    let mut r = core();
    r.restore(c.tunnels()).unwrap();
    assert_eq!(r.tunnels(), c.tunnels());
    assert_eq!(
        r.handle_s1u(&g, "10.77.0.21:2152".parse().unwrap()),
        S1uAction::ToSgi(&up)
    );
    let Message::CreateSessionResponse(n) = reply(&mut r, &csr("001010000000002", 1)).msg else {
        panic!()
    };
    assert!(n.bearer_contexts[0].fteid(0).unwrap().teid > sgw_s1u.teid);

    // A refused request adds nothing; an unanswered one gives up after N3.
    let (bytes, _) = c
        .create_bearer(&voice_bearer("001010000000001"), t0)
        .unwrap();
    let seq = proto_gtpv2c::decode(&bytes).unwrap().seq;
    let refused = Gtpv2 {
        teid: Some(s11),
        seq,
        msg: Message::CreateBearerResponse(proto_gtpv2c::CreateBearerResponse {
            cause: cause::UNABLE_TO_PAGE_UE,
            bearer_contexts: vec![BearerContext {
                ebi: 0,
                cause: Some(cause::UNABLE_TO_PAGE_UE),
                ..Default::default()
            }],
            recovery: None,
        }),
    };
    assert!(
        !c.handle_s11(&refused.encode().unwrap(), MME.parse().unwrap(), t0)
            .changed
    );
    assert_eq!(c.tunnels()[0].dedicated.len(), 1);
    c.create_bearer(&voice_bearer("001010000000001"), t0)
        .unwrap();
    let mut t = t0;
    for _ in 0..=DDN_TIMERS.n3 {
        t += DDN_TIMERS.t3;
        c.on_timeout(t);
    }
    assert_eq!(c.poll_timeout(), None);
    // Delete Session takes the dedicated bearer (and its TEID) with it.
    let dsr = Gtpv2 {
        teid: Some(s11),
        seq: 30,
        msg: Message::DeleteSessionRequest(DeleteSessionRequest {
            linked_ebi: Some(5),
            ..Default::default()
        }),
    };
    reply(&mut c, &dsr.encode().unwrap());
    assert!(matches!(
        c.handle_s1u(&g, "10.77.0.21:2152".parse().unwrap()),
        S1uAction::Reply(..)
    ));
}
