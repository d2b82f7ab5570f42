//! `corehop migrate --resume`: settles a migration whose controller died. Its journal, at
//! the source, says where the function was going and how; what the two agents hold now
//! says how far it got. A function already running at the destination is finished there
//! (the source forgets it); anything short of that is rolled back as Table 1 says, from
//! the source's state rather than from a controller's memory of what it did.
use crate::agents::{AgentCalls, Remote};
use crate::{Method, Migration, Operation};
use agent_api::api::Journal;
use agent_api::tls::Credentials;
use agent_api::Client;
use anyhow::{bail, Context, Result};
use lab::spec::LabSpec;

/// Where an interrupted migration left the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// It runs at the destination; the source forgot it.
    Finished { on: String },
    /// It runs at its source again; the destination forgot it.
    RolledBack { on: String },
}

impl std::fmt::Display for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resumed::Finished { on } => write!(f, "finished: it runs on {on}"),
            Resumed::RolledBack { on } => write!(f, "rolled back: it runs on {on} again"),
        }
    }
}

fn operation(journal: &Journal) -> Result<Operation> {
    Ok(match journal.method.as_str() {
        "standby" => Operation::Standby,
        m => Operation::Migration(m.parse::<Method>()?),
    })
}

/// Finds the journal of `name`'s interrupted migration (on its source), takes the
/// migration over from its dead controller and settles it.
pub fn resume(spec: &LabSpec, creds: &Credentials, name: &str) -> Result<Resumed> {
    lab::spec::validate_name(name, "container")?;
    let mut found = None;
    for h in &spec.hosts {
        let Ok(mut c) = Client::connect(lab::agent_addr(spec, &h.name)?, creds) else {
            continue;
        };
        if let Some(j) = c.take_over(name)? {
            found = Some((h.name.clone(), c, j));
            break;
        }
    }
    let Some((from, mut src, journal)) = found else {
        bail!("no interrupted migration of {name:?} in the lab (no reachable agent holds its journal)");
    };
    let to = journal.to.clone();
    let mut dst = Client::connect(lab::agent_addr(spec, &to)?, creds).with_context(|| {
        format!("the destination {to} does not answer; resume again once it does")
    })?;
    // Whatever the destination still does for the dead controller (a restore) ends first.
    dst.take_over(name)?;
    let inspect = src.inspect(name)?;
    let src_state = inspect.info.state.clone();
    let dst_state = dst.inspect(name).map(|i| i.info.state).ok();
    tracing::info!(
        "{name}: {} to {to} by {} was interrupted; {from} has it {src_state}, {to} has it {}",
        journal.method,
        journal.controller,
        dst_state.as_deref().unwrap_or("not at all")
    );
    let remote = |client| -> Box<dyn AgentCalls> {
        Box::new(Remote {
            client,
            creds: creds.clone(),
        })
    };
    let dst_addr = dst.addr;
    let m = Migration::with_agents(
        remote(src),
        remote(dst),
        dst_addr,
        name,
        &from,
        &to,
        operation(&journal)?,
        inspect,
    );
    settle(m, dst_state.as_deref() == Some("running"))
}

/// Finishes `m` if its function already runs at the destination, else rolls it back.
pub(crate) fn settle(mut m: Migration, runs_at_destination: bool) -> Result<Resumed> {
    let (name, from, to) = (m.name.clone(), m.from.clone(), m.to.clone());
    if runs_at_destination {
        if m.method == Operation::Migration(Method::PostCopy) {
            // Its memory may still be moving; the source's page server must outlive that.
            if let Err(e) = m.await_pages() {
                tracing::warn!("{e:#}");
            }
        }
        m.src
            .remove(&name)
            .with_context(|| format!("{name} runs on {to}, but {from} cannot forget it"))?;
        return Ok(Resumed::Finished { on: to });
    }
    let src_state = m.inspect.info.state.clone();
    m.roll_back_interrupted(&src_state)
        .with_context(|| format!("cannot roll {name} back to {from}"))?;
    m.src.end_migration(&name)?;
    Ok(Resumed::RolledBack { on: from })
}
