//! The network move (the paper's Tn) as link flips. A function's veth is plugged into the
//! host bridge when the host is prepared, with its link down; the move takes the source's
//! link down before the final dump and brings the destination's up once the restore is
//! done, then announces the MAC. A link that is down is also the network lock: no peer's
//! packet reaches a namespace whose sockets are not (or no longer) there.
use super::*;

impl Agent {
    /// Plugs `name`'s namespace into this host's bridge, its link down.
    pub(super) fn attach(&self, name: &str, spec: &ContainerSpec) -> Result<()> {
        net::attach(
            &self.cfg.host,
            &port(name),
            &self.netns(name),
            spec.service_ip,
            spec.prefix_len,
            &net::mac_for(spec.service_ip),
        )
    }

    /// Brings `name`'s link up or takes it down: in-process netlink from the agent's own
    /// namespace (the host's), no `ip` to start.
    pub(super) fn link(&self, name: &str, up: bool) -> Result<()> {
        lab::nl::set_link_up(None, &port(name), up).with_context(|| {
            format!(
                "cannot take {name}'s link {}",
                if up { "up" } else { "down" }
            )
        })
    }

    /// A gratuitous ARP from the function's namespace, so the fabric's switches learn where
    /// its service MAC is now.
    pub(super) fn announce(&self, name: &str, spec: &ContainerSpec) -> Result<()> {
        net::gratuitous_arp(&self.netns(name), spec.service_ip)
    }

    /// Link up and announced: the function serves from this host, or (a migration target)
    /// what arrives for it is held until its restore. A target without a hold stays down:
    /// a peer's packet would meet no socket and draw a RST; its link comes up at the
    /// restore's `network-unlock`.
    pub(super) fn plug(&self, name: &str) -> Result<()> {
        let (_, spec) = self.existing(name)?;
        let runs = self
            .containers
            .state(name)
            .is_some_and(|s| s.status != "stopped");
        let held = lock(&self.warm).get(name).is_some_and(|w| w.hold.is_some());
        if !runs && !held {
            tracing::warn!(
                "{name}: nothing holds its packets here yet; its link stays down until its restore"
            );
            return Ok(());
        }
        self.link(name, true)?;
        self.announce(name, &spec)
    }
}
