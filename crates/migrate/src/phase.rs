//! The phase model every migration method is composed from. A [`Migration`] locates the
//! function, checks both ends, prepares the destination, then runs named, timed phases;
//! when a phase fails after the source stopped, it puts the function back at the source.
use agent::api::Inspect;
use agent::Client;
use anyhow::{bail, Context, Result};
use lab::spec::LabSpec;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::net::SocketAddr;
use std::time::Instant;

/// Phase durations in the order they ran, serialized as `{"<phase>_ms": ms, ...}`.
#[derive(Debug, Clone, Default)]
pub struct Phases(pub Vec<(String, f64)>);

impl Serialize for Phases {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(&format!("{k}_ms"), &round3(*v))?;
        }
        m.end()
    }
}

impl Phases {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
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
    pub method: String,
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
    /// Destination preparation (bundle, netns) before the migration proper.
    #[serde(serialize_with = "ser_ms")]
    pub prepare_ms: f64,
    /// Wall-clock (UNIX ms) when the function stopped serving and when it served again,
    /// to match the outages probes and UEs saw against this migration.
    pub frozen_unix_ms: u64,
    pub resumed_unix_ms: u64,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Migration {
    pub name: String,
    pub method: String,
    pub from: String,
    pub to: String,
    pub src: Client,
    pub dst: Client,
    pub dst_addr: SocketAddr,
    pub inspect: Inspect,
    phases: Phases,
    image_bytes: u64,
    prepare_ms: f64,
    frozen_at: Option<(Instant, u64)>,
    /// What a rollback must undo.
    source_stopped: Option<String>,
    source_unplugged: bool,
    dest_plugged: bool,
}

/// Finds which host runs `name`, asking every agent of the lab.
pub fn locate(spec: &LabSpec, token: &[u8], name: &str) -> Result<(String, Client)> {
    lab::spec::validate_name(name, "container")?;
    let mut unreachable = Vec::new();
    for h in &spec.hosts {
        let mut c = match Client::connect(lab::agent_addr(spec, &h.name)?, token) {
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
    pub fn begin(spec: &LabSpec, token: &[u8], name: &str, to: &str, method: &str) -> Result<Self> {
        let dst_addr = lab::agent_addr(spec, to)?;
        let (from, mut src) = locate(spec, token, name)?;
        if from == to {
            bail!("{name} already runs on {to}; pick another destination");
        }
        let mut dst =
            Client::connect(dst_addr, token).with_context(|| format!("destination {to}"))?;
        src.require_criu().context("source cannot checkpoint")?;
        dst.require_criu().context("destination cannot restore")?;
        let inspect = src.inspect(name)?;
        let t = Instant::now();
        let digest = dst
            .prepare(&inspect.spec)
            .with_context(|| format!("cannot prepare {name} on {to}"))?;
        if digest != inspect.rootfs_digest {
            let _ = dst.remove(name);
            bail!("rootfs of {name} on {to} differs from {from} ({digest} vs {}); refusing to restore on a mismatched rootfs",
                  inspect.rootfs_digest);
        }
        Ok(Migration {
            name: name.into(),
            method: method.into(),
            from,
            to: to.into(),
            src,
            dst,
            dst_addr,
            inspect,
            phases: Phases::default(),
            image_bytes: 0,
            prepare_ms: t.elapsed().as_secs_f64() * 1e3,
            frozen_at: None,
            source_stopped: None,
            source_unplugged: false,
            dest_plugged: false,
        })
    }

    /// Runs one named phase; its wall time (as the controller sees it) is recorded. On
    /// failure the migration is rolled back and the error names the phase.
    pub fn phase<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let t = Instant::now();
        match f(self) {
            Ok(v) => {
                self.phases
                    .0
                    .push((name.into(), t.elapsed().as_secs_f64() * 1e3));
                Ok(v)
            }
            Err(e) => {
                let rollback = self.rollback();
                let e = e.context(format!("migration of {} failed in phase {name}", self.name));
                Err(match rollback {
                    Ok(()) => e.context(format!("{} is running again on {}", self.name, self.from)),
                    Err(r) => {
                        e.context(format!("ROLLBACK FAILED, {} may be down: {r:#}", self.name))
                    }
                })
            }
        }
    }

    /// Dumps the function into image round `round`. With `leave_running` it keeps serving
    /// (a PreCopy round); otherwise this is where downtime starts.
    pub fn checkpoint(
        &mut self,
        round: &str,
        leave_running: bool,
        parent: Option<&str>,
        pre_dump: bool,
    ) -> Result<u64> {
        if !leave_running && !pre_dump {
            self.frozen_at = Some((Instant::now(), unix_ms()));
        }
        let name = self.name.clone();
        let st = self
            .src
            .checkpoint(&name, round, leave_running, parent, pre_dump)?;
        if !leave_running && !pre_dump {
            self.source_stopped = Some(round.into());
        }
        Ok(st.bytes)
    }

    /// Ships image round `round` from the source agent to the destination agent.
    pub fn transfer(&mut self, round: &str) -> Result<u64> {
        let name = self.name.clone();
        let st = self.src.push(&name, round, self.dst_addr)?;
        self.image_bytes += st.bytes;
        Ok(st.bytes)
    }

    /// Moves the service IP and MAC: off the source's bridge, onto the destination's.
    pub fn network_move(&mut self) -> Result<()> {
        let name = self.name.clone();
        self.src.unplug(&name)?;
        self.source_unplugged = true;
        self.dst.plug(&name)?;
        self.dest_plugged = true;
        Ok(())
    }

    pub fn restore(&mut self, round: &str) -> Result<()> {
        let name = self.name.clone();
        self.dst.restore(&name, round)?;
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
        let resumed_unix_ms = unix_ms();
        let (downtime_ms, frozen_unix_ms) = self
            .frozen_at
            .map(|(t, u)| (t.elapsed().as_secs_f64() * 1e3, u))
            .unwrap_or((0.0, resumed_unix_ms));
        if forget_source {
            if let Err(e) = self.src.remove(&self.name) {
                tracing::warn!(
                    "{} migrated, but cleaning it up on {} failed: {e:#}",
                    self.name,
                    self.from
                );
            }
        }
        Ok(Report {
            total_ms: self.phases.0.iter().map(|(_, v)| v).sum(),
            name: self.name,
            method: self.method,
            from: self.from,
            to: self.to,
            downtime_ms,
            phases: self.phases,
            image_bytes: self.image_bytes,
            prepare_ms: self.prepare_ms,
            frozen_unix_ms,
            resumed_unix_ms,
        })
    }

    /// Table 1's recovery: undo the network move, restore the source from its own frozen
    /// image, drop whatever the destination received.
    fn rollback(&mut self) -> Result<()> {
        let name = self.name.clone();
        if self.dest_plugged {
            let _ = self.dst.unplug(&name);
        }
        let _ = self.dst.remove(&name);
        if self.source_unplugged {
            self.src.plug(&name)?;
        }
        if let Some(round) = self.source_stopped.clone() {
            self.src.restore(&name, &round)?;
        }
        Ok(())
    }
}
