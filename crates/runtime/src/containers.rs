//! The containers of one host. runc starts a function (`runc run`); from then on the agent
//! handles it itself: its state from runc's state file (or, once restored, from its own),
//! the cgroup freezer, the CPU quota, signals, and CRIU over its RPC for dumps and restores
//! (see [`crate::criu_rpc`]). runc around a dump or a restore costs ~25-35 ms each inside
//! the frozen window (measured: its own start, a `criu swrk` only for CRIU's version, its
//! cgroup handling) and hides CRIU's notifications, where the network must be opened.
use crate::criu_rpc::{self, CriuOpts, CriuReq, ExtMountMap, InheritFd, Swrk, SwrkStdio};
use crate::tun::TunDevice;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Containers {
    /// runc's root for this host; the agent's own state of a restored container sits there too.
    pub root: PathBuf,
    pub criu: PathBuf,
    /// cgroup path (under every controller) of this host's containers.
    pub cgroup_parent: String,
    /// Whether `criu` restores TUN files from inherited fds ([`crate::tun::criu_restores_tun`],
    /// read once: it scans the binary).
    pub restores_tun: bool,
    /// The host's CPUs (a cpuset list), if not all: `cgroup_parent`'s cpuset, which its
    /// containers inherit.
    pub cpus: Option<String>,
}

#[derive(Debug, Clone)]
pub struct State {
    /// `running`, `paused` (frozen) or `stopped`.
    pub status: String,
    pub pid: i64,
}

/// CRIU options of one checkpoint.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOpts {
    /// Keep the container running after the dump (PreCopy's first round).
    pub leave_running: bool,
    /// Dump only pages changed since this earlier image dir (relative to the image dir).
    pub parent: Option<PathBuf>,
    /// A CRIU pre-dump (needs kernel dirty-page tracking).
    pub pre_dump: bool,
    /// Leave memory to be served lazily by a page server at this address (PostCopy).
    pub lazy_pages: Option<std::net::SocketAddr>,
}

/// What CRIU needs to know of a container's layout: its rootfs, its network namespace
/// (external: it is the host's to create), and the mounts runc made from host files.
pub struct Layout {
    pub rootfs: PathBuf,
    /// The host folder bound at /dev (made alike on every host, so never shipped).
    pub dev: PathBuf,
    /// The host's tmpfs bound at /run, carried by the agent ([`crate::writable`]).
    pub writable: PathBuf,
    pub netns: PathBuf,
    /// runc masks these with bind mounts of /dev/null.
    pub masked: Vec<String>,
    /// Device nodes (runc creates them; listed as runc lists them for CRIU).
    pub devices: Vec<String>,
}

/// Where a round's images are and where CRIU keeps its log and stats for it.
pub struct RoundDirs<'a> {
    pub images: &'a Path,
    pub work: &'a Path,
}

/// The key CRIU gives the external network namespace, as runc names it.
const NETNS_KEY: &str = "extRootNetNS";
/// runc's record of the container's stdio at dump time, which a restore needs.
const DESCRIPTORS: &str = "descriptors.json";
/// CRIU's key for /dev (an external bind mount).
const DEV_KEY: &str = "dev";
/// CRIU's key for the writable folder (an external bind mount of the host's tmpfs).
const WRITABLE_KEY: &str = "writable";
/// The agent's state of a container it restored (runc has none for it).
const RESTORED: &str = "restored.json";

#[derive(Serialize, Deserialize)]
struct Restored {
    pid: i64,
    start: u64,
}

/// The part of runc's `state.json` we read (runc 1.1's libcontainer format).
#[derive(Deserialize)]
struct RuncState {
    init_process_pid: i64,
    init_process_start: u64,
}

/// Which end of a migration CRIU's options are for.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Dump,
    Restore,
}

impl Layout {
    /// The mounts runc made from host files, external to CRIU: on a dump each mount point
    /// and the key it is saved under, on a restore each key and the host path to bind.
    fn external_mounts(&self, side: Side) -> Vec<ExtMountMap> {
        let null = "/dev/null".to_string();
        let mut m: Vec<(String, String, String)> = self
            .masked
            .iter()
            .map(|p| (p.clone(), null.clone(), null.clone()))
            .collect();
        m.extend(
            self.devices
                .iter()
                .map(|d| (d.clone(), d.clone(), d.clone())),
        );
        for (point, key, host) in [
            ("/dev", DEV_KEY, &self.dev),
            (crate::bundle::WRITABLE_PATH, WRITABLE_KEY, &self.writable),
        ] {
            m.push((point.into(), key.into(), host.display().to_string()));
        }
        let mut out: Vec<ExtMountMap> = m
            .into_iter()
            .map(|(point, key, host)| match side {
                Side::Dump => ExtMountMap {
                    key: point,
                    val: key,
                },
                Side::Restore => ExtMountMap { key, val: host },
            })
            .collect();
        // The masked paths share their key.
        out.dedup_by(|a, b| a.key == b.key && a.val == b.val);
        out
    }
}

/// A `criu swrk` started for one container ahead of its restore: it holds the container's
/// network namespace and stdio pipe, the files the restored tasks are given.
pub struct WarmRestore {
    swrk: Swrk,
    pub root_mount: PathBuf,
    /// The TUN files made for the restored tasks (the swrk holds them too, as fds 5, ...).
    tuns: Vec<(TunDevice, OwnedFd)>,
}

impl Containers {
    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The container's cgroup directory under `controller` (`freezer`, `cpu`, ...).
    pub fn cgroup(&self, id: &str, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(self.cgroup_parent.trim_start_matches('/'))
            .join(id)
    }

    fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// The container's init and status, from runc's state file or the agent's own: no
    /// process to start (the agent asks often, also while a function is frozen). `None`
    /// when neither knows the container.
    pub fn state(&self, id: &str) -> Option<State> {
        let dir = self.dir(id);
        let (pid, start) = match std::fs::read(dir.join("state.json")) {
            Ok(raw) => {
                let st: RuncState = serde_json::from_slice(&raw).ok()?;
                (st.init_process_pid, st.init_process_start)
            }
            Err(_) => {
                let st: Restored =
                    serde_json::from_slice(&std::fs::read(dir.join(RESTORED)).ok()?).ok()?;
                (st.pid, st.start)
            }
        };
        // The pid may have been reused since: the start time tells the same process apart.
        let alive = proc_start_time(pid) == Some(start);
        let frozen =
            std::fs::read_to_string(self.freezer_file(id)).is_ok_and(|s| s.trim() == "FROZEN");
        let status = match (alive, frozen) {
            (false, _) => "stopped",
            (true, true) => "paused",
            (true, false) => "running",
        };
        Some(State {
            status: status.into(),
            pid,
        })
    }

    fn freezer_file(&self, id: &str) -> PathBuf {
        self.cgroup(id, "freezer").join("freezer.state")
    }

    /// Freezes the container's cgroup (v1 freezer): without waiting for FROZEN, since a
    /// task CRIU holds stopped counts as frozen only once it would run.
    pub fn freeze(&self, id: &str) -> Result<()> {
        std::fs::write(self.freezer_file(id), "FROZEN")
            .with_context(|| format!("cannot freeze {id}"))
    }

    /// Thaws a frozen cgroup (a container frozen by anything else: `delete` needs its tasks
    /// to run to die).
    pub fn thaw(&self, id: &str) -> Result<()> {
        std::fs::write(self.freezer_file(id), "THAWED").with_context(|| format!("cannot thaw {id}"))
    }

    /// Sets the container's CFS quota (`None`: unlimited), straight on its cgroup.
    pub fn set_cpu_quota(&self, id: &str, period_us: u64, quota_us: Option<i64>) -> Result<()> {
        let dir = self.cgroup(id, "cpu");
        std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            quota_us.unwrap_or(-1).to_string(),
        )
        .with_context(|| format!("cannot set the CPU quota of {id}"))
    }

    /// Sends `signal` (a name such as `USR1` or `SIGUSR1`) to the container's init.
    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let st = self
            .state(id)
            .with_context(|| format!("{id} is not running"))?;
        signal_pid(st.pid, signal).with_context(|| format!("cannot signal {id}"))
    }

    /// The container's processes (its freezer cgroup's members); none when it has none.
    fn tasks(&self, id: &str) -> Vec<i32> {
        std::fs::read_to_string(self.cgroup(id, "freezer").join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The TUN devices the container's tasks hold open, configured as they are in its
    /// namespace `netns`.
    pub fn tun_devices(&self, id: &str, netns: &Path) -> Result<Vec<TunDevice>> {
        crate::tun::discover(&self.tasks(id), netns_name(netns)?)
            .with_context(|| format!("cannot carry the TUN devices of {id}"))
    }

    /// The container's sockets that CRIU cannot dump on this host (see [`crate::sockets`]).
    pub fn uncarriable(&self, id: &str) -> Vec<crate::sockets::Uncarriable> {
        crate::sockets::uncarriable(&self.tasks(id))
    }

    /// Whether a CRIU process is ptrace-attached to any of the container's tasks.
    pub fn traced_by_criu(&self, id: &str) -> bool {
        self.tasks(id).into_iter().any(|pid| {
            let tracer: u32 =
                crate::proc_number(&format!("/proc/{pid}/status"), "TracerPid:").unwrap_or(0);
            tracer != 0
                && std::fs::read_to_string(format!("/proc/{tracer}/comm"))
                    .is_ok_and(|c| c.trim() == "criu")
        })
    }

    /// Takes the container's TCP sockets out of repair mode; returns how many. CRIU puts
    /// every socket it dumps with `--tcp-established` in repair mode and takes them out
    /// again only on its error path: a lazy (PostCopy) dump whose page server gave up
    /// lets the tasks go with their sockets still in repair, dead to their peers (the
    /// caller keeps them frozen meanwhile). Done as CRIU does it, on each socket borrowed
    /// with pidfd_getfd(2).
    pub fn end_tcp_repair(&self, id: &str) -> usize {
        use std::os::fd::{FromRawFd, OwnedFd};
        let mut n = 0;
        for pid in self.tasks(id) {
            // SAFETY: pidfd_open(2) returns a new fd or -1.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
            if pidfd < 0 {
                continue;
            }
            // SAFETY: just opened, owned here.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten();
            n += fds
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&fd| tcp_repair_off(&pidfd, fd))
                .count();
        }
        n
    }

    /// Kills every task of the container, removes its cgroups and its state (runc's or
    /// the agent's): what `runc delete -f` does, for restored containers too. Gone already
    /// is fine.
    pub fn delete(&self, id: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let pids = self.tasks(id);
            if pids.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            for p in pids {
                // SAFETY: kill(2) of the container's own tasks.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            // Frozen tasks die only once thawed.
            let _ = self.thaw(id);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for c in controllers() {
            let dir = self.cgroup(id, &c);
            for _ in 0..50 {
                if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(self.dir(id));
    }

    /// The host's cgroup folders (`cgroup_parent` under every controller), which CRIU's
    /// restore expects to find: it creates only the container's own, and a cpuset folder
    /// it creates on the way would have no CPUs (runc fills those in for its containers).
    /// With [`Containers::cpus`], the host's own folder gets those CPUs.
    pub fn prepare_cgroup_parents(&self) -> Result<()> {
        for c in controllers() {
            let mut dir = Path::new("/sys/fs/cgroup").join(&c);
            let parts: Vec<&str> = self
                .cgroup_parent
                .trim_start_matches('/')
                .split('/')
                .collect();
            for (i, part) in parts.iter().enumerate() {
                let parent = dir.clone();
                dir = dir.join(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                if c == "cpuset" {
                    match self.cpus.as_deref().filter(|_| i + 1 == parts.len()) {
                        Some(cpus) => give_cpus(&dir, &parent, cpus)?,
                        None => {
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                copy_if_empty(&dir, &parent, f)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// With [`Containers::cpus`], the cpuset of the container `id` a restore will make,
    /// made first with this host's CPUs: CRIU would give it the source host's (it restores
    /// a cpuset's CPUs with the cgroups it creates), which this host's cpuset refuses.
    pub fn prepare_cpuset(&self, id: &str) -> Result<()> {
        let Some(cpus) = &self.cpus else {
            return Ok(());
        };
        let dir = self.cgroup(id, "cpuset");
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let parent = dir.parent().context("a container cgroup has a parent")?;
        give_cpus(&dir, parent, cpus)
    }

    /// A `criu swrk` for dumps, started ahead of the freeze.
    pub fn warm_dump(&self) -> Result<Swrk> {
        Swrk::spawn(&self.criu, &[], None)
    }

    /// A `criu swrk` ready to restore `id` into namespace `netns` with stdout and stderr
    /// into `log` (a pipe's write end), and the container's rootfs bind-mounted where CRIU
    /// wants its root (a mount point whose parent is not overmounted), at `root_mount`;
    /// `tuns` are the files the restored tasks get for their TUN devices
    /// ([`crate::tun::open`]).
    pub fn warm_restore(
        &self,
        rootfs: &Path,
        root_mount: &Path,
        netns: &Path,
        log: std::fs::File,
        tuns: Vec<(TunDevice, OwnedFd)>,
    ) -> Result<WarmRestore> {
        std::fs::create_dir_all(root_mount)?;
        bind_mount(rootfs, root_mount)?;
        let ns = std::fs::File::open(netns)
            .with_context(|| format!("no network namespace {}", netns.display()))?;
        let stdio = SwrkStdio {
            stdin: crate::runc::empty_stdin()?.into(),
            stdout: log.try_clone()?.into(),
            stderr: log.into(),
        };
        let pass: Vec<RawFd> = std::iter::once(ns.as_raw_fd())
            .chain(tuns.iter().map(|(_, f)| f.as_raw_fd()))
            .collect();
        let swrk = Swrk::spawn(&self.criu, &pass, Some(stdio))?;
        Ok(WarmRestore {
            swrk,
            root_mount: root_mount.to_path_buf(),
            tuns,
        })
    }

    /// Dumps the (frozen) container into `images` with `swrk`; CRIU's log and stats go to
    /// `work`. With `lazy_pages`, returns once CRIU's page server is up, with the thread
    /// that serves the memory until the destination has pulled it all (and CRIU's pid).
    pub fn checkpoint(
        &self,
        id: &str,
        layout: &Layout,
        dirs: RoundDirs,
        o: &CheckpointOpts,
        swrk: Swrk,
        mut on_notify: impl FnMut(&str) -> Result<()>,
    ) -> Result<Option<(std::thread::JoinHandle<Result<()>>, u32)>> {
        let RoundDirs { images, work } = dirs;
        let pid = self
            .state(id)
            .with_context(|| format!("{id} is not running"))?
            .pid;
        write_descriptors(pid, images)?;
        // CRIU dumps the TUN files but not their devices (a link of the external netns):
        // they are recorded for the destination to re-make, before the tasks stop.
        let tuns = self.tun_devices(id, &layout.netns)?;
        if !tuns.is_empty() && !self.restores_tun {
            return Err(crate::tun::unpatched_criu(id, &tuns, &self.criu));
        }
        crate::tun::save(images, &tuns)?;
        let mut notify = |script: &str| -> Result<()> {
            if script == "network-lock" {
                // Every task is stopped, nothing dumped yet: the folder matches the memory.
                crate::writable::save(
                    &layout.writable,
                    &self.tasks(id),
                    &images.join(crate::writable::IMAGE),
                )
                .context("cannot save the writable folder")?;
            }
            on_notify(script)
        };
        let work_dir = std::fs::File::open(work)?;
        let netns_ino = std::fs::metadata(&layout.netns)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .with_context(|| format!("no network namespace {}", layout.netns.display()))?;
        let opts = CriuOpts {
            images_dir: Some(images.display().to_string()),
            work_dir_fd: Some(work_dir.as_raw_fd()),
            pid: Some(pid as i32),
            leave_running: Some(o.leave_running),
            // A pre-dump starts tracking dirty pages; a dump on a parent reads what changed.
            track_mem: (o.pre_dump || o.parent.is_some()).then_some(true),
            parent_img: o.parent.as_ref().map(|p| p.display().to_string()),
            lazy_pages: o.lazy_pages.map(|_| true),
            ps: o.lazy_pages.map(|a| criu_rpc::PageServerInfo {
                address: Some(a.ip().to_string()),
                port: Some(a.port() as i32),
            }),
            root: Some(layout.rootfs.display().to_string()),
            external: std::iter::once(format!("net[{netns_ino}]:{NETNS_KEY}"))
                .chain(crate::tun::external_files(&self.tasks(id)))
                .collect(),
            empty_ns: Some(libc::CLONE_NEWNET as u32),
            ext_mnt: layout.external_mounts(Side::Dump),
            ..common_opts("dump.log")
        };
        let req = CriuReq {
            r#type: if o.pre_dump {
                criu_rpc::req_type::PRE_DUMP
            } else {
                criu_rpc::req_type::DUMP
            },
            opts: Some(opts),
            notify_success: None,
        };
        let mut swrk = swrk;
        if o.lazy_pages.is_none() {
            swrk.call(&req, |script, _| notify(script))
                .map_err(|e| crate::runc::criu_error(e, work, "dump.log"))?;
            if o.pre_dump {
                // A pre-dump's CRIU waits for a next round; there is none.
                drop(swrk);
            } else {
                swrk.finish_in_background();
            }
            return Ok(None);
        }
        // PostCopy: CRIU says `status-ready` once its page server listens; the dump's
        // answer comes only when the destination has pulled every page. Until then this
        // thread answers CRIU's notifications through the thread that serves the pages.
        enum Msg {
            Notify(String, std::sync::mpsc::Sender<bool>),
            Ready,
        }
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let criu_pid = swrk.pid();
        let work = work.to_path_buf();
        let serving = std::thread::spawn(move || -> Result<()> {
            let _work_dir = work_dir;
            swrk.call(&req, |script, _| {
                if script == "status-ready" {
                    let _ = tx.send(Msg::Ready);
                    return Ok(());
                }
                let (reply, answer) = std::sync::mpsc::channel();
                // Nobody asks once the page server is up: the hooks ran by then.
                if tx.send(Msg::Notify(script.to_string(), reply)).is_ok()
                    && !answer.recv().unwrap_or(true)
                {
                    bail!("the {script} hook failed");
                }
                Ok(())
            })
            .map_err(|e| crate::runc::criu_error(e, &work, "dump.log"))?;
            swrk.finish()
        });
        loop {
            match rx.recv() {
                Ok(Msg::Notify(script, reply)) => {
                    let _ = reply.send(notify(&script).is_ok());
                }
                Ok(Msg::Ready) => break,
                // The thread ended before the page server was up: its error says why.
                Err(_) => {
                    return Err(match serving.join() {
                        Ok(Err(e)) => e,
                        _ => {
                            anyhow::anyhow!("CRIU's lazy dump ended before its page server was up")
                        }
                    })
                }
            }
        }
        Ok(Some((serving, criu_pid)))
    }

    /// Restores `id` from `images` with the `warm` CRIU prepared for it, into cgroups of its
    /// own on this host. `notify` sees CRIU's notifications (`network-unlock`: sockets
    /// restored, tasks not yet running). Returns the restored init's pid; it is this
    /// process's child (CRIU's `rst_sibling`), reaped by a thread of its own.
    pub fn restore(
        &self,
        id: &str,
        layout: &Layout,
        dirs: RoundDirs,
        lazy: bool,
        warm: WarmRestore,
        notify: impl FnMut(&str, i32) -> Result<()>,
    ) -> Result<i64> {
        let RoundDirs { images, work } = dirs;
        if !warm.tuns.is_empty() && !self.restores_tun {
            let devices = warm.tun_devices();
            warm.discard();
            return Err(crate::tun::unpatched_criu(id, &devices, &self.criu));
        }
        // A stopped instance's state (the source of a rolled back migration) must not shadow
        // the restored one's.
        let _ = std::fs::remove_dir_all(self.dir(id));
        let work_dir = std::fs::File::open(work)?;
        let mut inherit_fd = vec![InheritFd {
            key: NETNS_KEY.into(),
            fd: criu_rpc::FIRST_INHERITED_FD,
        }];
        // The TUN files follow the namespace in the swrk's fds (see `warm_restore`).
        for (i, (d, _)) in warm.tuns.iter().enumerate() {
            inherit_fd.push(InheritFd {
                key: crate::tun::inherit_key(&d.name),
                fd: criu_rpc::FIRST_INHERITED_FD + 1 + i as RawFd,
            });
        }
        // The tasks' stdio pipes (as runc recorded them) become the swrk's own stdio.
        let descriptors: Vec<String> = std::fs::read(images.join(DESCRIPTORS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for (i, d) in descriptors.iter().enumerate() {
            if d.contains("pipe:") {
                inherit_fd.push(InheritFd {
                    key: d.clone(),
                    fd: i as RawFd,
                });
            }
        }
        let opts = CriuOpts {
            images_dir: Some(images.display().to_string()),
            work_dir_fd: Some(work_dir.as_raw_fd()),
            root: Some(warm.root_mount.display().to_string()),
            evasive_devices: Some(true),
            rst_sibling: Some(true),
            empty_ns: Some(libc::CLONE_NEWNET as u32),
            inherit_fd,
            ext_mnt: layout.external_mounts(Side::Restore),
            lazy_pages: lazy.then_some(true),
            cg_root: vec![criu_rpc::CgroupRoot {
                ctrl: None,
                path: self.cgroup_path(id),
            }],
            ..common_opts("restore.log")
        };
        let req = CriuReq {
            r#type: criu_rpc::req_type::RESTORE,
            opts: Some(opts),
            notify_success: None,
        };
        let WarmRestore {
            mut swrk,
            root_mount,
            tuns,
        } = warm;
        let resp = crate::writable::restore(&images.join(crate::writable::IMAGE), &layout.writable)
            .context("cannot restore the writable folder")
            .and_then(|()| {
                swrk.call(&req, notify)
                    .map_err(|e| crate::runc::criu_error(e, work, "restore.log"))
            });
        unmount(&root_mount);
        let resp = resp?;
        for (d, f) in tuns {
            crate::tun::release(&d, f);
        }
        let pid = resp
            .restore
            .map(|r| r.pid as i64)
            .context("CRIU's restore answer has no pid")?;
        swrk.finish_in_background();
        let start =
            proc_start_time(pid).with_context(|| format!("restored {id} exited at once"))?;
        std::fs::create_dir_all(self.dir(id))?;
        std::fs::write(
            self.dir(id).join(RESTORED),
            serde_json::to_vec(&Restored { pid, start })?,
        )?;
        std::thread::spawn(move || {
            let mut st = 0;
            // SAFETY: waitpid on our own child; only this thread reaps it.
            unsafe { libc::waitpid(pid as i32, &mut st, 0) };
        });
        Ok(pid)
    }
}

impl WarmRestore {
    pub fn alive(&mut self) -> bool {
        self.swrk.alive()
    }

    pub fn pid(&self) -> u32 {
        self.swrk.pid()
    }

    /// The TUN devices whose files this restore hands over.
    pub fn tun_devices(&self) -> Vec<TunDevice> {
        self.tuns.iter().map(|(d, _)| d.clone()).collect()
    }

    /// An unused warm restore: its CRIU is stopped (on drop) and the root unmounted.
    pub fn discard(self) {
        unmount(&self.root_mount);
    }
}

/// The name of a namespace under /run/netns, as lab's netlink enters it.
fn netns_name(netns: &Path) -> Result<&str> {
    netns
        .strip_prefix("/run/netns")
        .ok()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .with_context(|| format!("{} is not a namespace of /run/netns", netns.display()))
}

/// Options every dump and restore shares.
fn common_opts(log: &str) -> CriuOpts {
    CriuOpts {
        images_dir_fd: -1,
        log_level: Some(criu_log_level()),
        log_file: Some(log.into()),
        tcp_established: Some(true),
        file_locks: Some(true),
        notify_scripts: Some(true),
        orphan_pts_master: Some(true),
        manage_cgroups: Some(true),
        manage_cgroups_mode: Some(criu_rpc::CG_MODE_SOFT),
        cgroup_yard: cgroup_yard(),
        // The agent locks the function's network itself (its link is down while it is
        // dumped; what arrives at the destination is held until the sockets exist), so
        // CRIU's own lock (iptables-restore runs, ~75 ms measured) is skipped.
        network_lock: Some(criu_rpc::NETWORK_LOCK_SKIP),
        ..Default::default()
    }
}

/// CRIU writes each log line with its own write(2), inside the frozen window: at level 4
/// (debug) that is ~1000 lines per dump. Errors and warnings (2) by default;
/// `COREHOP_CRIU_LOG_LEVEL` (0-4) in the agent's environment for more.
fn criu_log_level() -> i32 {
    static LEVEL: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        std::env::var("COREHOP_CRIU_LOG_LEVEL")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|l| (0..=4).contains(l))
            .unwrap_or(2)
    })
}

/// The host's cgroup mounts as CRIU's cgroup yard, where they are laid out as CRIU expects
/// (a folder per hierarchy of /proc/self/cgroup, `unified` for v2): otherwise CRIU mounts
/// every controller afresh for each dump and restore (~12 ms measured). Elsewhere (a lab
/// host guest mounts fewer hierarchies) CRIU mounts its own.
fn cgroup_yard() -> Option<String> {
    static YARD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    YARD.get_or_init(|| {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let all_there = own.lines().all(|l| {
            let ctrl = l.split(':').nth(1).unwrap_or("");
            let dir = match ctrl {
                "" => "unified",
                c => c.strip_prefix("name=").unwrap_or(c),
            };
            Path::new("/sys/fs/cgroup").join(dir).is_dir()
        });
        all_there.then(|| "/sys/fs/cgroup".to_string())
    })
    .clone()
}

/// The stdio targets of the container's init, as runc records them for a restore.
fn write_descriptors(pid: i64, images: &Path) -> Result<()> {
    let fds: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|_| "/dev/null".into())
        })
        .collect();
    std::fs::write(images.join(DESCRIPTORS), serde_json::to_vec(&fds)?)?;
    Ok(())
}

/// Confines the cgroup v1 cpuset `dir` to `cpus`, with `parent`'s memory nodes (first: a
/// cpuset without memory nodes takes no CPUs either).
fn give_cpus(dir: &Path, parent: &Path, cpus: &str) -> Result<()> {
    copy_if_empty(dir, parent, "cpuset.mems")?;
    std::fs::write(dir.join("cpuset.cpus"), cpus)
        .with_context(|| format!("cannot give {} the CPUs {cpus}", dir.display()))
}

/// A cgroup v1 cpuset file as `parent` has it, where `dir`'s is still empty (a new cpuset
/// has no CPUs and no memory nodes, and takes no tasks).
fn copy_if_empty(dir: &Path, parent: &Path, file: &str) -> Result<()> {
    let now = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    if now.trim().is_empty() {
        std::fs::write(
            dir.join(file),
            std::fs::read_to_string(parent.join(file))?.trim(),
        )?;
    }
    Ok(())
}

/// The v1 controllers (and `unified`) mounted under /sys/fs/cgroup.
fn controllers() -> Vec<String> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn bind_mount(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let t = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    unmount(to);
    // SAFETY: mount(2) with valid C strings; a recursive bind of the rootfs.
    if unsafe {
        libc::mount(
            f.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot bind {} on {}", from.display(), to.display()));
    }
    Ok(())
}

/// Detaches a mount; not mounted is fine.
/// Takes socket `fd` of the task behind `pidfd` out of TCP repair mode; false when it is
/// no TCP socket or the kernel refuses (a listener cannot be in repair mode).
fn tcp_repair_off(pidfd: &std::os::fd::OwnedFd, fd: i32) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_getfd(2) returns a new fd (a dup of the task's) or -1.
    let s = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) } as i32;
    if s < 0 {
        return false;
    }
    // SAFETY: just created, owned here.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let int = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let (mut proto, mut len, off): (libc::c_int, _, libc::c_int) = (0, int, 0);
    // SAFETY: get/setsockopt on an fd we own, with buffers of the right size.
    unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut proto as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
            && proto == libc::IPPROTO_TCP
            && libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_REPAIR,
                (&off as *const libc::c_int).cast(),
                int,
            ) == 0
    }
}

/// Mounts a tmpfs with `options` at `at` (made if missing).
pub fn mount_tmpfs(at: &Path, options: &str) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(at)?;
    let target = std::ffi::CString::new(at.as_os_str().as_bytes())?;
    let opts = std::ffi::CString::new(options)?;
    // SAFETY: mount(2) with valid C strings.
    if unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot mount a tmpfs on {}", at.display()));
    }
    Ok(())
}

/// Whether `at` is the root of a filesystem of its own (another device than its parent's).
pub fn is_mount_point(at: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(Ok(p))) = (std::fs::metadata(at), at.parent().map(std::fs::metadata)) else {
        return false;
    };
    m.dev() != p.dev()
}

pub fn unmount(at: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(p) = std::ffi::CString::new(at.as_os_str().as_bytes()) {
        // SAFETY: umount2(2) with a valid C string.
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks, as runc records it; `None`
/// when the process is gone or a zombie.
fn proc_start_time(pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its end.
    let mut rest = stat[stat.rfind(')')? + 2..].split_whitespace();
    if matches!(rest.next()?, "Z" | "X" | "x") {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

/// Sends `signal` (a name such as `USR1`) to `pid`: also to a just-restored task that has
/// not run yet (the signal waits for it).
pub fn signal_pid(pid: i64, signal: &str) -> Result<()> {
    let sig = signal_number(signal)?;
    // SAFETY: kill(2) with a pid and a valid signal number.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot send {signal} to {pid}"));
    }
    Ok(())
}

fn signal_number(name: &str) -> Result<i32> {
    let n = name.trim_start_matches("SIG");
    Ok(match n {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        _ => match n.parse::<i32>() {
            Ok(v) if v > 0 && v < 65 => v,
            _ => bail!("unknown signal {name:?}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal_number("USR1").unwrap(), libc::SIGUSR1);
        assert_eq!(signal_number("SIGUSR2").unwrap(), libc::SIGUSR2);
        assert_eq!(signal_number("9").unwrap(), 9);
        assert!(signal_number("BOGUS").is_err());
        assert!(signal_number("0").is_err());
    }

    #[test]
    fn start_time_of_this_process_is_read() {
        assert!(proc_start_time(std::process::id() as i64).is_some());
        assert!(proc_start_time(-1).is_none());
    }
}
