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
