//! The GTP Module Initializer of the paper: before a function that owns the SGi side of the
//! user plane starts or is restored, the SGi device it expects is created in its network
//! namespace from its config (name, address, MTU) with forwarding and NAT towards the PDN.
//! CRIU cannot carry a TUN fd, so the function releases its fd before a dump and re-attaches
//! to this pre-created device after a restore; the device never needs to travel.
use anyhow::{Context, Result};
use lab::sh::{in_netns, run, run_quiet};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SgiSpec {
    /// TUN device name (the SPGW's `sgi_tun`).
    pub name: String,
    /// Gateway address with prefix, e.g. 10.45.0.1/16 (the UE pool's network).
    pub address: String,
    pub mtu: u32,
}

/// Creates (or re-creates) the SGi device, routes and NAT in namespace `ns`.
pub fn init(ns: &str, sgi: &SgiSpec) -> Result<()> {
    lab::spec::validate_name(&sgi.name, "SGi device")?;
    let net: std::net::Ipv4Addr = sgi
        .address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("SGi address {:?} is not IPv4/prefix", sgi.address))?;
    run_quiet("ip", &["-n", ns, "link", "del", &sgi.name]);
    run(
        "ip",
        &["-n", ns, "tuntap", "add", "dev", &sgi.name, "mode", "tun"],
    )?;
    run(
        "ip",
        &["-n", ns, "addr", "add", &sgi.address, "dev", &sgi.name],
    )?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "link",
            "set",
            &sgi.name,
            "mtu",
            &sgi.mtu.to_string(),
            "up",
        ],
    )?;
    in_netns(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    // UE traffic leaves through the service interface, masqueraded to the service IP, so
    // the PDN needs no route back to the UE pool.
    let rules = format!(
        "add table ip corehop_sgi; \
         add chain ip corehop_sgi post {{ type nat hook postrouting priority 100; }}; \
         add rule ip corehop_sgi post iifname \"{}\" oifname \"eth0\" masquerade",
        sgi.name
    );
    lab::net::delete_nft_table(ns, "ip", "corehop_sgi");
    in_netns(ns, "nft", &[&rules]).with_context(|| format!("cannot set up SGi NAT for {net}"))?;
    Ok(())
}

/// After a restore: the restored namespace holds conntrack entries of the UE flows (seen
/// here with CRIU 4.2 through runc) without their NAT bindings, so packets matching them
/// would leave un-masqueraded and their replies never come back. Flushing makes the next
/// packet of each flow a new connection that the masquerade rule binds again.
pub fn after_restore(ns: &str) -> Result<()> {
    in_netns(ns, "conntrack", &["-F"])
        .map(|_| ())
        .context("cannot flush conntrack after restore")
}
