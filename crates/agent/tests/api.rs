//! The agent API against a live agent on loopback (no lab needed): only callers with a
//! certificate of the lab's CA get in, a flood of junk does not keep them out, bad requests
//! are refused, and an image that is altered, cut short or not signed by an agent is never
//! stored for a restore.
use agent::api::{image_claim, Request, Response};
use agent::tls::Credentials;
use agent::{wire, Client};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

struct Agent {
    addr: SocketAddr,
    state: PathBuf,
    host: String,
    keys: PathBuf,
}

impl Agent {
    /// The keys of `who` in this agent's lab: the controller, or the peer agent "peer".
    fn creds(&self, who: &str) -> Credentials {
        Credentials::load(&lab::pki::files_in(&self.keys, who)).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent keeps its functions' folders on a tmpfs of its own.
        runtime::containers::unmount(&self.state.join("containers"));
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.keys);
        // The agent's runc root lives under the lab's run folder.
        let _ = std::fs::remove_dir_all(lab::paths::host_run_dir(&self.host));
    }
}

/// An agent on a free loopback port with its own state folder and one known container
/// (just its spec: enough for image transfers).
fn agent(tag: &str) -> Agent {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let state = std::env::temp_dir().join(format!("corehop-agent-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let spec = runtime::ContainerSpec::new(
        "svc",
        "/bin/true".into(),
        vec![],
        "10.77.1.99".parse().unwrap(),
        16,
        "small",
    )
    .unwrap();
    let host = format!("test{}", tag.len());
    let keys = keys_for(tag, &host);
    let cfg = agent::server::Config {
        host: host.clone(),
        listen: addr,
        state: state.clone(),
        tls: Credentials::load(&lab::pki::files_in(&keys, &host)).unwrap(),
        criu: "/bin/false".into(),
        master: None,
        memory_mb: None,
        cpu_models: None,
        cpus: None,
    };
    std::thread::spawn(move || agent::server::serve(cfg));
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Once the agent serves, its folder of functions is mounted.
    let ctr = state.join("containers/svc");
    std::fs::create_dir_all(&ctr).unwrap();
    std::fs::write(ctr.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    Agent {
        addr,
        state,
        host,
        keys,
    }
}

/// A lab's keys for agent `host`, a peer agent "peer" and the controller, all on loopback.
fn keys_for(tag: &str, host: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corehop-keys-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let lo = std::net::Ipv4Addr::LOCALHOST.into();
    lab::pki::ensure(&dir, &[(host, lo), ("peer", lo)], lo).unwrap();
    dir
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A whole-round Receive as agent `from` signs it with `signer`'s key.
fn signed_receive(
    signer: &Credentials,
    from: &str,
    name: &str,
    round: &str,
    size: u64,
    sha256: String,
) -> Request {
    let claim = image_claim(name, round, size, &sha256, None, None);
    Request::Receive {
        name: name.into(),
        round: round.into(),
        size,
        sha256,
        base: None,
        round_sha256: None,
        from: from.into(),
        signature: signer.sign(&claim).unwrap(),
    }
}

impl Agent {
    /// A Receive as the peer agent sends it.
    fn receive(&self, name: &str, round: &str, size: u64, sha256: String) -> Request {
        signed_receive(&self.creds("peer"), "peer", name, round, size, sha256)
    }
}

#[test]
fn strangers_plain_tcp_and_a_flood_are_refused() {
    let a = agent("strangers");
    // A controller of another lab: its CA is not ours.
    let other = keys_for("stranger-lab", "other");
    let e = Client::connect(
        a.addr,
        &Credentials::load(&lab::pki::files_in(&other, lab::pki::CONTROLLER)).unwrap(),
    )
    .err()
    .expect("must be refused");
    let _ = std::fs::remove_dir_all(&other);
    assert!(format!("{e:#}").contains("refused us"), "{e:#}");
    // Plain TCP speaking the frame protocol gets no answer.
    let mut s = TcpStream::connect(a.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    wire::write_frame(&mut s, &serde_json::json!({"op": "ps"})).unwrap();
    assert!(
        wire::read_frame::<Response>(&mut s).is_err(),
        "no answer without TLS"
    );
    // A flood: junk that closes, junk that stays, callers that say nothing. The agent
    // still serves the controller meanwhile.
    let mut held = Vec::new();
    for i in 0..400 {
        let mut s = TcpStream::connect(a.addr).unwrap();
        match i % 3 {
            0 => drop(std::io::Write::write_all(
                &mut s,
                &[0x16, 3, 1, 0xff, 0xff, 1],
            )),
            1 => drop(std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n")),
            _ => {}
        }
        if i % 2 == 0 {
            held.push(s);
        }
    }
    let mut c = Client::connect(a.addr, &a.creds(lab::pki::CONTROLLER)).unwrap();
    assert!(
        c.hello().unwrap().criu.is_none(),
        "this agent has no working CRIU (/bin/false)"
    );
    drop(held);
}

#[test]
fn bad_names_and_unknown_containers_are_refused() {
    let a = agent("names");
    let mut c = Client::connect(a.addr, &a.creds(lab::pki::CONTROLLER)).unwrap();
    for name in ["../etc", "a/b", "", "UPPER", "x".repeat(40).as_str()] {
        let e = c.inspect(name).unwrap_err().to_string();
        assert!(e.contains("invalid container name"), "{name:?}: {e}");
    }
    let e = c.inspect("nosuch").unwrap_err().to_string();
    assert!(e.contains("no container \"nosuch\""), "{e}");
    // Image round names are checked too: no way out of the container's folder.
    let data = tar_of(&[("inventory.img", b"x")]);
    let e = Client::connect(a.addr, &a.creds("peer"))
        .unwrap()
        .call_with_body::<()>(
            &a.receive("svc", "../../x", data.len() as u64, sha(&data)),
            &data,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid image round name"), "{e}");
    // A request that is not one gets a clear refusal, not a crash: the agent still answers.
    let ctl = a.creds(lab::pki::CONTROLLER);
    let mut s = ctl
        .connect(TcpStream::connect(a.addr).unwrap(), a.addr)
        .unwrap();
    wire::write_frame(&mut s, &serde_json::json!({"op": "format_disk"})).unwrap();
    let r: Response = wire::read_frame(&mut s).unwrap();
    assert!(
        matches!(r, Response::Err { ref message } if message.contains("malformed")),
        "{r:?}"
    );
    assert!(Client::connect(a.addr, &a.creds(lab::pki::CONTROLLER))
        .unwrap()
        .ps()
        .is_ok());
}

#[test]
fn an_altered_or_partial_image_is_never_stored() {
    let a = agent("integrity");
    let images = a.state.join("containers/svc/images");
    let data = tar_of(&[
        ("inventory.img", b"inventory"),
        ("pages-1.img", &[7u8; 8192]),
    ]);

    // Sent by the controller, or by an agent as another's: refused before it is read.
    let mut ctl = Client::connect(a.addr, &a.creds(lab::pki::CONTROLLER)).unwrap();
    let e = ctl
        .call_with_body::<()>(
            &a.receive("svc", "final", data.len() as u64, sha(&data)),
            &data,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("not agent \"peer\"'s"), "{e}");
    let forged = signed_receive(
        &a.creds("peer"),
        &a.host,
        "svc",
        "final",
        data.len() as u64,
        sha(&data),
    );
    let mut c = Client::connect(a.addr, &a.creds("peer")).unwrap();
    let e = c
        .call_with_body::<()>(&forged, &data)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not agent"), "{e}");
    assert!(!images.join("final").exists());

    // One flipped byte on the way: refused, nothing stored.
    let mut c = Client::connect(a.addr, &a.creds("peer")).unwrap();
    let mut altered = data.clone();
    altered[600] ^= 1;
    let e = c
        .call_with_body::<()>(
            &a.receive("svc", "final", data.len() as u64, sha(&data)),
            &altered,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt"), "{e}");
    assert!(!images.join("final").exists());

    // Cut short: the sender dies mid-transfer.
    let peer = a.creds("peer");
    let mut s = peer
        .connect(TcpStream::connect(a.addr).unwrap(), a.addr)
        .unwrap();
    wire::write_frame(
        &mut s,
        &a.receive("svc", "final", data.len() as u64, sha(&data)),
    )
    .unwrap();
    std::io::Write::write_all(&mut s, &data[..data.len() / 2]).unwrap();
    std::io::Write::flush(&mut s).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !images.join("final").exists(),
        "a partial image must not be stored"
    );

    // Oversized claims are refused before anything is read.
    let e = c
        .call::<()>(&a.receive("svc", "final", u64::MAX, sha(&data)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing an image"), "{e}");

    // The intact image is stored.
    let mut c = Client::connect(a.addr, &a.creds("peer")).unwrap();
    c.call_with_body::<()>(
        &a.receive("svc", "final", data.len() as u64, sha(&data)),
        &data,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(images.join("final/pages-1.img")).unwrap(),
        vec![7u8; 8192]
    );
}
