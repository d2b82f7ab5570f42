//! The agent daemon: one per host, serving the API on the host's fabric address.
use crate::api::*;
use crate::client::Client;
use crate::{delta, wire};
use anyhow::{bail, Context, Result};
use lab::{net, paths, spec::validate_name};
use runtime::bundle::Runtime;
use runtime::bundle::TunnelListSpec;
use runtime::runc::{criu_error, CheckpointOpts, Runc};
use runtime::ContainerSpec;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod vms;

/// An authenticated caller that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(900);

/// The largest image a peer may send us; anything bigger is refused before reading.
pub const MAX_IMAGE_BYTES: u64 = 16 << 30;

pub struct Config {
    pub host: String,
    pub listen: SocketAddr,
    pub state: PathBuf,
    pub token: Vec<u8>,
    pub criu: PathBuf,
    /// The tunnel master (global proactive GTP Tunnel List Handler), if the lab runs one.
    pub master: Option<SocketAddr>,
    /// What this (emulated) host offers VMs: memory in MiB and CPU models, when it offers
    /// less than the machine it runs on.
    pub memory_mb: Option<u64>,
    pub cpu_models: Option<Vec<String>>,
}

struct Agent {
    cfg: Config,
    runc: Runc,
    hello: Hello,
    /// Serialises changes to containers on this host.
    busy: Mutex<()>,
    /// PostCopy in flight, by container name.
    lazy: Mutex<HashMap<String, Lazy>>,
}

/// One end of a PostCopy whose memory is still moving.
enum Lazy {
    /// Source: runc (and CRIU's page server) serving the frozen function's pages.
    Serving(std::process::Child),
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
    std::fs::create_dir_all(cfg.state.join("containers"))?;
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
        criu: cfg.criu.clone(),
    };
    std::fs::create_dir_all(&runc.root)?;
    let listener = TcpListener::bind(cfg.listen)
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let agent = Arc::new(Agent {
        cfg,
        runc,
        hello,
        busy: Mutex::new(()),
        lazy: Mutex::new(HashMap::new()),
    });
    agent.fence_interrupted_restores();
    if agent.cfg.master.is_some() {
        let a = agent.clone();
        std::thread::spawn(move || a.watch_tunnel_lists());
    }
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let agent = agent.clone();
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
    fn connection(&self, mut s: TcpStream) -> Result<()> {
        let peer = s.peer_addr()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        if let Err(e) = wire::accept(&mut s, &self.cfg.token) {
            tracing::warn!(%peer, "refused: {e:#}");
            return Ok(());
        }
        // An idle authenticated caller is dropped after this long.
        s.set_read_timeout(Some(IDLE_TIMEOUT))?;
        loop {
            let req: Request = match wire::read_frame(&mut s) {
                Ok(r) => r,
                Err(e) if e.to_string() == "connection closed" => return Ok(()),
                Err(e) => {
                    tracing::warn!(%peer, "refused request: {e:#}");
                    let _ = wire::write_frame(
                        &mut s,
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
            let answer = match self.handle(req, &mut s) {
                Ok(body) => Response::Ok { body },
                Err(e) => {
                    tracing::warn!(%peer, op = ?op, "request failed: {e:#}");
                    Response::Err {
                        message: format!("{}: {e:#}", self.cfg.host),
                    }
                }
            };
            wire::write_frame(&mut s, &answer)?;
        }
    }

    fn handle(&self, req: Request, s: &mut TcpStream) -> Result<serde_json::Value> {
        use serde_json::to_value as v;
        Ok(match req {
            Request::Hello => v(&self.hello)?,
            Request::Ps => v(self.ps()?)?,
            Request::Inspect { name } => v(self.inspect(&name)?)?,
            Request::Run { spec } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.run(spec)?)?
            }
            Request::Prepare { spec } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.prepare(&spec)?)?
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
                    lazy_pages: lazy_port.map(|p| format!("{}:{p}", self.cfg.listen.ip())),
                };
                v(self.checkpoint(&name, &round, opts)?)?
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
            } => {
                let delta = match (base, round_sha256) {
                    (Some(b), Some(r)) => Some((b, r)),
                    (None, None) => None,
                    _ => bail!("a delta needs both its base round and the round's sha256"),
                };
                v(self.receive(&name, &round, size, &sha256, delta, s)?)?
            }
            Request::Plug { name } => v(timed(|| self.plug(&name))?)?,
            Request::Unplug { name } => v(timed(|| {
                self.existing(&name)?;
                net::unplug(&self.cfg.host, &port(&name));
                Ok(())
            })?)?,
            Request::Restore {
                name,
                round,
                lazy_from,
            } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.restore(&name, &round, lazy_from)?)?
            }
            Request::AwaitPages { name } => v(self.await_pages(&name)?)?,
            Request::VmIncoming { spec } => {
                let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                v(self.vm_incoming(&spec)?)?
            }
            Request::VmCheck { name, caps } => v(self.vm_check(&name, &caps)?)?,
            Request::VmMigrate { name, uri } => v(self.vm_migrate(&name, &uri)?)?,
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
            Runtime::Container => match self.runc.state(name) {
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
        let (dir, spec) = self.existing(name)?;
        let rootfs_digest = std::fs::read_to_string(dir.join("rootfs.digest")).unwrap_or_default();
        Ok(Inspect {
            info: self.info(name, &spec, &dir),
            spec,
            rootfs_digest,
        })
    }

    fn prepare(&self, spec: &ContainerSpec) -> Result<String> {
        if spec.runtime == Runtime::Vm {
            bail!(
                "{} is a VM: it moves by QEMU migration, not by a container restore",
                spec.name
            );
        }
        let dir = self.dir(&spec.name)?;
        if self.runc.state(&spec.name).is_some() {
            bail!(
                "container {:?} already runs on host {}",
                spec.name,
                self.cfg.host
            );
        }
        std::fs::create_dir_all(&dir)?;
        let ns = self.netns(&spec.name);
        net::add_netns(&ns)?;
        net::lock(&ns)?;
        if let Some(sgi) = &spec.sgi {
            runtime::sgi::init(&ns, sgi)?;
        }
        let cgroup = format!("{}/{}", paths::cgroup_parent(&self.cfg.host), spec.name);
        let digest = runtime::bundle::build(
            spec,
            &dir.join("bundle"),
            &Path::new("/run/netns").join(&ns),
            &cgroup,
        )?;
        std::fs::write(dir.join("rootfs.digest"), &digest)?;
        std::fs::write(dir.join("spec.json"), serde_json::to_vec_pretty(spec)?)?;
        Ok(digest)
    }

    fn run(&self, spec: ContainerSpec) -> Result<ContainerInfo> {
        if self.dir(&spec.name)?.join("spec.json").exists() {
            bail!(
                "a container named {:?} already exists on host {}",
                spec.name,
                self.cfg.host
            );
        }
        if spec.runtime == Runtime::Vm {
            self.run_vm(&spec)?;
            let (dir, spec) = self.existing(&spec.name)?;
            return Ok(self.info(&spec.name, &spec, &dir));
        }
        let started = (|| {
            self.prepare(&spec)?;
            net::unlock(&self.netns(&spec.name));
            self.plug(&spec.name)?;
            let dir = self.dir(&spec.name)?;
            self.runc
                .run(&spec.name, &dir.join("bundle"), &dir.join("log"))
        })();
        if let Err(e) = started {
            let _ = self.remove(&spec.name);
            return Err(e);
        }
        let (dir, spec) = self.existing(&spec.name)?;
        Ok(self.info(&spec.name, &spec, &dir))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let dir = self.dir(name)?;
        if let Ok((_, spec)) = self.existing(name) {
            if spec.runtime == Runtime::Vm {
                self.remove_vm(&dir);
            }
        }
        self.end_lazy(name);
        self.runc.delete(name);
        net::unplug(&self.cfg.host, &port(name));
        net::del_netns(&self.netns(name));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    fn plug(&self, name: &str) -> Result<()> {
        let (_, spec) = self.existing(name)?;
        let ns = self.netns(name);
        net::plug(
            &self.cfg.host,
            &port(name),
            &ns,
            spec.service_ip,
            spec.prefix_len,
            &net::mac_for(spec.service_ip),
        )?;
        net::gratuitous_arp(&ns, spec.service_ip)
    }

    fn checkpoint(&self, name: &str, round: &str, opts: CheckpointOpts) -> Result<OpStats> {
        let (dir, spec) = self.existing(name)?;
        let images = round_dir(&dir, round)?;
        if opts.lazy_pages.is_some() && (opts.leave_running || opts.pre_dump) {
            bail!("a lazy-pages dump is the final one: it cannot leave {name} running");
        }
        let work = dir.join("work").join(round);
        for d in [&images, &work] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d)?;
        }
        let t = Instant::now();
        if let Some((release, _)) = &spec.checkpoint_signals {
            self.release(name, release)?;
        }
        // Local reactive Tunnel List Handler: the list goes into the checkpoint's metadata,
        // read while the function is frozen so it matches the memory being dumped.
        let frozen = match &spec.tunnel_list {
            Some(tl) => {
                self.runc.pause(name)?;
                let pid = self.runc.state(name).map(|s| s.pid).unwrap_or(0);
                let list = std::fs::read(TunnelListSpec::host_path(pid, &tl.file));
                match list {
                    Ok(b) => std::fs::write(images.join(TUNNELS_META), b)?,
                    Err(e) => tracing::warn!("{name}: no tunnel list to record: {e}"),
                }
                true
            }
            None => false,
        };
        let dumped = if opts.lazy_pages.is_some() {
            self.runc
                .checkpoint_lazy(name, &images, &work, &opts)
                .map(|child| {
                    lock(&self.lazy).insert(name.into(), Lazy::Serving(child));
                })
        } else {
            self.runc.checkpoint(name, &images, &work, &opts)
        };
        // The function keeps running at the source after a leave-running dump or a failed
        // one: thaw it and give it back what it released.
        if dumped.is_err() || opts.leave_running || opts.pre_dump {
            if frozen {
                let _ = self.runc.resume(name);
            }
            self.reattach(name, &spec);
        }
        dumped?;
        Ok(OpStats {
            ms: ms(t),
            bytes: dir_size(&images),
        })
    }

    fn push(&self, name: &str, round: &str, to: SocketAddr, base: Option<&str>) -> Result<OpStats> {
        let (dir, _) = self.existing(name)?;
        let images = round_dir(&dir, round)?;
        if !images.is_dir() {
            bail!(
                "no image round {round:?} of {name:?} on host {}",
                self.cfg.host
            );
        }
        let t = Instant::now();
        // The earlier round sits here exactly as the destination rebuilt it (checked by
        // digest when it arrived), so comparing against our copy finds what it lacks.
        let (data, round_sha256) = match base {
            Some(b) => (
                delta::encode(&images, &round_dir(&dir, b)?)?,
                Some(delta::digest(&images)?),
            ),
            None => {
                let mut tar = tar::Builder::new(Vec::new());
                // A pre-dump's `parent` link must arrive as a link, not as a second copy.
                tar.follow_symlinks(false);
                tar.append_dir_all(".", &images)?;
                (tar.into_inner()?, None)
            }
        };
        let sha = hex::encode(Sha256::digest(&data));
        let mut peer = Client::connect(to, &self.cfg.token)?;
        peer.call_with_body::<()>(
            &Request::Receive {
                name: name.into(),
                round: round.into(),
                size: data.len() as u64,
                sha256: sha,
                base: base.map(str::to_string),
                round_sha256,
            },
            &data,
        )
        .with_context(|| format!("transfer of {name:?} to {to} failed"))?;
        Ok(OpStats {
            ms: ms(t),
            bytes: data.len() as u64,
        })
    }

    fn receive(
        &self,
        name: &str,
        round: &str,
        size: u64,
        sha256: &str,
        delta: Option<(String, String)>,
        s: &mut TcpStream,
    ) -> Result<()> {
        if size > MAX_IMAGE_BYTES {
            bail!("refusing an image of {size} bytes (limit {MAX_IMAGE_BYTES})");
        }
        // Read the body first, whatever happens next, so the connection stays in step; a
        // sender that goes silent (link cut) fails the transfer instead of hanging it.
        let mut data = Vec::with_capacity(size as usize);
        s.set_read_timeout(Some(crate::client::STALL_TIMEOUT))?;
        let read = s.take(size).read_to_end(&mut data);
        s.set_read_timeout(Some(IDLE_TIMEOUT))?;
        read.context("the image stopped arriving")?;
        if data.len() as u64 != size {
            bail!(
                "image of {name:?} truncated: {} of {size} bytes arrived",
                data.len()
            );
        }
        let (dir, _) = self.existing(name)?;
        let got = hex::encode(Sha256::digest(&data));
        if got != sha256 {
            bail!("image of {name:?} is corrupt: sha256 {got} != {sha256}; not restoring it");
        }
        let images = round_dir(&dir, round)?;
        let tmp = dir.join("images").join(format!(".{round}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        match delta {
            Some((base, round_sha256)) => {
                delta::apply(&data, &round_dir(&dir, &base)?, &tmp, MAX_IMAGE_BYTES)
                    .with_context(|| format!("cannot rebuild round {round:?} of {name:?}"))?;
                let got = delta::digest(&tmp)?;
                if got != round_sha256 {
                    let _ = std::fs::remove_dir_all(&tmp);
                    bail!("round {round:?} of {name:?} rebuilt from {base:?} does not match the source's (sha256 {got} != {round_sha256}); not restoring it");
                }
            }
            None => tar::Archive::new(&data[..])
                .unpack(&tmp)
                .context("cannot unpack the image (disk full?)")?,
        }
        let _ = std::fs::remove_dir_all(&images);
        std::fs::rename(&tmp, &images)?;
        Ok(())
    }

    fn restore(&self, name: &str, round: &str, lazy_from: Option<SocketAddr>) -> Result<OpStats> {
        let (dir, _) = self.existing(name)?;
        let images = round_dir(&dir, round)?;
        if !images.join("inventory.img").exists() {
            bail!(
                "no complete image round {round:?} of {name:?} on host {}",
                self.cfg.host
            );
        }
        if self.runc.state(name).is_some() {
            bail!("container {name:?} already runs on host {}", self.cfg.host);
        }
        let work = dir.join("work").join(format!("restore-{round}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        // If this agent dies before the restore is done, the controller gives the function
        // back to its source; the marker makes the restarted agent fence what was restored.
        std::fs::write(dir.join(RESTORING), round)?;
        let t = Instant::now();
        let daemon = lazy_from
            .map(|from| runtime::runc::lazy_pages_daemon(&self.runc.criu, from, &images, &work))
            .transpose()?;
        let restored = self.runc.restore(
            name,
            &dir.join("bundle"),
            &images,
            &work,
            &dir.join("log"),
            daemon.is_some(),
        );
        if let Some(mut daemon) = daemon {
            if let Err(e) = restored {
                let _ = daemon.kill();
                let _ = daemon.wait();
                return Err(e);
            }
            let done = Arc::new(Mutex::new(None));
            let d = done.clone();
            let work = work.clone();
            std::thread::spawn(move || {
                let outcome = match daemon.wait() {
                    Ok(st) if st.success() => Ok(()),
                    st => {
                        let e = anyhow::anyhow!("criu lazy-pages failed ({st:?})");
                        Err(format!("{:#}", criu_error(e, &work, "lazy-pages.log")))
                    }
                };
                *lock(&d) = Some((Instant::now(), outcome));
            });
            lock(&self.lazy).insert(
                name.into(),
                Lazy::Pulling {
                    restored: Instant::now(),
                    done,
                },
            );
        }
        restored?;
        net::unlock(&self.netns(name));
        let spec = self.existing(name)?.1;
        if spec.sgi.is_some() {
            runtime::sgi::after_restore(&self.netns(name))?;
        }
        let expected = match &spec.tunnel_list {
            Some(tl) => self.hand_tunnel_list(name, tl, &images)?,
            None => None,
        };
        self.reattach(name, &spec);
        if let (Some(tl), Some(list)) = (&spec.tunnel_list, expected) {
            self.await_tunnel_list(name, tl, &list);
        }
        std::fs::remove_file(dir.join(RESTORING))?;
        Ok(OpStats {
            ms: ms(t),
            bytes: 0,
        })
    }
}

impl Agent {
    /// Waits (up to `LAZY_TIMEOUT`) until a lazily restored function has all its memory.
    fn await_pages(&self, name: &str) -> Result<OpStats> {
        let done = match lock(&self.lazy).get(name) {
            Some(Lazy::Pulling { restored, done }) => (*restored, done.clone()),
            _ => bail!("{name} was not restored lazily on {}", self.cfg.host),
        };
        let deadline = Instant::now() + LAZY_TIMEOUT;
        loop {
            if let Some((at, outcome)) = lock(&done.1).take() {
                lock(&self.lazy).remove(name);
                outcome.map_err(anyhow::Error::msg)?;
                return Ok(OpStats {
                    ms: at.duration_since(done.0).as_secs_f64() * 1e3,
                    bytes: 0,
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} still misses pages {} s after its restore",
                    LAZY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Ends whatever PostCopy of `name` is still in flight here: a source's page server gets
    /// a moment to finish serving (the destination may still be pulling), then is stopped.
    fn end_lazy(&self, name: &str) {
        match lock(&self.lazy).remove(name) {
            Some(Lazy::Serving(mut child)) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Some(Lazy::Pulling { .. }) | None => {}
        }
    }

    /// Asks the function to let go of its TUN fd and waits until it has, since a dump that
    /// meets one fails.
    fn release(&self, name: &str, signal: &str) -> Result<()> {
        let pid = self
            .runc
            .state(name)
            .map(|s| s.pid)
            .with_context(|| format!("{name} is not running"))?;
        self.runc.kill(name, signal)?;
        let deadline = Instant::now() + Duration::from_secs(3);
        while holds_tun(pid) {
            if Instant::now() > deadline {
                bail!("{name} did not release its TUN device within 3 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn reattach(&self, name: &str, spec: &ContainerSpec) {
        if let Some((_, reattach)) = &spec.checkpoint_signals {
            if let Err(e) = self.runc.kill(name, reattach) {
                tracing::warn!("could not tell {name} to re-attach: {e:#}");
            }
        }
    }
}

/// Marks a container whose restore has begun but not finished on this host.
const RESTORING: &str = "restoring";

impl Agent {
    /// Table 1, destination failure during restore: when this agent died mid-restore, the
    /// controller resumed the function at its source. Whatever the interrupted restore left
    /// here (a process, its service IP) must not run beside it: remove it before serving.
    fn fence_interrupted_restores(&self) {
        let Ok(list) = std::fs::read_dir(self.cfg.state.join("containers")) else {
            return;
        };
        for e in list.flatten() {
            if e.path().join(RESTORING).exists() {
                let name = e.file_name().to_string_lossy().into_owned();
                tracing::warn!(
                    "{name}: its restore here was interrupted; removing it (the source has it)"
                );
                // Off the fabric before it is killed: its FIN or RST would reach the peers
                // the source now serves and end their connections.
                net::unplug(&self.cfg.host, &port(&name));
                if let Err(err) = self.remove(&name) {
                    tracing::error!("{name}: cannot remove the interrupted restore: {err:#}");
                }
            }
        }
    }
}

/// File in an image round holding the tunnel list at checkpoint time.
const TUNNELS_META: &str = "corehop-tunnels.json";

impl Agent {
    /// Leaves the list a restored function must adopt in its sync file: the master's, which
    /// is current (global proactive), or else the one recorded at checkpoint (local reactive).
    fn hand_tunnel_list(
        &self,
        name: &str,
        tl: &TunnelListSpec,
        images: &Path,
    ) -> Result<Option<serde_json::Value>> {
        let from_master =
            self.cfg
                .master
                .and_then(|m| match crate::master::get(m, &self.cfg.token, name) {
                    Ok(e) => e.map(|e| e.tunnels),
                    Err(e) => {
                        tracing::warn!(
                            "{name}: tunnel master unreachable, using the checkpoint's list: {e:#}"
                        );
                        None
                    }
                });
        let (list, source) = match from_master {
            Some(l) => (l, "the tunnel master"),
            None => match std::fs::read(images.join(TUNNELS_META)) {
                Ok(b) => (
                    serde_json::from_slice(&b).context("corrupt tunnel list in the checkpoint")?,
                    "the checkpoint",
                ),
                Err(_) => return Ok(None),
            },
        };
        let pid = self
            .runc
            .state(name)
            .map(|s| s.pid)
            .context("restored function is not running")?;
        std::fs::write(
            TunnelListSpec::host_path(pid, &tl.sync_file),
            serde_json::to_vec(&list)?,
        )?;
        tracing::info!(
            "{name}: tunnel list of {} tunnels from {source}",
            list.as_array().map_or(0, |a| a.len())
        );
        Ok(Some(list))
    }

    /// Waits (briefly) until the function's own list equals the one it was handed.
    fn await_tunnel_list(&self, name: &str, tl: &TunnelListSpec, want: &serde_json::Value) {
        let Some(pid) = self.runc.state(name).map(|s| s.pid) else {
            return;
        };
        let path = TunnelListSpec::host_path(pid, &tl.file);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let now: Option<serde_json::Value> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if now.as_ref() == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!("{name} has not adopted the tunnel list it was handed within 2 s");
    }

    /// Pushes every change of a running function's tunnel list to the master.
    fn watch_tunnel_lists(&self) {
        let Some(master) = self.cfg.master else {
            return;
        };
        let mut seen: std::collections::HashMap<String, (std::time::SystemTime, u64)> =
            Default::default();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            // Not while a checkpoint or restore runs: a just-restored function still holds
            // its checkpoint's (older) list until it adopts the one it is handed.
            let Ok(_busy) = self.busy.try_lock() else {
                continue;
            };
            let Ok(list) = self.ps() else { continue };
            for c in list.into_iter().filter(|c| c.state == "running") {
                let Ok((_, spec)) = self.existing(&c.name) else {
                    continue;
                };
                let (Some(tl), Some(pid)) = (spec.tunnel_list, c.pid) else {
                    continue;
                };
                let path = TunnelListSpec::host_path(pid, &tl.file);
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
                if seen.get(&c.name) == Some(&stamp) {
                    continue;
                }
                let Ok(tunnels) = std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice(&b)?))
                else {
                    continue;
                };
                match crate::master::put(master, &self.cfg.token, &c.name, &self.cfg.host, tunnels)
                {
                    Ok(()) => {
                        seen.insert(c.name, stamp);
                    }
                    Err(e) => tracing::warn!(
                        "cannot report {}'s tunnel list to the master: {e:#}",
                        c.name
                    ),
                }
            }
        }
    }
}

/// How long a lazily restored function may take to pull its last page.
const LAZY_TIMEOUT: Duration = Duration::from_secs(120);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn holds_tun(pid: i64) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == Path::new("/dev/net/tun")))
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
        bytes: 0,
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
