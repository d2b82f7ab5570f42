//! The agent protocol: `wire::read_frame` (4-byte length + JSON) into `api::Request`,
//! and what a caller can send before it is trusted, against a lab's real keys.
//!
//! The first input byte selects the mode:
//! - even: the rest is a byte stream of frames read as `Request`s until an error;
//!   every request that deserializes must serialize and deserialize to the same JSON;
//! - odd: the rest is what a client sends an agent's TLS server (mutual TLS, the lab's
//!   CA): no fixed input can finish the handshake, since it is bound to the server's fresh
//!   random; and the same bytes as an image signature must not pass for agent `a`'s.
#![no_main]
use agent::api::{image_claim, Request};
use agent::tls::{verify_agent, Credentials, Signature};
use agent::wire;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// A lab's keys, made once per fuzzing process.
fn keys() -> &'static (Credentials, Vec<u8>) {
    static KEYS: OnceLock<(Credentials, Vec<u8>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("corehop-fuzz-keys-{}", std::process::id()));
        let lo = std::net::Ipv4Addr::LOCALHOST.into();
        lab::pki::ensure(&dir, &[("a", lo)], lo).expect("keys");
        let f = lab::pki::files_in(&dir, "a");
        let creds = Credentials::load(&f).expect("credentials");
        let pem = std::fs::read(&f.cert).expect("certificate");
        let _ = std::fs::remove_dir_all(&dir);
        (creds, pem)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        for _ in 0..16 {
            match wire::read_frame::<Request>(&mut rest) {
                Ok(req) => {
                    let json = serde_json::to_value(&req).expect("Request serializes");
                    let back: Request = serde_json::from_value(json.clone())
                        .unwrap_or_else(|e| panic!("{json} does not deserialize back: {e}"));
                    assert_eq!(serde_json::to_value(&back).unwrap(), json);
                    // Writing it as a frame and reading it again gives the same request.
                    let mut framed = Vec::new();
                    wire::write_frame(&mut framed, &req).expect("frame fits");
                    let again: Request = wire::read_frame(&mut &framed[..]).expect("reframed");
                    assert_eq!(serde_json::to_value(&again).unwrap(), json);
                }
                Err(_) => break,
            }
        }
    } else {
        let (creds, pem) = keys();
        let mut conn = creds.server_connection().expect("server connection");
        let mut input = rest;
        while !input.is_empty() {
            match conn.read_tls(&mut input) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if conn.process_new_packets().is_err() {
                        break;
                    }
                }
            }
        }
        assert!(conn.is_handshaking(), "a scripted client finished the handshake");
        let cert = rustls_pki_types::pem::PemObject::from_pem_slice(pem).expect("pem");
        let claim = image_claim("svc", "final", rest.len() as u64, "00", None, None);
        for scheme in [0x0403u16, 0x0807, u16::from_be_bytes([mode, mode])] {
            let sig = Signature {
                scheme,
                bytes: hex::encode(rest),
            };
            assert!(verify_agent(&cert, "a", &claim, &sig).is_err(), "a forged signature passed");
        }
    }
});
