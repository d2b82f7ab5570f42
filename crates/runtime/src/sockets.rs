//! Sockets CRIU cannot carry on this host, found before anything is frozen, so that a
//! migration of a function holding one is refused with a clear reason and the function
//! keeps running where it is (instead of a dump that fails, frozen, with CRIU's log line).
//!
//! - Raw IP sockets: CRIU dumps them through the kernel's raw sock_diag (raw_diag,
//!   CONFIG_INET_RAW_DIAG); where the kernel has none, as on these machines, it cannot.
//!   Whether it has one is asked the way CRIU asks: a sock_diag dump for IPPROTO_RAW.
//! - Kernel SCTP sockets: CRIU has no SCTP support at all (its inet dumper knows TCP, UDP,
//!   UDP-Lite, ICMP and raw). corehop's MME carries SCTP in user space over UDP instead.
//!
//! A socket is found by its inode: `/proc/PID/fd/N -> socket:[INODE]`, matched against the
//! task's own namespace's tables in `/proc/PID/net/` (raw, raw6, sctp/eps, sctp/assocs).
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, IPPROTO_RAW};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// One socket of a function that CRIU cannot dump here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncarriable {
    pub pid: i32,
    /// The task's command name (`/proc/PID/comm`).
    pub comm: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RawIpv4,
    RawIpv6,
    Sctp,
}

impl std::fmt::Display for Uncarriable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, why) = match self.kind {
            Kind::RawIpv4 | Kind::RawIpv6 => (
                if self.kind == Kind::RawIpv4 { "a raw IPv4 socket" } else { "a raw IPv6 socket" },
                "CRIU dumps raw sockets through the kernel's raw sock_diag, which this kernel lacks (CONFIG_INET_RAW_DIAG)",
            ),
            Kind::Sctp => (
                "a kernel SCTP socket",
                "CRIU cannot dump SCTP sockets (carry SCTP in user space over UDP, RFC 6951, as corehop's MME does)",
            ),
        };
        write!(f, "task {} ({}) holds {what}: {why}", self.pid, self.comm)
    }
}

/// The sockets of tasks `pids` that CRIU cannot dump on this host.
pub fn uncarriable(pids: &[i32]) -> Vec<Uncarriable> {
    let mut out = Vec::new();
    for &pid in pids {
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        let mut tables = vec![("sctp/eps", 7, Kind::Sctp), ("sctp/assocs", 10, Kind::Sctp)];
        if !raw_diag() {
            tables.extend([("raw", 9, Kind::RawIpv4), ("raw6", 9, Kind::RawIpv6)]);
        }
        let mut seen = BTreeSet::new();
        for (table, column, kind) in tables {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for ino in table_inodes(&text, column) {
                if inodes.contains(&ino) && seen.insert(ino) {
                    out.push(Uncarriable {
                        pid,
                        comm: comm.clone(),
                        kind,
                    });
                }
            }
        }
    }
    out
}

/// Inodes of the sockets task `pid` holds.
fn socket_inodes(pid: i32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The inode column of a /proc/net table (header line skipped).
fn table_inodes(text: &str, column: usize) -> impl Iterator<Item = u64> + '_ {
    text.lines()
        .skip(1)
        .filter_map(move |l| l.split_whitespace().nth(column)?.parse().ok())
}

/// Whether the kernel answers sock_diag for raw sockets (asked once per process).
fn raw_diag() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| ask_raw_diag().unwrap_or(false))
}

/// A raw-socket sock_diag dump: the kernel answers ENOENT without a raw handler.
fn ask_raw_diag() -> std::io::Result<bool> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: AF_INET,
            protocol: IPPROTO_RAW,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId::new_v4(),
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut answer = vec![0; 8192];
    let n = socket.recv(&mut &mut answer[..], 0)?;
    Ok(
        match NetlinkMessage::<SockDiagMessage>::deserialize(&answer[..n]).map(|m| m.payload) {
            // A raw socket's entry, or the end of an empty dump: the handler is there.
            Ok(NetlinkPayload::InnerMessage(_)) | Ok(NetlinkPayload::Done(_)) => true,
            Ok(NetlinkPayload::Error(e)) => e.code.is_none(),
            _ => false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inode_column_is_read_from_each_row() {
        let raw = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   1: 00000000:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 40213 2 0000000000000000 0\n";
        assert_eq!(table_inodes(raw, 9).collect::<Vec<_>>(), vec![40213]);
        let eps = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
                   ffff8a0c 0000 2   10  41   36412      0 51712 10.0.0.1\n";
        assert_eq!(table_inodes(eps, 7).collect::<Vec<_>>(), vec![51712]);
        assert_eq!(table_inodes("header only\n", 9).count(), 0);
    }

    #[test]
    fn a_task_holding_a_raw_socket_is_named_where_the_kernel_cannot_dump_it() {
        // Needs CAP_NET_RAW; the test process is the task.
        // SAFETY: a plain socket(2) call; the fd is closed below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        if raw < 0 {
            eprintln!("skipped: no CAP_NET_RAW");
            return;
        }
        let found = uncarriable(&[std::process::id() as i32]);
        // SAFETY: our own fd.
        unsafe { libc::close(raw) };
        if raw_diag() {
            assert!(found.is_empty(), "{found:?}");
        } else {
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].kind, Kind::RawIpv4);
            assert!(
                found[0].to_string().contains("raw IPv4 socket"),
                "{}",
                found[0]
            );
        }
        assert!(uncarriable(&[std::process::id() as i32]).is_empty());
    }
}
