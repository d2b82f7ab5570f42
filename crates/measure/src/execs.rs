//! Every program started on the machine (exec events) during a time window, from the
//! Linux process connector (netlink `NETLINK_CONNECTOR`, group `CN_IDX_PROC`). A migration
//! report uses it to say how many processes were started inside the frozen window (the
//! goal is none but CRIU's own) and which.
//!
//! Written by hand over `libc` rather than with a crate: `cnproc` 0.2 reads kernel bytes
//! through unchecked pointer casts, spins forever on an `NLMSG_ERROR` message and sets
//! `NETLINK_NO_ENOBUFS`, which hides exactly the overruns a report must count;
//! `proc-connector` 0.3 is careful but only months old, needs Rust 1.85 (edition 2024,
//! above this workspace's `rust-version`) and blocks without a timeout for the subscription
//! acknowledgement, which never comes outside the initial PID/user namespaces. The exchange
//! itself is one request and one fixed-layout message type.
//!
//! Times: an exec is placed at the kernel's own timestamp for it (`ktime_get_ns`, i.e.
//! CLOCK_MONOTONIC, the clock `Instant` reads on Linux), so an exec lands on the right side
//! of a window edge however late this thread gets to read it. That mapping is checked once
//! at start against the subscription acknowledgement; if it is off (e.g. this process
//! lives in a time namespace) receive times are used instead, and callers should then widen
//! their window by a few ms. [`ExecRecorder::between`] first makes the listener empty the
//! socket, so an exec that happened before `b` is not missed because it was still queued.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// uapi: linux/netlink.h, linux/connector.h, linux/cn_proc.h.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// struct cn_msg: cb_id {idx, val}, seq, ack, len (u16), flags (u16), then data.
const CN_MSG_LEN: usize = 20;
/// struct proc_event up to event_data: what, cpu, timestamp_ns (u64).
const PROC_EVENT_HDR: usize = 16;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_EXEC: u32 = 2;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;

/// How long the kernel gets to acknowledge the subscription. It answers synchronously
/// inside our send, so this only bounds a stalled machine.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `between` waits for the listener to catch up before answering with what it has.
const SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// Room for bursts while the listener reads /proc: exec messages are ~76 bytes but each
/// costs an skb (~1 KiB) of receive-buffer accounting.
const RCVBUF: libc::c_int = 8 << 20;
/// Records handed over at once during a burst, so `between` never waits on a long drain.
const BATCH: usize = 64;

/// One program start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exec {
    /// Process id (thread-group id) in the initial PID namespace.
    pub pid: u32,
    /// /proc/<pid>/comm read when the event arrived, else the name of /proc/<pid>/exe,
    /// else "?" (the process was already reaped); the exec is counted either way.
    pub comm: String,
    /// Its parent, grandparent... read when the event arrived (empty if it was gone), so a
    /// caller can tell its own programs from the rest of a shared machine's.
    pub ancestors: Vec<u32>,
}

impl Exec {
    /// Whether it is one of `roots` or their descendant; one whose ancestry could not be
    /// read counts as theirs, so nothing of theirs is missed.
    pub fn started_by(&self, roots: &[u32]) -> bool {
        self.ancestors.is_empty()
            || roots.contains(&self.pid)
            || self.ancestors.iter().any(|a| roots.contains(a))
    }
}

/// Records every exec on the machine from `start` until dropped.
///
/// Memory grows by one small record per exec for the recorder's life; keep one per
/// migration or per run, not per machine lifetime.
pub struct ExecRecorder {
    shared: Arc<Shared>,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    drained: Condvar,
    overruns: AtomicU64,
}

struct State {
    records: Vec<(Instant, Exec)>,
    /// The socket was empty when read at this instant: every exec before it is recorded.
    drained_at: Instant,
    stop: bool,
    running: bool,
    failure: Option<String>,
}

impl ExecRecorder {
    /// Subscribes to the process connector and starts the listening thread. Fails with an
    /// explanation outside the initial network, PID and user namespaces, on a kernel
    /// without CONFIG_PROC_EVENTS, or without CAP_NET_ADMIN where the kernel demands it
    /// (recent kernels, e.g. 6.18 here, let any user listen).
    pub fn start() -> Result<ExecRecorder> {
        let sock = open_socket()?;
        let mut buf = vec![0u8; 16 << 10];
        let overruns = AtomicU64::new(0);

        // Unfiltered first: on kernels >= 6.6 the acknowledgement (what = NONE) is dropped
        // for a socket that filters on EXEC, and we want the acknowledgement as proof.
        let nonce = nonce();
        send_control(&sock, &PROC_CN_MCAST_LISTEN.to_ne_bytes(), nonce).map_err(|e| {
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                anyhow!(
                    "proc connector: not reachable from this network namespace (it serves \
                     only the initial one): {e}"
                )
            } else {
                anyhow!("proc connector: subscribing failed: {e}")
            }
        })?;
        let mut early = Vec::new();
        let deadline = Instant::now() + ACK_TIMEOUT;
        let (err, ack_ts, ack_received) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "proc connector: no answer to PROC_CN_MCAST_LISTEN within {ACK_TIMEOUT:?} \
                     (kernel without CONFIG_PROC_EVENTS, or this process is not in the \
                     initial PID and user namespaces)"
                );
            }
            if !poll_in(sock.as_raw_fd(), None, Some(left))?.0 {
                continue;
            }
            let n = match recv_kernel(&sock, &mut buf) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    overruns.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) if transient(&e) => continue,
                Err(e) => bail!("proc connector: receive failed: {e}"),
            };
            let received = Instant::now();
            let mut ack = None;
            for m in parse(&buf[..n]) {
                match m {
                    Msg::Exec { pid, ts_ns } => early.push((pid, ts_ns, received)),
                    Msg::Ack { ack: a, err, ts_ns } if a == nonce.wrapping_add(1) => {
                        ack = Some((err, ts_ns, received))
                    }
                    Msg::Ack { .. } => {}
                    Msg::Overrun => {
                        overruns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Some(a) = ack {
                break a;
            }
        };
        if err != 0 {
            bail!(
                "proc connector refused the subscription: {}",
                io::Error::from_raw_os_error(err as i32)
            );
        }
        let clock = MonoClock::calibrated(ack_ts, ack_received);

        // Now narrow to execs (kernels >= 6.6 filter in the kernel; older ones ignore this
        // 8-byte form and keep sending everything, which `parse` skips).
        let mut filtered = [0u8; 8];
        filtered[..4].copy_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        filtered[4..].copy_from_slice(&PROC_EVENT_EXEC.to_ne_bytes());
        send_control(&sock, &filtered, 0)
            .map_err(|e| anyhow!("proc connector: setting the exec filter failed: {e}"))?;

        let wake = Arc::new(eventfd()?);
        let records = early
            .into_iter()
            .map(|(pid, ts, received)| clock.record(pid, ts, received))
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                records,
                drained_at: ack_received,
                stop: false,
                running: true,
                failure: None,
            }),
            drained: Condvar::new(),
            overruns,
        });
        let listener = Listener {
            sock,
            wake: wake.clone(),
            shared: shared.clone(),
            clock,
            buf,
        };
        let thread = std::thread::Builder::new()
            .name("exec-recorder".into())
            .spawn(move || listener.run())?;
        Ok(ExecRecorder {
            shared,
            wake,
            thread: Some(thread),
        })
    }

    /// Execs whose time (see the module doc) lies in `a..=b`, in time order, as (pid,
    /// program name). Returns once every exec up to `min(b, now)` has been read (or after
    /// one second if the listener cannot catch up; then `overruns` is likely non-zero).
    pub fn between(&self, a: Instant, b: Instant) -> Vec<Exec> {
        self.between_timed(a, b)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Like `between`, with each exec's time, to place them inside the window.
    pub fn between_timed(&self, a: Instant, b: Instant) -> Vec<(Instant, Exec)> {
        let target = b.min(Instant::now());
        let mut st = self.shared.lock();
        if st.drained_at < target && st.running {
            poke(&self.wake);
            st = self
                .shared
                .drained
                .wait_timeout_while(st, SYNC_TIMEOUT, |s| s.drained_at < target && s.running)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut v: Vec<_> = st
            .records
            .iter()
            .filter(|(t, _)| a <= *t && *t <= b)
            .cloned()
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }

    /// Times the kernel reported dropping messages for lack of receive buffer (ENOBUFS; each
    /// may stand for several lost execs): if non-zero, counts from `between` may be low.
    pub fn overruns(&self) -> u64 {
        self.shared.overruns.load(Ordering::Relaxed)
    }

    /// Why the listener stopped early, if it did (then nothing after that is recorded).
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().failure.clone()
    }
}

impl Drop for ExecRecorder {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        poke(&self.wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The listener never panics while holding it; if it did, its data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Listener {
    sock: OwnedFd,
    wake: Arc<OwnedFd>,
    shared: Arc<Shared>,
    clock: MonoClock,
    buf: Vec<u8>,
}

impl Listener {
    fn run(mut self) {
        let failure = loop {
            let woken = match poll_in(self.sock.as_raw_fd(), Some(self.wake.as_raw_fd()), None) {
                Ok((_, woken)) => woken,
                Err(e) => break Some(format!("poll: {e}")),
            };
            if woken {
                let mut v = [0u8; 8];
                // Non-blocking eventfd: only resets the counter.
                let _ = unsafe { libc::read(self.wake.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
            }
            if self.shared.lock().stop {
                break None;
            }
            if let Err(e) = self.drain() {
                break Some(format!("receive: {e}"));
            }
        };
        // Lets the kernel stop generating events once nobody listens (closing the socket
        // alone does not lower its listener count).
        let _ = send_control(&self.sock, &PROC_CN_MCAST_IGNORE.to_ne_bytes(), 0);
        let mut st = self.shared.lock();
        st.running = false;
        st.failure = failure;
        self.shared.drained.notify_all();
    }

    /// Reads until the socket is empty, then marks the instant it was seen empty.
    fn drain(&mut self) -> io::Result<()> {
        let mut batch = Vec::new();
        let drained_at = loop {
            let before = Instant::now();
            let n = match recv_kernel(&self.sock, &mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break before,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The socket stays usable; what was lost is only counted.
                    self.shared.overruns.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(e),
            };
            let received = Instant::now();
            for m in parse(&self.buf[..n]) {
                match m {
                    Msg::Exec { pid, ts_ns } => batch.push(self.clock.record(pid, ts_ns, received)),
                    Msg::Overrun => {
                        self.shared.overruns.fetch_add(1, Ordering::Relaxed);
                    }
                    Msg::Ack { .. } => {}
                }
            }
            if batch.len() >= BATCH {
                self.shared.lock().records.append(&mut batch);
            }
        };
        let mut st = self.shared.lock();
        st.records.append(&mut batch);
        st.drained_at = st.drained_at.max(drained_at);
        self.shared.drained.notify_all();
        Ok(())
    }
}

/// Maps connector timestamps (CLOCK_MONOTONIC ns) onto `Instant`, or falls back to
/// receive times when the two clocks disagree.
#[derive(Clone, Copy)]
struct MonoClock {
    base: Option<(Instant, u64)>,
}

impl MonoClock {
    /// `ack_ts` was stamped by the kernel inside our send, just before `ack_received`.
    fn calibrated(ack_ts: u64, ack_received: Instant) -> MonoClock {
        let base = Instant::now();
        let Some(base_ns) = monotonic_ns() else {
            return MonoClock { base: None };
        };
        let clock = MonoClock {
            base: Some((base, base_ns)),
        };
        match clock.kernel(ack_ts) {
            Some(t)
                if t <= ack_received + Duration::from_millis(1)
                    && ack_received.saturating_duration_since(t) < Duration::from_millis(500) =>
            {
                clock
            }
            _ => MonoClock { base: None },
        }
    }

    fn kernel(&self, ts_ns: u64) -> Option<Instant> {
        let (base, base_ns) = self.base?;
        if ts_ns >= base_ns {
            base.checked_add(Duration::from_nanos(ts_ns - base_ns))
        } else {
            base.checked_sub(Duration::from_nanos(base_ns - ts_ns))
        }
    }

    fn record(&self, pid: u32, ts_ns: u64, received: Instant) -> (Instant, Exec) {
        let at = self.kernel(ts_ns).unwrap_or(received);
        (
            at,
            Exec {
                pid,
                comm: program_name(pid),
                ancestors: ancestors(pid),
            },
        )
    }
}

fn monotonic_ns() -> Option<u64> {
    let mut ts: libc::timespec = unsafe { zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// Read right when the event arrives, while the process (or its zombie) still exists.
fn program_name(pid: u32) -> String {
    if let Ok(b) = std::fs::read(format!("/proc/{pid}/comm")) {
        let s = String::from_utf8_lossy(&b);
        let s = s.trim_end_matches('\n');
        if !s.is_empty() {
            return s.to_string();
        }
    }
    if let Ok(p) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(n) = p.file_name() {
            return n.to_string_lossy().into_owned();
        }
    }
    "?".to_string()
}

/// The parent chain of `pid` up to init (pid 1, included), nearest first; empty if the
/// process was gone.
fn ancestors(pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut at = pid;
    // Bounded: a chain read while processes exit and pids are reused could loop.
    while chain.len() < 64 {
        match parent(at) {
            Some(p) if p > 0 => {
                chain.push(p);
                if p == 1 {
                    break;
                }
                at = p;
            }
            _ => break,
        }
    }
    chain
}

/// `ppid` of /proc/<pid>/stat: the field after the state, which follows the last ')' (a
/// program's name may hold parentheses and spaces).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What the listener cares about in a received datagram.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Exec { pid: u32, ts_ns: u64 },
    Ack { ack: u32, err: u32, ts_ns: u64 },
    Overrun,
}

/// Parses the netlink messages of one datagram, skipping anything malformed, foreign or of
/// other event types. Bounds are checked on every read: these bytes come from the kernel.
fn parse(buf: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(hdr) = buf.get(off..off + NLMSG_HDRLEN) {
        let len = u32_at(hdr, 0).unwrap_or(0) as usize;
        // A length we cannot trust ends the datagram: nothing after it can be framed.
        if len < NLMSG_HDRLEN {
            break;
        }
        let Some(msg) = off.checked_add(len).and_then(|end| buf.get(off..end)) else {
            break;
        };
        match u16_at(hdr, 4).unwrap_or(0) {
            NLMSG_NOOP | NLMSG_ERROR => {}
            NLMSG_OVERRUN => out.push(Msg::Overrun),
            // The connector sends its data as NLMSG_DONE; accept any data type anyway.
            _ => out.extend(parse_cn(&msg[NLMSG_HDRLEN..])),
        }
        // NLMSG_ALIGN
        off += (len + 3) & !3;
    }
    out
}

fn parse_cn(cn: &[u8]) -> Option<Msg> {
    if u32_at(cn, 0)? != CN_IDX_PROC || u32_at(cn, 4)? != CN_VAL_PROC {
        return None;
    }
    let ack = u32_at(cn, 12)?;
    let data_len = u16_at(cn, 16)? as usize;
    let ev = cn.get(CN_MSG_LEN..CN_MSG_LEN + data_len)?;
    let what = u32_at(ev, 0)?;
    let ts_ns = u64_at(ev, 8)?;
    let data = ev.get(PROC_EVENT_HDR..)?;
    match what {
        PROC_EVENT_EXEC => {
            // exec_proc_event { process_pid, process_tgid }: the tgid is what Child::id()
            // and /proc name (after exec they are equal anyway).
            let tgid = i32::from_ne_bytes(data.get(4..8)?.try_into().ok()?);
            Some(Msg::Exec {
                pid: u32::try_from(tgid).ok().filter(|p| *p > 0)?,
                ts_ns,
            })
        }
        PROC_EVENT_NONE => Some(Msg::Ack {
            ack,
            err: u32_at(data, 0)?,
            ts_ns,
        }),
        _ => None,
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Builds one connector control message (nlmsghdr + cn_msg + payload).
fn control_message(payload: &[u8], ack: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + CN_MSG_LEN + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel does not need it
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&ack.to_ne_bytes()); // echoed back + 1 in the acknowledgement
    m.extend_from_slice(&(payload.len() as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(payload);
    m
}

fn send_control(sock: &OwnedFd, payload: &[u8], ack: u32) -> io::Result<()> {
    let m = control_message(payload, ack);
    let kernel = nl_addr(0);
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            m.as_ptr().cast(),
            m.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn nl_addr(groups: u32) -> libc::sockaddr_nl {
    // Zeroed: sockaddr_nl has private padding in libc.
    let mut a: libc::sockaddr_nl = unsafe { zeroed() };
    a.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    a.nl_pid = 0;
    a.nl_groups = groups;
    a
}

fn open_socket() -> Result<OwnedFd> {
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        bail!("proc connector: netlink socket: {e} (kernel without CONFIG_CONNECTOR?)");
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // FORCE lets root go past net.core.rmem_max; the plain option is the fallback.
    if setsockopt_int(&sock, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
        let _ = setsockopt_int(&sock, libc::SO_RCVBUF, RCVBUF);
    }
    let addr = nl_addr(CN_IDX_PROC);
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            bail!("proc connector: joining CN_IDX_PROC needs CAP_NET_ADMIN (run as root): {e}");
        }
        bail!("proc connector: bind: {e}");
    }
    Ok(sock)
}

fn setsockopt_int(sock: &OwnedFd, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One non-blocking receive; `None` for a datagram not sent by the kernel (another root
/// process could send to the group; only the kernel's word counts).
fn recv_kernel(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut from = nl_addr(0);
    let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut from_len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if from.nl_pid != 0 {
        return Ok(None);
    }
    // A datagram longer than buf is truncated to it; `parse` drops the cut message.
    Ok(Some((n as usize).min(buf.len())))
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}

/// Waits until `fd` (or `wake`) is readable; returns (fd readable, wake readable).
/// `timeout` None waits forever; EINTR counts as a spurious wake-up.
fn poll_in(fd: RawFd, wake: Option<RawFd>, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.unwrap_or(-1), // negative fds are ignored by poll
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.map_or(-1, |t| {
        t.as_millis().clamp(1, i32::MAX as u128) as libc::c_int
    });
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok((false, false));
        }
        return Err(e);
    }
    // POLLERR/POLLHUP also count as readable, so the following read reports the error.
    Ok((fds[0].revents != 0, fds[1].revents != 0))
}

fn eventfd() -> Result<OwnedFd> {
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        bail!("eventfd: {}", io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn poke(wake: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // Only fails if the counter is saturated, and then the listener is awake anyway.
    let _ = unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), 8) };
}

/// Tells our acknowledgement apart from those of other listeners (acks are multicast).
fn nonce() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (std::process::id() << 12) ^ t ^ N.fetch_add(0x9e37_79b9, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// One message as the kernel sends it: nlmsghdr + cn_msg + proc_event (40 bytes).
    fn event(what: u32, ack: u32, ts_ns: u64, data: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&3u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&ts_ns.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        ev.resize(40, 0);
        control_message(&ev, ack)
    }

    #[test]
    fn execs_parser_exec_fork_ack_and_garbage() {
        let exec = event(PROC_EVENT_EXEC, 0, 123, &[4242, 4242]);
        assert_eq!(exec.len(), 76);
        assert_eq!(
            parse(&exec),
            vec![Msg::Exec {
                pid: 4242,
                ts_ns: 123
            }]
        );

        // Fork (what = 1) is skipped, the exec after it in the same datagram still read.
        let mut two = event(1, 0, 5, &[1, 1, 77, 77]);
        two.extend(event(PROC_EVENT_EXEC, 0, 6, &[78, 77]));
        assert_eq!(parse(&two), vec![Msg::Exec { pid: 77, ts_ns: 6 }]);

        let ack = event(PROC_EVENT_NONE, 10, 9, &[0]);
        assert_eq!(
            parse(&ack),
            vec![Msg::Ack {
                ack: 10,
                err: 0,
                ts_ns: 9
            }]
        );

        // Every truncation of a valid exec yields nothing, and never panics.
        for cut in 0..exec.len() {
            assert_eq!(parse(&exec[..cut]), vec![], "cut at {cut}");
        }
        // A cn_msg whose declared length runs past the message.
        let mut long = exec.clone();
        long[32..34].copy_from_slice(&500u16.to_ne_bytes());
        assert_eq!(parse(&long), vec![]);
        // Lengths that cannot frame anything: 0, shorter than a header, past the end.
        for bad in [0u32, 8, 77, u32::MAX] {
            let mut b = exec.clone();
            b[0..4].copy_from_slice(&bad.to_ne_bytes());
            assert_eq!(parse(&b), vec![], "nlmsg_len {bad}");
        }
        // Another connector's message, and a negative pid.
        let mut other = exec.clone();
        other[16..20].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(parse(&other), vec![]);
        assert_eq!(
            parse(&event(PROC_EVENT_EXEC, 0, 1, &[u32::MAX, u32::MAX])),
            vec![]
        );
        // Overrun notice and control messages.
        let mut ctl = vec![0u8; 16];
        ctl[0..4].copy_from_slice(&16u32.to_ne_bytes());
        ctl[4..6].copy_from_slice(&NLMSG_OVERRUN.to_ne_bytes());
        assert_eq!(parse(&ctl), vec![Msg::Overrun]);
        ctl[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(parse(&ctl), vec![]);
        // Pseudo-random bytes never panic.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut b: Vec<u8> = (0..(x % 200) as usize)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if b.len() >= 4 && x & 1 == 0 {
                let l = b.len() as u32;
                b[0..4].copy_from_slice(&l.to_ne_bytes());
            }
            let _ = parse(&b);
        }
    }

    #[test]
    fn execs_kernel_clock_maps_onto_instant() {
        // The kernel stamps with CLOCK_MONOTONIC, like Instant: a stamp taken now maps to now.
        let ts = monotonic_ns().unwrap();
        let received = Instant::now();
        let c = MonoClock::calibrated(ts, received);
        let t = c.kernel(ts).expect("kernel time used");
        assert!(t <= received && received - t < Duration::from_millis(5));
        assert_eq!(
            c.kernel(ts + 3_000_000).unwrap() - t,
            Duration::from_millis(3)
        );
        // A stamp far from our clock (time namespace): fall back to receive times.
        let off = MonoClock::calibrated(ts + 10_000_000_000, received);
        assert!(off.kernel(ts).is_none());
        assert_eq!(off.record(1, ts, received).0, received);
    }

    fn spawn(prog: &str, args: &[&str]) -> Child {
        Command::new(prog).args(args).spawn().expect(prog)
    }

    /// A program exec'd by an orphan (its shell gone, so not our descendant any more) is
    /// someone else's, as a shared machine's builds are.
    #[test]
    fn execs_tell_ours_from_the_machines() {
        let rec = ExecRecorder::start().expect("start (needs root)");
        let a = Instant::now();
        let ours = std::process::id();
        let mut sh = spawn("/bin/sh", &["-c", "(sleep 0.2; exec /bin/cat /dev/null) &"]);
        sh.wait().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let seen = rec.between(a, Instant::now());
        let sh_exec = seen.iter().find(|e| e.pid == sh.id()).expect("sh recorded");
        assert!(sh_exec.started_by(&[ours]), "{sh_exec:?}");
        // `cat` is no other test's program.
        let orphan = seen
            .iter()
            .find(|e| e.comm == "cat" && !e.ancestors.is_empty())
            .unwrap_or_else(|| panic!("the orphan's cat in {seen:?}"));
        assert!(!orphan.started_by(&[ours]), "{orphan:?}");
    }

    #[test]
    fn execs_recorded_in_window() {
        let rec = ExecRecorder::start().expect("start (needs root)");
        let before_a = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let before_b = Instant::now();

        let a = Instant::now();
        // Not reaped until the recorder has read them, so their zombies still carry comm.
        let mut kids: Vec<(Child, &str)> =
            (0..3).map(|_| (spawn("/bin/true", &[]), "true")).collect();
        kids.push((spawn("/bin/sleep", &["0.01"]), "sleep"));
        std::thread::sleep(Duration::from_millis(20));
        let b = Instant::now();

        let seen = rec.between_timed(a, b);
        for (kid, comm) in &kids {
            let hits: Vec<_> = seen.iter().filter(|(_, e)| e.pid == kid.id()).collect();
            assert_eq!(hits.len(), 1, "pid {} ({comm}) in {seen:?}", kid.id());
            assert_eq!(hits[0].1.comm, *comm, "{seen:?}");
            assert!(a <= hits[0].0 && hits[0].0 <= b);
            assert_eq!(hits[0].1.ancestors.first(), Some(&std::process::id()));
            assert!(hits[0].1.started_by(&[std::process::id()]));
        }
        let early = rec.between(before_a, before_b);
        for (kid, _) in &kids {
            assert!(!early.iter().any(|e| e.pid == kid.id()), "{early:?}");
        }
        assert_eq!(rec.failure(), None);
        for (mut kid, _) in kids {
            kid.wait().unwrap();
        }

        // An exec whose event is still queued when `between` is called is not missed.
        let t = Instant::now();
        let mut k = spawn("/bin/true", &[]);
        let id = k.id();
        k.wait().unwrap();
        let now = Instant::now();
        assert_eq!(
            rec.between(t, now).iter().filter(|e| e.pid == id).count(),
            1
        );
        assert_eq!(rec.overruns(), 0);

        let stop = Instant::now();
        drop(rec);
        assert!(
            stop.elapsed() < Duration::from_millis(500),
            "drop took {:?}",
            stop.elapsed()
        );
    }

    #[test]
    fn execs_two_recorders_at_once() {
        let r1 = ExecRecorder::start().expect("start");
        let r2 = ExecRecorder::start().expect("start");
        let a = Instant::now();
        let mut k = spawn("/bin/true", &[]);
        std::thread::sleep(Duration::from_millis(50));
        let b = Instant::now();
        // By pid: the name of a process that exits at once may be gone (see `Exec`).
        for r in [&r1, &r2] {
            let seen = r.between(a, b);
            assert!(seen.iter().any(|e| e.pid == k.id()), "{seen:?}");
        }
        drop(r1);
        // The second still records after the first unsubscribed.
        let a = Instant::now();
        let mut k2 = spawn("/bin/true", &[]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(r2
            .between(a, Instant::now())
            .iter()
            .any(|e| e.pid == k2.id()));
        k.wait().unwrap();
        k2.wait().unwrap();
    }
}
