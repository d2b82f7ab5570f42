//! One sample of every supported message, filled with every IE it can carry,
//! using the lab's identities (PLMN 001/01, APN "internet", S-GW 10.77.1.30).

use std::net::Ipv4Addr;

use crate::*;

const MME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 20);
const SGW: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 30);
const ENB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);

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

/// Every supported message, in a plausible attach/detach order.
pub fn all() -> Vec<Gtpv2> {
    let ambr = Ambr {
        uplink_kbps: 100_000,
        downlink_kbps: 200_000,
    };
    let ue = Ipv4Addr::new(10, 45, 0, 2);
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
            msg: Message::CreateSessionRequest(CreateSessionRequest {
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
                ambr: Some(ambr),
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
            }),
        },
        Gtpv2 {
            teid: Some(0x100),
            seq: 2,
            msg: Message::CreateSessionResponse(CreateSessionResponse {
                cause: cause::REQUEST_ACCEPTED,
                sender_fteid: Some(Fteid::v4(iface::S11S4_SGW, 0x200, SGW)),
                pgw_s5s8_fteid: Some(Fteid::v4(iface::S5S8_PGW_GTPC, 0x201, SGW)),
                paa: Some(Paa::Ipv4(ue)),
                apn_restriction: Some(0),
                ambr: Some(ambr),
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
                }],
                recovery: Some(7),
            }),
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
    ]
}
