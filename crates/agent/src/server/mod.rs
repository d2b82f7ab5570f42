//! The agent daemon: one per host, serving the API on the host's fabric address.
use crate::api::*;
use crate::client::Client;
use crate::tls::{self, Credentials, ServerStream};
use crate::{delta, wire};
use anyhow::{bail, Context, Result};
use lab::{net, paths, spec::validate_name};
use runtime::bundle::Runtime;
use runtime::bundle::TunnelListSpec;
use runtime::containers::{CheckpointOpts, Containers, Layout, RoundDirs};
use runtime::runc::{criu_error, Runc};
use runtime::ContainerSpec;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod checkpoint;
mod fence;
mod hooks;
mod journal;
mod lazy;
mod network;
mod prepare;
mod restore;
mod transfer;
mod tunnels;
mod vms;
mod warm;

/// An authenticated caller that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(900);

/// The largest image a peer may send us; anything bigger is refused before reading.
pub const MAX_IMAGE_BYTES: u64 = 16 << 30;

pub struct Config {
    pub host: String,
    pub listen: SocketAddr,
    pub state: PathBuf,
    /// This agent's keys: it serves with them and signs the images it sends.
    pub tls: Credentials,
    pub criu: PathBuf,
    /// The tunnel master (global proactive GTP Tunnel List Handler), if the lab runs one.
    pub master: Option<SocketAddr>,
    /// What this (emulated) host offers VMs: memory in MiB and CPU models, when it offers
    /// less than the machine it runs on.
    pub memory_mb: Option<u64>,
    pub cpu_models: Option<Vec<String>>,
    /// The machine's CPUs this host has (a cpuset list), if not all: its containers' cgroup
    /// parent is confined to them.
    pub cpus: Option<String>,
}

struct Agent {
    cfg: Config,
    /// Starts functions.
    runc: Runc,
    /// Freezes, dumps, restores and removes them.
    containers: Containers,
    hello: Hello,
    /// Serialises changes to containers on this host.
    busy: Mutex<()>,
    /// PostCopy in flight, by container name.
    lazy: Mutex<HashMap<String, Lazy>>,
    /// What was started ahead of a dump or a restore, by container name.
    warm: Arc<Mutex<HashMap<String, Warm>>>,
    /// Open connections to peer agents, by address: an image round sent inside the frozen
    /// window must not wait for a TLS handshake.
    peers: Mutex<HashMap<SocketAddr, Client>>,
    /// Connections still in their handshake: junk callers cannot take more than
    /// `MAX_HANDSHAKING` threads.
    handshaking: std::sync::atomic::AtomicUsize,
    /// Migrations led from here, by function: the connection of the controller leading it.
    leases: Mutex<HashMap<String, journal::Lease>>,
    /// Numbers connections, for `leases`.
    connections: std::sync::atomic::AtomicU64,
}

/// Callers in their TLS handshake at once; a flood beyond it is dropped at accept.
const MAX_HANDSHAKING: usize = 256;

/// Started outside the frozen window, used inside it.
#[derive(Default)]
struct Warm {
    /// A `criu swrk` for the next dump of a running function.
    dump: Option<runtime::criu_rpc::Swrk>,
    /// A `criu swrk` holding a prepared function's namespace and stdio, for its restore.
    restore: Option<runtime::containers::WarmRestore>,
    /// A prepared function's inbound packets, held from the moment its MAC moves here
    /// until its sockets are restored.
    hold: Option<warm::HoldProcess>,
}

/// One end of a PostCopy whose memory is still moving.
enum Lazy {
    /// Source: CRIU's page server serving the frozen function's pages, in this thread
    /// until the dump's answer comes; CRIU's pid to stop it, and where it listens.
    Serving(std::thread::JoinHandle<Result<()>>, u32, SocketAddr),
    /// Destination: when the restore ended; set by the thread reaping `criu lazy-pages`
    /// when the last page is in (or the daemon failed, with why).
    Pulling {
        restored: Instant,
        done: Arc<Mutex<Option<PagesIn>>>,
    },
}

/// When the last page arrived, or why the pull failed.
type PagesIn = (Instant, Result<(), String>);

pub fn serve(cfg: Config) -> Result<()> {
    validate_name(&cfg.host, "host")?;
    // Two malloc arenas: glibc gives a thread per connection an arena of its own (up to 8
    // per core), each keeping what it freed, and the agent's RSS rose in steps of ~7 MiB
    // to 60 MiB over a 200-migration MME soak; with two it stays at 28 MiB and flat.
    // SAFETY: mallopt changes a malloc setting and touches no memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // The functions' folders (image rounds, CRIU's work files) live in memory: CRIU writes
    // the images inside the frozen window and the destination rebuilds and reads them
    // there, ~1.5 ms more per MB on the disk's ext4 (measured). Kept across agent restarts.
    let store = cfg.state.join("containers");
    if !runtime::containers::is_mount_point(&store) {
        runtime::containers::mount_tmpfs(&store, "mode=0700")?;
    }
    let hello = match runtime::runc::criu_check(&cfg.criu) {
        Ok(v) => Hello {
            host: cfg.host.clone(),
            criu: Some(v),
            criu_error: None,
            dirty_tracking: runtime::runc::criu_has_dirty_tracking(&cfg.criu),
        },
        Err(e) => Hello {
            host: cfg.host.clone(),
            criu: None,
            criu_error: Some(format!("{e:#}")),
            dirty_tracking: false,
        },
    };
    tracing::info!(host = %cfg.host, criu = ?hello.criu, criu_error = ?hello.criu_error, "agent starting on {}", cfg.listen);
    let runc = Runc {
        root: paths::runc_root(&cfg.host),
    };
    std::fs::create_dir_all(&runc.root)?;
    let containers = Containers {
        root: runc.root.clone(),
        criu: cfg.criu.clone(),
        cgroup_parent: paths::cgroup_parent(&cfg.host),
        restores_tun: runtime::tun::criu_restores_tun(&cfg.criu),
        cpus: cfg.cpus.clone(),
    };
    if cfg.cpus.is_some() {
        // Made now, with the host's CPUs, so that the containers runc starts inherit them.
        containers.prepare_cgroup_parents()?;
    }
    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let agent = Arc::new(Agent {
        cfg,
        runc,
        containers,
        hello,
        busy: Mutex::new(()),
        lazy: Mutex::new(HashMap::new()),
        warm: Arc::new(Mutex::new(HashMap::new())),
        peers: Mutex::new(HashMap::new()),
        handshaking: Default::default(),
        leases: Mutex::new(HashMap::new()),
        connections: Default::default(),
    });
    agent.fence();
    if agent.cfg.master.is_some() {
        let a = agent.clone();
        std::thread::spawn(move || a.watch_tunnel_lists());
    }
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let agent = agent.clone();
        use std::sync::atomic::Ordering::SeqCst;
        if agent.handshaking.fetch_add(1, SeqCst) >= MAX_HANDSHAKING {
            agent.handshaking.fetch_sub(1, SeqCst);
            continue;
        }
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            if let Err(e) = agent.connection(stream) {
                tracing::warn!(%peer, "connection ended: {e:#}");
            }
        });
    }
    Ok(())
}

impl Agent {
    fn connection(&self, tcp: TcpStream) -> Result<()> {
        let peer = tcp.peer_addr();
        let s = wire::bound_silence(&tcp).and_then(|_| self.cfg.tls.accept(tcp));
        self.handshaking
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let (peer, mut s) = match (peer, s) {
            (Ok(peer), Ok(s)) => (peer, s),
            (peer, Err(e)) => {
                tracing::warn!(peer = ?peer.ok(), "refused: {e:#}");
                return Ok(());
            }
            (Err(e), _) => return Err(e.into()),
        };
        // An idle authenticated caller is dropped after this long.
        s.sock.set_read_timeout(Some(IDLE_TIMEOUT))?;
        let conn = self
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let served = self.serve_calls(peer, &mut s, conn);
        self.release_leases(conn);
        served
    }

    fn serve_calls(&self, peer: SocketAddr, s: &mut ServerStream, conn: u64) -> Result<()> {
        loop {
            let req: Request = match wire::read_frame(s) {
                Ok(r) => r,
                Err(e) if e.to_string() == "connection closed" => return Ok(()),
                Err(e) => {
                    tracing::warn!(%peer, "refused request: {e:#}");
                    let _ = wire::write_frame(
                        s,
                        &Response::Err {
                            message: format!("{e:#}"),
                        },
                    );
                    return Ok(());
                }
            };
            let op = serde_json::to_value(&req)
                .ok()
                .and_then(|v| v["op"].as_str().map(str::to_string));
            let mut rearm = None;
            let answer = match self.handle(req, s, conn, &mut rearm) {
                Ok(body) => Response::Ok { body },
                Err(e) => {
                    tracing::warn!(%peer, op = ?op, "request failed: {e:#}");
                    Response::Err {
                        message: format!("{}: {e:#}", self.cfg.host),
                    }
                }
            };
            wire::write_frame(s, &answer)?;
            if let Some(name) = rearm {
                self.warm_dump(&name);
            }
        }
    }

    /// `rearm`: a function that runs here after this request, whose next dump's CRIU is
    /// started once the answer is out (a process start must not delay the answer, nor
    /// land in the frozen window the caller is measuring).
    fn handle(
        &self,
        req: Request,
        s: &mut ServerStream,
        conn: u64,
        rearm: &mut Option<String>,
    ) -> Result<serde_json::Value> {
        use serde_json::to_value as v;
        Ok(match req {
            Request::Hello => v(&self.hello)?,
            Request::Ps => v(self.ps()?)?,
            Request::Inspect { name } => v(self.inspect(&name)?)?,
            Request::Run { spec } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                let name = (spec.runtime == Runtime::Container).then(|| spec.name.clone());
                let info = self.run(spec)?;
                *rearm = name;
                v(info)?
            }
            Request::Prepare { spec } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.prepare_target(&spec)?)?
            }
            Request::Remove { name } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.remove(&name)?)?
            }
            Request::Checkpoint {
                name,
                round,
                leave_running,
                parent,
                pre_dump,
                lazy_port,
            } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(p) = &parent {
                    validate_name(p, "image round")?;
                }
                let opts = CheckpointOpts {
                    leave_running,
                    pre_dump,
                    // CRIU resolves the parent relative to the image dir.
                    parent: parent.map(|p| PathBuf::from("..").join(p)),
                    lazy_pages: lazy_port.map(|p| SocketAddr::new(self.cfg.listen.ip(), p)),
                };
                let dumped = self.checkpoint(&name, &round, opts);
                // The function still runs here after a leave-running dump or a failed one.
                if leave_running || dumped.is_err() {
                    *rearm = Some(name);
                }
                v(dumped?)?
            }
            Request::Push {
                name,
                round,
                to,
                base,
            } => v(self.push(&name, &round, to, base.as_deref())?)?,
            Request::Receive {
                name,
                round,
                size,
                sha256,
                base,
                round_sha256,
                from,
                signature,
            } => {
                let delta = match (base, round_sha256) {
                    (Some(b), Some(r)) => Some((b, r)),
                    (None, None) => None,
                    _ => bail!("a delta needs both its base round and the round's sha256"),
                };
                v(self.receive(&name, &round, size, &sha256, delta, &from, &signature, s)?)?
            }
            Request::Dial { to } => v(self.dial(to)?)?,
            Request::BeginMigration { name, journal } => {
                v(self.begin_migration(&name, &journal, journal::Lease::new(conn, s)?)?)?
            }
            Request::TakeOver { name } => v(self.take_over(&name, journal::Lease::new(conn, s)?)?)?,
            Request::EndMigration { name } => v(self.end_migration(&name, conn)?)?,
            Request::Plug { name } => v(timed(|| self.plug(&name))?)?,
            Request::Unplug { name } => v(timed(|| self.link(&name, false))?)?,
            Request::Restore {
                name,
                round,
                lazy_from,
                recovery,
            } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                let restored = self.restore(&name, &round, lazy_from, recovery)?;
                *rearm = Some(name);
                v(restored)?
            }
            Request::AwaitPages { name } => v(self.await_pages(&name)?)?,
            Request::ResumeLazy { name } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                self.resume_lazy(&name)?;
                *rearm = Some(name);
                v(())?
            }
            Request::VmIncoming { spec, from } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.vm_incoming(&spec, &from)?)?
            }
            Request::VmCheck { name, caps } => v(self.vm_check(&name, &caps)?)?,
            Request::VmMigrate { name, uri, to } => v(self.vm_migrate(&name, &uri, &to)?)?,
            Request::VmAwait { name } => v(self.vm_await(&name)?)?,
            Request::VmResume { name } => v(self.vm_resume(&name)?)?,
        })
    }

    fn dir(&self, name: &str) -> Result<PathBuf> {
        validate_name(name, "container")?;
        Ok(self.cfg.state.join("containers").join(name))
    }

    fn netns(&self, name: &str) -> String {
        format!("{}c-{}-{}", net::PREFIX, self.cfg.host, name)
    }

    /// What CRIU must know of `name`'s layout on this host.
    fn layout(&self, name: &str, dir: &Path, spec: &ContainerSpec) -> Layout {
        runtime::bundle::layout(spec, &dir.join("bundle"), &self.netns_path(name))
    }

    fn netns_path(&self, name: &str) -> PathBuf {
        Path::new("/run/netns").join(self.netns(name))
    }

    /// The container's directory and spec; an error names the container and host.
    fn existing(&self, name: &str) -> Result<(PathBuf, ContainerSpec)> {
        let dir = self.dir(name)?;
        let spec = std::fs::read(dir.join("spec.json"))
            .map_err(|_| anyhow::anyhow!("no container {name:?} on host {}", self.cfg.host))?;
        Ok((dir, serde_json::from_slice(&spec)?))
    }

    fn info(&self, name: &str, spec: &ContainerSpec, dir: &Path) -> ContainerInfo {
        let (state, pid) = match spec.runtime {
            Runtime::Vm => self.vm_state(dir),
            Runtime::Container => match self.containers.state(name) {
                Some(s) if s.status == "stopped" && has_images(dir) => {
                    ("checkpointed".into(), None)
                }
                Some(s) => (s.status, Some(s.pid)),
                None if has_images(dir) => ("checkpointed".into(), None),
                None => ("prepared".into(), None),
            },
        };
        ContainerInfo {
            name: name.into(),
            host: self.cfg.host.clone(),
            service_ip: spec.service_ip,
            flavor: spec.flavor_name.clone(),
            state,
            pid,
            runtime: spec.runtime,
        }
    }

    fn ps(&self) -> Result<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(self.cfg.state.join("containers"))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            if let Ok((dir, spec)) = self.existing(&name) {
                out.push(self.info(&name, &spec, &dir));
            }
        }
        Ok(out)
    }

    fn inspect(&self, name: &str) -> Result<Inspect> {
        let (dir, mut spec) = self.existing(name)?;
        let rootfs_digest = std::fs::read_to_string(dir.join("rootfs.digest")).unwrap_or_default();
        let info = self.info(name, &spec, &dir);
        let mut cannot_carry = vec![];
        // A migration's destination is prepared from this spec: with the TUN devices the
        // function holds now, it makes them and their files ahead of the dump.
        if spec.runtime == Runtime::Container && info.state == "running" {
            spec.tun_devices = self
                .containers
                .tun_devices(name, &self.netns_path(name))
                .unwrap_or_else(|e| {
                    // The dump says it again, and fails.
                    tracing::warn!("{e:#}");
                    vec![]
                });
            cannot_carry = self
                .containers
                .uncarriable(name)
                .iter()
                .map(|u| u.to_string())
                .collect();
        }
        Ok(Inspect {
            info,
            spec,
            rootfs_digest,
            cannot_carry,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Host end of a container's veth, inside the host namespace.
fn port(name: &str) -> String {
    format!("c-{name}")
}

fn round_dir(dir: &Path, round: &str) -> Result<PathBuf> {
    validate_name(round, "image round")?;
    Ok(dir.join("images").join(round))
}

fn has_images(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("images"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<OpStats> {
    let t = Instant::now();
    f()?;
    Ok(OpStats {
        ms: ms(t),
        ..Default::default()
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
