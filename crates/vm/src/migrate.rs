//! QEMU pre-copy live migration as the paper's VM baseline: pre-live checks (Table 2),
//! the live iterative copy, stop-and-copy and resume, timed as Tvm = Tpre + Tl + Tpost
//! (Eq. 4).
use crate::machine::Vm;
use crate::qmp::{CpuDefinition, MigrateInfo, MigrationParameters, QemuVersion, Qmp, QmpError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Memory a destination must have beyond the guest's RAM: QEMU itself, its TCG
/// translation cache and the page cache the host needs to stay healthy.
pub const MEMORY_MARGIN_MB: u64 = 128;
/// Port of a host's fabric address where an agent's incoming VM listens for its state
/// (known to whoever must tell that stream on the wire, as the fault matrix does).
pub const INCOMING_PORT: u16 = 7073;

/// What a destination host offers an incoming VM, as the pre-live phase sees it. A plain
/// value: probe it from the destination ([`HostCaps::probe`]), send it over the agent
/// API, or build one by hand to try the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCaps {
    /// Name used in error messages.
    pub host: String,
    pub qemu_version: QemuVersion,
    /// `query-cpu-definitions` of the destination QEMU.
    pub cpu_models: Vec<CpuDefinition>,
    /// Full expansions (`query-cpu-model-expansion`) of the models the destination was
    /// asked about: model name → feature → on. Used to find features a model has at the
    /// source but not at the destination (another processor family, another accelerator).
    pub cpu_expansions: BTreeMap<String, BTreeMap<String, bool>>,
    /// /proc/meminfo MemAvailable of the destination, bytes.
    pub mem_available: u64,
}

impl HostCaps {
    /// Probes a destination through its QEMU's QMP (any QEMU of that host, e.g. the
    /// incoming VM) and this machine's /proc/meminfo (call it on the destination host).
    /// `expand` lists the CPU models to expand feature by feature.
    pub fn probe(host: &str, qmp: &mut Qmp, expand: &[&str]) -> Result<HostCaps, QmpError> {
        let cpu_models = qmp.query_cpu_definitions()?;
        let mut cpu_expansions = BTreeMap::new();
        for m in expand {
            if cpu_models.iter().any(|d| d.name == *m) {
                let e = qmp.query_cpu_model_expansion("full", m)?;
                cpu_expansions.insert((*m).to_string(), e.props);
            }
        }
        Ok(HostCaps {
            host: host.into(),
            qemu_version: qmp.version(),
            cpu_models,
            cpu_expansions,
            mem_available: mem_available().unwrap_or(0),
        })
    }

    /// Probes the host of `vm` (typically the incoming VM), expanding its CPU model.
    pub fn of_vm(host: &str, vm: &mut Vm) -> Result<HostCaps, QmpError> {
        let model = vm.spec.cpu_model.clone();
        HostCaps::probe(host, vm.qmp(), &[&model])
    }
}

/// MemAvailable from /proc/meminfo, in bytes.
pub fn mem_available() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    parse_meminfo_available(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no MemAvailable line in /proc/meminfo",
        )
    })
}

fn parse_meminfo_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut w = line.split_whitespace().skip(1);
    let n: u64 = w.next()?.parse().ok()?;
    match w.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

/// Why a VM may not be migrated to a destination (Table 2 of the paper: incompatible
/// processor, insufficient resources), found before anything is copied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreLiveError {
    #[error("VM {vm}: its CPU model {model} is unknown to the QEMU of {host} ({known} models known there); start the VM with a model both hosts have (e.g. qemu64)")]
    CpuModelUnknown {
        vm: String,
        model: String,
        host: String,
        known: usize,
    },
    #[error("VM {vm}: CPU model {model} cannot run on {host}: its QEMU lacks {missing:?}")]
    CpuModelUnusable {
        vm: String,
        model: String,
        host: String,
        missing: Vec<String>,
    },
    #[error("VM {vm}: CPU model {model} on {host} lacks features the VM uses at the source: {features:?} (another processor family?)")]
    CpuFeaturesMissing {
        vm: String,
        model: String,
        host: String,
        features: Vec<String>,
    },
    #[error("VM {vm} needs {need_mb} MB ({memory_mb} MB RAM + {margin_mb} MB margin) but {host} has only {available_mb} MB available")]
    NotEnoughMemory {
        vm: String,
        host: String,
        memory_mb: u64,
        margin_mb: u64,
        need_mb: u64,
        available_mb: u64,
    },
    #[error("QEMU {dst} on {host} is older than the source's QEMU {src}; QEMU only migrates to the same or a newer version")]
    QemuTooOld {
        host: String,
        src: String,
        dst: String,
    },
    #[error("VM {vm}: cannot query the source QEMU: {detail}")]
    Source { vm: String, detail: String },
}

/// The pre-live phase: checks that `dst` can take `src` before any page is sent.
pub fn pre_live_checks(src: &mut Vm, dst: &HostCaps) -> Result<(), PreLiveError> {
    let vm = src.spec.name.clone();
    let model = src.spec.cpu_model.clone();
    let src_version = src.qmp().version();
    if dst.qemu_version < src_version {
        return Err(PreLiveError::QemuTooOld {
            host: dst.host.clone(),
            src: src_version.to_string(),
            dst: dst.qemu_version.to_string(),
        });
    }
    let Some(def) = dst.cpu_models.iter().find(|d| d.name == model) else {
        return Err(PreLiveError::CpuModelUnknown {
            vm,
            model,
            host: dst.host.clone(),
            known: dst.cpu_models.len(),
        });
    };
    if let Some(missing) = def.unavailable_features.as_ref().filter(|m| !m.is_empty()) {
        return Err(PreLiveError::CpuModelUnusable {
            vm,
            model,
            host: dst.host.clone(),
            missing: missing.clone(),
        });
    }
    if let Some(dst_props) = dst.cpu_expansions.get(&model) {
        let src_props = src
            .qmp()
            .query_cpu_model_expansion("full", &model)
            .map_err(|e| PreLiveError::Source {
                vm: vm.clone(),
                detail: e.to_string(),
            })?
            .props;
        let features: Vec<String> = src_props
            .iter()
            .filter(|(f, on)| **on && dst_props.get(*f) != Some(&true))
            .map(|(f, _)| f.clone())
            .collect();
        if !features.is_empty() {
            return Err(PreLiveError::CpuFeaturesMissing {
                vm,
                model,
                host: dst.host.clone(),
                features,
            });
        }
    }
    let memory_mb = src.spec.memory_mb;
    let need_mb = memory_mb.saturating_add(MEMORY_MARGIN_MB);
    let available_mb = dst.mem_available / (1024 * 1024);
    if available_mb < need_mb {
        return Err(PreLiveError::NotEnoughMemory {
            vm,
            host: dst.host.clone(),
            memory_mb,
            margin_mb: MEMORY_MARGIN_MB,
            need_mb,
            available_mb,
        });
    }
    Ok(())
}

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Bytes per second for the copy (QEMU `max-bandwidth`).
    pub max_bandwidth: u64,
    /// Target stop-and-copy time in ms (QEMU `downtime-limit`); `None` keeps QEMU's 300.
    pub downtime_limit_ms: Option<u64>,
    /// Migration capabilities to set first (e.g. `("xbzrle", true)`).
    pub capabilities: Vec<(String, bool)>,
    /// Give up (cancel, source keeps running) after this long.
    pub timeout: Duration,
    /// `query-migrate` period.
    pub poll: Duration,
    /// Mutual TLS to the destination (which must expect it).
    pub tls: Option<crate::StreamTls>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            max_bandwidth: 128 << 20,
            downtime_limit_ms: None,
            capabilities: Vec::new(),
            timeout: Duration::from_secs(300),
            poll: Duration::from_millis(10),
            tls: None,
        }
    }
}

/// What a migration cost. QEMU's own timings are in ms from the source's
/// `query-migrate`; the phases follow Eq. (4):
/// - `pre_ms` (Tpre): pre-live checks (when run by [`live_migrate`]) + QEMU's setup
///   (connection, dirty logging on);
/// - `live_ms` (Tl): the iterative copy while the VM runs = total − setup − downtime;
/// - `post_ms` (Tpost): stop-and-copy (QEMU's downtime) + resume at the destination
///   (from the source reporting completion to the destination reporting running; only
///   known to [`live_migrate`], which sees the destination).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MigrationStats {
    pub vm: String,
    pub status: String,
    pub max_bandwidth: u64,
    pub total_time_ms: u64,
    pub downtime_ms: u64,
    pub setup_time_ms: u64,
    pub expected_downtime_ms: Option<u64>,
    pub ram_transferred: u64,
    pub ram_remaining: u64,
    pub ram_total: u64,
    pub ram_duplicate_pages: u64,
    pub ram_normal_pages: u64,
    pub ram_normal_bytes: u64,
    pub dirty_sync_count: u64,
    pub mbps: f64,
    pub checks_ms: f64,
    pub resume_ms: Option<f64>,
    pub pre_ms: f64,
    pub live_ms: f64,
    pub post_ms: f64,
    /// Tvm = Tpre + Tl + Tpost.
    pub vm_ms: f64,
    /// Wall clock from the `migrate` command to completion seen by polling.
    pub wall_ms: f64,
    /// `query-migrate` calls made.
    pub polls: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("pre-live check failed: {0}")]
    PreLive(#[from] PreLiveError),
    #[error("migration of VM {vm} to {uri} failed: {desc}; the source VM is {source_status}")]
    Failed {
        vm: String,
        uri: String,
        desc: String,
        /// QEMU run state of the source after the failure ("running" when it was kept).
        source_status: String,
    },
    #[error("migration of VM {vm} to {uri} did not finish within {timeout:?} (cancelled); the source VM is {source_status}")]
    Timeout {
        vm: String,
        uri: String,
        timeout: Duration,
        source_status: String,
    },
    #[error("VM {vm} migrated, but the destination did not resume: {detail}")]
    NoResume { vm: String, detail: String },
    #[error("migration of VM {vm}: {0}", vm = .1)]
    Qmp(#[source] QmpError, String),
}

impl MigrationError {
    /// The source's run state after a failed migration, if the error knows it.
    pub fn source_status(&self) -> Option<&str> {
        match self {
            MigrationError::Failed { source_status, .. }
            | MigrationError::Timeout { source_status, .. } => Some(source_status),
            _ => None,
        }
    }
}

/// Live-migrates `src` to a QEMU listening at `dst_uri` (e.g. `tcp:10.0.0.2:4444`) at up
/// to `max_bandwidth` bytes/s. On failure the source keeps running (QEMU resumes it; this
/// checks, and resumes it if QEMU did not).
pub fn migrate(
    src: &mut Vm,
    dst_uri: &str,
    max_bandwidth: u64,
) -> Result<MigrationStats, MigrationError> {
    migrate_with(
        src,
        dst_uri,
        &MigrateOptions {
            max_bandwidth,
            ..MigrateOptions::default()
        },
    )
}

/// [`migrate`] with all options.
pub fn migrate_with(
    src: &mut Vm,
    dst_uri: &str,
    opts: &MigrateOptions,
) -> Result<MigrationStats, MigrationError> {
    let vm = src.spec.name.clone();
    let run_dir = src.run_dir().to_path_buf();
    if let Err(e) = crate::tls::source(src.qmp(), &run_dir, opts.tls.as_ref()) {
        return Err(MigrationError::Failed {
            vm,
            uri: dst_uri.into(),
            desc: format!("{e:#}"),
            source_status: source_after_failure(src.qmp()),
        });
    }
    let qerr = |e: QmpError| MigrationError::Qmp(e, vm.clone());
    let q = src.qmp();
    q.migrate_set_parameters(&MigrationParameters {
        max_bandwidth: Some(opts.max_bandwidth),
        downtime_limit_ms: opts.downtime_limit_ms,
    })
    .map_err(qerr)?;
    let caps: Vec<(&str, bool)> = opts
        .capabilities
        .iter()
        .map(|(c, on)| (c.as_str(), *on))
        .collect();
    q.migrate_set_capabilities(&caps).map_err(qerr)?;

    let t0 = Instant::now();
    if let Err(e) = q.migrate(dst_uri) {
        let source_status = source_after_failure(q);
        return Err(MigrationError::Failed {
            vm,
            uri: dst_uri.into(),
            desc: e.to_string(),
            source_status,
        });
    }
    let mut polls = 0u64;
    let info = loop {
        std::thread::sleep(opts.poll);
        let info = q.query_migrate().map_err(qerr)?;
        polls += 1;
        match info.status.as_deref() {
            Some("completed") => break info,
            Some("failed") | Some("cancelled") => {
                let desc = info.error_desc.clone().unwrap_or_else(|| {
                    format!("QEMU reports {}", info.status.as_deref().unwrap_or("?"))
                });
                let source_status = source_after_failure(q);
                return Err(MigrationError::Failed {
                    vm,
                    uri: dst_uri.into(),
                    desc,
                    source_status,
                });
            }
            _ => {}
        }
        if t0.elapsed() > opts.timeout {
            let _ = q.migrate_cancel();
            // Wait for QEMU to leave the active states before looking at the VM.
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                match q.query_migrate().map(|i| i.status) {
                    Ok(Some(s)) if s == "cancelled" || s == "failed" || s == "completed" => break,
                    Err(_) => break,
                    _ => std::thread::sleep(opts.poll),
                }
            }
            let source_status = source_after_failure(q);
            return Err(MigrationError::Timeout {
                vm,
                uri: dst_uri.into(),
                timeout: opts.timeout,
                source_status,
            });
        }
    };
    let wall = t0.elapsed();
    let mut s = stats_from(&vm, &info, opts.max_bandwidth);
    s.wall_ms = ms(wall);
    s.polls = polls;
    s.pre_ms = s.setup_time_ms as f64;
    s.live_ms = s
        .total_time_ms
        .saturating_sub(s.setup_time_ms)
        .saturating_sub(s.downtime_ms) as f64;
    s.post_ms = s.downtime_ms as f64;
    s.vm_ms = s.pre_ms + s.live_ms + s.post_ms;
    Ok(s)
}

/// The whole VM migration of the paper: pre-live checks against `dst_caps`, pre-copy
/// live migration to `dst` (a VM from [`Vm::start_incoming`]), then waiting until `dst`
/// runs. Tpre includes the checks and Tpost the resume at the destination.
pub fn live_migrate(
    src: &mut Vm,
    dst: &mut Vm,
    dst_caps: &HostCaps,
    opts: &MigrateOptions,
) -> Result<MigrationStats, MigrationError> {
    let t0 = Instant::now();
    pre_live_checks(src, dst_caps)?;
    let checks = t0.elapsed();
    let Some(uri) = dst.incoming_uri().map(str::to_string) else {
        return Err(MigrationError::NoResume {
            vm: src.spec.name.clone(),
            detail: "the destination VM was not started with Vm::start_incoming".into(),
        });
    };
    let mut s = migrate_with(src, &uri, opts)?;
    let done = Instant::now();
    run_arrived(dst, opts.poll, Duration::from_secs(30))?;
    let resume = done.elapsed();
    s.checks_ms = ms(checks);
    s.resume_ms = Some(ms(resume));
    s.pre_ms += s.checks_ms;
    s.post_ms += ms(resume);
    s.vm_ms = s.pre_ms + s.live_ms + s.post_ms;
    Ok(s)
}

/// Starts the incoming VM `dst` once all of the source's state is in: QEMU leaves a target
/// paused then ([`Vm::start_incoming`]). Polls every `poll`, for at most `within`.
pub fn run_arrived(dst: &mut Vm, poll: Duration, within: Duration) -> Result<(), MigrationError> {
    let until = Instant::now() + within;
    let no_resume = |dst: &Vm, detail: String| MigrationError::NoResume {
        vm: dst.spec.name.clone(),
        detail,
    };
    loop {
        let st = dst.status().map_err(|e| no_resume(dst, e.to_string()))?;
        match st.status.as_str() {
            _ if st.running => return Ok(()),
            "paused" => {
                return dst
                    .qmp()
                    .cont()
                    .map_err(|e| no_resume(dst, format!("cannot start it: {e}")))
            }
            "inmigrate" if Instant::now() <= until => std::thread::sleep(poll),
            "inmigrate" => {
                return Err(no_resume(
                    dst,
                    format!("still inmigrate after {} s", within.as_secs()),
                ))
            }
            other => return Err(no_resume(dst, format!("it is {other}, not arriving"))),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats_from(vm: &str, i: &MigrateInfo, max_bandwidth: u64) -> MigrationStats {
    // QEMU's ints are signed in the schema; a negative value would be a QEMU bug, read
    // as 0 rather than wrapping.
    let u = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let ram = i.ram.clone().unwrap_or_default();
    MigrationStats {
        vm: vm.into(),
        status: i.status.clone().unwrap_or_default(),
        max_bandwidth,
        total_time_ms: u(i.total_time),
        downtime_ms: u(i.downtime),
        setup_time_ms: u(i.setup_time),
        expected_downtime_ms: i.expected_downtime.and_then(|n| u64::try_from(n).ok()),
        ram_transferred: u(ram.transferred),
        ram_remaining: u(ram.remaining),
        ram_total: u(ram.total),
        ram_duplicate_pages: u(ram.duplicate),
        ram_normal_pages: u(ram.normal),
        ram_normal_bytes: u(ram.normal_bytes),
        dirty_sync_count: u(ram.dirty_sync_count),
        mbps: ram.mbps.filter(|m| m.is_finite()).unwrap_or(0.0),
        ..MigrationStats::default()
    }
}

/// After a failed migration: the source's run state, resuming it if QEMU left it
/// stopped (QEMU 7.2 restarts a VM it stopped for the switch-over, but a failure between
/// its checks is possible, and the paper's rule is that the function keeps running).
fn source_after_failure(q: &mut Qmp) -> String {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match q.query_status() {
            Ok(st) if st.running => return st.status,
            Ok(st) if Instant::now() > until => {
                // Only a VM stopped by migration is resumed; a guest that shut down or
                // was paused by someone else stays as it is.
                if matches!(st.status.as_str(), "postmigrate" | "finish-migrate")
                    && q.cont().is_ok()
                {
                    if let Ok(st) = q.query_status() {
                        return st.status;
                    }
                }
                return st.status;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return format!("unknown ({e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24683756 kB\nMemFree:        20140000 kB\nMemAvailable:   24212345 kB\n";
        assert_eq!(parse_meminfo_available(t), Some(24212345 * 1024));
        assert_eq!(parse_meminfo_available("MemAvailable: x kB"), None);
        assert_eq!(parse_meminfo_available("MemAvailable: 1 MB"), None);
        assert_eq!(parse_meminfo_available(""), None);
        assert_eq!(
            parse_meminfo_available("MemAvailable: 99999999999999999999 kB"),
            None
        );
    }

    #[test]
    fn stats_tolerate_missing_and_negative_fields() {
        let i = MigrateInfo {
            status: Some("completed".into()),
            total_time: Some(900),
            downtime: Some(-5),
            ..MigrateInfo::default()
        };
        let s = stats_from("x", &i, 1);
        assert_eq!(s.total_time_ms, 900);
        assert_eq!(s.downtime_ms, 0);
        assert_eq!(s.ram_total, 0);
    }
}
