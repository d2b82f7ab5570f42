//! TUN devices that move with a function without its help (issue 13). CRIU dumps an open
//! TUN file of a container (the netns is external: only the file and its device's name go
//! into the images) but cannot restore it, since the device lives in a namespace CRIU does
//! not restore. So the agent does the device's part:
//! - at a dump, [`discover`] reads what the tasks hold open (/proc fds and fdinfo) and each
//!   device's flags, MTU, addresses and routes (netlink: TUNGETIFF cannot tell IFF_NO_PI
//!   from IFF_NOFILTER, the same bit); [`save`] keeps that next to the images;
//! - at the destination, ahead of the restore, [`recreate`] makes each device in the new
//!   namespace (TUNSETIFF + TUNSETPERSIST, then netlink) and [`open`] attaches a file to it
//!   with the same flags; CRIU (patched: scripts/criu/tun-external.patch) gives that file
//!   to the restored task for `--inherit-fd fd[N]:tun[<name>]` ([`inherit_key`]);
//! - after the restore [`release`] closes the agent's copy.
//!
//! No process is started: only ioctls and netlink. NAT is not a device's: where the spec
//! has SGi, [`crate::sgi::init`] sets it up when the destination is prepared, as for a
//! function that releases its TUN itself.
use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_core::Nla;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoTun, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The file in an image round describing the TUN devices its tasks held.
pub const META: &str = "corehop-tun.json";

/// What `/proc/PID/fd/N` points to for a TUN file.
const TUN_PATH: &str = "/dev/net/tun";

/// One TUN device a function holds open, as the restore needs it re-made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunDevice {
    pub name: String,
    /// TUNSETIFF's flags (IFF_TUN or IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE) and
    /// IFF_PERSIST, as netlink shows them: the restored file is attached with the same.
    pub flags: u16,
    /// The open file's status flags (O_NONBLOCK, ...) from fdinfo: the restored task gets
    /// the agent's file as it is, so it is opened alike.
    pub file_flags: i32,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<TunAddress>,
    /// The routes through it other than the kernel's own (those of its addresses).
    pub routes: Vec<TunRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunAddress {
    pub local: IpAddr,
    /// The other end of a point-to-point address (`ip addr add A peer B`).
    pub peer: Option<IpAddr>,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub metric: Option<u32>,
}

impl TunDevice {
    /// Whether a file opened for `other` serves this device too (the rest is netlink's).
    pub fn same_file(&self, other: &TunDevice) -> bool {
        (&self.name, self.flags, self.file_flags) == (&other.name, other.flags, other.file_flags)
    }
}

/// CRIU's inherit-fd key of the TUN file attached to `name` (the patch's `.name` op).
pub fn inherit_key(name: &str) -> String {
    format!("tun[{name}]")
}

/// The fds of task `pid` that are TUN files.
pub fn tun_fds(pid: i64) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new(TUN_PATH)))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The TUN devices the tasks `pids` hold open, with their configuration in namespace
/// `netns` (a name under /run/netns). One open file per device: a multi-queue device's
/// several files would all get the one file CRIU is given for its name.
pub fn discover(pids: &[i32], netns: &str) -> Result<Vec<TunDevice>> {
    // Each device with the first task fd seen on it.
    let mut found: Vec<(TunDevice, i32, i32)> = Vec::new();
    for &pid in pids {
        for fd in tun_fds(pid.into()) {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
                .with_context(|| format!("cannot read fdinfo {fd} of task {pid}"))?;
            let (name, file_flags) = parse_fdinfo(&info)
                .with_context(|| format!("fd {fd} of task {pid} ({TUN_PATH})"))?;
            if let Some((_, p0, fd0)) = found.iter().find(|(d, ..)| d.name == name) {
                if !same_open_file((*p0, *fd0), (pid, fd)) {
                    bail!("TUN device {name} is open more than once (task {p0} fd {fd0}, task {pid} fd {fd}: a multi-queue device?); only one open file per device can be carried");
                }
                continue;
            }
            let dev = TunDevice {
                name,
                flags: 0,
                file_flags,
                mtu: 0,
                up: false,
                addresses: vec![],
                routes: vec![],
            };
            found.push((dev, pid, fd));
        }
    }
    let mut devices: Vec<TunDevice> = found.into_iter().map(|(d, ..)| d).collect();
    if devices.is_empty() {
        return Ok(devices);
    }
    lab::nl::in_netns(Some(netns), || {
        for d in devices.iter_mut() {
            read_config(d)?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot read the TUN devices' configuration in netns {netns}"))?;
    Ok(devices)
}

/// The device name (`iff:`) and the file's status flags (`flags:`, octal) of a TUN file's
/// fdinfo. A file attached to no device has no `iff:` and cannot be re-made.
fn parse_fdinfo(info: &str) -> Result<(String, i32)> {
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let name = field("iff:").context("the TUN file is attached to no device")?;
    lab::spec::validate_name(name, "TUN device")?;
    let flags = field("flags:")
        .and_then(|f| i32::from_str_radix(f, 8).ok())
        .context("fdinfo has no file flags")?;
    // Close-on-exec is the fd's, which CRIU restores itself.
    Ok((name.to_string(), flags & !libc::O_CLOEXEC))
}

/// CRIU's `--external file[MNT:INO]` key of every TUN file tasks `pids` hold: CRIU then
/// records the file without looking for its mount. A file the agent handed over at a
/// restore lies on the agent's mount of /dev, not on one of the container's, and CRIU
/// would refuse to dump it again ("Can't lookup mount"); a restore takes every TUN file from
/// `--inherit-fd` ([`inherit_key`]) and never opens it by path.
pub fn external_files(pids: &[i32]) -> Vec<String> {
    let mut keys = std::collections::BTreeSet::new();
    for &pid in pids {
        for fd in tun_fds(pid.into()) {
            let mnt: Option<u64> =
                crate::proc_number(&format!("/proc/{pid}/fdinfo/{fd}"), "mnt_id:");
            let ino = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m));
            if let (Some(mnt), Ok(ino)) = (mnt, ino) {
                keys.insert(format!("file[{mnt:x}:{ino:x}]"));
            }
        }
    }
    keys.into_iter().collect()
}

/// Whether two tasks' fds are the same open file (kcmp(2) KCMP_FILE).
fn same_open_file(a: (i32, i32), b: (i32, i32)) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp(2) only compares kernel objects of the two tasks.
    unsafe { libc::syscall(libc::SYS_kcmp, a.0, b.0, KCMP_FILE, a.1, b.1) == 0 }
}

/// `struct ifreq` with the flags member of its union (40 bytes, as the kernel reads it).
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: u16,
    _rest: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: u16) -> Result<Self> {
        lab::spec::validate_name(name, "TUN device")?;
        if name.len() >= libc::IFNAMSIZ {
            bail!("TUN device name {name:?} is longer than 15 bytes");
        }
        let mut r = IfReq {
            flags,
            ..Default::default()
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(r)
    }
}

/// Writes `devices` into image round `images` (nothing when there are none).
pub fn save(images: &Path, devices: &[TunDevice]) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    std::fs::write(images.join(META), serde_json::to_vec_pretty(devices)?)
        .context("cannot save the TUN devices with the images")
}

/// The TUN devices recorded with image round `images` (none when it has no record).
pub fn load(images: &Path) -> Result<Vec<TunDevice>> {
    match std::fs::read(images.join(META)) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("corrupt {} in {}", META, images.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(e).with_context(|| format!("cannot read {META}")),
    }
}

/// Makes `dev` in namespace `netns` as it was: created (persistent, so that it outlives
/// this call) unless it exists, then its MTU, state, addresses and routes; what is there
/// already is left. Outside the frozen window: when the destination is prepared.
pub fn recreate(netns: &str, dev: &TunDevice) -> Result<()> {
    lab::nl::in_netns(Some(netns), || {
        let index = match link(&dev.name)? {
            Some(l) => l.index,
            None => {
                let f = attach(dev)?;
                set_persist(&f, true)?;
                link(&dev.name)?
                    .context("the device vanished once created")?
                    .index
            }
        };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if dev.up {
            msg.header.flags = LinkFlags::Up;
        }
        msg.attributes.push(LinkAttribute::Mtu(dev.mtu));
        lab::nl::route_request(RouteNetlinkMessage::SetLink(msg), 0)
            .context("cannot set its MTU and state")?;
        for a in &dev.addresses {
            add(RouteNetlinkMessage::NewAddress(address_msg(index, a)))
                .with_context(|| format!("cannot add address {}/{}", a.local, a.prefix_len))?;
        }
        for r in &dev.routes {
            add(RouteNetlinkMessage::NewRoute(route_msg(index, r)))
                .with_context(|| format!("cannot add route {}/{}", r.dst, r.prefix_len))?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot re-create TUN device {} in netns {netns}", dev.name))
}

/// A file of namespace `netns` attached to `dev` (made by [`recreate`]), with its flags:
/// the file the restored task gets.
pub fn open(netns: &str, dev: &TunDevice) -> Result<OwnedFd> {
    lab::nl::in_netns(Some(netns), || attach(dev))
        .with_context(|| format!("cannot attach to TUN device {} in netns {netns}", dev.name))
}

/// After the restore: the restored task holds the file, so the agent's copy goes. A device
/// that was not persistent where it was dumped is not here either from now on: it goes
/// with the task's last file, as it would have there.
pub fn release(dev: &TunDevice, file: OwnedFd) {
    if dev.flags & libc::IFF_PERSIST as u16 == 0 {
        if let Err(e) = set_persist(&file, false) {
            tracing::warn!("TUN device {} stays persistent: {e:#}", dev.name);
        }
    }
}

/// Opens /dev/net/tun in this thread's namespace and attaches it to `dev` (TUNSETIFF creates
/// the device if it is not there).
fn attach(dev: &TunDevice) -> Result<OwnedFd> {
    let oflags = libc::O_RDWR | libc::O_CLOEXEC | (dev.file_flags & libc::O_NONBLOCK);
    // SAFETY: open(2) of a character device with a valid C string.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), oflags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open /dev/net/tun");
    }
    // SAFETY: just opened, owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // TUNSETIFF ignores IFF_PERSIST, a device's state (set with TUNSETPERSIST).
    let mut ifr = IfReq::new(&dev.name, dev.flags & !(libc::IFF_PERSIST as u16))?;
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `ifr` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "TUNSETIFF with flags {:#x} (a device of that name but another kind exists?)",
                dev.flags
            )
        });
    }
    // SAFETY: F_SETFL on our own fd; it changes only the status flags it may.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, dev.file_flags) } < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set the file's flags");
    }
    Ok(fd)
}

fn set_persist(file: &OwnedFd, on: bool) -> Result<()> {
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETPERSIST as _,
            on as libc::c_ulong,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error()).context("TUNSETPERSIST");
    }
    Ok(())
}

/// What netlink shows of a link.
struct Link {
    index: u32,
    mtu: u32,
    up: bool,
    /// A TUN device's flags (IFLA_INFO_DATA of kind "tun"); `None` for another kind.
    tun_flags: Option<u16>,
}

/// Link `name` of this thread's namespace; `None` if it has none.
fn link(name: &str) -> Result<Option<Link>> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.into()));
    let replies = match lab::nl::route_request(RouteNetlinkMessage::GetLink(msg), 0) {
        Ok(r) => r,
        Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
        Err(e) => return Err(e.context(format!("cannot read link {name}"))),
    };
    Ok(replies.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => {
            let mut link = Link {
                index: l.header.index,
                mtu: 0,
                up: l.header.flags.contains(LinkFlags::Up),
                tun_flags: None,
            };
            for a in &l.attributes {
                match a {
                    LinkAttribute::Mtu(m) => link.mtu = *m,
                    LinkAttribute::LinkInfo(infos) => {
                        link.tun_flags = infos.iter().find_map(|i| match i {
                            LinkInfo::Data(InfoData::Tun(t)) => Some(tun_flags(t)),
                            _ => None,
                        })
                    }
                    _ => {}
                }
            }
            Some(link)
        }
        _ => None,
    }))
}

/// TUN flags from the kernel's IFLA_TUN_* attributes (include/uapi/linux/if_link.h):
/// TYPE (IFF_TUN or IFF_TAP), PI (IFF_NO_PI when off), VNET_HDR, PERSIST, MULTI_QUEUE.
fn tun_flags(attrs: &[InfoTun]) -> u16 {
    const TYPE: u16 = 3;
    const PI: u16 = 4;
    const VNET_HDR: u16 = 5;
    const PERSIST: u16 = 6;
    const MULTI_QUEUE: u16 = 7;
    // A kernel that sends no PI attribute sends none of them: IFF_NO_PI is then unknown,
    // and off is the kernel's default.
    let mut flags = 0;
    for a in attrs {
        let InfoTun::Other(nla) = a else { continue };
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        let (on, bit) = (v.first().is_some_and(|b| *b != 0), |f: i32| f as u16);
        flags |= match nla.kind() {
            TYPE => v.first().map_or(0, |b| u16::from(*b)),
            PI if !on => bit(libc::IFF_NO_PI),
            VNET_HDR if on => bit(libc::IFF_VNET_HDR),
            PERSIST if on => bit(libc::IFF_PERSIST),
            MULTI_QUEUE if on => bit(libc::IFF_MULTI_QUEUE),
            _ => 0,
        };
    }
    flags
}

/// Fills `dev`'s MTU, state, addresses and routes from this thread's namespace.
fn read_config(dev: &mut TunDevice) -> Result<()> {
    let l = link(&dev.name)?
        .with_context(|| format!("TUN device {} is not in the function's netns", dev.name))?;
    let index = l.index;
    dev.flags = l
        .tun_flags
        .with_context(|| format!("{} is not a TUN device", dev.name))?;
    (dev.mtu, dev.up) = (l.mtu, l.up);
    let addrs = lab::nl::route_request(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        NLM_F_DUMP,
    )?;
    dev.addresses = addrs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => address_of(a),
            _ => None,
        })
        .collect();
    let routes = lab::nl::route_request(
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        NLM_F_DUMP,
    )?;
    dev.routes = routes
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => route_of(r, index),
            _ => None,
        })
        .collect();
    Ok(())
}

/// An address as `ip addr add` would give it again; IPv6 link-local ones are the kernel's.
fn address_of(m: &AddressMessage) -> Option<TunAddress> {
    if m.header.scope == AddressScope::Link && m.header.family == AddressFamily::Inet6 {
        return None;
    }
    let (mut local, mut address) = (None, None);
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the local end where it is given; IFA_ADDRESS then is the peer.
    let ip = local.or(address)?;
    Some(TunAddress {
        local: ip,
        peer: address.filter(|a| *a != ip),
        prefix_len: m.header.prefix_len,
    })
}

/// A main-table unicast route out of link `index` that someone added (not the kernel's
/// prefix routes of the addresses).
fn route_of(m: &RouteMessage, index: u32) -> Option<TunRoute> {
    let h = &m.header;
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(h.table.into());
    let oif = m.attributes.contains(&RouteAttribute::Oif(index));
    if !oif
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.kind != RouteType::Unicast
        || h.protocol == RouteProtocol::Kernel
    {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let (mut dst, mut gateway, mut metric) = (None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    let unspecified = match h.address_family {
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    Some(TunRoute {
        dst: dst.unwrap_or(unspecified),
        prefix_len: h.destination_prefix_length,
        gateway,
        metric,
    })
}

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_msg(index: u32, a: &TunAddress) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(&a.local);
    m.header.prefix_len = a.prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(a.local));
    m.attributes
        .push(AddressAttribute::Address(a.peer.unwrap_or(a.local)));
    m
}

fn route_msg(index: u32, r: &TunRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    let h = &mut m.header;
    h.address_family = family(&r.dst);
    h.destination_prefix_length = r.prefix_len;
    h.table = RouteHeader::RT_TABLE_MAIN;
    h.protocol = RouteProtocol::Boot;
    h.kind = RouteType::Unicast;
    // A route to a gateway is global; one straight out of the device is link-scoped, as
    // `ip route add ... dev` makes it.
    h.scope = if r.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if r.prefix_len > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
    }
    if let Some(g) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m.attributes.push(RouteAttribute::Oif(index));
    m
}

/// Adds an address or a route; one that is there already is fine.
fn add(msg: RouteNetlinkMessage) -> Result<()> {
    match lab::nl::route_request(msg, NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if errno(&e) != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

/// Whether `criu` restores a TUN file from an inherited fd: it carries the string the
/// patch's `.name` op formats (the patch adds nothing else a binary shows).
pub fn criu_restores_tun(criu: &Path) -> bool {
    let needle = b"tun[%s]";
    std::fs::read(criu).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
}

/// The error for a function with TUN devices and a CRIU that cannot restore them.
pub fn unpatched_criu(id: &str, devices: &[TunDevice], criu: &Path) -> anyhow::Error {
    let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
    anyhow!(
        "{id} holds TUN device {}, which {} cannot restore (\"No tun device for file\"): it needs corehop's CRIU patch scripts/criu/tun-external.patch; run `make setup`, which builds CRIU with it",
        names.join(", "),
        criu.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_gives_the_device_and_file_flags() {
        let info = "pos:\t0\nflags:\t02104002\nmnt_id:\t24\nino:\t104\niff:\ttun0\n";
        let (name, flags) = parse_fdinfo(info).unwrap();
        assert_eq!(name, "tun0");
        assert_eq!(flags, 0o104002, "O_CLOEXEC is the fd's, not the file's");
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        let e = parse_fdinfo("pos:\t0\nflags:\t02\n").unwrap_err();
        assert!(format!("{e:#}").contains("attached to no device"), "{e:#}");
        assert!(parse_fdinfo("flags:\t02\niff:\ta/b\n").is_err());
        assert!(parse_fdinfo("iff:\ttun0\n").is_err());
    }

    #[test]
    fn addresses_read_back_as_they_are_added() {
        let ptp = TunAddress {
            local: "10.8.0.1".parse().unwrap(),
            peer: Some("10.8.0.2".parse().unwrap()),
            prefix_len: 32,
        };
        let plain = TunAddress {
            local: "fd00::1".parse().unwrap(),
            peer: None,
            prefix_len: 64,
        };
        for a in [ptp, plain] {
            assert_eq!(address_of(&address_msg(7, &a)), Some(a));
        }
    }

    #[test]
    fn added_routes_read_back_and_kernel_routes_are_left_out() {
        let r = TunRoute {
            dst: "10.98.0.0".parse().unwrap(),
            prefix_len: 24,
            gateway: None,
            metric: Some(5),
        };
        let m = route_msg(3, &r);
        assert_eq!(route_of(&m, 3), Some(r.clone()));
        assert_eq!(route_of(&m, 4), None, "another link's route");
        let mut kernel = m.clone();
        kernel.header.protocol = RouteProtocol::Kernel;
        assert_eq!(route_of(&kernel, 3), None);
        let default = TunRoute {
            dst: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
            gateway: Some("10.8.0.2".parse().unwrap()),
            metric: None,
        };
        assert_eq!(route_of(&route_msg(3, &default), 3), Some(default));
    }

    #[test]
    fn tun_flags_come_from_the_kernels_link_info() {
        let nla = |kind, v: u8| InfoTun::Other(netlink_packet_core::DefaultNla::new(kind, vec![v]));
        // `ip tuntap add mode tun` (no pi): IFF_TUN | IFF_NO_PI | IFF_PERSIST.
        let attrs = [nla(3, 1), nla(4, 0), nla(5, 0), nla(6, 1), nla(7, 0)];
        let want = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_PERSIST;
        assert_eq!(tun_flags(&attrs), want as u16);
        let attrs = [nla(3, 2), nla(4, 1), nla(5, 1), nla(6, 0), nla(7, 1)];
        let want = libc::IFF_TAP | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
        assert_eq!(tun_flags(&attrs), want as u16);
    }

    #[test]
    fn the_unpatched_criu_error_names_the_device_and_the_fix() {
        let d = TunDevice {
            name: "tun0".into(),
            flags: 0x1001,
            file_flags: 2,
            mtu: 1500,
            up: true,
            addresses: vec![],
            routes: vec![],
        };
        let e = unpatched_criu("vpn", &[d], Path::new("/usr/local/sbin/criu")).to_string();
        for s in ["vpn", "tun0", "tun-external.patch", "make setup"] {
            assert!(e.contains(s), "{s} missing: {e}");
        }
    }
}
