//! Network primitives of the lab: namespaces, veth pairs, bridges, link rates, ARP.
use crate::sh::{run, run_quiet};
use crate::spec::parse_rate_bits;
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::path::Path;

/// Bridge in the root namespace joining every host: the lab's switch.
pub const FABRIC_BRIDGE: &str = "chfab0";
/// Inside a host namespace: the bridge its containers and uplink hang on.
pub const HOST_BRIDGE: &str = "br0";
/// Inside a host namespace: the host's NIC towards the fabric.
pub const HOST_UPLINK: &str = "uplink";

/// Every namespace and link the lab creates starts with this, so `lab down` finds them
/// after a crash without any state file.
pub const PREFIX: &str = "ch";

pub fn host_ns(host: &str) -> String {
    format!("{PREFIX}-{host}")
}

/// Root-namespace end of a host's uplink (≤ 15 bytes: host names are ≤ 10).
pub fn host_port(host: &str) -> String {
    format!("{PREFIX}h-{host}")
}

pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Namespaces of the lab (hosts and containers), found by prefix.
pub fn lab_namespaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{PREFIX}-")) || n.starts_with(&format!("{PREFIX}c-")))
        .collect();
    v.sort();
    v
}

pub fn add_netns(ns: &str) -> Result<()> {
    if !netns_exists(ns) {
        run("ip", &["netns", "add", ns])?;
    }
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Kills whatever still runs in the namespace, then removes it.
pub fn del_netns(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            run_quiet("kill", &["-9", pid]);
        }
    }
    run_quiet("ip", &["netns", "del", ns]);
}

/// Shapes egress of `dev` (in `ns`, or the root namespace) to `rate` with a token bucket;
/// `None` removes the shaping. tbf is used because netem is not available on these kernels.
pub fn set_rate(ns: Option<&str>, dev: &str, rate: Option<&str>) -> Result<()> {
    let mut base: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        base.extend(["-n", ns]);
    }
    match rate {
        None => {
            let mut a = base.clone();
            a.extend(["qdisc", "del", "dev", dev, "root"]);
            run_quiet("tc", &a);
        }
        Some(rate) => {
            let bits = parse_rate_bits(rate)?;
            // The bucket must hold at least one timer tick of traffic (HZ >= 100).
            let burst = format!("{}", (bits / 8 / 100).max(16 * 1514));
            let mut a = base.clone();
            a.extend([
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", &burst,
                "latency", "50ms",
            ]);
            run("tc", &a).with_context(|| format!("cannot shape {dev} to {rate}"))?;
        }
    }
    Ok(())
}

/// Reads the tbf rate currently set on `dev`, if any.
pub fn get_rate(ns: Option<&str>, dev: &str) -> Option<String> {
    let mut a: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        a.extend(["-n", ns]);
    }
    a.extend(["qdisc", "show", "dev", dev]);
    let out = run("tc", &a).ok()?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "rate")?;
    words.next().map(str::to_string)
}

/// A stable, locally administered MAC for a service IP, so the address a peer cached in
/// its ARP table stays right when the function moves.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let m = mac_bytes(ip);
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Plugs namespace `ns` into `host`'s bridge: a veth whose inside end is `eth0` with `ip`
/// and `mac`, up, and whose host end is `port`, enslaved to the bridge but down. Until the
/// port is brought up (`nl::set_link_up`), nothing reaches or leaves the namespace: a
/// migration target is attached like this when it is prepared, outside the frozen window,
/// and the network move is then a link flip.
pub fn attach(host: &str, port: &str, ns: &str, ip: Ipv4Addr, prefix: u8, mac: &str) -> Result<()> {
    let hns = host_ns(host);
    run_quiet("ip", &["-n", &hns, "link", "del", port]);
    run(
        "ip",
        &[
            "-n", &hns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", "eth0", "address", mac])?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "addr",
            "replace",
            &format!("{ip}/{prefix}"),
            "dev",
            "eth0",
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
    run(
        "ip",
        &[
            "-n",
            &hns,
            "link",
            "set",
            port,
            "master",
            HOST_BRIDGE,
            "down",
        ],
    )?;
    Ok(())
}

/// Removes the host end of a plugged namespace (its `eth0` goes with it).
pub fn unplug(host: &str, port: &str) {
    run_quiet("ip", &["-n", &host_ns(host), "link", "del", port]);
}

/// Gratuitous ARP from `ns` so the fabric's switches learn where `ip` lives now.
/// One fixed 42-byte frame on an AF_PACKET socket: `arping` would wait a whole second for
/// replies that never come to an unsolicited ARP, which would inflate Tn.
pub fn gratuitous_arp(ns: &str, ip: Ipv4Addr) -> Result<()> {
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sent = enter_netns(&ns).and_then(|()| open_and_send_garp(ip, &mac_bytes(ip)));
        let fd = match sent {
            Ok(fd) => {
                let _ = tx.send(Ok(()));
                fd
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        // Closing a packet socket waits for an RCU grace period (synchronize_net in
        // packet_release: 5-15 ms measured); the caller need not wait for it.
        // SAFETY: fd is the socket opened above, closed once.
        unsafe { libc::close(fd) };
    });
    rx.recv()
        .map_err(|_| anyhow::anyhow!("gratuitous ARP thread panicked"))?
}

fn mac_bytes(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xc4, o[0], o[1], o[2], o[3]]
}

/// Sends the frame and returns the still open socket.
fn open_and_send_garp(ip: Ipv4Addr, mac: &[u8; 6]) -> Result<i32> {
    const ETH_P_ARP: u16 = 0x0806;
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request; sender = target = our IP.
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&ip.octets());
    let ifname = std::ffi::CString::new("eth0")?;
    // SAFETY: plain socket syscalls on locally owned buffers; the fd is closed below.
    unsafe {
        let ifindex = libc::if_nametoindex(ifname.as_ptr());
        if ifindex == 0 {
            anyhow::bail!("no eth0 to announce {ip} on");
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ARP.to_be() as i32);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot open a packet socket");
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        if n < 0 {
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(err).context("cannot send the gratuitous ARP");
        }
        Ok(fd)
    }
}

/// Moves the calling thread into namespace `ns` (network only). The agent does this at
/// start instead of running under `ip netns exec`, which would also give it a private
/// /sys without the cgroup mounts runc needs.
pub fn enter_netns(ns: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("no network namespace {ns}"))?;
    // SAFETY: setns on a valid fd; affects only this thread's namespace membership.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot enter {ns}"));
    }
    Ok(())
}

/// Removes an nftables table from namespace `ns`; gone already is fine.
pub fn delete_nft_table(ns: &str, family: &str, table: &str) {
    run_quiet(
        "ip",
        &["netns", "exec", ns, "nft", "delete", "table", family, table],
    );
}
