//! ESM: the one PDN connection an attach sets up and its default bearer
//! (TS 24.301 §6): the APN and QoS it gets, and the session the SPGW is asked for.

use proto_diameter::s6a::SubscriptionData;
use proto_gtpv2c as gtp;

use super::context::{Subscription, UeState};
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
