//! S6a client: one long-lived Diameter connection to the HSS, driven by
//! proto-diameter's sans-IO `ClientPeer` (CER/CEA, DWR watchdog, request matching).
//! It reconnects when the connection fails; requests made while it is down wait up
//! to the request timeout and then fail (the UE gets an ATTACH REJECT #17). The
//! HSS's Cancel-Location is answered here and handed to the core.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proto_diameter::base::{self, Identity, ResultCode};
use proto_diameter::codes::{
    CMD_CANCEL_LOCATION, DIAMETER_COMMAND_UNSUPPORTED, RAT_TYPE_EUTRAN, ULR_FLAG_S6A_S6D_INDICATOR,
};
use proto_diameter::s6a::{
    AuthInfoAnswer, AuthInfoRequest, CancelLocationAnswer, CancelLocationRequest, PurgeUeAnswer,
    PurgeUeRequest, UpdateLocationAnswer, UpdateLocationRequest,
};
use proto_diameter::{ClientPeer, Message, PeerConfig, PeerEvent, PeerState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

#[derive(Debug, Clone)]
pub enum S6aRequest {
    Air {
        ue: u32,
        imsi: String,
        resync: Option<[u8; 30]>,
    },
    Ulr {
        ue: u32,
        imsi: String,
    },
    /// Purge-UE: the context is already gone, so its answer is only logged.
    Pur {
        imsi: String,
    },
}

/// What the S6a client hands to the core: the answers to its requests, and the
/// requests of the HSS (already answered).
#[derive(Debug, Clone)]
pub enum S6aAnswer {
    Aia {
        ue: u32,
        result: Result<AuthInfoAnswer, String>,
    },
    Ula {
        ue: u32,
        result: Result<UpdateLocationAnswer, String>,
    },
    /// Cancel-Location from the HSS, answered with success.
    CancelLocation {
        imsi: String,
        cancellation_type: u32,
    },
}

#[derive(Debug, Clone)]
pub struct S6aConfig {
    pub hss: SocketAddr,
    pub origin_host: String,
    pub origin_realm: String,
    pub advertised_ip: IpAddr,
    pub hss_realm: String,
    pub visited_plmn: [u8; 3],
    pub watchdog: Duration,
}

impl S6aRequest {
    fn imsi(&self) -> &str {
        match self {
            S6aRequest::Air { imsi, .. }
            | S6aRequest::Ulr { imsi, .. }
            | S6aRequest::Pur { imsi } => imsi,
        }
    }

    /// What the core learns of a request that got no answer (nothing for a PUR).
    fn failed(&self, why: &str) -> Option<S6aAnswer> {
        match self {
            S6aRequest::Air { ue, .. } => Some(S6aAnswer::Aia {
                ue: *ue,
                result: Err(why.to_string()),
            }),
            S6aRequest::Ulr { ue, .. } => Some(S6aAnswer::Ula {
                ue: *ue,
                result: Err(why.to_string()),
            }),
            S6aRequest::Pur { imsi } => {
                warn!(%imsi, "Purge UE failed: {why}");
                None
            }
        }
    }

    fn answered(&self, m: &Message) -> Option<S6aAnswer> {
        match self {
            S6aRequest::Air { ue, .. } => Some(S6aAnswer::Aia {
                ue: *ue,
                result: AuthInfoAnswer::from_message(m).map_err(|e| e.to_string()),
            }),
            S6aRequest::Ulr { ue, .. } => Some(S6aAnswer::Ula {
                ue: *ue,
                result: UpdateLocationAnswer::from_message(m).map_err(|e| e.to_string()),
            }),
            S6aRequest::Pur { imsi } => {
                match PurgeUeAnswer::from_message(m) {
                    Ok(a) => {
                        info!(%imsi, result = ?a.result, pua_flags = ?a.pua_flags, "UE purged at the HSS")
                    }
                    Err(e) => warn!(%imsi, "bad PUA: {e}"),
                }
                None
            }
        }
    }
}

/// How long a request waits for the connection to (re)open.
const WAIT_OPEN: Duration = Duration::from_secs(5);
const RECONNECT: Duration = Duration::from_secs(1);

struct Client {
    cfg: S6aConfig,
    peer: ClientPeer,
    waiting: VecDeque<(S6aRequest, Instant)>,
    inflight: HashMap<u32, S6aRequest>,
    tx: mpsc::UnboundedSender<S6aAnswer>,
}

impl Client {
    fn message(&mut self, r: &S6aRequest) -> Message {
        let session_id = self.peer.new_session_id();
        match r {
            S6aRequest::Air { imsi, resync, .. } => AuthInfoRequest {
                session_id,
                origin_host: self.cfg.origin_host.clone(),
                origin_realm: self.cfg.origin_realm.clone(),
                destination_host: None,
                destination_realm: self.cfg.hss_realm.clone(),
                imsi: imsi.clone(),
                visited_plmn_id: self.cfg.visited_plmn,
                num_vectors: 1,
                immediate_response_preferred: true,
                resync_info: *resync,
            }
            .to_message(),
            S6aRequest::Pur { imsi } => PurgeUeRequest {
                session_id,
                origin_host: self.cfg.origin_host.clone(),
                origin_realm: self.cfg.origin_realm.clone(),
                destination_host: None,
                destination_realm: self.cfg.hss_realm.clone(),
                imsi: imsi.clone(),
                pur_flags: None,
            }
            .to_message(),
            S6aRequest::Ulr { imsi, .. } => UpdateLocationRequest {
                session_id,
                origin_host: self.cfg.origin_host.clone(),
                origin_realm: self.cfg.origin_realm.clone(),
                destination_host: None,
                destination_realm: self.cfg.hss_realm.clone(),
                imsi: imsi.clone(),
                visited_plmn_id: self.cfg.visited_plmn,
                rat_type: RAT_TYPE_EUTRAN,
                ulr_flags: ULR_FLAG_S6A_S6D_INDICATOR,
            }
            .to_message(),
        }
    }

    fn submit(&mut self, r: S6aRequest, now: Instant) {
        if self.peer.state() != PeerState::Open {
            self.waiting.push_back((r, now));
            return;
        }
        let m = self.message(&r);
        match self.peer.request(m, now) {
            Ok(hbh) => {
                debug!(imsi = r.imsi(), hbh, "S6a request sent");
                self.inflight.insert(hbh, r);
            }
            Err(e) => self.report(r.failed(&e.to_string())),
        }
    }

    fn expire_waiting(&mut self, now: Instant) {
        while let Some((r, since)) = self.waiting.front() {
            if now.duration_since(*since) < WAIT_OPEN {
                break;
            }
            let failed = r.failed("no connection to the HSS");
            self.report(failed);
            self.waiting.pop_front();
        }
    }

    fn report(&self, to_core: Option<S6aAnswer>) {
        if let Some(a) = to_core {
            let _ = self.tx.send(a);
        }
    }

    /// A request from the HSS: Cancel-Location is answered with success and handed to
    /// the core (TS 29.272 5.2.1.2.2: the MME answers even without a context); anything
    /// else gets DIAMETER_COMMAND_UNSUPPORTED.
    fn on_request(&mut self, m: &Message) {
        let id = self.peer.identity().clone();
        if m.command_code != CMD_CANCEL_LOCATION {
            warn!(
                command = m.command_code,
                "S6a request from the HSS not supported"
            );
            let text = format!("S6a command {} not supported by this MME", m.command_code);
            self.peer.answer(base::error_answer(
                m,
                &id,
                DIAMETER_COMMAND_UNSUPPORTED,
                &text,
            ));
            return;
        }
        match CancelLocationRequest::from_message(m) {
            Ok(clr) => {
                info!(imsi = %clr.imsi, cancellation_type = clr.cancellation_type, "Cancel Location from the HSS");
                let cla = CancelLocationAnswer {
                    session_id: clr.session_id,
                    origin_host: id.origin_host,
                    origin_realm: id.origin_realm,
                    result: ResultCode::SUCCESS,
                };
                self.peer.answer(cla.to_message(m));
                self.report(Some(S6aAnswer::CancelLocation {
                    imsi: clr.imsi,
                    cancellation_type: clr.cancellation_type,
                }));
            }
            Err(e) => {
                warn!("invalid CLR from the HSS: {e}");
                let ans = base::error_answer(m, &id, e.result_code(), &e.to_string());
                self.peer.answer(ans);
            }
        }
    }

    /// Handles peer events; returns false when the connection must be dropped.
    fn events(&mut self, now: Instant) -> bool {
        let mut ok = true;
        while let Some(ev) = self.peer.poll_event() {
            match ev {
                PeerEvent::Open(caps) => {
                    info!(hss = %self.cfg.hss, host = %caps.origin_host, "S6a connection open");
                    let waiting: Vec<_> = self.waiting.drain(..).collect();
                    for (r, _) in waiting {
                        self.submit(r, now);
                    }
                }
                PeerEvent::Answer {
                    hop_by_hop,
                    message,
                } => match self.inflight.remove(&hop_by_hop) {
                    Some(r) => self.report(r.answered(&message)),
                    None => debug!(hop_by_hop, "S6a answer for no pending request"),
                },
                PeerEvent::RequestFailed {
                    hop_by_hop, reason, ..
                } => {
                    if let Some(r) = self.inflight.remove(&hop_by_hop) {
                        self.report(r.failed(&reason));
                    }
                }
                PeerEvent::Request(m) => self.on_request(&m),
                PeerEvent::Failed(why) => {
                    warn!(hss = %self.cfg.hss, "S6a connection failed: {why}");
                    ok = false;
                }
                PeerEvent::Closed => ok = false,
            }
        }
        ok
    }
}

/// Runs the S6a client until `rx` closes.
pub async fn run(
    cfg: S6aConfig,
    mut rx: mpsc::UnboundedReceiver<S6aRequest>,
    tx: mpsc::UnboundedSender<S6aAnswer>,
) {
    let origin_state_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    let identity = Identity {
        origin_host: cfg.origin_host.clone(),
        origin_realm: cfg.origin_realm.clone(),
        host_ip: cfg.advertised_ip,
        product_name: "corehop-mme".into(),
        origin_state_id,
    };
    let mut pc = PeerConfig::new(identity);
    pc.watchdog_interval = cfg.watchdog;
    let mut c = Client {
        peer: ClientPeer::new(pc, Instant::now()),
        cfg,
        waiting: VecDeque::new(),
        inflight: HashMap::new(),
        tx,
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Connect, still taking (and expiring) requests meanwhile. The connect attempt and
        // the pause between attempts are kept across requests: dropping them at each one
        // (as a plain select! in this loop would) never lets a busy MME connect.
        let stream = loop {
            let connect =
                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(c.cfg.hss));
            tokio::pin!(connect);
            let outcome = loop {
                tokio::select! {
                    r = &mut connect => break r,
                    req = rx.recv() => match req {
                        Some(r) => c.submit(r, Instant::now()),
                        None => return,
                    },
                }
            };
            match outcome {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) => debug!(hss = %c.cfg.hss, "S6a connect failed: {e}"),
                Err(_) => debug!(hss = %c.cfg.hss, "S6a connect timed out"),
            }
            c.expire_waiting(Instant::now());
            let pause = tokio::time::sleep(RECONNECT);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    req = rx.recv() => match req {
                        Some(r) => c.submit(r, Instant::now()),
                        None => return,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        c.peer.connect(Instant::now());
        'conn: loop {
            while let Some(bytes) = c.peer.poll_transmit() {
                if let Err(e) = wr.write_all(&bytes).await {
                    warn!("S6a write failed: {e}");
                    break 'conn;
                }
            }
            if !c.events(Instant::now()) {
                break;
            }
            let deadline = c
                .peer
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(60));
            let tick = tokio::time::Instant::now() + Duration::from_secs(1);
            tokio::select! {
                r = rd.read(&mut buf) => match r {
                    Ok(0) => { info!("HSS closed the S6a connection"); break; }
                    Ok(n) => c.peer.handle_input(&buf[..n], Instant::now()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => { warn!("S6a read failed: {e}"); break; }
                },
                req = rx.recv() => match req {
                    Some(r) => c.submit(r, Instant::now()),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline.min(tick)) => {
                    c.peer.handle_timeout(Instant::now());
                    c.expire_waiting(Instant::now());
                }
            }
        }
        c.peer.transport_closed();
        c.events(Instant::now());
        tokio::time::sleep(RECONNECT).await;
    }
}
