//! Sockets CRIU cannot carry, found before anything is frozen, so that a migration of a
//! function holding one is refused with a clear reason and the function keeps running where
//! it is (instead of a dump that fails, frozen, with CRIU's log line).
//!
//! Kernel SCTP sockets: CRIU has no SCTP support (its inet dumper knows TCP, UDP, UDP-Lite,
//! ICMP and raw). corehop's MME carries SCTP in user space over UDP instead. Raw sockets do
//! move, though this kernel has no raw sock_diag: CRIU describes an inet socket the kernel
//! does not list from getsockname/getpeername (measured: iputils ping's raw ICMP socket
//! restored, and sending, at the destination).
//!
//! A socket is found by its inode: `/proc/PID/fd/N -> socket:[INODE]`, matched against the
//! task's own namespace's SCTP tables (`/proc/PID/net/sctp/{eps,assocs}`, absent where the
//! kernel has no SCTP).
use std::collections::BTreeSet;

/// A kernel SCTP socket of a function, which CRIU cannot dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncarriable {
    pub pid: i32,
    /// The task's command name (`/proc/PID/comm`).
    pub comm: String,
}

impl std::fmt::Display for Uncarriable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task {} ({}) holds a kernel SCTP socket: CRIU cannot dump SCTP sockets (carry SCTP in user space over UDP, RFC 6951, as corehop's MME does)",
            self.pid, self.comm
        )
    }
}

/// The SCTP tables of a namespace and the column holding each row's socket inode.
const SCTP_TABLES: [(&str, usize); 2] = [("sctp/eps", 7), ("sctp/assocs", 10)];

/// The sockets of tasks `pids` that CRIU cannot dump.
pub fn uncarriable(pids: &[i32]) -> Vec<Uncarriable> {
    let mut out = Vec::new();
    for &pid in pids {
        let inodes = socket_inodes(pid);
        for (table, column) in SCTP_TABLES {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            if table_inodes(&text, column).any(|ino| inodes.contains(&ino)) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                out.push(Uncarriable {
                    pid,
                    comm: comm.trim().into(),
                });
                break;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inode_column_is_read_from_each_row() {
        let eps = " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n\
                   ffff8a0c 0000 2   10  41   36412      0 51712 10.0.0.1\n";
        assert_eq!(table_inodes(eps, 7).collect::<Vec<_>>(), vec![51712]);
        let assocs = " ASSOC     SOCK   STY SST ST HBKT ASSOC-ID TX_QUEUE RX_QUEUE UID INODE LPORT RPORT LADDRS <-> RADDRS HBINT INS OUTS MAXRT T1X T2X RTXC wmema wmemq sndbuf rcvbuf\n\
                      ffff9b 0000 1 1 3 1234 5 0 0 0 61000 36412 36412 10.0.0.1 <-> *10.0.0.2 7500 10 10 10 0 0 0 1 0 212992 212992\n";
        assert_eq!(table_inodes(assocs, 10).collect::<Vec<_>>(), vec![61000]);
        assert_eq!(table_inodes("header only\n", 7).count(), 0);
    }

    #[test]
    fn a_task_without_sctp_sockets_holds_nothing_uncarriable() {
        let _udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(uncarriable(&[std::process::id() as i32]).is_empty());
    }
}
