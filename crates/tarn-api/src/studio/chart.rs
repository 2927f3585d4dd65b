//! Line charts as inline SVG, drawn on the server from (step, value) points that the store has
//! already sampled down: no chart library, nothing to load, readable without script. Each
//! chart has a text alternative (what it shows, its range and last value).

use maud::{Markup, html};

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD_L: f64 = 54.0;
const PAD_B: f64 = 22.0;
const PAD_T: f64 = 8.0;
const PAD_R: f64 = 10.0;
const COLORS: &[&str] = &[
    "#0b5cad", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bc4c00",
];

pub struct Series {
    pub label: String,
    /// (step, value), in step order; NaN values are left out.
    pub points: Vec<(i64, f64)>,
}

fn fmt(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// A chart of one or more series (a run's metric, or the same metric of runs compared).
pub fn line_chart(title: &str, series: &[Series]) -> Markup {
    let all = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(_, v)| v.is_finite())
    };
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in all() {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let count = all().count();
    if count == 0 {
        return html! { figure.chart { figcaption { (title) } p.muted { "No values." } } };
    }
    let (lo, hi) = (y0, y1);
    if (y1 - y0).abs() < f64::EPSILON {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let xspan = (x1 - x0).max(1) as f64;
    let px = |x: i64| PAD_L + (x - x0) as f64 / xspan * (W - PAD_L - PAD_R);
    let py = |y: f64| PAD_T + (1.0 - (y - y0) / (y1 - y0)) * (H - PAD_T - PAD_B);
    let summary: Vec<String> = series
        .iter()
        .filter_map(|s| {
            let last = s.points.iter().rev().find(|(_, v)| v.is_finite())?;
            Some(format!(
                "{} last {} at step {}",
                s.label,
                fmt(last.1),
                last.0
            ))
        })
        .collect();
    let alt = format!(
        "{title}: {count} points, steps {x0} to {x1}, values {} to {}; {}",
        fmt(lo),
        fmt(hi),
        summary.join("; ")
    );
    html! {
        figure.chart {
            figcaption { (title) }
            svg width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(alt) {
                title { (alt) }
                line.axis x1=(PAD_L) y1=(H - PAD_B) x2=(W - PAD_R) y2=(H - PAD_B) {}
                line.axis x1=(PAD_L) y1=(PAD_T) x2=(PAD_L) y2=(H - PAD_B) {}
                text x=(PAD_L - 4.0) y=(PAD_T + 8.0) text-anchor="end" { (fmt(y1)) }
                text x=(PAD_L - 4.0) y=(H - PAD_B) text-anchor="end" { (fmt(y0)) }
                text x=(PAD_L) y=(H - 6.0) { "step " (x0) }
                text x=(W - PAD_R) y=(H - 6.0) text-anchor="end" { (x1) }
                @for (i, s) in series.iter().enumerate() {
                    @let pts: Vec<String> = s.points.iter().filter(|(_, v)| v.is_finite())
                        .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
                    polyline fill="none" stroke=(COLORS[i % COLORS.len()]) stroke-width="1.6" points=(pts.join(" ")) {}
                    @if let [only] = pts.as_slice() {
                        @let (cx, cy) = only.split_once(',').unwrap_or(("0", "0"));
                        circle cx=(cx) cy=(cy) r="3" fill=(COLORS[i % COLORS.len()]) {}
                    }
                }
            }
            @if series.len() > 1 {
                ul.muted aria-label="Legend" {
                    @for (i, s) in series.iter().enumerate() {
                        li { span style=(format!("color:{}", COLORS[i % COLORS.len()])) { "■ " } (s.label) }
                    }
                }
            }
        }
    }
}
