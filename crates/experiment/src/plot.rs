//! Grouped bar charts with 95% CI error bars, drawn once as PNG and once as SVG.
//!
//! Text is rendered with plotters' `ab_glyph` feature: pure Rust, no fontconfig or FreeType
//! at build or run time, but it needs a TrueType file, which [`ensure_font`] looks for
//! (`COREHOP_FONT`, else DejaVu Sans from Debian's `fonts-dejavu-core`, else a few usual
//! places on other distributions).
use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Env var naming a .ttf/.otf file to draw the figures' text with.
pub const FONT_ENV: &str = "COREHOP_FONT";

const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const FAMILY: &str = "sans-serif";
const WIDTH: u32 = 960;
const HEIGHT: u32 = 560;

/// Registers a font for plotters once per process; the result (font path or why none could
/// be used) is remembered, since plotters keeps the font for the life of the process anyway.
pub fn ensure_font() -> Result<PathBuf> {
    static FONT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(load_font).clone().map_err(|e| anyhow!(e))
}

fn load_font() -> std::result::Result<PathBuf, String> {
    let mut tried = Vec::new();
    let from_env = std::env::var_os(FONT_ENV).map(PathBuf::from);
    let candidates = from_env
        .iter()
        .cloned()
        .chain(FONT_CANDIDATES.iter().map(PathBuf::from));
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                // plotters wants &'static font bytes; this runs at most once per process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                match plotters::style::register_font(FAMILY, FontStyle::Normal, bytes) {
                    Ok(()) => return Ok(path),
                    Err(_) => tried.push(format!("{} (not a usable font)", path.display())),
                }
            }
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(format!(
        "no font for the figures' text: install the Debian package fonts-dejavu-core or set \
         {FONT_ENV} to a .ttf file; tried {}",
        tried.join(", ")
    ))
}

/// A grouped bar chart: one group of bars per `groups` entry, one bar per series in a group.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub series: Vec<String>,
    /// `values[s][g]`: (mean, CI half-width) of series `s` in group `g`, if measured.
    pub values: Vec<Vec<Option<(f64, f64)>>>,
}

impl BarChart {
    pub fn has_data(&self) -> bool {
        self.values.iter().flatten().any(|v| v.is_some())
    }
}

/// Series colours, fixed by series position so a method keeps its colour in every figure.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `chart` to `<stem>.png` and `<stem>.svg` and returns both paths.
pub fn draw(chart: &BarChart, stem: &Path) -> Result<(PathBuf, PathBuf)> {
    if !chart.has_data() {
        bail!("chart {:?} has no data", chart.title);
    }
    if chart.values.len() != chart.series.len()
        || chart.values.iter().any(|v| v.len() != chart.groups.len())
    {
        bail!(
            "chart {:?}: values do not match groups × series",
            chart.title
        );
    }
    ensure_font()?;
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area();
        render(&root, chart).with_context(|| format!("drawing {}", png.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e:?}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
        render(&root, chart).with_context(|| format!("drawing {}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e:?}", svg.display()))?;
    }
    Ok((png, svg))
}

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotters: {e:?}")
}

fn render<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &BarChart) -> Result<()> {
    root.fill(&WHITE).map_err(perr)?;
    let n_groups = c.groups.len();
    let n_series = c.series.len().max(1);
    let points = c.values.iter().flatten().flatten();
    let top = points
        .clone()
        .map(|(m, ci)| m + ci.max(0.0))
        .fold(0.0_f64, f64::max);
    let bottom = points
        .map(|(m, ci)| m - ci.max(0.0))
        .fold(0.0_f64, f64::min);
    // Head-room above the tallest error bar for the legend; a flat-zero chart still gets a
    // visible axis.
    let top = if top > 0.0 { top * 1.25 } else { 1.0 };

    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FAMILY, 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(78)
        .build_cartesian_2d(GroupAxis { n: n_groups }, bottom..top)
        .map_err(perr)?;
    let groups = c.groups.clone();
    let label_of = move |x: &f64| {
        let g = x.floor();
        if g >= 0.0 && (g as usize) < groups.len() {
            groups[g as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(RGBColor(242, 242, 242))
        .y_max_light_lines(1)
        .x_desc(c.x_label.as_str())
        .y_desc(c.y_label.as_str())
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v: &f64| trim_number(*v))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(perr)?;

    let slot = 0.8 / n_series as f64;
    for (s, name) in c.series.iter().enumerate() {
        let colour = PALETTE[s % PALETTE.len()];
        let bars: Vec<(f64, f64, f64)> = c.values[s]
            .iter()
            .enumerate()
            .filter_map(|(g, v)| v.map(|(m, ci)| (g as f64 + 0.1 + s as f64 * slot, m, ci)))
            .collect();
        if bars.is_empty() {
            continue;
        }
        let width = slot * 0.9;
        chart
            .draw_series(
                bars.iter().map(|&(x0, m, _)| {
                    Rectangle::new([(x0, 0.0), (x0 + width, m)], colour.filled())
                }),
            )
            .map_err(perr)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
        chart
            .draw_series(bars.iter().filter(|b| b.2 > 0.0).map(|&(x0, m, ci)| {
                ErrorBar::new_vertical(
                    x0 + width / 2.0,
                    m - ci,
                    m,
                    m + ci,
                    BLACK.stroke_width(1),
                    8,
                )
            }))
            .map_err(perr)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(perr)?;
    Ok(())
}

/// The x axis: group `g` spans [g, g+1) and its single tick, the group's name, sits at its
/// centre. (plotters' own f64 axis picks "nice" tick values, which would not line up with the
/// groups, and its key-point wrapper loses the label formatter.)
struct GroupAxis {
    n: usize,
}

impl Ranged for GroupAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = (limit.1 - limit.0) as f64;
        limit.0 + (value / self.n.max(1) as f64 * span).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        // Every group is labelled, whatever the hint: a missing group name is worse than a
        // crowded axis.
        (0..self.n).map(|g| g as f64 + 0.5).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.n as f64
    }
}

/// Axis numbers without float noise ("1200", "0.25").
fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}
