//! `corehop signalling`: migration in the middle of signalling. The EPC's functions move one
//! after another (by default the MME, then the SPGW, then the HSS) while the RAN drives a
//! steady mix of procedures over many UEs. Every procedure started before, during or after a
//! freeze must complete, and afterwards the MME's, the SPGW's and the HSS's own views of
//! every UE must agree with each other and with the UEs'. The report gives procedure latency
//! p50/p99 before, during and after each migration. The plan (`plans/signalling.toml`) says
//! which methods, functions, UEs and traffic; each run starts from a fresh EPC.
use crate::nf::{self, Nf};
use crate::session::UeSession;
use crate::state::{Views, HOSTS};
use agent::tls::Credentials;
use anyhow::{bail, Context, Result};
use ran::report::{Percentiles, ProcedureKind, ProcedureRecord, ProcedureStats};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the quiet UEs' last procedures (a paging, a re-attach, a NAS retransmission)
/// may take before the views must agree.
const QUIET_WITHIN: Duration = Duration::from_secs(20);

#[derive(clap::Args)]
pub struct SignallingArgs {
    /// The plan: methods, functions in order, UEs, traffic.
    #[arg(default_value = "plans/signalling.toml")]
    plan: PathBuf,
    /// Where `runs.jsonl` and `report.md` are written.
    #[arg(long, default_value = "results/signalling")]
    out: PathBuf,
    /// Overrides the plan's UE count (a quick pass).
    #[arg(long)]
    ues: Option<usize>,
    /// Overrides the plan's runs per method.
    #[arg(long)]
    runs: Option<u32>,
    /// Overrides the plan's model events per second over all UEs.
    #[arg(long)]
    procedures_per_s: Option<f64>,
    /// Overrides the plan's traffic before, between and after the migrations, s.
    #[arg(long)]
    settle_s: Option<u64>,
    /// Captures the lab's fabric (S1-MME, S1-U, S11, S6a, SGi, agents) into this pcap.
    #[arg(long)]
    capture: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// Runs per method; the methods take turns (interleaved), so drift hits all alike.
    pub runs: u32,
    pub methods: Vec<migrate::Method>,
    /// Migrated in this order within one run, each to the other host.
    pub functions: Vec<Nf>,
    pub ues: usize,
    /// `corehop ran --traffic`: a built-in model or a file.
    pub traffic: String,
    /// Model events per second over all UEs.
    pub procedures_per_s: f64,
    /// Traffic before the first migration, between two, and after the last, s.
    pub settle_s: u64,
    /// A procedure counts as "during" a migration when it overlaps its freeze widened by
    /// this much on each side (the UEs' retransmissions reach past the resume).
    pub during_margin_ms: u64,
    pub seed: u64,
}

impl Plan {
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let p: Plan = toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        p.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.runs > 0, "runs must be at least 1");
        anyhow::ensure!(!self.methods.is_empty(), "methods must name at least one");
        if let Some(m) = self
            .methods
            .iter()
            .find(|m| **m == migrate::Method::VmPreCopy)
        {
            bail!(
                "methods: {} is not a container method (this case moves the EPC's containers)",
                m.as_str()
            );
        }
        anyhow::ensure!(
            !self.functions.is_empty(),
            "functions must name at least one"
        );
        anyhow::ensure!(self.ues > 0, "ues must be at least 1");
        anyhow::ensure!(self.procedures_per_s > 0.0, "procedures_per_s must be > 0");
        Ok(())
    }
}

/// Procedures in one slice of time around a migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Slice {
    pub count: u64,
    pub failed: u64,
    pub latency_ms: Option<Percentiles>,
}

impl Slice {
    fn of<'a>(records: impl IntoIterator<Item = &'a ProcedureRecord>) -> Slice {
        let mut s = Slice::default();
        let mut lat = Vec::new();
        for r in records {
            s.count += 1;
            if r.ok {
                lat.push(r.latency_ms);
            } else {
                s.failed += 1;
            }
        }
        s.latency_ms = Percentiles::of(lat);
        s
    }
}

/// One migration of a run and the procedures around it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Moved {
    pub function: Nf,
    pub to: String,
    pub downtime_ms: f64,
    pub frozen_ms: f64,
    pub first_frozen_unix_ms: u64,
    pub resumed_unix_ms: u64,
    /// Started since the previous migration's window closed and ended before this one's
    /// opened.
    pub before: Slice,
    /// Overlapping this migration's window.
    pub during: Slice,
    /// Started after the window closed and before the next one opened.
    pub after: Slice,
}

/// One run: the migrations, what the UEs did, and whether the views agreed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub method: migrate::Method,
    pub run: u32,
    pub ues: usize,
    pub error: Option<String>,
    pub moves: Vec<Moved>,
    pub procedures: std::collections::BTreeMap<ran::report::ProcedureKind, ProcedureStats>,
    pub attach_failures: usize,
    pub s1_setups: u32,
    pub association_losses: u32,
    /// MME contexts, SPGW tunnels and HSS registrations when the views were compared.
    pub contexts: usize,
    pub tunnels: usize,
    pub registrations: usize,
    /// Downlink datagrams to idle UEs sent while the SPGW was frozen (lost before any
    /// paging could start; not counted as procedures).
    pub downlink_lost_in_downtime: usize,
    pub disagreements: Vec<String>,
    /// Every failed procedure, so that each can be placed against the freezes.
    #[serde(default)]
    pub failed: Vec<ProcedureRecord>,
}

impl Run {
    /// What makes the run fail, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.error {
            p.push(e.clone());
        }
        let failed: u64 = self.procedures.values().map(|s| s.failed).sum();
        if failed > 0 {
            let why: Vec<String> = self
                .procedures
                .iter()
                .filter(|(_, s)| s.failed > 0)
                .map(|(k, s)| format!("{k:?}: {:?}", s.failures))
                .collect();
            p.push(format!("{failed} procedures failed ({})", why.join("; ")));
        }
        if self.attach_failures > 0 {
            p.push(format!("{} UEs did not attach", self.attach_failures));
        }
        if self.contexts != self.ues || self.tunnels != self.ues {
            p.push(format!(
                "{} UEs, {} MME contexts, {} SPGW tunnels",
                self.ues, self.contexts, self.tunnels
            ));
        }
        if !self.disagreements.is_empty() {
            let first: Vec<&String> = self.disagreements.iter().take(5).collect();
            p.push(format!(
                "{} disagreements between the functions' views (first 5: {first:?})",
                self.disagreements.len()
            ));
        }
        p
    }
}

/// Splits the records at the migrations' windows: each record lands in the `during` of
/// every window it overlaps, else in the `before` of the next window and the `after` of
/// the previous one.
/// Records outside `span` (the steady traffic: from all attached to the UEs' going quiet)
/// count nowhere.
fn slice(
    records: &[ProcedureRecord],
    windows: &[(u64, u64)],
    span: (u64, u64),
) -> Vec<(Slice, Slice, Slice)> {
    let overlaps =
        |r: &ProcedureRecord, (a, b): (u64, u64)| r.start_unix_ms <= b && r.end_unix_ms >= a;
    (0..windows.len())
        .map(|i| {
            let w = windows[i];
            let prev_end = i.checked_sub(1).map_or(span.0, |j| windows[j].1);
            let next_start = windows.get(i + 1).map_or(span.1, |n| n.0);
            let before = records
                .iter()
                .filter(|r| r.start_unix_ms >= prev_end && r.end_unix_ms < w.0);
            let during = records.iter().filter(|r| overlaps(r, w));
            let after = records
                .iter()
                .filter(|r| r.start_unix_ms > w.1 && r.end_unix_ms < next_start);
            (Slice::of(before), Slice::of(during), Slice::of(after))
        })
        .collect()
}

pub fn run(a: SignallingArgs) -> Result<()> {
    let mut plan = Plan::load(&a.plan)?;
    if let Some(u) = a.ues {
        plan.ues = u;
    }
    if let Some(r) = a.runs {
        plan.runs = r;
    }
    if let Some(s) = a.settle_s {
        plan.settle_s = s;
    }
    if let Some(r) = a.procedures_per_s {
        plan.procedures_per_s = r;
    }
    plan.validate()?;
    std::fs::create_dir_all(&a.out)?;
    let exe = std::env::current_exe()?;
    let spec = lab::spec::LabSpec::default();
    lab::down()?;
    lab::up(&spec, &exe)?;
    let mut runs = Vec::new();
    // Outside every migration window: started before the first run, stopped after the last.
    let mut capture = match &a.capture {
        Some(p) => Some(
            std::process::Command::new("tcpdump")
                .args(["-i", "chfab0", "-U", "-s", "0", "-w"])
                .arg(p)
                // The signalling and the user plane, not the agents' TLS streams (images).
                .args(["not", "(tcp", "portrange", "7070-7073)"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("tcpdump (make setup installs it)")?,
        ),
        None => None,
    };
    let ran = (|| {
        let creds = Credentials::controller()?;
        for n in 0..plan.runs {
            for &m in &plan.methods {
                let r = one_run(&spec, &creds, &plan, m, n);
                eprintln!(
                    "signalling: {} run {}: {}",
                    m.as_str(),
                    n + 1,
                    match r.problems().as_slice() {
                        [] => "ok".to_string(),
                        p => p.join("; "),
                    }
                );
                runs.push(r);
            }
        }
        Ok::<_, anyhow::Error>(())
    })();
    if let Some(c) = &mut capture {
        // SIGINT: tcpdump flushes its buffer and exits.
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let _ = c.wait();
    }
    let down = lab::down();
    ran?;
    down?;
    let jsonl: String = runs
        .iter()
        .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    std::fs::write(a.out.join("runs.jsonl"), jsonl)?;
    std::fs::write(a.out.join("report.md"), report(&plan, &runs))?;
    println!("{}", a.out.join("report.md").display());
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.problems().is_empty())
        .map(|r| {
            format!(
                "{} run {}: {}",
                r.method.as_str(),
                r.run + 1,
                r.problems().join("; ")
            )
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed:\n{}",
            failed.len(),
            runs.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// A run from a fresh EPC on node-a; its error is recorded, not raised, so that the other
/// runs still happen and the report counts it.
fn one_run(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    plan: &Plan,
    method: migrate::Method,
    n: u32,
) -> Run {
    let mut run = Run {
        method,
        run: n,
        ues: plan.ues,
        error: None,
        moves: Vec::new(),
        procedures: Default::default(),
        attach_failures: 0,
        s1_setups: 0,
        association_losses: 0,
        contexts: 0,
        tunnels: 0,
        registrations: 0,
        downlink_lost_in_downtime: 0,
        failed: Vec::new(),
        disagreements: Vec::new(),
    };
    if let Err(e) = drive(spec, creds, plan, method, n, &mut run) {
        run.error = Some(format!("{e:#}"));
    }
    clear(spec, creds);
    run
}

fn drive(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    plan: &Plan,
    method: migrate::Method,
    n: u32,
    run: &mut Run,
) -> Result<()> {
    clear(spec, creds);
    nf::start_epc(spec, creds, "node-a", runtime::flavor::DEFAULT_FLAVOR)?;
    // The plan's rate over its model: a model file on top of the named one.
    let model = lab::paths::host_run_dir("ran").join("signalling-traffic.toml");
    std::fs::write(
        &model,
        format!(
            "base = {:?}\nprocedures_per_s = {}\n",
            plan.traffic, plan.procedures_per_s
        ),
    )?;
    let ues = UeSession::start_traffic(
        spec,
        plan.ues,
        &model.to_string_lossy(),
        plan.seed.wrapping_add(u64::from(n)),
        Duration::from_secs(300),
    )
    .with_context(|| format!("{} UEs did not attach", plan.ues))?;
    let settle = Duration::from_secs(plan.settle_s);
    let mut reports = Vec::new();
    let steady_from = migrate::phase::unix_ms();
    let mut quiet_at = u64::MAX;
    let moved = (|| {
        std::thread::sleep(settle);
        for f in &plan.functions {
            let to = other_host(spec, creds, f.name())?;
            let r = migrate::migrate(spec, creds, f.name(), &to, method)
                .with_context(|| format!("migration of the {} to {to}", f.name()))?;
            reports.push((*f, to, r));
            std::thread::sleep(settle);
        }
        quiet_at = migrate::phase::unix_ms();
        ues.quiesce();
        Views::fetch_settled(spec, creds, plan.ues, QUIET_WITHIN)
    })();
    let ran = ues.finish();
    let views = moved?;
    let ran = ran?;
    let margin = plan.during_margin_ms;
    let windows: Vec<(u64, u64)> = reports
        .iter()
        .map(|(_, _, r)| {
            (
                r.first_frozen_unix_ms.saturating_sub(margin),
                r.resumed_unix_ms + margin,
            )
        })
        .collect();
    // Downlink data sent while the SPGW was frozen never reached it: no Downlink Data
    // Notification, so no network-triggered procedure began. That is user-plane loss in the
    // downtime (what DP_GTP measures), not a failed procedure; it is counted apart.
    let spgw_down: Vec<(u64, u64)> = reports
        .iter()
        .filter(|(f, _, _)| *f == Nf::Spgw)
        .map(|(_, _, r)| (r.first_frozen_unix_ms, r.resumed_unix_ms))
        .collect();
    let (lost, records): (Vec<ProcedureRecord>, Vec<ProcedureRecord>) =
        ran.procedures.records.iter().cloned().partition(|r| {
            r.kind == ProcedureKind::ServiceRequestPaging
                && !r.ok
                && r.reason
                    .as_deref()
                    .is_some_and(|w| w.starts_with("no PAGING"))
                && spgw_down
                    .iter()
                    .any(|(a, b)| (*a..=*b).contains(&r.start_unix_ms))
        });
    run.downlink_lost_in_downtime = lost.len();
    let records = &records;
    for ((f, to, r), (before, during, after)) in
        reports
            .into_iter()
            .zip(slice(records, &windows, (steady_from, quiet_at)))
    {
        run.moves.push(Moved {
            function: f,
            to,
            downtime_ms: r.downtime_ms,
            frozen_ms: r.frozen_ms,
            first_frozen_unix_ms: r.first_frozen_unix_ms,
            resumed_unix_ms: r.resumed_unix_ms,
            before,
            during,
            after,
        });
    }
    run.procedures = ProcedureStats::by_kind(records);
    run.failed = records.iter().filter(|r| !r.ok).cloned().collect();
    run.attach_failures = ran.attach_failures.len();
    run.s1_setups = ran.s1_setups;
    run.association_losses = ran.association_losses;
    run.contexts = views.mme.len();
    run.tunnels = views.tunnels.len();
    run.registrations = views.hss.as_ref().map_or(0, Vec::len);
    run.disagreements = views.disagreements();
    Ok(())
}

fn other_host(spec: &lab::spec::LabSpec, creds: &Credentials, name: &str) -> Result<String> {
    for h in HOSTS {
        let ps = agent::Client::connect(lab::agent_addr(spec, h)?, creds)?.ps()?;
        if ps.iter().any(|i| i.name == name && i.state == "running") {
            return Ok(HOSTS.iter().find(|o| **o != h).unwrap().to_string());
        }
    }
    bail!("{name} runs nowhere")
}

fn clear(spec: &lab::spec::LabSpec, creds: &Credentials) {
    for h in HOSTS {
        if let Ok(mut c) = lab::agent_addr(spec, h).and_then(|a| agent::Client::connect(a, creds)) {
            for i in c.ps().unwrap_or_default() {
                let _ = c.remove(&i.name);
            }
        }
    }
}

/// When a procedure started, against the nearest migration's freeze.
fn when(start_unix_ms: u64, moves: &[Moved]) -> String {
    let distance = |m: &Moved| {
        if start_unix_ms < m.first_frozen_unix_ms {
            m.first_frozen_unix_ms - start_unix_ms
        } else {
            start_unix_ms.saturating_sub(m.resumed_unix_ms)
        }
    };
    let Some(m) = moves.iter().min_by_key(|m| distance(m)) else {
        return format!("{start_unix_ms} (unix ms)");
    };
    let f = m.function.name();
    if start_unix_ms < m.first_frozen_unix_ms {
        format!(
            "{} ms before the {f} froze",
            m.first_frozen_unix_ms - start_unix_ms
        )
    } else if start_unix_ms <= m.resumed_unix_ms {
        format!(
            "{} ms into the {f}'s freeze",
            start_unix_ms - m.first_frozen_unix_ms
        )
    } else {
        format!(
            "{} ms after the {f} resumed",
            start_unix_ms - m.resumed_unix_ms
        )
    }
}

fn report(plan: &Plan, runs: &[Run]) -> String {
    let mut s = String::new();
    let _ =
        writeln!(
        s,
        "# Migration in the middle of signalling: {}\n\n{} UEs, traffic `{}` at {} procedures/s; \
         functions migrated in the order {}; {} run(s) per method, methods interleaved. A \
         procedure is \"during\" a migration when it overlaps the first freeze to the resume, \
         widened by {} ms on each side; \"before\" the first one counts from the moment every UE \
         was attached, and \"after\" the last one until the UEs went quiet for the comparison.\n",
        plan.name,
        plan.ues,
        plan.traffic,
        plan.procedures_per_s,
        plan.functions.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
        plan.runs,
        plan.during_margin_ms,
    );
    let _ = writeln!(s, "## Outcome per run\n");
    let _ = writeln!(
        s,
        "| method | run | procedures | failed | downlink lost in the SPGW's downtime | MME contexts | SPGW tunnels | HSS registrations | disagreements | S1 Setups | result |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let total: u64 = r.procedures.values().map(|p| p.count).sum();
        let failed: u64 = r.procedures.values().map(|p| p.failed).sum();
        let problems = r.problems();
        let _ = writeln!(
            s,
            "| {} | {} | {total} | {failed} | {} | {} | {} | {} | {} | {} | {} |",
            r.method.as_str(),
            r.run + 1,
            r.downlink_lost_in_downtime,
            r.contexts,
            r.tunnels,
            r.registrations,
            r.disagreements.len(),
            r.s1_setups,
            if problems.is_empty() {
                "ok".into()
            } else {
                problems.join("; ")
            }
        );
    }
    let _ = writeln!(
        s,
        "\n## Procedure latency around each migration\n\nCount, failures, and latency p50 / p99 (ms) of the procedures of every kind.\n"
    );
    let _ = writeln!(
        s,
        "| method | run | function | downtime ms | before: n / failed / p50 / p99 | during | after |\n|---|---|---|---|---|---|---|"
    );
    let cell = |x: &Slice| match x.latency_ms {
        Some(l) => format!("{} / {} / {:.1} / {:.1}", x.count, x.failed, l.p50, l.p99),
        None => format!("{} / {} / - / -", x.count, x.failed),
    };
    for r in runs {
        for m in &r.moves {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {} | {} | {} |",
                r.method.as_str(),
                r.run + 1,
                m.function.name(),
                m.downtime_ms,
                cell(&m.before),
                cell(&m.during),
                cell(&m.after)
            );
        }
    }
    let failed: Vec<(&Run, &ProcedureRecord)> = runs
        .iter()
        .flat_map(|r| r.failed.iter().map(move |f| (r, f)))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(
            s,
            "\n## Failed procedures\n\n| method | run | kind | IMSI | started | reason |\n|---|---|---|---|---|---|"
        );
        for (r, f) in failed {
            let _ = writeln!(
                s,
                "| {} | {} | {:?} | {} | {} | {} |",
                r.method.as_str(),
                r.run + 1,
                f.kind,
                f.imsi,
                when(f.start_unix_ms, &r.moves),
                f.reason.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(s, "\n## Per procedure kind, whole runs\n");
    let _ = writeln!(
        s,
        "| method | run | kind | count | failed | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        for (k, p) in &r.procedures {
            let (p50, p99, max) = p
                .latency_ms
                .map_or(("-".into(), "-".into(), "-".into()), |l| {
                    (
                        format!("{:.1}", l.p50),
                        format!("{:.1}", l.p99),
                        format!("{:.1}", l.max),
                    )
                });
            let _ = writeln!(
                s,
                "| {} | {} | {k:?} | {} | {} | {p50} | {p99} | {max} |",
                r.method.as_str(),
                r.run + 1,
                p.count,
                p.failed
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(start: u64, end: u64, ok: bool) -> ProcedureRecord {
        ProcedureRecord {
            imsi: "1".into(),
            kind: ProcedureKind::ServiceRequest,
            start_unix_ms: start,
            end_unix_ms: end,
            latency_ms: (end - start) as f64,
            ok,
            reason: (!ok).then(|| "timeout".into()),
        }
    }

    #[test]
    fn records_fall_before_during_and_after_each_window() {
        let records = vec![
            rec(10, 20, true),    // before the first window
            rec(95, 105, true),   // overlaps the first window's start
            rec(150, 160, true),  // after the first, before the second
            rec(290, 310, false), // overlaps the second
            rec(400, 420, true),  // after the second
        ];
        let s = slice(&records, &[(100, 120), (300, 320)], (0, 1000));
        // Outside the span: neither before the first window nor after the last.
        let bounded = slice(&records, &[(100, 120), (300, 320)], (15, 410));
        assert_eq!((bounded[0].0.count, bounded[1].2.count), (0, 0));
        assert_eq!(
            s.iter()
                .map(|(b, d, a)| (b.count, d.count, a.count))
                .collect::<Vec<_>>(),
            vec![(1, 1, 1), (1, 1, 1)]
        );
        assert_eq!(s[1].1.failed, 1);
        assert!(s[1].1.latency_ms.is_none());
        assert_eq!(s[0].1.latency_ms.unwrap().p50, 10.0);
    }

    #[test]
    fn a_failure_is_placed_against_the_nearest_freeze() {
        let mv = |function, a, b| Moved {
            function,
            to: "node-b".into(),
            downtime_ms: 0.0,
            frozen_ms: 0.0,
            first_frozen_unix_ms: a,
            resumed_unix_ms: b,
            before: Slice::default(),
            during: Slice::default(),
            after: Slice::default(),
        };
        let moves = [mv(Nf::Mme, 1000, 1100), mv(Nf::Spgw, 5000, 5200)];
        assert_eq!(when(900, &moves), "100 ms before the mme froze");
        assert_eq!(when(5050, &moves), "50 ms into the spgw's freeze");
        assert_eq!(when(5300, &moves), "100 ms after the spgw resumed");
        assert_eq!(when(3000, &moves), "1900 ms after the mme resumed");
        assert_eq!(when(7, &[]), "7 (unix ms)");
    }

    #[test]
    fn the_committed_plan_is_valid_and_bad_plans_name_the_field() {
        let p = Plan::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../plans/signalling.toml"
        )))
        .unwrap();
        assert_eq!(p.functions, vec![Nf::Mme, Nf::Spgw, Nf::Hss]);
        let mut bad = p.clone();
        bad.methods = vec![migrate::Method::VmPreCopy];
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("container"));
        let e =
            toml::from_str::<Plan>(&toml::to_string(&p).unwrap().replace("pre-copy", "teleport"))
                .unwrap_err();
        assert!(e.to_string().contains("teleport"), "{e}");
    }
}
