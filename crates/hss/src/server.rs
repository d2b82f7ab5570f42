//! S6a server: accepts many MME connections over TCP, each driven by proto-diameter's sans-IO
//! `ServerPeer` (the base protocol: CER/CEA, DWR/DWA, DPR/DPA), and answers AIR with Milenage
//! vectors, ULR with the subscription (recording the serving MME) and PUR (marking the UE
//! purged). It sends Cancel-Location to the MME a UE leaves (a ULR from another MME) and to
//! the MME of a withdrawn subscriber ([`Hss::withdraw`]), on that MME's own connection. All
//! Diameter encoding and the base protocol live in `proto-diameter`; this file is the I/O
//! loop and the HSS decisions.

use crate::store::{Registration, Store, StoreError, Subscriber};
use crate::Config;
use proto_diameter::base::{self, Identity, ResultCode, SessionIds};
use proto_diameter::codes::*;
use proto_diameter::s6a::{
    Ambr, ApnConfiguration, Arp, AuthInfoAnswer, AuthInfoRequest, CancelLocationAnswer,
    CancelLocationRequest, EutranVector, PurgeUeAnswer, PurgeUeRequest, SubscriptionData,
    UpdateLocationAnswer, UpdateLocationRequest,
};
use proto_diameter::{Message, ServerConfig, ServerEvent, ServerPeer, ServerState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A ready HSS: configuration, identity and the opened subscriber store.
pub struct Hss {
    cfg: Config,
    identity: Identity,
    /// SQLite is synchronous; each request holds the lock only for one short transaction.
    store: Mutex<Store>,
    /// The open connections by their MME's Origin-Host: where a CLR for that MME goes.
    mmes: Mutex<HashMap<String, MmeLink>>,
    next_connection: AtomicU64,
    /// Session-Ids of the requests the HSS starts (CLR).
    sessions: Mutex<SessionIds>,
}

/// One open MME connection, as the other connections see it.
struct MmeLink {
    connection: u64,
    requests: mpsc::UnboundedSender<Message>,
}

/// Takes a connection out of [`Hss::mmes`] however its task ends, unless a newer connection
/// of the same MME replaced it.
struct Registered<'a> {
    hss: &'a Hss,
    connection: u64,
    host: Option<String>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(host) = &self.host {
            let mut mmes = lock(&self.hss.mmes);
            if mmes
                .get(host)
                .is_some_and(|l| l.connection == self.connection)
            {
                mmes.remove(host);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
            sessions: Mutex::new(SessionIds::new(
                &identity.origin_host,
                identity.origin_state_id,
            )),
            cfg,
            identity,
            store: Mutex::new(store),
            mmes: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        })
    }

    /// Serves S6a on `listener` until the future is dropped; dropping it also ends every
    /// connection task (they live in a JoinSet owned by this future). The caller may keep a
    /// clone of the `Arc` to [`withdraw`](Self::withdraw) subscribers meanwhile.
    pub async fn run(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let hss = self;
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
        let (requests_tx, mut requests) = mpsc::unbounded_channel();
        let mut registered = Registered {
            hss: &self,
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
            host: None,
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(ev) = dia.poll_event() {
                match ev {
                    ServerEvent::Open(caps) => {
                        tracing::info!(%peer, host = %caps.origin_host, realm = %caps.origin_realm, "capabilities exchanged");
                        // A reconnecting MME's new connection takes over from its old one.
                        lock(&self.mmes).insert(
                            caps.origin_host.clone(),
                            MmeLink {
                                connection: registered.connection,
                                requests: requests_tx.clone(),
                            },
                        );
                        registered.host = Some(caps.origin_host);
                    }
                    ServerEvent::Request(m) => {
                        let answer = self.handle(&m);
                        dia.answer(answer);
                    }
                    ServerEvent::Answer { message, .. } => {
                        match CancelLocationAnswer::from_message(&message) {
                            Ok(cla) => {
                                tracing::info!(%peer, mme = %cla.origin_host, result = ?cla.result, "CLA received")
                            }
                            Err(e) => {
                                tracing::warn!(%peer, cmd = %message.name(), error = %e, "bad answer from MME")
                            }
                        }
                    }
                    ServerEvent::RequestFailed {
                        command_code,
                        reason,
                        ..
                    } => {
                        tracing::warn!(%peer, remote = ?remote_host(&dia), command_code, %reason, "request to MME failed");
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
                Some(req) = requests.recv() => {
                    if let Err(e) = dia.request(req, Instant::now()) {
                        tracing::warn!(%peer, error = %e, "cannot send request to MME");
                    }
                }
            }
        }
    }

    /// Writes every registration as JSON (temp file + rename).
    pub fn write_registrations(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let regs: Vec<serde_json::Value> = lock(&self.store)
            .registrations()?
            .into_iter()
            .map(|(imsi, r)| serde_json::json!({"imsi": imsi, "registration": r}))
            .collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&regs)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Removes a subscriber (subscription withdrawal): the MME it is registered at, if any
    /// and not purged, gets a Cancel-Location with SUBSCRIPTION_WITHDRAWAL (TS 29.272
    /// 5.2.1.2). `Ok(false)` if the IMSI was not there.
    pub fn withdraw(&self, imsi: &str) -> Result<bool, StoreError> {
        let registration = {
            let mut store = lock(&self.store);
            let registration = store.registration(imsi)?;
            if !store.remove(imsi)? {
                return Ok(false);
            }
            registration.flatten()
        };
        tracing::info!(%imsi, "subscription withdrawn");
        if let Some(r) = registration.filter(|r| !r.purged) {
            self.cancel_location(imsi, &r, CANCELLATION_TYPE_SUBSCRIPTION_WITHDRAWAL);
        }
        Ok(true)
    }

    /// Sends a CLR to the MME of `registration` on its connection; an MME not connected
    /// now cannot be told (there is no Diameter routing beyond direct peers here).
    fn cancel_location(&self, imsi: &str, registration: &Registration, cancellation_type: u32) {
        let clr = CancelLocationRequest {
            session_id: lock(&self.sessions).next_id(),
            origin_host: self.identity.origin_host.clone(),
            origin_realm: self.identity.origin_realm.clone(),
            destination_host: registration.mme_host.clone(),
            destination_realm: registration.mme_realm.clone(),
            imsi: imsi.to_string(),
            cancellation_type,
            clr_flags: Some(CLR_FLAG_S6A_S6D_INDICATOR),
        };
        let mme = &registration.mme_host;
        let sent = lock(&self.mmes)
            .get(mme)
            .is_some_and(|l| l.requests.send(clr.to_message()).is_ok());
        if sent {
            tracing::info!(%imsi, %mme, cancellation_type, "CLR sent");
        } else {
            tracing::warn!(%imsi, %mme, cancellation_type, "MME not connected, CLR not sent");
        }
    }

    /// The answer to one S6a request.
    fn handle(&self, m: &Message) -> Message {
        match m.command_code {
            CMD_AUTHENTICATION_INFORMATION => self.on_air(m),
            CMD_UPDATE_LOCATION => self.on_ulr(m),
            CMD_PURGE_UE => self.on_pur(m),
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
        let mut store = lock(&self.store);
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
        let (result, subscription) = match self.register(&req) {
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

    /// The subscriber of an acceptable ULR, now registered at its MME; the MME it was
    /// registered at before, when another and not purged, is cancelled (TS 29.272 5.2.1.1.3,
    /// MME_UPDATE_PROCEDURE). The CLR is queued on that MME's connection while this one
    /// answers the ULA.
    fn register(&self, req: &UpdateLocationRequest) -> Result<Subscriber, ResultCode> {
        let (sub, previous) = {
            let mut store = lock(&self.store);
            let sub = self.lookup(&store, &req.imsi)?;
            if req.rat_type != RAT_TYPE_EUTRAN {
                return Err(ResultCode::Experimental {
                    vendor: VENDOR_3GPP,
                    code: DIAMETER_ERROR_RAT_NOT_ALLOWED,
                });
            }
            let previous = store
                .update_location(&req.imsi, &req.origin_host, &req.origin_realm)
                .map_err(|e| {
                    tracing::error!(imsi = %req.imsi, error = %e, "cannot record the serving MME");
                    ResultCode::Base(DIAMETER_UNABLE_TO_COMPLY)
                })?
                .ok_or(ResultCode::USER_UNKNOWN)?;
            (sub, previous)
        };
        if let Some(old) = previous.filter(|o| o.mme_host != req.origin_host && !o.purged) {
            self.cancel_location(&req.imsi, &old, CANCELLATION_TYPE_MME_UPDATE_PROCEDURE);
        }
        Ok(sub)
    }

    /// PUR: the UE is marked purged when the purging MME is the registered one, and only then
    /// is it told to freeze the M-TMSI (TS 29.272 5.2.3.1.3).
    fn on_pur(&self, m: &Message) -> Message {
        let req = match PurgeUeRequest::from_message(m) {
            Ok(r) => r,
            Err(e) => return self.reject(m, "PUR", &e),
        };
        let purged = lock(&self.store).purge(&req.imsi, &req.origin_host);
        let (result, pua_flags) = match purged {
            Ok(Some(true)) => (ResultCode::SUCCESS, Some(PUA_FLAG_FREEZE_M_TMSI)),
            Ok(Some(false)) => (ResultCode::SUCCESS, None),
            Ok(None) => (ResultCode::USER_UNKNOWN, None),
            Err(e) => {
                tracing::error!(imsi = %req.imsi, error = %e, "cannot mark the UE purged");
                (ResultCode::Base(DIAMETER_UNABLE_TO_COMPLY), None)
            }
        };
        tracing::info!(imsi = %req.imsi, mme = %req.origin_host, ?result, ?pua_flags, "PUR answered");
        PurgeUeAnswer {
            session_id: req.session_id,
            origin_host: self.identity.origin_host.clone(),
            origin_realm: self.identity.origin_realm.clone(),
            result,
            pua_flags,
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
            periodic_rau_tau_timer: Some(self.cfg.periodic_tau_timer_secs),
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
    let dump_to = cfg.registrations_file.clone();
    let hss = Arc::new(Hss::new(cfg)?);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for S6a on {listen}: {e}"))?;
    let Some(path) = dump_to else {
        return hss.run(listener).await;
    };
    // SIGHUP writes the registrations from the database: how a checker reads this
    // process's own view of which MME serves whom.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let run = hss.clone().run(listener);
    tokio::pin!(run);
    loop {
        tokio::select! {
            r = &mut run => return r,
            _ = hup.recv() => {
                if let Err(e) = hss.write_registrations(&path) {
                    tracing::warn!(file = %path.display(), "cannot write the registrations: {e:#}");
                }
            }
        }
    }
}
