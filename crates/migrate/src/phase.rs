//! The phase model every migration method is composed from. A [`Migration`] locates the
//! function, checks both ends, prepares the destination, then runs named, timed phases;
//! when a phase fails after the source stopped, it puts the function back at the source.
use crate::agents::{AgentCalls, Remote};
use agent_api::api::{Inspect, OpStats, Step};
use agent_api::tls::Credentials;
use agent_api::Client;
use anyhow::{bail, Context, Result};
use lab::spec::LabSpec;
use runtime::bundle::Runtime;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::net::SocketAddr;

use crate::Method;
use std::time::Instant;

/// The paper's phases, as the methods compose them (its symbol in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Tc: the (final) dump at the source.
    Checkpoint,
    /// Tt: its images to the destination.
    Transfer,
    /// Tn: the service IP and MAC moved (link flips, timed inside the agents).
    Network,
    /// Tr: the restore at the destination.
    Restore,
    /// Tpd, Tpdt: PreCopy's first round, dumped and shipped while the function serves.
    PreDump,
    PreTransfer,
    /// Td, Tdt: PreCopy's final round.
    Dump,
    DumpTransfer,
    /// Tpre, Tl, Tpost: VM PreCopy's pre-live checks, QEMU's live copy, the wait until the
    /// destination runs.
    PreLive,
    Live,
    Post,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Checkpoint => "checkpoint",
            Phase::Transfer => "transfer",
            Phase::Network => "network",
            Phase::Restore => "restore",
            Phase::PreDump => "pre_dump",
            Phase::PreTransfer => "pre_transfer",
            Phase::Dump => "dump",
            Phase::DumpTransfer => "dump_transfer",
            Phase::PreLive => "pre_live",
            Phase::Live => "live",
            Phase::Post => "post",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point where the controller starts a step: the destination's preparation, then each
/// phase. The fault harness injects its faults there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Prepare,
    Phase(Phase),
}

impl Boundary {
    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::Prepare => "prepare",
            Boundary::Phase(p) => p.as_str(),
        }
    }
}

/// Called at each [`Boundary`] before the controller starts that step.
pub type Observer = Box<dyn FnMut(Boundary) + Send>;

/// What a report is of: a migration by one of the methods, a standby checkpoint, or a
/// recovery from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Migration(Method),
    Standby,
    Recover,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Migration(m) => m.as_str(),
            Operation::Standby => "standby",
            Operation::Recover => "recover",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Phase durations in the order they ran, serialized as `{"<phase>_ms": ms, ...}`.
#[derive(Debug, Clone, Default)]
pub struct Phases(pub Vec<(Phase, f64)>);

impl Serialize for Phases {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(&format!("{}_ms", k.as_str()), &round3(*v))?;
        }
        m.end()
    }
}

impl Phases {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| *v)
    }
}

/// One part of a container migration's frozen window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The MAC moved: the source's link down, the destination's up and announced (timed
    /// by the controller, round trips included).
    Network,
    /// A step an agent timed (freeze, dump, restore, hooks).
    Agent(Step),
    /// The images on the wire, source agent to destination agent.
    Transfer,
    /// The rest: the controller's round trips and the agents' bookkeeping around the steps.
    Controller,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Network => "network",
            Part::Agent(s) => s.as_str(),
            Part::Transfer => "transfer",
            Part::Controller => "controller",
        }
    }
}

/// Where a container migration's downtime went, from the freeze at the source until the
/// function served again at the destination: every part that took time, CRIU's own figures,
/// and every program started meanwhile (anywhere on the machine).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    #[serde(serialize_with = "ser_parts")]
    pub parts: Vec<(Part, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criu_dump: Option<runtime::criu_stats::DumpStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criu_restore: Option<runtime::criu_stats::RestoreStats>,
    /// Packets that reached the destination while the function moved, held there and
    /// delivered to the restored sockets (none lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_packets: Option<u64>,
    /// Programs that corehop (the controller, the agents on this machine, their children)
    /// exec'd inside the window (None: the recorder could not run).
    pub processes_started: Option<usize>,
    /// Their names, in order.
    pub programs: Vec<String>,
    /// Programs anything else on the machine exec'd meanwhile (a shared machine's load).
    pub other_processes: Option<usize>,
}

fn ser_parts<S: Serializer>(v: &[(Part, f64)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, ms) in v {
        m.serialize_entry(&format!("{}_ms", k.as_str()), &round3(*ms))?;
    }
    m.end()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ser_ms<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3(*v))
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub method: Operation,
    pub from: String,
    pub to: String,
    /// Sum of the phases: the migration time of the paper's formulas.
    #[serde(serialize_with = "ser_ms")]
    pub total_ms: f64,
    /// From the moment the function stopped serving at the source until it served again.
    #[serde(serialize_with = "ser_ms")]
    pub downtime_ms: f64,
    pub phases: Phases,
    /// Checkpoint image bytes sent to the destination, all rounds.
    pub image_bytes: u64,
    /// Destination preparation (bundle, netns and plugged veth for a container; the waiting
    /// QEMU for a VM) before the migration proper.
    #[serde(serialize_with = "ser_ms")]
    pub prepare_ms: f64,
    /// Whether `total_ms` counts `prepare_ms`: never, for containers and VMs alike.
    pub prepare_in_total: bool,
    /// Every freeze of the function added: the downtime, plus each leave-running dump's
    /// freeze (PreCopy's first round where the kernel has no dirty-page tracking).
    #[serde(serialize_with = "ser_ms")]
    pub frozen_ms: f64,
    #[serde(serialize_with = "ser_ms")]
    pub longest_freeze_ms: f64,
    /// When the first freeze of any round began (UNIX ms): outage windows start here.
    pub first_frozen_unix_ms: u64,
    /// Container migrations: where the downtime went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Wall-clock (UNIX ms) when the function stopped serving and when it served again,
    /// to match the outages probes and UEs saw against this migration.
    pub frozen_unix_ms: u64,
    pub resumed_unix_ms: u64,
    /// Bytes each image round put on the wire, in order, when there was more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_bytes: Option<Vec<u64>>,
    /// Container PreCopy: how its rounds were made, [`PRE_COPY_CRIU`] or
    /// [`PRE_COPY_DELTA`] (which one depends on the source kernel's dirty-page tracking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_copy: Option<String>,
    /// Bytes of each checkpoint round's images at the source, in order, when there was more
    /// than one (a CRIU pre-dump round holds memory only; a final dump on a pre-dump parent
    /// only the pages dirtied since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump_bytes: Option<Vec<u64>>,
    /// PostCopy: from the resume at the destination until its last page arrived.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_ms")]
    pub last_page_ms: Option<f64>,
    /// VM PreCopy: the downtime QEMU measured (its final stop-and-copy); `downtime_ms` adds
    /// the wait until the destination ran.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_opt_ms")]
    pub qemu_downtime_ms: Option<f64>,
}

fn ser_opt_ms<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&round3(*v)),
        None => s.serialize_none(),
    }
}

/// [`Report::pre_copy`] when the rounds were CRIU pre-dumps (kernel dirty-page tracking):
/// the final dump writes only the pages dirtied since the pre-dump.
pub const PRE_COPY_CRIU: &str = "criu-pre-dump";
/// [`Report::pre_copy`] without dirty-page tracking: a full leave-running dump first, then
/// only the 4 KiB blocks of the final dump that differ from it go on the wire.
pub const PRE_COPY_DELTA: &str = "leave-running-dump+delta";

/// How a checkpoint treats the function.
#[derive(Debug, Clone, Copy)]
pub enum Dump<'a> {
    /// Everything, and the function keeps serving (PreCopy without dirty tracking, standby).
    LeaveRunning,
    /// CRIU pre-dump: memory only, dirty pages tracked from here; `parent` is the round
    /// before, whose pages this one leaves out.
    PreDump { parent: Option<&'a str> },
    /// The function stops here, downtime starts; `parent` as for a pre-dump.
    Final { parent: Option<&'a str> },
    /// PostCopy: the function stops, its memory stays at the source, served on this port
    /// of the source agent's address to the destination as it faults.
    Lazy { port: u16 },
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Migration {
    pub name: String,
    pub method: Operation,
    pub from: String,
    pub to: String,
    pub(crate) src: Box<dyn AgentCalls>,
    /// A final dump was asked for: if its answer never came, whether it happened is unknown.
    dump_asked: Option<String>,
    pub(crate) dst: Box<dyn AgentCalls>,
    pub dst_addr: SocketAddr,
    pub inspect: Inspect,
    /// The source can pre-dump (kernel dirty-page tracking).
    pub dirty_tracking: bool,
    /// VM PreCopy: the QEMU waiting at the destination (started when it was prepared).
    vm_incoming: Option<agent_api::api::VmIncoming>,
    phases: Phases,
    /// Time the running phase spent in link flips (timed by the agents): it is Tn, not
    /// part of that phase.
    carved_ms: f64,
    network_ms: f64,
    round_bytes: Vec<u64>,
    dump_bytes: Vec<u64>,
    /// Set by the method: see [`Report::pre_copy`].
    pub pre_copy: Option<&'static str>,
    last_page_ms: Option<f64>,
    qemu_downtime_ms: Option<f64>,
    prepare_ms: f64,
    frozen_at: Option<(Instant, u64)>,
    /// Each leave-running dump's freeze: when it began (UNIX ms) and how long it lasted.
    leave_running_freezes: Vec<(u64, f64)>,
    /// When the function served again at the destination (PostCopy goes on pulling memory
    /// after that, which is no downtime).
    resumed_at: Option<(Instant, u64)>,
    /// The steps the agents timed inside the frozen window, and CRIU's figures.
    window_steps: Vec<(Part, f64)>,
    criu_dump: Option<runtime::criu_stats::DumpStats>,
    criu_restore: Option<runtime::criu_stats::RestoreStats>,
    held_packets: Option<u64>,
    /// Told of each step before it starts.
    before: Observer,
    /// Every program started on this machine while the migration ran.
    execs: Option<measure::execs::ExecRecorder>,
    /// What a rollback must undo: the round the source stopped in, and whether its memory
    /// is in that round (not after a lazy dump).
    source_stopped: Option<(String, bool)>,
    /// The source's link was taken down for the final dump.
    source_unplugged: bool,
    /// QEMU completed: the source VM is stopped for good unless we resume it.
    vm_source_stopped: bool,
}

/// The destination made ready for `inspect`'s function: a QEMU waiting for a VM's state,
/// or an unplugged bundle on the same rootfs for a container, with the source's connection
/// to it open. Answers whether the source tracks dirty memory, and the waiting QEMU.
fn prepare(
    src: &mut Client,
    dst: &mut Client,
    inspect: &Inspect,
    from: &str,
    to: &str,
    dst_addr: SocketAddr,
) -> Result<(bool, Option<agent_api::api::VmIncoming>)> {
    let name = &inspect.spec.name;
    let prepared = if inspect.spec.runtime == Runtime::Vm {
        dst.vm_incoming(&inspect.spec, from)
            .map(|i| (false, Some(i)))
    } else {
        // Name the host: a cut link can end either question.
        let h = src
            .require_criu()
            .with_context(|| format!("source {from} cannot checkpoint"))?;
        dst.require_criu()
            .with_context(|| format!("destination {to} cannot restore"))?;
        dst.prepare(&inspect.spec).and_then(|digest| {
            if digest != inspect.rootfs_digest {
                bail!("rootfs of {name} on {to} differs from {from} ({digest} vs {}); refusing to restore on a mismatched rootfs",
                    inspect.rootfs_digest);
            }
            // The images' connection is opened (TLS handshake and all) now, not in the freeze.
            src.dial(dst_addr)
                .with_context(|| format!("{from} cannot reach {to}'s agent"))?;
            Ok((h.dirty_tracking, None))
        })
    };
    if prepared.is_err() {
        let _ = dst.remove(name);
    }
    prepared.with_context(|| format!("cannot prepare {name} on {to}"))
}

/// Who leads a migration, for the journal: `pid@machine`.
fn controller_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {}@{}", std::process::id(), host.trim())
}

/// Finds which host runs `name`, asking every agent of the lab.
pub fn locate(spec: &LabSpec, creds: &Credentials, name: &str) -> Result<(String, Client)> {
    lab::spec::validate_name(name, "container")?;
    let mut unreachable = Vec::new();
    for h in &spec.hosts {
        let mut c = match Client::connect(lab::agent_addr(spec, &h.name)?, creds) {
            Ok(c) => c,
            Err(e) => {
                unreachable.push(format!("{}: {e:#}", h.name));
                continue;
            }
        };
        if c.ps()?
            .iter()
            .any(|i| i.name == name && i.state == "running")
        {
            return Ok((h.name.clone(), c));
        }
    }
    if unreachable.is_empty() {
        bail!("no running container named {name:?} in the lab (see `corehop ps`)");
    }
    bail!(
        "no running container named {name:?} found; unreachable agents: {}",
        unreachable.join("; ")
    )
}

impl Migration {
    /// Pre-checks and destination preparation. Nothing at the source changes here, so a
    /// failure leaves the function running untouched.
    pub fn begin(
        spec: &LabSpec,
        creds: &Credentials,
        name: &str,
        to: &str,
        method: Operation,
        mut before: Observer,
    ) -> Result<Self> {
        let dst_addr = lab::agent_addr(spec, to)?;
        let (from, mut src) = locate(spec, creds, name)?;
        if from == to {
            bail!("{name} already runs on {to}; pick another destination");
        }
        let mut dst =
            Client::connect(dst_addr, creds).with_context(|| format!("destination {to}"))?;
        let inspect = src.inspect(name)?;
        let is_vm = inspect.spec.runtime == Runtime::Vm;
        let vm_method = method == Operation::Migration(Method::VmPreCopy);
        let vm = Method::VmPreCopy.as_str();
        match (is_vm, vm_method) {
            (true, false) => bail!("{name} runs as a VM on {from}: {method} moves containers; use --method {vm} (the default for a VM)"),
            (false, true) => bail!("{name} is a container on {from}: {vm} moves VMs; use stop-and-copy, pre-copy or post-copy"),
            _ => {}
        }
        if !inspect.cannot_carry.is_empty() {
            bail!(
                "{name} cannot be checkpointed on {from}: {}; it keeps running there",
                inspect.cannot_carry.join("; ")
            );
        }
        // Refused if another controller migrates it.
        let journal = agent_api::api::Journal {
            to: to.into(),
            method: method.as_str().into(),
            controller: controller_id(),
            started_unix_ms: unix_ms(),
        };
        if let Some(j) = src.begin_migration(name, &journal)? {
            // A controller died (or lost its source agent) before it settled a migration
            // of this function: settled first, as `--resume` would, then begun afresh.
            tracing::warn!(
                "{name}: a migration to {} ({}) by {} was interrupted; settling it first",
                j.to,
                j.method,
                j.controller
            );
            drop((src, dst));
            let r = crate::resume(spec, creds, name)?;
            tracing::warn!("{name}: {r}");
            return Self::begin(spec, creds, name, to, method, before);
        }
        let execs = match measure::execs::ExecRecorder::start() {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("cannot count the processes started during the migration: {e:#}");
                None
            }
        };
        before(Boundary::Prepare);
        let t = Instant::now();
        let prepared = prepare(&mut src, &mut dst, &inspect, &from, to, dst_addr);
        let (dirty_tracking, vm_incoming) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // Nothing changed at the source: its journal goes too.
                let _ = src.end_migration(name);
                return Err(e);
            }
        };
        let src = Box::new(Remote {
            client: src,
            creds: creds.clone(),
        });
        let dst = Box::new(Remote {
            client: dst,
            creds: creds.clone(),
        });
        let mut m = Migration::with_agents(src, dst, dst_addr, name, &from, to, method, inspect);
        m.dirty_tracking = dirty_tracking;
        m.vm_incoming = vm_incoming;
        m.prepare_ms = t.elapsed().as_secs_f64() * 1e3;
        m.execs = execs;
        m.before = before;
        Ok(m)
    }

    /// A migration over these agents, with nothing done yet (after [`Migration::begin`]'s
    /// checks and preparation; tests script the agents).
    #[allow(clippy::too_many_arguments)]
    pub fn with_agents(
        src: Box<dyn AgentCalls>,
        dst: Box<dyn AgentCalls>,
        dst_addr: SocketAddr,
        name: &str,
        from: &str,
        to: &str,
        method: Operation,
        inspect: Inspect,
    ) -> Migration {
        Migration {
            name: name.into(),
            method,
            from: from.into(),
            to: to.into(),
            src,
            dump_asked: None,
            dst,
            dst_addr,
            inspect,
            dirty_tracking: false,
            vm_incoming: None,
            phases: Phases::default(),
            carved_ms: 0.0,
            network_ms: 0.0,
            round_bytes: Vec::new(),
            dump_bytes: Vec::new(),
            pre_copy: None,
            last_page_ms: None,
            qemu_downtime_ms: None,
            prepare_ms: 0.0,
            frozen_at: None,
            leave_running_freezes: Vec::new(),
            resumed_at: None,
            window_steps: Vec::new(),
            criu_dump: None,
            criu_restore: None,
            held_packets: None,
            execs: None,
            source_stopped: None,
            source_unplugged: false,
            vm_source_stopped: false,
            before: Box::new(|_| {}),
        }
    }

    /// The QEMU waiting at the destination (set by [`Migration::begin`] for a VM).
    pub fn set_vm_incoming(&mut self, incoming: agent_api::api::VmIncoming) {
        self.vm_incoming = Some(incoming);
    }

    /// Runs one phase; its wall time (as the controller sees it, less the link flips inside
    /// it, which are Tn) is recorded. On failure the migration is rolled back and the error
    /// names the phase.
    pub fn phase<T>(&mut self, phase: Phase, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        (self.before)(Boundary::Phase(phase));
        let t = Instant::now();
        self.carved_ms = 0.0;
        match f(self) {
            Ok(v) => {
                let ms = t.elapsed().as_secs_f64() * 1e3 - self.carved_ms;
                self.phases.0.push((phase, ms));
                Ok(v)
            }
            Err(e) => {
                let name = phase.as_str();
                // Settled: no journal is left for `--resume`. A failed rollback keeps it.
                let rollback = self.rollback().map(|()| {
                    let name = self.name.clone();
                    if let Err(e) = self.src.end_migration(&name) {
                        tracing::warn!("{name} rolled back, but its journal stays: {e:#}");
                    }
                });
                let e = e.context(format!("migration of {} failed in phase {name}", self.name));
                Err(match rollback {
                    Ok(()) => e.context(format!("{} is running again on {}", self.name, self.from)),
                    // No image holds a lazy dump's memory: no `recover` to offer.
                    Err(r) if matches!(self.source_stopped, Some((_, false))) => e.context(format!(
                        "ROLLBACK FAILED, {name} may be down: {r:#}; its memory is in its frozen tasks on {from}, which CRIU's page server holds (PostCopy), and in no image",
                        name = self.name,
                        from = self.from,
                    )),
                    Err(r) => e.context(format!(
                        "ROLLBACK FAILED, {name} may be down: {r:#}; its frozen image is on {from}: \
                         once {from}'s agent answers again, `corehop recover {name} --on {from}{round}` resumes it (or finds it still running)",
                        name = self.name,
                        from = self.from,
                        round = self
                            .source_stopped
                            .as_ref()
                            .map(|(r, _)| r.clone())
                            .or(self.dump_asked.clone())
                            .map(|r| format!(" --round {r}"))
                            .unwrap_or_default(),
                    )),
                })
            }
        }
    }

    /// Tn: the agents' link flips inside the running phase, moved out of it (a link
    /// already down or up costs the agent a no-op, counted too).
    fn carve_network(&mut self, st: &OpStats) {
        for (step, ms) in &st.steps {
            if matches!(
                step,
                Step::Lock | Step::LinkUp | Step::Announce | Step::Release
            ) {
                self.carved_ms += ms;
                self.network_ms += ms;
            }
        }
    }

    /// This controller and the agents of both hosts where they run on this machine (the
    /// lab's pid files): the processes whose programs the frozen window accounts for.
    fn corehop_pids(&self) -> Vec<u32> {
        let agents = [&self.from, &self.to]
            .into_iter()
            .filter_map(|h| lab::agent_pid(h))
            .filter_map(|p| u32::try_from(p).ok());
        std::iter::once(std::process::id()).chain(agents).collect()
    }

    /// The agent's steps of an operation inside the frozen window.
    fn in_window(&mut self, st: &OpStats) {
        self.window_steps
            .extend(st.steps.iter().map(|(s, ms)| (Part::Agent(*s), *ms)));
    }

    /// Dumps the function into image round `round`; a final or lazy dump is where
    /// downtime starts (and the source agent takes its link down first).
    pub fn checkpoint(&mut self, round: &str, how: Dump) -> Result<u64> {
        let (leave_running, parent, pre_dump, lazy_port) = match how {
            Dump::LeaveRunning => (true, None, false, None),
            Dump::PreDump { parent } => (true, parent, true, None),
            Dump::Final { parent } => (false, parent, false, None),
            Dump::Lazy { port } => (false, None, false, Some(port)),
        };
        let name = self.name.clone();
        if !leave_running {
            self.frozen_at = Some((Instant::now(), unix_ms()));
            // Tn: the source's link goes down (the network lock) and the destination's
            // comes up and announces the MAC; what reaches the destination from here on is
            // held there until its sockets are restored, so no packet is lost.
            let t = Instant::now();
            self.src.unplug(&name)?;
            self.source_unplugged = true;
            self.dst.plug(&name)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            self.carved_ms += ms;
            self.network_ms += ms;
            self.window_steps.push((Part::Network, ms));
            if lazy_port.is_none() {
                self.dump_asked = Some(round.into());
            }
        }
        let started = unix_ms();
        let st = self
            .src
            .checkpoint(&name, round, leave_running, parent, pre_dump, lazy_port)?;
        if let Some(f) = st.frozen_ms {
            self.leave_running_freezes.push((started, f));
        }
        if !leave_running {
            self.source_stopped = Some((round.into(), lazy_port.is_none()));
            self.carve_network(&st);
            self.in_window(&st);
            self.criu_dump = st.criu_dump.clone();
        }
        self.dump_bytes.push(st.bytes);
        Ok(st.bytes)
    }

    /// Ships image round `round` from the source agent to the destination agent; with
    /// `base`, only what differs from that earlier round the destination already holds.
    pub fn transfer(&mut self, round: &str, base: Option<&str>) -> Result<u64> {
        let name = self.name.clone();
        let st = self.src.push(&name, round, self.dst_addr, base)?;
        if self.frozen_at.is_some() {
            self.window_steps.push((Part::Transfer, st.ms));
        }
        self.round_bytes.push(st.bytes);
        Ok(st.bytes)
    }

    /// Restores at the destination, which then brings the function's link up (the rest of
    /// the network move); with `lazy_port`, memory then comes on demand from the source's
    /// page server on that port.
    pub fn restore(&mut self, round: &str, lazy_port: Option<u16>) -> Result<()> {
        let name = self.name.clone();
        let from = lazy_port.map(|p| SocketAddr::new(self.src.addr().ip(), p));
        let st = self.dst.restore(&name, round, from, false)?;
        self.resumed_at = Some((Instant::now(), unix_ms()));
        self.carve_network(&st);
        self.in_window(&st);
        self.criu_restore = st.criu_restore.clone();
        self.held_packets = st.held_packets;
        Ok(())
    }

    /// PostCopy: waits until the destination has pulled the last page. The function already
    /// serves, so this is no phase and no downtime; a failure here cannot be rolled back
    /// (its memory is split between the hosts), and says so.
    pub fn await_pages(&mut self) -> Result<()> {
        let name = self.name.clone();
        let st = self.dst.await_pages(&name).with_context(|| {
            format!(
                "{name} resumed on {} but did not get all its memory; it may be broken there",
                self.to
            )
        })?;
        self.last_page_ms = Some(st.ms);
        Ok(())
    }

    /// VM PreCopy's Tpre: Table 2's checks of the source VM against what the destination
    /// (whose QEMU waits since `begin`) offers. Returns where the destination listens.
    pub fn vm_pre_live(&mut self) -> Result<String> {
        let incoming = self
            .vm_incoming
            .clone()
            .context("no QEMU was prepared at the destination")?;
        let name = self.name.clone();
        self.src
            .vm_check(&name, &incoming.caps)
            .with_context(|| format!("{name} cannot move to {}", self.to))?;
        Ok(incoming.uri)
    }

    /// VM PreCopy's Tl: QEMU's iterative copy to `uri` until it completes; the source VM
    /// stopped for QEMU's last round, which is where the downtime began.
    pub fn vm_live(&mut self, uri: &str) -> Result<()> {
        let name = self.name.clone();
        let to = self.to.clone();
        let st = self.src.vm_migrate(&name, uri, &to)?;
        let qemu = st.downtime_ms as f64;
        let ago = std::time::Duration::from_secs_f64(qemu / 1e3);
        self.frozen_at = Some((
            Instant::now().checked_sub(ago).unwrap_or_else(Instant::now),
            unix_ms().saturating_sub(st.downtime_ms),
        ));
        self.qemu_downtime_ms = Some(qemu);
        self.vm_source_stopped = true;
        self.round_bytes.push(st.ram_transferred);
        Ok(())
    }

    /// VM PreCopy's Tpost: until the destination VM runs (its NIC announces the service
    /// IP and MAC itself, so there is no network move).
    pub fn vm_post(&mut self) -> Result<()> {
        let name = self.name.clone();
        self.dst.vm_await(&name)?;
        self.resumed_at = Some((Instant::now(), unix_ms()));
        Ok(())
    }

    /// The function runs at the destination: the source forgets it.
    pub fn finish(self) -> Result<Report> {
        self.end(true)
    }

    /// A standby checkpoint: the function keeps running at the source; its image waits at
    /// the destination for [`crate::recover`].
    pub fn finish_standby(self) -> Result<Report> {
        self.end(false)
    }

    fn end(mut self, forget_source: bool) -> Result<Report> {
        let (resumed, resumed_unix_ms) = self.resumed_at.unwrap_or((Instant::now(), unix_ms()));
        let (downtime_ms, frozen_unix_ms) = self
            .frozen_at
            .map(|(t, u)| (resumed.duration_since(t).as_secs_f64() * 1e3, u))
            .unwrap_or((0.0, resumed_unix_ms));
        // Forgetting the function at the source drops its journal with it.
        let cleanup = if forget_source {
            self.src.remove(&self.name)
        } else {
            self.src.end_migration(&self.name)
        };
        if let Err(e) = cleanup {
            tracing::warn!(
                "{} is settled, but cleaning up on {} failed: {e:#}",
                self.name,
                self.from
            );
        }
        // Tn happened inside the dump and the restore: it goes before the restore, where
        // the paper's formulas put it.
        if self.network_ms > 0.0 {
            let at = self
                .phases
                .0
                .iter()
                .position(|(p, _)| *p == Phase::Restore)
                .unwrap_or(self.phases.0.len());
            self.phases.0.insert(at, (Phase::Network, self.network_ms));
        }
        let window = match (&self.frozen_at, self.inspect.spec.runtime) {
            (Some((t, _)), Runtime::Container) => {
                let mut parts = std::mem::take(&mut self.window_steps);
                let accounted: f64 = parts.iter().map(|(_, v)| v).sum();
                parts.push((Part::Controller, (downtime_ms - accounted).max(0.0)));
                let (ours, others): (Option<Vec<_>>, Option<usize>) =
                    match self.execs.as_ref().map(|r| r.between(*t, resumed)) {
                        Some(all) => {
                            let roots = self.corehop_pids();
                            let (ours, others): (Vec<_>, Vec<_>) =
                                all.into_iter().partition(|e| e.started_by(&roots));
                            (Some(ours), Some(others.len()))
                        }
                        None => (None, None),
                    };
                Some(Window {
                    parts,
                    criu_dump: self.criu_dump.take(),
                    criu_restore: self.criu_restore.take(),
                    held_packets: self.held_packets,
                    processes_started: ours.as_ref().map(Vec::len),
                    programs: ours.into_iter().flatten().map(|e| e.comm).collect(),
                    other_processes: others,
                })
            }
            _ => None,
        };
        let freezes = self.leave_running_freezes.iter().map(|(_, f)| *f);
        let frozen_ms = downtime_ms + freezes.clone().sum::<f64>();
        let longest_freeze_ms = freezes.fold(downtime_ms, f64::max);
        let first_frozen_unix_ms = self
            .leave_running_freezes
            .first()
            .map_or(frozen_unix_ms, |(u, _)| (*u).min(frozen_unix_ms));
        Ok(Report {
            total_ms: self.phases.0.iter().map(|(_, v)| v).sum(),
            name: self.name,
            method: self.method,
            from: self.from,
            to: self.to,
            downtime_ms,
            phases: self.phases,
            image_bytes: self.round_bytes.iter().sum(),
            round_bytes: (self.round_bytes.len() > 1).then_some(self.round_bytes),
            dump_bytes: (self.dump_bytes.len() > 1).then_some(self.dump_bytes),
            pre_copy: self.pre_copy.map(str::to_string),
            last_page_ms: self.last_page_ms,
            qemu_downtime_ms: self.qemu_downtime_ms,
            prepare_ms: self.prepare_ms,
            prepare_in_total: false,
            frozen_ms,
            longest_freeze_ms,
            first_frozen_unix_ms,
            window,
            frozen_unix_ms,
            resumed_unix_ms,
        })
    }

    /// A migration whose controller died before it was settled, rolled back from what its
    /// source says now (`src_state`) instead of from what this controller did.
    pub(crate) fn roll_back_interrupted(&mut self, src_state: &str) -> Result<()> {
        let name = self.name.clone();
        match (self.method, src_state) {
            (Operation::Migration(Method::VmPreCopy), "running") => {}
            (Operation::Migration(Method::VmPreCopy), _) => self.vm_source_stopped = true,
            // Frozen for a lazy dump (CRIU lets it go) or not dumped yet (its link may be
            // down for the dump).
            (Operation::Migration(Method::PostCopy), "running") => {
                if let Err(e) = self.src.resume_lazy(&name) {
                    tracing::info!("{name}: no lazy dump to undo ({e:#})");
                    self.source_unplugged = true;
                }
            }
            (_, "running") => self.source_unplugged = true,
            // Dumped: every container method's last round is `final`.
            _ => self.source_stopped = Some(("final".into(), true)),
        }
        self.rollback()
    }

    /// Table 1's recovery: drop whatever the destination received (its link goes with it),
    /// restore the source from its own frozen image (which brings its link up again), or
    /// resume the source VM.
    fn rollback(&mut self) -> Result<()> {
        let name = self.name.clone();
        let _ = self.dst.remove(&name);
        if self.source_unplugged && self.source_stopped.is_none() && self.dump_asked.is_none() {
            // Down for a dump that never started: up again.
            self.src.plug(&name)?;
        }
        if self.vm_source_stopped {
            self.src.vm_resume(&name)?;
        }
        match self.source_stopped.clone() {
            Some((round, true)) => {
                self.src.restore(&name, &round, None, false)?;
            }
            // The memory is still in the source's frozen tasks, which CRIU's page server
            // reads from: told to give up, CRIU lets them run again.
            Some((_, false)) => self.src.resume_lazy(&name)?,
            None => {
                if let Some(round) = self.dump_asked.clone() {
                    self.settle_unknown_dump(&name, &round)?;
                }
            }
        }
        Ok(())
    }

    /// The final dump's answer never came (the source agent died or the link broke): ask
    /// the source afresh whether the function still runs or now lives in its image. Still
    /// running, its link may have been taken down for the dump: it comes up again.
    fn settle_unknown_dump(&mut self, name: &str, round: &str) -> Result<()> {
        let mut src = self.src.reconnect().context(
            "cannot tell whether the function was dumped: the source agent does not answer",
        )?;
        match src.inspect(name)?.info.state.as_str() {
            "running" => src.plug(name).map(|_| ()),
            "checkpointed" | "stopped" => src.restore(name, round, None, false).map(|_| ()),
            other => bail!("{name} is {other} on {}", self.from),
        }
    }
}
