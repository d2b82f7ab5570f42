//! The agent protocol: length-prefixed JSON frames over TCP after a mutual HMAC-SHA256
//! challenge-response on the lab's token, so the token itself never crosses the wire.
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Frames carry requests and answers, never bulk data: a small bound stops a hostile peer
/// from making us allocate.
pub const MAX_FRAME: usize = 1 << 20;
const PROTOCOL: &str = "corehop-agent/1";

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

#[derive(Serialize, Deserialize)]
struct Challenge {
    protocol: String,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Proof {
    nonce: String,
    mac: String,
}

fn nonce() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn mac(token: &[u8], role: &str, nonce: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(token).expect("HMAC takes any key length");
    m.update(PROTOCOL.as_bytes());
    m.update(role.as_bytes());
    m.update(nonce.as_bytes());
    m
}

fn verify(token: &[u8], role: &str, nonce: &str, proof_hex: &str) -> bool {
    let Ok(proof) = hex::decode(proof_hex) else {
        return false;
    };
    mac(token, role, nonce).verify_slice(&proof).is_ok()
}

/// Server side: the caller must prove it holds the token, then we prove it back.
pub fn accept<S: Read + Write>(s: &mut S, token: &[u8]) -> Result<()> {
    let ours = nonce();
    write_frame(
        s,
        &Challenge {
            protocol: PROTOCOL.into(),
            nonce: ours.clone(),
        },
    )?;
    let proof: Proof = read_frame(s)?;
    if !verify(token, "client", &ours, &proof.mac) {
        bail!("caller failed authentication (wrong lab token)");
    }
    let mac = hex::encode(mac(token, "server", &proof.nonce).finalize().into_bytes());
    write_frame(
        s,
        &Proof {
            nonce: String::new(),
            mac,
        },
    )
}

/// Client side of [`accept`].
pub fn connect<S: Read + Write>(s: &mut S, token: &[u8]) -> Result<()> {
    let ch: Challenge = read_frame(s).context("the peer is not a corehop agent")?;
    if ch.protocol != PROTOCOL {
        bail!("the agent speaks {:?}, we speak {PROTOCOL:?}", ch.protocol);
    }
    let ours = nonce();
    let mac = hex::encode(mac(token, "client", &ch.nonce).finalize().into_bytes());
    write_frame(
        s,
        &Proof {
            nonce: ours.clone(),
            mac,
        },
    )?;
    let back: Proof = read_frame(s).context("the agent refused our lab token")?;
    if !verify(token, "server", &ours, &back.mac) {
        bail!("the agent could not prove it holds the lab token");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn handshake(
        server_token: &'static [u8],
        client_token: &'static [u8],
    ) -> (Result<()>, Result<()>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || accept(&mut a, server_token));
        let c = connect(&mut b, client_token);
        drop(b);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_token_passes_both_ways() {
        let (s, c) = handshake(
            b"0123456789abcdef0123456789abcdef",
            b"0123456789abcdef0123456789abcdef",
        );
        s.unwrap();
        c.unwrap();
    }

    #[test]
    fn wrong_token_is_refused() {
        let (s, c) = handshake(
            b"0123456789abcdef0123456789abcdef",
            b"ffffffffffffffffffffffffffffffff",
        );
        assert!(s.unwrap_err().to_string().contains("authentication"));
        assert!(c.is_err());
    }

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
