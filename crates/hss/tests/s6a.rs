//! The HSS over real TCP on 127.0.0.1, driven by the proto-diameter client peer the MME uses.

use hss::{default_subscribers, store::to_csv, Config, Hss, Registration, Store, Subscriber};
use proto_diameter::base::{self, Identity, ResultCode};
use proto_diameter::codes::*;
use proto_diameter::s6a::{
    AuthInfoAnswer, AuthInfoRequest, CancelLocationAnswer, CancelLocationRequest, PurgeUeAnswer,
    PurgeUeRequest, UpdateLocationAnswer, UpdateLocationRequest,
};
use proto_diameter::{Avp, ClientPeer, Message, PeerConfig, PeerEvent, PeerState};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("corehop-hss-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Running {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    cfg: Config,
    hss: Arc<Hss>,
}

/// HSS on an ephemeral port with 3 default subscribers imported from a CSV.
async fn start_hss(
    dir: &TempDir,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Config,
) {
    let r = start(dir).await;
    (r.addr, r.server, r.cfg)
}

async fn start(dir: &TempDir) -> Running {
    let csv = dir.0.join("subscribers.csv");
    std::fs::write(&csv, to_csv(&default_subscribers(3))).unwrap();
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_path: dir.0.join("db/hss.db"),
        subscribers_file: Some(csv),
        ..Config::default()
    };
    let hss = Arc::new(Hss::new(cfg.clone()).expect("HSS starts"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    Running {
        addr,
        server: tokio::spawn(hss.clone().run(listener)),
        cfg,
        hss,
    }
}

/// The MME side: a TCP socket plus the sans-IO peer, as the MME crate drives it.
struct Mme {
    sock: TcpStream,
    peer: ClientPeer,
    host: String,
}

impl Mme {
    async fn connect(addr: SocketAddr) -> Mme {
        Mme::connect_as(addr, "mme.corehop.lab").await
    }

    /// An MME with its own Origin-Host (the HSS tells MMEs apart by it).
    async fn connect_as(addr: SocketAddr, host: &str) -> Mme {
        let identity = Identity {
            origin_host: host.into(),
            origin_realm: "corehop.lab".into(),
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            product_name: "corehop-test".into(),
            origin_state_id: 42,
        };
        let sock = TcpStream::connect(addr).await.unwrap();
        let mut mme = Mme {
            sock,
            peer: ClientPeer::new(PeerConfig::new(identity), Instant::now()),
            host: host.into(),
        };
        mme.peer.connect(Instant::now());
        mme.flush().await;
        match mme.next_event().await {
            PeerEvent::Open(caps) => assert_eq!(caps.origin_host, "hss.corehop.lab"),
            other => panic!("expected Open, got {other:?}"),
        }
        assert_eq!(mme.peer.state(), PeerState::Open);
        mme
    }

    async fn flush(&mut self) {
        while let Some(b) = self.peer.poll_transmit() {
            self.sock.write_all(&b).await.unwrap();
        }
    }

    async fn next_event(&mut self) -> PeerEvent {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(e) = self.peer.poll_event() {
                return e;
            }
            let n = tokio::time::timeout(IO_TIMEOUT, self.sock.read(&mut buf))
                .await
                .expect("HSS answers in time")
                .unwrap();
            assert!(n > 0, "HSS closed the connection");
            self.peer.handle_input(&buf[..n], Instant::now());
            self.flush().await;
        }
    }

    async fn call(&mut self, msg: Message) -> Message {
        let hbh = self.peer.request(msg, Instant::now()).unwrap();
        self.flush().await;
        match self.next_event().await {
            PeerEvent::Answer {
                hop_by_hop,
                message,
            } if hop_by_hop == hbh => message,
            other => panic!("expected the answer to {hbh}, got {other:?}"),
        }
    }

    fn air(&mut self, imsi: &str, n: u32, resync: Option<[u8; 30]>) -> Message {
        AuthInfoRequest {
            session_id: self.peer.new_session_id(),
            origin_host: self.host.clone(),
            origin_realm: "corehop.lab".into(),
            destination_host: None,
            destination_realm: "corehop.lab".into(),
            imsi: imsi.into(),
            visited_plmn_id: aka::PLMN_001_01,
            num_vectors: n,
            immediate_response_preferred: true,
            resync_info: resync,
        }
        .to_message()
    }

    fn ulr(&mut self, imsi: &str) -> Message {
        UpdateLocationRequest {
            session_id: self.peer.new_session_id(),
            origin_host: self.host.clone(),
            origin_realm: "corehop.lab".into(),
            destination_host: Some("hss.corehop.lab".into()),
            destination_realm: "corehop.lab".into(),
            imsi: imsi.into(),
            visited_plmn_id: aka::PLMN_001_01,
            rat_type: RAT_TYPE_EUTRAN,
            ulr_flags: ULR_FLAG_S6A_S6D_INDICATOR,
        }
        .to_message()
    }

    fn pur(&mut self, imsi: &str) -> Message {
        PurgeUeRequest {
            session_id: self.peer.new_session_id(),
            origin_host: self.host.clone(),
            origin_realm: "corehop.lab".into(),
            destination_host: None,
            destination_realm: "corehop.lab".into(),
            imsi: imsi.into(),
            pur_flags: None,
        }
        .to_message()
    }

    async fn pua(&mut self, imsi: &str) -> PurgeUeAnswer {
        let pur = self.pur(imsi);
        PurgeUeAnswer::from_message(&self.call(pur).await).unwrap()
    }

    async fn ula(&mut self, imsi: &str) -> UpdateLocationAnswer {
        let ulr = self.ulr(imsi);
        UpdateLocationAnswer::from_message(&self.call(ulr).await).unwrap()
    }

    /// The next request from the HSS must be a CLR; it is answered with success.
    async fn cancelled(&mut self) -> CancelLocationRequest {
        let m = match self.next_event().await {
            PeerEvent::Request(m) => m,
            other => panic!("expected a CLR, got {other:?}"),
        };
        let clr = CancelLocationRequest::from_message(&m).expect("a valid CLR");
        let cla = CancelLocationAnswer {
            session_id: clr.session_id.clone(),
            origin_host: self.host.clone(),
            origin_realm: "corehop.lab".into(),
            result: ResultCode::SUCCESS,
        };
        self.peer.answer(cla.to_message(&m));
        self.flush().await;
        clr
    }
}

fn registration(cfg: &Config, imsi: &str) -> Option<Registration> {
    Store::open(&cfg.db_path)
        .unwrap()
        .registration(imsi)
        .unwrap()
        .expect("subscriber in DB")
}

fn stored(cfg: &Config, imsi: &str) -> Subscriber {
    Store::open(&cfg.db_path)
        .unwrap()
        .get(imsi)
        .unwrap()
        .expect("subscriber in DB")
}

/// Reads until EOF or error: the HSS closed this connection.
async fn assert_closed(sock: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(IO_TIMEOUT, sock.read(&mut buf))
            .await
            .expect("HSS closes in time")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn s6a_end_to_end() {
    let dir = TempDir::new("s6a");
    let (addr, server, cfg) = start_hss(&dir).await;
    let imsi = "001010000000001";
    let ue = default_subscribers(1).remove(0);
    let mut mme = Mme::connect(addr).await;

    // AIR for a known subscriber: the vector verifies on the USIM side with the UE's keys,
    // and the SQN in the database advanced by 32 and was stored.
    let before = stored(&cfg, imsi).sqn;
    let air = mme.air(imsi, 1, None);
    let aia = AuthInfoAnswer::from_message(&mme.call(air).await).unwrap();
    assert_eq!(aia.result, ResultCode::SUCCESS);
    assert_eq!(aia.vectors.len(), 1);
    let v = &aia.vectors[0];
    let (res, ck, ik, sqn) =
        aka::check_autn(&ue.k, &ue.opc, &v.rand, &v.autn).expect("AUTN verifies");
    assert_eq!(res.to_vec(), v.xres);
    assert_eq!(sqn, before + 32);
    assert_eq!(stored(&cfg, imsi).sqn, sqn);
    assert_eq!(
        aka::kasme_from_autn(&ck, &ik, &aka::PLMN_001_01, &v.autn),
        v.kasme
    );
    let expected = aka::generate_vector(&ue.k, &ue.opc, &ue.amf, sqn, &v.rand);
    assert_eq!(
        (expected.xres.to_vec(), expected.autn, expected.kasme),
        (v.xres.clone(), v.autn, v.kasme)
    );

    // Two vectors: distinct RANDs, consecutive SQNs.
    let air = mme.air(imsi, 2, None);
    let aia = AuthInfoAnswer::from_message(&mme.call(air).await).unwrap();
    let sqns: Vec<u64> = aia
        .vectors
        .iter()
        .map(|v| aka::check_autn(&ue.k, &ue.opc, &v.rand, &v.autn).unwrap().3)
        .collect();
    assert_eq!(sqns, [sqn + 32, sqn + 64]);
    assert_ne!(aia.vectors[0].rand, aia.vectors[1].rand);
    assert_eq!(stored(&cfg, imsi).sqn, sqn + 64);

    // Re-synchronisation: the USIM says its SQN is 5000; the next vector continues from there.
    let rand = [7u8; 16];
    let mut resync = [0u8; 30];
    resync[..16].copy_from_slice(&rand);
    resync[16..].copy_from_slice(&aka::generate_auts(&ue.k, &ue.opc, &rand, 5000));
    let air = mme.air(imsi, 1, Some(resync));
    let aia = AuthInfoAnswer::from_message(&mme.call(air).await).unwrap();
    let v = &aia.vectors[0];
    assert_eq!(
        aka::check_autn(&ue.k, &ue.opc, &v.rand, &v.autn).unwrap().3,
        5032
    );

    // Unknown IMSI: Experimental-Result 5001, no vectors, nothing stored.
    let air = mme.air("001019999999999", 1, None);
    let aia = AuthInfoAnswer::from_message(&mme.call(air).await).unwrap();
    assert_eq!(
        aia.result,
        ResultCode::Experimental {
            vendor: 10415,
            code: 5001
        }
    );
    assert!(aia.vectors.is_empty());

    // ULR: ULA with the subscription (APN internet, QCI 9, ARP, AMBR, MSISDN).
    let ulr = mme.ulr(imsi);
    let ula = UpdateLocationAnswer::from_message(&mme.call(ulr).await).unwrap();
    assert_eq!(ula.result, ResultCode::SUCCESS);
    let sd = ula.subscription.expect("Subscription-Data");
    assert_eq!(sd.msisdn.as_deref(), Some("44770000001"));
    assert_eq!(sd.ambr.downlink, cfg.ambr_downlink_bps);
    assert_eq!(sd.apns.len(), 1);
    assert_eq!(sd.apns[0].apn, "internet");
    assert_eq!(sd.apns[0].qci, 9);
    assert_eq!(sd.apns[0].arp.priority_level, 8);
    let ulr = mme.ulr("001019999999999");
    let ula = UpdateLocationAnswer::from_message(&mme.call(ulr).await).unwrap();
    assert_eq!(ula.result, ResultCode::USER_UNKNOWN);
    assert!(ula.subscription.is_none());

    // A well-framed AIR without User-Name gets DIAMETER_MISSING_AVP; the link stays up.
    let mut air = mme.air(imsi, 1, None);
    air.avps.retain(|a| a.code != AVP_USER_NAME);
    let ans = mme.call(air).await;
    assert_eq!(
        ResultCode::from_message(&ans).unwrap(),
        ResultCode::Base(DIAMETER_MISSING_AVP)
    );

    // Watchdog: after Tw idle the peer sends DWR, the HSS answers, the link stays open.
    mme.peer
        .handle_timeout(Instant::now() + Duration::from_secs(6));
    mme.flush().await;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(IO_TIMEOUT, mme.sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let dwa = Message::decode(&buf[..n]).unwrap();
    assert_eq!(
        (dwa.command_code, dwa.is_request()),
        (CMD_DEVICE_WATCHDOG, false)
    );
    mme.peer.handle_input(&buf[..n], Instant::now());
    assert_eq!(mme.peer.state(), PeerState::Open);
    assert!(mme.peer.poll_event().is_none());

    // Garbage on a second connection drops that connection only.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"\x01\x00\x00\x14garbage garbage garbage")
        .await
        .unwrap();
    assert_closed(&mut bad).await;
    // A request before CER is refused the same way.
    let mut early = TcpStream::connect(addr).await.unwrap();
    let mut dwr = base::dwr(mme.peer.identity());
    dwr.hop_by_hop = 1;
    early.write_all(&dwr.encode()).await.unwrap();
    assert_closed(&mut early).await;
    // A CER without S6a gets CEA 5010 and is closed.
    let mut no_s6a = TcpStream::connect(addr).await.unwrap();
    let mut cer = base::cer(mme.peer.identity());
    cer.avps.retain(|a| {
        a.code != AVP_AUTH_APPLICATION_ID && a.code != AVP_VENDOR_SPECIFIC_APPLICATION_ID
    });
    cer.push(Avp::u32(AVP_AUTH_APPLICATION_ID, 0, 4));
    no_s6a.write_all(&cer.encode()).await.unwrap();
    let n = tokio::time::timeout(IO_TIMEOUT, no_s6a.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let cea = Message::decode(&buf[..n]).unwrap();
    assert_eq!(
        ResultCode::from_message(&cea).unwrap(),
        ResultCode::Base(DIAMETER_NO_COMMON_APPLICATION)
    );
    assert_closed(&mut no_s6a).await;

    // The first connection and the server are unaffected.
    let air = mme.air("001010000000002", 1, None);
    let aia = AuthInfoAnswer::from_message(&mme.call(air).await).unwrap();
    assert_eq!(aia.result, ResultCode::SUCCESS);
    assert!(!server.is_finished());

    // Orderly close with DPR/DPA.
    mme.peer.disconnect(Instant::now());
    mme.flush().await;
    assert_eq!(mme.next_event().await, PeerEvent::Closed);
    server.abort();
}

#[tokio::test]
async fn many_peers_share_the_sqn_counter() {
    let dir = TempDir::new("peers");
    let (addr, server, cfg) = start_hss(&dir).await;
    let imsi = "001010000000003";
    let ue = default_subscribers(3).remove(2);
    let mut a = Mme::connect(addr).await;
    let mut b = Mme::connect(addr).await;
    let mut sqns = Vec::new();
    for i in 0..4 {
        let m = if i % 2 == 0 { &mut a } else { &mut b };
        let air = m.air(imsi, 1, None);
        let aia = AuthInfoAnswer::from_message(&m.call(air).await).unwrap();
        let v = &aia.vectors[0];
        sqns.push(aka::check_autn(&ue.k, &ue.opc, &v.rand, &v.autn).unwrap().3);
    }
    assert_eq!(sqns, [32, 64, 96, 128]);
    assert_eq!(stored(&cfg, imsi).sqn, 128);
    server.abort();
}

#[tokio::test]
async fn bad_subscribers_file_is_a_clear_startup_error() {
    let dir = TempDir::new("badcsv");
    let csv = dir.0.join("subs.csv");
    std::fs::write(
        &csv,
        "imsi,k,opc,amf,sqn\n001010000000001,nothex,00,8000,0\n",
    )
    .unwrap();
    let cfg = Config {
        db_path: dir.0.join("hss.db"),
        subscribers_file: Some(csv),
        ..Config::default()
    };
    let err = Hss::new(cfg).err().expect("startup fails").to_string();
    assert!(
        err.contains("subs.csv line 2") && err.contains("invalid K"),
        "{err}"
    );
}

#[tokio::test]
async fn ulr_records_the_mme_and_pur_marks_it_purged() {
    let dir = TempDir::new("purge");
    let r = start(&dir).await;
    let imsi = "001010000000001";
    let mut mme = Mme::connect(r.addr).await;
    assert_eq!(registration(&r.cfg, imsi), None);
    assert_eq!(mme.ula(imsi).await.result, ResultCode::SUCCESS);
    let registered = Registration {
        mme_host: "mme.corehop.lab".into(),
        mme_realm: "corehop.lab".into(),
        purged: false,
    };
    assert_eq!(registration(&r.cfg, imsi), Some(registered.clone()));

    // PUR from the registered MME: success, freeze the M-TMSI, marked purged.
    let pua = mme.pua(imsi).await;
    assert_eq!(pua.result, ResultCode::SUCCESS);
    assert_eq!(pua.pua_flags, Some(PUA_FLAG_FREEZE_M_TMSI));
    assert!(registration(&r.cfg, imsi).unwrap().purged);
    // Unknown IMSI: 5001.
    let pua = mme.pua("001019999999999").await;
    assert_eq!(pua.result, ResultCode::USER_UNKNOWN);
    // A PUR from an MME the UE is not registered at changes nothing and freezes nothing.
    let mut other = Mme::connect_as(r.addr, "mme-other.corehop.lab").await;
    let pua = other.pua(imsi).await;
    assert_eq!((pua.result, pua.pua_flags), (ResultCode::SUCCESS, None));
    // The next ULR clears the purge.
    assert_eq!(mme.ula(imsi).await.result, ResultCode::SUCCESS);
    assert_eq!(registration(&r.cfg, imsi), Some(registered));
    r.server.abort();
}

#[tokio::test]
async fn ulr_from_a_second_mme_cancels_the_location_at_the_first() {
    let dir = TempDir::new("cancel");
    let r = start(&dir).await;
    let imsi = "001010000000002";
    let mut a = Mme::connect_as(r.addr, "mme-a.corehop.lab").await;
    let mut b = Mme::connect_as(r.addr, "mme-b.corehop.lab").await;
    assert_eq!(a.ula(imsi).await.result, ResultCode::SUCCESS);
    // The same MME again is no change of MME: no CLR (A's next message is its own answer).
    assert_eq!(a.ula(imsi).await.result, ResultCode::SUCCESS);

    // B takes the UE: B gets its ULA, A a CLR with MME_UPDATE_PROCEDURE addressed to it.
    assert_eq!(b.ula(imsi).await.result, ResultCode::SUCCESS);
    let clr = a.cancelled().await;
    assert_eq!(clr.imsi, imsi);
    assert_eq!(
        clr.cancellation_type,
        CANCELLATION_TYPE_MME_UPDATE_PROCEDURE
    );
    assert_eq!(clr.destination_host, "mme-a.corehop.lab");
    assert_eq!(clr.origin_host, "hss.corehop.lab");
    assert_eq!(clr.clr_flags, Some(CLR_FLAG_S6A_S6D_INDICATOR));
    assert_eq!(
        registration(&r.cfg, imsi).unwrap().mme_host,
        "mme-b.corehop.lab"
    );

    // B purges, then A attaches the UE again: B holds no context, so no CLR goes to B and
    // A's registration is plain (its next event is the answer to its own AIR, not a CLR).
    assert_eq!(b.pua(imsi).await.result, ResultCode::SUCCESS);
    assert_eq!(a.ula(imsi).await.result, ResultCode::SUCCESS);
    let air = b.air(imsi, 1, None);
    let aia = AuthInfoAnswer::from_message(&b.call(air).await).unwrap();
    assert_eq!(aia.result, ResultCode::SUCCESS);
    r.server.abort();
}

#[tokio::test]
async fn withdrawn_subscriber_is_cancelled_at_its_mme() {
    let dir = TempDir::new("withdraw");
    let r = start(&dir).await;
    let imsi = "001010000000003";
    let mut mme = Mme::connect(r.addr).await;
    assert_eq!(mme.ula(imsi).await.result, ResultCode::SUCCESS);
    assert!(r.hss.withdraw(imsi).unwrap());
    let clr = mme.cancelled().await;
    assert_eq!(
        (clr.imsi.as_str(), clr.cancellation_type),
        (imsi, CANCELLATION_TYPE_SUBSCRIPTION_WITHDRAWAL)
    );
    // Gone from the store: authentication now fails with 5001, and a second withdrawal
    // finds nothing.
    assert!(Store::open(&r.cfg.db_path)
        .unwrap()
        .get(imsi)
        .unwrap()
        .is_none());
    let air = mme.air(imsi, 1, None);
    let aia = AuthInfoAnswer::from_message(&mme.call(air).await).unwrap();
    assert_eq!(aia.result, ResultCode::USER_UNKNOWN);
    assert!(!r.hss.withdraw(imsi).unwrap());
    r.server.abort();
}
