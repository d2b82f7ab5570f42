//! Downlink traffic from the pdn host: a thread inside the pdn host's network
//! namespace (`downlink_from_netns`) with a UDP socket there, sending one datagram per
//! request to a UE's IP. The SGi routes it to the SPGW, which delivers it through the
//! UE's tunnel, or buffers it for an idle UE and sends a Downlink Data Notification so
//! that the MME pages. The eNB side counts arrivals ([`crate::dataplane`]).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;

use anyhow::Context;
use tracing::debug;

use crate::dataplane::DOWNLINK_MAGIC;

/// Handle to the sending thread; it ends when the handle is dropped.
pub struct Downlink {
    tx: mpsc::Sender<Ipv4Addr>,
}

impl Downlink {
    /// Enters `netns` on a thread of its own and opens the socket there; errors if
    /// either fails (e.g. no such namespace).
    pub fn start(netns: &str, port: u16) -> anyhow::Result<Downlink> {
        let (tx, rx) = mpsc::channel::<Ipv4Addr>();
        let (ready_tx, ready) = mpsc::channel();
        let ns = netns.to_string();
        std::thread::Builder::new()
            .name("ran-downlink".into())
            .spawn(move || {
                // setns affects only this thread: the RAN's own sockets stay where they are.
                let sock = lab::net::enter_netns(&ns)
                    .and_then(|_| UdpSocket::bind("0.0.0.0:0").context("UDP socket"));
                let sock = match sock {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut seq = 0u64;
                while let Ok(ue) = rx.recv() {
                    let mut payload = DOWNLINK_MAGIC.to_vec();
                    payload.extend_from_slice(&seq.to_be_bytes());
                    seq += 1;
                    // A lost datagram is what the receive count measures; nothing to retry.
                    if let Err(e) = sock.send_to(&payload, SocketAddrV4::new(ue, port)) {
                        debug!(%ue, "downlink datagram not sent: {e}");
                    }
                }
            })
            .context("cannot start the downlink thread")?;
        ready
            .recv()
            .context("downlink thread ended")?
            .with_context(|| format!("downlink_from_netns = {netns:?}"))?;
        Ok(Downlink { tx })
    }

    /// One datagram to `ue`; false if the thread is gone.
    pub fn send(&self, ue: Ipv4Addr) -> bool {
        self.tx.send(ue).is_ok()
    }
}
