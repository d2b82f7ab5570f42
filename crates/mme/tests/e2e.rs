//! End to end on loopback: the real HSS (hss crate, SQLite, S6a over TCP), the SPGW's
//! S11 core (spgw::Core behind a UDP socket: its SGi TUN and S1-U loop need a network
//! namespace, so this test leaves them out) and `mme::serve`, with a test eNB/UE built
//! from proto-sctp/proto-s1ap/proto-nas doing S1 Setup and attaches over SCTP/UDP.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{Reaction, TestUe, PLMN};
use proto_s1ap::{self as s1ap, Ecgi, RRCEstablishmentCause, S1ap, Tai};
use proto_sctp::{SctpClient, SctpConfig, SctpEvent};
use tokio::net::UdpSocket;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("corehop-mme-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn free_udp_port() -> u16 {
    StdUdp::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The SPGW's S11 side: spgw::Core answering on a UDP socket.
async fn start_spgw() -> (SocketAddr, Abort) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let pool = spgw::IpPool::new(
        Ipv4Addr::new(10, 45, 0, 0),
        16,
        &[Ipv4Addr::new(10, 45, 0, 1)],
    )
    .unwrap();
    let mut core = spgw::Core::new(spgw::CoreConfig {
        s11_addr: Ipv4Addr::LOCALHOST,
        s1u_addr: Ipv4Addr::LOCALHOST,
        recovery: 0,
        pool,
        pool6: None,
        dns: vec![],
        mtu: 1400,
    });
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if let Some(reply) = core
                .handle_s11(&buf[..n], from, std::time::Instant::now())
                .reply
            {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    (addr, Abort(task))
}

struct Enb {
    sctp: SctpClient,
    next_enb_ue_id: u32,
}

fn tai() -> Tai {
    Tai { plmn: PLMN, tac: 1 }
}

fn ecgi() -> Ecgi {
    Ecgi {
        plmn: PLMN,
        cell_id: 0x0001_0001,
    }
}

impl Enb {
    /// An eNB with its association and S1 Setup done.
    async fn connect(mme: SocketAddr, enb_id: u32) -> Enb {
        let sctp = SctpClient::connect(
            "127.0.0.1:0".parse().unwrap(),
            mme,
            SctpConfig::default(),
            Duration::from_secs(5),
        )
        .await
        .expect("SCTP association with the MME");
        let mut enb = Enb {
            sctp,
            next_enb_ue_id: 1,
        };
        enb.send(&S1ap::S1SetupRequest(s1ap::S1SetupRequest {
            plmn: PLMN,
            enb_id,
            enb_name: Some("test-enb".into()),
            tacs: vec![1],
        }));
        assert!(matches!(enb.recv().await, S1ap::S1SetupResponse(_)));
        enb
    }

    fn send(&self, m: &S1ap) {
        self.sctp
            .send(m.stream(), Bytes::from(s1ap::encode(m).unwrap()))
            .unwrap();
    }

    async fn recv(&mut self) -> S1ap {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), self.sctp.recv())
                .await
                .expect("MME answers within 10 s")
                .expect("association alive");
            if let SctpEvent::Message(m) = ev {
                assert_eq!(m.ppid, 18);
                return s1ap::decode(&m.payload).unwrap();
            }
        }
    }

    /// Runs one UE's attach; returns the final NAS reaction and the S1AP ids.
    async fn attach(&mut self, ue: &mut TestUe) -> (Reaction, u32, u32) {
        let enb_ue_id = self.next_enb_ue_id;
        self.next_enb_ue_id += 1;
        self.send(&S1ap::InitialUeMessage {
            enb_ue_id,
            nas: ue.attach_request(),
            tai: tai(),
            ecgi: ecgi(),
            s_tmsi: None,
            rrc_cause: RRCEstablishmentCause::mo_Signalling,
        });
        let mut mme_ue_id = 0;
        loop {
            match self.recv().await {
                S1ap::DownlinkNasTransport {
                    mme_ue_id: m,
                    enb_ue_id: e,
                    nas,
                } => {
                    assert_eq!(e, enb_ue_id);
                    mme_ue_id = m;
                    match ue.on_downlink(&nas) {
                        Reaction::Reply(up) => self.send(&S1ap::UplinkNasTransport {
                            mme_ue_id,
                            enb_ue_id,
                            nas: up,
                            tai: tai(),
                            ecgi: ecgi(),
                        }),
                        other => {
                            // Reject: the release command follows.
                            match self.recv().await {
                                S1ap::UeContextReleaseCommand { .. } => {}
                                m => panic!("expected release, got {m:?}"),
                            }
                            self.send(&S1ap::UeContextReleaseComplete {
                                mme_ue_id,
                                enb_ue_id,
                            });
                            return (other, mme_ue_id, enb_ue_id);
                        }
                    }
                }
                S1ap::InitialContextSetupRequest(r) => {
                    assert_eq!((r.mme_ue_id, r.enb_ue_id), (mme_ue_id, enb_ue_id));
                    let reaction = ue.on_downlink(r.erabs[0].nas.as_deref().unwrap());
                    assert_eq!(Some(r.kenb), ue.kenb());
                    self.send(&S1ap::InitialContextSetupResponse {
                        mme_ue_id,
                        enb_ue_id,
                        erabs: vec![s1ap::ErabSetup {
                            erab_id: r.erabs[0].erab_id,
                            enb_addr: Ipv4Addr::LOCALHOST,
                            enb_teid: 0x1000 + enb_ue_id,
                        }],
                    });
                    let complete = ue.attach_complete(r.erabs[0].erab_id);
                    self.send(&S1ap::UplinkNasTransport {
                        mme_ue_id,
                        enb_ue_id,
                        nas: complete,
                        tai: tai(),
                        ecgi: ecgi(),
                    });
                    return (reaction, mme_ue_id, enb_ue_id);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// `mme::serve` on a free S1 port and an ephemeral S11 port, on loopback.
async fn start_mme(cfg: mme::Config) -> (SocketAddr, Abort) {
    let s1: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let cfg = mme::Config {
        s1_bind: s1,
        s11_bind: "127.0.0.1:0".parse().unwrap(),
        s11_address: Ipv4Addr::LOCALHOST,
        ..cfg
    };
    let mme = Abort(tokio::spawn(async move {
        if let Err(e) = mme::serve(cfg).await {
            panic!("MME stopped: {e:#}");
        }
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    (s1, mme)
}

/// Waits until the JSON dump satisfies `f`.
async fn wait_state(
    path: &std::path::Path,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if f(&v) {
                    return v;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "state file never matched: {}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// The state dump has no context of `imsi`.
fn without(v: &serde_json::Value, imsi: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().all(|u| u["imsi"] != imsi))
}

async fn wait_until(f: impl Fn() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held");
}

#[tokio::test(flavor = "current_thread")]
async fn attach_reject_detach_purge_and_cancel_location_end_to_end() {
    let dir = TempDir::new("e2e");
    // HSS with the example subscribers.
    let csv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hss/subscribers.example.csv");
    let hss_db = dir.0.join("hss.db");
    let hss_cfg = hss::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_path: hss_db.clone(),
        subscribers_file: Some(csv),
        ..hss::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hss_addr = listener.local_addr().unwrap();
    let hss = std::sync::Arc::new(hss::Hss::new(hss_cfg).unwrap());
    let _hss = Abort(tokio::spawn(async move {
        let _ = hss.run(listener).await;
    }));
    let (spgw_addr, _spgw) = start_spgw().await;
    let state = dir.0.join("mme-ues.json");
    let (s1, _mme) = start_mme(mme::Config {
        hss: hss_addr,
        spgw_s11: spgw_addr,
        state_file: Some(state.clone()),
        s1_pcap: Some(dir.0.join("s1.pcap")),
        ..mme::Config::default()
    })
    .await;
    let mut enb = Enb::connect(s1, 0x21).await;

    // A subscriber of the example CSV attaches.
    let mut ue = TestUe::example(1);
    let (r, mme_ue_id, enb_ue_id) = enb.attach(&mut ue).await;
    let Reaction::Accepted { ip, ebi, guti } = r else {
        panic!("{r:?}")
    };
    assert_eq!(ebi, 5);
    assert_eq!(ip[..2], [10, 45]);
    let v = wait_state(&state, |v| {
        v[0]["state"] == "Attached" && v[0]["bearer_active"] == true
    })
    .await;
    assert_eq!(v[0]["imsi"], ue.imsi);
    assert_eq!(v[0]["m_tmsi"], guti.m_tmsi);
    assert_eq!(v[0]["ue_ip"], Ipv4Addr::from(ip).to_string());
    assert_eq!(v[0]["enb_s1u_teid"], 0x1000 + enb_ue_id);

    // Wrong RES: AUTHENTICATION REJECT.
    let mut bad = TestUe::example(2);
    bad.set_wrong_res();
    assert_eq!(enb.attach(&mut bad).await.0, Reaction::AuthReject);

    // Unknown IMSI: ATTACH REJECT #8 (TS 29.272 Annex A for DIAMETER_ERROR_USER_UNKNOWN).
    let mut stranger = TestUe::new(
        "001019999999999",
        "00000000000000000000000000000000",
        "00000000000000000000000000000000",
    );
    assert_eq!(enb.attach(&mut stranger).await.0, Reaction::AttachReject(8));

    // A USIM ahead of the HSS: synch failure, AIR with RAND||AUTS, resync, attach.
    let mut ahead = TestUe::example(3);
    ahead.set_sqn_ms(1 << 40);
    let (r, _, _) = enb.attach(&mut ahead).await;
    assert!(matches!(r, Reaction::Accepted { .. }), "{r:?}");

    // Detach: DETACH ACCEPT, Delete Session, release.
    let det = ue.detach_request(false);
    enb.send(&S1ap::UplinkNasTransport {
        mme_ue_id,
        enb_ue_id,
        nas: det,
        tai: tai(),
        ecgi: ecgi(),
    });
    match enb.recv().await {
        S1ap::DownlinkNasTransport { nas, .. } => {
            assert_eq!(ue.on_downlink(&nas), Reaction::DetachAccept)
        }
        m => panic!("{m:?}"),
    }
    match enb.recv().await {
        S1ap::UeContextReleaseCommand { mme_ue_id: m, .. } => assert_eq!(m, mme_ue_id),
        m => panic!("{m:?}"),
    }
    enb.send(&S1ap::UeContextReleaseComplete {
        mme_ue_id,
        enb_ue_id,
    });
    wait_state(&state, |v| without(v, &ue.imsi)).await;
    // The context gone, the MME purged the UE at the HSS.
    let imsi = ue.imsi.clone();
    let registration = || {
        hss::Store::open(&hss_db)
            .unwrap()
            .registration(&imsi)
            .unwrap()
            .flatten()
            .expect("registered")
    };
    wait_until(|| registration().purged).await;
    assert_eq!(registration().mme_host, "mme.corehop.lab");

    // The same UE attaches again (new authentication, new session): no longer purged.
    let (r, mme_ue_id, enb_ue_id) = enb.attach(&mut ue).await;
    assert!(matches!(r, Reaction::Accepted { .. }), "{r:?}");
    assert!(!registration().purged);

    // It attaches at a second MME: the HSS cancels the location at the first, which
    // releases the UE's S1 connection (no NAS) and forgets it.
    let state2 = dir.0.join("mme2-ues.json");
    let (s1_2, _mme2) = start_mme(mme::Config {
        hss: hss_addr,
        spgw_s11: spgw_addr,
        state_file: Some(state2.clone()),
        origin_host: "mme2.corehop.lab".into(),
        mme_code: 2,
        ..mme::Config::default()
    })
    .await;
    let mut enb2 = Enb::connect(s1_2, 0x22).await;
    let (r, _, _) = enb2.attach(&mut ue).await;
    assert!(matches!(r, Reaction::Accepted { .. }), "{r:?}");
    match enb.recv().await {
        S1ap::UeContextReleaseCommand {
            mme_ue_id: m,
            enb_ue_id: e,
            ..
        } => assert_eq!((m, e), (mme_ue_id, Some(enb_ue_id))),
        m => panic!("expected the release after Cancel Location, got {m:?}"),
    }
    enb.send(&S1ap::UeContextReleaseComplete {
        mme_ue_id,
        enb_ue_id,
    });
    wait_state(&state, |v| without(v, &ue.imsi)).await;
    wait_state(&state2, |v| v[0]["imsi"] == ue.imsi.as_str()).await;
    assert_eq!(registration().mme_host, "mme2.corehop.lab");
    enb2.sctp.close().unwrap();
    enb.sctp.close().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    check_capture(&dir.0.join("s1.pcap"));
}

/// The MME's own S1-MME capture decodes in tshark: SCTP over UDP, S1AP, NAS-EPS
/// (ciphered NAS shows as such), nothing malformed, no expert errors.
fn check_capture(pcap: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(pcap)
            .args(["-d", &format!("udp.port=={},sctp", pcap_port(pcap))])
            // NAS is ciphered with 128-EEA2 here; tshark's default guesses EEA0 and
            // dissects the ciphertext as plain NAS, which then "is malformed".
            .args(["-o", "nas-eps.null_decipher:FALSE"])
            .args(args)
            .output()
            .expect("tshark is required (apt-get install tshark)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let v = run(&["-o", "sctp.checksum:CRC 32c", "-V"]);
    assert!(!v.contains("Malformed"), "malformed packet:\n{v}");
    assert!(!v.contains("[Bad]"), "bad checksum:\n{v}");
    for want in [
        "S1SetupRequest",
        "S1SetupResponse",
        "InitialUEMessage",
        "Attach request",
        "Authentication request",
        "Authentication response",
        "Authentication reject",
        "Attach reject",
        "Security mode command",
        "InitialContextSetupRequest",
        "InitialContextSetupResponse",
        "UEContextReleaseCommand",
        "UEContextReleaseComplete",
        "Payload protocol identifier: S1 Application Protocol (S1AP) (18)",
    ] {
        assert!(v.contains(want), "tshark shows no {want:?}");
    }
    let sev = run(&["-T", "fields", "-e", "_ws.expert.severity"]);
    assert!(!sev.contains("8388608"), "expert errors in the capture");
}

/// The MME's S1 port in the capture: tshark only knows 9899 as SCTP/UDP by default.
fn pcap_port(pcap: &std::path::Path) -> u16 {
    let b = std::fs::read(pcap).unwrap();
    // First record: 24-byte file header, 16-byte record header, 20-byte IPv4 header;
    // the MME is the destination of the first datagram (the eNB's INIT).
    u16::from_be_bytes([b[24 + 16 + 22], b[24 + 16 + 23]])
}
