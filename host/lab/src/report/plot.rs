//! The report's SVG plots. plotters draws them with its SVG backend and no font stack: text
//! goes into the SVG as text, for the viewer to render, so nothing depends on system fonts.
//! One colour per mode, the same in every plot. With several runs of a mode, a point is the
//! median over the runs that reached that turn.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{Data, cached_tokens, median};
use crate::scenario::Row;

/// One plot: its file name, its title, and how it is drawn.
pub struct Plot {
    pub file: &'static str,
    pub title: &'static str,
    draw: fn(&Data, &Path, &str) -> anyhow::Result<()>,
}

impl Plot {
    /// Draws this plot of `data` as an SVG file at `path`.
    pub fn draw(&self, data: &Data, path: &Path) -> anyhow::Result<()> {
        (self.draw)(data, path, self.title)
    }
}

/// The five plots, in the order report.md shows them.
pub const PLOTS: [Plot; 5] = [
    Plot {
        file: "response-time.svg",
        title: "Response time per turn",
        draw: |data, path, title| {
            let series = by_mode(data, |run| each(run, |r| Some(r.round_trip_ms)));
            lines(path, title, "round trip", Unit::Ms, series)
        },
    },
    Plot {
        file: "store-bytes.svg",
        title: "Bytes written to the store, cumulative",
        draw: |data, path, title| {
            let series = by_mode(data, cumulative_store_bytes);
            lines(
                path,
                title,
                "written to the store so far",
                Unit::Bytes,
                series,
            )
        },
    },
    Plot {
        file: "request-bytes.svg",
        title: "Request size per turn",
        draw: |data, path, title| {
            let series = by_mode(data, |run| each(run, |r| Some(r.request_bytes as f64)));
            lines(path, title, "request body", Unit::Bytes, series)
        },
    },
    Plot {
        file: "context-tokens.svg",
        title: "Context tokens per turn",
        draw: |data, path, title| {
            let series = by_mode(data, |run| {
                each(run, |r| r.context_tokens.map(|n| n as f64))
            });
            lines(path, title, "prompt the model saw", Unit::Tokens, series)
        },
    },
    Plot {
        file: "prompt-tokens.svg",
        title: "Prompt tokens per turn: evaluated vs reused from the prompt cache",
        draw: tokens,
    },
];

const WIDTH: u32 = 960;
const HEIGHT: u32 = 560;
const FONT: &str = "sans-serif";
/// Okabe-Ito colours, which stay distinct with colour blindness; mode `i` gets `COLOURS[i]`.
const COLOURS: [RGBColor; 7] = [
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Line width per mode, widest first.
const LINE_WIDTHS: [u32; 4] = [7, 5, 3, 2];

/// One line: a mode, its place in the report's modes, and its (turn, value) points.
struct Series {
    label: String,
    index: usize,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

enum Unit {
    Ms,
    Bytes,
    Tokens,
}

/// A series per mode that has data: each run's points, the median per turn over the runs.
fn by_mode(data: &Data, points: impl Fn(&[&Row]) -> Vec<(u32, f64)>) -> Vec<Series> {
    let mut all = Vec::new();
    for (i, mode) in data.modes.iter().enumerate() {
        let mut at: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for run in data.runs(mode) {
            for (turn, value) in points(&run) {
                at.entry(turn).or_default().push(value);
            }
        }
        let points: Vec<(f64, f64)> = at
            .into_iter()
            .filter_map(|(turn, values)| Some((f64::from(turn), median(values)?)))
            .collect();
        if !points.is_empty() {
            all.push(Series {
                label: mode.clone(),
                index: i,
                colour: COLOURS[i % COLOURS.len()],
                points,
            });
        }
    }
    all
}

fn each(run: &[&Row], value: impl Fn(&Row) -> Option<f64>) -> Vec<(u32, f64)> {
    run.iter()
        .filter_map(|r| Some((r.turn, value(r)?)))
        .collect()
}

/// The running total, up to the first turn that does not report its bytes.
fn cumulative_store_bytes(run: &[&Row]) -> Vec<(u32, f64)> {
    let mut total = 0;
    run.iter()
        .map_while(|r| {
            total += r.store_bytes?;
            Some((r.turn, total as f64))
        })
        .collect()
}

/// Bytes in bytes, kB or MB, whichever keeps the tick labels short.
fn byte_scale(max: f64) -> (f64, &'static str) {
    match max {
        m if m < 1e4 => (1.0, "bytes"),
        m if m < 1e7 => (1e3, "kB"),
        _ => (1e6, "MB"),
    }
}

/// A line per mode, with a marker on every turn.
fn lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    unit: Unit,
    mut series: Vec<Series>,
) -> anyhow::Result<()> {
    let ymax = series
        .iter()
        .flat_map(|s| &s.points)
        .fold(0.0, |m: f64, p| m.max(p.1));
    let (divisor, unit) = match unit {
        Unit::Ms => (1.0, "ms"),
        Unit::Tokens => (1.0, "tokens"),
        Unit::Bytes => byte_scale(ymax),
    };
    for point in series.iter_mut().flat_map(|s| &mut s.points) {
        point.1 /= divisor;
    }
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match series.is_empty() {
        true => format!("{title} (no data in these CSVs)"),
        false => title.to_string(),
    };
    let xmax = series
        .iter()
        .flat_map(|s| &s.points)
        .fold(1.0, |m: f64, p| m.max(p.0));
    let y_desc = format!("{y_desc} ({unit})");
    let mut chart = frame(&root, &title, 26, xmax, ymax / divisor, &y_desc)?;
    // Modes that measure alike draw on top of each other: earlier modes get wider lines and
    // each its own marker, so that every mode stays visible.
    for s in &series {
        draw_line(&mut chart, s)?;
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// A mode's line and markers, and its legend entry. Each mode has its own marker: a circle,
/// triangle, square or cross.
fn draw_line<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, s: &Series) -> anyhow::Result<()> {
    let colour = s.colour;
    let (fill, style) = (
        colour.filled(),
        colour.stroke_width(LINE_WIDTHS[s.index.min(3)]),
    );
    let line = move |(x, y): (i32, i32)| {
        EmptyElement::at((x + 16, y)) + PathElement::new([(-16, 0), (16, 0)], style)
    };
    let legend = chart
        .draw_series(LineSeries::new(s.points.clone(), style))?
        .label(&s.label);
    let square = |at| EmptyElement::at(at) + Rectangle::new([(-5, -5), (5, 5)], fill);
    let cross = colour.stroke_width(3);
    match s.index % 4 {
        0 => legend.legend(move |p| line(p) + Circle::new((0, 0), 6, fill)),
        1 => legend.legend(move |p| line(p) + TriangleMarker::new((0, 0), 7, fill)),
        2 => legend.legend(move |p| line(p) + Rectangle::new([(-5, -5), (5, 5)], fill)),
        _ => legend.legend(move |p| line(p) + Cross::new((0, 0), 5, cross)),
    };
    let points = s.points.iter().copied();
    match s.index % 4 {
        0 => chart.draw_series(points.map(|p| Circle::new(p, 6, fill)))?,
        1 => chart.draw_series(points.map(|p| TriangleMarker::new(p, 7, fill)))?,
        2 => chart.draw_series(points.map(square))?,
        _ => chart.draw_series(points.map(|p| Cross::new(p, 5, cross)))?,
    };
    Ok(())
}

/// A panel per mode: per turn, a bar of the prompt's tokens, split into those reused from
/// llama-server's prompt cache (light) and those evaluated (dark). The bar's height is the
/// context the model worked on; the dark part is the work the turn cost.
fn tokens(data: &Data, path: &Path, title: &str) -> anyhow::Result<()> {
    let evaluated = by_mode(data, |run| each(run, |r| r.prompt_n.map(|n| n as f64)));
    let cached = by_mode(data, |run| {
        each(run, |r| cached_tokens(r).map(|n| n as f64))
    });
    let panels: Vec<(&Series, &Series)> = evaluated
        .iter()
        .filter_map(|e| Some((e, cached.iter().find(|c| c.label == e.label)?)))
        .collect();
    let bars = |(e, c): (&Series, &Series)| -> Vec<(f64, f64, f64)> {
        let cached: BTreeMap<u64, f64> = c.points.iter().map(|&(t, v)| (t as u64, v)).collect();
        let at = |(t, v): &(f64, f64)| Some((*t, *cached.get(&(*t as u64))?, *v));
        e.points.iter().filter_map(at).collect()
    };
    let all: Vec<Vec<(f64, f64, f64)>> = panels.iter().map(|&p| bars(p)).collect();
    let flat = || all.iter().flatten();
    let ymax = flat().fold(0.0, |m: f64, b| m.max(b.1 + b.2));
    let xmax = flat().fold(1.0, |m: f64, b| m.max(b.0));

    let columns = if panels.len() > 1 { 2 } else { 1 };
    let rows = panels.len().div_ceil(columns).max(1);
    let height = 70 + 380 * rows as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    if panels.is_empty() {
        let title = format!("{title} (no data in these CSVs)");
        frame(&root, &title, 24, xmax, ymax, "prompt tokens")?;
        root.present()?;
        return Ok(());
    }
    let root = root.titled(title, (FONT, 26))?;
    let areas = root.split_evenly((rows, columns));
    for ((area, (series, _)), bars) in areas.iter().zip(&panels).zip(&all) {
        let dark = series.colour;
        let light = dark.mix(0.35);
        let mut chart = frame(area, &series.label, 22, xmax, ymax, "prompt tokens")?;
        let bar = |t: f64, from: f64, to: f64, style: ShapeStyle| {
            Rectangle::new([(t - 0.35, from), (t + 0.35, to)], style)
        };
        chart
            .draw_series(bars.iter().map(|&(t, c, _)| bar(t, 0.0, c, light.filled())))?
            .label("cached (reused)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 7), (x + 16, y + 7)], light.filled()));
        chart
            .draw_series(
                bars.iter()
                    .map(|&(t, c, e)| bar(t, c, c + e, dark.filled())),
            )?
            .label("evaluated (prompt_n)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 7), (x + 16, y + 7)], dark.filled()));
        legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Axes from turn 1 to `xmax` and from 0 to a little above `ymax`, labelled, with a light grid.
fn frame<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    caption_size: u32,
    xmax: f64,
    ymax: f64,
    y_desc: &str,
) -> anyhow::Result<Chart<'a, 'b>> {
    // Headroom for the legend, which sits in the upper left, above the data.
    let top = if ymax > 0.0 { ymax * 1.4 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, caption_size))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(84)
        .build_cartesian_2d(0.5..xmax + 0.5, 0.0..top)?;
    let x_tick = |x: &f64| match x.fract() == 0.0 {
        true => format!("{x:.0}"),
        false => String::new(),
    };
    let y_tick = |y: &f64| {
        let text = format!("{y:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    chart
        .configure_mesh()
        .x_desc("turn")
        .y_desc(y_desc)
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 16))
        .x_labels((xmax as usize + 1).min(21))
        .y_labels(8)
        .x_label_formatter(&x_tick)
        .y_label_formatter(&y_tick)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    Ok(chart)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(14)
        .legend_area_size(44)
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(150, 150, 150))
        .draw()?;
    Ok(())
}
