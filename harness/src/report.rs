//! Turns the measured cells into what people read: markdown tables with walmdb's ratio to each
//! peer, the targets, CSV, JSON and SVG plots.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use crate::engine::EngineKind;
use crate::results::Cell;

/// The walmdb configuration the targets are stated for.
pub const TARGET_WALMDB: &str = "walmdb group";

/// Workloads in reading order; any other workload follows in order of appearance.
const WORKLOAD_ORDER: [&str; 15] = [
    "commit-1key",
    "bulk-1000",
    "get",
    "scan",
    "ycsb-a",
    "ycsb-b",
    "ycsb-c",
    "ycsb-d",
    "ycsb-e",
    "ycsb-f",
    "recovery-crash",
    "recovery-crash-held-back",
    "recovery-clean",
    "sustain-100key",
    "sustain-1key",
];

fn workload_rank(cells: &[Cell], w: &str) -> (usize, usize) {
    match WORKLOAD_ORDER.iter().position(|&o| o == w) {
        Some(i) => (i, 0),
        None => (
            WORKLOAD_ORDER.len(),
            cells.iter().position(|c| c.workload == w).unwrap_or(0),
        ),
    }
}

/// Engines in `EngineKind::ALL` order; any other engine follows in order of appearance.
fn engine_rank(cells: &[Cell], e: &str) -> (usize, usize) {
    match EngineKind::ALL.iter().position(|k| k.name() == e) {
        Some(i) => (i, 0),
        None => (
            EngineKind::ALL.len(),
            cells.iter().position(|c| c.engine == e).unwrap_or(0),
        ),
    }
}

fn is_walmdb(engine: &str) -> bool {
    engine.starts_with("walmdb")
}

/// The cells grouped by (workload, threads), groups and rows in reading order.
fn groups(cells: &[Cell]) -> Vec<((String, usize), Vec<&Cell>)> {
    // Keyed by (workload's reading rank, workload, threads).
    type Key = ((usize, usize), String, usize);
    let mut map: BTreeMap<Key, Vec<&Cell>> = BTreeMap::new();
    for c in cells {
        let rank = workload_rank(cells, &c.workload);
        map.entry((rank, c.workload.clone(), c.threads))
            .or_default()
            .push(c);
    }
    map.into_iter()
        .map(|((_, w, t), mut rows)| {
            rows.sort_by_key(|c| engine_rank(cells, &c.engine));
            ((w, t), rows)
        })
        .collect()
}

/// The first cell of `engine` running `workload` at `threads`.
fn find<'a>(cells: &'a [Cell], workload: &str, threads: usize, engine: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.workload == workload && c.threads == threads && c.engine == engine)
}

/// How many times better `ours` is than `peer`, so that > 1 means `ours` is better whatever the
/// unit: `ours / peer` for a rate, `peer / ours` for a time. `None` when not a finite number.
pub fn advantage(ours: &Cell, peer: &Cell) -> Option<f64> {
    let r = if ours.higher_is_better {
        ours.value / peer.value
    } else {
        peer.value / ours.value
    };
    r.is_finite().then_some(r)
}

// ---------------------------------------------------------------------------------------------
// Number formatting

/// Digits grouped by thousands, no decimals.
fn grouped(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 && s != "0" {
        out.insert(0, '-');
    }
    out
}

/// A figure for a table: about three significant digits, thousands grouped.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        grouped(v)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        let digits = (2 - a.log10().floor() as i32).clamp(2, 9) as usize;
        format!("{v:.digits$}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "–".into())
}

fn mib(b: Option<u64>) -> String {
    b.map(|b| num(b as f64 / (1u64 << 20) as f64))
        .unwrap_or_else(|| "–".into())
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{}x", num(r)))
        .unwrap_or_else(|| "–".into())
}

/// An axis label: 1.5M, 20k, 500, 0.5.
fn si(v: f64) -> String {
    let a = v.abs();
    let (d, s) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    let t = if x.abs() >= 10.0 || x == x.round() {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let t = without_trailing_zeros(t);
    format!("{t}{s}")
}

/// `1.50` -> `1.5`, `2.00` -> `2`; integers unchanged.
fn without_trailing_zeros(t: String) -> String {
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

/// A latency from microseconds, three significant digits: 19.7 µs, 4.8 ms, 237 ms.
fn latency_label(us: f64) -> String {
    let (v, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    let t = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let t = without_trailing_zeros(t);
    format!("{t} {unit}")
}

/// A latency axis label from microseconds: 800 µs, 12 ms, 1.5 s.
fn duration_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", si(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", si(us / 1e3))
    } else {
        format!("{} µs", si(us))
    }
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// One table per (workload, threads), a row per engine, then `baseline_engine`'s ratio to each
/// other engine (> 1 always means `baseline_engine` is better).
pub fn markdown(cells: &[Cell], baseline_engine: &str) -> String {
    let mut md = String::from("## Results by workload\n\n");
    if cells.is_empty() {
        md += "No cells were measured.\n";
        return md;
    }
    for ((workload, threads), rows) in groups(cells) {
        let plural = if threads == 1 { "" } else { "s" };
        let _ = writeln!(md, "### {workload}, {threads} thread{plural}\n");
        md += "| engine | durable | value | p50 µs | p99 µs | p999 µs | CPU s / 1k ops \
               | written / op | write amp. | peak RSS MiB | disk MiB | other CPU (cores) |\n";
        md += "|---|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
        for c in &rows {
            let name = if c.engine == baseline_engine {
                format!("**{}**", c.engine)
            } else {
                c.engine.clone()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                name,
                if c.durable { "yes" } else { "no" },
                num(c.value),
                c.unit,
                opt(c.p50_us),
                opt(c.p99_us),
                opt(c.p999_us),
                opt(c.cpu_secs_per_1000),
                c.bytes_written_per_op
                    .map(|b| format!("{} B", num(b)))
                    .unwrap_or_else(|| "–".into()),
                c.write_amplification
                    .map(|w| format!("{}x", num(w)))
                    .unwrap_or_else(|| "–".into()),
                mib(c.peak_rss_bytes),
                mib(c.disk_bytes),
                opt(c.other_cpu_cores),
            );
        }
        md += "\n";
        md += &ratio_lines(&rows, baseline_engine);
        let notes: Vec<String> = rows
            .iter()
            .filter(|c| !c.note.is_empty())
            .map(|c| format!("- {}: {}", c.engine, c.note))
            .collect();
        if !notes.is_empty() {
            md += "Notes:\n\n";
            md += &notes.join("\n");
            md += "\n\n";
        }
    }
    md
}

/// The ratio lines under one group's table.
fn ratio_lines(rows: &[&Cell], baseline_engine: &str) -> String {
    let Some(base) = rows.iter().find(|c| c.engine == baseline_engine) else {
        return format!("{baseline_engine} was not measured here, so there are no ratios.\n\n");
    };
    let part = |walmdb: bool| -> Vec<String> {
        rows.iter()
            .filter(|c| c.engine != baseline_engine && is_walmdb(&c.engine) == walmdb)
            .map(|c| {
                let durable = if c.durable { "" } else { " (not durable)" };
                format!("{}{durable} **{}**", c.engine, ratio(advantage(base, c)))
            })
            .collect()
    };
    let (peers, own) = (part(false), part(true));
    let mut s = String::new();
    if !peers.is_empty() {
        let _ = writeln!(
            s,
            "{baseline_engine} against each peer: {}.\n",
            peers.join(", ")
        );
    }
    if !own.is_empty() {
        let _ = writeln!(
            s,
            "{baseline_engine} against the other walmdb configurations: {}.\n",
            own.join(", ")
        );
    }
    if peers.is_empty() && own.is_empty() {
        return String::new();
    }
    let how = if base.higher_is_better {
        format!(
            "{} is a rate, so each ratio is {baseline_engine}'s figure divided by the other \
             engine's (walmdb / peer)",
            base.unit
        )
    } else {
        format!(
            "{} is a time, so each ratio is the other engine's figure divided by \
             {baseline_engine}'s (peer / walmdb)",
            base.unit
        )
    };
    let _ = writeln!(
        s,
        "_{how}: above 1 means {baseline_engine} is better, below 1 that it is worse._\n"
    );
    s
}

// ---------------------------------------------------------------------------------------------
// Targets

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bound {
    /// walmdb's advantage (its rate over the peer's) must be at least `required`.
    AtLeast,
    /// walmdb's time over the peer's must be at most `required` ("within 1.1x").
    AtMost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Met,
    Miss,
    NotMeasured,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Miss => "MISS",
            Status::NotMeasured => "not measured",
        }
    }
}

/// One target of the issue, evaluated.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is measured, in words.
    pub what: String,
    pub workload: String,
    pub threads: usize,
    pub walmdb: String,
    pub peer: String,
    pub bound: Bound,
    pub required: f64,
    /// `AtLeast`: walmdb's advantage (rate over rate). `AtMost`: walmdb's time over the peer's.
    /// `None` when either cell is missing.
    pub measured: Option<f64>,
    pub status: Status,
}

/// The targets: (what, workload, threads, peer, bound, required).
const TARGETS: [(&str, &str, usize, &str, Bound, f64); 9] = [
    (
        "durable 1-key commits/s",
        "commit-1key",
        16,
        "rocksdb sync",
        Bound::AtLeast,
        1.5,
    ),
    (
        "durable 1-key commits/s",
        "commit-1key",
        64,
        "rocksdb sync",
        Bound::AtLeast,
        1.5,
    ),
    (
        "durable 1-key commits/s",
        "commit-1key",
        16,
        "lmdb durable",
        Bound::AtLeast,
        20.0,
    ),
    (
        "durable 1-key commits/s",
        "commit-1key",
        64,
        "lmdb durable",
        Bound::AtLeast,
        20.0,
    ),
    (
        "durable 1-key commits/s",
        "commit-1key",
        1,
        "rocksdb sync",
        Bound::AtLeast,
        1.2,
    ),
    (
        "durable 1-key commits/s",
        "commit-1key",
        1,
        "sqlite full",
        Bound::AtLeast,
        1.0,
    ),
    (
        "point get, ns/op",
        "get",
        1,
        "lmdb durable",
        Bound::AtMost,
        1.1,
    ),
    (
        "range scan, ns/key",
        "scan",
        1,
        "lmdb durable",
        Bound::AtMost,
        1.2,
    ),
    (
        "durable bulk ingest keys/s",
        "bulk-1000",
        1,
        "rocksdb sync",
        Bound::AtLeast,
        1.0,
    ),
];

/// Evaluates the targets against the cells (walmdb = "walmdb group").
pub fn targets(cells: &[Cell]) -> Vec<Target> {
    TARGETS
        .iter()
        .map(|&(what, workload, threads, peer, bound, required)| {
            let ours = find(cells, workload, threads, TARGET_WALMDB);
            let theirs = find(cells, workload, threads, peer);
            let measured = match (ours, theirs) {
                (Some(o), Some(p)) => advantage(o, p).map(|a| match bound {
                    Bound::AtLeast => a,
                    Bound::AtMost => 1.0 / a,
                }),
                _ => None,
            };
            let status = match measured {
                None => Status::NotMeasured,
                Some(m) => {
                    let ok = match bound {
                        Bound::AtLeast => m >= required,
                        Bound::AtMost => m <= required,
                    };
                    if ok {
                        Status::Met
                    } else {
                        Status::Miss
                    }
                }
            };
            Target {
                what: what.into(),
                workload: workload.into(),
                threads,
                walmdb: TARGET_WALMDB.into(),
                peer: peer.into(),
                bound,
                required,
                measured,
                status,
            }
        })
        .collect()
}

/// The targets as a markdown table with a sentence on how to read it.
pub fn targets_markdown(targets: &[Target]) -> String {
    let mut md = String::from(
        "| target | workload | threads | walmdb | peer | measured | required | status |\n\
         |---|---|--:|---|---|--:|--:|:-:|\n",
    );
    for t in targets {
        let (measured, required) = match t.bound {
            Bound::AtLeast => (
                t.measured
                    .map(|m| format!("{m:.2}x"))
                    .unwrap_or_else(|| "–".into()),
                format!("≥ {:.2}x", t.required),
            ),
            Bound::AtMost => (
                t.measured
                    .map(|m| format!("{m:.2}"))
                    .unwrap_or_else(|| "–".into()),
                format!("≤ {:.2}", t.required),
            ),
        };
        let status = match t.status {
            Status::Miss => "**MISS**".to_string(),
            s => s.label().to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            t.what, t.workload, t.threads, t.walmdb, t.peer, measured, required, status
        );
    }
    let met = targets.iter().filter(|t| t.status == Status::Met).count();
    let missed = targets.iter().filter(|t| t.status == Status::Miss).count();
    let absent = targets.len() - met - missed;
    let _ = write!(
        md,
        "\n{met} met, {missed} missed, {absent} not measured. For \"≥\" targets the measured \
         figure is how many times walmdb's rate is the peer's (walmdb / peer). For \"≤\" \
         targets (\"within 1.1x of LMDB\") it is walmdb's time per operation over the peer's \
         (walmdb / peer, lower is better). \"not measured\" means a cell is missing from this \
         run.\n"
    );
    md
}

// ---------------------------------------------------------------------------------------------
// CSV and JSON

const CSV_HEADER: [&str; 23] = [
    "workload",
    "engine",
    "durable",
    "threads",
    "value",
    "unit",
    "higher_is_better",
    "p50_us",
    "p99_us",
    "p999_us",
    "cpu_secs_per_1000",
    "bytes_written_per_op",
    "write_amplification",
    "peak_rss_bytes",
    "disk_bytes",
    "ops",
    "secs",
    "other_cpu_cores",
    "note",
    "window_end_secs",
    "errors",
    "disk_write_bytes",
    "device_write_bytes",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every field of every cell; a header line, then a line per cell. Absent figures are empty.
pub fn csv(cells: &[Cell]) -> String {
    fn o<T: ToString>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let mut out = CSV_HEADER.join(",");
    out.push('\n');
    for c in cells {
        let fields = [
            csv_field(&c.workload),
            csv_field(&c.engine),
            c.durable.to_string(),
            c.threads.to_string(),
            c.value.to_string(),
            csv_field(&c.unit),
            c.higher_is_better.to_string(),
            o(c.p50_us),
            o(c.p99_us),
            o(c.p999_us),
            o(c.cpu_secs_per_1000),
            o(c.bytes_written_per_op),
            o(c.write_amplification),
            o(c.peak_rss_bytes),
            o(c.disk_bytes),
            c.ops.to_string(),
            c.secs.to_string(),
            o(c.other_cpu_cores),
            csv_field(&c.note),
            o(c.window_end_secs),
            csv_field(&errors_field(&c.errors)),
            o(c.disk_write_bytes),
            o(c.device_write_bytes),
        ];
        out += &fields.join(",");
        out.push('\n');
    }
    out
}

/// Failures by kind for a CSV field: `ApplyBacklog=12;Io(StorageFull)=1`, empty for none.
fn errors_field(errors: &BTreeMap<String, u64>) -> String {
    errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The cells as a pretty JSON array.
pub fn json(cells: &[Cell]) -> String {
    serde_json::to_string_pretty(cells).expect("cells serialize")
}

// ---------------------------------------------------------------------------------------------
// Plots

/// Each engine's colour: one hue per engine family, the non-durable configuration lighter
/// (and drawn dashed).
fn engine_color(engine: &str, i: usize) -> RGBColor {
    match engine {
        "walmdb group" => RGBColor(200, 30, 30),
        "walmdb every-write" => RGBColor(235, 120, 0),
        "walmdb interval-10ms" => RGBColor(225, 100, 150),
        "walmdb none" => RGBColor(240, 130, 120),
        "lmdb durable" => RGBColor(30, 90, 180),
        "lmdb no-sync" => RGBColor(100, 160, 220),
        "redb immediate" => RGBColor(30, 140, 60),
        "redb none" => RGBColor(110, 190, 110),
        "rocksdb sync" => RGBColor(120, 60, 170),
        "rocksdb no-sync" => RGBColor(170, 130, 210),
        "sqlite full" => RGBColor(120, 80, 40),
        "sqlite normal" => RGBColor(180, 140, 100),
        "fjall sync" => RGBColor(0, 130, 130),
        "fjall none" => RGBColor(90, 190, 190),
        _ => {
            let p = [
                RGBColor(60, 60, 60),
                RGBColor(0, 150, 150),
                RGBColor(150, 150, 0),
                RGBColor(120, 120, 120),
            ];
            p[i % p.len()]
        }
    }
}

/// Tick values for a log axis over `lo..hi`: 1-2-5 steps, finer for a narrow range, coarser
/// to stay within about `max` ticks.
fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let within = |mantissas: &[f64]| -> Vec<f64> {
        let mut ticks = Vec::new();
        let mut e = lo.log10().floor() as i32;
        while 10f64.powi(e) <= hi * 1.0001 {
            for m in mantissas {
                let v = m * 10f64.powi(e);
                if v >= lo * 0.9999 && v <= hi * 1.0001 {
                    ticks.push(v);
                }
            }
            e += 1;
        }
        ticks
    };
    let t = within(&[1.0, 2.0, 5.0]);
    if t.len() >= 3 && t.len() <= max {
        return t;
    }
    if t.len() < 3 {
        let fine = within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        return if fine.len() >= 2 { fine } else { vec![lo, hi] };
    }
    let t = within(&[1.0, 3.0]);
    if t.len() <= max {
        return t;
    }
    within(&[1.0])
}

/// A log range around `lo..=hi` with room at both ends.
fn log_range(lo: f64, hi: f64, below: f64, above: f64) -> (f64, f64) {
    let (lo, hi) = if lo == hi {
        (lo / 2.0, hi * 2.0)
    } else {
        (lo, hi)
    };
    (lo / below, hi * above)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// An SVG that says there is nothing to plot.
fn empty_plot(path: &Path, title: &str, why: &str) -> Result<()> {
    let root = SVGBackend::new(path, (800, 200)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    root.draw(&Text::new(
        title.to_string(),
        (20, 40),
        ("sans-serif", 22).into_font(),
    ))
    .map_err(plot_err)?;
    root.draw(&Text::new(
        why.to_string(),
        (20, 90),
        ("sans-serif", 16).into_font(),
    ))
    .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A legend of lines and markers, drawn in its own area.
fn line_legend(
    area: &DrawingArea<SVGBackend, Shift>,
    entries: &[(String, RGBColor, bool)],
) -> Result<()> {
    let font = ("sans-serif", 15).into_font();
    area.draw(&Text::new(
        "engine".to_string(),
        (10, 60),
        ("sans-serif", 16).into_font().style(FontStyle::Bold),
    ))
    .map_err(plot_err)?;
    for (i, (name, color, durable)) in entries.iter().enumerate() {
        let y = 88 + 26 * i as i32;
        let style = ShapeStyle::from(color).stroke_width(if name == TARGET_WALMDB { 4 } else { 2 });
        if *durable {
            area.draw(&PathElement::new(vec![(10, y), (46, y)], style))
                .map_err(plot_err)?;
            area.draw(&Circle::new((28, y), 4, color.filled()))
                .map_err(plot_err)?;
        } else {
            area.draw(&DashedPathElement::new(vec![(10, y), (46, y)], 6, 4, style))
                .map_err(plot_err)?;
            area.draw(&Circle::new(
                (28, y),
                4,
                ShapeStyle::from(color).stroke_width(2),
            ))
            .map_err(plot_err)?;
        }
        area.draw(&Text::new(
            name.clone(),
            (54, y),
            TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(plot_err)?;
    }
    if entries.iter().any(|e| !e.2) {
        let y = 88 + 26 * entries.len() as i32 + 10;
        area.draw(&Text::new(
            "dashed, hollow: not durable".to_string(),
            (10, y),
            ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(plot_err)?;
    }
    Ok(())
}

/// `workload`'s headline figure against the thread count (log2 x, log y), a line per engine.
pub fn plot_throughput(cells: &[Cell], workload: &str, path: &Path) -> Result<()> {
    let rows: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.workload == workload && c.value > 0.0 && c.value.is_finite())
        .collect();
    let title = format!("{workload}: by thread count");
    if rows.is_empty() {
        return empty_plot(path, &title, &format!("No {workload} cells were measured."));
    }
    let unit = rows[0].unit.clone();
    let higher = rows[0].higher_is_better;
    let mut threads: Vec<usize> = rows.iter().map(|c| c.threads.max(1)).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut engines: Vec<&str> = rows.iter().map(|c| c.engine.as_str()).collect();
    engines.sort_by_key(|e| engine_rank(cells, e));
    engines.dedup();

    // A log2 axis over the thread counts, a tick at each one measured.
    let xs: Vec<f64> = threads.iter().map(|&t| t as f64).collect();
    let (x0, x1) = (xs[0] / 1.5, xs[xs.len() - 1] * 1.5);
    let (x0, x1) = if xs.len() == 1 {
        (x0 / 1.5, x1 * 1.5)
    } else {
        (x0, x1)
    };
    let lo = rows.iter().map(|c| c.value).fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|c| c.value).fold(0.0, f64::max);
    let (y0, y1) = log_range(lo, hi, 1.6, 1.6);

    let width = 1100;
    let root = SVGBackend::new(path, (width, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(width - 250);
    let better = if higher {
        "higher is better"
    } else {
        "lower is better"
    };
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{title} ({unit}, {better})"), ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (x0..x1).log_scale().base(2.0).with_key_points(xs),
            (y0..y1).log_scale().with_key_points(log_ticks(y0, y1, 12)),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("threads (log2 scale)")
        .y_desc(format!("{unit} (log scale)"))
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| si(*y))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(plot_err)?;

    let mut legend = Vec::new();
    for (i, engine) in engines.iter().enumerate() {
        let color = engine_color(engine, i);
        let mut pts: Vec<(f64, f64, bool)> = rows
            .iter()
            .filter(|c| c.engine == *engine)
            .map(|c| (c.threads.max(1) as f64, c.value, c.durable))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.dedup_by(|a, b| a.0 == b.0);
        let durable = pts.iter().all(|p| p.2);
        let style =
            ShapeStyle::from(&color).stroke_width(if *engine == TARGET_WALMDB { 4 } else { 2 });
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
        if durable {
            chart
                .draw_series(LineSeries::new(line.clone(), style))
                .map_err(plot_err)?;
        } else {
            chart
                .draw_series(DashedLineSeries::new(line.clone(), 8, 5, style))
                .map_err(plot_err)?;
        }
        let marker = if durable {
            color.filled()
        } else {
            ShapeStyle::from(&color).stroke_width(2)
        };
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 5, marker)))
            .map_err(plot_err)?;
        legend.push((engine.to_string(), color, durable));
    }
    line_legend(&right, &legend)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Per engine, `workload`'s p50, p99 and p999 latency at `threads` threads: grouped
/// horizontal bars on a log axis, one row per engine.
pub fn plot_latency(cells: &[Cell], workload: &str, threads: usize, path: &Path) -> Result<()> {
    let mut rows: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.workload == workload && c.threads == threads)
        .filter(|c| {
            [c.p50_us, c.p99_us, c.p999_us]
                .iter()
                .any(|p| p.is_some_and(|v| v > 0.0))
        })
        .collect();
    rows.sort_by_key(|c| engine_rank(cells, &c.engine));
    rows.dedup_by(|a, b| a.engine == b.engine);
    let plural = if threads == 1 { "" } else { "s" };
    let title = format!("{workload}, {threads} thread{plural}: latency per operation");
    if rows.is_empty() {
        return empty_plot(
            path,
            &title,
            "No latency percentiles were measured for this group.",
        );
    }
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|c| [c.p50_us, c.p99_us, c.p999_us])
        .flatten()
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (x0, x1) = log_range(lo, hi, 3.0, 4.0);
    let n = rows.len();
    // Each engine's row is ROW units high, its three bars BAR apart.
    const ROW: i32 = 100;
    const BAR: i32 = 28;

    let width = 1100;
    let height = 150 + 62 * n as u32;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(width - 150);
    let names: Vec<String> = rows.iter().map(|c| c.engine.clone()).collect();
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{title} (lower is better)"), ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(180)
        .build_cartesian_2d(
            (x0..x1).log_scale().with_key_points(log_ticks(x0, x1, 10)),
            (-ROW / 2..n as i32 * ROW - ROW / 2)
                .with_key_points((0..n as i32).map(|i| i * ROW).collect()),
        )
        .map_err(plot_err)?;
    // Engine i (reading order) is drawn top-down: its row is centred on y = (n - 1 - i) * ROW.
    let names_of = names.clone();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("latency, log scale")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| duration_us(*x))
        .y_label_formatter(&move |y| {
            let i = n as i32 - 1 - y / ROW;
            if y % ROW == 0 && i >= 0 {
                names_of.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(plot_err)?;

    let shades = [
        ("p50", RGBColor(140, 190, 235)),
        ("p99", RGBColor(40, 110, 190)),
        ("p999", RGBColor(15, 40, 100)),
    ];
    for (i, c) in rows.iter().enumerate() {
        let yc = (n - 1 - i) as i32 * ROW;
        for (j, p) in [c.p50_us, c.p99_us, c.p999_us].into_iter().enumerate() {
            let Some(v) = p.filter(|v| *v > 0.0 && v.is_finite()) else {
                continue;
            };
            // p50 above the row's centre, p99 on it, p999 below.
            let centre = yc + BAR - j as i32 * BAR;
            let (top, bottom) = (centre + BAR * 45 / 100, centre - BAR * 45 / 100);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, bottom), (v, top)],
                    shades[j].1.filled(),
                )))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" {}", latency_label(v)),
                    (v, centre),
                    TextStyle::from(("sans-serif", 13).into_font())
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                )))
                .map_err(plot_err)?;
        }
    }
    // The percentile legend, in its own strip.
    let font = ("sans-serif", 15).into_font();
    right
        .draw(&Text::new(
            "percentile".to_string(),
            (10, 60),
            ("sans-serif", 16).into_font().style(FontStyle::Bold),
        ))
        .map_err(plot_err)?;
    for (j, (label, color)) in shades.iter().enumerate() {
        let y = 88 + 28 * j as i32;
        right
            .draw(&Rectangle::new([(10, y - 8), (40, y + 8)], color.filled()))
            .map_err(plot_err)?;
        right
            .draw(&Text::new(
                label.to_string(),
                (48, y),
                TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The kv group

/// A cell of the `kv` group (a row or an engine's whole-workload total).
pub fn is_kv(c: &Cell) -> bool {
    c.workload.starts_with("kv-")
}

/// Whether a kv cell's row failed (its figure is not a measurement).
fn kv_failed(c: &Cell) -> bool {
    c.note.starts_with(crate::kv::FAILED)
}

/// The peer `ours` is compared with in a row: among `peers` (cells of non-walmdb engines of
/// the same durability as `ours`), the one with the best figure.
fn best_of<'a>(ours: &Cell, peers: &[&'a Cell]) -> Option<&'a Cell> {
    peers
        .iter()
        .copied()
        .filter(|p| p.durable == ours.durable && !kv_failed(p) && p.value > 0.0)
        .max_by(|a, b| {
            let (a, b) = if ours.higher_is_better {
                (a.value, b.value)
            } else {
                (-a.value, -b.value)
            };
            a.total_cmp(&b)
        })
}

/// The LMDB configuration of the same durability as `ours`.
fn lmdb_like(ours: &Cell) -> &'static str {
    if ours.durable {
        EngineKind::HeedDurable.name()
    } else {
        EngineKind::HeedNoSync.name()
    }
}

/// The kv group's section: one table, a row per workload and a column per engine (each
/// figure with the MiB the process wrote during the row under it), then each walmdb
/// configuration's ratio to the best peer of its durability and to LMDB of its durability,
/// the whole workload's bytes written and the store's size at the end; then the notes.
pub fn kv_markdown(cells: &[Cell]) -> String {
    let mut md = String::from("## Embedded-KV workload (group kv)\n\n");
    let mut engines: Vec<&str> = cells.iter().map(|c| c.engine.as_str()).collect();
    engines.sort_by_key(|e| engine_rank(cells, e));
    engines.dedup();
    let walmdbs: Vec<&str> = engines.iter().copied().filter(|e| is_walmdb(e)).collect();
    let keys = cells
        .iter()
        .find(|c| c.workload == "kv-bulk-load" && !kv_failed(c))
        .map(|c| c.ops);
    let secs = cells
        .iter()
        .find(|c| c.workload == "kv-get" && !kv_failed(c))
        .map(|c| c.secs);
    let _ = write!(
        md,
        "Each engine in its own process, the rows in this order on one store: {} random \
         {}-byte keys with {}-byte values bulk-loaded in one write transaction (given in random \
         order); a random 40% of them overwritten in {}-pair transactions, not settled; \
         {}-key range reads from random loaded keys right after that (**overlay**) and again \
         after a settle; point gets; N/5 sorted inserts above every key, {} a transaction; \
         1-key commits; one `len()`, checked against the keys written; min({}, N/10) pops of \
         the first and the last key alternately, a transaction each; a random 10% of the \
         loaded keys removed, {} a transaction. The timed read and commit rows run on 1 \
         thread for {} s. A row that ends with a settle (bulk load, sorted insert) includes \
         it in its time. Under each figure, in italics, the MiB written during the row: \
         **p** by the process's own count (/proc/self/io `write_bytes`, background threads \
         included), **d** by the data directory's block device (no file-system sync around \
         a row, so what an engine leaves in the page cache is counted in a later row when \
         the kernel writes it back; other processes' writes count too). The process count \
         charges bytes when page-cache pages are dirtied: with large folios one small append \
         after an fsync can be charged a whole folio (up to 1 MiB), so **p** can be far above \
         what reached the disk. The two whole-workload rows at the bottom are the process's \
         count and the device's between a file-system sync before the first row and one \
         after the final settle.\n\n",
        keys.map(|k| grouped(k as f64))
            .unwrap_or_else(|| "N".into()),
        crate::kv::KEY_LEN,
        crate::kv::VALUE_LEN,
        grouped(crate::kv::TXN_KEYS as f64),
        crate::kv::SCAN_LEN,
        grouped(crate::kv::TXN_KEYS as f64),
        grouped(crate::kv::MAX_POPS as f64),
        grouped(crate::kv::TXN_KEYS as f64),
        secs.map(|s| secs_label(s.round().max(1.0)))
            .unwrap_or_else(|| "–".into()),
    );

    // Rows in the workload's order, then any other kv workload, then the totals.
    let mut rows: Vec<String> = crate::kv::ROWS.iter().map(|r| r.0.to_string()).collect();
    for c in cells {
        if c.workload != crate::kv::TOTAL && !rows.contains(&c.workload) {
            rows.push(c.workload.clone());
        }
    }
    let find_kv = |w: &str, e: &str| cells.iter().find(|c| c.workload == w && c.engine == e);

    md += "| row | unit |";
    for e in &engines {
        let _ = write!(md, " {e} |");
    }
    for w in &walmdbs {
        let _ = write!(md, " {w} / best peer | {w} / LMDB |");
    }
    md += "\n|---|---|";
    md += &"--:|".repeat(engines.len() + 2 * walmdbs.len());
    md += "\n";

    let ratio_cells = |md: &mut String, row: &[Option<&Cell>]| {
        for w in &walmdbs {
            let ours = engines
                .iter()
                .position(|e| e == w)
                .and_then(|i| row[i])
                .filter(|c| !kv_failed(c));
            let Some(ours) = ours else {
                md.push_str(" – | – |");
                continue;
            };
            let peers: Vec<&Cell> = row
                .iter()
                .flatten()
                .copied()
                .filter(|c| !is_walmdb(&c.engine))
                .collect();
            match best_of(ours, &peers) {
                Some(best) => {
                    let _ = write!(
                        md,
                        " **{}**<br>{} |",
                        ratio(advantage(ours, best)),
                        best.engine
                    );
                }
                None => md.push_str(" – |"),
            }
            let lmdb = peers
                .iter()
                .find(|c| c.engine == lmdb_like(ours) && !kv_failed(c));
            match lmdb {
                Some(l) => {
                    let _ = write!(md, " **{}** |", ratio(advantage(ours, l)));
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    };

    for w in &rows {
        let row: Vec<Option<&Cell>> = engines.iter().map(|e| find_kv(w, e)).collect();
        let Some(any) = row.iter().flatten().next() else {
            continue;
        };
        let _ = write!(md, "| {w} | {} |", any.unit);
        for c in &row {
            let Some(c) = c else {
                md.push_str(" – |");
                continue;
            };
            let figure = if kv_failed(c) {
                "**FAILED**".to_string()
            } else if c.note.starts_with(crate::kv::SPLIT) {
                format!("{} **split**", num(c.value))
            } else {
                num(c.value)
            };
            let _ = write!(
                md,
                " {figure}<br>_p {} · d {}_ |",
                mib(c.disk_write_bytes),
                mib(c.device_write_bytes)
            );
        }
        ratio_cells(&mut md, &row);
    }

    // The whole workload: bytes written, and the store's size at the end (lower is better).
    let totals: Vec<Option<&Cell>> = engines
        .iter()
        .map(|e| find_kv(crate::kv::TOTAL, e))
        .collect();
    if totals.iter().any(Option::is_some) {
        // Each a copy of the total cell with the figure in MiB (lower is better).
        let figure_row = |md: &mut String, label: &str, bytes: fn(&Cell) -> Option<u64>| {
            let row: Vec<Option<Cell>> = totals
                .iter()
                .map(|c| {
                    c.and_then(|c| {
                        let mut d = c.clone();
                        d.value = bytes(c)? as f64 / (1u64 << 20) as f64;
                        d.higher_is_better = false;
                        Some(d)
                    })
                })
                .collect();
            let _ = write!(md, "| {label} | MiB |");
            for c in &row {
                let _ = write!(md, " {} |", c.as_ref().map_or("–".into(), |c| num(c.value)));
            }
            let refs: Vec<Option<&Cell>> = row.iter().map(Option::as_ref).collect();
            ratio_cells(md, &refs);
        };
        figure_row(&mut md, "written, whole workload (p)", |c| {
            c.disk_write_bytes
        });
        figure_row(&mut md, "written, whole workload (d)", |c| {
            c.device_write_bytes
        });
        figure_row(&mut md, "on disk at the end", |c| c.disk_bytes);
    }
    md += "\n";
    // Where the process's count is far above the device's over the whole workload (synced at
    // both ends), it counted bytes that never reached the disk as such.
    let inflated: Vec<String> = totals
        .iter()
        .flatten()
        .filter_map(|c| {
            let (p, d) = (c.disk_write_bytes? as f64, c.device_write_bytes? as f64);
            (p > 2.0 * d && p > (64u64 << 20) as f64)
                .then(|| format!("{} {}x", c.engine, num(p / d)))
        })
        .collect();
    if !inflated.is_empty() {
        let _ = writeln!(
            md,
            "Over the whole workload the process's count (p) is more than twice the device's \
             (d) for {}: p charged those engines for page-cache folios re-dirtied after \
             fsyncs (or for files deleted before they were written back), not bytes the disk \
             received; their p figures overstate what they wrote.\n",
            inflated.join(", ")
        );
    }
    md += "_Ratios: above 1 means walmdb is better (its rate over the peer's, or the peer's \
           time or bytes over walmdb's). Each walmdb configuration is compared with the peers \
           of its own durability: walmdb group with the durable ones (lmdb durable, redb \
           immediate, fjall sync, ...), walmdb none with the non-durable ones (lmdb no-sync, \
           redb none, fjall none, ...); **best peer** is the one with the best figure in that \
           row, named under the ratio, and **LMDB** is heed of the same durability. \
           **split**: the engine refused the bulk load as one transaction, and the figure is \
           of the same pairs loaded in the largest transactions it accepted (see the notes). \
           Latency percentiles, CPU and every note are in results.csv and results.json._\n\n";

    // The bulk load's refusals first, then every other note, by row.
    let refusals: Vec<String> = cells
        .iter()
        .filter(|c| c.workload == "kv-bulk-load" && c.note.starts_with(crate::kv::SPLIT))
        .map(|c| format!("- **{}**: {}", c.engine, c.note))
        .collect();
    if !refusals.is_empty() {
        md += "Bulk load refused as one transaction:\n\n";
        md += &refusals.join("\n");
        md += "\n\n";
    }
    let mut notes = Vec::new();
    for w in rows.iter().map(String::as_str).chain([crate::kv::TOTAL]) {
        for e in &engines {
            let Some(c) = find_kv(w, e) else { continue };
            if c.note.is_empty() || c.note.starts_with(crate::kv::SPLIT) {
                continue;
            }
            let failures = if c.errors.is_empty() || kv_failed(c) {
                String::new()
            } else {
                format!(" (failed operations: {})", failures(c))
            };
            notes.push(format!("- {w}, {e}: {}{failures}", c.note));
        }
    }
    if !notes.is_empty() {
        md += "Notes:\n\n";
        md += &notes.join("\n");
        md += "\n\n";
    }
    md
}

// ---------------------------------------------------------------------------------------------
// Sustained ingest

/// A cell of a sustained run (`sustain-*`): a whole-run cell or one of its windows.
pub fn is_sustain(c: &Cell) -> bool {
    c.workload.starts_with("sustain-")
}

/// The sustained workloads measured, in reading order.
pub fn sustain_workloads(cells: &[Cell]) -> Vec<String> {
    let mut ws: Vec<&str> = cells
        .iter()
        .filter(|c| is_sustain(c))
        .map(|c| c.workload.as_str())
        .collect();
    ws.sort_by_key(|w| workload_rank(cells, w));
    ws.dedup();
    ws.into_iter().map(String::from).collect()
}

/// The plot of `workload`'s keys/s over time.
pub fn over_time_file(workload: &str) -> String {
    format!("{workload}-over-time.svg")
}

/// One engine's sustained run: its whole-run cell and its windows in time order.
struct Sustained<'a> {
    run: &'a Cell,
    windows: Vec<&'a Cell>,
}

/// Each engine's sustained run of `workload`, in engine order (engines without a whole-run
/// cell are left out).
fn sustained<'a>(cells: &'a [Cell], workload: &str) -> Vec<Sustained<'a>> {
    let mut runs: Vec<Sustained> = cells
        .iter()
        .filter(|c| c.workload == workload && c.window_end_secs.is_none())
        .map(|run| {
            let mut windows: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.workload == workload && c.engine == run.engine)
                .filter(|c| c.window_end_secs.is_some())
                .collect();
            let end = |c: &Cell| c.window_end_secs.unwrap_or(0.0);
            windows.sort_by(|a, b| end(a).total_cmp(&end(b)));
            Sustained { run, windows }
        })
        .collect();
    runs.sort_by_key(|r| engine_rank(cells, &r.run.engine));
    runs.dedup_by(|a, b| a.run.engine == b.run.engine);
    runs
}

/// A sustained run's figures, in keys/s.
#[derive(Clone, Debug, PartialEq)]
pub struct SustainStats {
    pub windows: usize,
    /// The first window's keys/s.
    pub first: f64,
    /// Keys/s over the last third: the last `last_third_windows` windows (a third of them,
    /// rounded, at least one), from `last_third_from` seconds to the end.
    pub last_third: f64,
    pub last_third_windows: usize,
    pub last_third_from: f64,
    /// The lowest window's keys/s and its (start, end) in seconds.
    pub min: f64,
    pub min_at: (f64, f64),
    /// The whole run's keys/s.
    pub mean: f64,
    /// Windows below half of `mean`.
    pub below_half: usize,
}

/// The figures of a whole-run cell and its windows (in time order); `None` without windows.
pub fn sustain_stats(run: &Cell, windows: &[&Cell]) -> Option<SustainStats> {
    let n = windows.len();
    let first = windows.first()?;
    let k = ((n as f64 / 3.0).round() as usize).clamp(1, n);
    let tail = &windows[n - k..];
    let tail_secs: f64 = tail.iter().map(|w| w.secs).sum();
    let tail_keys: f64 = tail.iter().map(|w| w.value * w.secs).sum();
    let lowest = windows
        .iter()
        .min_by(|a, b| a.value.total_cmp(&b.value))
        .expect("not empty");
    let span = |w: &Cell| {
        let end = w.window_end_secs.unwrap_or(0.0);
        (end - w.secs, end)
    };
    Some(SustainStats {
        windows: n,
        first: first.value,
        last_third: if tail_secs > 0.0 {
            tail_keys / tail_secs
        } else {
            0.0
        },
        last_third_windows: k,
        last_third_from: span(tail[0]).0,
        min: lowest.value,
        min_at: span(lowest),
        mean: run.value,
        below_half: windows.iter().filter(|w| w.value < run.value / 2.0).count(),
    })
}

/// Seconds for a heading: 120, 20, 2.5.
fn secs_label(v: f64) -> String {
    without_trailing_zeros(num(v))
}

/// What a sustained workload runs, for headings: "4 threads, 100-key transactions".
fn sustain_what(workload: &str, threads: usize) -> String {
    let plural = if threads == 1 { "" } else { "s" };
    match crate::workloads::SUSTAIN.iter().find(|w| w.0 == workload) {
        Some(&(name, _, keys)) => {
            let order = if name == crate::workloads::SUSTAIN_SORTED {
                ", ascending keys"
            } else {
                ""
            };
            format!(
                "{threads} thread{plural}, {}-key transactions{order}",
                grouped(keys as f64)
            )
        }
        None => format!("{threads} thread{plural}"),
    }
}

/// Failures by kind, for a table: `0`, or `1,234: ApplyBacklog 1,200, Io(StorageFull) 34`.
fn failures(c: &Cell) -> String {
    if c.errors.is_empty() {
        return "0".into();
    }
    let kinds: Vec<String> = c
        .errors
        .iter()
        .map(|(k, v)| format!("{k} {}", grouped(*v as f64)))
        .collect();
    format!("**{}**: {}", grouped(c.failed() as f64), kinds.join(", "))
}

/// The sustained-ingest section: per workload a table (a row per engine), `baseline_engine`'s
/// last-third keys/s against each other engine's, and the plot of keys/s over time.
pub fn sustain_markdown(cells: &[Cell], baseline_engine: &str) -> String {
    let mut md = String::from(
        "## Sustained ingest\n\n\
         Each engine starts from an empty store and its writers commit durable transactions of \
         16-byte keys (random; in `sustain-sorted` ascending, each above all before it) and \
         100-byte values for the whole run, as fast as they can, into a store that keeps \
         growing. Keys are counted in the window in which their commit \
         completes. **mean** is the whole run's keys/s; **last third** the keys/s of the last \
         third of the windows (a third of them, rounded, at least one); **min window** the \
         lowest window and when it was; **< ½ mean** how many windows fell below half of the \
         run's mean. Latency is per successful commit over the whole run. A writer whose \
         commit fails counts the failure by kind (walmdb: the `Error` variant) and goes on. \
         **disk** is the store's size on disk at the end of the run. Every window is a row of \
         results.csv and results.json (the rows with `window_end_secs`), with its own \
         latency percentiles, failures, CPU and size on disk. Rates are keys/s.\n\n",
    );
    for workload in sustain_workloads(cells) {
        let runs = sustained(cells, &workload);
        let Some(first) = runs.first() else {
            continue;
        };
        let window = first.windows.first().map_or(first.run.secs, |w| w.secs);
        let _ = writeln!(
            md,
            "### {workload}: {}, {} s in {} s windows\n",
            sustain_what(&workload, first.run.threads),
            secs_label(first.run.secs),
            secs_label(window)
        );
        md += "| engine | first window | last third | min window | mean | < ½ mean \
               | p50 µs | p99 µs | p99.9 µs | failed commits | disk MiB | other CPU (cores) |\n";
        md += "|---|--:|--:|--:|--:|:-:|--:|--:|--:|---|--:|--:|\n";
        let stats: Vec<Option<SustainStats>> = runs
            .iter()
            .map(|r| sustain_stats(r.run, &r.windows))
            .collect();
        for (r, st) in runs.iter().zip(&stats) {
            let c = r.run;
            let name = if c.engine == baseline_engine {
                format!("**{}**", c.engine)
            } else {
                c.engine.clone()
            };
            let dash = || "–".to_string();
            let (first_w, last, min, below) = match st {
                Some(st) => (
                    num(st.first),
                    num(st.last_third),
                    format!(
                        "{} ({}–{} s)",
                        num(st.min),
                        secs_label(st.min_at.0),
                        secs_label(st.min_at.1)
                    ),
                    if st.below_half == 0 {
                        "none".to_string()
                    } else {
                        format!("**{} of {}**", st.below_half, st.windows)
                    },
                ),
                None => (dash(), dash(), dash(), dash()),
            };
            let _ = writeln!(
                md,
                "| {name} | {first_w} | {last} | {min} | {} | {below} | {} | {} | {} | {} | {} | {} |",
                num(c.value),
                opt(c.p50_us),
                opt(c.p99_us),
                opt(c.p999_us),
                failures(c),
                mib(c.disk_bytes),
                opt(c.other_cpu_cores),
            );
        }
        md += "\n";
        let base = runs
            .iter()
            .zip(&stats)
            .find(|(r, _)| r.run.engine == baseline_engine);
        match base {
            Some((_, Some(b))) => {
                let peers: Vec<String> = runs
                    .iter()
                    .zip(&stats)
                    .filter(|(r, _)| r.run.engine != baseline_engine)
                    .map(|(r, st)| {
                        let ratio_of = st
                            .as_ref()
                            .map(|st| b.last_third / st.last_third)
                            .filter(|x| x.is_finite());
                        format!("{} **{}**", r.run.engine, ratio(ratio_of))
                    })
                    .collect();
                if !peers.is_empty() {
                    let _ = writeln!(
                        md,
                        "{baseline_engine}'s last-third keys/s against each peer's: {}. \
                         _(walmdb / peer: above 1 means {baseline_engine} sustains more.)_\n",
                        peers.join(", ")
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    md,
                    "{baseline_engine} was not measured here, so there are no ratios.\n"
                );
            }
        }
        let _ = writeln!(
            md,
            "![{workload}: keys/s over time]({})\n",
            over_time_file(&workload)
        );
        let notes: Vec<String> = runs
            .iter()
            .filter(|r| !r.run.note.is_empty())
            .map(|r| format!("- {}: {}", r.run.engine, r.run.note))
            .collect();
        if !notes.is_empty() {
            md += "Notes:\n\n";
            md += &notes.join("\n");
            md += "\n\n";
        }
    }
    md
}

/// `workload`'s keys/s in each window against time (log y), a line per engine, the last
/// third shaded. A window without commits sits on the axis floor, hollow.
pub fn plot_over_time(cells: &[Cell], workload: &str, path: &Path) -> Result<()> {
    let runs = sustained(cells, workload);
    let title = format!("{workload}: keys/s over time");
    let positive: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.windows.iter().map(|w| w.value))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    if positive.is_empty() {
        return empty_plot(path, &title, &format!("No {workload} window had a commit."));
    }
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().copied().fold(0.0, f64::max);
    let (y0, y1) = log_range(lo, hi, 1.6, 1.6);
    let x1 = runs
        .iter()
        .flat_map(|r| r.windows.iter().filter_map(|w| w.window_end_secs))
        .fold(0.0, f64::max);
    let first = &runs[0];
    let window = first.windows.first().map_or(x1, |w| w.secs);

    let width = 1100;
    let root = SVGBackend::new(path, (width, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(width - 250);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            format!(
                "{title} ({}, {} s windows, higher is better)",
                sustain_what(workload, first.run.threads),
                secs_label(window)
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(90)
        .build_cartesian_2d(
            0.0..x1,
            (y0..y1).log_scale().with_key_points(log_ticks(y0, y1, 12)),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .max_light_lines(1)
        .y_desc("keys/s (log scale)")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| without_trailing_zeros(format!("{x:.1}")))
        .y_label_formatter(&|y| si(*y))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(plot_err)?;

    // The last third, shaded (the windows the "last third" column averages).
    if let Some(st) = sustain_stats(first.run, &first.windows) {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(st.last_third_from, y0), (x1, y1)],
                BLACK.mix(0.05).filled(),
            )))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                " last third".to_string(),
                (st.last_third_from, y1 / 1.15),
                ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
            )))
            .map_err(plot_err)?;
    }

    let mut legend = Vec::new();
    let mut any_empty = false;
    for (i, r) in runs.iter().enumerate() {
        let engine = r.run.engine.as_str();
        let color = engine_color(engine, i);
        // Each window at its middle; one without commits on the floor.
        let pts: Vec<((f64, f64), bool)> = r
            .windows
            .iter()
            .map(|w| {
                let x = w.window_end_secs.unwrap_or(0.0) - w.secs / 2.0;
                let empty = !(w.value > 0.0 && w.value.is_finite());
                ((x, if empty { y0 } else { w.value }), empty)
            })
            .collect();
        any_empty |= pts.iter().any(|p| p.1);
        let width = if engine == TARGET_WALMDB { 4 } else { 2 };
        let style = ShapeStyle::from(&color).stroke_width(width);
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| p.0), style))
            .map_err(plot_err)?;
        chart
            .draw_series(pts.iter().map(|&(p, empty)| {
                let marker = if empty {
                    ShapeStyle::from(&color).stroke_width(2)
                } else {
                    color.filled()
                };
                Circle::new(p, 4, marker)
            }))
            .map_err(plot_err)?;
        legend.push((engine.to_string(), color, r.run.durable));
    }
    line_legend(&right, &legend)?;
    if any_empty {
        let y = 88 + 26 * legend.len() as i32 + 30;
        right
            .draw(&Text::new(
                "hollow, on the floor: no".to_string(),
                (10, y),
                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(plot_err)?;
        right
            .draw(&Text::new(
                "commit in that window".to_string(),
                (10, y + 16),
                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
            ))
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(workload: &str, engine: &str, threads: usize, value: f64, unit: &str) -> Cell {
        let higher = !unit.starts_with("ns") && unit != "ms";
        let durable = EngineKind::ALL
            .iter()
            .find(|k| k.name() == engine)
            .is_none_or(|k| k.durable());
        Cell {
            workload: workload.into(),
            engine: engine.into(),
            durable,
            threads,
            value,
            unit: unit.into(),
            higher_is_better: higher,
            p50_us: Some(value.recip() * 1e6 / 3.0),
            p99_us: Some(value.recip() * 1e6),
            p999_us: Some(value.recip() * 3e6),
            cpu_secs_per_1000: Some(0.012),
            bytes_written_per_op: Some(4096.0),
            write_amplification: Some(35.3),
            peak_rss_bytes: Some(50 << 20),
            disk_bytes: Some(300 << 20),
            ops: 1000,
            secs: 1.0,
            other_cpu_cores: Some(0.05),
            note: String::new(),
            window_end_secs: None,
            errors: BTreeMap::new(),
            disk_write_bytes: None,
            device_write_bytes: None,
        }
    }

    /// commit-1key at every thread count for walmdb, rocksdb and lmdb; get and scan on 1 thread.
    fn sample() -> Vec<Cell> {
        let mut cells = Vec::new();
        for (t, w, r, l) in [
            (1, 1300.0, 1000.0, 450.0),
            (4, 5200.0, 3000.0, 460.0),
            (16, 20000.0, 10000.0, 470.0),
            (64, 60000.0, 50000.0, 480.0),
        ] {
            cells.push(cell("commit-1key", "walmdb group", t, w, "commits/s"));
            cells.push(cell("commit-1key", "rocksdb sync", t, r, "commits/s"));
            cells.push(cell("commit-1key", "lmdb durable", t, l, "commits/s"));
            cells.push(cell("commit-1key", "walmdb none", t, w * 3.0, "commits/s"));
        }
        cells.push(cell("get", "walmdb group", 1, 210.0, "ns/op"));
        cells.push(cell("get", "lmdb durable", 1, 200.0, "ns/op"));
        cells.push(cell("scan", "walmdb group", 1, 30.0, "ns/key"));
        cells.push(cell("scan", "lmdb durable", 1, 20.0, "ns/key"));
        cells
    }

    #[test]
    fn ratios_point_the_right_way() {
        let c = sample();
        let w = find(&c, "commit-1key", 16, "walmdb group").unwrap();
        let r = find(&c, "commit-1key", 16, "rocksdb sync").unwrap();
        assert_eq!(advantage(w, r), Some(2.0), "rate: walmdb / peer");
        let wg = find(&c, "get", 1, "walmdb group").unwrap();
        let lg = find(&c, "get", 1, "lmdb durable").unwrap();
        assert!(
            (advantage(wg, lg).unwrap() - 200.0 / 210.0).abs() < 1e-12,
            "time: peer / walmdb"
        );

        let md = markdown(&c, "walmdb group");
        assert!(md.contains("### commit-1key, 16 threads"));
        assert!(md.contains("rocksdb sync **2.00x**"), "{md}");
        assert!(md.contains("lmdb durable **0.952x**"), "{md}");
        assert!(md.contains("walmdb / peer") && md.contains("peer / walmdb"));
        assert!(md.contains("walmdb none (not durable) **0.333x**"), "{md}");
        // Groups in reading order: commit-1key before get before scan, threads ascending.
        let pos = |s: &str| md.find(s).unwrap();
        assert!(pos("commit-1key, 1 thread\n") < pos("commit-1key, 4 threads"));
        assert!(pos("commit-1key, 64 threads") < pos("### get, 1 thread"));
        assert!(pos("### get, 1 thread") < pos("### scan, 1 thread"));
    }

    #[test]
    fn targets_evaluate() {
        let c = sample();
        let t = targets(&c);
        assert_eq!(t.len(), 9);
        let get = |w: &str, th: usize, peer: &str| {
            t.iter()
                .find(|x| x.workload == w && x.threads == th && x.peer == peer)
                .unwrap()
        };
        let r16 = get("commit-1key", 16, "rocksdb sync");
        assert_eq!((r16.measured, r16.status), (Some(2.0), Status::Met));
        let r64 = get("commit-1key", 64, "rocksdb sync");
        assert_eq!((r64.measured, r64.status), (Some(1.2), Status::Miss));
        let l16 = get("commit-1key", 16, "lmdb durable");
        assert_eq!(l16.status, Status::Met, "{:?}", l16.measured);
        let r1 = get("commit-1key", 1, "rocksdb sync");
        assert_eq!(r1.status, Status::Met);
        // No sqlite cells: not measured.
        let s1 = get("commit-1key", 1, "sqlite full");
        assert_eq!((s1.measured, s1.status), (None, Status::NotMeasured));
        let b = get("bulk-1000", 1, "rocksdb sync");
        assert_eq!(b.status, Status::NotMeasured);
        // Times: walmdb / lmdb. 210 / 200 = 1.05 <= 1.1: met; 30 / 20 = 1.5 > 1.2: miss.
        let g = get("get", 1, "lmdb durable");
        assert!((g.measured.unwrap() - 1.05).abs() < 1e-12);
        assert_eq!(g.status, Status::Met);
        let s = get("scan", 1, "lmdb durable");
        assert!((s.measured.unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(s.status, Status::Miss);

        let md = targets_markdown(&t);
        assert!(md.contains("not measured"));
        assert!(md.contains("**MISS**"));
        assert!(md.contains("| 2.00x | ≥ 1.50x | met |"), "{md}");
        assert!(md.contains("| 1.05 | ≤ 1.10 | met |"), "{md}");
        assert!(md.contains("5 met, 2 missed, 2 not measured"), "{md}");
    }

    #[test]
    fn missing_baseline_says_so() {
        let c = vec![cell("commit-1key", "rocksdb sync", 1, 1000.0, "commits/s")];
        let md = markdown(&c, "walmdb group");
        assert!(md.contains("walmdb group was not measured here"));
        assert!(targets(&c).iter().all(|t| t.status == Status::NotMeasured));
    }

    #[test]
    fn csv_has_every_field() {
        let mut c = sample();
        c[0].note = "a note, with \"quotes\"".into();
        let out = csv(&c);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), c.len() + 1);
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert!(
            // The note, then the window's end, the failures and the kv group's bytes written
            // (all empty here).
            lines[1].ends_with(",\"a note, with \"\"quotes\"\"\",,,,"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2].split(',').count(), CSV_HEADER.len());
        // The header names exactly the serialized fields of a cell.
        let v = serde_json::to_value(&c[0]).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut header = CSV_HEADER.to_vec();
        fields.sort_unstable();
        header.sort_unstable();
        assert_eq!(fields, header);

        let j = json(&c);
        let back: Vec<Cell> = serde_json::from_str(&j).unwrap();
        assert_eq!(back.len(), c.len());
        assert!(j.contains("\n  {"), "pretty");
    }

    #[test]
    fn plots_write_svg() {
        let dir = tempfile::tempdir().unwrap();
        let c = sample();
        let p = dir.path().join("t.svg");
        plot_throughput(&c, "commit-1key", &p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("<svg"));
        assert!(s.contains("walmdb group") && s.contains("rocksdb sync"));
        let p = dir.path().join("l.svg");
        plot_latency(&c, "commit-1key", 16, &p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("<svg") && s.contains("p999"));
        // Nothing measured: still an SVG, saying so.
        let p = dir.path().join("none.svg");
        plot_throughput(&c, "ycsb-a", &p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("<svg"));
        plot_latency(&c, "ycsb-a", 4, &p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("<svg"));
    }

    /// A sustained run: a whole-run cell of `values`' mean, then a cell per `window`-second
    /// window (the last one shorter when `secs` is not a multiple).
    fn sustained_run(
        workload: &str,
        engine: &str,
        threads: usize,
        secs: f64,
        window: f64,
        values: &[f64],
    ) -> Vec<Cell> {
        let mut windows = Vec::new();
        let mut keys = 0.0;
        for (i, &v) in values.iter().enumerate() {
            let end = ((i + 1) as f64 * window).min(secs);
            let mut c = cell(workload, engine, threads, v, "keys/s");
            c.secs = end - i as f64 * window;
            c.window_end_secs = Some(end);
            keys += v * c.secs;
            windows.push(c);
        }
        let mut run = cell(workload, engine, threads, keys / secs, "keys/s");
        run.secs = secs;
        let mut cells = vec![run];
        cells.append(&mut windows);
        cells
    }

    fn sustain_sample() -> Vec<Cell> {
        let mut c = Vec::new();
        // walmdb collapses after 40 s, with failed commits; RocksDB stays flat.
        let walmdb = [
            300e3, 290e3, 280e3, 250e3, 60e3, 40e3, 30e3, 0.0, 35e3, 30e3, 30e3, 30e3,
        ];
        c.extend(sustained_run(
            "sustain-100key",
            "walmdb group",
            4,
            120.0,
            10.0,
            &walmdb,
        ));
        c[0].errors.insert("ApplyBacklog".into(), 1200);
        c[8].errors.insert("ApplyBacklog".into(), 1200);
        c.extend(sustained_run(
            "sustain-100key",
            "rocksdb sync",
            4,
            120.0,
            10.0,
            &[100e3; 12],
        ));
        c.extend(sustained_run(
            "sustain-100key",
            "lmdb durable",
            4,
            120.0,
            10.0,
            &[20e3; 12],
        ));
        c.extend(sustained_run(
            "sustain-1key",
            "walmdb group",
            16,
            20.0,
            6.0,
            &[9e3, 8e3, 8e3, 7e3],
        ));
        c.extend(sustained_run(
            "sustain-1key",
            "rocksdb sync",
            16,
            20.0,
            6.0,
            &[4e3; 4],
        ));
        c
    }

    #[test]
    fn sustain_figures() {
        let c = sustain_sample();
        let runs = sustained(&c, "sustain-100key");
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].run.engine, "walmdb group", "engine order");
        let w = sustain_stats(runs[0].run, &runs[0].windows).unwrap();
        assert_eq!(w.windows, 12);
        assert_eq!(w.first, 300e3);
        // The last third: 4 of 12 windows, from 80 s.
        assert_eq!((w.last_third_windows, w.last_third_from), (4, 80.0));
        assert!((w.last_third - (35e3 + 3.0 * 30e3) / 4.0).abs() < 1e-6);
        assert_eq!((w.min, w.min_at), (0.0, (70.0, 80.0)));
        assert_eq!(w.below_half, 7, "mean {}", w.mean);
        assert_eq!(runs[2].run.engine, "rocksdb sync");
        let r = sustain_stats(runs[2].run, &runs[2].windows).unwrap();
        assert_eq!((r.below_half, r.min, r.last_third), (0, 100e3, 100e3));
        // 4 windows of 6, 6, 6 and 2 s: the last third is the last window, weighted by time.
        let one = sustained(&c, "sustain-1key");
        let s = sustain_stats(one[0].run, &one[0].windows).unwrap();
        assert_eq!((s.last_third_windows, s.last_third_from), (1, 18.0));
        assert_eq!(s.last_third, 7e3);
        assert!((s.mean - (9e3 * 6.0 + 8e3 * 12.0 + 7e3 * 2.0) / 20.0).abs() < 1e-9);
        assert_eq!(sustain_workloads(&c), ["sustain-100key", "sustain-1key"]);
    }

    #[test]
    fn sustain_section() {
        let c = sustain_sample();
        let md = sustain_markdown(&c, "walmdb group");
        assert!(md.starts_with("## Sustained ingest"));
        assert!(
            md.contains(
                "### sustain-100key: 4 threads, 100-key transactions, 120 s in 10 s windows"
            ),
            "{md}"
        );
        assert!(
            md.contains("### sustain-1key: 16 threads, 1-key transactions, 20 s in 6 s windows"),
            "{md}"
        );
        // walmdb's row: first window, last third, the lowest window and when, the mean, the
        // windows below half of it, the failures by kind.
        assert!(
            md.contains(
                "| **walmdb group** | 300,000 | 31,250 | 0 (70–80 s) | 114,583 | **7 of 12** |"
            ),
            "{md}"
        );
        assert!(md.contains("**1,200**: ApplyBacklog 1,200"), "{md}");
        assert!(
            md.contains("| rocksdb sync | 100,000 | 100,000 | 100,000 (0–10 s) | 100,000 | none |"),
            "{md}"
        );
        // Ratios of the last thirds: 31,250 / 100,000 and / 20,000.
        assert!(
            md.contains("lmdb durable **1.56x**, rocksdb sync **0.312x**"),
            "{md}"
        );
        assert!(md.contains("(sustain-100key-over-time.svg)"));
        // Windows are not rows of their own.
        assert_eq!(md.matches("| **walmdb group** |").count(), 2);
        // The generic tables leave the sustained runs to this section (the caller partitions).
        assert!(c.iter().all(is_sustain));
        let without = sustain_markdown(&c[13..39], "walmdb group");
        assert!(
            without.contains("walmdb group was not measured here"),
            "{without}"
        );
    }

    #[test]
    fn sustain_csv_and_plot() {
        let c = sustain_sample();
        let out = csv(&c);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), c.len() + 1);
        // The whole-run row: no window end, the failures by kind; a window row: its end.
        assert!(lines[1].ends_with(",,ApplyBacklog=1200,,"), "{}", lines[1]);
        assert!(lines[2].ends_with(",10,,,"), "{}", lines[2]);
        let back: Vec<Cell> = serde_json::from_str(&json(&c)).unwrap();
        assert_eq!(back[8].window_end_secs, Some(80.0));
        assert_eq!(back[0].errors["ApplyBacklog"], 1200);
        // A results.json from before the sustained workloads still reads.
        let mut old = serde_json::to_value(&c[0]).unwrap();
        old.as_object_mut().unwrap().remove("window_end_secs");
        old.as_object_mut().unwrap().remove("errors");
        old.as_object_mut().unwrap().remove("disk_write_bytes");
        old.as_object_mut().unwrap().remove("device_write_bytes");
        let old: Cell = serde_json::from_value(old).unwrap();
        assert!(old.errors.is_empty() && old.window_end_secs.is_none());
        assert!(old.disk_write_bytes.is_none() && old.device_write_bytes.is_none());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(over_time_file("sustain-100key"));
        plot_over_time(&c, "sustain-100key", &p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("<svg") && s.contains("last third"));
        for e in ["walmdb group", "rocksdb sync", "lmdb durable"] {
            assert!(s.contains(e), "{e}");
        }
        // One line per engine: a polyline through its 12 windows.
        let lines = s
            .lines()
            .filter(|l| l.starts_with("<polyline"))
            .filter_map(|l| l.split('"').skip_while(|a| !a.ends_with("points=")).nth(1))
            .filter(|points| points.split_whitespace().count() == 12)
            .count();
        assert_eq!(lines, 3, "{s}");
        assert!(
            s.contains("no") && s.contains("commit in that window"),
            "the empty window"
        );
        let p = dir.path().join("none.svg");
        plot_over_time(&c, "sustain-absent", &p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("<svg"));
    }

    /// The kv group's table: a column per engine, walmdb's ratios to the best peer of its
    /// durability and to LMDB, the split bulk load and a failed row marked.
    #[test]
    fn kv_section() {
        let mut c = Vec::new();
        let mut row = |w: &str, e: &str, v: f64, unit: &str| {
            let mut x = cell(w, e, 1, v, unit);
            x.disk_write_bytes = Some(2 << 20);
            x.device_write_bytes = Some(1 << 20);
            c.push(x);
        };
        row("kv-bulk-load", "walmdb group", 200.0, "keys/s");
        row("kv-bulk-load", "lmdb durable", 400.0, "keys/s");
        row("kv-bulk-load", "fjall sync", 100.0, "keys/s");
        row("kv-bulk-load", "fjall none", 1000.0, "keys/s");
        row("kv-len", "walmdb group", 2.0, "ms");
        row("kv-len", "lmdb durable", 1.0, "ms");
        row("kv-len", "fjall sync", 8.0, "ms");
        row("kv-pop", "walmdb group", 10.0, "pops/s");
        row("kv-pop", "lmdb durable", 5.0, "pops/s");
        row("kv-total", "walmdb group", 0.0, "MiB written");
        row("kv-total", "lmdb durable", 0.0, "MiB written");
        c[0].note = format!(
            "{} one transaction of 5 pairs was refused",
            crate::kv::SPLIT
        );
        c[2].note = format!("{} something broke", crate::kv::FAILED);
        c[9].disk_write_bytes = Some(1 << 30);
        c[9].device_write_bytes = Some(100 << 20);
        c[9].disk_bytes = Some(50 << 20);
        c[10].disk_bytes = Some(25 << 20);
        assert!(c.iter().all(is_kv));
        let md = kv_markdown(&c);
        assert!(md.starts_with("## Embedded-KV workload (group kv)"), "{md}");
        assert!(
            md.contains(
                "| row | unit | walmdb group | lmdb durable | fjall sync | fjall none \
                 | walmdb group / best peer | walmdb group / LMDB |"
            ),
            "{md}"
        );
        // The durable peers only: lmdb durable is best (fjall sync failed, fjall none is not
        // durable).
        assert!(
            md.contains(
                "| kv-bulk-load | keys/s | 200 **split**<br>_p 2.00 · d 1.00_ \
                 | 400<br>_p 2.00 · d 1.00_ | **FAILED**<br>_p 2.00 · d 1.00_ \
                 | 1,000<br>_p 2.00 · d 1.00_ | **0.500x**<br>lmdb durable | **0.500x** |"
            ),
            "{md}"
        );
        // A time: the best peer is the fastest, the ratio peer / walmdb.
        assert!(
            md.contains("| kv-len | ms |") && md.contains("**0.500x**<br>lmdb durable"),
            "{md}"
        );
        assert!(
            md.contains("| **2.00x**<br>lmdb durable | **2.00x** |"),
            "{md}"
        );
        assert!(
            md.contains("| written, whole workload (p) | MiB | 1,024 | 2.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| on disk at the end | MiB | 50.0 | 25.0 |"),
            "{md}"
        );
        assert!(md.contains("for walmdb group 10.2x"), "{md}");
        assert!(md.contains("Bulk load refused as one transaction:"), "{md}");
        assert!(md.contains("- kv-bulk-load, fjall sync: FAILED: something broke"));
    }

    #[test]
    fn formatting() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.01234), "0.0123");
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(20_000.0), "20k");
        assert_eq!(si(500.0), "500");
        assert_eq!(duration_us(2500.0), "2.5 ms");
        assert_eq!(latency_label(237_037.0), "237 ms");
        assert_eq!(latency_label(4800.0), "4.8 ms");
        assert_eq!(latency_label(19.74), "19.7 µs");
        let t = log_ticks(300.0, 70_000.0, 12);
        assert_eq!(
            t,
            vec![500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 20_000.0, 50_000.0]
        );
        assert!(log_ticks(50_000.0, 80_000.0, 12).len() >= 2);
    }

    /// Every engine at four thread counts, written to $TMPDIR/walmdb-harness-plots for a look:
    /// `cargo test --release --no-default-features render_examples -- --ignored`.
    #[test]
    #[ignore]
    fn render_examples() {
        let figures: [(&str, [f64; 4]); 12] = [
            ("walmdb group", [1300.0, 5200.0, 20_000.0, 61_000.0]),
            ("walmdb every-write", [480.0, 1500.0, 3100.0, 4200.0]),
            (
                "walmdb interval-10ms",
                [180_000.0, 420_000.0, 650_000.0, 700_000.0],
            ),
            ("walmdb none", [260_000.0, 600_000.0, 900_000.0, 950_000.0]),
            ("lmdb durable", [450.0, 455.0, 460.0, 458.0]),
            ("lmdb no-sync", [90_000.0, 85_000.0, 80_000.0, 78_000.0]),
            ("redb immediate", [390.0, 400.0, 405.0, 401.0]),
            ("redb none", [60_000.0, 58_000.0, 57_000.0, 55_000.0]),
            ("rocksdb sync", [1000.0, 3200.0, 11_000.0, 38_000.0]),
            (
                "rocksdb no-sync",
                [150_000.0, 380_000.0, 520_000.0, 560_000.0],
            ),
            ("sqlite full", [820.0, 800.0, 790.0, 770.0]),
            ("sqlite normal", [21_000.0, 20_000.0, 19_000.0, 18_500.0]),
        ];
        let mut cells = Vec::new();
        for (engine, values) in figures {
            for (t, v) in [1, 4, 16, 64].into_iter().zip(values) {
                let mut c = cell("commit-1key", engine, t, v, "commits/s");
                let us = t as f64 / v * 1e6;
                (c.p50_us, c.p99_us, c.p999_us) = (Some(us * 0.8), Some(us * 2.5), Some(us * 6.0));
                cells.push(c);
            }
        }
        let dir = std::env::temp_dir().join("walmdb-harness-plots");
        std::fs::create_dir_all(&dir).unwrap();
        plot_throughput(
            &cells,
            "commit-1key",
            &dir.join("commit-1key-throughput.svg"),
        )
        .unwrap();
        for t in [1, 16] {
            let p = dir.join(format!("commit-1key-latency-t{t}.svg"));
            plot_latency(&cells, "commit-1key", t, &p).unwrap();
        }
        plot_throughput(&cells, "ycsb-a", &dir.join("empty.svg")).unwrap();
        std::fs::write(dir.join("report.md"), markdown(&cells, "walmdb group")).unwrap();
        std::fs::write(dir.join("targets.md"), targets_markdown(&targets(&cells))).unwrap();
    }
}
