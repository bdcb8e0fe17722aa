//! SVG line charts with axes, labels, a legend and a tooltip (`<title>`) on every point.
//!
//! [`Chart`] describes what to draw in data units; [`layout`] turns it into pixel geometry
//! (paths, markers, ticks) and is plain Rust, tested natively; `LineChart` (wasm only) draws that
//! geometry with Leptos.

/// One point and the text its tooltip shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub tip: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<Point>,
    pub dashed: bool,
    /// Draw a marker (with its tooltip) on every point; off for dense curves.
    pub markers: bool,
    pub width: f64,
}

impl Series {
    pub fn new(name: impl Into<String>, color: impl Into<String>, points: Vec<Point>) -> Self {
        Self { name: name.into(), color: color.into(), points, dashed: false, markers: true, width: 2.5 }
    }

    pub fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }

    pub fn curve(mut self) -> Self {
        self.markers = false;
        self
    }

    pub fn width(mut self, w: f64) -> Self {
        self.width = w;
        self
    }
}

/// A labelled horizontal (`y`) or vertical (`x`) reference line.
#[derive(Debug, Clone, PartialEq)]
pub struct RefLine {
    pub vertical: bool,
    pub value: f64,
    pub label: String,
    pub color: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// `data-chart` of the drawn SVG, for tests and links.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub refs: Vec<RefLine>,
    /// Ticks only at whole numbers (epochs).
    pub x_integer: bool,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Show the legend (on by default when there are two series or more).
    pub legend: Option<bool>,
}

/// A linear map from a data interval to a pixel interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub d0: f64,
    pub d1: f64,
    pub p0: f64,
    pub p1: f64,
}

impl Scale {
    pub fn at(&self, v: f64) -> f64 {
        if self.d1 == self.d0 {
            return (self.p0 + self.p1) / 2.0;
        }
        self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0)
    }
}

/// Round tick positions covering `[lo, hi]`, about `target` of them: steps of 1, 2, 2.5 or 5
/// times a power of ten. Returns the widened interval and the ticks.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0, vec![0.0, 0.5, 1.0]);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 1.0 };
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / target.max(2) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step + 1e-9).floor() * step;
    let last = (hi / step - 1e-9).ceil() * step;
    let n = ((last - first) / step).round() as usize;
    let ticks = (0..=n).map(|i| clean(first + i as f64 * step)).collect();
    (first, last, ticks)
}

/// Removes floating noise (0.30000000000000004 -> 0.3).
fn clean(v: f64) -> f64 {
    let r = (v * 1e9).round() / 1e9;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// A tick label with as many decimals as the step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step <= 0.0 || !step.is_finite() {
        2
    } else {
        let mut d = (-step.log10().floor()).max(0.0) as usize;
        // 2.5-steps need one more.
        if ((step / 10f64.powi(-(d as i32))) - (step / 10f64.powi(-(d as i32))).round()).abs() > 1e-6 {
            d += 1;
        }
        d.min(6)
    };
    format!("{v:.decimals$}")
}

/// A number for a tooltip or a table: 4 significant digits.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 8) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub pos: f64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub d: String,
    pub color: String,
    pub dashed: bool,
    pub width: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub series: String,
    pub cx: f64,
    pub cy: f64,
    pub color: String,
    pub tip: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefOut {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub label: String,
    pub label_x: f64,
    pub label_y: f64,
    pub vertical: bool,
    /// SVG `text-anchor` of the label: labels keep inside the plot area.
    pub anchor: &'static str,
    pub color: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LegendEntry {
    pub name: String,
    pub color: String,
    pub dashed: bool,
}

/// Everything in pixels, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    /// The plot area: left, top, right, bottom.
    pub area: (f64, f64, f64, f64),
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub lines: Vec<Line>,
    pub markers: Vec<Marker>,
    pub refs: Vec<RefOut>,
    pub legend: Vec<LegendEntry>,
    pub empty: bool,
}

pub const WIDTH: f64 = 560.0;
pub const HEIGHT: f64 = 300.0;

pub fn layout(chart: &Chart, width: f64, height: f64) -> Layout {
    let finite = |p: &&Point| p.x.is_finite() && p.y.is_finite();
    let pts: Vec<&Point> = chart.series.iter().flat_map(|s| s.points.iter()).filter(finite).collect();
    let empty = pts.is_empty();
    let extent = |f: &dyn Fn(&Point) -> f64, extra: &[f64]| {
        pts.iter()
            .map(|p| f(p))
            .chain(extra.iter().copied())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
    };
    let ref_values = |vertical: bool| -> Vec<f64> {
        chart.refs.iter().filter(|r| r.vertical == vertical && r.value.is_finite()).map(|r| r.value).collect()
    };
    let (xlo, xhi) = chart.x_range.unwrap_or_else(|| extent(&|p| p.x, &ref_values(true)));
    let (ylo, yhi) = chart.y_range.unwrap_or_else(|| extent(&|p| p.y, &ref_values(false)));
    let (xlo, xhi) = if xlo.is_finite() { (xlo, xhi) } else { (0.0, 1.0) };
    let (ylo, yhi) = if ylo.is_finite() { (ylo, yhi) } else { (0.0, 1.0) };

    let (left, top, right, bottom) = (64.0, 16.0, width - 16.0, height - 48.0);
    let (x_scale, x_ticks) = if chart.x_integer {
        let (a, b) = (xlo.floor(), xhi.ceil().max(xlo.floor() + 1.0));
        let span = b - a;
        let every = (span / 8.0).ceil().max(1.0);
        let ticks: Vec<f64> = (0..=(span / every) as usize).map(|i| a + i as f64 * every).collect();
        (Scale { d0: a - 0.25, d1: b + 0.25, p0: left, p1: right }, ticks)
    } else {
        let (a, b, t) = nice_ticks(xlo, xhi, 6);
        (Scale { d0: a, d1: b, p0: left, p1: right }, t)
    };
    let (ya, yb, y_ticks) = nice_ticks(ylo, yhi, 5);
    let y_scale = Scale { d0: ya, d1: yb, p0: bottom, p1: top };
    let step = |t: &[f64]| if t.len() > 1 { t[1] - t[0] } else { 1.0 };
    let (xs, ys) = (step(&x_ticks), step(&y_ticks));

    let lines = chart
        .series
        .iter()
        .filter(|s| s.points.iter().filter(finite).count() > 1)
        .map(|s| Line {
            name: s.name.clone(),
            d: s.points
                .iter()
                .filter(finite)
                .enumerate()
                .map(|(i, p)| {
                    format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x_scale.at(p.x), y_scale.at(p.y))
                })
                .collect::<Vec<_>>()
                .join(" "),
            color: s.color.clone(),
            dashed: s.dashed,
            width: s.width,
        })
        .collect();
    let markers = chart
        .series
        .iter()
        .filter(|s| s.markers)
        .flat_map(|s| {
            s.points.iter().filter(finite).map(|p| Marker {
                series: s.name.clone(),
                cx: x_scale.at(p.x),
                cy: y_scale.at(p.y),
                color: s.color.clone(),
                tip: p.tip.clone(),
            })
        })
        .collect();
    let refs = chart
        .refs
        .iter()
        .filter(|r| r.value.is_finite())
        .map(|r| {
            if r.vertical {
                let x = x_scale.at(r.value);
                let right_half = x > (left + right) / 2.0;
                RefOut {
                    x1: x,
                    y1: top,
                    x2: x,
                    y2: bottom,
                    label: r.label.clone(),
                    label_x: if right_half { x - 5.0 } else { x + 5.0 },
                    label_y: bottom - 8.0,
                    vertical: true,
                    anchor: if right_half { "end" } else { "start" },
                    color: r.color.clone(),
                }
            } else {
                let y = y_scale.at(r.value);
                RefOut {
                    x1: left,
                    y1: y,
                    x2: right,
                    y2: y,
                    label: r.label.clone(),
                    label_x: right - 4.0,
                    label_y: y - 5.0,
                    vertical: false,
                    anchor: "end",
                    color: r.color.clone(),
                }
            }
        })
        .collect();
    let show_legend = chart.legend.unwrap_or(chart.series.len() > 1);
    let legend = if show_legend {
        chart
            .series
            .iter()
            .map(|s| LegendEntry { name: s.name.clone(), color: s.color.clone(), dashed: s.dashed })
            .collect()
    } else {
        Vec::new()
    };
    Layout {
        width,
        height,
        area: (left, top, right, bottom),
        x_ticks: x_ticks
            .iter()
            .map(|&v| Tick {
                pos: x_scale.at(v),
                label: if chart.x_integer { format!("{v:.0}") } else { tick_label(v, xs) },
            })
            .collect(),
        y_ticks: y_ticks.iter().map(|&v| Tick { pos: y_scale.at(v), label: tick_label(v, ys) }).collect(),
        lines,
        markers,
        refs,
        legend,
        empty,
    }
}

#[cfg(target_arch = "wasm32")]
pub use view::LineChart;

#[cfg(target_arch = "wasm32")]
mod view {
    use leptos::prelude::*;

    use super::{layout, Chart, Layout, HEIGHT, WIDTH};

    /// A titled SVG line chart; `chart` may change (a slider), the SVG follows.
    #[component]
    pub fn LineChart(
        #[prop(into)] chart: Signal<Chart>,
        #[prop(optional, into)] caption: Option<String>,
    ) -> impl IntoView {
        let drawn = move || {
            let c = chart.get();
            let l = layout(&c, WIDTH, HEIGHT);
            draw(&c, l)
        };
        view! {
            <figure class="chart">
                {drawn}
                {caption.map(|c| view! { <figcaption>{c}</figcaption> })}
            </figure>
        }
    }

    fn draw(c: &Chart, l: Layout) -> impl IntoView {
        let (left, top, right, bottom) = l.area;
        let mid_x = (left + right) / 2.0;
        let mid_y = (top + bottom) / 2.0;
        let x_ticks = l
            .x_ticks
            .iter()
            .map(|t| {
                view! {
                    <g class="tick">
                        <line x1=t.pos y1=bottom x2=t.pos y2=bottom + 5.0 />
                        <text x=t.pos y=bottom + 19.0 text-anchor="middle">{t.label.clone()}</text>
                    </g>
                }
            })
            .collect_view();
        let y_ticks = l
            .y_ticks
            .iter()
            .map(|t| {
                view! {
                    <g class="tick">
                        <line class="grid" x1=left y1=t.pos x2=right y2=t.pos />
                        <text x=left - 8.0 y=t.pos + 4.0 text-anchor="end">{t.label.clone()}</text>
                    </g>
                }
            })
            .collect_view();
        let refs = l
            .refs
            .iter()
            .map(|r| {
                let anchor = r.anchor;
                view! {
                    <g class="ref">
                        <line x1=r.x1 y1=r.y1 x2=r.x2 y2=r.y2 stroke=r.color.clone() stroke-dasharray="5 4" />
                        <text x=r.label_x y=r.label_y text-anchor=anchor fill=r.color.clone()>{r.label.clone()}</text>
                        <title>{r.label.clone()}</title>
                    </g>
                }
            })
            .collect_view();
        let lines = l
            .lines
            .iter()
            .map(|s| {
                view! {
                    <g class="series" data-series=s.name.clone()>
                        <path
                            d=s.d.clone()
                            fill="none"
                            stroke=s.color.clone()
                            stroke-width=s.width
                            stroke-dasharray=if s.dashed { "7 5" } else { "" }
                            stroke-linejoin="round"
                            stroke-linecap="round"
                        />
                        <title>{s.name.clone()}</title>
                    </g>
                }
            })
            .collect_view();
        let markers = l
            .markers
            .iter()
            .map(|m| {
                view! {
                    <g class="pt" data-series=m.series.clone()>
                        <circle cx=m.cx cy=m.cy r="5" fill="white" stroke=m.color.clone() stroke-width="2.5" />
                        <title>{m.tip.clone()}</title>
                    </g>
                }
            })
            .collect_view();
        let legend = (!l.legend.is_empty()).then(|| {
            let items = l
                .legend
                .iter()
                .map(|e| {
                    let dash = if e.dashed { "legend-swatch dashed" } else { "legend-swatch" };
                    view! {
                        <span class="legend-item">
                            <span class=dash style=format!("border-color: {}", e.color)></span>
                            {e.name.clone()}
                        </span>
                    }
                })
                .collect_view();
            view! { <div class="legend">{items}</div> }
        });
        let empty = l.empty.then(|| {
            view! {
                <g>
                    <text class="empty" x=mid_x y=mid_y text-anchor="middle">"no data"</text>
                </g>
            }
        });
        view! {
            <div class="chart-head">
                <h4>{c.title.clone()}</h4>
                {legend}
            </div>
            <svg
                class="line-chart"
                data-chart=c.id.clone()
                viewBox=format!("0 0 {} {}", l.width, l.height)
                role="img"
                aria-label=c.title.clone()
            >
                <g class="axes">
                    {y_ticks}
                    <line class="axis" x1=left y1=bottom x2=right y2=bottom />
                    <line class="axis" x1=left y1=top x2=left y2=bottom />
                    {x_ticks}
                    <text class="axis-label" x=mid_x y=l.height - 8.0 text-anchor="middle">{c.x_label.clone()}</text>
                    <text
                        class="axis-label"
                        x=14.0
                        y=mid_y
                        text-anchor="middle"
                        transform=format!("rotate(-90 14 {mid_y})")
                    >
                        {c.y_label.clone()}
                    </text>
                </g>
                {refs}
                {lines}
                {markers}
                {empty}
            </svg>
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f64, f64)]) -> Vec<Point> {
        v.iter().map(|&(x, y)| Point { x, y, tip: format!("{x}: {y}") }).collect()
    }

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        let (lo, hi, t) = nice_ticks(0.0, 1.0, 5);
        assert_eq!((lo, hi), (0.0, 1.0), "{t:?}");
        let (lo, hi, t) = nice_ticks(0.013, 0.047, 5);
        assert!(lo <= 0.013 && hi >= 0.047);
        assert_eq!(t, vec![0.01, 0.02, 0.03, 0.04, 0.05]);
        let (_, _, t) = nice_ticks(13.34, 13.48, 5);
        assert!(t.first().unwrap() <= &13.34 && t.last().unwrap() >= &13.48);
        // A flat series still gets an interval around it.
        let (lo, hi, _) = nice_ticks(1.0, 1.0, 5);
        assert!(lo < 1.0 && hi > 1.0);
        assert_eq!(tick_label(0.025, 0.025), "0.025");
        assert_eq!(tick_label(2.0, 1.0), "2");
        assert_eq!(tick_label(0.5, 0.5), "0.5");
    }

    #[test]
    fn one_marker_per_point_inside_the_plot_area() {
        let chart = Chart {
            id: "loss".into(),
            series: vec![
                Series::new("real", "#1c7ed6", pts(&[(1.0, 4.7), (2.0, 4.5)])),
                Series::new("distilled", "#e8590c", pts(&[(1.0, 1.5), (2.0, 0.5), (3.0, f64::NAN)])),
            ],
            x_integer: true,
            ..Default::default()
        };
        let l = layout(&chart, WIDTH, HEIGHT);
        assert_eq!(l.markers.len(), 4, "NaN points are left out");
        assert_eq!(l.lines.len(), 2);
        assert_eq!(l.legend.len(), 2);
        assert_eq!(l.x_ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["1", "2"]);
        let (left, top, right, bottom) = l.area;
        for m in &l.markers {
            assert!(m.cx > left && m.cx < right && m.cy >= top && m.cy <= bottom, "{m:?}");
        }
        // Higher values are drawn higher up.
        assert!(l.markers[0].cy < l.markers[2].cy);
    }

    #[test]
    fn an_empty_chart_says_so() {
        let l = layout(&Chart::default(), WIDTH, HEIGHT);
        assert!(l.empty && l.markers.is_empty() && l.lines.is_empty());
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(fmt_num(13.4847412109375), "13.48");
        assert_eq!(fmt_num(0.046875), "0.04688");
        assert_eq!(fmt_num(100.0), "100");
        assert_eq!(fmt_num(1.0), "1");
        assert_eq!(fmt_num(0.1), "0.1");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(f64::NAN), "n/a");
    }
}
