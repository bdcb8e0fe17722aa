//! Plots of a training run, written as SVG (for the browser) and PNG (for anything else).
//!
//! Plain data in, files out: a figure is one or more charts side by side, each with its own
//! axes and legend. Text in the PNG is rasterised with ab_glyph from a TrueType font read at run
//! time (fonts-dejavu-core, installed by scripts/setup.sh; `SOFT_PLOT_FONT` names another), so
//! neither fontconfig nor a font embedded in the binary is needed. The SVG lays its text out
//! with the same font's metrics and leaves drawing it to the viewer.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use soft_core::atomic_file::write_atomic;

/// Pixels of one panel; a figure of n charts is n panels wide.
pub const PANEL_SIZE: (u32, u32) = (600, 450);
/// More side by side would be unreadable (and the bitmap huge).
pub const MAX_PANELS: usize = 12;
/// Names a TrueType font to use instead of the default ones.
pub const FONT_ENV: &str = "SOFT_PLOT_FONT";
/// Tried in order when `SOFT_PLOT_FONT` is unset.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
];
/// The family every text style asks for; the loaded font is registered under it.
const FONT: &str = "sans-serif";
/// File stem of [`curriculum_figure`]'s output.
pub const CURRICULUM_STEM: &str = "curriculum";

/// Colour-blind-friendly categorical colours (matplotlib's tab10).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a chart: `(x, y)` points, x the epoch (1-based; 0 for "before training").
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points }
    }

    /// `ys[i]` at epoch `i + 1`.
    pub fn per_epoch(label: impl Into<String>, ys: &[f64]) -> Self {
        Self::new(label, ys.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect())
    }
}

/// One panel: its axes, its lines, and optional fixed y range and dashed reference lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Fixed y range; `None` fits the data (and the reference lines).
    pub y_range: Option<(f64, f64)>,
    /// Horizontal dashed lines `(label, y)`, e.g. a value before training.
    pub reference_lines: Vec<(String, f64)>,
}

impl Chart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        series: Vec<Series>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series,
            y_range: None,
            reference_lines: Vec::new(),
        }
    }

    pub fn with_y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    pub fn with_reference_line(mut self, label: impl Into<String>, y: f64) -> Self {
        self.reference_lines.push((label.into(), y));
        self
    }
}

/// Writes `<stem>.svg` and `<stem>.png` in `dir` (created if missing) for a figure of `charts`
/// side by side, each panel [`PANEL_SIZE`] pixels. Returns the two paths, SVG first.
pub fn write_figure(dir: &Path, stem: &str, charts: &[Chart]) -> Result<Vec<PathBuf>> {
    if charts.is_empty() {
        bail!("figure {stem:?}: no charts to draw");
    }
    if charts.len() > MAX_PANELS {
        bail!("figure {stem:?}: {} charts, at most {MAX_PANELS} fit side by side", charts.len());
    }
    if stem.is_empty() || stem.contains(['/', '\\']) {
        bail!("figure stem {stem:?}: must be a plain, non-empty file name");
    }
    register_font()?;
    let size = (PANEL_SIZE.0 * charts.len() as u32, PANEL_SIZE.1);

    // Both render into memory first, so a drawing error leaves no file behind.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_figure(&root, charts)?;
        root.present().map_err(plot_err)?;
    }
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw_figure(&root, charts)?;
        root.present().map_err(plot_err)?;
    }
    let png = encode_png(&rgb, size)?;

    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    write_atomic(&svg_path, svg.as_bytes())?;
    write_atomic(&png_path, &png)?;
    Ok(vec![svg_path, png_path])
}

/// SOFT's curriculum at a glance, written as `curriculum.svg`/`.png` in `dir`. Panels: the
/// weight `lambda[i]` of the distilled loss in epoch i+1 (y in [0, 1]); the distance `d[i]`
/// measured after epoch i+1, drawn from `d0` (the base model) at epoch 0 with `d0` also as a
/// dashed line; the real and distilled training losses per epoch; and valid HR@10 per epoch of
/// each `(method, values)` given.
pub fn curriculum_figure(
    dir: &Path,
    lambda: &[f64],
    d: &[f64],
    d0: f64,
    loss_real: &[f64],
    loss_distilled: &[f64],
    valid_hr10: &[(String, Vec<f64>)],
) -> Result<Vec<PathBuf>> {
    let d_points = std::iter::once((0.0, d0)).chain(d.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y))).collect();
    let charts = [
        Chart::new(
            "Curriculum weight λ",
            "epoch",
            "λ (weight of distilled loss)",
            vec![Series::per_epoch("λ", lambda)],
        )
        .with_y_range(0.0, 1.05),
        Chart::new("Distance to the true items", "epoch", "d (mean L2)", vec![Series::new("d", d_points)])
            .with_reference_line("d0 (base model)", d0),
        Chart::new(
            "Training loss",
            "epoch",
            "loss",
            vec![Series::per_epoch("real", loss_real), Series::per_epoch("distilled", loss_distilled)],
        ),
        Chart::new(
            "Validation HR@10",
            "epoch",
            "HR@10",
            valid_hr10.iter().map(|(method, ys)| Series::per_epoch(method.as_str(), ys)).collect(),
        ),
    ];
    write_figure(dir, CURRICULUM_STEM, &charts)
}

/// Loads the font once per process and registers it with plotters.
fn register_font() -> Result<()> {
    static RESULT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let path = match std::env::var_os(FONT_ENV) {
                Some(p) => PathBuf::from(p),
                None => FONT_PATHS.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| {
                    format!(
                        "plots need a TrueType font and none of {} exists: install fonts-dejavu-core \
                         (scripts/setup.sh does) or set {FONT_ENV} to a .ttf file",
                        FONT_PATHS.join(", ")
                    )
                })?,
            };
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: cannot read font: {e}", path.display()))?;
            // plotters keeps registered fonts for the whole process and wants 'static bytes.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, charts: &[Chart]) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    for (area, chart) in root.split_evenly((1, charts.len())).iter().zip(charts) {
        draw_chart(area, chart).with_context(|| format!("chart {:?}", chart.title))?;
    }
    Ok(())
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
    // Non-finite points cannot be placed; series left with none are not drawn.
    let series: Vec<(&str, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| (s.label.as_str(), s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()))
        .filter(|(_, pts): &(&str, Vec<_>)| !pts.is_empty())
        .collect();
    let refs: Vec<(&str, f64)> =
        chart.reference_lines.iter().filter(|(_, y)| y.is_finite()).map(|(l, y)| (l.as_str(), *y)).collect();

    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let (x0, x1) = match span(xs) {
        Some((lo, hi)) if hi > lo => (lo - (hi - lo) * 0.03, hi + (hi - lo) * 0.03),
        Some((lo, _)) => (lo - 0.5, lo + 0.5),
        None => (0.0, 1.0),
    };
    let fixed = chart.y_range.filter(|&(lo, hi)| lo.is_finite() && hi.is_finite() && hi > lo);
    let (y0, y1) = match fixed {
        Some(r) => r,
        None => {
            let ys = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y)).chain(refs.iter().map(|&(_, y)| y));
            span(ys).map_or((0.0, 1.0), |(lo, hi)| pad(lo, hi))
        }
    };

    let title = if series.is_empty() { format!("{} (no data)", chart.title) } else { chart.title.clone() };
    let mut ctx = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    // Epochs are whole numbers: at most one tick per epoch, labelled without decimals.
    let x_ticks = ((x1 - x0).floor() as usize + 1).clamp(2, 10);
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_labels(x_ticks)
        .y_labels(8)
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        // The minor grid only clutters curves of a handful of epochs.
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(plot_err)?;

    for (i, (label, pts)) in series.iter().enumerate() {
        let style = COLORS[i % COLORS.len()].stroke_width(2);
        // Markers as well as lines, so a one-epoch series still shows.
        ctx.draw_series(LineSeries::new(pts.iter().copied(), style).point_size(3))
            .map_err(plot_err)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    for (j, &(label, y)) in refs.iter().enumerate() {
        let style = COLORS[(series.len() + j) % COLORS.len()].stroke_width(2);
        ctx.draw_series(DashedLineSeries::new([(x0, y), (x1, y)], 8, 5, style))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], style));
    }
    if !series.is_empty() || !refs.is_empty() {
        // Reference lines span the plot: sample them so the legend avoids them too.
        let along = (0..=10).map(|k| x0 + (x1 - x0) * k as f64 / 10.0);
        let ref_points = refs.iter().flat_map(|&(_, y)| along.clone().map(move |x| (x, y)));
        let all = series.iter().flat_map(|(_, p)| p.iter().copied()).chain(ref_points);
        ctx.configure_series_labels()
            .position(legend_corner(all, (x0, x1), (y0, y1)))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The corner of the plot with the fewest points under where the legend would sit.
fn legend_corner(
    points: impl Iterator<Item = (f64, f64)>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    // (position, on the right?, at the top?), judged on the plot scaled to [0, 1].
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let mut counts = [0usize; 4];
    for (x, y) in points {
        let (u, v) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
        for (count, &(_, right, top)) in counts.iter_mut().zip(&corners) {
            let in_x = if right { u > 0.55 } else { u < 0.45 };
            let in_y = if top { v > 0.6 } else { v < 0.4 };
            *count += usize::from(in_x && in_y);
        }
    }
    // min_by_key keeps the first of equals, so ties go to the upper right.
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    corners[best].0.clone()
}

/// Lowest and highest of `values`, when there are any.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A y range around `[lo, hi]` with some room, never empty (all-equal values get ±10% or ±1).
fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let width = hi - lo;
    let room = if width > 0.0 {
        width * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    let (a, b) = (lo - room, hi + room);
    // Values near f64::MAX overflow the sum; such a chart is meaningless but must not panic.
    if a.is_finite() && b.is_finite() && b > a {
        (a, b)
    } else {
        (-1.0, 1.0)
    }
}

/// Whole numbers without decimals, others with up to four significant digits.
fn format_tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() >= 1e-3 && v.abs() < 1e5 {
        let decimals = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        // Trailing zeros after the point say nothing on an axis.
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.2e}")
    }
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG")?;
    writer.write_image_data(rgb).context("encoding PNG")?;
    writer.finish().context("encoding PNG")?;
    Ok(out)
}

/// plotters' errors are generic over the backend; their text is all that is worth keeping.
fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, unique per test and process.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("soft-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Decodes the PNG fully: its size and its pixels.
    fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn chart(title: &str, series: Vec<Series>) -> Chart {
        Chart::new(title, "epoch", "value", series)
    }

    #[test]
    fn writes_svg_and_png_of_the_requested_size() {
        let dir = temp_dir("basic");
        let charts = [
            chart(
                "First panel",
                vec![Series::per_epoch("a", &[1.0, 0.5, 0.25]), Series::per_epoch("b", &[0.2, 0.4, 0.9])],
            ),
            chart("Second panel", vec![Series::per_epoch("c", &[3.0, 2.0])]).with_reference_line("start", 3.5),
        ];
        let paths = write_figure(&dir, "fig", &charts).unwrap();
        assert_eq!(paths, vec![dir.join("fig.svg"), dir.join("fig.png")]);

        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in ["First panel", "Second panel", "epoch", "value", "start"] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }

        let bytes = std::fs::read(&paths[1]).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h, pixels) = decode_png(&paths[1]);
        assert_eq!((w, h), (2 * PANEL_SIZE.0, PANEL_SIZE.1));
        // Not a blank canvas: some pixels are dark (text, axes) and some coloured (lines).
        assert!(pixels.chunks(3).any(|p| p.iter().all(|&c| c < 60)), "no dark pixels");
        assert!(pixels.chunks(3).any(|p| p == [31, 119, 180]), "no pixels of the first series' colour");
        // Nothing but the two figures is left behind: the temp files were renamed.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn png_has_text_in_the_title_area() {
        // ab_glyph draws the caption: the band above the plot holds dark anti-aliased pixels.
        let dir = temp_dir("text");
        let paths = write_figure(&dir, "t", &[chart("A title", vec![Series::per_epoch("a", &[1.0, 2.0])])]).unwrap();
        let (w, _, pixels) = decode_png(&paths[1]);
        let band = &pixels[..(w as usize * 30 * 3)];
        assert!(band.chunks(3).any(|p| p.iter().all(|&c| c < 100)), "no title text drawn");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn edge_cases_draw_without_panicking() {
        let dir = temp_dir("edges");
        let charts = [
            chart("One point", vec![Series::per_epoch("single", &[0.7])]),
            chart("Empty and constant", vec![Series::new("empty", vec![]), Series::per_epoch("flat", &[2.0; 4])]),
            chart("All zero", vec![Series::per_epoch("zero", &[0.0, 0.0])]),
            chart(
                "Non-finite",
                vec![Series::per_epoch("nan", &[1.0, f64::NAN, f64::INFINITY, 2.0, f64::NEG_INFINITY])],
            ),
            chart("Only NaN", vec![Series::per_epoch("nan", &[f64::NAN])]).with_reference_line("nan ref", f64::NAN),
            chart("No series", vec![]),
            chart("Bad range", vec![Series::per_epoch("a", &[1.0, 2.0])]).with_y_range(1.0, 1.0),
            chart("Huge", vec![Series::per_epoch("h", &[-f64::MAX, f64::MAX])]),
        ];
        let paths = write_figure(&dir, "edges", &charts).unwrap();
        let (w, h, _) = decode_png(&paths[1]);
        assert_eq!((w, h), (charts.len() as u32 * PANEL_SIZE.0, PANEL_SIZE.1));
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(svg.contains("Only NaN (no data)") && svg.contains("No series (no data)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_no_charts_and_bad_stems() {
        let dir = temp_dir("errors");
        assert!(write_figure(&dir, "none", &[]).unwrap_err().to_string().contains("no charts"));
        let many = vec![chart("x", vec![]); MAX_PANELS + 1];
        assert!(write_figure(&dir, "many", &many).is_err());
        let one = [chart("x", vec![])];
        assert!(write_figure(&dir, "", &one).is_err());
        assert!(write_figure(&dir, "a/b", &one).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn curriculum_figure_has_four_panels() {
        let dir = temp_dir("curriculum");
        let paths = curriculum_figure(
            &dir,
            &[1.0, 0.8, 0.55, 0.4],
            &[0.9, 0.8, 0.74, 0.7],
            1.0,
            &[2.5, 1.9, 1.6, 1.5],
            &[1.2, 0.9, 0.8, 0.75],
            &[("soft".into(), vec![0.05, 0.09, 0.12, 0.13]), ("sft".into(), vec![0.04, 0.07, 0.08, 0.08])],
        )
        .unwrap();
        assert_eq!(paths, vec![dir.join("curriculum.svg"), dir.join("curriculum.png")]);
        let svg = std::fs::read_to_string(&paths[0]).unwrap();
        for text in [
            "Curriculum weight λ",
            "Distance to the true items",
            "d0 (base model)",
            "Training loss",
            "HR@10",
            "soft",
            "sft",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        let (w, h, _) = decode_png(&paths[1]);
        assert_eq!((w, h), (4 * PANEL_SIZE.0, PANEL_SIZE.1));
        // Empty inputs (a run that stopped before its first epoch) still give a figure.
        curriculum_figure(&dir, &[], &[], 1.0, &[], &[], &[]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(format_tick(3.0), "3");
        assert_eq!(format_tick(0.125), "0.125");
        assert_eq!(format_tick(0.1 + 0.2), "0.3");
        assert_eq!(format_tick(1234.5678), "1235");
        assert_eq!(format_tick(12.25), "12.25");
        assert_eq!(format_tick(2.5e-5), "2.50e-5");
    }
}
