//! `report.md` with the paper's tables and figures (Section VI), from a results folder.
use crate::plan::{Case, CpuLoad, Factor, Function, LoadWhere, Method, Plan};
use crate::plot::{self, BarChart};
use crate::record::{now_rfc3339, Record};
use crate::runner::{load_records, write_atomic, PLAN_COPY};
use crate::stats::{self, Stat, Summary, PHASE_PREFIX};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const REPORT_MD: &str = "report.md";
pub const FIGURES_DIR: &str = "figures";

/// What [`report`] wrote.
#[derive(Debug, Clone, Default)]
pub struct ReportSummary {
    pub path: PathBuf,
    /// Titles of the tables, in report order.
    pub tables: Vec<String>,
    /// Every figure file written (PNG and SVG).
    pub figures: Vec<PathBuf>,
    /// Figures that could not be drawn and why (the report says so too).
    pub warnings: Vec<String>,
}

/// Reads `out_dir/plan.toml` and `out_dir/runs.jsonl`, writes `stats.csv`, `stats.json`,
/// `figures/*.png|svg` and `report.md`. The records of the results folders in `with` (of
/// the same plan, e.g. run on other machines) join them: each record keeps its CPU model,
/// which Fig. 10 compares; every other table pools the machines' runs.
pub fn report(out_dir: &Path, with: &[PathBuf]) -> Result<ReportSummary> {
    let load_plan = |dir: &Path| {
        Plan::load(&dir.join(PLAN_COPY))
            .with_context(|| format!("{} is not a results folder of run_plan", dir.display()))
    };
    let plan = load_plan(out_dir)?;
    let mut records = load_records(out_dir)?;
    for dir in with {
        let other = load_plan(dir)?;
        if other != plan {
            bail!(
                "{} holds results of another plan ({:?}) than {} ({:?}): only runs of one plan merge",
                dir.display(),
                other.name,
                out_dir.display(),
                plan.name
            );
        }
        records.extend(load_records(dir)?);
    }
    let stats = stats::compute(&records);
    stats::write_stats_files(out_dir, &stats)?;
    let fig_dir = out_dir.join(FIGURES_DIR);
    std::fs::create_dir_all(&fig_dir).with_context(|| format!("creating {}", fig_dir.display()))?;

    let mut r = Report::new(&plan, &records, &stats, fig_dir);
    r.build();
    let path = out_dir.join(REPORT_MD);
    let text = r.render();
    write_atomic(&path, text.as_bytes())?;
    Ok(ReportSummary {
        path,
        tables: r.table_titles,
        figures: r.figure_files,
        warnings: r.warnings,
    })
}

/// Display unit of a KPI.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Ms,
    Mb,
}

impl Unit {
    fn of(kpi: &str) -> Unit {
        if kpi.ends_with("bytes") {
            Unit::Mb
        } else {
            Unit::Ms
        }
    }
    fn scale(self) -> f64 {
        match self {
            Unit::Ms => 1.0,
            // The paper reports MB and GB; decimal units, like iftop and rsync print.
            Unit::Mb => 1e-6,
        }
    }
}

fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// "mean ± CI (CV x%)", or what is known with fewer than two values.
fn cell(s: Option<&Summary>, unit: Unit) -> String {
    let Some(s) = s.filter(|s| s.n > 0) else {
        return "—".to_string();
    };
    let k = unit.scale();
    match (s.ci95, s.cv) {
        (Some(ci), Some(cv)) => {
            format!(
                "{} ± {} (CV {:.1}%)",
                num(s.mean * k),
                num(ci * k),
                cv * 100.0
            )
        }
        (Some(ci), None) => format!("{} ± {}", num(s.mean * k), num(ci * k)),
        _ => format!("{} (n={})", num(s.mean * k), s.n),
    }
}

fn esc(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn kpi_label(kpi: &str) -> String {
    match kpi {
        stats::KPI_TOTAL => "Migration time".into(),
        stats::KPI_DOWNTIME => "Downtime (migration)".into(),
        stats::KPI_ICMP_DOWNTIME => "Downtime (ICMP probe)".into(),
        stats::KPI_APP_DOWNTIME => "Downtime (application probe)".into(),
        stats::KPI_DP_GTP => "DP_GTP".into(),
        stats::KPI_DP_SGI => "DP_SGi".into(),
        stats::KPI_CP_S1MME => "CP_S1-MME".into(),
        stats::KPI_IMAGE_BYTES => "Migration data size".into(),
        stats::KPI_TX => "Tx time".into(),
        other => other
            .strip_prefix(PHASE_PREFIX)
            .unwrap_or(other)
            .to_string(),
    }
}

fn load_label(l: CpuLoad) -> String {
    if l.percent == 0 {
        "no load".into()
    } else {
        format!("{}%", l.percent)
    }
}

/// Builds the case of one table column for a (function, method).
type CaseOf<'a> = Box<dyn Fn(Function, Method) -> Case + 'a>;

enum Block {
    Text(String),
    Table {
        title: String,
        header: Vec<String>,
        rows: Vec<Vec<String>>,
        note: String,
        /// Said instead of the table when it has no row.
        empty: String,
    },
    Figure {
        title: String,
        png: Option<String>,
        svg: Option<String>,
        why_not: Option<String>,
    },
}

struct Report<'a> {
    plan: &'a Plan,
    records: &'a [Record],
    idx: HashMap<(&'a str, &'a str), &'a Summary>,
    fig_dir: PathBuf,
    blocks: Vec<Block>,
    table_titles: Vec<String>,
    figure_titles: Vec<String>,
    figure_files: Vec<PathBuf>,
    warnings: Vec<String>,
}

impl<'a> Report<'a> {
    fn new(plan: &'a Plan, records: &'a [Record], stats: &'a [Stat], fig_dir: PathBuf) -> Self {
        let idx = stats
            .iter()
            .filter(|s| s.summary.n > 0)
            .map(|s| ((s.case_id.as_str(), s.kpi.as_str()), &s.summary))
            .collect();
        Report {
            plan,
            records,
            idx,
            fig_dir,
            blocks: Vec::new(),
            table_titles: Vec::new(),
            figure_titles: Vec::new(),
            figure_files: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn get(&self, case: &Case, kpi: &str) -> Option<&'a Summary> {
        self.idx.get(&(case.id.as_str(), kpi)).copied()
    }

    fn baseline(&self, f: Function, m: Method) -> Case {
        let d = &self.plan.defaults;
        Case::new(f, m, &d.flavor, d.nic_rate, d.cpu_load)
    }

    fn table(&mut self, title: &str, header: Vec<String>, rows: Vec<Vec<String>>, note: &str) {
        let title = format!("Table {}. {title}", self.table_titles.len() + 1);
        self.table_titles.push(title.clone());
        let empty = "No data for this table in these results.".to_string();
        self.blocks.push(Block::Table {
            title,
            header,
            rows,
            note: note.to_string(),
            empty,
        });
    }

    fn figure(&mut self, title: &str, file: &str, chart: BarChart) {
        let title = format!("Figure {}. {title}", self.figure_titles.len() + 1);
        self.figure_titles.push(title.clone());
        let chart = BarChart {
            title: title.clone(),
            ..chart
        };
        let block = if !chart.has_data() {
            Block::Figure {
                title,
                png: None,
                svg: None,
                why_not: Some("no data".into()),
            }
        } else {
            match plot::draw(&chart, &self.fig_dir.join(file)) {
                Ok((png, svg)) => {
                    self.figure_files.push(png);
                    self.figure_files.push(svg);
                    Block::Figure {
                        title,
                        png: Some(format!("{FIGURES_DIR}/{file}.png")),
                        svg: Some(format!("{FIGURES_DIR}/{file}.svg")),
                        why_not: None,
                    }
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    self.warnings.push(format!("{title}: {why}"));
                    Block::Figure {
                        title,
                        png: None,
                        svg: None,
                        why_not: Some(why),
                    }
                }
            }
        };
        self.blocks.push(block);
    }

    fn text(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Text(s.into()));
    }

    /// Time axis in seconds when values reach tens of seconds (VM migrations), else ms.
    fn time_chart(&self, values: &mut [Vec<Option<(f64, f64)>>], what: &str) -> String {
        let max = values
            .iter()
            .flatten()
            .flatten()
            .map(|v| v.0)
            .fold(0.0, f64::max);
        if max >= 10_000.0 {
            for v in values.iter_mut().flatten().flatten() {
                *v = (v.0 / 1000.0, v.1 / 1000.0);
            }
            format!("{what} (s)")
        } else {
            format!("{what} (ms)")
        }
    }

    fn mean_ci(s: Option<&Summary>, scale: f64) -> Option<(f64, f64)> {
        s.map(|s| (s.mean * scale, s.ci95.unwrap_or(0.0) * scale))
    }

    fn functions(&self) -> &'a [Function] {
        &self.plan.functions
    }

    fn methods(&self) -> &'a [Method] {
        &self.plan.methods
    }

    fn method_labels(&self) -> Vec<String> {
        self.methods()
            .iter()
            .map(|m| m.label().to_string())
            .collect()
    }

    fn build(&mut self) {
        self.overview();
        self.phase_breakdown();
        self.per_function_kpi_table(
            "Migration time in ms, mean ± 95% CI (CV) (cf. paper Table 8)",
            &[stats::KPI_TOTAL],
        );
        self.kpi_figure(
            "Migration time by function and method (cf. paper Fig. 7)",
            "migration_time",
            stats::KPI_TOTAL,
            "Migration time",
        );
        self.per_function_kpi_table(
            "Downtime in ms, mean ± 95% CI (CV) (cf. paper Table 9)",
            &[
                stats::KPI_DOWNTIME,
                stats::KPI_ICMP_DOWNTIME,
                stats::KPI_APP_DOWNTIME,
            ],
        );
        self.kpi_figure(
            "Downtime (migration) by function and method (cf. paper Fig. 8)",
            "downtime",
            stats::KPI_DOWNTIME,
            "Downtime",
        );
        self.kpi_figure(
            "Downtime seen by the ICMP probe",
            "icmp_downtime",
            stats::KPI_ICMP_DOWNTIME,
            "ICMP downtime",
        );
        self.reductions();
        self.ue_recovery();
        self.data_size();
        self.rounds();
        self.factor_flavor();
        self.factor_nic();
        self.factor_load();
        self.cpu_models();
        self.failures();
    }

    fn overview(&mut self) {
        let p = self.plan;
        let ok = self.records.iter().filter(|r| r.is_ok()).count();
        let cpus: BTreeSet<&str> = self
            .records
            .iter()
            .map(|r| r.cpu_model.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        let cpu = if cpus.is_empty() {
            "unknown (no record has one)".to_string()
        } else {
            cpus.into_iter().collect::<Vec<_>>().join("; ")
        };
        let first = self
            .records
            .iter()
            .map(|r| r.timestamp.as_str())
            .min()
            .unwrap_or("—");
        let last = self
            .records
            .iter()
            .map(|r| r.timestamp.as_str())
            .max()
            .unwrap_or("—");
        let d = &p.defaults;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "- Plan: `{}`, {} runs per case, {} cases",
            esc(&p.name),
            p.runs,
            p.cases().len()
        );
        let _ = writeln!(
            s,
            "- Functions: {}; methods: {}",
            p.functions
                .iter()
                .map(|f| f.label())
                .collect::<Vec<_>>()
                .join(", "),
            p.methods
                .iter()
                .map(|m| m.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            s,
            "- Defaults (baseline): flavor {}, NIC {}, CPU load {}",
            d.flavor,
            d.nic_rate,
            if d.cpu_load.percent == 0 {
                "none".to_string()
            } else {
                format!("{}% on {}", d.cpu_load.percent, d.cpu_load.load_where)
            }
        );
        let _ = writeln!(
            s,
            "- Records: {} ({} successful, {} failed), from {first} to {last}",
            self.records.len(),
            ok,
            self.records.len() - ok
        );
        let _ = writeln!(s, "- CPU model: {}", esc(&cpu));
        let _ = writeln!(s, "- Report generated {}", now_rfc3339());
        let _ = writeln!(
            s,
            "\nEvery cell is the mean ± the half-width of its 95% confidence interval \
             (Student t with n−1 degrees of freedom) and, in brackets, the coefficient of \
             variation s/mean, over the successful runs of the case; failed runs are \
             listed at the end and left out. Tables without a flavor, NIC or load in their \
             title use the baseline cases. Per-case numbers for every KPI are in `stats.csv` \
             and `stats.json`, every run in `runs.jsonl` and `runs.csv`."
        );
        self.text(s);
    }

    /// Tables 5–7 of the paper: one per method, phases × functions.
    fn phase_breakdown(&mut self) {
        for &m in self.methods() {
            let mut phases: Vec<String> = Vec::new();
            for &f in self.functions() {
                let case = self.baseline(f, m);
                for s in self.idx.keys().filter(|k| k.0 == case.id) {
                    if let Some(p) = s.1.strip_prefix(PHASE_PREFIX) {
                        if !phases.iter().any(|x| x == p) {
                            phases.push(p.to_string());
                        }
                    }
                }
            }
            // The formula's order, then the other phases alphabetically.
            let known = m.paper_phases();
            phases.sort_by_key(|p| {
                (
                    known.iter().position(|k| k == p).unwrap_or(known.len()),
                    p.clone(),
                )
            });
            let mut header = vec!["Phase".to_string()];
            header.extend(self.functions().iter().map(|f| f.label().to_string()));
            let mut rows = Vec::new();
            for p in &phases {
                let kpi = format!("{PHASE_PREFIX}{p}");
                let mut row = vec![p.clone()];
                for &f in self.functions() {
                    row.push(cell(self.get(&self.baseline(f, m), &kpi), Unit::Ms));
                }
                rows.push(row);
            }
            let mut total = vec!["Migration time (total)".to_string()];
            for &f in self.functions() {
                total.push(cell(
                    self.get(&self.baseline(f, m), stats::KPI_TOTAL),
                    Unit::Ms,
                ));
            }
            rows.push(total);
            let paper = match m {
                Method::VmPreCopy => " (cf. paper Table 5)",
                Method::StopAndCopy => " (cf. paper Table 6)",
                Method::PreCopy => " (cf. paper Table 7)",
                Method::PostCopy => "",
            };
            self.table(
                &format!("{}: migration time breakdown in ms{paper}", m.label()),
                header,
                rows,
                phase_note(m),
            );

            // Figure: phases as groups, functions as bars.
            let groups: Vec<String> = phases.clone();
            let series: Vec<String> = self
                .functions()
                .iter()
                .map(|f| f.label().to_string())
                .collect();
            let mut values: Vec<Vec<Option<(f64, f64)>>> = self
                .functions()
                .iter()
                .map(|&f| {
                    let c = self.baseline(f, m);
                    phases
                        .iter()
                        .map(|p| Self::mean_ci(self.get(&c, &format!("{PHASE_PREFIX}{p}")), 1.0))
                        .collect()
                })
                .collect();
            let y = self.time_chart(&mut values, "Phase time");
            self.figure(
                &format!("{}: phase times by function", m.label()),
                &format!("phases_{}", m.as_str()),
                BarChart {
                    title: String::new(),
                    x_label: "Phase".into(),
                    y_label: y,
                    groups,
                    series,
                    values,
                },
            );
        }
    }

    /// Functions as rows, methods as columns, one row per (function, KPI).
    fn per_function_kpi_table(&mut self, title: &str, kpis: &[&str]) {
        let mut header = vec!["Function".to_string()];
        if kpis.len() > 1 {
            header.push("KPI".into());
        }
        header.extend(self.method_labels());
        let mut rows = Vec::new();
        for &f in self.functions() {
            for &k in kpis {
                let cells: Vec<String> = self
                    .methods()
                    .iter()
                    .map(|&m| cell(self.get(&self.baseline(f, m), k), Unit::of(k)))
                    .collect();
                // Optional KPIs (the probes) only get a row when some method has them.
                if k != kpis[0] && cells.iter().all(|c| c == "—") {
                    continue;
                }
                let mut row = vec![f.label().to_string()];
                if kpis.len() > 1 {
                    row.push(kpi_label(k));
                }
                row.extend(cells);
                rows.push(row);
            }
        }
        self.table(title, header, rows, "");
    }

    /// Functions as groups, methods as bars (Figs. 7 and 8).
    fn kpi_figure(&mut self, title: &str, file: &str, kpi: &str, what: &str) {
        let groups: Vec<String> = self
            .functions()
            .iter()
            .map(|f| f.label().to_string())
            .collect();
        let mut values: Vec<Vec<Option<(f64, f64)>>> = self
            .methods()
            .iter()
            .map(|&m| {
                self.functions()
                    .iter()
                    .map(|&f| Self::mean_ci(self.get(&self.baseline(f, m), kpi), 1.0))
                    .collect()
            })
            .collect();
        let y = self.time_chart(&mut values, what);
        let chart = BarChart {
            title: String::new(),
            x_label: "Network function".into(),
            y_label: y,
            groups,
            series: self.method_labels(),
            values,
        };
        self.figure(title, file, chart);
    }

    /// The paper's "reduced by x% compared to VM PreCopy / Container StopandCopy".
    fn reductions(&mut self) {
        let refs = [Method::VmPreCopy, Method::StopAndCopy];
        let mut header = vec![
            "Function".to_string(),
            "KPI".to_string(),
            "Method".to_string(),
        ];
        header.extend(refs.iter().map(|m| format!("Reduction vs {}", m.label())));
        let kpis = [
            stats::KPI_DOWNTIME,
            stats::KPI_ICMP_DOWNTIME,
            stats::KPI_APP_DOWNTIME,
            stats::KPI_TOTAL,
            stats::KPI_DP_GTP,
            stats::KPI_DP_SGI,
            stats::KPI_CP_S1MME,
        ];
        let mut rows = Vec::new();
        for &f in self.functions() {
            for k in kpis {
                // VM PreCopy is the reference of every comparison, never the compared one
                // (its row against StopandCopy would only invert that method's row).
                for &m in self.methods().iter().filter(|&&m| m != Method::VmPreCopy) {
                    let Some(x) = self.get(&self.baseline(f, m), k) else {
                        continue;
                    };
                    let cells: Vec<String> = refs
                        .iter()
                        .map(|&r| {
                            if r == m || !self.methods().contains(&r) {
                                return "—".to_string();
                            }
                            match self.get(&self.baseline(f, r), k) {
                                Some(rs) if rs.mean > 0.0 => {
                                    let red = (rs.mean - x.mean) / rs.mean * 100.0;
                                    format!("{red:.2}% (ratio {:.3})", x.mean / rs.mean)
                                }
                                _ => "—".to_string(),
                            }
                        })
                        .collect();
                    if cells.iter().all(|c| c == "—") {
                        continue;
                    }
                    let mut row = vec![f.label().to_string(), kpi_label(k), m.label().to_string()];
                    row.extend(cells);
                    rows.push(row);
                }
            }
        }
        self.table(
            "Reduction against VM PreCopy and Container StopandCopy (cf. paper Section VI-B/C)",
            header,
            rows,
            "Reduction = (reference − method) / reference of the means; negative means longer \
             than the reference. Ratio = method / reference.",
        );
    }

    fn ue_recovery(&mut self) {
        let kpis = [stats::KPI_DP_GTP, stats::KPI_DP_SGI, stats::KPI_CP_S1MME];
        let mut header = vec!["Migrated function".to_string(), "Method".to_string()];
        header.extend(kpis.iter().map(|k| format!("{} (ms)", kpi_label(k))));
        let mut rows = Vec::new();
        let mut groups = Vec::new();
        let mut gkeys = Vec::new();
        for &f in self.functions() {
            for &m in self.methods() {
                let c = self.baseline(f, m);
                let cells: Vec<String> = kpis
                    .iter()
                    .map(|k| cell(self.get(&c, k), Unit::Ms))
                    .collect();
                if cells.iter().all(|c| c == "—") {
                    continue;
                }
                let mut row = vec![f.label().to_string(), m.label().to_string()];
                row.extend(cells);
                rows.push(row);
            }
            for k in kpis {
                if self
                    .methods()
                    .iter()
                    .any(|&m| self.get(&self.baseline(f, m), k).is_some())
                    && !gkeys.contains(&(f, k))
                {
                    gkeys.push((f, k));
                    groups.push(format!("{} · {}", kpi_label(k), f.label()));
                }
            }
        }
        self.table(
            "UE service recovery time (cf. paper Table 10)",
            header,
            rows,
            "DP_GTP: UE data through GTP-U to the SPGW; DP_SGi: through SGi to the PDN (both \
             while the SPGW migrates); CP_S1-MME: UE control plane through the MME (while the \
             MME migrates).",
        );
        let mut values: Vec<Vec<Option<(f64, f64)>>> = self
            .methods()
            .iter()
            .map(|&m| {
                gkeys
                    .iter()
                    .map(|&(f, k)| Self::mean_ci(self.get(&self.baseline(f, m), k), 1.0))
                    .collect()
            })
            .collect();
        let y = self.time_chart(&mut values, "Service recovery time");
        self.figure(
            "UE service recovery time by method (cf. paper Table 10)",
            "ue_recovery",
            BarChart {
                title: String::new(),
                x_label: "Service · migrated function".into(),
                y_label: y,
                groups,
                series: self.method_labels(),
                values,
            },
        );
    }

    /// Table 12 of the paper: what the pre-dump and the dump of an iterative migration each
    /// sent, and how long each took to send.
    fn rounds(&mut self) {
        let header = [
            "Function",
            "Method",
            "Pre-dump (MB)",
            "Pre-dump Tx, Tpdt (ms)",
            "Dump (MB)",
            "Dump Tx, Tdt (ms)",
        ]
        .map(String::from)
        .to_vec();
        let mut rows = Vec::new();
        for &f in self.functions() {
            for &m in self.methods() {
                if !m.paper_phases().contains(&"Tpdt") {
                    continue;
                }
                let c = self.baseline(f, m);
                let Some(pre) = self.get(&c, stats::KPI_PRE_DUMP_BYTES) else {
                    continue;
                };
                let phase = |p: &str| self.get(&c, &format!("{PHASE_PREFIX}{p}"));
                rows.push(vec![
                    f.label().to_string(),
                    m.label().to_string(),
                    cell(Some(pre), Unit::Mb),
                    cell(phase("Tpdt"), Unit::Ms),
                    cell(self.get(&c, stats::KPI_DUMP_BYTES), Unit::Mb),
                    cell(phase("Tdt"), Unit::Ms),
                ]);
            }
        }
        if rows.is_empty() {
            return;
        }
        self.table(
            "Pre-dump and dump: size and transmission time (cf. paper Table 12)",
            header,
            rows,
            "Baseline cases of the methods that send several rounds. MB = 10⁶ bytes; the \
             pre-dump column sums every round before the dump.",
        );
    }

    fn data_size(&mut self) {
        let header = vec![
            "Function".to_string(),
            "Method".to_string(),
            "Migration data size (MB)".to_string(),
            "Tx time (ms)".to_string(),
            "Transfer phases (ms)".to_string(),
        ];
        let mut rows = Vec::new();
        for &f in self.functions() {
            for &m in self.methods() {
                let c = self.baseline(f, m);
                let Some(size) = self.get(&c, stats::KPI_IMAGE_BYTES) else {
                    continue;
                };
                let parts: Vec<String> = stats::TRANSFER_PHASES
                    .iter()
                    .filter_map(|p| {
                        self.get(&c, &format!("{PHASE_PREFIX}{p}"))
                            .map(|s| format!("{p} {}", cell(Some(s), Unit::Ms)))
                    })
                    .collect();
                rows.push(vec![
                    f.label().to_string(),
                    m.label().to_string(),
                    cell(Some(size), Unit::Mb),
                    cell(self.get(&c, stats::KPI_TX), Unit::Ms),
                    if parts.is_empty() {
                        "—".into()
                    } else {
                        parts.join("; ")
                    },
                ]);
            }
        }
        self.table(
            "Migration data size and transmission time (cf. paper Tables 11 and 12)",
            header,
            rows,
            "MB = 10⁶ bytes. Tx time is the sum of the transfer phases the method reports \
             (Tt; Tpdt + Tdt; Tl).",
        );
        let groups: Vec<String> = self
            .functions()
            .iter()
            .map(|f| f.label().to_string())
            .collect();
        let values: Vec<Vec<Option<(f64, f64)>>> = self
            .methods()
            .iter()
            .map(|&m| {
                self.functions()
                    .iter()
                    .map(|&f| {
                        Self::mean_ci(self.get(&self.baseline(f, m), stats::KPI_IMAGE_BYTES), 1e-6)
                    })
                    .collect()
            })
            .collect();
        self.figure(
            "Migration data size by function and method (cf. paper Table 11)",
            "data_size",
            BarChart {
                title: String::new(),
                x_label: "Network function".into(),
                y_label: "Migration data size (MB)".into(),
                groups,
                series: self.method_labels(),
                values,
            },
        );
    }

    /// Functions whose cases vary `factor`, with the values (baseline included) in order.
    fn factor_cases(&self, factor: Factor) -> Vec<Function> {
        let cases = self.plan.cases();
        self.functions()
            .iter()
            .copied()
            .filter(|&f| {
                cases
                    .iter()
                    .any(|c| c.function == f && self.plan.factor_of(c) == factor)
            })
            .collect()
    }

    /// One table for a factor (rows function × method, columns values) and one figure per
    /// function (values as groups, methods as bars), migration time throughout.
    fn factor_section(
        &mut self,
        title: &str,
        fig_title: &str,
        file: &str,
        x_label: &str,
        factor: Factor,
        columns: Vec<(String, CaseOf<'_>)>,
    ) {
        let functions = self.factor_cases(factor);
        let mut header = vec!["Function".to_string(), "Method".to_string()];
        header.extend(columns.iter().map(|(l, _)| l.clone()));
        let mut rows = Vec::new();
        for &f in &functions {
            for &m in self.methods() {
                let mut row = vec![f.label().to_string(), m.label().to_string()];
                row.extend(
                    columns
                        .iter()
                        .map(|(_, mk)| cell(self.get(&mk(f, m), stats::KPI_TOTAL), Unit::Ms)),
                );
                rows.push(row);
            }
        }
        let figs: Vec<(Function, BarChart)> = functions
            .iter()
            .map(|&f| {
                let mut values: Vec<Vec<Option<(f64, f64)>>> = self
                    .methods()
                    .iter()
                    .map(|&m| {
                        columns
                            .iter()
                            .map(|(_, mk)| {
                                Self::mean_ci(self.get(&mk(f, m), stats::KPI_TOTAL), 1.0)
                            })
                            .collect()
                    })
                    .collect();
                let y = self.time_chart(&mut values, "Migration time");
                let chart = BarChart {
                    title: String::new(),
                    x_label: x_label.into(),
                    y_label: y,
                    groups: columns.iter().map(|(l, _)| l.clone()).collect(),
                    series: self.method_labels(),
                    values,
                };
                (f, chart)
            })
            .collect();
        drop(columns);
        self.table(&format!("{title}, migration time in ms"), header, rows, "");
        for (f, chart) in figs {
            self.figure(
                &format!("{} — {fig_title}", f.label()),
                &format!("{file}_{}", f.as_str()),
                chart,
            );
        }
    }

    /// Fig. 9: (a) the plan's flavors, (b) its RAM flavors (the default's vCPUs), each
    /// beside the default flavor.
    fn factor_flavor(&mut self) {
        let p = &self.plan.parameters;
        // (flavors, figure, what varies, file stem, x axis); (b) only where the plan has one.
        let figures = [
            Some((p.flavors.clone(), "a", "flavor", "flavor", "Flavor")),
            (!p.ram_flavors.is_empty()).then(|| {
                let what = "RAM at the default flavor's vCPUs";
                (
                    p.ram_flavors.clone(),
                    "b",
                    what,
                    "ram",
                    "Flavor (vCPUs, RAM)",
                )
            }),
        ];
        for (list, sub, what, file, x_label) in figures.into_iter().flatten() {
            let d = self.plan.defaults.clone();
            let mut flavors = vec![d.flavor.clone()];
            for f in list {
                if !flavors.contains(&f) {
                    flavors.push(f);
                }
            }
            let cols = flavors
                .into_iter()
                .map(|fl| {
                    let d = d.clone();
                    let label = fl.clone();
                    let mk: CaseOf =
                        Box::new(move |f, m| Case::new(f, m, &fl, d.nic_rate, d.cpu_load));
                    (label, mk)
                })
                .collect();
            self.factor_section(
                &format!("Migration time by {what} (cf. paper Fig. 9({sub}))"),
                &format!("migration time by {what} (cf. paper Fig. 9({sub}))"),
                file,
                x_label,
                Factor::Flavor,
                cols,
            );
        }
    }

    fn factor_nic(&mut self) {
        let d = self.plan.defaults.clone();
        let mut rates: Vec<_> = self.plan.parameters.nic_rates.clone();
        rates.push(d.nic_rate);
        rates.sort();
        rates.dedup();
        let cols = rates
            .into_iter()
            .map(|rate| {
                let d = d.clone();
                let mk: CaseOf = Box::new(move |f, m| Case::new(f, m, &d.flavor, rate, d.cpu_load));
                (rate.to_string(), mk)
            })
            .collect();
        self.factor_section(
            "Migration time by NIC rate (cf. paper Fig. 11)",
            "migration time by NIC rate (cf. paper Fig. 11)",
            "nic",
            "NIC rate",
            Factor::NicRate,
            cols,
        );
    }

    fn factor_load(&mut self) {
        let d = self.plan.defaults.clone();
        for w in LoadWhere::ALL {
            let mut loads: Vec<CpuLoad> = self
                .plan
                .parameters
                .cpu_loads
                .iter()
                .copied()
                .filter(|l| l.load_where == w)
                .collect();
            if loads.is_empty() {
                continue;
            }
            loads.push(d.cpu_load);
            loads.sort_by_key(|l| l.percent);
            loads.dedup();
            let cols = loads
                .into_iter()
                .map(|load| {
                    let d = d.clone();
                    let mk: CaseOf =
                        Box::new(move |f, m| Case::new(f, m, &d.flavor, d.nic_rate, load));
                    (load_label(load), mk)
                })
                .collect();
            let (sub, hosts) = match w {
                LoadWhere::Source => ("a", "the source host"),
                LoadWhere::Destination => ("b", "the destination host"),
                LoadWhere::Both => ("c", "both hosts"),
            };
            self.factor_section(
                &format!("Migration time by CPU load on {hosts} (cf. paper Fig. 12({sub}))"),
                &format!("migration time by CPU load on {hosts} (cf. paper Fig. 12({sub}))"),
                &format!("load_{w}"),
                &format!("CPU load on {hosts}"),
                Factor::CpuLoad,
                cols,
            );
        }
    }

    /// Fig. 10 of the paper compares processor models. A model is not a plan parameter (it
    /// is whatever the hosts are), so this groups the baseline runs by the CPU model each
    /// record carries; results from several machines merged into one runs.jsonl show up as
    /// several columns.
    fn cpu_models(&mut self) {
        let models: Vec<&str> = self
            .records
            .iter()
            .filter(|r| r.is_ok())
            .map(|r| r.cpu_model.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut header = vec!["Function".to_string(), "Method".to_string()];
        header.extend(models.iter().map(|m| {
            if m.is_empty() {
                "unknown".into()
            } else {
                m.to_string()
            }
        }));
        let mut rows = Vec::new();
        // The figure: a group per (function, method) measured, a bar per model.
        let mut groups = Vec::new();
        let mut values: Vec<Vec<Option<(f64, f64)>>> = vec![Vec::new(); models.len()];
        for &f in self.functions() {
            for &m in self.methods() {
                let id = self.baseline(f, m).id;
                let summaries: Vec<Option<stats::Summary>> = models
                    .iter()
                    .map(|model| {
                        let v: Vec<f64> = self
                            .records
                            .iter()
                            .filter(|r| r.is_ok() && r.case_id == id && r.cpu_model == *model)
                            .map(|r| r.total_ms)
                            .filter(|v| v.is_finite())
                            .collect();
                        stats::summarize(&v)
                    })
                    .collect();
                if summaries.iter().all(Option::is_none) {
                    continue;
                }
                let mut row = vec![f.label().to_string(), m.label().to_string()];
                row.extend(summaries.iter().map(|s| cell(s.as_ref(), Unit::Ms)));
                rows.push(row);
                groups.push(format!("{} {}", f.label(), m.label()));
                for (v, s) in values.iter_mut().zip(&summaries) {
                    v.push(Self::mean_ci(s.as_ref(), 1.0));
                }
            }
        }
        let series = header[2..].to_vec();
        self.table(
            "Migration time by processor model, baseline cases (cf. paper Fig. 10), in ms",
            header,
            rows,
            "",
        );
        let y = self.time_chart(&mut values, "Migration time");
        self.figure(
            "migration time by processor model, baseline cases (cf. paper Fig. 10)",
            "cpu_models",
            BarChart {
                title: String::new(),
                x_label: "Network function and method".into(),
                y_label: y,
                groups,
                series,
                values,
            },
        );
    }

    fn failures(&mut self) {
        let header = vec![
            "Case".to_string(),
            "Run".to_string(),
            "Time".to_string(),
            "Error".to_string(),
        ];
        let rows: Vec<Vec<String>> = self
            .records
            .iter()
            .filter_map(|r| {
                r.error.as_ref().map(|e| {
                    vec![
                        r.case_id.clone(),
                        (r.run_index + 1).to_string(),
                        r.timestamp.clone(),
                        truncate(e, 300),
                    ]
                })
            })
            .collect();
        self.table(
            "Failed runs (excluded from every statistic)",
            header,
            rows,
            "",
        );
        if let Some(Block::Table { empty, .. }) = self.blocks.last_mut() {
            *empty = "No run failed.".to_string();
        }
    }

    fn render(&self) -> String {
        let mut s = format!(
            "# Migration experiment report: {}\n\n",
            esc(&self.plan.name)
        );
        s.push_str("## Contents\n\n");
        for t in self.table_titles.iter().chain(&self.figure_titles) {
            let _ = writeln!(s, "- [{}](#{})", esc(t), anchor(t));
        }
        s.push('\n');
        for b in &self.blocks {
            match b {
                Block::Text(t) => {
                    s.push_str(t);
                    s.push('\n');
                }
                Block::Table {
                    title,
                    header,
                    rows,
                    note,
                    empty,
                } => {
                    let _ = writeln!(s, "### {}\n", esc(title));
                    if rows.is_empty() {
                        let _ = writeln!(s, "{empty}\n");
                    } else {
                        let _ = writeln!(
                            s,
                            "| {} |",
                            header
                                .iter()
                                .map(|h| esc(h))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        );
                        let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
                        for r in rows {
                            let _ = writeln!(
                                s,
                                "| {} |",
                                r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
                            );
                        }
                        s.push('\n');
                    }
                    if !note.is_empty() {
                        let _ = writeln!(s, "{note}\n");
                    }
                }
                Block::Figure {
                    title,
                    png,
                    svg,
                    why_not,
                } => {
                    let _ = writeln!(s, "### {}\n", esc(title));
                    match (png, svg, why_not) {
                        (Some(p), Some(v), _) => {
                            let _ =
                                writeln!(s, "![{}]({p})\n\n[PNG]({p}) · [SVG]({v})\n", esc(title));
                        }
                        (_, _, Some(w)) => {
                            let _ = writeln!(s, "Not drawn: {}.\n", esc(w));
                        }
                        _ => {}
                    }
                }
            }
        }
        s
    }
}

fn phase_note(m: Method) -> &'static str {
    match m {
        Method::StopAndCopy => {
            "Tc checkpoint, Tt transfer, Tn network move, Tr restore; Tcm = Tc + Tt + Tr (Eq. 1), \
             equal to the downtime."
        }
        Method::PreCopy => {
            "Tpd pre-dump, Tpdt pre-dump transfer, Td dump, Tdt dump transfer, Tr restore; \
             Tpcm = Tpd + Tpdt + Td + Tdt + Tr (Eq. 2), downtime Td + Tdt + Tr (Eq. 3)."
        }
        Method::PostCopy => "Phases as reported by the post-copy method.",
        Method::VmPreCopy => {
            "Tpre pre-live, Tl live transfer, Tpost post-live; Tvm = Tpre + Tl + Tpost (Eq. 4)."
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// GitHub-style heading anchor: lower case, spaces to '-', most punctuation dropped.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}
