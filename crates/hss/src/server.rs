//! S6a server: accepts many MME connections over TCP, runs the Diameter base protocol
//! (CER/CEA, DWR/DWA, DPR/DPA) and answers AIR with Milenage vectors and ULR with the
//! subscription. All Diameter encoding lives in `proto-diameter`; this file is the I/O loop
//! and the HSS decisions.

use crate::store::{Store, Subscriber};
use crate::Config;
use proto_diameter::base::{self, Identity, PeerCapabilities, ResultCode};
use proto_diameter::codes::*;
use proto_diameter::s6a::{
    Ambr, ApnConfiguration, Arp, AuthInfoAnswer, AuthInfoRequest, EutranVector, SubscriptionData,
    UpdateLocationAnswer, UpdateLocationRequest,
};
use proto_diameter::{Framer, Message};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long a new connection may stay silent before its CER.
const CER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

    async fn connection(self: Arc<Self>, mut sock: TcpStream, peer: SocketAddr) {
        tracing::info!(%peer, "S6a connection accepted");
        let mut framer = Framer::new();
        let mut conn = ConnState::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // Until CER arrives a connection gets a deadline, so sockets that never speak
            // Diameter do not pile up.
            let read = sock.read(&mut buf);
            let read = if conn.remote_host.is_none() {
                match tokio::time::timeout(CER_TIMEOUT, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(%peer, "no CER in {CER_TIMEOUT:?}, closing");
                        return;
                    }
                }
            } else {
                read.await
            };
            let n = match read {
                Ok(0) => {
                    tracing::info!(%peer, remote = ?conn.remote_host, "S6a connection closed by peer");
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "S6a read failed, closing");
                    return;
                }
            };
            framer.push(&buf[..n]);
            loop {
                let msg = match framer.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        // The byte stream is out of sync; only this connection is affected.
                        tracing::warn!(%peer, error = %e, "malformed Diameter input, dropping connection");
                        return;
                    }
                };
                let (reply, close) = self.handle(&mut conn, msg, peer);
                if let Some(r) = reply {
                    if let Err(e) = sock.write_all(&r.encode()).await {
                        tracing::warn!(%peer, error = %e, "S6a write failed, closing");
                        return;
                    }
                }
                if close {
                    tracing::info!(%peer, remote = ?conn.remote_host, "closing S6a connection");
                    let _ = sock.shutdown().await;
                    return;
                }
            }
        }
    }

    /// One message in, at most one answer out, and whether to close afterwards.
    fn handle(
        &self,
        conn: &mut ConnState,
        m: Message,
        peer: SocketAddr,
    ) -> (Option<Message>, bool) {
        let id = &self.identity;
        if !m.is_request() {
            // Answers to requests we never send (we do not originate DWR): ignore.
            tracing::debug!(%peer, cmd = %m.name(), "ignoring Diameter answer");
            return (None, false);
        }
        if m.command_code == CMD_CAPABILITIES_EXCHANGE {
            return self.on_cer(conn, &m, peer);
        }
        if conn.remote_host.is_none() {
            // RFC 6733 5.3: nothing but CER before the capabilities exchange.
            tracing::warn!(%peer, cmd = %m.name(), "request before CER, dropping connection");
            return (None, true);
        }
        match (m.application_id, m.command_code) {
            (_, CMD_DEVICE_WATCHDOG) => (Some(base::dwa(&m, id)), false),
            (_, CMD_DISCONNECT_PEER) => (Some(base::dpa(&m, id)), true),
            (APP_S6A, CMD_AUTHENTICATION_INFORMATION) => (Some(self.on_air(&m)), false),
            (APP_S6A, CMD_UPDATE_LOCATION) => (Some(self.on_ulr(&m)), false),
            (APP_S6A, _) => {
                let text = format!("S6a command {} not supported by this HSS", m.command_code);
                (
                    Some(base::error_answer(
                        &m,
                        id,
                        DIAMETER_COMMAND_UNSUPPORTED,
                        &text,
                    )),
                    false,
                )
            }
            (app, _) => {
                let text = format!("application {app} not supported");
                (
                    Some(base::error_answer(
                        &m,
                        id,
                        DIAMETER_APPLICATION_UNSUPPORTED,
                        &text,
                    )),
                    false,
                )
            }
        }
    }

    fn on_cer(
        &self,
        conn: &mut ConnState,
        m: &Message,
        peer: SocketAddr,
    ) -> (Option<Message>, bool) {
        let caps = match PeerCapabilities::from_message(m) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "invalid CER");
                return (
                    Some(base::error_answer(
                        m,
                        &self.identity,
                        result_for(&e),
                        &e.to_string(),
                    )),
                    true,
                );
            }
        };
        if !caps.supports_s6a() {
            tracing::warn!(%peer, host = %caps.origin_host, "CER without S6a");
            return (
                Some(base::cea(m, &self.identity, DIAMETER_NO_COMMON_APPLICATION)),
                true,
            );
        }
        tracing::info!(%peer, host = %caps.origin_host, realm = %caps.origin_realm, "capabilities exchanged");
        conn.remote_host = Some(caps.origin_host);
        (Some(base::cea(m, &self.identity, DIAMETER_SUCCESS)), false)
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
        base::error_answer(m, &self.identity, result_for(e), &e.to_string())
    }
}

#[derive(Default)]
struct ConnState {
    /// Origin-Host from the peer's CER; `None` until the capabilities exchange.
    remote_host: Option<String>,
}

fn result_for(e: &proto_diameter::Error) -> u32 {
    match e {
        proto_diameter::Error::MissingAvp(_) => DIAMETER_MISSING_AVP,
        _ => DIAMETER_INVALID_AVP_VALUE,
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
