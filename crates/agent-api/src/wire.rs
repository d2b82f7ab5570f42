//! The agent protocol: length-prefixed JSON frames, inside mutual TLS (see `tls`).
use anyhow::{bail, Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Frames carry requests and answers, never bulk data: a small bound stops a hostile peer
/// from making us allocate.
pub const MAX_FRAME: usize = 1 << 20;

/// How long a peer may leave data or keepalive probes unacknowledged, or a transfer make
/// no progress at all, before the connection fails.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<()> {
    // Length and body in one write: one segment per frame with TCP_NODELAY.
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, msg)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes exceeds the {MAX_FRAME} byte limit");
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Both ends of an agent connection: a peer that vanishes (a cut link keeps its answer in
/// its send queue) fails the connection within `STALL_TIMEOUT` of silence. No read deadline
/// could tell that from a long operation; keepalive probes can, since a live peer's kernel
/// answers them however long its agent works.
pub fn bound_silence(s: &TcpStream) -> Result<()> {
    s.set_nodelay(true)?;
    let sock = socket2::SockRef::from(s);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(1))
            .with_interval(Duration::from_secs(1)),
    )?;
    // Unacknowledged data and unanswered probes alike (tcp(7)).
    sock.set_tcp_user_timeout(Some(STALL_TIMEOUT))?;
    Ok(())
}

/// What waits on a connection, asked without blocking or taking it.
#[derive(Debug, PartialEq, Eq)]
pub enum Waiting {
    Nothing,
    Data,
    /// The peer closed it (or it broke): its process may be dead.
    Closed,
}

pub fn waiting(s: &TcpStream) -> Waiting {
    use std::os::fd::AsRawFd;
    let mut b = 0u8;
    // SAFETY: recv(2) into one byte we own, peeking, without blocking.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        1.. => Waiting::Data,
        0 => Waiting::Closed,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            Waiting::Nothing
        }
        _ => Waiting::Closed,
    }
}

pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).context("connection closed")?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes exceeds the {MAX_FRAME} byte limit");
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .context("connection closed mid-frame")?;
    serde_json::from_slice(&body).context("malformed frame")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut big = Vec::new();
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(read_frame::<serde_json::Value>(&mut &big[..]).is_err());
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{{{");
        assert!(read_frame::<serde_json::Value>(&mut &junk[..]).is_err());
        assert!(read_frame::<serde_json::Value>(&mut &[0u8, 0][..]).is_err());
    }
}
