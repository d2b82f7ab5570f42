//! Mutual TLS on loopback with keys made as `lab up` makes them: who gets in, and what a
//! machine in the middle can do with the bytes (replay them, alter them: nothing).
use super::*;
use crate::wire::{read_frame, write_frame};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A lab's keys in a folder of their own: hosts `a` and `b` on loopback.
struct Keys(PathBuf);

impl Keys {
    fn new(tag: &str) -> Keys {
        let dir = std::env::temp_dir().join(format!("corehop-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        lab::pki::ensure(&dir, &[("a", LOOPBACK), ("b", LOOPBACK)], LOOPBACK).unwrap();
        Keys(dir)
    }
    fn of(&self, who: &str) -> Credentials {
        Credentials::load(&lab::pki::files_in(&self.0, who)).unwrap()
    }
    fn cert(&self, who: &str) -> CertificateDer<'static> {
        let pem = std::fs::read(lab::pki::files_in(&self.0, who).cert).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server that answers every frame with the same frame and counts what it served.
struct Echo {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
}

fn echo(creds: Credentials) -> Echo {
    let l = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let (sv, rf) = (served.clone(), refused.clone());
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let (creds, sv, rf) = (creds.clone(), sv.clone(), rf.clone());
            std::thread::spawn(move || {
                let mut s = match creds.accept(tcp) {
                    Ok(s) => s,
                    Err(e) => return rf.lock().unwrap().push(format!("{e:#}")),
                };
                loop {
                    match read_frame::<serde_json::Value>(&mut s) {
                        Ok(v) => {
                            sv.fetch_add(1, Ordering::SeqCst);
                            write_frame(&mut s, &v).unwrap();
                        }
                        Err(e) if e.to_string() == "connection closed" => return,
                        Err(e) => return rf.lock().unwrap().push(format!("{e:#}")),
                    }
                }
            });
        }
    });
    Echo {
        addr,
        served,
        refused,
    }
}

fn call(creds: &Credentials, addr: SocketAddr, v: &serde_json::Value) -> Result<serde_json::Value> {
    let mut s = creds.connect(TcpStream::connect(addr)?, addr)?;
    write_frame(&mut s, v)?;
    read_frame(&mut s)
}

/// Waits until the server has logged `n` refusals and returns them.
fn refusals(e: &Echo, n: usize) -> Vec<String> {
    for _ in 0..500 {
        if e.refused.lock().unwrap().len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    e.refused.lock().unwrap().clone()
}

#[test]
fn lab_parties_talk_and_strangers_do_not() {
    let keys = Keys::new("parties");
    let server = echo(keys.of("a"));
    let hi = serde_json::json!({"op": "hello"});
    assert_eq!(call(&keys.of("b"), server.addr, &hi).unwrap(), hi);
    assert_eq!(
        call(&keys.of(lab::pki::CONTROLLER), server.addr, &hi).unwrap(),
        hi
    );

    // Another lab's keys: refused on both sides.
    let other = Keys::new("other");
    let e = call(&other.of("b"), server.addr, &hi).unwrap_err();
    assert!(format!("{e:#}").contains("TLS"), "{e:#}");
    let stranger = echo(other.of("a"));
    let e = call(&keys.of("b"), stranger.addr, &hi).unwrap_err();
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");

    // Plain TCP speaking the frame protocol: no answer, nothing served.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write_frame(&mut plain, &hi).unwrap();
    assert!(read_frame::<serde_json::Value>(&mut plain).is_err());
    assert_eq!(server.served.load(Ordering::SeqCst), 2);
    assert_eq!(refusals(&server, 2).len(), 2);
}

/// Relays one connection to `to`, passing the client's bytes through `tamper` and
/// recording them.
fn middle(
    to: SocketAddr,
    tamper: impl Fn(usize, &mut [u8]) + Send + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind((LOOPBACK, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut s = TcpStream::connect(to).unwrap();
        let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
        let mut buf = [0u8; 65536];
        let mut at = 0;
        while let Ok(n @ 1..) = c.read(&mut buf) {
            tamper(at, &mut buf[..n]);
            rec.lock().unwrap().extend_from_slice(&buf[..n]);
            at += n;
            if s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
    });
    (addr, seen)
}

#[test]
fn a_replayed_session_is_refused() {
    let keys = Keys::new("replay");
    let server = echo(keys.of("a"));
    let (relay, seen) = middle(server.addr, |_, _| {});
    let req = serde_json::json!({"op": "remove", "name": "hss"});
    // Seen through the relay's socket, not the client's: the client must talk to `a`'s
    // address, which the relay shares (loopback).
    assert_eq!(
        call(&keys.of(lab::pki::CONTROLLER), relay, &req).unwrap(),
        req
    );
    std::thread::sleep(Duration::from_millis(100));
    let recorded = seen.lock().unwrap().clone();
    assert!(!recorded.is_empty());
    assert!(
        !recorded.windows(6).any(|w| w == b"remove"),
        "the request crossed in clear"
    );

    // The same bytes again, to the agent: the handshake is bound to its fresh random.
    let mut again = TcpStream::connect(server.addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    again.write_all(&recorded).unwrap();
    let mut rest = Vec::new();
    let _ = again.read_to_end(&mut rest);
    let log = refusals(&server, 1);
    assert_eq!(
        server.served.load(Ordering::SeqCst),
        1,
        "replay was served: {log:?}"
    );
    assert!(
        log.iter().any(|e| e.contains("TLS handshake failed")),
        "{log:?}"
    );
}

#[test]
fn an_altered_request_is_refused() {
    let keys = Keys::new("alter");
    let server = echo(keys.of("a"));
    // The client's first flight is its hello; what follows the handshake is the request,
    // whose last byte we flip on its way.
    let (relay, _) = middle(server.addr, |at, b| {
        if at > 0 {
            let last = b.len() - 1;
            b[last] ^= 0x40;
        }
    });
    let e = call(&keys.of("b"), relay, &serde_json::json!({"op": "ps"})).unwrap_err();
    assert!(!format!("{e:#}").is_empty());
    let log = refusals(&server, 1);
    assert_eq!(server.served.load(Ordering::SeqCst), 0, "{log:?}");
}

#[test]
fn only_the_agent_that_signed_an_image_claim_passes() {
    let keys = Keys::new("sign");
    let claim = crate::api::image_claim("hss", "final", 10, "ab", None, None);
    let sig = keys.of("a").sign(&claim).unwrap();
    verify_agent(&keys.cert("a"), "a", &claim, &sig).unwrap();
    // Claimed as another host's, over other bytes, or signed by the controller: refused.
    let e = verify_agent(&keys.cert("a"), "b", &claim, &sig).unwrap_err();
    assert!(e.to_string().contains("not agent \"b\"'s"), "{e}");
    let other = crate::api::image_claim("hss", "final", 10, "ac", None, None);
    let e = verify_agent(&keys.cert("a"), "a", &other, &sig).unwrap_err();
    assert!(e.to_string().contains("bad signature"), "{e}");
    let ctl = keys.of(lab::pki::CONTROLLER).sign(&claim).unwrap();
    let e = verify_agent(&keys.cert(lab::pki::CONTROLLER), "controller", &claim, &ctl);
    assert!(e.is_err());
    let e = verify_agent(&keys.cert("b"), "a", &claim, &sig).unwrap_err();
    assert!(e.to_string().contains("not agent"), "{e}");
}

#[test]
fn bad_key_files_are_clear_errors() {
    let keys = Keys::new("files");
    let mut f = lab::pki::files_in(&keys.0, "a");
    f.key = keys.0.join("missing.key");
    let e = Credentials::load(&f).err().unwrap();
    assert!(
        format!("{e:#}").contains("cannot read the private key"),
        "{e:#}"
    );
    f.key = f.cert.clone();
    let e = Credentials::load(&f).err().unwrap();
    assert!(format!("{e:#}").contains("not a PEM private key"), "{e:#}");
    f = lab::pki::files_in(&keys.0, "a");
    f.cert = lab::pki::files_in(&keys.0, "b").cert;
    let e = Credentials::load(&f).err().unwrap();
    assert!(format!("{e:#}").contains("does not match"), "{e:#}");
}
