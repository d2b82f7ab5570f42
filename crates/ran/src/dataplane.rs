//! The eNBs' S1-U: one UDP socket per eNB address, shared by its UEs (eNBs configured
//! on one address share a socket: TEIDs are unique over the RAN). Uplink: each attached UE sends an
//! ICMP echo request from its IP to the ping target inside a G-PDU to its SGW F-TEID.
//! Downlink: G-PDUs are demultiplexed by TEID (the eNB's, one per UE) and echo replies
//! matched by ICMP id/sequence; GTP-U Echo Requests are answered (TS 29.281 §7.2.1).
//! A tunnel keeps its first eNB TEID as its key for the whole run; an idle UE has no
//! downlink TEID, and its next ping asks the UE to send a SERVICE REQUEST instead.
//! A handover moves a tunnel to another eNB's socket with a new TEID, same key.
//! Downlink datagrams of [`crate::downlink`] (UDP with [`DOWNLINK_MAGIC`]) are counted
//! per tunnel.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto_gtpu::icmp::{self, EchoKind};
use proto_gtpu::Gtpu;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::procedure::Control;

use crate::report::{Clock, Dropped, GapTracker, Series};

/// Sent pings remembered per UE for RTT matching; replies older than this many pings
/// are still counted, only without an RTT.
const RTT_SLOTS: usize = 4096;

/// First bytes of the payload of the downlink datagrams counted as received.
pub const DOWNLINK_MAGIC: &[u8] = b"corehop-dl";

/// One UE's tunnel and ping statistics.
struct Tunnel {
    /// Index of the eNB (and its socket) now serving the UE.
    enb: usize,
    /// The eNB's current downlink TEID; `None` while the UE is idle.
    enb_teid: Option<u32>,
    /// While idle: the TEID released with the UE, still known so that downlink the SGW
    /// sent before it learnt of the release is told apart from other strays.
    released_teid: Option<u32>,
    /// Downlink that arrived on `released_teid` (lost in the release race).
    late_downlink: u64,
    /// Set while idle: the UE to wake for uplink data, until woken once.
    wake: Option<mpsc::UnboundedSender<Control>>,
    /// A ping that woke the UE: held as a UE holds uplink data until its bearer is back,
    /// and sent then.
    held: bool,
    ue_ip: Ipv4Addr,
    sgw: SocketAddr,
    sgw_teid: u32,
    icmp_id: u16,
    next_seq: u16,
    sent: u64,
    received: u64,
    rtt_sum: Duration,
    rtt_max: Duration,
    rtt_n: u64,
    /// (seq, sent at) by `seq % RTT_SLOTS`; taken on the first reply so duplicates do
    /// not count twice.
    in_flight: Vec<Option<(u16, Instant)>>,
    gaps: GapTracker,
    pinging: bool,
    downlink_received: u64,
}

/// Final statistics of one tunnel.
#[derive(Debug, Clone)]
pub struct PingStats {
    pub sent: u64,
    pub received: u64,
    pub rtt_ms_avg: Option<f64>,
    pub rtt_ms_max: Option<f64>,
    pub series: Series,
    /// Datagrams of the downlink traffic that reached the UE.
    pub downlink_received: u64,
}

#[derive(Default)]
struct State {
    /// By the tunnel's key (its first eNB TEID).
    tunnels: HashMap<u32, Tunnel>,
    /// Current eNB TEID → key, for the downlink.
    by_teid: HashMap<u32, u32>,
    next_teid: u32,
    dropped: Dropped,
}

/// Shared handle to the S1-U endpoint.
#[derive(Clone)]
pub struct DataPlane {
    /// One per distinct S1-U address.
    socks: Arc<Vec<UdpSocket>>,
    /// By eNB index: its socket's index in `socks`.
    sock_of: Arc<Vec<usize>>,
    state: Arc<Mutex<State>>,
    clock: Clock,
    target: Ipv4Addr,
    payload: Vec<u8>,
    gap_threshold: Duration,
}

impl DataPlane {
    /// The eNBs' sockets, at `addrs` in eNB order; equal addresses share one (port 0
    /// always gets a socket of its own).
    pub async fn bind(
        addrs: &[SocketAddr],
        clock: Clock,
        target: Ipv4Addr,
        payload_len: usize,
        interval: Duration,
    ) -> anyhow::Result<DataPlane> {
        let mut socks = Vec::new();
        let mut sock_of = Vec::new();
        let mut bound: Vec<SocketAddr> = Vec::new();
        for addr in addrs {
            if let Some(i) = bound.iter().position(|b| b == addr && addr.port() != 0) {
                sock_of.push(i);
                continue;
            }
            sock_of.push(socks.len());
            bound.push(*addr);
            socks.push(
                UdpSocket::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot bind the eNB's GTP-U socket {addr}: {e}")
                })?,
            );
        }
        Ok(DataPlane {
            socks: Arc::new(socks),
            sock_of: Arc::new(sock_of),
            state: Arc::new(Mutex::new(State {
                next_teid: 1,
                ..Default::default()
            })),
            clock,
            target,
            payload: (0..payload_len).map(|i| i as u8).collect(),
            // An outage is a gap that is clearly more than a lost ping or two.
            gap_threshold: (interval * 3).max(Duration::from_millis(10)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way
        // that matters for statistics; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh eNB TEID (unique within this run).
    pub fn allocate_teid(&self) -> u32 {
        let mut s = self.lock();
        let t = s.next_teid;
        s.next_teid = s.next_teid.wrapping_add(1).max(1);
        t
    }

    /// Registers an attached UE's tunnel at eNB `enb`; pings start with the next tick.
    pub fn add(&self, enb: usize, enb_teid: u32, ue_ip: Ipv4Addr, sgw: SocketAddr, sgw_teid: u32) {
        let now = Instant::now();
        let mut s = self.lock();
        s.by_teid.insert(enb_teid, enb_teid);
        s.tunnels.insert(
            enb_teid,
            Tunnel {
                enb,
                enb_teid: Some(enb_teid),
                released_teid: None,
                late_downlink: 0,
                wake: None,
                held: false,
                ue_ip,
                sgw,
                sgw_teid,
                // ICMP ids distinguish our UEs in captures; the TEID already demuxes.
                icmp_id: enb_teid as u16,
                next_seq: 0,
                sent: 0,
                received: 0,
                rtt_sum: Duration::ZERO,
                rtt_max: Duration::ZERO,
                rtt_n: 0,
                in_flight: vec![None; RTT_SLOTS],
                gaps: GapTracker::new(self.clock, now, self.gap_threshold),
                pinging: true,
                downlink_received: 0,
            },
        );
    }

    /// The UE of tunnel `key` went idle: its TEID is forgotten (downlink to it is
    /// dropped, as at an eNB without the context) and its next ping wakes `wake`; with
    /// `None` pings skip the idle UE (a traffic model decides when it has uplink data).
    pub fn suspend(&self, key: u32, wake: Option<mpsc::UnboundedSender<Control>>) {
        let mut s = self.lock();
        let Some(t) = s.tunnels.get_mut(&key) else {
            return;
        };
        t.wake = wake;
        if let Some(old) = t.enb_teid.take() {
            if let Some(older) = t.released_teid.replace(old) {
                s.by_teid.remove(&older);
            }
        }
    }

    /// Tunnel `key` is connected again at eNB `enb` (service request, handover, or a new
    /// attach: then with a new IP and SGW tunnel), statistics kept.
    pub fn resume(
        &self,
        key: u32,
        enb: usize,
        enb_teid: u32,
        ue_ip: Ipv4Addr,
        sgw: SocketAddr,
        sgw_teid: u32,
    ) {
        let mut s = self.lock();
        let Some(t) = s.tunnels.get_mut(&key) else {
            return;
        };
        t.wake = None;
        t.enb = enb;
        let old = t.enb_teid.replace(enb_teid).or(t.released_teid.take());
        (t.ue_ip, t.sgw, t.sgw_teid) = (ue_ip, sgw, sgw_teid);
        let held = std::mem::take(&mut t.held).then(|| self.echo_request(t, Instant::now()));
        if let Some(old) = old {
            s.by_teid.remove(&old);
        }
        s.by_teid.insert(enb_teid, key);
        drop(s);
        // The socket never blocks for one datagram; a full buffer loses the ping, which
        // the statistics then show.
        if let Some(Some((pkt, to))) = held {
            if let Err(e) = self.socks[self.sock_of[enb]].try_send_to(&pkt, to) {
                debug!(%to, "held ping not sent: {e}");
            }
        }
    }

    /// The next echo request of `t` as a G-PDU to its SGW, counted as sent.
    fn echo_request(&self, t: &mut Tunnel, now: Instant) -> Option<(Vec<u8>, SocketAddr)> {
        let seq = t.next_seq;
        t.next_seq = seq.wrapping_add(1);
        let pkt = match icmp::echo_request(t.ue_ip, self.target, t.icmp_id, seq, &self.payload)
            .and_then(|p| proto_gtpu::encode_gpdu(t.sgw_teid, &p))
        {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot build ping: {e}");
                return None;
            }
        };
        t.sent += 1;
        t.in_flight[seq as usize % RTT_SLOTS] = Some((seq, now));
        Some((pkt, t.sgw))
    }

    /// Uplink data is waiting at the idle UE of tunnel `key`: one ping goes once the
    /// bearer is back ([`DataPlane::resume`]).
    pub fn hold_ping(&self, key: u32) {
        if let Some(t) = self.lock().tunnels.get_mut(&key) {
            t.held = true;
        }
    }

    /// Downlink packets that reached tunnel `key` on its released TEID so far.
    pub fn late_downlink(&self, key: u32) -> u64 {
        self.lock().tunnels.get(&key).map_or(0, |t| t.late_downlink)
    }

    /// The current eNB TEID of tunnel `key` (`None` while idle).
    pub fn enb_teid(&self, key: u32) -> Option<u32> {
        self.lock().tunnels.get(&key).and_then(|t| t.enb_teid)
    }

    /// The UE's IP on tunnel `key`.
    pub fn ue_ip(&self, key: u32) -> Option<Ipv4Addr> {
        self.lock().tunnels.get(&key).map(|t| t.ue_ip)
    }

    /// Stops pinging on all tunnels (before detach), keeping the statistics.
    pub fn stop_pinging(&self) {
        for t in self.lock().tunnels.values_mut() {
            t.pinging = false;
        }
    }

    /// Removes a tunnel and returns its statistics, the open gap closed at `end`.
    pub fn remove(&self, key: u32, end: Instant) -> Option<PingStats> {
        let mut s = self.lock();
        let t = s.tunnels.remove(&key)?;
        for teid in t.enb_teid.iter().chain(&t.released_teid) {
            s.by_teid.remove(teid);
        }
        drop(s);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Some(PingStats {
            sent: t.sent,
            received: t.received,
            rtt_ms_avg: (t.rtt_n > 0).then(|| ms(t.rtt_sum) / t.rtt_n as f64),
            rtt_ms_max: (t.rtt_n > 0).then(|| ms(t.rtt_max)),
            series: t.gaps.finish(end),
            downlink_received: t.downlink_received,
        })
    }

    pub fn dropped(&self) -> Dropped {
        self.lock().dropped.clone()
    }

    /// Sends one echo request per pinging UE every `interval` until the task is dropped.
    /// The UEs are spread over the interval in 10 ms slots (by TEID): real UEs are not in
    /// step, and a thousand pings in one burst would overflow the SGW's and our own socket
    /// buffers, measuring the burst instead of the network.
    pub async fn ping_loop(self, interval: Duration) {
        const SLOT: Duration = Duration::from_millis(10);
        let slots = (interval.as_millis() / SLOT.as_millis()).max(1) as u32;
        let mut tick = tokio::time::interval(interval / slots);
        // After a stall (e.g. the CPU busy) do not burst the missed pings.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch = Vec::new();
        let mut slot = 0u32;
        loop {
            tick.tick().await;
            let now = Instant::now();
            {
                let mut s = self.lock();
                for (_, t) in s
                    .tunnels
                    .iter_mut()
                    .filter(|(key, t)| t.pinging && *key % slots == slot)
                {
                    if t.enb_teid.is_none() {
                        // Idle: uplink data makes the UE ask for its bearer first, and
                        // goes once it is back (`resume`).
                        if let Some(w) = t.wake.take() {
                            t.held = w.send(Control::Uplink).is_ok();
                        }
                        continue;
                    }
                    let enb = t.enb;
                    batch.extend(self.echo_request(t, now).map(|p| (enb, p)));
                }
            }
            slot = (slot + 1) % slots;
            for (enb, (pkt, to)) in batch.drain(..) {
                if let Err(e) = self.socks[self.sock_of[enb]].send_to(&pkt, to).await {
                    // Unreachable SGW (migrating): the ping is lost, which is the measurement.
                    debug!(%to, "GTP-U send failed: {e}");
                }
            }
        }
    }

    /// How many sockets there are (see [`DataPlane::recv_loop`]).
    pub fn sockets(&self) -> usize {
        self.socks.len()
    }

    /// Receives socket `sock`'s S1-U traffic until the task is dropped.
    pub async fn recv_loop(self, sock: usize) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = match self.socks[sock].recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable etc. surface here; keep receiving.
                    debug!("GTP-U receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            };
            self.handle(sock, &buf[..n], from).await;
        }
    }

    /// One datagram received on socket `sock`.
    async fn handle(&self, sock: usize, datagram: &[u8], from: SocketAddr) {
        let now = Instant::now();
        match proto_gtpu::decode(datagram) {
            Ok(Gtpu::GPdu { teid, payload, .. }) => self.on_gpdu(teid, payload, now),
            Ok(Gtpu::EchoRequest { seq }) => {
                // Restart counter 0: TS 29.281 §8.2 (GTP-U does not use it).
                if let Ok(r) = (Gtpu::EchoResponse { seq, recovery: 0 }).encode() {
                    if let Err(e) = self.socks[sock].send_to(&r, from).await {
                        debug!(%from, "GTP-U Echo Response not sent: {e}");
                    }
                }
            }
            Ok(Gtpu::ErrorIndication { teid, peer }) => {
                warn!(%peer, teid, "GTP-U Error Indication: the SGW does not know our uplink tunnel");
                self.lock().dropped.gtpu_error_indications += 1;
            }
            Ok(other) => debug!(%from, "GTP-U {other:?} ignored"),
            Err(e) => {
                debug!(%from, "malformed GTP-U dropped: {e}");
                self.lock().dropped.gtpu += 1;
            }
        }
    }

    fn on_gpdu(&self, teid: u32, payload: &[u8], now: Instant) {
        let mut s = self.lock();
        let Some(t) = s
            .by_teid
            .get(&teid)
            .copied()
            .and_then(|k| s.tunnels.get_mut(&k))
        else {
            debug!(teid, "G-PDU for an unknown eNB TEID dropped");
            s.dropped.gtpu_unknown_teid += 1;
            return;
        };
        if t.enb_teid != Some(teid) {
            // Sent before the SGW knew of the release: an eNB without the context drops it.
            t.late_downlink += 1;
            s.dropped.gtpu_unknown_teid += 1;
            return;
        }
        if is_downlink_datagram(payload, t.ue_ip) {
            t.downlink_received += 1;
            return;
        }
        let echo = match icmp::parse_echo(payload) {
            Ok(e)
                if e.kind == EchoKind::Reply
                    && e.dst == IpAddr::V4(t.ue_ip)
                    && e.id == t.icmp_id =>
            {
                e
            }
            // Other downlink traffic to the UE is not ours to judge.
            Ok(_) => return,
            Err(e) => {
                debug!(teid, "downlink packet that is not an ICMP echo: {e}");
                return;
            }
        };
        let slot = &mut t.in_flight[echo.seq as usize % RTT_SLOTS];
        match *slot {
            Some((seq, sent_at)) if seq == echo.seq => {
                *slot = None;
                let rtt = now.saturating_duration_since(sent_at);
                t.rtt_sum += rtt;
                t.rtt_max = t.rtt_max.max(rtt);
                t.rtt_n += 1;
            }
            // Duplicate of an answered ping: ignore entirely.
            None => return,
            // Too old to be in the table any more; still a sign of life.
            Some(_) => {}
        }
        t.received += 1;
        t.gaps.ok(now);
    }
}

/// An IPv4/UDP packet to `ue` whose payload starts with [`DOWNLINK_MAGIC`].
fn is_downlink_datagram(packet: &[u8], ue: Ipv4Addr) -> bool {
    let Some(&vihl) = packet.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    vihl >> 4 == 4
        && packet.get(9) == Some(&17)
        && icmp::ipv4_destination(packet) == Some(ue)
        && packet
            .get(ihl + 8..)
            .is_some_and(|p| p.starts_with(DOWNLINK_MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data plane of `enbs` eNBs on loopback pinging 10.45.0.1 every 10 ms, and a
    /// socket standing in for the SGW.
    async fn setup(enbs: usize) -> (DataPlane, UdpSocket, SocketAddr) {
        let any = "127.0.0.1:0".parse().unwrap();
        let dp = DataPlane::bind(
            &vec![any; enbs],
            Clock::new(),
            Ipv4Addr::new(10, 45, 0, 1),
            8,
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        let sgw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sgw_addr = sgw.local_addr().unwrap();
        (dp, sgw, sgw_addr)
    }

    #[tokio::test]
    async fn replies_counted_once_echo_answered_garbage_dropped() {
        let target = Ipv4Addr::new(10, 45, 0, 1);
        let ue = Ipv4Addr::new(10, 45, 0, 2);
        let (dp, sgw, sgw_addr) = setup(1).await;
        let teid = dp.allocate_teid();
        dp.add(0, teid, ue, sgw_addr, 0x99);
        tokio::spawn(dp.clone().ping_loop(Duration::from_millis(10)));
        // The first ping reaches the "SGW" on its TEID.
        let mut buf = vec![0u8; 2048];
        let (n, _) = sgw.recv_from(&mut buf).await.unwrap();
        let Ok(Gtpu::GPdu {
            teid: 0x99,
            payload,
            ..
        }) = proto_gtpu::decode(&buf[..n])
        else {
            panic!("not a G-PDU on the SGW TEID")
        };
        let req = icmp::parse_echo(payload).unwrap();
        assert_eq!(
            (req.src, req.dst, req.kind),
            (IpAddr::V4(ue), IpAddr::V4(target), EchoKind::Request)
        );
        let reply = proto_gtpu::encode_gpdu(teid, &req.reply().encode().unwrap()).unwrap();
        dp.handle(0, &reply, sgw_addr).await;
        dp.handle(0, &reply, sgw_addr).await; // duplicate
        dp.handle(0, b"\x30\xff\x00", sgw_addr).await; // truncated
        let stray = proto_gtpu::encode_gpdu(teid + 7, &req.reply().encode().unwrap()).unwrap();
        dp.handle(0, &stray, sgw_addr).await;
        // GTP-U Echo Request is answered to its sender.
        let echo = Gtpu::EchoRequest { seq: 9 }.encode().unwrap();
        dp.handle(0, &echo, sgw_addr).await;
        loop {
            let (n, _) = sgw.recv_from(&mut buf).await.unwrap();
            if let Ok(Gtpu::EchoResponse { seq: 9, .. }) = proto_gtpu::decode(&buf[..n]) {
                break;
            }
        }
        let d = dp.dropped();
        assert_eq!((d.gtpu, d.gtpu_unknown_teid), (1, 1));
        dp.stop_pinging();
        let st = dp.remove(teid, Instant::now()).unwrap();
        assert_eq!(st.received, 1);
        assert!(st.sent >= 1 && st.rtt_ms_avg.is_some());
        assert!(dp.remove(teid, Instant::now()).is_none());
    }

    /// Idle: the old TEID is unknown, a ping tick wakes the UE once instead of sending;
    /// connected again on a new TEID and SGW tunnel, the statistics continue.
    #[tokio::test]
    async fn idle_tunnel_wakes_its_ue_and_resumes_on_a_new_teid() {
        let ue = Ipv4Addr::new(10, 45, 0, 2);
        let (dp, sgw, sgw_addr) = setup(1).await;
        let key = dp.allocate_teid();
        dp.add(0, key, ue, sgw_addr, 0x99);
        let (wake, mut woken) = mpsc::unbounded_channel();
        dp.suspend(key, Some(wake));
        let reply = |teid, seq| {
            let req =
                icmp::echo_request(Ipv4Addr::new(10, 45, 0, 1), ue, key as u16, seq, &[]).unwrap();
            proto_gtpu::encode_gpdu(teid, &req).unwrap()
        };
        dp.handle(0, &reply(key, 0), sgw_addr).await;
        assert_eq!(dp.dropped().gtpu_unknown_teid, 1, "idle: no downlink TEID");
        assert_eq!(dp.late_downlink(key), 1, "on the released TEID");
        tokio::spawn(dp.clone().ping_loop(Duration::from_millis(10)));
        assert_eq!(woken.recv().await, Some(Control::Uplink));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(woken.try_recv().is_err(), "woken once");
        let mut buf = vec![0u8; 2048];
        assert!(
            tokio::time::timeout(Duration::from_millis(1), sgw.recv_from(&mut buf))
                .await
                .is_err(),
            "no uplink while idle"
        );
        let teid = dp.allocate_teid();
        dp.resume(key, 0, teid, ue, sgw_addr, 0x9a);
        let (n, _) = sgw.recv_from(&mut buf).await.unwrap();
        assert!(matches!(
            proto_gtpu::decode(&buf[..n]),
            Ok(Gtpu::GPdu { teid: 0x9a, .. })
        ));
        dp.handle(0, &reply(key, 0), sgw_addr).await;
        assert_eq!(
            dp.dropped().gtpu_unknown_teid,
            2,
            "the old TEID stays unknown"
        );
        dp.stop_pinging();
        let st = dp.remove(key, Instant::now()).unwrap();
        assert!(st.sent >= 1);
    }

    /// Downlink datagrams of the pdn host are counted per tunnel (other UDP is not); a
    /// tunnel moved to another eNB (handover) pings from that eNB's socket.
    #[tokio::test]
    async fn downlink_counted_and_tunnel_moves_between_enbs() {
        let ue = Ipv4Addr::new(10, 45, 0, 2);
        let (dp, sgw, sgw_addr) = setup(2).await;
        let key = dp.allocate_teid();
        dp.add(0, key, ue, sgw_addr, 0x99);
        let udp = |payload: &[u8]| {
            let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 31];
            p.extend_from_slice(&ue.octets());
            p.extend_from_slice(&[0, 9, 0, 9, 0, 0, 0, 0]);
            p.extend_from_slice(payload);
            proto_gtpu::encode_gpdu(key, &p).unwrap()
        };
        let mut dl = DOWNLINK_MAGIC.to_vec();
        dl.extend_from_slice(&7u64.to_be_bytes());
        dp.handle(0, &udp(&dl), sgw_addr).await;
        dp.handle(0, &udp(b"other traffic"), sgw_addr).await;
        let teid = dp.allocate_teid();
        dp.resume(key, 1, teid, ue, sgw_addr, 0x9a);
        assert_eq!(dp.enb_teid(key), Some(teid));
        tokio::spawn(dp.clone().ping_loop(Duration::from_millis(10)));
        let mut buf = vec![0u8; 2048];
        let (_, from) = sgw.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            from,
            dp.socks[1].local_addr().unwrap(),
            "from eNB 1's socket"
        );
        dp.stop_pinging();
        assert_eq!(dp.remove(key, Instant::now()).unwrap().downlink_received, 1);
    }
}
