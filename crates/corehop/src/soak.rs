//! `corehop soak`: many back-and-forth migrations of one EPC function with many UEs attached
//! and pinging, in a lab session of its own. Afterwards no tunnel or UE context may be
//! lost, and every agent's memory and open files must be as flat at the last migration as
//! at the first (both reported, migration by migration).
use crate::nf::{self, Nf};
use crate::session::UeSession;
use crate::state::{container_file, Views, HOSTS, MME_STATE, SPGW_TUNNELS};
use agent::tls::Credentials;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// An agent's resident memory may grow this much over the second half of the soak before
/// it counts as a leak (the first migrations warm up its allocator and threads: 15 → 27
/// MiB over the first 40 in a 200-migration MME soak, then +1.5 MiB).
const RSS_SLACK_KB: u64 = 4096;
/// Open descriptors vary with the connections in flight when they are counted.
const FD_SLACK: u64 = 4;

#[derive(clap::Args)]
pub struct SoakArgs {
    /// The function to move back and forth: spgw or mme.
    #[arg(long, default_value = "spgw")]
    function: String,
    #[arg(long, default_value_t = 200)]
    migrations: usize,
    #[arg(long, default_value_t = 1000)]
    ues: usize,
    #[arg(long, default_value = "pre-copy")]
    method: String,
    /// Where `<function>.md` and `<function>.jsonl` are written.
    #[arg(long, default_value = "results/soak")]
    out: PathBuf,
}

/// One migration of the soak and what the agents held right after it.
#[derive(serde::Serialize)]
struct Step {
    n: usize,
    to: &'static str,
    downtime_ms: f64,
    /// Per agent (node-a, node-b): resident memory in KiB and open file descriptors.
    agent_rss_kb: [u64; 2],
    agent_fds: [u64; 2],
}

pub fn run(a: SoakArgs) -> Result<()> {
    let nf: Nf = match a.function.as_str() {
        "spgw" => Nf::Spgw,
        "mme" => Nf::Mme,
        f => bail!("the soak moves spgw or mme, not {f:?}"),
    };
    let method: migrate::Method = a.method.parse()?;
    let exe = std::env::current_exe()?;
    let spec = lab::spec::LabSpec::default();
    lab::down()?;
    lab::up(&spec, &exe)?;
    let soaked = (|| {
        let creds = Credentials::controller()?;
        nf::start_epc(&spec, &creds, "node-a", runtime::flavor::DEFAULT_FLAVOR)?;
        let ues = UeSession::start_many(&spec, a.ues, 1000, Duration::from_secs(300))
            .with_context(|| format!("{} UEs did not attach", a.ues))?;
        let result = (|| {
            let before = (settled_tunnels(&spec, &creds)?, contexts(&spec, &creds)?);
            let mut steps = Vec::new();
            for n in 1..=a.migrations {
                let to = HOSTS[n % 2];
                let r = migrate::migrate(&spec, &creds, nf.name(), to, method)
                    .with_context(|| format!("migration {n} of {} failed", nf.name()))?;
                let (agent_rss_kb, agent_fds) = agents();
                steps.push(Step {
                    n,
                    to,
                    downtime_ms: r.downtime_ms,
                    agent_rss_kb,
                    agent_fds,
                });
            }
            let after = (tunnels(&spec, &creds)?, contexts(&spec, &creds)?);
            let disagree = Views::fetch(&spec, &creds)?.disagreements();
            Ok::<_, anyhow::Error>((before, after, steps, disagree))
        })();
        let report = ues.finish()?;
        let (before, after, steps, disagree) = result?;
        Ok::<_, anyhow::Error>((before, after, steps, disagree, report))
    })();
    let down = lab::down();
    let (before, after, steps, disagree, report) = soaked?;
    down?;

    let mut problems = Vec::new();
    if !disagree.is_empty() {
        problems.push(format!(
            "the MME's and the SPGW's views disagree in {} places (first 3: {:?})",
            disagree.len(),
            &disagree[..disagree.len().min(3)]
        ));
    }
    if after.0 != before.0 {
        // The first few tunnels of `a` that `b` lacks.
        let missing = |a: &[serde_json::Value], b: &[serde_json::Value]| -> Vec<String> {
            a.iter()
                .filter(|t| !b.contains(t))
                .take(3)
                .map(|t| t.to_string())
                .collect()
        };
        let changed = missing(&before.0, &after.0);
        let now = missing(&after.0, &before.0);
        problems.push(format!(
            "tunnel list changed: {} tunnels before, {} after; gone (first 3): {changed:?}; new: {now:?}",
            before.0.len(),
            after.0.len()
        ));
    }
    if after.1 != before.1 {
        problems.push(format!(
            "UE contexts: {} before, {} after",
            before.1, after.1
        ));
    }
    if !report.attach_failures.is_empty() || report.s1_setups != 1 {
        problems.push(format!(
            "{} attach failures, {} S1 Setups (1 expected)",
            report.attach_failures.len(),
            report.s1_setups
        ));
    }
    let last = steps.last().context("no migration")?;
    // Against the first step in the same direction: an agent holds more descriptors as a
    // destination (the restored function's files) than as a source.
    let like_last = |from: usize| {
        steps[from..]
            .iter()
            .find(|s| s.to == last.to)
            .unwrap_or(last)
    };
    let (first, half) = (like_last(0), like_last(steps.len() / 2));
    for (i, h) in HOSTS.iter().enumerate() {
        if last.agent_fds[i] > first.agent_fds[i] + FD_SLACK {
            problems.push(format!(
                "{h}'s agent holds {} file descriptors after the last migration, {} after the first",
                last.agent_fds[i], first.agent_fds[i]
            ));
        }
        if last.agent_rss_kb[i] > half.agent_rss_kb[i] + RSS_SLACK_KB {
            problems.push(format!(
                "{h}'s agent grew from {} to {} KiB over the second half",
                half.agent_rss_kb[i], last.agent_rss_kb[i]
            ));
        }
    }
    let mut downtimes: Vec<f64> = steps.iter().map(|s| s.downtime_ms).collect();
    downtimes.sort_by(f64::total_cmp);
    let pct = |p: f64| downtimes[((downtimes.len() - 1) as f64 * p).round() as usize];
    let pings: (u64, u64) = report
        .ues
        .iter()
        .fold((0, 0), |(s, r), u| (s + u.pings_sent, r + u.pings_received));
    let text = format!(
        "# Soak: {f}, {n} migrations ({m}), {u} UEs\n\n\
         - tunnels: {tb} before, {ta} after (same list: {same}); UE contexts in the MME: {cb} before, {ca} after\n\
         - attach failures: {af}; S1 Setups: {s1}; pings answered: {pr} of {ps}\n\
         - downtime p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms\n\
         - agent node-a: RSS {ra0} → {ra1} KiB, fds {fa0} → {fa1}; agent node-b: RSS {rb0} → {rb1} KiB, fds {fb0} → {fb1} (after the first migration the same way as the last → after the last; growth is judged over the second half; every step in `{f}.jsonl`)\n\n{verdict}\n",
        f = nf.name(),
        n = steps.len(),
        m = method.as_str(),
        u = report.ues.len(),
        tb = before.0.len(),
        ta = after.0.len(),
        same = after.0 == before.0,
        cb = before.1,
        ca = after.1,
        af = report.attach_failures.len(),
        s1 = report.s1_setups,
        pr = pings.1,
        ps = pings.0,
        p50 = pct(0.5),
        p95 = pct(0.95),
        max = downtimes.last().unwrap(),
        ra0 = first.agent_rss_kb[0],
        ra1 = last.agent_rss_kb[0],
        fa0 = first.agent_fds[0],
        fa1 = last.agent_fds[0],
        rb0 = first.agent_rss_kb[1],
        rb1 = last.agent_rss_kb[1],
        fb0 = first.agent_fds[1],
        fb1 = last.agent_fds[1],
        verdict = if problems.is_empty() {
            "Nothing lost, agents flat.".to_string()
        } else {
            format!("PROBLEMS:\n- {}", problems.join("\n- "))
        }
    );
    std::fs::create_dir_all(&a.out)?;
    let mut jsonl = String::new();
    for s in &steps {
        jsonl.push_str(&serde_json::to_string(s)?);
        jsonl.push('\n');
    }
    std::fs::write(a.out.join(format!("{}.jsonl", nf.name())), jsonl)?;
    std::fs::write(a.out.join(format!("{}.md", nf.name())), &text)?;
    println!("{text}");
    if !problems.is_empty() {
        bail!("the soak found {} problems", problems.len());
    }
    Ok(())
}

/// RSS (KiB) and open file descriptors of the node-a and node-b agents.
fn agents() -> ([u64; 2], [u64; 2]) {
    let mut rss = [0; 2];
    let mut fds = [0; 2];
    for (i, h) in HOSTS.iter().enumerate() {
        let Some(pid) = lab::agent_pid(h) else {
            continue;
        };
        rss[i] = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0);
        fds[i] = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    }
    (rss, fds)
}

/// The SPGW's tunnel list, as it keeps it (sorted, so that order does not count).
fn tunnels(spec: &lab::spec::LabSpec, creds: &Credentials) -> Result<Vec<serde_json::Value>> {
    let raw = container_file(spec, creds, "spgw", SPGW_TUNNELS)?;
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&raw)?;
    list.sort_by_key(|t| t.to_string());
    Ok(list)
}

/// The tunnel list once every UE's bearer reached its eNB: a UE counts as attached at its
/// Attach Accept, while its Modify Bearer (the eNB's tunnel end) may still be on the way.
fn settled_tunnels(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
) -> Result<Vec<serde_json::Value>> {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = tunnels(spec, creds)?;
        let pending = list.iter().filter(|t| t["enb_teid"].is_null()).count();
        if pending == 0 {
            return Ok(list);
        }
        if std::time::Instant::now() > until {
            bail!("{pending} tunnels still lack their eNB end 30 s after the UEs attached");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many UE contexts the MME holds.
fn contexts(spec: &lab::spec::LabSpec, creds: &Credentials) -> Result<usize> {
    let raw = container_file(spec, creds, "mme", MME_STATE)?;
    Ok(serde_json::from_slice::<Vec<serde_json::Value>>(&raw)?.len())
}
