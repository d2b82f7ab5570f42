//! Tokio driver: one UDP socket, one task running an [`SctpStack`].
//!
//! The task ends when the owning [`SctpServer`]/[`SctpClient`] is dropped.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::pcap::PcapWriter;
use crate::stack::{AssocId, SctpConfig, SctpError, SctpEvent, SctpStack};

/// UDP port of SCTP over UDP (RFC 6951 §5, IANA "sctp-tunneling").
pub const SCTP_UDP_PORT: u16 = 9899;

pub(crate) enum Cmd {
    Send {
        assoc: AssocId,
        stream: u16,
        payload: Bytes,
    },
    Close(AssocId),
    Connect(SocketAddr, oneshot::Sender<Result<AssocId, SctpError>>),
    List(oneshot::Sender<Vec<(AssocId, SocketAddr)>>),
}

/// Cloneable handle to send on any association of the socket.
#[derive(Clone)]
pub struct SctpSender {
    pub(crate) cmd: mpsc::UnboundedSender<Cmd>,
}

/// The driver task is gone (its socket owner was dropped).
#[derive(Debug, thiserror::Error)]
#[error("SCTP driver stopped")]
pub struct DriverStopped;

impl SctpSender {
    /// Queues a message; failures on the association are reported as `Down` events
    /// or logged, since the send happens in the driver task.
    pub fn send(&self, assoc: AssocId, stream: u16, payload: Bytes) -> Result<(), DriverStopped> {
        self.cmd
            .send(Cmd::Send {
                assoc,
                stream,
                payload,
            })
            .map_err(|_| DriverStopped)
    }

    /// Aborts the association.
    pub fn close(&self, assoc: AssocId) -> Result<(), DriverStopped> {
        self.cmd.send(Cmd::Close(assoc)).map_err(|_| DriverStopped)
    }

    /// Established associations and their peers' UDP addresses.
    pub async fn associations(&self) -> Result<Vec<(AssocId, SocketAddr)>, DriverStopped> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::List(tx)).map_err(|_| DriverStopped)?;
        rx.await.map_err(|_| DriverStopped)
    }
}

/// A driver task's handles: its commands in, its events out.
pub(crate) struct Socket {
    pub(crate) local: SocketAddr,
    pub(crate) sender: SctpSender,
    pub(crate) events: mpsc::UnboundedReceiver<SctpEvent>,
}

impl Socket {
    async fn bind(addr: SocketAddr, cfg: SctpConfig, accept: bool) -> io::Result<Socket> {
        let sock = UdpSocket::bind(addr).await?;
        let local = sock.local_addr()?;
        let capture = match &cfg.pcap {
            Some(path) => Some(Capture::create(path, local)?),
            None => None,
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            sock,
            SctpStack::new(cfg, accept),
            capture,
            cmd_rx,
            ev_tx,
        ));
        Ok(Socket {
            local,
            sender: SctpSender { cmd: cmd_tx },
            events: ev_rx,
        })
    }
}

/// Streams the socket's datagrams to a pcap file. Write errors disable the capture
/// (logged once) rather than disturbing the association.
struct Capture {
    file: std::fs::File,
    writer: PcapWriter,
    local: SocketAddr,
}

impl Capture {
    fn create(path: &std::path::Path, local: SocketAddr) -> io::Result<Capture> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut c = Capture {
            file: std::fs::File::create(path)?,
            writer: PcapWriter::new(),
            local,
        };
        c.flush()?;
        Ok(c)
    }

    fn flush(&mut self) -> io::Result<()> {
        use std::io::Write;
        self.file.write_all(&self.writer.take())
    }

    fn record(
        slot: &mut Option<Capture>,
        from: Option<SocketAddr>,
        to: Option<SocketAddr>,
        data: &[u8],
    ) {
        let Some(c) = slot.as_mut() else {
            return;
        };
        let local = c.local;
        c.writer
            .udp(from.unwrap_or(local), to.unwrap_or(local), data);
        if let Err(e) = c.flush() {
            tracing::warn!("pcap capture stopped: {e}");
            *slot = None;
        }
    }
}

/// Retries a socket operation interrupted by a signal: a socket restored by CRIU may
/// report EINTR once.
async fn send_to(sock: &UdpSocket, data: &[u8], to: SocketAddr) {
    for _ in 0..3 {
        match sock.send_to(data, to).await {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Unreachable peers etc.: SCTP retransmits, nothing else to do.
                tracing::debug!(%to, "UDP send failed: {e}");
                return;
            }
            Ok(_) => return,
        }
    }
}

async fn run(
    sock: UdpSocket,
    mut stack: SctpStack,
    mut capture: Option<Capture>,
    mut cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    ev_tx: mpsc::UnboundedSender<SctpEvent>,
) {
    // Largest UDP payload; sctp-proto keeps packets under its fixed MTU anyway.
    let mut buf = vec![0u8; 65536];
    loop {
        while let Some((to, data)) = stack.poll_transmit() {
            Capture::record(&mut capture, None, Some(to), &data);
            send_to(&sock, &data, to).await;
        }
        while let Some(ev) = stack.poll_event() {
            if ev_tx.send(ev).is_err() {
                return;
            }
        }
        let deadline = stack.poll_timeout();
        let sleep = tokio::time::sleep_until(
            deadline
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
        );
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    Capture::record(&mut capture, Some(from), None, &buf[..n]);
                    stack.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ICMP errors surfacing on the socket: log, keep serving.
                    tracing::debug!("UDP receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            cmd = cmd_rx.recv() => match cmd {
                None => return,
                Some(Cmd::Send { assoc, stream, payload }) => {
                    if let Err(e) = stack.send(Instant::now(), assoc, stream, &payload) {
                        tracing::warn!("{e}");
                    }
                }
                Some(Cmd::Close(assoc)) => {
                    let _ = stack.close(Instant::now(), assoc);
                }
                Some(Cmd::Connect(remote, reply)) => {
                    let _ = reply.send(stack.connect(Instant::now(), remote));
                }
                Some(Cmd::List(reply)) => {
                    let _ = reply.send(stack.associations());
                }
            },
            _ = sleep => stack.handle_timeout(Instant::now()),
            _ = ev_tx.closed() => return,
        }
    }
}

/// SCTP-over-UDP server: accepts associations from any peer (the MME side).
pub struct SctpServer {
    inner: Socket,
}

impl SctpServer {
    pub async fn bind(addr: SocketAddr, cfg: SctpConfig) -> io::Result<SctpServer> {
        Ok(SctpServer {
            inner: Socket::bind(addr, cfg, true).await?,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn sender(&self) -> SctpSender {
        self.inner.sender.clone()
    }

    /// Next event; `None` only if the driver task died.
    pub async fn recv(&mut self) -> Option<SctpEvent> {
        self.inner.events.recv().await
    }
}

/// SCTP-over-UDP client with one association (the eNB side).
pub struct SctpClient {
    pub(crate) inner: Socket,
    pub(crate) assoc: AssocId,
    pub(crate) peer: SocketAddr,
}

impl SctpClient {
    /// Binds `local` (port 0 is fine), connects to `remote` and waits until the
    /// association is up or `timeout` passes.
    pub async fn connect(
        local: SocketAddr,
        remote: SocketAddr,
        cfg: SctpConfig,
        timeout: Duration,
    ) -> io::Result<SctpClient> {
        let mut inner = Socket::bind(local, cfg, false).await?;
        let (tx, rx) = oneshot::channel();
        inner
            .sender
            .cmd
            .send(Cmd::Connect(remote, tx))
            .map_err(|_| io::Error::other(DriverStopped))?;
        let assoc = rx
            .await
            .map_err(|_| io::Error::other(DriverStopped))?
            .map_err(io::Error::other)?;
        let wait_up = async {
            while let Some(ev) = inner.events.recv().await {
                match ev {
                    SctpEvent::Up { assoc: a, .. } if a == assoc => return Ok(()),
                    SctpEvent::Down { assoc: a, reason } if a == assoc => {
                        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, reason))
                    }
                    _ => {}
                }
            }
            Err(io::Error::other(DriverStopped))
        };
        tokio::time::timeout(timeout, wait_up).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no SCTP association with {remote} within {timeout:?}"),
            )
        })??;
        Ok(SctpClient {
            inner,
            assoc,
            peer: remote,
        })
    }

    pub fn assoc(&self) -> AssocId {
        self.assoc
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    pub fn sender(&self) -> SctpSender {
        self.inner.sender.clone()
    }

    pub fn send(&self, stream: u16, payload: Bytes) -> Result<(), DriverStopped> {
        self.inner.sender.send(self.assoc, stream, payload)
    }

    /// Next event (messages, or `Down` when the association is lost).
    pub async fn recv(&mut self) -> Option<SctpEvent> {
        self.inner.events.recv().await
    }

    /// Aborts the association.
    pub fn close(&self) -> Result<(), DriverStopped> {
        self.inner.sender.close(self.assoc)
    }
}
