//! S6a server: accepts many MME connections over TCP, each driven by proto-diameter's sans-IO
//! `ServerPeer` (the base protocol: CER/CEA, DWR/DWA, DPR/DPA), and answers AIR with Milenage
//! vectors and ULR with the subscription. All Diameter encoding and the base protocol live in
//! `proto-diameter`; this file is the I/O loop and the HSS decisions.

use crate::store::{Store, Subscriber};
use crate::Config;
use proto_diameter::base::{self, Identity, ResultCode};
use proto_diameter::codes::*;
use proto_diameter::s6a::{
    Ambr, ApnConfiguration, Arp, AuthInfoAnswer, AuthInfoRequest, EutranVector, SubscriptionData,
    UpdateLocationAnswer, UpdateLocationRequest,
};
use proto_diameter::{Message, ServerConfig, ServerEvent, ServerPeer, ServerState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A ready HSS: configuration, identity and the opened subscriber store.
pub struct Hss {
    cfg: Config,
    identity: Identity,
    /// SQLite is synchronous; each request holds the lock only for one short transaction.
    store: Mutex<Store>,
}

impl Hss {
    /// Opens the database and, when it has no subscribers, imports `subscribers_file`.
    pub fn new(cfg: Config) -> anyhow::Result<Hss> {
        cfg.validate()?;
        let mut store = Store::open(&cfg.db_path)?;
        if let Some(file) = &cfg.subscribers_file {
            if store.count()? == 0 {
                let n = store.import_csv(file)?;
                tracing::info!(count = n, file = %file.display(), "imported subscribers into empty database");
            }
        }
        tracing::info!(db = %cfg.db_path.display(), subscribers = store.count()?, "subscriber store open");
        let identity = Identity {
            origin_host: cfg.origin_host.clone(),
            origin_realm: cfg.origin_realm.clone(),
            host_ip: cfg.advertised_ip,
            product_name: "corehop-hss".into(),
            // Origin-State-Id tells peers we restarted with lost state (RFC 6733 8.16);
            // seconds since the epoch is the usual choice.
            origin_state_id: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
        };
        Ok(Hss {
            cfg,
            identity,
            store: Mutex::new(store),
        })
    }

    /// Serves S6a on `listener` until the future is dropped; dropping it also ends every
    /// connection task (they live in a JoinSet owned by this future).
    pub async fn run(self, listener: TcpListener) -> anyhow::Result<()> {
        let hss = Arc::new(self);
        tracing::info!(addr = %listener.local_addr()?, host = %hss.identity.origin_host, "HSS listening for S6a");
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (sock, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: keep serving the connections we have.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = sock.set_nodelay(true);
                    conns.spawn(hss.clone().connection(sock, peer));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }

    /// The I/O loop of one connection; the base protocol (CER/CEA, DWR/DWA, DPR/DPA, the CER
    /// deadline, the watchdog) is proto-diameter's `ServerPeer`, which hands over S6a requests.
    async fn connection(self: Arc<Self>, mut sock: TcpStream, peer: SocketAddr) {
        tracing::info!(%peer, "S6a connection accepted");
        let mut dia = ServerPeer::new(ServerConfig::new(self.identity.clone()), Instant::now());
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(ev) = dia.poll_event() {
                match ev {
                    ServerEvent::Open(caps) => {
                        tracing::info!(%peer, host = %caps.origin_host, realm = %caps.origin_realm, "capabilities exchanged");
                    }
                    ServerEvent::Request(m) => {
                        let answer = self.handle(&m);
                        dia.answer(answer);
                    }
                    ServerEvent::Closed(reason) => {
                        tracing::info!(%peer, remote = ?remote_host(&dia), %reason, "closing S6a connection");
                    }
                }
            }
            while let Some(bytes) = dia.poll_transmit() {
                if let Err(e) = sock.write_all(&bytes).await {
                    tracing::warn!(%peer, error = %e, "S6a write failed, closing");
                    return;
                }
            }
            if dia.state() == ServerState::Closed {
                let _ = sock.shutdown().await;
                return;
            }
            let timeout = dia.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                read = sock.read(&mut buf) => match read {
                    Ok(0) => {
                        tracing::info!(%peer, remote = ?remote_host(&dia), "S6a connection closed by peer");
                        return;
                    }
                    Ok(n) => dia.handle_input(&buf[..n], Instant::now()),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "S6a read failed, closing");
                        return;
                    }
                },
                _ = sleep_until(timeout) => dia.handle_timeout(Instant::now()),
            }
        }
    }

    /// The answer to one S6a request.
    fn handle(&self, m: &Message) -> Message {
        match m.command_code {
            CMD_AUTHENTICATION_INFORMATION => self.on_air(m),
            CMD_UPDATE_LOCATION => self.on_ulr(m),
            other => {
                let text = format!("S6a command {other} not supported by this HSS");
                base::error_answer(m, &self.identity, DIAMETER_COMMAND_UNSUPPORTED, &text)
            }
        }
    }

    fn on_air(&self, m: &Message) -> Message {
        let req = match AuthInfoRequest::from_message(m) {
            Ok(r) => r,
            Err(e) => return self.reject(m, "AIR", &e),
        };
        let (result, vectors) = match self.vectors(&req) {
            Ok(v) => (ResultCode::SUCCESS, v),
            Err(result) => (result, vec![]),
        };
        tracing::info!(imsi = %req.imsi, vectors = vectors.len(), ?result, "AIR answered");
        AuthInfoAnswer {
            session_id: req.session_id,
            origin_host: self.identity.origin_host.clone(),
            origin_realm: self.identity.origin_realm.clone(),
            result,
            vectors,
        }
        .to_message(m)
    }

    /// Vectors for an AIR, or the result code explaining why none.
    fn vectors(&self, req: &AuthInfoRequest) -> Result<Vec<EutranVector>, ResultCode> {
        let unavailable = ResultCode::Experimental {
            vendor: VENDOR_3GPP,
            code: DIAMETER_AUTHENTICATION_DATA_UNAVAILABLE,
        };
        let n = req.num_vectors.clamp(1, self.cfg.max_vectors);
        let mut store = self
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Re-synchronisation (TS 33.102 6.3.5): a valid AUTS carries the USIM's SQN_MS, from
        // which the counter restarts.
        let restart_from = match &req.resync_info {
            None => None,
            Some(info) => {
                let sub = self.lookup(&store, &req.imsi)?;
                let (rand, auts) = split_resync(info);
                match aka::verify_auts(&sub.k, &sub.opc, &rand, &auts) {
                    Ok(sqn_ms) => {
                        tracing::info!(imsi = %req.imsi, sqn_ms, "SQN re-synchronised from AUTS");
                        Some(sqn_ms)
                    }
                    Err(e) => {
                        tracing::warn!(imsi = %req.imsi, error = %e, "AUTS verification failed");
                        return Err(unavailable);
                    }
                }
            }
        };
        let (sub, sqns) = match store.reserve_sqns(&req.imsi, n, restart_from) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::info!(imsi = %req.imsi, "AIR for unknown IMSI");
                return Err(ResultCode::USER_UNKNOWN);
            }
            Err(e) => {
                tracing::error!(imsi = %req.imsi, error = %e, "cannot advance SQN");
                return Err(ResultCode::Base(DIAMETER_UNABLE_TO_COMPLY));
            }
        };
        drop(store);
        sqns.into_iter()
            .map(|sqn| {
                let mut rand = [0u8; 16];
                getrandom::fill(&mut rand).map_err(|e| {
                    tracing::error!(error = %e, "no randomness for RAND");
                    unavailable
                })?;
                let v = aka::generate_vector_for(
                    &sub.k,
                    &sub.opc,
                    &sub.amf,
                    sqn,
                    &rand,
                    &req.visited_plmn_id,
                );
                Ok(EutranVector {
                    rand: v.rand,
                    xres: v.xres.to_vec(),
                    autn: v.autn,
                    kasme: v.kasme,
                })
            })
            .collect()
    }

    fn lookup(&self, store: &Store, imsi: &str) -> Result<Subscriber, ResultCode> {
        match store.get(imsi) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(ResultCode::USER_UNKNOWN),
            Err(e) => {
                tracing::error!(%imsi, error = %e, "subscriber lookup failed");
                Err(ResultCode::Base(DIAMETER_UNABLE_TO_COMPLY))
            }
        }
    }

    fn on_ulr(&self, m: &Message) -> Message {
        let req = match UpdateLocationRequest::from_message(m) {
            Ok(r) => r,
            Err(e) => return self.reject(m, "ULR", &e),
        };
        let looked_up = {
            let store = self
                .store
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.lookup(&store, &req.imsi)
        };
        let (result, subscription) = match looked_up {
            Ok(_) if req.rat_type != RAT_TYPE_EUTRAN => (
                ResultCode::Experimental {
                    vendor: VENDOR_3GPP,
                    code: DIAMETER_ERROR_RAT_NOT_ALLOWED,
                },
                None,
            ),
            Ok(sub) => (ResultCode::SUCCESS, Some(self.subscription(&sub))),
            Err(rc) => (rc, None),
        };
        tracing::info!(imsi = %req.imsi, mme = %req.origin_host, ?result, "ULR answered");
        UpdateLocationAnswer {
            session_id: req.session_id,
            origin_host: self.identity.origin_host.clone(),
            origin_realm: self.identity.origin_realm.clone(),
            result,
            ula_flags: result
                .is_success()
                .then_some(ULA_FLAG_SEPARATION_INDICATION),
            subscription,
        }
        .to_message(m)
    }

    /// Subscription-Data: one IPv4 APN from the configuration with the default bearer QoS.
    fn subscription(&self, sub: &Subscriber) -> SubscriptionData {
        let ambr = Ambr {
            uplink: self.cfg.ambr_uplink_bps,
            downlink: self.cfg.ambr_downlink_bps,
        };
        SubscriptionData {
            msisdn: sub.msisdn.clone(),
            subscriber_status: SUBSCRIBER_STATUS_SERVICE_GRANTED,
            network_access_mode: NETWORK_ACCESS_MODE_ONLY_PACKET,
            ambr,
            default_context_identifier: 1,
            apns: vec![ApnConfiguration {
                context_identifier: 1,
                apn: self.cfg.apn.clone(),
                pdn_type: PDN_TYPE_IPV4,
                qci: self.cfg.qci,
                arp: Arp {
                    priority_level: self.cfg.arp_priority,
                    pre_emption_capability: PRE_EMPTION_CAPABILITY_DISABLED,
                    pre_emption_vulnerability: PRE_EMPTION_VULNERABILITY_ENABLED,
                },
                ambr: Some(ambr),
            }],
        }
    }

    /// A well-framed request whose AVPs are wrong gets an error answer, not a dropped link.
    fn reject(&self, m: &Message, what: &str, e: &proto_diameter::Error) -> Message {
        tracing::warn!(cmd = what, error = %e, "invalid S6a request");
        base::error_answer(m, &self.identity, e.result_code(), &e.to_string())
    }
}

fn remote_host(dia: &ServerPeer) -> Option<&str> {
    dia.remote().map(|c| c.origin_host.as_str())
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn split_resync(info: &[u8; 30]) -> ([u8; 16], [u8; 14]) {
    let mut rand = [0u8; 16];
    let mut auts = [0u8; 14];
    rand.copy_from_slice(&info[..16]);
    auts.copy_from_slice(&info[16..]);
    (rand, auts)
}

/// Runs the HSS with `cfg` until the future is dropped.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let hss = Hss::new(cfg)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for S6a on {listen}: {e}"))?;
    hss.run(listener).await
}
