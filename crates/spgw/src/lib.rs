//! Combined S-GW/P-GW of the corehop vEPC.
//!
//! - S11: GTPv2-C server (Echo, Create Session, Modify Bearer, Delete Session,
//!   Release Access Bearers); DNS servers and MTU are offered in the PCO;
//!   sessions are keyed by our S11 TEID. For an idle UE (access bearers released)
//!   downlink is buffered and the MME sent a Downlink Data Notification, retransmitted
//!   on T3; the next Modify Bearer delivers the buffer to the eNB.
//! - S1-U: GTP-U on UDP 2152. Uplink G-PDUs go to the SGi TUN device, packets
//!   read from the TUN go to the UE's eNB F-TEID; Echo is answered; a G-PDU for
//!   an unknown TEID gets an Error Indication.
//! - SGi: TUN device `sgi0` (NAT towards the PDN is done by corehop's runtime). PDN
//!   types IPv4, IPv6 and IPv4v6: with `ue_ipv6_pool` each IPv6 UE gets a /64, the TUN
//!   holds the pool's first address (so the whole pool routes through it) and packets
//!   are routed by the inner packet's IP version.
//!
//! A live migration needs nothing from it: its TUN file moves with the process, as any
//! program's (corehop's runtime re-makes the device at the destination and CRIU hands the
//! file back; runtime::tun). The tunnel list is written as JSON after every change (at most every 100 ms)
//! (`tunnels_file`) and can seed a new instance (`restore_tunnels_from`), or replace the
//! sessions of a running one (`tunnels_sync_file`, read on SIGHUP): the GTP Tunnel List
//! Handler.
//!
//! Dedicated bearers (network-initiated, TS 23.401 §5.4.1): SIGHUP (which also rewrites
//! the tunnel list) reads the JSON list of [`BearerRequest`]s in `bearer_requests_file`,
//! if there is one (and removes the file), and sends a Create Bearer Request for each; [`Spgw::create_bearer`] does the same for one. An
//! accepted bearer joins its tunnel-list entry (`dedicated`).

mod core;
mod tun;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

pub use crate::core::{
    BearerArp, BearerRequest, Core, CoreConfig, DedicatedBearer, Filter, IdleStats, IpPool,
    Ipv6Pool, S11Outcome, S1uAction, SgiAction, Tunnel,
};
pub use crate::tun::{Tun, TunSetup};

/// The longest `tunnels_file` lags the sessions while they keep changing: the whole list is
/// written each time, which once per change took the SPGW's core while a thousand UEs
/// attached (their pings went unanswered for seconds).
const TUNNELS_COALESCE: Duration = Duration::from_millis(100);

/// SPGW configuration (TOML). Defaults are the lab's (docs/conventions.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the S11 GTPv2-C server listens.
    pub s11_bind: SocketAddr,
    /// Where the S1-U GTP-U endpoint listens.
    pub s1u_bind: SocketAddr,
    /// Address put into our S11 F-TEID (the service IP that moves with the SPGW).
    pub s11_address: Ipv4Addr,
    /// S1-U address advertised to eNBs in the S1-U SGW F-TEID.
    pub s1u_address: Ipv4Addr,
    /// UE address pool, CIDR. The SGi address is excluded from it.
    pub ue_pool: String,
    /// UE IPv6 prefix pool, CIDR of /16../63 (e.g. "2001:db8:77::/48"): one /64 per UE
    /// (the first is the SGi side's, whose `::1` the TUN gets). `None`: IPv4 only.
    pub ue_ipv6_pool: Option<String>,
    /// Name of the SGi TUN device.
    pub sgi_tun: String,
    /// Address/prefix given to the TUN device when the SPGW has to create it.
    pub sgi_address: String,
    /// MTU given to the TUN device when the SPGW has to create it.
    pub sgi_mtu: u16,
    /// DNS servers offered to UEs in the PCO of the Create Session Response.
    pub dns: Vec<Ipv4Addr>,
    /// Restart counter sent in Recovery IEs.
    pub recovery: u8,
    /// JSON file with the active tunnels, rewritten after every change (at most every 100 ms while they keep coming); `None` disables it.
    pub tunnels_file: Option<PathBuf>,
    /// Restore sessions from such a file at start (after a migration or restart).
    pub restore_tunnels_from: Option<PathBuf>,
    /// On SIGHUP, if this file exists, the session table is replaced by the tunnel list in
    /// it and the file removed: how the GTP Tunnel List Handler makes an SPGW recovered from
    /// an older checkpoint whole.
    pub tunnels_sync_file: Option<PathBuf>,
    /// On SIGHUP, the dedicated bearers to create: a JSON list of requests (IMSI, QCI,
    /// ARP, bit rates, packet filters); the file is removed once read.
    pub bearer_requests_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            s11_bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), proto_gtpv2c::GTPC_PORT),
            s1u_bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), proto_gtpu::GTPU_PORT),
            s11_address: Ipv4Addr::new(10, 77, 1, 30),
            s1u_address: Ipv4Addr::new(10, 77, 1, 30),
            ue_pool: "10.45.0.0/16".into(),
            ue_ipv6_pool: None,
            sgi_tun: "sgi0".into(),
            sgi_address: "10.45.0.1/16".into(),
            sgi_mtu: 1400,
            dns: vec![Ipv4Addr::new(8, 8, 8, 8)],
            recovery: 0,
            tunnels_file: Some(PathBuf::from("/run/corehop/tunnels.json")),
            restore_tunnels_from: None,
            tunnels_sync_file: Some(PathBuf::from("/run/corehop/tunnels.sync.json")),
            bearer_requests_file: Some(PathBuf::from("/run/corehop/bearers.json")),
        }
    }
}

/// Parses "a.b.c.d/len".
fn parse_cidr(field: &str, s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (a, l) = s
        .split_once('/')
        .with_context(|| format!("{field} = {s:?}: expected IPv4 CIDR like 10.45.0.0/16"))?;
    let addr: Ipv4Addr = a
        .parse()
        .with_context(|| format!("{field} = {s:?}: bad IPv4 address"))?;
    let len: u8 = l
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .with_context(|| format!("{field} = {s:?}: prefix length must be 0..32"))?;
    Ok((addr, len))
}

/// Parses "x:y::/len".
fn parse_cidr6(field: &str, s: &str) -> anyhow::Result<(Ipv6Addr, u8)> {
    let (a, l) = s
        .split_once('/')
        .with_context(|| format!("{field} = {s:?}: expected IPv6 CIDR like 2001:db8:77::/48"))?;
    let addr: Ipv6Addr = a
        .parse()
        .with_context(|| format!("{field} = {s:?}: bad IPv6 address"))?;
    let len: u8 = l
        .parse()
        .ok()
        .filter(|l| *l <= 128)
        .with_context(|| format!("{field} = {s:?}: prefix length must be 0..128"))?;
    Ok((addr, len))
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read SPGW config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid SPGW config {}", path.display()))
    }

    fn tun_setup(&self) -> anyhow::Result<TunSetup> {
        let (addr, prefix_len) = parse_cidr("sgi_address", &self.sgi_address)?;
        if self.sgi_mtu < 576 {
            bail!("sgi_mtu = {}: must be at least 576", self.sgi_mtu);
        }
        Ok(TunSetup {
            addr,
            prefix_len,
            mtu: self.sgi_mtu,
            ipv6: self.ipv6_pool()?.map(|p| (p.gateway(), p.prefix_len())),
        })
    }

    fn ipv6_pool(&self) -> anyhow::Result<Option<Ipv6Pool>> {
        let Some(text) = &self.ue_ipv6_pool else {
            return Ok(None);
        };
        let (net, len) = parse_cidr6("ue_ipv6_pool", text)?;
        Ipv6Pool::new(net, len)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("ue_ipv6_pool = {text:?}: {e}"))
    }

    fn core_config(&self) -> anyhow::Result<CoreConfig> {
        let (net, len) = parse_cidr("ue_pool", &self.ue_pool)?;
        let gw = self.tun_setup()?.addr;
        let pool = IpPool::new(net, len, &[gw]).map_err(|e| anyhow::anyhow!("ue_pool: {e}"))?;
        Ok(CoreConfig {
            s11_addr: self.s11_address,
            s1u_addr: self.s1u_address,
            recovery: self.recovery,
            pool,
            pool6: self.ipv6_pool()?,
            dns: self.dns.clone(),
            mtu: self.sgi_mtu,
        })
    }
}

/// Control requests to the running I/O loop.
#[derive(Debug, Clone)]
enum Ctl {
    CreateBearers(Vec<BearerRequest>),
}

struct Shared {
    cfg: Config,
    core: Mutex<Core>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    ctl_rx: Mutex<Option<mpsc::UnboundedReceiver<Ctl>>>,
    tun_attached: AtomicBool,
    /// Tunnels changed since `tunnels_file` was last written.
    tunnels_dirty: AtomicBool,
}

/// A handle on one SPGW instance; clones share it.
#[derive(Clone)]
pub struct Spgw {
    shared: Arc<Shared>,
}

/// Runs the SPGW until the future is dropped.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    Spgw::new(cfg)?.run().await
}

impl Spgw {
    /// Validates the config and restores saved tunnels; no I/O besides reading that file.
    pub fn new(cfg: Config) -> anyhow::Result<Spgw> {
        cfg.tun_setup()?;
        let mut core = Core::new(cfg.core_config()?);
        if let Some(path) = &cfg.restore_tunnels_from {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("restore_tunnels_from: cannot read {}", path.display()))?;
            let tunnels: Vec<Tunnel> = serde_json::from_str(&text).with_context(|| {
                format!(
                    "restore_tunnels_from: {} is not a tunnel list",
                    path.display()
                )
            })?;
            let n = tunnels.len();
            core.restore(tunnels)
                .map_err(|e| anyhow::anyhow!("restore_tunnels_from {}: {e}", path.display()))?;
            info!(tunnels = n, file = %path.display(), "restored tunnels");
        }
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        Ok(Spgw {
            shared: Arc::new(Shared {
                cfg,
                core: Mutex::new(core),
                ctl_tx,
                ctl_rx: Mutex::new(Some(ctl_rx)),
                tun_attached: AtomicBool::new(false),
                tunnels_dirty: AtomicBool::new(false),
            }),
        })
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A poisoned lock only means a panic elsewhere; the state itself is consistent
        // (every mutation completes under the lock), so keep serving.
        self.shared.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The active tunnels (IMSI, UE IP, S11 TEIDs, S1-U TEIDs, eNB address).
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.core().tunnels()
    }

    /// Asks the UE's MME for a dedicated bearer (Create Bearer Request); the bearer
    /// shows in [`tunnels`](Self::tunnels) once the MME accepted it.
    pub fn create_bearer(&self, req: BearerRequest) {
        let _ = self.shared.ctl_tx.send(Ctl::CreateBearers(vec![req]));
    }

    /// The requests of `bearer_requests_file` (SIGHUP), the file removed; none when it
    /// is absent or not a request list (logged).
    fn read_bearer_requests(&self) -> Vec<BearerRequest> {
        let Some(path) = &self.shared.cfg.bearer_requests_file else {
            return Vec::new();
        };
        // Without the file, SIGHUP only rewrites the tunnel list.
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let _ = std::fs::remove_file(path);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            error!(file = %path.display(), error = %e, "not a list of bearer requests");
            Vec::new()
        })
    }

    async fn create_bearers(&self, s11: &UdpSocket, reqs: &[BearerRequest]) {
        for r in reqs {
            let sent = self.core().create_bearer(r, Instant::now());
            match sent {
                Ok((bytes, to)) => send_request(s11, &bytes, to).await,
                Err(e) => warn!(imsi = %r.imsi, "cannot create a dedicated bearer: {e}"),
            }
        }
    }

    /// Idle-mode downlink counters: packets buffered, dropped, DDNs sent.
    pub fn idle_stats(&self) -> IdleStats {
        self.core().idle_stats()
    }

    /// Whether the TUN fd is currently open.
    pub fn tun_attached(&self) -> bool {
        self.shared.tun_attached.load(Ordering::SeqCst)
    }

    /// Writes the tunnel list atomically (temp file + rename) so a reader never
    /// sees a half-written file.
    fn write_tunnels_file(&self) {
        self.shared.tunnels_dirty.store(false, Ordering::SeqCst);
        let Some(path) = &self.shared.cfg.tunnels_file else {
            return;
        };
        let res = (|| -> anyhow::Result<()> {
            let json = serde_json::to_vec(&self.tunnels())?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if let Err(e) = res {
            warn!(file = %path.display(), error = %e, "cannot write tunnels file");
        }
    }

    /// Applies a tunnel list left in `tunnels_sync_file`; a bad list is logged and ignored,
    /// keeping the sessions the process already has.
    fn sync_tunnels(&self) {
        let Some(path) = &self.shared.cfg.tunnels_sync_file else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let _ = std::fs::remove_file(path);
        let applied = serde_json::from_str::<Vec<Tunnel>>(&text)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                let n = t.len();
                self.core().sync(t).map(|()| n)
            });
        match applied {
            // The SIGHUP that brought it writes the tunnels file next.
            Ok(n) => info!(tunnels = n, file = %path.display(), "tunnel list synchronised"),
            Err(e) => {
                error!(file = %path.display(), error = %e, "tunnel list rejected; keeping current sessions")
            }
        }
    }

    fn open_tun(&self) -> Option<Tun> {
        let cfg = &self.shared.cfg;
        let setup = match cfg.tun_setup() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "bad SGi settings");
                return None;
            }
        };
        match Tun::open(&cfg.sgi_tun, &setup) {
            Ok((t, created)) => {
                info!(dev = %cfg.sgi_tun, created, "SGi TUN attached");
                self.shared.tun_attached.store(true, Ordering::SeqCst);
                Some(t)
            }
            Err(e) => {
                error!(dev = %cfg.sgi_tun, error = %e, "cannot attach SGi TUN (needs CAP_NET_ADMIN to create it); SGi stays down");
                None
            }
        }
    }

    /// Binds S11 and S1-U, attaches the TUN device and serves until dropped.
    pub async fn run(&self) -> anyhow::Result<()> {
        let cfg = &self.shared.cfg;
        let mut ctl_rx = self
            .shared
            .ctl_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("this SPGW instance is already running")?;
        // SIGHUP adopts a tunnel list left in `tunnels_sync_file`, writes the tunnel list
        // again from memory (how a checker reads this process's own view, not a copy of the
        // file that moved with a checkpoint) and creates the dedicated bearers a
        // `bearer_requests_file` asks for.
        let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
        let s11 = UdpSocket::bind(cfg.s11_bind)
            .await
            .with_context(|| format!("cannot bind S11 on {}", cfg.s11_bind))?;
        let s1u = UdpSocket::bind(cfg.s1u_bind)
            .await
            .with_context(|| format!("cannot bind S1-U on {}", cfg.s1u_bind))?;
        info!(s11 = %cfg.s11_bind, s1u = %cfg.s1u_bind, "SPGW listening");
        let tun = self.open_tun();
        self.write_tunnels_file();

        let mut s11_buf = vec![0u8; 65536];
        let mut s1u_buf = vec![0u8; 65536];
        let mut sgi_buf = vec![0u8; 65536];
        let mut tunnels_written = Instant::now();
        loop {
            let tunnels_due = self
                .shared
                .tunnels_dirty
                .load(Ordering::SeqCst)
                .then(|| tunnels_written + TUNNELS_COALESCE);
            let deadline = [self.core().poll_timeout(), tunnels_due]
                .into_iter()
                .flatten()
                .min();
            let ctl = tokio::select! {
                r = s11.recv_from(&mut s11_buf) => {
                    match r {
                        Ok((n, from)) => self.on_s11(&s11, &s1u, &s11_buf[..n], from).await,
                        Err(e) => recv_error("S11", e).await,
                    }
                    None
                }
                r = s1u.recv_from(&mut s1u_buf) => {
                    match r {
                        Ok((n, from)) => {
                            self.on_s1u(&s1u, tun.as_ref(), &s1u_buf[..n], from).await
                        }
                        Err(e) => recv_error("S1-U", e).await,
                    }
                    None
                }
                r = recv_tun(tun.as_ref(), &mut sgi_buf) => {
                    match r {
                        Ok(n) => self.on_sgi(&s11, &s1u, &sgi_buf[..n]).await,
                        Err(e) => recv_error("SGi", e).await,
                    }
                    None
                }
                _ = sleep_until(deadline) => {
                    self.on_ddn_timer(&s11).await;
                    None
                }
                _ = hup.recv() => {
                    self.sync_tunnels();
                    self.write_tunnels_file();
                    Some(Ctl::CreateBearers(self.read_bearer_requests()))
                }
                Some(c) = ctl_rx.recv() => Some(c),
            };
            match ctl {
                Some(Ctl::CreateBearers(reqs)) => self.create_bearers(&s11, &reqs).await,
                None => {}
            }
            // At once after a quiet spell, else at most every TUNNELS_COALESCE.
            if self.shared.tunnels_dirty.load(Ordering::SeqCst)
                && tunnels_written.elapsed() >= TUNNELS_COALESCE
            {
                self.write_tunnels_file();
                tunnels_written = Instant::now();
            }
        }
    }

    async fn on_s11(&self, sock: &UdpSocket, s1u: &UdpSocket, buf: &[u8], from: SocketAddr) {
        let out = self.core().handle_s11(buf, from, Instant::now());
        if out.changed {
            self.shared.tunnels_dirty.store(true, Ordering::SeqCst);
        }
        if let Some(reply) = out.reply {
            if let Err(e) = sock.send_to(&reply, from).await {
                warn!(%from, error = %e, "cannot send S11 response");
            }
        }
        for (gpdu, to) in out.downlink {
            send_gpdu(s1u, &gpdu, to).await;
        }
    }

    async fn on_ddn_timer(&self, s11: &UdpSocket) {
        let retransmit = self.core().on_timeout(Instant::now());
        for (ddn, to) in retransmit {
            debug!(%to, "S11 request retransmitted");
            send_request(s11, &ddn, to).await;
        }
    }

    async fn on_s1u(&self, sock: &UdpSocket, tun: Option<&Tun>, buf: &[u8], from: SocketAddr) {
        let action = self.core().handle_s1u(buf, from);
        match action {
            S1uAction::ToSgi(pkt) => match tun {
                Some(t) => {
                    if let Err(e) = t.send(pkt) {
                        debug!(error = %e, "uplink packet dropped at SGi");
                    }
                }
                None => debug!("uplink packet dropped: no SGi TUN"),
            },
            S1uAction::Reply(bytes, to) => {
                if let Err(e) = sock.send_to(&bytes, to).await {
                    debug!(%to, error = %e, "cannot send GTP-U reply");
                }
            }
            S1uAction::Changed => self.shared.tunnels_dirty.store(true, Ordering::SeqCst),
            S1uAction::Nothing => {}
        }
    }

    async fn on_sgi(&self, s11: &UdpSocket, s1u: &UdpSocket, pkt: &[u8]) {
        let out = self.core().handle_sgi(pkt, Instant::now());
        match out {
            SgiAction::ToEnb(gpdu, to) => send_gpdu(s1u, &gpdu, to).await,
            SgiAction::Notify(ddn, to) => send_request(s11, &ddn, to).await,
            SgiAction::Buffered => {}
            SgiAction::Nothing => debug!("downlink packet without tunnel dropped"),
        }
    }
}

async fn send_gpdu(s1u: &UdpSocket, gpdu: &[u8], to: SocketAddr) {
    if let Err(e) = s1u.send_to(gpdu, to).await {
        debug!(%to, error = %e, "downlink G-PDU not sent");
    }
}

/// One of our S11 requests (DDN, Create Bearer). A send error is only logged: the
/// Requester retransmits on T3 all the same.
async fn send_request(s11: &UdpSocket, req: &[u8], to: SocketAddr) {
    if let Err(e) = s11.send_to(req, to).await {
        warn!(%to, error = %e, "cannot send S11 request");
    }
}

/// Completes at `deadline`, or never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Reads from the TUN device, or never completes while it is released.
async fn recv_tun(tun: Option<&Tun>, buf: &mut [u8]) -> std::io::Result<usize> {
    match tun {
        Some(t) => t.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// The next delivery of a handled signal; never, when it is not handled.
/// Socket errors are logged and survived: a CRIU-restored UDP socket may return
/// EINTR once (see BRIEF facts). The short pause avoids a busy loop if an error
/// repeats.
async fn recv_error(what: &str, e: std::io::Error) {
    warn!(interface = what, error = %e, "receive error");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_toml() {
        let d = Config::default();
        assert_eq!(toml::from_str::<Config>("").unwrap(), d);
        assert_eq!(d.s11_bind, "0.0.0.0:2123".parse().unwrap());
        assert_eq!(d.s1u_bind, "0.0.0.0:2152".parse().unwrap());
        assert_eq!(d.s1u_address, Ipv4Addr::new(10, 77, 1, 30));
        assert_eq!((d.sgi_tun.as_str(), d.sgi_mtu), ("sgi0", 1400));
        let back: Config = toml::from_str(&toml::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let c: Config =
            toml::from_str("s1u_address = \"10.77.9.9\"\nrestore_tunnels_from = \"/x.json\"")
                .unwrap();
        assert_eq!(c.s1u_address, Ipv4Addr::new(10, 77, 9, 9));
        assert!(toml::from_str::<Config>("s1u_adress = \"10.0.0.1\"").is_err());
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        for (field, cfg) in [
            (
                "ue_pool",
                Config {
                    ue_pool: "10.45.0.0".into(),
                    ..Config::default()
                },
            ),
            (
                "ue_pool",
                Config {
                    ue_pool: "10.45.0.0/31".into(),
                    ..Config::default()
                },
            ),
            (
                "sgi_address",
                Config {
                    sgi_address: "10.45.0.1/40".into(),
                    ..Config::default()
                },
            ),
            (
                "sgi_mtu",
                Config {
                    sgi_mtu: 100,
                    ..Config::default()
                },
            ),
            (
                "ue_ipv6_pool",
                Config {
                    ue_ipv6_pool: Some("2001:db8:77::/64".into()),
                    ..Config::default()
                },
            ),
            (
                "ue_ipv6_pool",
                Config {
                    ue_ipv6_pool: Some("10.45.0.0/16".into()),
                    ..Config::default()
                },
            ),
        ] {
            let e = format!("{:#}", Spgw::new(cfg).err().expect("must fail"));
            assert!(e.contains(field), "{e}");
        }
        let missing = Config {
            restore_tunnels_from: Some("/nonexistent/tunnels.json".into()),
            ..Config::default()
        };
        let e = format!("{:#}", Spgw::new(missing).err().expect("must fail"));
        assert!(e.contains("restore_tunnels_from"), "{e}");
    }
}
