//! The eNB side on Linux's own SCTP instead of corehop's user-space stack: a one-to-one
//! kernel socket (RFC 6458 API, through `oxirush-sctp`) with RFC 6951 UDP encapsulation,
//! which is what an srsRAN or OAI eNB on a current Linux does. It gives the same
//! [`SctpClient`] and events as the UDP driver, so the RAN emulator runs unchanged over a
//! reference SCTP implementation; the kernel does the protocol (RTO, SACK, heartbeats).
//!
//! Needs a kernel with SCTP (the `sctp` module) and `net.sctp.udp_port` set to the port
//! encapsulated packets leave from and arrive on (9899), before the socket is made.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::Bytes;
use oxirush_sctp::{
    AssocChangeState, ConnectedSocket, Event, InitParams, Notification, NotificationOrData,
    PeerAddressParams, RtoInfo, SendOptions, Socket as KernelSocket, SocketToAssociation,
    SubscribeEventAssocId,
};
use tokio::sync::mpsc;

use crate::stack::{AssocId, SctpConfig, SctpError, SctpEvent, SctpMessage};
use crate::udp::{Cmd, SctpClient, SctpSender, Socket};

/// The one association of a kernel client.
const ASSOC: AssocId = AssocId(1);

/// Streams asked for each way: S1AP puts non-UE signalling on stream 0 and spreads UEs
/// over 1..=15 (proto-s1ap's `ue_stream`), and Linux's default of 10 would refuse some.
const STREAMS: u16 = 16;

/// `SCTP_REMOTE_UDP_ENCAPS_PORT` (linux/sctp.h, Linux 5.11): the UDP port encapsulated
/// packets go to. libc does not define the option or its struct.
const SCTP_REMOTE_UDP_ENCAPS_PORT: libc::c_int = 132;

#[repr(C)]
struct SctpUdpEncaps {
    sue_assoc_id: libc::c_int,
    sue_address: libc::sockaddr_storage,
    sue_port: u16,
}

/// Sends this socket's packets in UDP to `port` (network order in the struct). The
/// wildcard address and association 0 make it the socket's default, which the
/// association connected next takes.
fn encapsulate_to(sock: &KernelSocket, port: u16) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_storage (AF_UNSPEC, the wildcard address).
    let mut v: SctpUdpEncaps = unsafe { std::mem::zeroed() };
    v.sue_port = port.to_be();
    // SAFETY: setsockopt reads size_of::<SctpUdpEncaps>() bytes of `v`, which lives
    // through the call; the fd is the socket's own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_SCTP,
            SCTP_REMOTE_UDP_ENCAPS_PORT,
            (&v as *const SctpUdpEncaps).cast(),
            std::mem::size_of::<SctpUdpEncaps>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("cannot set the SCTP socket's UDP encapsulation port {port} (Linux 5.11 or later needed): {e}"),
        ));
    }
    Ok(())
}

impl SctpClient {
    /// Like [`SctpClient::connect`], on the kernel's SCTP: binds `local` (one address, so
    /// the INIT carries no address parameters), and associates with the SCTP endpoint at
    /// `remote`'s address and `cfg.sctp_port`, encapsulated in UDP to `remote`'s port.
    pub async fn connect_kernel(
        local: SocketAddr,
        remote: SocketAddr,
        cfg: SctpConfig,
        timeout: Duration,
    ) -> io::Result<SctpClient> {
        let sock = match remote {
            SocketAddr::V4(_) => KernelSocket::new_v4(SocketToAssociation::OneToOne)?,
            SocketAddr::V6(_) => KernelSocket::new_v6(SocketToAssociation::OneToOne)?,
        };
        sock.bind(local)?;
        encapsulate_to(&sock, remote.port())?;
        let ms = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let opts = sock.options();
        opts.set_rto_info(RtoInfo::new(
            ms(cfg.rto_initial_ms),
            ms(cfg.rto_max_ms.max(cfg.rto_min_ms)),
            ms(cfg.rto_min_ms),
        ))?;
        let mut init = InitParams::streams(STREAMS, STREAMS);
        init.max_attempts = cfg
            .max_init_retransmits
            .map_or(0, |n| u16::try_from(n + 1).unwrap_or(u16::MAX));
        opts.set_init_params(init)?;
        opts.subscribe_events(
            &[Event::Association, Event::Shutdown],
            SubscribeEventAssocId::All,
        )?;
        opts.request_rcvinfo(true)?;
        let to = SocketAddr::new(remote.ip(), cfg.sctp_port);
        let (conn, _) = tokio::time::timeout(timeout, sock.connect(to))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no SCTP association with {to} (UDP {remote}) within {timeout:?}"),
                )
            })??;
        if cfg.heartbeat_interval_ms > 0 {
            let mut hb = PeerAddressParams::new(0, to);
            hb.heartbeat_interval = Duration::from_millis(cfg.heartbeat_interval_ms);
            hb.path_max_retrans = u16::try_from(cfg.max_missed_heartbeats).unwrap_or(u16::MAX);
            conn.options().set_peer_address_params(hb)?;
        }
        let local = conn.local_addr()?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let _ = ev_tx.send(SctpEvent::Up {
            assoc: ASSOC,
            peer: remote,
        });
        tokio::spawn(run(conn, cfg.ppid, remote, cmd_rx, ev_tx));
        Ok(SctpClient {
            inner: Socket {
                local,
                sender: SctpSender { cmd: cmd_tx },
                events: ev_rx,
            },
            assoc: ASSOC,
            peer: remote,
        })
    }
}

/// Moves messages between the association and the channels until either side ends.
async fn run(
    conn: ConnectedSocket,
    ppid: u32,
    peer: SocketAddr,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    ev_tx: mpsc::UnboundedSender<SctpEvent>,
) {
    let down = |reason: String| {
        let _ = ev_tx.send(SctpEvent::Down {
            assoc: ASSOC,
            reason,
        });
    };
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => match cmd {
                None => return,
                Some(Cmd::Send { stream, payload, .. }) => {
                    let opts = SendOptions::new().stream(stream).ppid(ppid);
                    if let Err(e) = conn.send(&payload, opts).await {
                        tracing::warn!("{}", SctpError::Send(ASSOC, e.to_string()));
                    }
                }
                Some(Cmd::Close(_)) => {
                    // SO_LINGER 0: the close aborts, as the user-space stack's does.
                    let _ = conn.options().set_linger(Some(Duration::ZERO));
                    return;
                }
                Some(Cmd::Connect(remote, reply)) => {
                    let _ = reply.send(Err(SctpError::Connect(
                        remote,
                        "a kernel client socket has one association".into(),
                    )));
                }
                Some(Cmd::List(reply)) => {
                    let _ = reply.send(vec![(ASSOC, peer)]);
                }
            },
            r = conn.recv() => match r {
                Ok(Some(NotificationOrData::Data(m))) => {
                    let msg = SctpMessage {
                        assoc: ASSOC,
                        stream: m.stream_id().unwrap_or(0),
                        ppid: m.ppid().unwrap_or(ppid),
                        payload: Bytes::from(m.payload),
                    };
                    if ev_tx.send(SctpEvent::Message(msg)).is_err() {
                        return;
                    }
                }
                Ok(Some(NotificationOrData::Notification(n))) => match n {
                    Notification::AssociationChange(c)
                        if matches!(
                            c.state,
                            AssocChangeState::CommLost
                                | AssocChangeState::ShutdownComplete
                                | AssocChangeState::CannotStartAssoc
                        ) =>
                    {
                        return down(format!("kernel SCTP: {:?} (cause {})", c.state, c.cause));
                    }
                    Notification::Shutdown(_) => return down("kernel SCTP: peer shut down".into()),
                    other => tracing::debug!("kernel SCTP notification {other:?}"),
                },
                Ok(Some(other)) => tracing::debug!("kernel SCTP: {other:?}"),
                Ok(None) => return down("kernel SCTP: the peer closed the association".into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return down(format!("kernel SCTP receive: {e}")),
            },
            _ = ev_tx.closed() => return,
        }
    }
}
