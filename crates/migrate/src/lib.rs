//! Live migration: one phase model, each method a short composition of its phases.
pub mod phase;

use anyhow::{bail, Result};
use lab::spec::LabSpec;
pub use phase::{Migration, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    StopAndCopy,
}

impl std::str::FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop-and-copy" => Ok(Method::StopAndCopy),
            _ => bail!("unknown method {s:?}; available: stop-and-copy"),
        }
    }
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::StopAndCopy => "stop-and-copy",
        }
    }
}

/// Migrates the container `name` to host `to` with `method`.
pub fn migrate(
    spec: &LabSpec,
    token: &[u8],
    name: &str,
    to: &str,
    method: Method,
) -> Result<Report> {
    let mut m = Migration::begin(spec, token, name, to, method.as_str())?;
    match method {
        // Tcm = Tc + Tt + Tn + Tr; the function is down for all of it.
        Method::StopAndCopy => {
            m.phase("checkpoint", |m| m.checkpoint("final", false, None, false))?;
            m.phase("transfer", |m| m.transfer("final"))?;
            m.phase("network", |m| m.network_move())?;
            m.phase("restore", |m| m.restore("final"))?;
        }
    }
    m.finish()
}

/// Image round of standby checkpoints.
pub const STANDBY_ROUND: &str = "standby";

/// Ships a leave-running checkpoint of `name` to `to`, where [`recover`] can restore it if
/// the function's host dies. The function keeps serving.
pub fn standby(spec: &LabSpec, token: &[u8], name: &str, to: &str) -> Result<Report> {
    let mut m = Migration::begin(spec, token, name, to, "standby")?;
    m.phase("checkpoint", |m| {
        m.checkpoint(STANDBY_ROUND, true, None, false)
    })?;
    m.phase("transfer", |m| m.transfer(STANDBY_ROUND))?;
    m.finish_standby()
}

/// Brings `name` back on `on` from its last standby checkpoint, after its host died. A
/// function with a tunnel list gets the newest one from the tunnel master.
pub fn recover(spec: &LabSpec, token: &[u8], name: &str, on: &str) -> Result<Report> {
    let mut dst = agent::Client::connect(lab::agent_addr(spec, on)?, token)?;
    dst.require_criu()?;
    let info = dst.inspect(name)?.info;
    if info.state != "checkpointed" {
        bail!("{name} on {on} is {}, not a standby checkpoint (make one with `corehop checkpoint {name} --to {on}`)", info.state);
    }
    let t = std::time::Instant::now();
    let started = phase::unix_ms();
    let plugged = dst.plug(name)?;
    let restored = dst.restore(name, STANDBY_ROUND)?;
    let mut phases = phase::Phases::default();
    phases.0.push(("network".into(), plugged.ms));
    phases.0.push(("restore".into(), restored.ms));
    Ok(Report {
        name: name.into(),
        method: "recover".into(),
        from: String::new(),
        to: on.into(),
        total_ms: t.elapsed().as_secs_f64() * 1e3,
        // The controller cannot know when the host died: this is the part it caused.
        downtime_ms: t.elapsed().as_secs_f64() * 1e3,
        phases,
        image_bytes: 0,
        prepare_ms: 0.0,
        frozen_unix_ms: started,
        resumed_unix_ms: phase::unix_ms(),
    })
}
