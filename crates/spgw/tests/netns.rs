//! End-to-end test of the SPGW in its own network namespace (needs root).
//!
//! The test plays the MME on S11 and the eNB on S1-U over loopback addresses of
//! a namespace it creates (127.0.0.1 = SPGW, 127.0.0.2 = MME/eNB); nothing leaves
//! the namespace. Phase 1: the SPGW creates `sgi0` itself; attach, ping the SGi
//! gateway through the tunnel, Echo, Error Indication, garbage, tunnels JSON, Delete
//! Session. Phase 2: a fresh
//! namespace with a pre-created `sgi0` (as the runtime's GTP Module Initializer
//! does) and an SPGW restored from phase 1's tunnels file: the old tunnel works
//! without any new signalling, which is what a migration needs.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use proto_gtpu::icmp::{self, EchoKind};
use proto_gtpu::pcap::UdpPcap;
use proto_gtpu::Gtpu;
use proto_gtpv2c::{
    cause, iface, pdn_type, rat_type, BearerContext, BearerQos, CreateBearerResponse,
    CreateSessionRequest, DeleteSessionRequest, Echo, Fteid, Gtpv2, Message, ModifyBearerRequest,
    Paa,
};
use spgw::{BearerArp, Config, Spgw, Tunnel};
use tokio::net::UdpSocket;
use tokio::time::{sleep, timeout, Instant};

const SPGW_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 45, 0, 1);
/// The SGi side's IPv6 address: `::1` of the pool's first /64.
const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
const UE_IPV6_POOL: &str = "2001:db8:77::/48";
const IMSI: &str = "001010000000001";
const ENB_TEID: u32 = 0x1001;
const MME_TEID: u32 = 0x2001;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 `ip` missing");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace deleted on drop, also when the test fails.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("corehop-spgw-{tag}-{}", std::process::id());
        // A leftover from a killed earlier run with the same pid would block us.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that has entered the namespace (sockets and TUN
    /// devices it creates live there), on a current_thread runtime like the CLI's.
    fn run<F: std::future::Future<Output = ()>>(&self, f: impl FnOnce() -> F + Send) {
        let ns = &self.0;
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                lab::net::enter_netns(ns).expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f())
            });
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A QCI 1 bearer for UDP with the SGi side's port 5001, as an operator writes it.
const BEARER_REQUEST: &str = r#"[{"imsi": "IMSI", "qci": 1,
  "arp": {"priority_level": 2, "pci": true, "pvi": true},
  "mbr_uplink_kbps": 128, "mbr_downlink_kbps": 128, "gbr_uplink_kbps": 64, "gbr_downlink_kbps": 64,
  "filters": [{"id": 1, "direction": 3, "precedence": 10,
               "remote_addr": "10.45.0.1", "protocol": 17, "remote_port": 5001}]}]"#;

fn config(tunnels_file: &Path) -> Config {
    Config {
        s11_bind: SocketAddr::new(IpAddr::V4(SPGW_IP), 2123),
        s1u_bind: SocketAddr::new(IpAddr::V4(SPGW_IP), 2152),
        s11_address: SPGW_IP,
        s1u_address: SPGW_IP,
        tunnels_file: Some(tunnels_file.to_path_buf()),
        bearer_requests_file: Some(tunnels_file.with_file_name("bearers.json")),
        ..Config::default()
    }
}

/// What the test's MME and eNB exchanged with the SPGW, for tshark.
#[derive(Clone)]
struct Trace(Rc<RefCell<(std::time::Instant, UdpPcap)>>);

impl Trace {
    fn new() -> Trace {
        Trace(Rc::new(RefCell::new((
            std::time::Instant::now(),
            UdpPcap::new(),
        ))))
    }

    fn record(&self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
            return;
        };
        let mut t = self.0.borrow_mut();
        let ts = t.0.elapsed();
        t.1.push(ts, src, dst, payload).unwrap();
    }
}

/// A UDP socket of the test (MME or eNB side) that records what it sends and receives.
struct Peer {
    sock: UdpSocket,
    trace: Trace,
}

impl Peer {
    async fn bind(port: u16, trace: &Trace) -> Peer {
        Peer {
            sock: UdpSocket::bind((PEER_IP, port)).await.unwrap(),
            trace: trace.clone(),
        }
    }

    async fn send_to(&self, b: &[u8], to: (Ipv4Addr, u16)) -> std::io::Result<usize> {
        let to = SocketAddr::from(to);
        self.trace.record(self.sock.local_addr()?, to, b);
        self.sock.send_to(b, to).await
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (n, from) = self.sock.recv_from(buf).await?;
        self.trace.record(from, self.sock.local_addr()?, &buf[..n]);
        Ok(n)
    }
}

/// The test's MME: sends a request (retransmitting like a real MME) and waits for
/// the response with the same sequence number.
struct Mme {
    sock: Peer,
    seq: u32,
}

impl Mme {
    async fn new(trace: &Trace) -> Mme {
        Mme {
            sock: Peer::bind(0, trace).await,
            seq: 0,
        }
    }

    async fn request(&mut self, teid: Option<u32>, msg: Message) -> Option<Gtpv2> {
        self.seq += 1;
        let bytes = Gtpv2 {
            teid,
            seq: self.seq,
            msg,
        }
        .encode()
        .unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..5 {
            self.sock.send_to(&bytes, (SPGW_IP, 2123)).await.unwrap();
            let deadline = Instant::now() + Duration::from_millis(400);
            while let Ok(Ok(n)) = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.sock.recv(&mut buf),
            )
            .await
            {
                let r = proto_gtpv2c::decode(&buf[..n]).expect("SPGW sent malformed GTPv2-C");
                if r.seq == self.seq {
                    return Some(r);
                }
            }
        }
        None
    }
}

/// Sends one ICMP (ICMPv6 from an IPv6 UE) echo from the UE to the SGi side through the
/// tunnel and waits for the reply in a G-PDU on the eNB TEID.
async fn ping(
    enb: &Peer,
    sgw_s1u_teid: u32,
    ue: impl Into<IpAddr>,
    seq: u16,
    wait: Duration,
) -> bool {
    let ue = ue.into();
    let gw = match ue {
        IpAddr::V4(_) => IpAddr::V4(GW),
        IpAddr::V6(_) => IpAddr::V6(GW6),
    };
    let pkt = icmp::echo_request(ue, gw, 0x77, seq, b"corehop ping").unwrap();
    let g = proto_gtpu::encode_gpdu(sgw_s1u_teid, &pkt).unwrap();
    enb.send_to(&g, (SPGW_IP, 2152)).await.unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok(n)) = timeout(
        deadline.saturating_duration_since(Instant::now()),
        enb.recv(&mut buf),
    )
    .await
    {
        if let Ok(Gtpu::GPdu { teid, payload, .. }) = proto_gtpu::decode(&buf[..n]) {
            if let Ok(e) = icmp::parse_echo(payload) {
                if teid == ENB_TEID
                    && e.kind == EchoKind::Reply
                    && e.seq == seq
                    && (e.src, e.dst) == (gw, ue)
                {
                    return true;
                }
            }
        }
    }
    false
}

async fn ping_retry(enb: &Peer, s1u: u32, ue: impl Into<IpAddr>, seq: u16) -> bool {
    let ue = ue.into();
    for i in 0..5 {
        if ping(enb, s1u, ue, seq + i, Duration::from_millis(500)).await {
            return true;
        }
    }
    false
}

/// Sends one GTP-U message from the eNB and returns the next message received.
async fn gtpu_exchange(enb: &Peer, msg: &[u8]) -> Vec<u8> {
    enb.send_to(msg, (SPGW_IP, 2152)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = timeout(Duration::from_secs(2), enb.recv(&mut buf))
        .await
        .expect("no GTP-U answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Everything the SPGW sent (and the test sent it) must decode in Wireshark as
/// the intended messages, with nothing malformed and no expert error.
fn tshark_check(trace: &Trace, path: &Path) {
    std::fs::write(path, trace.0.borrow().1.to_bytes()).unwrap();
    let file = path.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("tshark")
            .args(args)
            .output()
            .expect("tshark missing (make setup)");
        assert!(
            out.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verbose = run(&["-r", file, "-V"]);
    assert!(!verbose.contains("Malformed"), "{verbose}");
    let errors = run(&["-r", file, "-Y", "_ws.expert.severity == error"]);
    assert!(errors.trim().is_empty(), "expert errors: {errors}");
    let cols = run(&[
        "-r",
        file,
        "-T",
        "fields",
        "-e",
        "_ws.col.Protocol",
        "-e",
        "_ws.col.Info",
    ]);
    for want in [
        "GTPv2\tEcho Response",
        "GTPv2\tCreate Session Response",
        "GTPv2\tModify Bearer Response",
        "GTPv2\tDelete Session Response",
        "GTPv2\tCreate Bearer Request",
        "GTPv2\tCreate Bearer Response",
        "GTP\tEcho response",
        "GTP\tError indication",
        "GTP <ICMP>\tEcho (ping) reply",
    ] {
        assert!(cols.contains(want), "{want:?} missing in:\n{cols}");
    }
}

fn read_tunnels(path: &Path) -> Vec<Tunnel> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn create_session_request() -> Message {
    Message::CreateSessionRequest(CreateSessionRequest {
        imsi: IMSI.into(),
        msisdn: None,
        mei: None,
        uli: None,
        serving_network: None,
        rat_type: rat_type::EUTRAN,
        sender_fteid: Fteid::v4(iface::S11_MME, MME_TEID, PEER_IP),
        pgw_s5s8_fteid: None,
        apn: "internet".into(),
        selection_mode: Some(0),
        pdn_type: Some(pdn_type::IPV4),
        paa: Some(Paa::Ipv4(Ipv4Addr::UNSPECIFIED)),
        apn_restriction: None,
        ambr: None,
        pco: None,
        bearer_contexts: vec![BearerContext {
            ebi: 5,
            qos: Some(BearerQos::default_bearer()),
            ..Default::default()
        }],
        recovery: None,
    })
}

#[test]
fn spgw_end_to_end_in_netns() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test creates network namespaces and TUN devices: run it as root"
    );
    let dir =
        TempDir(std::env::temp_dir().join(format!("corehop-spgw-test-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let saved = dir.0.join("saved-tunnels.json");

    // ---------------------------------------------------------------- phase 1
    let ns = Netns::new("a");
    let file_a = dir.0.join("a/tunnels.json");
    let bearers = dir.0.join("a/bearers.json");
    ns.run(|| async {
        let spgw = Spgw::new(config(&file_a)).unwrap();
        let task = tokio::spawn({
            let s = spgw.clone();
            async move { s.run().await }
        });
        let trace = Trace::new();
        let mut mme = Mme::new(&trace).await;
        let r = mme
            .request(None, Message::EchoRequest(Echo { recovery: 1 }))
            .await
            .expect("S11 Echo Response");
        assert_eq!(r.msg, Message::EchoResponse(Echo { recovery: 0 }));
        wait_until("TUN attached", || spgw.tun_attached()).await;
        let link = ip(&["-n", &ns.0, "addr", "show", "dev", "sgi0"]);
        assert!(link.contains("mtu 1400") && link.contains("10.45.0.1/16"), "{link}");

        // Create Session: UE address from the pool, our TEIDs.
        let r = mme.request(Some(0), create_session_request()).await.expect("CSResp");
        assert_eq!(r.teid, Some(MME_TEID));
        let Message::CreateSessionResponse(cs) = r.msg else { panic!("{r:?}") };
        assert_eq!(cs.cause, cause::REQUEST_ACCEPTED);
        let ue = cs.paa.and_then(|p| p.ipv4()).unwrap();
        assert_eq!(ue, Ipv4Addr::new(10, 45, 0, 2));
        let s11 = cs.sender_fteid.unwrap();
        assert_eq!((s11.iface, s11.ipv4), (iface::S11S4_SGW, Some(SPGW_IP)));
        let s1u = *cs.bearer_contexts[0].fteid(0).unwrap();
        assert_eq!((s1u.iface, s1u.ipv4), (iface::S1U_SGW, Some(SPGW_IP)));

        // Modify Bearer: the eNB's S1-U F-TEID.
        let r = mme.request(Some(s11.teid), modify_bearer_request()).await.expect("MBResp");
        assert_eq!(r.teid, Some(MME_TEID));
        let Message::ModifyBearerResponse(mb) = r.msg else { panic!("{r:?}") };
        assert_eq!(mb.cause, cause::REQUEST_ACCEPTED);

        // The tunnel list, in memory and in the file.
        let expected = Tunnel {
            imsi: IMSI.into(),
            apn: "internet".into(),
            ebi: 5,
            ue_ip: Some(ue),
            ue_ipv6_prefix: None,
            mme_s11_teid: MME_TEID,
            mme_s11_addr: Some(PEER_IP),
            sgw_s11_teid: s11.teid,
            sgw_s1u_teid: s1u.teid,
            enb_teid: Some(ENB_TEID),
            enb_addr: Some(PEER_IP),
            idle: false,
            arp: Some(BearerArp { priority_level: 8, pci: true, pvi: true }),
            dedicated: vec![],
        };
        assert_eq!(spgw.tunnels(), vec![expected.clone()]);
        // The file follows within the SPGW's coalescing window.
        wait_until("tunnels file", || read_tunnels(&file_a) == vec![expected.clone()]).await;

        // User plane: UE pings the SGi gateway through the tunnel.
        let enb = Peer::bind(2152, &trace).await;
        assert!(ping_retry(&enb, s1u.teid, ue, 1).await, "no echo reply through the tunnel");

        // A dedicated bearer by SIGHUP and the request file: the Create Bearer Request
        // reaches the MME (its S11 port), whose response makes it part of the tunnel.
        let mme_c = Peer::bind(2123, &trace).await;
        std::fs::write(&bearers, BEARER_REQUEST.replace("IMSI", IMSI)).unwrap();
        // SAFETY: signalling our own process; the SPGW installed its handler in run().
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        let mut buf = vec![0u8; 4096];
        let n = timeout(Duration::from_secs(5), mme_c.recv(&mut buf)).await.expect("Create Bearer Request").unwrap();
        let cb = proto_gtpv2c::decode(&buf[..n]).unwrap();
        let Message::CreateBearerRequest(req) = &cb.msg else { panic!("{cb:?}") };
        assert_eq!((cb.teid, req.linked_ebi), (Some(MME_TEID), 5));
        assert!(!bearers.exists(), "the request file is consumed");
        let sgw_u = *req.bearer_contexts[0].fteid(0).unwrap();
        let resp = Gtpv2 {
            teid: Some(s11.teid),
            seq: cb.seq,
            msg: Message::CreateBearerResponse(CreateBearerResponse {
                cause: cause::REQUEST_ACCEPTED,
                bearer_contexts: vec![BearerContext {
                    ebi: 6,
                    cause: Some(cause::REQUEST_ACCEPTED),
                    fteids: vec![
                        (0, Fteid::v4(iface::S1U_ENODEB, ENB_TEID + 1, PEER_IP)),
                        (1, sgw_u),
                    ],
                    ..Default::default()
                }],
                recovery: None,
            }),
        };
        mme_c.send_to(&resp.encode().unwrap(), (SPGW_IP, 2123)).await.unwrap();
        wait_until("dedicated bearer in the tunnel list", || {
            read_tunnels(&file_a).first().is_some_and(|t| t.dedicated.len() == 1)
        })
        .await;
        let d = &spgw.tunnels()[0].dedicated[0];
        assert_eq!((d.ebi, d.qci, d.sgw_s1u_teid, d.enb_teid), (6, 1, sgw_u.teid, ENB_TEID + 1));
        // Uplink on the dedicated bearer's TEID reaches SGi too.
        assert!(ping_retry(&enb, sgw_u.teid, ue, 50).await, "no echo through the dedicated bearer");
        // Phase 2 restores the list as it was before the bearer.
        let mut before = read_tunnels(&file_a);
        before[0].dedicated.clear();
        std::fs::write(&saved, serde_json::to_vec(&before).unwrap()).unwrap();

        // GTP-U Echo.
        let r = gtpu_exchange(&enb, &Gtpu::EchoRequest { seq: 42 }.encode().unwrap()).await;
        assert_eq!(proto_gtpu::decode(&r).unwrap(), Gtpu::EchoResponse { seq: 42, recovery: 0 });

        // Unknown TEID: Error Indication naming it and the SPGW's address.
        // (A well-formed inner packet, so the capture below has nothing malformed.)
        let stray = icmp::echo_request(ue, GW, 1, 1, b"stray").unwrap();
        let g = proto_gtpu::encode_gpdu(0xbad, &stray).unwrap();
        let r = gtpu_exchange(&enb, &g).await;
        assert_eq!(
            proto_gtpu::decode(&r).unwrap(),
            Gtpu::ErrorIndication { teid: 0xbad, peer: IpAddr::V4(SPGW_IP) }
        );

        // Garbage on both ports does not hurt the session.
        let junk = UdpSocket::bind((PEER_IP, 0)).await.unwrap();
        for g in [&b""[..], b"\x00", b"\x48\x20\xff\xff", b"\x32\x01\x00\x04", &[0xff; 300]] {
            junk.send_to(g, (SPGW_IP, 2123)).await.unwrap();
            junk.send_to(g, (SPGW_IP, 2152)).await.unwrap();
        }
        assert!(mme.request(None, Message::EchoRequest(Echo { recovery: 1 })).await.is_some());
        assert!(ping_retry(&enb, s1u.teid, ue, 100).await, "tunnel broken by garbage");

        // Delete Session frees the session, its dedicated bearer, the address and the
        // file entry.
        let dsr = Message::DeleteSessionRequest(DeleteSessionRequest {
            linked_ebi: Some(5),
            ..Default::default()
        });
        let r = mme.request(Some(s11.teid), dsr).await.expect("DSResp");
        assert_eq!(r.teid, Some(MME_TEID));
        assert!(matches!(r.msg, Message::DeleteSessionResponse(ref d) if d.cause == cause::REQUEST_ACCEPTED), "{r:?}");
        assert!(spgw.tunnels().is_empty());
        wait_until("tunnels file emptied", || read_tunnels(&file_a).is_empty()).await;
        let g = proto_gtpu::encode_gpdu(s1u.teid, &stray).unwrap();
        assert!(matches!(
            proto_gtpu::decode(&gtpu_exchange(&enb, &g).await).unwrap(),
            Gtpu::ErrorIndication { .. }
        ));
        // The address is free again: a new session gets it.
        let r = mme.request(Some(0), create_session_request()).await.expect("CSResp");
        let Message::CreateSessionResponse(cs) = r.msg else { panic!() };
        assert_eq!(cs.paa.and_then(|p| p.ipv4()), Some(Ipv4Addr::new(10, 45, 0, 3)));
        task.abort();
        tshark_check(&trace, &dir.0.join("phase1.pcap"));
    });
    drop(ns);

    // ---------------------------------------------------------------- phase 2
    let ns = Netns::new("b");
    // The GTP Module Initializer's job: device with its own MTU, address, up.
    ip(&["-n", &ns.0, "tuntap", "add", "dev", "sgi0", "mode", "tun"]);
    ip(&["-n", &ns.0, "addr", "add", "10.45.0.1/16", "dev", "sgi0"]);
    ip(&[
        "-n", &ns.0, "link", "set", "dev", "sgi0", "mtu", "1300", "up",
    ]);
    let file_b = dir.0.join("b/tunnels.json");
    let restored = read_tunnels(&saved);
    ns.run(|| async {
        let cfg = Config {
            restore_tunnels_from: Some(saved.clone()),
            ..config(&file_b)
        };
        let spgw = Spgw::new(cfg).unwrap();
        assert_eq!(spgw.tunnels(), restored);
        let task = tokio::spawn({
            let s = spgw.clone();
            async move { s.run().await }
        });
        wait_until("TUN attached", || spgw.tun_attached()).await;
        // Attached without reconfiguring the pre-created device.
        assert!(ip(&["-n", &ns.0, "link", "show", "dev", "sgi0"]).contains("mtu 1300"));
        wait_until("tunnels file", || read_tunnels(&file_b) == restored).await;
        let t = &restored[0];
        let trace = Trace::new();
        let enb = Peer::bind(2152, &trace).await;
        assert!(
            ping_retry(&enb, t.sgw_s1u_teid, t.ue_ip.unwrap(), 1).await,
            "restored tunnel does not carry traffic"
        );
        task.abort();
    });
}

/// Modify Bearer with the test eNB's S1-U F-TEID for the default bearer.
fn modify_bearer_request() -> Message {
    Message::ModifyBearerRequest(ModifyBearerRequest {
        bearer_contexts: vec![BearerContext {
            ebi: 5,
            fteids: vec![(0, Fteid::v4(iface::S1U_ENODEB, ENB_TEID, PEER_IP))],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn create_session_request_v6(t: u8) -> Message {
    let Message::CreateSessionRequest(mut r) = create_session_request() else {
        unreachable!()
    };
    r.pdn_type = Some(t);
    // Another subscriber for the dual-stack UE, so it does not replace the IPv6 one.
    if t == pdn_type::IPV4V6 {
        r.imsi = "001010000000002".into();
    }
    r.paa = Some(match t {
        pdn_type::IPV6 => Paa::Ipv6 {
            prefix_len: 64,
            addr: Ipv6Addr::UNSPECIFIED,
        },
        _ => Paa::Ipv4v6 {
            prefix_len: 64,
            v6: Ipv6Addr::UNSPECIFIED,
            v4: Ipv4Addr::UNSPECIFIED,
        },
    });
    Message::CreateSessionRequest(r)
}

/// Create Session of PDN type `t` and Modify Bearer to the test eNB; the response's PAA
/// and our S1-U TEID.
async fn attach_v6(mme: &mut Mme, t: u8) -> (Paa, u32) {
    let r = mme
        .request(Some(0), create_session_request_v6(t))
        .await
        .expect("CSResp");
    let Message::CreateSessionResponse(cs) = r.msg else {
        panic!("{r:?}")
    };
    assert_eq!(cs.cause, cause::REQUEST_ACCEPTED);
    let s11 = cs.sender_fteid.unwrap().teid;
    let s1u = cs.bearer_contexts[0].fteid(0).unwrap().teid;
    let r = mme
        .request(Some(s11), modify_bearer_request())
        .await
        .expect("MBResp");
    assert!(
        matches!(r.msg, Message::ModifyBearerResponse(ref m) if m.cause == cause::REQUEST_ACCEPTED)
    );
    (cs.paa.expect("PAA"), s1u)
}

/// An IPv6 UE and an IPv4v6 UE: each gets a /64, the TUN holds the pool's `::1` and
/// routes the pool, and ICMPv6 echoes go through GTP-U to the SGi side and back (the
/// kernel of the SPGW's namespace answers). Then a fresh namespace whose pre-created
/// `sgi0` has no IPv6 address, as an initializer that knows nothing of IPv6 leaves it:
/// the SPGW restored from the tunnel list adds it and the IPv6 tunnel works at once.
#[test]
fn ipv6_ue_echo_through_gtpu_in_netns() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root (netns, TUN)");
    let dir = TempDir(std::env::temp_dir().join(format!("corehop-spgw-v6-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file_a = dir.0.join("a/tunnels.json");
    let v6_config = |file: &Path| Config {
        ue_ipv6_pool: Some(UE_IPV6_POOL.into()),
        ..config(file)
    };
    let ns = Netns::new("v6a");
    ns.run(|| async {
        let spgw = Spgw::new(v6_config(&file_a)).unwrap();
        let task = tokio::spawn({
            let s = spgw.clone();
            async move { s.run().await }
        });
        wait_until("TUN attached", || spgw.tun_attached()).await;
        let addrs = ip(&["-n", &ns.0, "-6", "addr", "show", "dev", "sgi0"]);
        assert!(addrs.contains("2001:db8:77::1/48"), "{addrs}");
        let routes = ip(&["-n", &ns.0, "-6", "route", "show", "dev", "sgi0"]);
        assert!(routes.contains("2001:db8:77::/48"), "{routes}");

        let trace = Trace::new();
        let mut mme = Mme::new(&trace).await;
        let (paa, s1u) = attach_v6(&mut mme, pdn_type::IPV6).await;
        let Paa::Ipv6 {
            prefix_len: 64,
            addr: ue,
        } = paa
        else {
            panic!("{paa:?}")
        };
        assert_eq!(ue, "2001:db8:77:1::1".parse::<Ipv6Addr>().unwrap());
        let enb = Peer::bind(2152, &trace).await;
        assert!(
            ping_retry(&enb, s1u, ue, 1).await,
            "no ICMPv6 echo reply through the tunnel"
        );
        // Its Router Solicitation gets the Router Advertisement of its /64: how a UE
        // learns the prefix (its NAS PDN address has the interface identifier only).
        let link_local: Ipv6Addr = "fe80::1".parse().unwrap();
        let rs = icmp::router_solicitation(link_local).unwrap();
        let adv = gtpu_exchange(&enb, &proto_gtpu::encode_gpdu(s1u, &rs).unwrap()).await;
        let Ok(Gtpu::GPdu {
            teid: ENB_TEID,
            payload,
            ..
        }) = proto_gtpu::decode(&adv)
        else {
            panic!("no Router Advertisement: {adv:02x?}")
        };
        assert_eq!(payload[40], 134, "ICMPv6 Router Advertisement");
        let prefix: Ipv6Addr = "2001:db8:77:1::".parse().unwrap();
        assert_eq!(&payload[72..88], &prefix.octets());
        // Any address of its /64 is the UE's (e.g. a SLAAC privacy address).
        let other: Ipv6Addr = "2001:db8:77:1::beef".parse().unwrap();
        assert!(ping_retry(&enb, s1u, other, 10).await);

        let t = spgw.tunnels()[0].clone();
        assert_eq!(
            (t.ue_ip, t.ue_ipv6_prefix),
            (None, Some("2001:db8:77:1::".parse().unwrap()))
        );
        wait_until("tunnels file", || read_tunnels(&file_a) == vec![t.clone()]).await;
        task.abort();
        tshark_v6(
            &trace,
            &dir.0.join("v6.pcap"),
            &[
                "PDN Type: IPv6 (2)",
                "PDN Address and Prefix(IPv6): 2001:db8:77:1::1",
                "Router Solicitation",
                "Router Advertisement",
                "Prefix: 2001:db8:77:1::",
            ],
        );
    });
    drop(ns);

    let ns = Netns::new("v6b");
    ip(&["-n", &ns.0, "tuntap", "add", "dev", "sgi0", "mode", "tun"]);
    ip(&["-n", &ns.0, "addr", "add", "10.45.0.1/16", "dev", "sgi0"]);
    ip(&["-n", &ns.0, "link", "set", "dev", "sgi0", "up"]);
    let saved = read_tunnels(&file_a);
    ns.run(|| async {
        let cfg = Config {
            restore_tunnels_from: Some(file_a.clone()),
            ..v6_config(&dir.0.join("b/tunnels.json"))
        };
        let spgw = Spgw::new(cfg).unwrap();
        assert_eq!(spgw.tunnels(), saved);
        let task = tokio::spawn({
            let s = spgw.clone();
            async move { s.run().await }
        });
        wait_until("TUN attached", || spgw.tun_attached()).await;
        assert!(
            ip(&["-n", &ns.0, "-6", "route", "show", "dev", "sgi0"]).contains("2001:db8:77::/48")
        );
        let trace = Trace::new();
        let enb = Peer::bind(2152, &trace).await;
        let ue: Ipv6Addr = "2001:db8:77:1::1".parse().unwrap();
        assert!(
            ping_retry(&enb, saved[0].sgw_s1u_teid, ue, 1).await,
            "restored IPv6 tunnel does not carry traffic"
        );
        // An IPv4v6 UE next to it: both addresses, both work.
        let mut mme = Mme::new(&trace).await;
        let (paa, s1u) = attach_v6(&mut mme, pdn_type::IPV4V6).await;
        let Paa::Ipv4v6 { v6, v4, .. } = paa else {
            panic!("{paa:?}")
        };
        assert_eq!(v6, "2001:db8:77:2::1".parse::<Ipv6Addr>().unwrap());
        // The pool's next address: the restored sessions hold none.
        assert_eq!(v4, Ipv4Addr::new(10, 45, 0, 2));
        assert!(ping_retry(&enb, s1u, v6, 20).await, "IPv4v6 UE, IPv6");
        assert!(ping_retry(&enb, s1u, v4, 30).await, "IPv4v6 UE, IPv4");
        task.abort();
        tshark_v6(
            &trace,
            &dir.0.join("v46.pcap"),
            &[
                "PDN Type: IPv4/IPv6 (3)",
                "PDN Address and Prefix(IPv6): 2001:db8:77:2::1",
                "PDN Address and Prefix(IPv4): 10.45.0.2",
            ],
        );
    });
}

/// The IPv6 exchange in Wireshark: the PAA with its /64 (and `wants`), ICMPv6 echoes
/// inside GTP-U, nothing malformed.
fn tshark_v6(trace: &Trace, path: &Path, wants: &[&str]) {
    std::fs::write(path, trace.0.borrow().1.to_bytes()).unwrap();
    let out = Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-V"])
        .output()
        .expect("tshark missing (make setup)");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !v.contains("Malformed"), "{v}");
    for want in [
        "PDN Address Allocation (PAA)",
        "IPv6 Prefix Length: 64",
        "Internet Control Message Protocol v6",
        "Echo (ping) reply",
    ]
    .iter()
    .chain(wants)
    {
        assert!(v.contains(want), "tshark shows no {want:?}:\n{v}");
    }
}
