//! Drawing the report's charts with plotters, once as PNG (text in the embedded DejaVu Sans) and
//! once as SVG.

use super::{Curve, ReportError};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// A line chart: one curve per arm with its band, optional horizontal reference lines.
#[derive(Clone, Debug)]
pub struct Chart {
    /// File stem suffix: `accuracy`, `sharpness`, ...
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub curves: Vec<Curve>,
    /// (y, label) lines across the chart, such as 2/lr.
    pub hlines: Vec<(f64, String)>,
    /// Plot log10(y), with tick labels in y.
    pub log_y: bool,
    /// The x values are already log10 of the setting; tick labels show the setting.
    pub log_x: bool,
    /// Curves from this index on are dashed and reuse the colours of the first ones.
    pub dashed_from: Option<usize>,
    /// The least margin above and below the data (α, which can sit still at a bound, gets 0.05
    /// so a flat line is not drawn on the frame).
    pub min_pad: f64,
}

impl Chart {
    pub fn new(file: &str, title: &str, x_label: &str, y_label: &str, curves: Vec<Curve>) -> Self {
        Chart {
            file: file.into(),
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            curves,
            hlines: Vec::new(),
            log_y: false,
            log_x: false,
            dashed_from: None,
            min_pad: 0.0,
        }
    }
}

/// A grid of values over two swept settings.
#[derive(Clone, Debug)]
pub struct HeatMap {
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `values[j][i]` at (`xs[i]`, `ys[j]`): `None` where no trial ran, NaN where a seed
    /// diverged.
    pub values: Vec<Vec<Option<f64>>>,
}

/// Points at sampled values of two settings (a random search), coloured by a result.
#[derive(Clone, Debug)]
pub struct Scatter {
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// What the colour shows, for the colour bar.
    pub value_label: String,
    /// (x, y, value); a NaN value is a diverged trial, drawn as a grey cross.
    pub points: Vec<(f64, f64, f64)>,
    /// Draw the axis on a log scale (the values are as sampled, positive).
    pub log_x: bool,
    pub log_y: bool,
}

const SIZE: (u32, u32) = (1200, 560);
/// The panel right of a chart that holds its legend or colour bar, outside the data.
const SIDE: u32 = 330;
/// A legend entry's height, and where the first one sits.
const ROW: u32 = 18;
const LEGEND_TOP: u32 = 50;
/// Longest legend line before it wraps at a space.
const WRAP: usize = 40;
/// Curves with at most this many points get a marker at each (a single evaluation shows).
const MARKERS_UP_TO: usize = 60;
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; registering cannot fail for it.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Tableau-like colours, distinguishable in print.
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

fn plot_err(file: &str) -> impl Fn(String) -> ReportError + '_ {
    move |problem| ReportError::Plot {
        file: file.to_string(),
        problem,
    }
}

/// Something drawn once per backend.
pub trait Figure {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
    /// Pixels (width, height); a long legend makes a chart taller.
    fn size(&self) -> (u32, u32) {
        SIZE
    }
}

impl Figure for Chart {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        chart_on(root, self)
    }
    fn size(&self) -> (u32, u32) {
        let rows: usize = legend(self).iter().map(|e| e.lines.len()).sum();
        (SIZE.0, SIZE.1.max(LEGEND_TOP + ROW * rows as u32 + 20))
    }
}

impl Figure for HeatMap {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        heatmap_on(root, self)
    }
}

impl Figure for Scatter {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        scatter_on(root, self)
    }
}

/// Draws a figure into `DIR/STEM.png` and `DIR/STEM.svg`.
pub fn draw(fig: &impl Figure, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), ReportError> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let name = png.display().to_string();
    {
        let root = BitMapBackend::new(&png, fig.size()).into_drawing_area();
        fig.draw_on(&root).map_err(plot_err(&name))?;
        root.present().map_err(|e| plot_err(&name)(e.to_string()))?;
    }
    let name = svg.display().to_string();
    {
        let root = SVGBackend::new(&svg, fig.size()).into_drawing_area();
        fig.draw_on(&root).map_err(plot_err(&name))?;
        root.present().map_err(|e| plot_err(&name)(e.to_string()))?;
    }
    Ok((png, svg))
}

/// A tick label: [`sig3`], with the rounding residue of a tick meant to be 0 (`-5.55e-17`)
/// written as 0.
pub fn tick(v: f64) -> String {
    sig3(if v.abs() < 1e-12 { 0.0 } else { v })
}

/// A number to three significant digits, trailing zeros dropped: `0.0123`, `87.6`, `1230`,
/// `2.5e-5`. What plots and report tables show (`plan` and `resolved.aht` stay exact).
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let unit = 10f64.powi(v.abs().log10().floor() as i32 - 2);
    let r = (v / unit).round() * unit;
    let a = r.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{r:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exp}");
    }
    let mag = a.log10().floor() as i32;
    if mag >= 2 {
        return format!("{r:.0}");
    }
    let s = format!("{r:.*}", (2 - mag) as usize);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `text` with every decimal number in it ([0-9]+ with a fraction or an exponent) written by
/// [`sig3`]; integers (counts, seeds, steps) are left alone. For arm names such as
/// `aht (lr=0.0012476109725165097)` in legends and tables.
pub fn short_numbers(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit()
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.'));
        if !starts {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let mut j = i;
        let digits = |j: &mut usize| {
            while *j < b.len() && b[*j].is_ascii_digit() {
                *j += 1;
            }
        };
        digits(&mut j);
        let mut decimal = false;
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            j += 1;
            digits(&mut j);
            decimal = true;
        }
        if j + 1 < b.len() && (b[j] == b'e' || b[j] == b'E') {
            let mut k = j + 1;
            if k < b.len() && (b[k] == b'-' || b[k] == b'+') {
                k += 1;
            }
            if k < b.len() && b[k].is_ascii_digit() {
                digits(&mut k);
                j = k;
                decimal = true;
            }
        }
        let token = &text[i..j];
        match token.parse::<f64>() {
            // `1.2.3` is a version, not a number
            Ok(v) if decimal && b.get(j) != Some(&b'.') => out.push_str(&sig3(v)),
            _ => out.push_str(token),
        }
        i = j;
    }
    out
}

/// One legend line: a sample of the curve's stroke, and its label (wrapped).
struct Entry {
    color: RGBColor,
    dashed: bool,
    lines: Vec<String>,
}

/// Wraps a label at spaces so that no line is longer than [`WRAP`] characters where it can.
fn wrap(label: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in label.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= WRAP => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// The legend of a chart: its curves, then its reference lines.
fn legend(chart: &Chart) -> Vec<Entry> {
    let plain = chart.dashed_from.unwrap_or(chart.curves.len()).max(1);
    let mut out: Vec<Entry> = chart
        .curves
        .iter()
        .enumerate()
        .map(|(i, c)| Entry {
            color: PALETTE[(i % plain) % PALETTE.len()],
            dashed: i >= plain,
            lines: wrap(&c.label),
        })
        .collect();
    out.extend(chart.hlines.iter().map(|(_, label)| Entry {
        color: BLACK,
        dashed: true,
        lines: wrap(label),
    }));
    out
}

/// Draws legend entries down the side panel, from the top.
fn draw_legend<DB: DrawingBackend>(
    side: &DrawingArea<DB, Shift>,
    entries: &[Entry],
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut y = LEGEND_TOP as i32;
    for entry in entries {
        let mid = y + ROW as i32 / 2;
        let stroke = entry.color.stroke_width(2);
        if entry.dashed {
            side.draw(&DashedPathElement::new(
                vec![(8, mid), (32, mid)],
                5,
                3,
                stroke,
            ))
            .map_err(e)?;
        } else {
            side.draw(&PathElement::new(vec![(8, mid), (32, mid)], stroke))
                .map_err(e)?;
        }
        for line in &entry.lines {
            side.draw(&side_text(line.clone(), (40, y + ROW as i32 / 2)))
                .map_err(e)?;
            y += ROW as i32;
        }
    }
    Ok(())
}

/// The plot area's axes: title, labelled axes with [`tick`] labels (of 10^v on a log axis, whose
/// coordinates are log10), and a light grid.
fn axes<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    [title, x_label, y_label]: [&str; 3],
    (xs, ys): (std::ops::Range<f64>, std::ops::Range<f64>),
    (log_x, log_y): (bool, bool),
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut ctx = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xs, ys)
        .map_err(e)?;
    let at = |log: bool, v: f64| tick(if log { 10f64.powf(v) } else { v });
    ctx.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v: &f64| at(log_x, *v))
        .y_label_formatter(&|v: &f64| at(log_y, *v))
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    Ok(ctx)
}

/// Text in the side panel, its left end at `at` and centred on it vertically.
fn side_text(text: String, at: (i32, i32)) -> Text<'static, (i32, i32), String> {
    Text::new(
        text,
        at,
        ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center)),
    )
}

fn chart_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let ty = |y: f64| if chart.log_y { y.max(1e-12).log10() } else { y };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for c in &chart.curves {
        for p in &c.points {
            let (lo, hi) = p.band.unwrap_or((p.mean, p.mean));
            x0 = x0.min(p.x);
            x1 = x1.max(p.x);
            for v in [lo, hi, p.mean] {
                if v.is_finite() && (!chart.log_y || v > 0.0) {
                    y0 = y0.min(ty(v));
                    y1 = y1.max(ty(v));
                }
            }
        }
    }
    for (y, _) in &chart.hlines {
        y0 = y0.min(ty(*y));
        y1 = y1.max(ty(*y));
    }
    if x0 > x1 || y0 > y1 {
        return Ok(());
    }
    // One x (a single evaluation): centre it rather than pin it to the left frame.
    if x1 - x0 < 1e-12 {
        let half = (x0.abs() * 0.5).max(0.5);
        (x0, x1) = (x0 - half, x1 + half);
    }
    let pad = ((y1 - y0) * 0.05)
        .max((y0.abs() + y1.abs()) * 0.005)
        .max(chart.min_pad)
        .max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (w, _) = root.dim_in_pixel();
    let (area, side) = root.split_horizontally(w.saturating_sub(SIDE));
    let log = chart.log_y;
    let mut ctx = axes(
        &area,
        [&chart.title, &chart.x_label, &chart.y_label],
        (x0..x1, y0..y1),
        (chart.log_x, log),
    )?;
    let entries = legend(chart);
    for (c, entry) in chart.curves.iter().zip(&entries) {
        let color = entry.color;
        let with_band: Vec<(f64, (f64, f64))> = c
            .points
            .iter()
            .filter_map(|p| p.band.map(|(lo, hi)| (p.x, (ty(lo), ty(hi)))))
            .filter(|(_, (lo, hi))| lo.is_finite() && hi.is_finite())
            .collect();
        // Bands are drawn on linear axes only: a mean's interval may reach below zero.
        if with_band.len() >= 2 && !log {
            let mut poly: Vec<(f64, f64)> =
                with_band.iter().map(|(x, (_, hi))| (*x, *hi)).collect();
            poly.extend(with_band.iter().rev().map(|(x, (lo, _))| (*x, *lo)));
            ctx.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.18).filled(),
            )))
            .map_err(e)?;
        } else if with_band.len() == 1 && !log {
            let (x, (lo, hi)) = with_band[0];
            ctx.draw_series(std::iter::once(PathElement::new(
                vec![(x, lo), (x, hi)],
                color.mix(0.5).stroke_width(6),
            )))
            .map_err(e)?;
        }
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter(|p| p.mean.is_finite() && (!log || p.mean > 0.0))
            .map(|p| (p.x, ty(p.mean)))
            .collect();
        let style = color.stroke_width(2);
        if entry.dashed {
            ctx.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                .map_err(e)?;
        } else {
            ctx.draw_series(LineSeries::new(pts.clone(), style))
                .map_err(e)?;
        }
        if pts.len() <= MARKERS_UP_TO {
            let mark = if entry.dashed {
                color.stroke_width(2)
            } else {
                color.filled()
            };
            ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 3, mark)))
                .map_err(e)?;
        }
    }
    for (y, _) in &chart.hlines {
        let y = ty(*y);
        ctx.draw_series(DashedLineSeries::new(
            vec![(x0, y), (x1, y)],
            3,
            3,
            BLACK.stroke_width(1),
        ))
        .map_err(e)?;
    }
    draw_legend(&side, &entries)
}

/// Viridis at a few anchors, interpolated.
fn viridis(t: f64) -> RGBColor {
    const A: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (A.len() - 1) as f64;
    let i = (t.floor() as usize).min(A.len() - 2);
    let f = t - i as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(
        mix(A[i].0, A[i + 1].0),
        mix(A[i].1, A[i + 1].1),
        mix(A[i].2, A[i + 1].2),
    )
}

fn heatmap_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    map: &HeatMap,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (nx, ny) = (map.xs.len(), map.ys.len());
    let finite = map
        .values
        .iter()
        .flatten()
        .flatten()
        .filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::MAX, |a, &b| a.min(b));
    let hi = finite.fold(f64::MIN, |a, &b| a.max(b));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let xs = map.xs.clone();
    let ys = map.ys.clone();
    let mut ctx = ChartBuilder::on(root)
        .caption(&map.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..nx as i32 - 1).into_segmented(),
            (0..ny as i32 - 1).into_segmented(),
        )
        .map_err(e)?;
    let label = |vals: &[f64], v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => vals.get(*i as usize).map_or(String::new(), |x| sig3(*x)),
        _ => String::new(),
    };
    ctx.configure_mesh()
        .disable_mesh()
        .x_desc(map.x_label.as_str())
        .y_desc(map.y_label.as_str())
        .x_labels(nx + 1)
        .y_labels(ny + 1)
        .x_label_formatter(&|v| label(&xs, v))
        .y_label_formatter(&|v| label(&ys, v))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (j, row) in map.values.iter().enumerate() {
        for (i, &v) in row.iter().enumerate() {
            let (x, y) = (i as i32, j as i32);
            let color = match v {
                Some(v) if v.is_finite() => viridis((v - lo) / span),
                Some(_) => RGBColor(200, 200, 200),
                None => RGBColor(245, 245, 245),
            };
            ctx.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                color.filled(),
            )))
            .map_err(e)?;
            let text = match v {
                Some(v) if v.is_finite() => sig3(v),
                Some(_) => "diverged".into(),
                None => "no trial".into(),
            };
            let ink = match v {
                Some(v) if v.is_finite() && (v - lo) / span <= 0.6 => WHITE,
                Some(v) if v.is_finite() => BLACK,
                Some(_) => WHITE,
                None => RGBColor(120, 120, 120),
            };
            ctx.draw_series(std::iter::once(Text::new(
                text,
                (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                ("sans-serif", 15)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            )))
            .map_err(e)?;
        }
    }
    Ok(())
}

fn scatter_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    sc: &Scatter,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let tx = |v: f64| if sc.log_x { v.log10() } else { v };
    let ty = |v: f64| if sc.log_y { v.log10() } else { v };
    let range = |vals: Vec<f64>| {
        let lo = vals.iter().copied().fold(f64::MAX, f64::min);
        let hi = vals.iter().copied().fold(f64::MIN, f64::max);
        let pad = ((hi - lo) * 0.08)
            .max(lo.abs().max(hi.abs()) * 0.02)
            .max(1e-9);
        (lo - pad, hi + pad)
    };
    if sc.points.is_empty() {
        return Ok(());
    }
    let (x0, x1) = range(sc.points.iter().map(|p| tx(p.0)).collect());
    let (y0, y1) = range(sc.points.iter().map(|p| ty(p.1)).collect());
    let finite: Vec<f64> = sc
        .points
        .iter()
        .map(|p| p.2)
        .filter(|v| v.is_finite())
        .collect();
    let lo = finite.iter().copied().fold(f64::MAX, f64::min);
    let hi = finite.iter().copied().fold(f64::MIN, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (w, h) = root.dim_in_pixel();
    let (area, side) = root.split_horizontally(w.saturating_sub(SIDE));
    let mut ctx = axes(
        &area,
        [&sc.title, &sc.x_label, &sc.y_label],
        (x0..x1, y0..y1),
        (sc.log_x, sc.log_y),
    )?;
    for &(x, y, v) in &sc.points {
        let at = (tx(x), ty(y));
        if v.is_finite() {
            ctx.draw_series(std::iter::once(Circle::new(
                at,
                7,
                viridis((v - lo) / span).filled(),
            )))
            .map_err(e)?;
            ctx.draw_series(std::iter::once(Circle::new(at, 7, BLACK.mix(0.4))))
                .map_err(e)?;
        } else {
            ctx.draw_series(std::iter::once(Cross::new(
                at,
                6,
                RGBColor(130, 130, 130).stroke_width(2),
            )))
            .map_err(e)?;
        }
    }
    // The colour bar: the value's range top to bottom, then the cross for diverged trials.
    let top = LEGEND_TOP as i32;
    let bar = (h as i32 - 2 * top).clamp(60, 300);
    side.draw(&side_text(sc.value_label.clone(), (8, top - 16)))
        .map_err(e)?;
    for k in 0..bar {
        let t = 1.0 - k as f64 / (bar - 1) as f64;
        side.draw(&Rectangle::new(
            [(8, top + k), (28, top + k + 1)],
            viridis(t).filled(),
        ))
        .map_err(e)?;
    }
    let labels = if finite.is_empty() {
        vec![]
    } else if hi > lo {
        vec![
            (top, hi),
            (top + bar / 2, (hi + lo) / 2.0),
            (top + bar - 1, lo),
        ]
    } else {
        vec![(top, hi)]
    };
    for (y, v) in labels {
        side.draw(&side_text(sig3(v), (36, y))).map_err(e)?;
    }
    if sc.points.iter().any(|p| !p.2.is_finite()) {
        let y = top + bar + 24;
        side.draw(&Cross::new(
            (18, y),
            6,
            RGBColor(130, 130, 130).stroke_width(2),
        ))
        .map_err(e)?;
        side.draw(&side_text("diverged".into(), (36, y)))
            .map_err(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_three_significant_digits() {
        let cases = [
            (0.0, "0"),
            (20.0, "20"),
            (0.05, "0.05"),
            (0.0012476109725165097, "0.00125"),
            (87.6049, "87.6"),
            (-1.23456, "-1.23"),
            (3.16227766, "3.16"),
            (9.9996, "10"),
            (1234.0, "1230"),
            (99999.0, "1e5"),
            (2.5e-5, "2.5e-5"),
            (123456.0, "1.23e5"),
            (1e-3, "0.001"),
        ];
        for (v, want) in cases {
            assert_eq!(sig3(v), want, "{v}");
        }
    }

    #[test]
    fn arm_names_keep_integers_and_shorten_decimals() {
        assert_eq!(
            short_numbers("aht (lr=0.0012476109725165097, sigma=0.013926212086584067)"),
            "aht (lr=0.00125, sigma=0.0139)"
        );
        assert_eq!(
            short_numbers("87.60 ± 0.41 [86.93, 88.27]"),
            "87.6 ± 0.41 [86.9, 88.3]"
        );
        assert_eq!(
            short_numbers("trial-0012 seed 12345"),
            "trial-0012 seed 12345"
        );
        assert_eq!(
            short_numbers("fc0.weight, v1.2.3, 2.137x, 1.5e-07"),
            "fc0.weight, v1.2.3, 2.14x, 1.5e-7"
        );
    }

    #[test]
    fn long_labels_wrap_at_spaces() {
        let w = wrap("aht (lr=0.00125, sigma=0.0139, momentum=0.9) mean eigenvalue/(2/lr)");
        assert!(
            w.len() >= 2 && w.iter().all(|l| l.chars().count() <= WRAP),
            "{w:?}"
        );
        assert_eq!(
            w.join(" "),
            "aht (lr=0.00125, sigma=0.0139, momentum=0.9) mean eigenvalue/(2/lr)"
        );
    }
}
