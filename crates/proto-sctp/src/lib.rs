//! SCTP over UDP (RFC 6951) for S1-MME.
//!
//! This machine has no kernel SCTP, so S1AP runs over user-space SCTP
//! ([`sctp_proto`], sans-IO) encapsulated in UDP (port 9899 at the MME). Keeping the
//! association in process memory plus one UDP socket is also what lets CRIU
//! checkpoint an MME with its eNB associations intact.
//!
//! What this crate adds to sctp-proto, and why:
//! - **PPID 18** (S1AP). sctp-proto's `PayloadProtocolIdentifier` only knows WebRTC
//!   values and encodes any other as 58. Rather than vendoring a patched copy, the
//!   stack sends with PPID 53 internally and [`wire::rewrite_data_ppid`] swaps 53↔18
//!   in DATA chunks at the UDP boundary and recomputes the CRC32c. Incoming packets
//!   have their checksum verified *before* the rewrite, so corruption is not hidden.
//! - **RTO** defaults of 100/200/400 ms (min/initial/max) so recovery after a pause
//!   (a migration) takes a few hundred ms, not sctp-proto's 1 s minimum.
//! - **HEARTBEAT** path monitoring: sctp-proto answers HEARTBEATs but never sends
//!   them, so [`SctpStack`] sends its own when the path is idle and declares the
//!   association lost after `max_missed_heartbeats` silent intervals.
//! - **ABORT** on local close, so the peer learns at once.
//!
//! [`stack::SctpStack`] is the sans-IO core; [`udp`] (feature `udp`, default) is the
//! small tokio driver used by the MME (server) and the eNB emulator (client); `kernel`
//! (feature `kernel`, Linux) gives the same client on the kernel's SCTP with UDP
//! encapsulation, the stack a real eNB uses, to test the MME against.

#[cfg(feature = "kernel")]
mod kernel;
pub mod pcap;
pub mod stack;
#[cfg(feature = "udp")]
pub mod udp;
pub mod wire;

pub use stack::{
    AssocId, SctpConfig, SctpError, SctpEvent, SctpMessage, SctpStack, SctpTuning, PPID_S1AP,
    SCTP_PORT_S1AP,
};
#[cfg(feature = "udp")]
pub use udp::{SctpClient, SctpSender, SctpServer, SCTP_UDP_PORT};
