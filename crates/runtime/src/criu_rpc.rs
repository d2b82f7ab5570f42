//! CRIU driven over its RPC (`criu swrk`), as runc does it, but from the agent itself:
//! - the `criu swrk` process is started ahead of time, outside the frozen window (CRIU
//!   waits on its socket until the request comes);
//! - no runc process and no extra `criu swrk` that only reads CRIU's version;
//! - CRIU's notifications reach the caller in-process, e.g. `network-unlock` (the sockets
//!   are restored, the tasks not resumed yet), where the agent opens the function's network.
//!
//! The messages are written by hand over prost from CRIU's `images/rpc.proto` (proto2; only
//! the fields we use, with their tags): `rust-criu` 0.5 has no external namespaces,
//! inherit-fd, cgroup roots or notifications, and cannot use a CRIU started beforehand.
use anyhow::{bail, Context, Result};
use prost::Message;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

#[derive(Clone, PartialEq, Message)]
pub struct PageServerInfo {
    #[prost(string, optional, tag = "1")]
    pub address: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub port: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExtMountMap {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub val: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct InheritFd {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(int32, required, tag = "2")]
    pub fd: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CgroupRoot {
    #[prost(string, optional, tag = "1")]
    pub ctrl: Option<String>,
    #[prost(string, required, tag = "2")]
    pub path: String,
}

/// `criu_cg_mode`
pub const CG_MODE_SOFT: i32 = 3;
/// `criu_network_lock_method`
pub const NETWORK_LOCK_SKIP: i32 = 3;

#[derive(Clone, PartialEq, Message)]
pub struct CriuOpts {
    #[prost(int32, required, tag = "1", default = "-1")]
    pub images_dir_fd: i32,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
    #[prost(bool, optional, tag = "3")]
    pub leave_running: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub tcp_established: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub evasive_devices: Option<bool>,
    #[prost(bool, optional, tag = "8")]
    pub file_locks: Option<bool>,
    #[prost(int32, optional, tag = "9")]
    pub log_level: Option<i32>,
    #[prost(string, optional, tag = "10")]
    pub log_file: Option<String>,
    #[prost(message, optional, tag = "11")]
    pub ps: Option<PageServerInfo>,
    #[prost(bool, optional, tag = "12")]
    pub notify_scripts: Option<bool>,
    #[prost(string, optional, tag = "13")]
    pub root: Option<String>,
    #[prost(string, optional, tag = "14")]
    pub parent_img: Option<String>,
    #[prost(bool, optional, tag = "15")]
    pub track_mem: Option<bool>,
    #[prost(int32, optional, tag = "17")]
    pub work_dir_fd: Option<i32>,
    #[prost(message, repeated, tag = "23")]
    pub ext_mnt: Vec<ExtMountMap>,
    #[prost(bool, optional, tag = "24")]
    pub manage_cgroups: Option<bool>,
    #[prost(message, repeated, tag = "25")]
    pub cg_root: Vec<CgroupRoot>,
    #[prost(bool, optional, tag = "26")]
    pub rst_sibling: Option<bool>,
    #[prost(message, repeated, tag = "27")]
    pub inherit_fd: Vec<InheritFd>,
    #[prost(int32, optional, tag = "34")]
    pub manage_cgroups_mode: Option<i32>,
    #[prost(string, repeated, tag = "37")]
    pub external: Vec<String>,
    #[prost(uint32, optional, tag = "38")]
    pub empty_ns: Option<u32>,
    #[prost(string, optional, tag = "44")]
    pub freeze_cgroup: Option<String>,
    #[prost(bool, optional, tag = "48")]
    pub lazy_pages: Option<bool>,
    #[prost(bool, optional, tag = "50")]
    pub orphan_pts_master: Option<bool>,
    #[prost(string, optional, tag = "60")]
    pub cgroup_yard: Option<String>,
    #[prost(int32, optional, tag = "64")]
    pub network_lock: Option<i32>,
    #[prost(string, optional, tag = "68")]
    pub images_dir: Option<String>,
}

/// `criu_req_type`
pub mod req_type {
    pub const DUMP: i32 = 1;
    pub const RESTORE: i32 = 2;
    pub const PRE_DUMP: i32 = 4;
    pub const NOTIFY: i32 = 6;
}

#[derive(Clone, PartialEq, Message)]
pub struct CriuReq {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub opts: Option<CriuOpts>,
    #[prost(bool, optional, tag = "3")]
    pub notify_success: Option<bool>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CriuRestoreResp {
    #[prost(int32, required, tag = "1")]
    pub pid: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct CriuNotify {
    #[prost(string, optional, tag = "1")]
    pub script: Option<String>,
    #[prost(int32, optional, tag = "2")]
    pub pid: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CriuResp {
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    #[prost(bool, required, tag = "2")]
    pub success: bool,
    #[prost(message, optional, tag = "4")]
    pub restore: Option<CriuRestoreResp>,
    #[prost(message, optional, tag = "5")]
    pub notify: Option<CriuNotify>,
    #[prost(int32, optional, tag = "7")]
    pub cr_errno: Option<i32>,
    #[prost(string, optional, tag = "9")]
    pub cr_errmsg: Option<String>,
}

/// Fd number of the RPC socket in the `criu swrk` process; inherited fds follow it.
const SWRK_FD: RawFd = 3;
/// The first fd number [`Swrk::spawn`] gives the files it passes on.
pub const FIRST_INHERITED_FD: RawFd = 4;

/// A `criu swrk` waiting for one request.
pub struct Swrk {
    sock: OwnedFd,
    child: Child,
}

/// Standard streams of the `criu swrk` process: a restore hands them to the restored tasks
/// whose stdio was a pipe (`inherit_fd` keys `pipe:[...]` → fds 0, 1 and 2).
pub struct SwrkStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl Swrk {
    /// Starts `criu swrk`; `pass` are files the process gets as fds 4, 5, ... (for
    /// `inherit_fd`, e.g. the network namespace the restored tasks must join).
    pub fn spawn(criu: &Path, pass: &[RawFd], stdio: Option<SwrkStdio>) -> Result<Swrk> {
        use std::os::unix::process::CommandExt;
        let mut sv = [0i32; 2];
        // SAFETY: socketpair fills the two-element array on success.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error()).context("cannot create CRIU's RPC socket");
        }
        // SAFETY: both fds were just created and are owned here.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        let mut c = Command::new(criu);
        c.args(["swrk", &SWRK_FD.to_string()]);
        match stdio {
            Some(s) => c.stdin(s.stdin).stdout(s.stdout).stderr(s.stderr),
            None => c
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        };
        if pass.len() > 15 {
            bail!("criu swrk gets at most 15 inherited files");
        }
        let theirs_raw = theirs.as_raw_fd();
        let pass = pass.to_vec();
        // SAFETY: only dup2 (async-signal-safe) on fds that stay open until spawn returns;
        // dup2 clears close-on-exec on the copies.
        unsafe {
            c.pre_exec(move || {
                // Every source out of the way first (a source may sit at a target number),
                // then each onto its number.
                let mut from = [0 as RawFd; 16];
                let all = std::iter::once(theirs_raw).chain(pass.iter().copied());
                let mut n = 0;
                for fd in all.take(from.len()) {
                    from[n] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                    if from[n] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    n += 1;
                }
                for (i, fd) in from[..n].iter().enumerate() {
                    if libc::dup2(*fd, SWRK_FD + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {} swrk", criu.display()))?;
        drop(theirs);
        Ok(Swrk { sock: ours, child })
    }

    /// Whether this CRIU still runs (a warm one may have been killed while it waited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `req` and answers CRIU's notifications with `notify(script, pid)` until CRIU's
    /// final answer, which is returned. A failed notification makes CRIU abort.
    pub fn call(
        &mut self,
        req: &CriuReq,
        mut notify: impl FnMut(&str, i32) -> Result<()>,
    ) -> Result<CriuResp> {
        self.send(req)?;
        loop {
            let resp = self.recv()?;
            if resp.r#type == req_type::NOTIFY && resp.success {
                let n = resp.notify.clone().unwrap_or_default();
                let script = n.script.unwrap_or_default();
                let handled = notify(&script, n.pid.unwrap_or(0));
                self.send(&CriuReq {
                    r#type: req_type::NOTIFY,
                    opts: None,
                    notify_success: Some(handled.is_ok()),
                })?;
                handled.with_context(|| format!("at CRIU's {script} notification"))?;
                continue;
            }
            if !resp.success {
                bail!(
                    "CRIU failed: {} (errno {})",
                    resp.cr_errmsg.as_deref().unwrap_or("no message"),
                    resp.cr_errno.unwrap_or(0)
                );
            }
            if resp.r#type != req.r#type {
                bail!(
                    "CRIU answered a request of type {} with type {}",
                    req.r#type,
                    resp.r#type
                );
            }
            return Ok(resp);
        }
    }

    fn send(&self, req: &CriuReq) -> Result<()> {
        let buf = req.encode_to_vec();
        // SAFETY: send on our socket from a live buffer.
        let n = unsafe { libc::send(self.sock.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n != buf.len() as isize {
            return Err(std::io::Error::last_os_error()).context("cannot send to CRIU");
        }
        Ok(())
    }

    fn recv(&self) -> Result<CriuResp> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: recv into a buffer we own, of its length.
            let n =
                unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("cannot read CRIU's answer");
            }
            if n == 0 {
                bail!("CRIU exited without an answer (see its log)");
            }
            return CriuResp::decode(&buf[..n as usize]).context("CRIU's answer does not decode");
        }
    }

    /// Lets CRIU exit after its answer while the caller goes on; a thread reaps it. Waiting
    /// for the exit (~0.6 ms: CRIU unmaps what it read and wrote) held the frozen window
    /// open on both sides.
    pub fn finish_in_background(self) {
        std::thread::spawn(move || {
            if let Err(e) = self.finish() {
                tracing::warn!("after its answer: {e:#}");
            }
        });
    }

    /// Waits for CRIU to exit after its answer (a dump's or a restore's CRIU exits then).
    pub fn finish(mut self) -> Result<()> {
        // SAFETY: shutting down our own socket tells CRIU nothing more comes.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_WR) };
        let st = self.child.wait()?;
        if !st.success() {
            bail!("criu swrk exited with {st}");
        }
        Ok(())
    }
}

impl Drop for Swrk {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_encodes_the_tags_of_rpc_proto() {
        let req = CriuReq {
            r#type: req_type::DUMP,
            opts: Some(CriuOpts {
                images_dir_fd: -1,
                pid: Some(42),
                images_dir: Some("/x".into()),
                ..Default::default()
            }),
            notify_success: None,
        };
        let b = req.encode_to_vec();
        // type = 1 (field 1, varint), opts (field 2, length-delimited)
        assert_eq!(&b[..2], &[0x08, 0x01]);
        assert_eq!(b[2], 0x12);
        let back = CriuReq::decode(&b[..]).unwrap();
        assert_eq!(back, req);
        let opts = back.opts.unwrap();
        assert_eq!(opts.pid, Some(42));
        assert_eq!(opts.images_dir.as_deref(), Some("/x"));
    }

    #[test]
    fn answers_that_do_not_decode_are_errors() {
        assert!(CriuResp::decode(&[0xff, 0xff, 0xff][..]).is_err());
        // prost does not enforce proto2's `required`: an answer without `success` reads
        // as a failure, never as a success.
        assert!(!CriuResp::decode(&[0x08, 0x01][..]).unwrap().success);
    }
}
