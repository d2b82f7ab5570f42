//! One sample of every supported message, filled with every IE it can carry,
//! using the lab's identities (PLMN 001/01, APN "internet", S-GW 10.77.1.30).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::*;

const MME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 20);
const SGW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 30);
const ENB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);
/// The target eNB of a handover.
const ENB2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 22);

fn uli() -> Uli {
    Uli {
        tai: Some(Tai {
            plmn: Plmn::TEST,
            tac: 1,
        }),
        ecgi: Some(Ecgi {
            plmn: Plmn::TEST,
            eci: 0x0001_9b01,
        }),
    }
}

const AMBR: Ambr = Ambr {
    uplink_kbps: 100_000,
    downlink_kbps: 200_000,
};

/// The attach's Create Session Request: IPv4, the default bearer EBI 5.
fn create_session_request() -> CreateSessionRequest {
    CreateSessionRequest {
        imsi: "001010000000001".into(),
        msisdn: Some("46700000001".into()),
        mei: Some("3520990017614823".into()),
        uli: Some(uli()),
        serving_network: Some(Plmn::TEST),
        rat_type: rat_type::EUTRAN,
        sender_fteid: Fteid::v4(iface::S11_MME, 0x100, MME),
        pgw_s5s8_fteid: Some(Fteid::v4(iface::S5S8_PGW_GTPC, 0, SGW)),
        apn: "internet".into(),
        selection_mode: Some(0),
        pdn_type: Some(pdn_type::IPV4),
        paa: Some(Paa::Ipv4(Ipv4Addr::UNSPECIFIED)),
        apn_restriction: Some(0),
        ambr: Some(AMBR),
        pco: Some(Pco {
            containers: vec![
                (
                    pco::id::IPCP,
                    vec![1, 0, 0, 16, 129, 6, 0, 0, 0, 0, 131, 6, 0, 0, 0, 0],
                ),
                (pco::id::DNS_IPV4, vec![]),
                (pco::id::IPV4_LINK_MTU, vec![]),
            ],
        }),
        bearer_contexts: vec![BearerContext {
            ebi: 5,
            qos: Some(BearerQos::default_bearer()),
            ..Default::default()
        }],
        recovery: Some(3),
    }
}

/// Its answer: UE address 10.45.0.2, S1-U SGW TEID 0x300.
fn create_session_response() -> CreateSessionResponse {
    CreateSessionResponse {
        cause: cause::REQUEST_ACCEPTED,
        sender_fteid: Some(Fteid::v4(iface::S11S4_SGW, 0x200, SGW)),
        pgw_s5s8_fteid: Some(Fteid::v4(iface::S5S8_PGW_GTPC, 0x201, SGW)),
        paa: Some(Paa::Ipv4(Ipv4Addr::new(10, 45, 0, 2))),
        apn_restriction: Some(0),
        ambr: Some(AMBR),
        pco: Some(Pco {
            containers: vec![
                (pco::id::DNS_IPV4, vec![8, 8, 8, 8]),
                (pco::id::IPV4_LINK_MTU, vec![5, 120]),
            ],
        }),
        bearer_contexts: vec![BearerContext {
            ebi: 5,
            cause: Some(cause::REQUEST_ACCEPTED),
            fteids: vec![
                (0, Fteid::v4(iface::S1U_SGW, 0x300, SGW)),
                (2, Fteid::v4(iface::S5S8_PGW_GTPU, 0x301, SGW)),
            ],
            qos: Some(BearerQos::default_bearer()),
            charging_id: Some(1),
            ..Default::default()
        }],
        recovery: Some(7),
    }
}

/// The dedicated bearer of the Create Bearer Request: QCI 1 (GBR), ARP 2, for
/// UDP to 10.45.0.1:5001.
fn dedicated_qos() -> BearerQos {
    BearerQos {
        priority_level: 2,
        qci: 1,
        mbr_uplink: 128,
        mbr_downlink: 128,
        gbr_uplink: 64,
        gbr_downlink: 64,
        ..BearerQos::default_bearer()
    }
}

fn dedicated_tft() -> Tft {
    Tft {
        filters: vec![PacketFilter {
            id: 1,
            direction: tft::direction::BIDIRECTIONAL,
            precedence: 10,
            remote: Some((Ipv4Addr::new(10, 45, 0, 1), Ipv4Addr::BROADCAST)),
            protocol: Some(17),
            remote_port: Some(5001),
        }],
    }
}

/// A UE asking for an IPv6 or IPv4v6 PDN connection (and IPv6 DNS servers), and
/// the answer with its /64 (interface identifier ::2) and, for IPv4v6, 10.45.0.3.
fn create_session_v6(pdn: u8, seq: u32) -> [Gtpv2; 2] {
    let prefix = Ipv6Addr::new(0x2001, 0xdb8, 0x45, pdn.into(), 0, 0, 0, 2);
    let (asked, given) = if pdn == pdn_type::IPV6 {
        (
            Paa::Ipv6 {
                prefix_len: 0,
                addr: Ipv6Addr::UNSPECIFIED,
            },
            Paa::Ipv6 {
                prefix_len: 64,
                addr: prefix,
            },
        )
    } else {
        (
            Paa::Ipv4v6 {
                prefix_len: 0,
                v6: Ipv6Addr::UNSPECIFIED,
                v4: Ipv4Addr::UNSPECIFIED,
            },
            Paa::Ipv4v6 {
                prefix_len: 64,
                v6: prefix,
                v4: Ipv4Addr::new(10, 45, 0, 3),
            },
        )
    };
    let dns6 = Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888);
    [
        Gtpv2 {
            teid: Some(0),
            seq,
            msg: Message::CreateSessionRequest(CreateSessionRequest {
                pdn_type: Some(pdn),
                paa: Some(asked),
                pco: Some(Pco {
                    containers: vec![(pco::id::DNS_IPV6, vec![])],
                }),
                ..create_session_request()
            }),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq,
            msg: Message::CreateSessionResponse(CreateSessionResponse {
                paa: Some(given),
                pco: Some(Pco {
                    containers: vec![(pco::id::DNS_IPV6, dns6.octets().to_vec())],
                }),
                ..create_session_response()
            }),
        },
    ]
}

/// Every supported message, in a plausible order: attach, modify, detach, and
/// then idle mode with paging, a dedicated bearer, a handover, and IPv6 attaches.
pub fn all() -> Vec<Gtpv2> {
    vec![
        Gtpv2 {
            teid: None,
            seq: 1,
            msg: Message::EchoRequest(Echo { recovery: 3 }),
        },
        Gtpv2 {
            teid: None,
            seq: 1,
            msg: Message::EchoResponse(Echo { recovery: 7 }),
        },
        Gtpv2 {
            teid: Some(0),
            seq: 2,
            msg: Message::CreateSessionRequest(create_session_request()),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 2,
            msg: Message::CreateSessionResponse(create_session_response()),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 3,
            msg: Message::ModifyBearerRequest(ModifyBearerRequest {
                uli: Some(uli()),
                serving_network: Some(Plmn::TEST),
                rat_type: Some(rat_type::EUTRAN),
                sender_fteid: None,
                bearer_contexts: vec![BearerContext {
                    ebi: 5,
                    fteids: vec![(0, Fteid::v4(iface::S1U_ENODEB, 0x400, ENB))],
                    ..Default::default()
                }],
                recovery: None,
            }),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 3,
            msg: Message::ModifyBearerResponse(ModifyBearerResponse {
                cause: cause::REQUEST_ACCEPTED,
                msisdn: Some("46700000001".into()),
                bearer_contexts: vec![BearerContext {
                    ebi: 5,
                    cause: Some(cause::REQUEST_ACCEPTED),
                    fteids: vec![(0, Fteid::v4(iface::S1U_SGW, 0x300, SGW))],
                    charging_id: Some(1),
                    ..Default::default()
                }],
                recovery: None,
            }),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 4,
            msg: Message::DeleteSessionRequest(DeleteSessionRequest {
                cause: None,
                linked_ebi: Some(5),
                uli: Some(uli()),
                sender_fteid: None,
            }),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 4,
            msg: Message::DeleteSessionResponse(DeleteSessionResponse {
                cause: cause::REQUEST_ACCEPTED,
                recovery: None,
            }),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 5,
            msg: Message::ReleaseAccessBearersRequest(ReleaseAccessBearersRequest {}),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 5,
            msg: Message::ReleaseAccessBearersResponse(ReleaseAccessBearersResponse {
                cause: cause::REQUEST_ACCEPTED,
                recovery: None,
            }),
        },
        // Downlink data for the idle UE: the S-GW's own sequence numbers from here.
        Gtpv2 {
            teid: Some(0x100),
            seq: 0x10,
            msg: Message::DownlinkDataNotification(DownlinkDataNotification {
                cause: Some(cause::ERROR_INDICATION_RECEIVED),
                ebis: vec![5],
                arp: Some(BearerQos::default_bearer().arp()),
            }),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 0x10,
            msg: Message::DownlinkDataNotificationAcknowledge(
                DownlinkDataNotificationAcknowledge {
                    cause: cause::REQUEST_ACCEPTED,
                    recovery: Some(3),
                },
            ),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 6,
            msg: Message::DownlinkDataNotificationFailureIndication(
                DownlinkDataNotificationFailureIndication {
                    cause: cause::UE_NOT_RESPONDING,
                },
            ),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 0x11,
            msg: Message::CreateBearerRequest(CreateBearerRequest {
                linked_ebi: 5,
                bearer_contexts: vec![BearerContext {
                    ebi: 0,
                    fteids: vec![
                        (0, Fteid::v4(iface::S1U_SGW, 0x310, SGW)),
                        (1, Fteid::v4(iface::S5S8_PGW_GTPU, 0x311, SGW)),
                    ],
                    qos: Some(dedicated_qos()),
                    charging_id: Some(2),
                    tft: Some(dedicated_tft()),
                    ..Default::default()
                }],
            }),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 0x11,
            msg: Message::CreateBearerResponse(CreateBearerResponse {
                cause: cause::REQUEST_ACCEPTED,
                bearer_contexts: vec![BearerContext {
                    ebi: 6,
                    cause: Some(cause::REQUEST_ACCEPTED),
                    fteids: vec![
                        (0, Fteid::v4(iface::S1U_ENODEB, 0x410, ENB)),
                        (1, Fteid::v4(iface::S1U_SGW, 0x310, SGW)),
                    ],
                    ..Default::default()
                }],
                recovery: Some(3),
            }),
        },
        // After an X2 handover (or a Service Request): the new cell and eNB for
        // both bearers, from an MME that moved.
        Gtpv2 {
            teid: Some(0x200),
            seq: 7,
            msg: Message::ModifyBearerRequest(ModifyBearerRequest {
                uli: Some(Uli {
                    ecgi: Some(Ecgi {
                        plmn: Plmn::TEST,
                        eci: 0x0001_9c01,
                    }),
                    ..uli()
                }),
                sender_fteid: Some(Fteid::v4(iface::S11_MME, 0x101, MME)),
                bearer_contexts: [(5, 0x420), (6, 0x421)]
                    .map(|(ebi, teid)| BearerContext {
                        ebi,
                        fteids: vec![(0, Fteid::v4(iface::S1U_ENODEB, teid, ENB2))],
                        ..Default::default()
                    })
                    .to_vec(),
                recovery: Some(3),
                ..Default::default()
            }),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 0x12,
            msg: Message::DeleteBearerRequest(DeleteBearerRequest {
                linked_ebi: None,
                ebis: vec![6],
                cause: None,
            }),
        },
        Gtpv2 {
            teid: Some(0x200),
            seq: 0x12,
            msg: Message::DeleteBearerResponse(DeleteBearerResponse {
                cause: cause::REQUEST_ACCEPTED,
                linked_ebi: None,
                bearer_contexts: vec![BearerContext {
                    ebi: 6,
                    cause: Some(cause::REQUEST_ACCEPTED),
                    ..Default::default()
                }],
                recovery: Some(3),
            }),
        },
    ]
    .into_iter()
    .chain(create_session_v6(pdn_type::IPV6, 8))
    .chain(create_session_v6(pdn_type::IPV4V6, 9))
    .collect()
}
