//! `tun-echo DEVICE`: a TUN program that knows nothing of migration, for the tests of
//! runtime::tun (crates/runtime/tests/tun_inherit.rs). It creates DEVICE as OpenVPN does
//! (TUNSETIFF, not persistent: the device lives as long as its file), prints `ready`, and
//! answers every ICMP echo request the kernel routes into the device, whatever its
//! address; its address and routes are set from outside, as an up-script would.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn main() {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: tun-echo DEVICE");
        std::process::exit(2);
    };
    let tun = match open(&name) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tun-echo: cannot create {name}: {e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    let mut buf = [0u8; 65536];
    loop {
        let mut p = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd. EINTR (a restored task's first call) loops.
        if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
            continue;
        }
        // SAFETY: read(2) into a buffer of its length.
        let n = unsafe { libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        if let Some(reply) = echo_reply(&mut buf[..n as usize]) {
            // SAFETY: write(2) from a live buffer; a full queue drops the reply.
            unsafe { libc::write(tun.as_raw_fd(), reply.as_ptr().cast(), reply.len()) };
        }
    }
}

/// Opens /dev/net/tun non-blocking and attaches it to a new TUN device `name` (IP packets
/// without a packet-information header).
fn open(name: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: open(2) of a character device with a valid C string.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // struct ifreq: the name, then the flags member of its union.
    let mut ifr = [0u8; 40];
    let n = name.len().min(libc::IFNAMSIZ - 1);
    ifr[..n].copy_from_slice(&name.as_bytes()[..n]);
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads a 40-byte struct ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, ifr.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Turns an IPv4 ICMP echo request into its reply in place: addresses swapped, type 0,
/// ICMP checksum recomputed (the IP header's stays right: the same words, swapped).
fn echo_reply(p: &mut [u8]) -> Option<&[u8]> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p[0] >> 4 != 4 || ihl < 20 || p.len() < ihl + 8 || p[9] != 1 || p[ihl] != 8 {
        return None;
    }
    let (src, dst) = ([p[12], p[13], p[14], p[15]], [p[16], p[17], p[18], p[19]]);
    p[12..16].copy_from_slice(&dst);
    p[16..20].copy_from_slice(&src);
    let icmp = &mut p[ihl..];
    icmp[0] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let mut sum: u32 = icmp
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    Some(p)
}
