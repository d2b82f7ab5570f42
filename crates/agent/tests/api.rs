//! The agent API against a live agent on loopback (no lab needed): only callers with the
//! token get in, every refusal is logged, bad requests are refused, and an image that is
//! altered or cut short on the way is never stored for a restore.
use agent::api::{Request, Response};
use agent::{wire, Client};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &[u8] = b"0123456789abcdef0123456789abcdef-test";

struct Agent {
    addr: SocketAddr,
    state: PathBuf,
    host: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The agent keeps its functions' folders on a tmpfs of its own.
        runtime::containers::unmount(&self.state.join("containers"));
        let _ = std::fs::remove_dir_all(&self.state);
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
    let cfg = agent::server::Config {
        host: host.clone(),
        listen: addr,
        state: state.clone(),
        token: TOKEN.to_vec(),
        criu: "/bin/false".into(),
        master: None,
        memory_mb: None,
        cpu_models: None,
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
    Agent { addr, state, host }
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

fn receive(name: &str, round: &str, size: u64, sha256: String) -> Request {
    Request::Receive {
        name: name.into(),
        round: round.into(),
        size,
        sha256,
        base: None,
        round_sha256: None,
    }
}

#[test]
fn wrong_token_is_refused() {
    let a = agent("token");
    let e = Client::connect(a.addr, b"ffffffffffffffffffffffffffffffffffff")
        .err()
        .expect("must be refused");
    assert!(format!("{e:#}").contains("refused"), "{e:#}");
    // A caller that never authenticates gets nothing but the challenge.
    let mut s = TcpStream::connect(a.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _challenge: serde_json::Value = wire::read_frame(&mut s).unwrap();
    wire::write_frame(&mut s, &serde_json::json!({"op": "ps"})).unwrap();
    assert!(
        wire::read_frame::<Response>(&mut s).is_err(),
        "no answer without authentication"
    );
    let mut c = Client::connect(a.addr, TOKEN).unwrap();
    assert!(
        c.hello().unwrap().criu.is_none(),
        "this agent has no working CRIU (/bin/false)"
    );
}

#[test]
fn bad_names_and_unknown_containers_are_refused() {
    let a = agent("names");
    let mut c = Client::connect(a.addr, TOKEN).unwrap();
    for name in ["../etc", "a/b", "", "UPPER", "x".repeat(40).as_str()] {
        let e = c.inspect(name).unwrap_err().to_string();
        assert!(e.contains("invalid container name"), "{name:?}: {e}");
    }
    let e = c.inspect("nosuch").unwrap_err().to_string();
    assert!(e.contains("no container \"nosuch\""), "{e}");
    // Image round names are checked too: no way out of the container's folder.
    let data = tar_of(&[("inventory.img", b"x")]);
    let e = c
        .call_with_body::<()>(
            &receive("svc", "../../x", data.len() as u64, sha(&data)),
            &data,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid image round name"), "{e}");
    // A request that is not one gets a clear refusal, not a crash: the agent still answers.
    let mut s = TcpStream::connect(a.addr).unwrap();
    wire::connect(&mut s, TOKEN).unwrap();
    wire::write_frame(&mut s, &serde_json::json!({"op": "format_disk"})).unwrap();
    let r: Response = wire::read_frame(&mut s).unwrap();
    assert!(
        matches!(r, Response::Err { ref message } if message.contains("malformed")),
        "{r:?}"
    );
    assert!(Client::connect(a.addr, TOKEN).unwrap().ps().is_ok());
}

#[test]
fn an_altered_or_partial_image_is_never_stored() {
    let a = agent("integrity");
    let images = a.state.join("containers/svc/images");
    let data = tar_of(&[
        ("inventory.img", b"inventory"),
        ("pages-1.img", &[7u8; 8192]),
    ]);

    // One flipped byte on the way: refused, nothing stored.
    let mut c = Client::connect(a.addr, TOKEN).unwrap();
    let mut altered = data.clone();
    altered[600] ^= 1;
    let e = c
        .call_with_body::<()>(
            &receive("svc", "final", data.len() as u64, sha(&data)),
            &altered,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt"), "{e}");
    assert!(!images.join("final").exists());

    // Cut short: the sender dies mid-transfer.
    let mut s = TcpStream::connect(a.addr).unwrap();
    wire::connect(&mut s, TOKEN).unwrap();
    wire::write_frame(
        &mut s,
        &receive("svc", "final", data.len() as u64, sha(&data)),
    )
    .unwrap();
    std::io::Write::write_all(&mut s, &data[..data.len() / 2]).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !images.join("final").exists(),
        "a partial image must not be stored"
    );

    // Oversized claims are refused before anything is read.
    let e = c
        .call::<()>(&receive("svc", "final", u64::MAX, sha(&data)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing an image"), "{e}");

    // The intact image is stored.
    let mut c = Client::connect(a.addr, TOKEN).unwrap();
    c.call_with_body::<()>(
        &receive("svc", "final", data.len() as u64, sha(&data)),
        &data,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(images.join("final/pages-1.img")).unwrap(),
        vec![7u8; 8192]
    );
}
