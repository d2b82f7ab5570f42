//! In-process netlink for the migration hot path. While a function is frozen no process may
//! be started (fork+exec of `ip`, `bridge` or `conntrack` costs milliseconds each and more
//! under load), so the few steps done there speak netlink themselves: one socket, one
//! request, one ACK. Everything is synchronous and thread-safe, for a plain multithreaded
//! daemon; there is no tokio here (rtnetlink would need it).
//!
//! A namespace is entered from a short-lived helper thread (`setns` affects only the calling
//! thread), and a netlink socket talks to the namespace it was created in, so the caller's
//! thread never changes namespace.
//!
//! Linux bridge port on link up, with STP off (the lab's bridges; `stp_state` 0): the port
//! goes from disabled (0) straight to forwarding (3), never through listening or learning,
//! and there is no forward delay. It does so as soon as the port is running *and* has
//! carrier: a veth has carrier only while its peer is up too, and until then the port stays
//! disabled although it is admin up. The bridge acts on the port's operstate, which the
//! kernel's link watcher sets from a work queue, so "forwarding" may lag the netlink ACK by
//! a moment (on 6.18 the very next netlink read showed forwarding 50 times of 50, but
//! nothing promises it): a caller that must not lose the first frame polls
//! [`bridge_port_state`] (cheap: no process) rather than assuming. The test
//! `bridge_port_forwards_on_link_up` checks all of this.
use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST,
};
use netlink_packet_netfilter::{
    conntrack::ConntrackMessage, NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoPortData, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols, Socket, SocketAddr};
use std::fmt::Debug;
use std::os::fd::AsRawFd;

/// `BR_STATE_FORWARDING`, as [`bridge_port_state`] returns it.
pub const BR_STATE_FORWARDING: u8 = 3;
/// `BR_STATE_DISABLED`: the port is down or has no carrier.
pub const BR_STATE_DISABLED: u8 = 0;

/// The kernel answers at once; a bound keeps a wedged kernel from hanging a migration.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets or clears IFF_UP on `ifname`, in the caller's current namespace (`None`) or in the
/// named one (`/run/netns/<name>`). Same as `ip link set IFNAME up|down`.
pub fn set_link_up(netns: Option<&str>, ifname: &str, up: bool) -> Result<()> {
    check_ifname(ifname)?;
    let how = if up { "up" } else { "down" };
    in_netns(netns, || {
        let mut msg = LinkMessage::default();
        msg.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        // Only the bits in the change mask are touched; the rest of the flags stay.
        msg.header.change_mask = LinkFlags::Up;
        // Index 0 with IFLA_IFNAME: the kernel looks the link up by name, which saves a
        // round trip for the index.
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_string()));
        request(protocols::NETLINK_ROUTE, RouteNetlinkMessage::SetLink(msg)).map(|_| ())
    })
    .with_context(|| format!("cannot set link {ifname} {how} in {}", where_(netns)))
}

/// The STP state of bridge port `ifname` (`BR_STATE_*`: 0 disabled, 1 listening,
/// 2 learning, 3 forwarding, 4 blocking), like `bridge link show dev IFNAME`.
/// Read over netlink (IFLA_LINKINFO → IFLA_INFO_SLAVE_DATA → IFLA_BRPORT_STATE), not from
/// /sys/class/net/IFNAME/brport/state: sysfs shows the links of the namespace it was
/// mounted in, not the reading thread's, so after `setns` it shows the wrong namespace.
pub fn bridge_port_state(netns: Option<&str>, ifname: &str) -> Result<u8> {
    check_ifname(ifname)?;
    in_netns(netns, || {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_string()));
        let replies = request(protocols::NETLINK_ROUTE, RouteNetlinkMessage::GetLink(msg))?;
        replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .flat_map(|l| &l.attributes)
            .filter_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            })
            .flatten()
            .filter_map(|i| match i {
                LinkInfo::PortData(InfoPortData::BridgePort(port)) => Some(port),
                _ => None,
            })
            .flatten()
            .find_map(|p| match p {
                InfoBridgePort::State(s) => Some(u8::from(*s)),
                _ => None,
            })
            .ok_or_else(|| anyhow!("it is not a bridge port"))
    })
    .with_context(|| {
        format!(
            "cannot read the bridge port state of {ifname} in {}",
            where_(netns)
        )
    })
}

/// Deletes every conntrack entry of namespace `netns`, like `ip netns exec NETNS conntrack
/// -F`: one IPCTNL_MSG_CT_DELETE (subsystem NFNL_SUBSYS_CTNETLINK) with no attributes.
/// nfgen_family is AF_INET as conntrack(8) sends it, and version NFNETLINK_V0: with
/// version 0 the kernel ignores the family and flushes all families (IPv6 too, checked by
/// the test); only version 1 would filter by family, so one message is enough.
pub fn flush_conntrack(netns: &str) -> Result<()> {
    in_netns(Some(netns), || {
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            ConntrackMessage::Delete(vec![]),
        );
        request(protocols::NETLINK_NETFILTER, msg).map(|_| ())
    })
    .with_context(|| format!("cannot flush conntrack in netns {netns}"))
}

fn where_(netns: Option<&str>) -> String {
    match netns {
        Some(ns) => format!("netns {ns}"),
        None => "the current netns".into(),
    }
}

/// The kernel would answer a bad name with a bare EINVAL or ENODEV; say what is wrong.
fn check_ifname(ifname: &str) -> Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains(['/', '\0']) {
        bail!("{ifname:?} is not a valid interface name (1 to 15 bytes, no '/')");
    }
    Ok(())
}

/// Runs `f` in namespace `netns`: on a scoped helper thread that enters it, so the calling
/// thread keeps its own namespace; with `None`, on the calling thread itself.
pub fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Some(ns) = netns else { return f() };
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::net::enter_netns(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("the netlink helper thread for netns {ns} panicked"))?
    })
}

/// One rtnetlink request in the calling thread's namespace (inside [`in_netns`] for another),
/// for steps of other crates (runtime's TUN devices): `flags` are added to NLM_F_REQUEST |
/// NLM_F_ACK (NLM_F_DUMP to list, NLM_F_CREATE | NLM_F_EXCL to add). Returns the replies;
/// an error carries the errno (`std::io::Error` in its chain) and the kernel's message.
pub fn route_request(msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>> {
    request_with(protocols::NETLINK_ROUTE, msg, flags)
}

/// Sends one request with NLM_F_ACK and returns the replies that come before the ACK; an
/// NLMSG_ERROR with a non-zero code is returned as the errno, with the kernel's extended
/// ACK message when it gives one.
fn request<I>(protocol: isize, inner: I) -> Result<Vec<I>>
where
    I: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    request_with(protocol, inner, 0)
}

/// [`request`] with more header flags; a dump's replies end with NLMSG_DONE.
fn request_with<I>(protocol: isize, inner: I, flags: u16) -> Result<Vec<I>>
where
    I: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut sock = Socket::new(protocol).context("cannot open a netlink socket")?;
    sock.bind_auto().context("cannot bind a netlink socket")?;
    sock.connect(&SocketAddr::new(0, 0))
        .context("cannot connect a netlink socket")?;
    // Best effort: without them the errno alone is reported.
    let _ = sock.set_ext_ack(true);
    let _ = sock.set_cap_ack(true);
    set_recv_timeout(&sock)?;

    const SEQ: u32 = 1;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = SEQ;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(inner));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0)
        .context("cannot send a netlink request")?;

    let mut replies = Vec::new();
    let mut rx: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        rx.clear();
        sock.recv(&mut rx, 0)
            .context("no netlink reply from the kernel")?;
        let mut at = 0;
        while at < rx.len() {
            let m = NetlinkMessage::<I>::deserialize(&rx[at..])
                .map_err(|e| anyhow!("cannot parse a netlink reply: {e}"))?;
            let len = m.header.length as usize;
            if len == 0 {
                break;
            }
            at += len.next_multiple_of(4);
            // A fresh socket with no multicast groups gets only our answers; be strict anyway.
            if m.header.sequence_number != SEQ {
                continue;
            }
            match m.payload {
                NetlinkPayload::Error(e) => {
                    let Some(code) = e.code else {
                        return Ok(replies);
                    };
                    let err = std::io::Error::from_raw_os_error(-code.get());
                    return Err(match ext_ack_msg(m.header.flags, &e.header) {
                        Some(text) => anyhow!(err).context(text),
                        None => anyhow!(err),
                    });
                }
                NetlinkPayload::InnerMessage(i) => replies.push(i),
                NetlinkPayload::Done(_) => return Ok(replies),
                _ => {}
            }
        }
    }
}

fn set_recv_timeout(sock: &Socket) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt on an open fd with a pointer to a live timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set SO_RCVTIMEO");
    }
    Ok(())
}

/// NLMSGERR_ATTR_MSG of an extended ACK. netlink-packet-core hands the error payload over
/// raw: the request's header (only the header when NLM_F_CAPPED, else the whole request)
/// and then, with NLM_F_ACK_TLVS, attributes.
fn ext_ack_msg(flags: u16, payload: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let orig_len = u32::from_ne_bytes(payload[..4].try_into().ok()?) as usize;
    let mut at = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        orig_len.next_multiple_of(4)
    };
    while at + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[at], payload[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([payload[at + 2], payload[at + 3]]) & 0x3fff;
        if len < 4 || at + len > payload.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &payload[at + 4..at + len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        at += len.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sh::{in_netns as sh_in_netns, run, run_quiet};
    use std::time::{Duration, Instant};

    /// A scratch namespace `nltest-<random>`, deleted on drop, also when a test panics.
    struct ScratchNs(String);

    impl ScratchNs {
        fn new() -> Self {
            // SAFETY: geteuid has no preconditions.
            assert_eq!(
                unsafe { libc::geteuid() },
                0,
                "this test creates network namespaces: run it as root"
            );
            // The guard exists before the namespace, so a half-made one is removed too.
            let ns = ScratchNs(format!("nltest-{:08x}", rand::random::<u32>()));
            run("ip", &["netns", "add", &ns.0]).unwrap();
            run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
            ns
        }

        fn ip(&self, args: &[&str]) -> String {
            let mut a = vec!["-n", &self.0];
            a.extend_from_slice(args);
            run("ip", &a).unwrap()
        }

        /// Runs `f` on a thread inside the namespace.
        fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            std::thread::scope(|s| {
                s.spawn(|| {
                    crate::net::enter_netns(&self.0).unwrap();
                    f()
                })
                .join()
                .unwrap()
            })
        }
    }

    impl Drop for ScratchNs {
        fn drop(&mut self) {
            run_quiet("ip", &["netns", "del", &self.0]);
        }
    }

    /// A veth pair `a0`/`b0` in `ns` (no dummy driver on every kernel); both down.
    fn add_veth(ns: &ScratchNs) {
        ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    }

    fn is_up(ns: &ScratchNs, dev: &str) -> bool {
        let out = ns.ip(&["-o", "link", "show", dev]);
        let flags = out.split(['<', '>']).nth(1).unwrap_or_default();
        flags.split(',').any(|f| f == "UP")
    }

    #[test]
    fn set_link_up_in_named_netns() {
        let ns = ScratchNs::new();
        add_veth(&ns);
        assert!(!is_up(&ns, "a0"));
        set_link_up(Some(&ns.0), "a0", true).unwrap();
        assert!(is_up(&ns, "a0"));
        set_link_up(Some(&ns.0), "a0", false).unwrap();
        assert!(!is_up(&ns, "a0"));
    }

    #[test]
    fn set_link_up_in_current_netns() {
        let ns = ScratchNs::new();
        add_veth(&ns);
        ns.inside(|| set_link_up(None, "a0", true)).unwrap();
        assert!(is_up(&ns, "a0"));
    }

    #[test]
    fn errors_name_the_device_and_netns() {
        let ns = ScratchNs::new();
        let e = format!(
            "{:#}",
            set_link_up(Some(&ns.0), "nosuch0", true).unwrap_err()
        );
        assert!(e.contains("nosuch0") && e.contains(&ns.0), "{e}");
        assert!(e.contains("No such device"), "{e}");

        let e = format!(
            "{:#}",
            set_link_up(Some("nltest-absent"), "lo", true).unwrap_err()
        );
        assert!(e.contains("nltest-absent"), "{e}");

        let e = format!("{:#}", set_link_up(None, "a/b", true).unwrap_err());
        assert!(e.contains("a/b"), "{e}");

        let e = format!("{:#}", bridge_port_state(Some(&ns.0), "lo").unwrap_err());
        assert!(e.contains("not a bridge port"), "{e}");

        let e = format!("{:#}", flush_conntrack("nltest-absent").unwrap_err());
        assert!(e.contains("nltest-absent"), "{e}");
    }

    /// Polls the port state until it is `want` or 1 s passed; returns the distinct states
    /// seen, in order, and how long it took.
    fn watch_state(ns: &str, port: &str, want: u8) -> (Vec<u8>, Duration) {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let s = bridge_port_state(Some(ns), port).unwrap();
            if seen.last() != Some(&s) {
                seen.push(s);
            }
            if s == want || start.elapsed() > Duration::from_secs(1) {
                return (seen, start.elapsed());
            }
        }
    }

    #[test]
    fn bridge_port_forwards_on_link_up() {
        let ns = ScratchNs::new();
        let n = &ns.0;
        // A name of our own, so the root namespace surely has no link by that name.
        let port = format!("nlp{:06x}", rand::random::<u32>() & 0xff_ffff);
        ns.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"]);
        ns.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "peer0",
        ]);
        ns.ip(&["link", "set", &port, "master", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        assert_eq!(
            bridge_port_state(Some(n), &port).unwrap(),
            BR_STATE_DISABLED
        );

        // Admin up without carrier (its veth peer is down): the port stays disabled.
        set_link_up(Some(n), &port, true).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            bridge_port_state(Some(n), &port).unwrap(),
            BR_STATE_DISABLED
        );
        // Carrier comes: straight to forwarding.
        set_link_up(Some(n), "peer0", true).unwrap();
        let (seen, took) = watch_state(n, &port, BR_STATE_FORWARDING);
        eprintln!("carrier on: states {seen:?}, forwarding after {took:?}");
        assert_eq!(seen.last(), Some(&BR_STATE_FORWARDING), "{seen:?}");
        assert!(seen.iter().all(|s| [0, 3].contains(s)), "{seen:?}");

        // The same as the kernel's sysfs, read where /sys is the namespace's own
        // (`ip netns exec` mounts a fresh one), and as `bridge` reports it.
        let sysfs =
            sh_in_netns(n, "cat", &[&format!("/sys/class/net/{port}/brport/state")]).unwrap();
        assert_eq!(sysfs.trim(), "3");
        let br = run("bridge", &["-n", n, "link", "show", "dev", &port]).unwrap();
        assert!(br.contains("state forwarding"), "{br}");
        // But a thread that only did setns still sees the root namespace's sysfs: that is
        // why the state is read over netlink.
        let visible =
            ns.inside(|| std::path::Path::new(&format!("/sys/class/net/{port}")).exists());
        assert!(
            !visible,
            "sysfs followed setns here; it may be read directly"
        );

        // Down: disabled at once (the NETDEV_DOWN notifier runs before the ACK).
        set_link_up(Some(n), &port, false).unwrap();
        assert_eq!(
            bridge_port_state(Some(n), &port).unwrap(),
            BR_STATE_DISABLED
        );
        // Right after the ACK, on the same thread (no helper thread in between): is the
        // port forwarding already, or does the link watcher set it a moment later?
        let first_reads: Vec<u8> = ns.inside(|| {
            (0..50)
                .map(|_| {
                    set_link_up(None, &port, true).unwrap();
                    let s = bridge_port_state(None, &port).unwrap();
                    set_link_up(None, &port, false).unwrap();
                    s
                })
                .collect()
        });
        let late = first_reads
            .iter()
            .filter(|s| **s != BR_STATE_FORWARDING)
            .count();
        eprintln!("read right after the ACK: not yet forwarding {late} of 50 times");
        // Up again, peer still up: forwarding, no listening or learning in between.
        for round in 0..20 {
            set_link_up(Some(n), &port, true).unwrap();
            let (seen, took) = watch_state(n, &port, BR_STATE_FORWARDING);
            if round < 3 {
                eprintln!("link up #{round}: states {seen:?}, forwarding after {took:?}");
            }
            assert_eq!(seen.last(), Some(&BR_STATE_FORWARDING), "{seen:?}");
            assert!(seen.iter().all(|s| [0, 3].contains(s)), "{seen:?}");
            // plug() allows 500 ms; seen here: well under 2 ms.
            assert!(took < Duration::from_millis(500), "{took:?}");
            set_link_up(Some(n), &port, false).unwrap();
        }
    }

    #[test]
    fn ext_ack_message_is_read() {
        // A capped error payload: the request's 16-byte header (claiming 40 bytes), then
        // NLMSGERR_ATTR_OFFS (2) and NLMSGERR_ATTR_MSG (1) "bad x".
        let mut p = Vec::new();
        p.extend_from_slice(&40u32.to_ne_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&20u32.to_ne_bytes());
        p.extend_from_slice(&10u16.to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(b"bad x\0\0\0");
        let flags = NLM_F_CAPPED | NLM_F_ACK_TLVS;
        assert_eq!(ext_ack_msg(flags, &p).as_deref(), Some("bad x"));
        assert_eq!(ext_ack_msg(NLM_F_CAPPED, &p), None);
        assert_eq!(ext_ack_msg(flags, &p[..20]), None);
    }

    fn conntrack_list(ns: &str, family: &str) -> String {
        sh_in_netns(ns, "conntrack", &["-L", "-f", family]).unwrap()
    }

    #[test]
    fn flush_conntrack_empties_the_table() {
        let ns = ScratchNs::new();
        let n = &ns.0;
        // Built in on some kernels, a module on others.
        run_quiet("modprobe", &["nf_conntrack"]);
        // Conntrack tracks a namespace's packets only once some rule there needs it.
        sh_in_netns(
            n,
            "nft",
            &["add table inet nltest; \
               add chain inet nltest out { type filter hook output priority 0; }; \
               add rule inet nltest out ct state new counter"],
        )
        .unwrap();
        ns.inside(|| {
            for dst in ["127.0.0.1:9", "[::1]:9"] {
                let any = if dst.starts_with('[') {
                    "[::1]:0"
                } else {
                    "127.0.0.1:0"
                };
                let s = std::net::UdpSocket::bind(any).unwrap();
                s.send_to(b"x", dst).unwrap();
            }
        });
        let v4 = conntrack_list(n, "ipv4");
        let v6 = conntrack_list(n, "ipv6");
        assert!(v4.contains("dport=9"), "no IPv4 entry: {v4}");
        assert!(v6.contains("dport=9"), "no IPv6 entry: {v6}");

        flush_conntrack(n).unwrap();
        assert_eq!(conntrack_list(n, "ipv4").trim(), "");
        assert_eq!(conntrack_list(n, "ipv6").trim(), "");
        // Flushing an empty table is fine too.
        flush_conntrack(n).unwrap();
    }
}
