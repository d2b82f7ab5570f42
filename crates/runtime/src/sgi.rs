//! The GTP Module Initializer of the paper: before a function that owns the SGi side of the
//! user plane starts or is restored, the SGi device it expects is created in its network
//! namespace from its config (name, address, MTU) with forwarding and NAT towards the PDN.
//! CRIU cannot carry a TUN fd, so the function releases its fd before a dump and re-attaches
//! to this pre-created device after a restore; the device never needs to travel.
//! In a VM the same forwarding and NAT run inside the guest before the function starts
//! ([`SgiSpec::forwarding_and_nat`]), and the function creates its TUN device from the
//! same config; the device then lives in guest RAM and moves with the VM.
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

/// Interface the function's service IP lives on, container and VM guest alike: UE traffic
/// leaves through it towards the PDN.
pub const SERVICE_IF: &str = "eth0";

impl SgiSpec {
    /// Checks the name and address before any of them reach a command line.
    pub fn validate(&self) -> Result<()> {
        lab::spec::validate_name(&self.name, "SGi device")?;
        let (a, p) = self
            .address
            .split_once('/')
            .with_context(|| format!("SGi address {:?} is not IPv4/prefix", self.address))?;
        a.parse::<std::net::Ipv4Addr>()
            .ok()
            .zip(p.parse::<u8>().ok().filter(|p| *p <= 32))
            .with_context(|| format!("SGi address {:?} is not IPv4/prefix", self.address))?;
        Ok(())
    }

    /// Forwarding and NAT for the SGi side, as commands (program and arguments) to run
    /// inside the function's own network namespace: by the agent for a container, by the
    /// guest's init for a VM. The device itself must exist or come later (`iifname`
    /// matches by name).
    pub fn forwarding_and_nat(&self) -> Result<Vec<Vec<String>>> {
        self.validate()?;
        // UE traffic leaves through the service interface, masqueraded to the service IP,
        // so the PDN needs no route back to the UE pool.
        let rules = format!(
            "add table ip {NAT_TABLE}; \
             add chain ip {NAT_TABLE} post {{ type nat hook postrouting priority 100; }}; \
             add rule ip {NAT_TABLE} post iifname \"{}\" oifname \"{SERVICE_IF}\" masquerade",
            self.name
        );
        Ok(vec![
            vec![
                "sysctl".into(),
                "-qw".into(),
                "net.ipv4.ip_forward=1".into(),
            ],
            vec!["nft".into(), rules],
        ])
    }
}

/// The nftables table holding the SGi masquerade.
const NAT_TABLE: &str = "corehop_sgi";

/// Creates (or re-creates) the SGi device, routes and NAT in namespace `ns`.
pub fn init(ns: &str, sgi: &SgiSpec) -> Result<()> {
    let setup = sgi.forwarding_and_nat()?;
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
    lab::net::delete_nft_table(ns, "ip", NAT_TABLE);
    for cmd in &setup {
        let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
        in_netns(ns, &cmd[0], &args)
            .with_context(|| format!("cannot set up SGi forwarding and NAT for {}", sgi.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, address: &str) -> SgiSpec {
        SgiSpec {
            name: name.into(),
            address: address.into(),
            mtu: 1400,
        }
    }

    #[test]
    fn nat_masquerades_the_sgi_device_out_of_the_service_interface() {
        let cmds = spec("sgi0", "10.45.0.1/16").forwarding_and_nat().unwrap();
        assert_eq!(cmds[0], ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        assert_eq!(cmds[1][0], "nft");
        assert!(
            cmds[1][1].contains(r#"iifname "sgi0" oifname "eth0" masquerade"#),
            "{:?}",
            cmds[1]
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        for (n, a) in [
            ("sgi0", "10.45.0.1"),
            ("sgi0", "10.45.0.1/33"),
            ("sgi0", "x/16"),
            ("a\"b", "10.45.0.1/16"),
            ("", "10.45.0.1/16"),
        ] {
            assert!(spec(n, a).forwarding_and_nat().is_err(), "{n:?} {a:?}");
        }
    }
}
