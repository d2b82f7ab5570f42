//! ESM: the one PDN connection an attach sets up and its default bearer
//! (TS 24.301 §6): the APN and QoS it gets, the session the SPGW is asked for (of
//! the PDN type the UE requested) and the PDN address the UE is given.

use proto_diameter::s6a::SubscriptionData;
use proto_gtpv2c as gtp;
use proto_nas::msg::PdnAddress;

use super::context::{Subscription, Ue, UeState};
use super::s11::create_session_request;
use super::{Action, MmeCore};

/// EPS bearer id of the default bearer.
pub(super) const DEFAULT_EBI: u8 = 5;

impl MmeCore {
    /// The attach's PDN connectivity once the HSS has answered the ULR: the APN and QoS
    /// from the subscription, then CREATE SESSION to the SPGW.
    pub(super) fn connect_pdn(&mut self, ue: u32, sd: Option<&SubscriptionData>) {
        let Some(u) = self.ues.get_mut(&ue) else {
            return;
        };
        let sub = subscription(sd, u.pdn.apn.as_deref(), &self.cfg.default_apn);
        let csr = create_session_request(&self.cfg, u, &sub);
        u.sub = Some(sub);
        u.state = UeState::WaitCreateSession;
        self.changed = true;
        self.actions.push(Action::S11 {
            ue,
            teid: 0,
            msg: gtp::Message::CreateSessionRequest(csr),
        });
    }
}

/// The PDN address IE of the ACTIVATE DEFAULT EPS BEARER CONTEXT REQUEST (TS 24.301
/// §9.9.4.9): the IPv4 address, the IPv6 interface identifier (the UE gets its /64 by
/// router advertisement), or both, as the SPGW allocated them.
pub(super) fn pdn_address(u: &Ue) -> Option<PdnAddress> {
    let iid = u.ue_ipv6.map(|a| (u128::from(a) as u64).to_be_bytes());
    match (u.ue_ip, iid) {
        (Some(v4), Some(iid)) => Some(PdnAddress::Ipv4v6 {
            ipv6_interface_id: iid,
            ipv4: v4.octets(),
        }),
        (None, Some(iid)) => Some(PdnAddress::Ipv6InterfaceId(iid)),
        (Some(v4), None) => Some(PdnAddress::Ipv4(v4.octets())),
        (None, None) => None,
    }
}

/// The PDN type the UE asked for in its PDN CONNECTIVITY REQUEST, and the PAA the
/// Create Session Request carries for it (addresses unspecified: the P-GW allocates).
pub(super) fn requested_pdn(u: &Ue) -> (u8, gtp::Paa) {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match u.pdn.pdn_type {
        gtp::pdn_type::IPV6 => (
            gtp::pdn_type::IPV6,
            gtp::Paa::Ipv6 {
                prefix_len: 64,
                addr: Ipv6Addr::UNSPECIFIED,
            },
        ),
        gtp::pdn_type::IPV4V6 => (
            gtp::pdn_type::IPV4V6,
            gtp::Paa::Ipv4v6 {
                prefix_len: 64,
                v6: Ipv6Addr::UNSPECIFIED,
                v4: Ipv4Addr::UNSPECIFIED,
            },
        ),
        // IPv4, and anything else (24.301 §9.9.4.10: other values are IPv4v6 on the
        // receiving side, but a UE sending them gets the safest, IPv4).
        _ => (gtp::pdn_type::IPV4, gtp::Paa::Ipv4(Ipv4Addr::UNSPECIFIED)),
    }
}

/// The APN and QoS to use: the UE's APN if subscribed, else the default context.
fn subscription(
    sd: Option<&SubscriptionData>,
    requested: Option<&str>,
    default_apn: &str,
) -> Subscription {
    let chosen = sd.and_then(|sd| {
        requested
            .and_then(|r| sd.apns.iter().find(|a| a.apn.eq_ignore_ascii_case(r)))
            .or_else(|| {
                sd.apns
                    .iter()
                    .find(|a| a.context_identifier == sd.default_context_identifier)
            })
            .or(sd.apns.first())
    });
    Subscription {
        msisdn: sd.and_then(|s| s.msisdn.clone()),
        apn: chosen
            .map(|a| a.apn.clone())
            .unwrap_or_else(|| default_apn.to_string()),
        qci: chosen.map(|a| a.qci as u8).unwrap_or(9),
        arp_priority: chosen
            .map(|a| a.arp.priority_level.clamp(1, 15) as u8)
            .unwrap_or(8),
        ambr_ul: sd.map(|s| s.ambr.uplink).unwrap_or(50_000_000),
        ambr_dl: sd.map(|s| s.ambr.downlink).unwrap_or(100_000_000),
    }
}
