//! Drawing the report's charts with plotters, once as PNG (text in the embedded DejaVu Sans) and
//! once as SVG.

use super::{Curve, ReportError};
use plotters::coord::Shift;
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
    /// A fixed y range (α lives in [1, 2]); otherwise the data's, padded.
    pub y_range: Option<(f64, f64)>,
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
            y_range: None,
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
    /// `values[j][i]` at (`xs[i]`, `ys[j]`); NaN for a cell with a diverged seed.
    pub values: Vec<Vec<f64>>,
}

const SIZE: (u32, u32) = (900, 540);
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
}

impl Figure for Chart {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        chart_on(root, self)
    }
}

impl Figure for HeatMap {
    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        heatmap_on(root, self)
    }
}

/// Draws a figure into `DIR/STEM.png` and `DIR/STEM.svg`.
pub fn draw(fig: &impl Figure, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), ReportError> {
    register_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let name = png.display().to_string();
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        fig.draw_on(&root).map_err(plot_err(&name))?;
        root.present().map_err(|e| plot_err(&name)(e.to_string()))?;
    }
    let name = svg.display().to_string();
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        fig.draw_on(&root).map_err(plot_err(&name))?;
        root.present().map_err(|e| plot_err(&name)(e.to_string()))?;
    }
    Ok((png, svg))
}

/// A tick label with as many digits as its size needs.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map_or(s.clone(), str::to_string)
    } else if a >= 0.01 {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
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
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05)
        .max((y0.abs() + y1.abs()) * 0.005)
        .max(1e-9);
    let (y0, y1) = chart.y_range.unwrap_or((y0 - pad, y1 + pad));
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let log = chart.log_y;
    let log_x = chart.log_x;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .y_label_formatter(&|v: &f64| tick(if log { 10f64.powf(*v) } else { *v }))
        .x_label_formatter(&|v: &f64| tick(if log_x { 10f64.powf(*v) } else { *v }))
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    let plain = chart.dashed_from.unwrap_or(chart.curves.len()).max(1);
    for (i, c) in chart.curves.iter().enumerate() {
        let color = PALETTE[(i % plain) % PALETTE.len()];
        let dashed = i >= plain;
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
        }
        let pts: Vec<(f64, f64)> = c
            .points
            .iter()
            .filter(|p| p.mean.is_finite() && (!log || p.mean > 0.0))
            .map(|p| (p.x, ty(p.mean)))
            .collect();
        let style = color.stroke_width(2);
        let series = if dashed {
            ctx.draw_series(DashedLineSeries::new(pts, 6, 4, style))
                .map_err(e)?
        } else {
            ctx.draw_series(LineSeries::new(pts, style)).map_err(e)?
        };
        let legend = series.label(c.label.as_str());
        if dashed {
            legend.legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + 18, y)], 5, 3, color.stroke_width(2))
            });
        } else {
            legend.legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    for (y, label) in &chart.hlines {
        let y = ty(*y);
        ctx.draw_series(DashedLineSeries::new(
            vec![(x0, y), (x1, y)],
            3,
            3,
            BLACK.stroke_width(1),
        ))
        .map_err(e)?
        .label(label.as_str())
        .legend(|(x, y)| DashedPathElement::new(vec![(x, y), (x + 18, y)], 3, 3, BLACK));
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    Ok(())
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
    let finite = map.values.iter().flatten().filter(|v| v.is_finite());
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
        SegmentValue::CenterOf(i) => vals
            .get(*i as usize)
            .map_or(String::new(), |x| format!("{x}")),
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
            let color = if v.is_finite() {
                viridis((v - lo) / span)
            } else {
                RGBColor(200, 200, 200)
            };
            ctx.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ],
                color.filled(),
            )))
            .map_err(e)?;
            let text = if v.is_finite() {
                format!("{v:.1}")
            } else {
                "diverged".into()
            };
            let ink = if v.is_finite() && (v - lo) / span > 0.6 {
                BLACK
            } else {
                WHITE
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
