//! Issue 13: programs corehop did not write, migrated as users run them. Debian's OpenVPN
//! server runs in a container on node-a (`corehop run --tun`); a client on the ran host
//! brings its tunnel up and pings the server's end of it while the server moves to node-b
//! (PreCopy) and back (StopandCopy). OpenVPN knows nothing of the migration: its TUN
//! device is re-made at the destination and its open file handed back by CRIU. The
//! client's tunnel must stay the one it negotiated (no restart, no new TLS handshake) and
//! its pings must be answered again after each move. And a program holding a raw socket
//! (which CRIU moves here though the kernel has no raw sock_diag) moves and sends on.
mod common;
use common::*;
use std::io::BufRead;
use std::time::{Duration, Instant};

const SERVER_IP: &str = "10.77.1.110";
const PINGER_IP: &str = "10.77.1.111";
/// The server's end of the tunnel (`server 10.8.0.0 255.255.255.0` takes .1).
const TUNNEL_SERVER: &str = "10.8.0.1";
const OPENVPN: &str = "/usr/sbin/openvpn";

const SERVER_CONF: &str = "\
dev tun0
proto udp
port 1194
topology subnet
server 10.8.0.0 255.255.255.0
ca /etc/openvpn/ca.pem
cert /etc/openvpn/server.pem
key /etc/openvpn/server.key
dh none
keepalive 2 10
disable-dco
persist-key
persist-tun
verb 3
";

/// The OpenVPN client on the ran host, ended when dropped.
struct Client {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Client {
    fn start(dir: &std::path::Path) -> Client {
        let f = lab::pki::files_in(dir, lab::pki::CONTROLLER);
        let log = dir.join("client.log");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", "ch-ran", OPENVPN])
            .args(["--client", "--dev", "tun9", "--proto", "udp", "--nobind"])
            .args([
                "--remote",
                SERVER_IP,
                "1194",
                "--disable-dco",
                "--verb",
                "3",
            ])
            .arg("--ca")
            .arg(&f.ca)
            .arg("--cert")
            .arg(&f.cert)
            .arg("--key")
            .arg(&f.key)
            .arg("--log")
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openvpn (make setup installs it)");
        Client { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_up(&self, within: Duration) {
        let t = Instant::now();
        while !self.log().contains("Initialization Sequence Completed") {
            assert!(
                t.elapsed() < within,
                "the OpenVPN tunnel did not come up within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pings the server's tunnel end from the ran host every 20 ms for `secs`; the replies'
/// sequence numbers, in order.
fn ping(secs: u32) -> std::process::Child {
    std::process::Command::new("ip")
        .args([
            "netns", "exec", "ch-ran", "ping", "-n", "-i", "0.02", "-W", "1",
        ])
        .args(["-w", &secs.to_string(), TUNNEL_SERVER])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ping")
}

/// The replies' icmp_seq numbers and how many echo requests were sent.
fn replies(p: std::process::Child) -> (Vec<u64>, u64) {
    let out = p.wait_with_output().unwrap();
    let mut seqs = vec![];
    let mut sent = 0;
    for l in out.stdout.lines().map_while(Result::ok) {
        if let Some(s) = l.split("icmp_seq=").nth(1) {
            seqs.push(s.split_whitespace().next().unwrap().parse().unwrap());
        }
        if let Some((n, _)) = l.split_once(" packets transmitted") {
            sent = n.trim().parse().unwrap();
        }
    }
    (seqs, sent)
}

fn migrate(name: &str, to: &str, method: &str) -> serde_json::Value {
    json(&ok(&[
        "migrate", name, "--to", to, "--method", method, "--json",
    ]))
}

#[test]
fn an_openvpn_server_migrates_while_its_client_keeps_the_tunnel_up_and_pings_through_it() {
    let _lab = Lab::up();
    let dir = TempDir::new("openvpn");
    lab::pki::ensure(
        &dir.0,
        &[("server", SERVER_IP.parse().unwrap())],
        "10.77.0.254".parse().unwrap(),
    )
    .unwrap();
    let conf = dir.0.join("server.conf");
    std::fs::write(&conf, SERVER_CONF).unwrap();
    let server = lab::pki::files_in(&dir.0, "server");
    let file = |inside: &str, host: &std::path::Path| format!("{inside}={}", host.display());
    ok(&[
        "run",
        "ovpn",
        "--host",
        "node-a",
        "--ip",
        SERVER_IP,
        "--tun",
        "--file",
        &file("/etc/openvpn/server.conf", &conf),
        "--file",
        &file("/etc/openvpn/ca.pem", &server.ca),
        "--file",
        &file("/etc/openvpn/server.pem", &server.cert),
        "--file",
        &file("/etc/openvpn/server.key", &server.key),
        "--",
        OPENVPN,
        "--config",
        "/etc/openvpn/server.conf",
    ]);
    let client = Client::start(&dir.0);
    client.wait_up(Duration::from_secs(30));
    let (up, _) = replies(ping(1));
    assert!(
        !up.is_empty(),
        "no reply through the tunnel before any migration"
    );

    for (to, method) in [("node-b", "pre-copy"), ("node-a", "stop-and-copy")] {
        let pings = ping(12);
        std::thread::sleep(Duration::from_secs(2));
        let r = migrate("ovpn", to, method);
        assert_eq!(host_of("ovpn"), to, "{r}");
        let (seqs, sent) = replies(pings);
        // The longest run of unanswered echo requests, at 20 ms each.
        let gap = seqs
            .windows(2)
            .map(|w| w[1] - w[0] - 1)
            .max()
            .unwrap_or(sent);
        eprintln!(
            "{method} to {to}: downtime {} ms, {} of {sent} pings answered, longest gap {gap} pings ({} ms)",
            r["downtime_ms"],
            seqs.len(),
            gap * 20
        );
        // Answered again after the move, to the end: the tunnel works at the destination.
        let last = *seqs.last().expect("no ping answered at all");
        assert!(
            last + 25 >= sent,
            "pings stopped being answered after {method}: last reply {last} of {sent}"
        );
        assert!(
            gap * 20 < 5000,
            "tunnel down for {} ms across {method}",
            gap * 20
        );
    }
    // The same tunnel all along: one negotiation, no restart for lost keepalives.
    let log = client.log();
    assert_eq!(
        log.matches("Initialization Sequence Completed").count(),
        1,
        "{log}"
    );
    for bad in ["Restart", "Inactivity timeout", "TLS Error"] {
        assert!(!log.contains(bad), "client log has {bad:?}:\n{log}");
    }
    ok(&["rm", "ovpn"]);
}

#[test]
fn a_program_holding_a_raw_socket_migrates_and_the_socket_keeps_sending() {
    let _lab = Lab::up();
    // iputils' ping holds a raw ICMP socket (the namespace's ping_group_range keeps it from
    // an ICMP datagram socket). It pings the ran host.
    ok(&[
        "run",
        "pinger",
        "--host",
        "node-a",
        "--ip",
        PINGER_IP,
        "--cap",
        "CAP_NET_RAW",
        "--",
        "/usr/bin/ping",
        "-i",
        "0.1",
        "10.77.0.21",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    let r = migrate("pinger", "node-b", "stop-and-copy");
    assert_eq!(host_of("pinger"), "node-b", "{r}");
    let pid = containers()
        .into_iter()
        .find(|c| c["name"] == "pinger")
        .and_then(|c| c["pid"].as_i64())
        .expect("pinger runs");
    let raw = std::fs::read_to_string(format!("/proc/{pid}/net/raw")).unwrap();
    assert_eq!(
        raw.lines().count(),
        2,
        "one raw socket restored at node-b: {raw}"
    );
    // The restored socket sends: the ran host sees its echo requests.
    let dir = TempDir::new("pinger");
    let cap = Capture::start(Some("ch-ran"), "br0", &dir.0.join("icmp.pcap"));
    std::thread::sleep(Duration::from_secs(2));
    let pcap = cap.stop();
    let filter = format!("icmp.type == 8 && ip.src == {PINGER_IP}");
    let requests = tshark(&pcap, &["-Y", &filter]).lines().count();
    assert!(
        requests >= 5,
        "{requests} echo requests from the migrated ping in 2 s"
    );
    ok(&["rm", "pinger"]);
}
