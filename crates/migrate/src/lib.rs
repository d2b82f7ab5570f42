//! Live migration: one phase model, each method a short composition of its phases.
pub mod agents;
pub mod phase;
pub mod resume;

use agent_api::tls::Credentials;
use anyhow::{bail, Result};
use lab::spec::LabSpec;
pub use phase::{
    Boundary, Dump, Migration, Observer, Operation, Part, Phase, Report, Window, PRE_COPY_CRIU,
    PRE_COPY_DELTA,
};
pub use resume::{resume, Resumed};

/// Serialized as its `as_str` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    StopAndCopy,
    PreCopy,
    PostCopy,
    VmPreCopy,
}

pub const METHODS: &[Method] = &[
    Method::StopAndCopy,
    Method::PreCopy,
    Method::PostCopy,
    Method::VmPreCopy,
];

impl std::str::FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match METHODS.iter().find(|m| m.as_str() == s) {
            Some(m) => Ok(*m),
            None => bail!(
                "unknown method {s:?}; available: {}",
                METHODS
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::StopAndCopy => "stop-and-copy",
            Method::PreCopy => "pre-copy",
            Method::PostCopy => "post-copy",
            Method::VmPreCopy => "vm-pre-copy",
        }
    }

    /// The method `corehop migrate` uses when none is named: QEMU's for a VM, the
    /// simplest CRIU one for a container.
    pub fn default_for(runtime: runtime::bundle::Runtime) -> Method {
        match runtime {
            runtime::bundle::Runtime::Vm => Method::VmPreCopy,
            runtime::bundle::Runtime::Container => Method::StopAndCopy,
        }
    }
}

/// Port of the source agent's address where CRIU serves a PostCopy's memory.
pub const PAGE_SERVER_PORT: u16 = 7072;

/// Migrates the container `name` to host `to` with `method`. In every container method the
/// network move (Tn) is two link flips done by the agents: the source's link goes down just
/// before the final dump (it is also the network lock) and the destination's, plugged down
/// when it was prepared, comes up as soon as the restore is done; the report carves both out
/// of the phases that contain them.
pub fn migrate(
    spec: &LabSpec,
    creds: &Credentials,
    name: &str,
    to: &str,
    method: Method,
) -> Result<Report> {
    migrate_observed(spec, creds, name, to, method, Box::new(|_| {}))
}

/// [`migrate`], telling `before` of each step as it starts.
pub fn migrate_observed(
    spec: &LabSpec,
    creds: &Credentials,
    name: &str,
    to: &str,
    method: Method,
    before: Observer,
) -> Result<Report> {
    let m = Migration::begin(spec, creds, name, to, Operation::Migration(method), before)?;
    run(m, method)
}

/// The phases of `method`, on a migration begun (checked and prepared).
pub fn run(mut m: Migration, method: Method) -> Result<Report> {
    match method {
        // Tcm = Tc + Tt + Tn + Tr; the function is down for all of it.
        Method::StopAndCopy => {
            m.phase(Phase::Checkpoint, |m| {
                m.checkpoint("final", Dump::Final { parent: None })
            })?;
            m.phase(Phase::Transfer, |m| m.transfer("final", None))?;
            m.phase(Phase::Restore, |m| m.restore("final", None))?;
        }
        // Tpcm = Tpd + Tpdt + Td + Tdt + Tn + Tr; down only from Td on. The first round is
        // shipped while the function serves; the final one carries only what changed since:
        // CRIU leaves the pre-dumped pages out where the kernel tracks dirty memory, and
        // elsewhere the agents send only the changed blocks of a full leave-running dump
        // (whose freeze the report counts in `frozen_ms`).
        Method::PreCopy => {
            let tracked = m.dirty_tracking;
            m.pre_copy = Some(if tracked {
                PRE_COPY_CRIU
            } else {
                PRE_COPY_DELTA
            });
            let (first, last, base) = if tracked {
                (
                    Dump::PreDump { parent: None },
                    Dump::Final {
                        parent: Some("pre"),
                    },
                    None,
                )
            } else {
                (
                    Dump::LeaveRunning,
                    Dump::Final { parent: None },
                    Some("pre"),
                )
            };
            m.phase(Phase::PreDump, |m| m.checkpoint("pre", first))?;
            m.phase(Phase::PreTransfer, |m| m.transfer("pre", None))?;
            m.phase(Phase::Dump, |m| m.checkpoint("final", last))?;
            m.phase(Phase::DumpTransfer, |m| m.transfer("final", base))?;
            m.phase(Phase::Restore, |m| m.restore("final", None))?;
        }
        // Down for Tc + Tt + Tn + Tr with only the non-memory images shipped; the memory
        // follows after the resume, pulled from the source's page server.
        Method::PostCopy => {
            let port = PAGE_SERVER_PORT;
            m.phase(Phase::Checkpoint, |m| {
                m.checkpoint("final", Dump::Lazy { port })
            })?;
            m.phase(Phase::Transfer, |m| m.transfer("final", None))?;
            m.phase(Phase::Restore, |m| m.restore("final", Some(port)))?;
            m.await_pages()?;
        }
        // Tvm = Tpre + Tl + Tpost; down from QEMU's last round until the destination runs.
        // The destination's QEMU was started when it was prepared, as a container's bundle is.
        Method::VmPreCopy => {
            let uri = m.phase(Phase::PreLive, |m| m.vm_pre_live())?;
            m.phase(Phase::Live, |m| m.vm_live(&uri))?;
            m.phase(Phase::Post, |m| m.vm_post())?;
        }
    }
    m.finish()
}

#[cfg(test)]
mod rollback_tests;

/// Image round of standby checkpoints.
pub const STANDBY_ROUND: &str = "standby";

/// Ships a leave-running checkpoint of `name` to `to`, where [`recover`] can restore it if
/// the function's host dies. The function keeps serving.
pub fn standby(spec: &LabSpec, creds: &Credentials, name: &str, to: &str) -> Result<Report> {
    let mut m = Migration::begin(spec, creds, name, to, Operation::Standby, Box::new(|_| {}))?;
    m.phase(Phase::Checkpoint, |m| {
        m.checkpoint(STANDBY_ROUND, Dump::LeaveRunning)
    })?;
    m.phase(Phase::Transfer, |m| m.transfer(STANDBY_ROUND, None))?;
    m.finish_standby()
}

/// Brings `name` back on `on` from its last standby checkpoint, after its host died. A
/// function with a tunnel list gets the newest one from the tunnel master.
/// `round` picks the image: a standby checkpoint, or the image a failed migration left.
/// `None` when the function already runs there (e.g. a dump that was cut short left it
/// running): there is nothing to recover.
pub fn recover(
    spec: &LabSpec,
    creds: &Credentials,
    name: &str,
    on: &str,
    round: &str,
) -> Result<Option<Report>> {
    let mut dst = agent_api::Client::connect(lab::agent_addr(spec, on)?, creds)?;
    dst.require_criu()?;
    // Refused while a live controller migrates it; settles the journal of one that died.
    dst.take_over(name)?;
    let info = dst.inspect(name)?.info;
    if info.state == "running" {
        // A dump cut short leaves it running, its link maybe still down for the dump.
        dst.plug(name)?;
        dst.end_migration(name)?;
        return Ok(None);
    }
    if info.state != "checkpointed" {
        bail!("{name} on {on} is {}, not checkpointed (make a standby checkpoint with `corehop checkpoint {name} --to {on}`)", info.state);
    }
    let t = std::time::Instant::now();
    let started = phase::unix_ms();
    // The restore brings the function's link up itself once it runs.
    let restored = dst.restore(name, round, None, true)?;
    dst.end_migration(name)?;
    let link_up: f64 = restored
        .steps
        .iter()
        .filter(|(s, _)| {
            matches!(
                s,
                agent_api::api::Step::LinkUp | agent_api::api::Step::Announce
            )
        })
        .map(|(_, ms)| ms)
        .sum();
    let mut phases = phase::Phases::default();
    phases.0.push((Phase::Network, link_up));
    phases.0.push((Phase::Restore, restored.ms - link_up));
    let downtime_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Some(Report {
        name: name.into(),
        method: Operation::Recover,
        from: String::new(),
        to: on.into(),
        total_ms: t.elapsed().as_secs_f64() * 1e3,
        // The controller cannot know when the host died: this is the part it caused.
        downtime_ms,
        phases,
        image_bytes: 0,
        prepare_ms: 0.0,
        prepare_in_total: false,
        frozen_ms: downtime_ms,
        longest_freeze_ms: downtime_ms,
        first_frozen_unix_ms: started,
        window: None,
        frozen_unix_ms: started,
        resumed_unix_ms: phase::unix_ms(),
        round_bytes: None,
        pre_copy: None,
        dump_bytes: None,
        last_page_ms: None,
        qemu_downtime_ms: None,
    }))
}
