//! The SGi TUN device, opened with a few ioctls through `libc`.
//!
//! Why not the `tun`/`tun-rs` crates: migration needs exact control over two
//! things those crates decide for us: attaching to a device that the runtime's
//! GTP Module Initializer pre-created *without touching its configuration*, and
//! making a device we create ourselves persistent (TUNSETPERSIST), so that closing
//! our fd before a CRIU dump (a TUN fd cannot be checkpointed) does not delete
//! the device, its address, routes and NAT. That is ~100 lines here instead of a
//! large dependency tree.
//!
//! Everything is created in the network namespace of the calling thread.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Address, prefix and MTU given to the device when we have to create it.
#[derive(Debug, Clone, Copy)]
pub struct TunSetup {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    /// The IPv6 address and the UE prefix pool's length: its connected route sends every
    /// UE /64 through the device. Ensured on every attach, also to a pre-created device
    /// (adding it again changes nothing), so a restored SPGW routes its IPv6 UEs.
    pub ipv6: Option<(Ipv6Addr, u8)>,
}

/// An attached TUN device (IFF_TUN | IFF_NO_PI: reads and writes are bare IP packets).
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
}

/// `struct ifreq` of Linux: 16-byte name and a 24-byte union; we write the union
/// members we need (flags, MTU, sockaddr_in) by hand so the layout does not
/// depend on how a libc version models the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..b.len()].copy_from_slice(b);
        Ok(r)
    }

    fn set_short(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_int(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    fn set_ipv4(&mut self, a: Ipv4Addr) {
        // struct sockaddr_in: family (host order), port (0), address (network order).
        self.data = [0; 24];
        self.data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        self.data[4..8].copy_from_slice(&a.octets());
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs an interface ioctl on a throw-away AF_INET socket (of this thread's netns).
fn if_ioctl(req: libc::c_ulong, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: plain syscalls; the socket fd is owned right away, `ifr` is a valid
    // `struct ifreq`-sized buffer for the duration of the call.
    unsafe {
        let s = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let s = OwnedFd::from_raw_fd(s);
        cvt(libc::ioctl(s.as_raw_fd(), req as _, ifr as *mut IfReq))?;
    }
    Ok(())
}

/// Whether a network interface of that name exists in this thread's netns.
pub fn exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

impl Tun {
    /// Attaches to the device `name` if it exists (leaving its address, MTU and
    /// routes as the initializer set them), else creates it persistent with
    /// `setup`. Either way the device is brought up. Must be called inside a tokio
    /// runtime. Returns the device and whether we created it.
    pub fn open(name: &str, setup: &TunSetup) -> io::Result<(Tun, bool)> {
        let create = !exists(name);
        // SAFETY: opening a character device; the fd is owned immediately.
        let fd = unsafe {
            let path = c"/dev/net/tun";
            let fd = cvt(libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            ))?;
            OwnedFd::from_raw_fd(fd)
        };
        let mut ifr = IfReq::new(name)?;
        ifr.set_short((libc::IFF_TUN | libc::IFF_NO_PI) as i16);
        // SAFETY: TUNSETIFF reads/writes a `struct ifreq`, which `ifr` is.
        unsafe {
            cvt(libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETIFF as _,
                &mut ifr as *mut IfReq,
            ))?;
        }
        if create {
            // Persistent: closing our fd (before a checkpoint) keeps the device.
            // SAFETY: TUNSETPERSIST takes an integer argument.
            unsafe {
                cvt(libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETPERSIST as _,
                    1 as libc::c_ulong,
                ))?;
            }
            configure(name, setup)?;
        }
        set_up(name)?;
        if let Some((addr, prefix_len)) = setup.ipv6 {
            add_ipv6(name, addr, prefix_len)?;
        }
        // SAFETY: `fd` is an owned, open fd that `AsyncFd` keeps (and closes) itself,
        // so it cannot be closed behind the reactor's back.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok((Tun { fd }, create))
    }

    /// Reads one IP packet.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                // SAFETY: reading into a valid buffer of `buf.len()` bytes.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one IP packet without waiting: a full TUN queue drops the packet
    /// (EAGAIN), as a congested link would.
    pub fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: writing from a valid buffer.
        let n = unsafe {
            libc::write(
                self.fd.get_ref().as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

fn configure(name: &str, s: &TunSetup) -> io::Result<()> {
    let mut ifr = IfReq::new(name)?;
    ifr.set_int(i32::from(s.mtu));
    if_ioctl(libc::SIOCSIFMTU, &mut ifr)?;
    let mut ifr = IfReq::new(name)?;
    ifr.set_ipv4(s.addr);
    if_ioctl(libc::SIOCSIFADDR, &mut ifr)?;
    let mask = if s.prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(s.prefix_len.min(32)))
    };
    let mut ifr = IfReq::new(name)?;
    ifr.set_ipv4(Ipv4Addr::from(mask));
    if_ioctl(libc::SIOCSIFNETMASK, &mut ifr)
}

/// `struct in6_ifreq` of Linux (SIOCSIFADDR on an AF_INET6 socket).
#[repr(C)]
struct In6IfReq {
    addr: [u8; 16],
    prefix_len: u32,
    ifindex: libc::c_int,
}

/// Adds an IPv6 address with its prefix route to the device; one already there is fine.
fn add_ipv6(name: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
    let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = In6IfReq {
        addr: addr.octets(),
        prefix_len: u32::from(prefix_len),
        ifindex: ifindex as libc::c_int,
    };
    // SAFETY: plain syscalls; the socket fd is owned right away, `req` is a valid
    // `struct in6_ifreq` for the duration of the call.
    let r = unsafe {
        let s = cvt(libc::socket(
            libc::AF_INET6,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let s = OwnedFd::from_raw_fd(s);
        cvt(libc::ioctl(
            s.as_raw_fd(),
            libc::SIOCSIFADDR as _,
            &mut req as *mut In6IfReq,
        ))
    };
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map(|_| ()),
    }
}

fn set_up(name: &str) -> io::Result<()> {
    let mut ifr = IfReq::new(name)?;
    if_ioctl(libc::SIOCGIFFLAGS, &mut ifr)?;
    let flags = ifr.short();
    let up = libc::IFF_UP as i16;
    if flags & up == 0 {
        ifr.set_short(flags | up);
        if_ioctl(libc::SIOCSIFFLAGS, &mut ifr)?;
    }
    Ok(())
}
