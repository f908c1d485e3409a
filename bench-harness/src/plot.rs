//! Hand-written SVG plots (no font or graphics dependencies): latency
//! percentile curves on a log "nines" axis as HdrHistogram plots draw them,
//! with latency on a log axis, and throughput over time below.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::stats::RatePoint;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 200.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
/// The percentile axis ends at 99.999 %.
const NINES_MAX: f64 = 5.0;
pub const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A latency curve: (nines, latency in µs), where nines = log10(1/(1-q)).
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    if h.is_empty() {
        return points;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let nines = if q >= 1.0 {
            NINES_MAX
        } else {
            (1.0 / (1.0 - q)).log10().min(NINES_MAX)
        };
        let us = h.highest_equivalent(v.value_iterated_to()) as f64;
        points.push((nines, us.max(1.0)));
        if nines >= NINES_MAX {
            break;
        }
    }
    points
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Panel {
    top: f64,
    x_min: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    y_log: bool,
}

impl Panel {
    fn plot_w() -> f64 {
        WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    }
    fn plot_h() -> f64 {
        PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    }
    fn x(&self, v: f64) -> f64 {
        let span = (self.x_max - self.x_min).max(1e-12);
        MARGIN_LEFT + (v - self.x_min) / span * Panel::plot_w()
    }
    fn y(&self, v: f64) -> f64 {
        let (v, lo, hi) = if self.y_log {
            (v.max(1e-12).log10(), self.y_min.log10(), self.y_max.log10())
        } else {
            (v, self.y_min, self.y_max)
        };
        let span = (hi - lo).max(1e-12);
        self.top + MARGIN_TOP + Panel::plot_h() - (v - lo) / span * Panel::plot_h()
    }
    fn frame(&self, svg: &mut String, title: &str, x_label: &str, y_label: &str) {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            MARGIN_LEFT,
            self.top + MARGIN_TOP,
            Panel::plot_w(),
            Panel::plot_h()
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
            MARGIN_LEFT,
            self.top + 24.0,
            escape(title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            MARGIN_LEFT + Panel::plot_w() / 2.0,
            self.top + PANEL_HEIGHT - 10.0,
            escape(x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="16" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            self.top + PANEL_HEIGHT / 2.0,
            self.top + PANEL_HEIGHT / 2.0,
            escape(y_label)
        );
    }
    fn x_tick(&self, svg: &mut String, v: f64, label: &str) {
        let x = self.x(v);
        let bottom = self.top + MARGIN_TOP + Panel::plot_h();
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            self.top + MARGIN_TOP,
            bottom + 16.0,
            escape(label)
        );
    }
    fn y_tick(&self, svg: &mut String, v: f64, label: &str) {
        let y = self.y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            MARGIN_LEFT,
            MARGIN_LEFT + Panel::plot_w(),
            MARGIN_LEFT - 6.0,
            y + 4.0,
            escape(label)
        );
    }
    fn line(&self, svg: &mut String, points: &[(f64, f64)], color: &str, dashed: bool) {
        if points.is_empty() {
            return;
        }
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{} points="{}"/>"#,
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            path.join(" ")
        );
    }
    fn legend(&self, svg: &mut String, i: usize, name: &str, color: &str, dashed: bool) {
        let x = WIDTH - MARGIN_RIGHT + 14.0;
        let y = self.top + MARGIN_TOP + 12.0 + i as f64 * 20.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"{}/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            x + 24.0,
            if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            x + 30.0,
            y + 4.0,
            escape(name)
        );
    }
}

fn us_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{} ms", us / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// One latency series to draw.
pub struct Series<'a> {
    pub name: String,
    pub histogram: &'a Histogram<u64>,
    /// Dashed lines tell a second kind (e.g. end-to-end) from the first.
    pub dashed: bool,
    pub color: &'a str,
}

/// One throughput series to draw.
pub struct RateSeries<'a> {
    pub name: String,
    pub points: &'a [RatePoint],
    pub color: &'a str,
}

/// The whole figure: latency curves on top, throughput over time below
/// (left out when `rates` is empty) with the first `warmup_s` seconds,
/// which no figure counts, shaded.
pub fn svg(title: &str, series: &[Series<'_>], rates: &[RateSeries<'_>], warmup_s: f64) -> String {
    let panels = if rates.is_empty() { 1.0 } else { 2.0 };
    let height = PANEL_HEIGHT * panels;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">
<title>{}</title>
<rect width="100%" height="100%" fill="white"/>"#,
        escape(title)
    );

    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|x| percentile_curve(x.histogram))
        .collect();
    let all = curves.iter().flatten();
    let lo = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = all.map(|p| p.1).fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf((hi * 1.01).log10().ceil()).max(10.0),
        )
    } else {
        (1.0, 1000.0)
    };
    let p = Panel {
        top: 0.0,
        x_min: 0.0,
        x_max: NINES_MAX,
        y_min: lo,
        y_max: hi,
        y_log: true,
    };
    p.frame(&mut s, title, "percentile", "latency (log scale)");
    for (n, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        p.x_tick(&mut s, n as f64, label);
    }
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        p.y_tick(&mut s, decade, &us_label(decade));
        decade *= 10.0;
    }
    for (i, (x, c)) in series.iter().zip(&curves).enumerate() {
        p.line(&mut s, c, x.color, x.dashed);
        p.legend(&mut s, i, &x.name, x.color, x.dashed);
    }
    if series.iter().all(|x| x.histogram.is_empty()) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="14" text-anchor="middle">no latency samples</text>"#,
            MARGIN_LEFT + Panel::plot_w() / 2.0,
            PANEL_HEIGHT / 2.0
        );
    }

    if !rates.is_empty() {
        let t_max = rates
            .iter()
            .flat_map(|r| r.points.iter().map(|p| p.elapsed_s))
            .fold(1.0, f64::max);
        let mb_max = rates
            .iter()
            .flat_map(|r| r.points.iter().map(|p| p.mb_out_per_s.max(p.mb_in_per_s)))
            .fold(0.0, f64::max);
        let y_max = nice_ceiling(mb_max);
        let q = Panel {
            top: PANEL_HEIGHT,
            x_min: 0.0,
            x_max: t_max,
            y_min: 0.0,
            y_max,
            y_log: false,
        };
        if warmup_s > 0.0 {
            let x0 = q.x(0.0);
            let x1 = q.x(warmup_s.min(t_max));
            let top = q.top + MARGIN_TOP;
            let _ = writeln!(
                s,
                r##"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="#eeeeee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#777">warm-up</text>"##,
                x1 - x0,
                Panel::plot_h(),
                (x0 + x1) / 2.0,
                top + 14.0
            );
        }
        q.frame(&mut s, "throughput over time", "elapsed (s)", "MB/s");
        for i in 0..=5 {
            let v = y_max * i as f64 / 5.0;
            q.y_tick(&mut s, v, &format!("{v:.0}"));
        }
        let t_step = nice_ceiling(t_max / 6.0);
        let mut t = 0.0;
        while t <= t_max + 1e-9 {
            q.x_tick(&mut s, t, &format!("{t:.0}"));
            t += t_step;
        }
        let mut legend = 0;
        for r in rates {
            let out: Vec<(f64, f64)> = r
                .points
                .iter()
                .map(|p| (p.elapsed_s, p.mb_out_per_s))
                .collect();
            let inn: Vec<(f64, f64)> = r
                .points
                .iter()
                .map(|p| (p.elapsed_s, p.mb_in_per_s))
                .collect();
            q.line(&mut s, &out, r.color, false);
            q.legend(
                &mut s,
                legend,
                &format!("{} produced", r.name),
                r.color,
                false,
            );
            legend += 1;
            if inn.iter().any(|p| p.1 > 0.0) {
                q.line(&mut s, &inn, r.color, true);
                q.legend(
                    &mut s,
                    legend,
                    &format!("{} consumed", r.name),
                    r.color,
                    true,
                );
                legend += 1;
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if base * m >= v {
            return base * m;
        }
    }
    base * 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{latency_histogram, record_us};
    use std::time::Duration;

    /// Checks tags balance and entities are escaped: enough to catch the
    /// mistakes hand-written SVG is prone to.
    fn well_formed(xml: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            for (i, _) in text.match_indices('&') {
                let t = &text[i..];
                if !(t.starts_with("&amp;")
                    || t.starts_with("&lt;")
                    || t.starts_with("&gt;")
                    || t.starts_with("&quot;"))
                {
                    return Err(format!("bare & in {text:?}"));
                }
            }
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            if tag.starts_with('?') || tag.starts_with('!') {
            } else if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("stray </{name}>"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap_or("").to_string();
                stack.push(name);
            }
            rest = &rest[close + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn the_svg_is_well_formed_with_and_without_data() {
        let mut h = latency_histogram();
        for v in 1..5000u64 {
            record_us(&mut h, Duration::from_micros(v * 3), 1);
        }
        let empty = latency_histogram();
        let rates: Vec<RatePoint> = (0..10)
            .map(|i| RatePoint {
                elapsed_s: i as f64,
                mb_out_per_s: 100.0 + i as f64,
                mb_in_per_s: 99.0,
                ..RatePoint::default()
            })
            .collect();
        let doc = svg(
            "a <test> & more",
            &[
                Series {
                    name: "produce".into(),
                    histogram: &h,
                    dashed: false,
                    color: COLORS[0],
                },
                Series {
                    name: "e2e".into(),
                    histogram: &empty,
                    dashed: true,
                    color: COLORS[0],
                },
            ],
            &[RateSeries {
                name: "run".into(),
                points: &rates,
                color: COLORS[1],
            }],
            2.0,
        );
        well_formed(&doc).expect("well-formed");
        assert!(doc.contains("<polyline"));
        assert!(doc.contains("99.99%"));
        assert!(doc.contains("warm-up"));
        let bare = svg(
            "none",
            &[Series {
                name: "x".into(),
                histogram: &empty,
                dashed: false,
                color: COLORS[2],
            }],
            &[],
            0.0,
        );
        well_formed(&bare).expect("well-formed");
        assert!(bare.contains("no latency samples"));
    }

    #[test]
    fn curves_rise_and_end_at_the_last_nine() {
        let mut h = latency_histogram();
        for v in 1..=100_000u64 {
            record_us(&mut h, Duration::from_micros(v), 1);
        }
        let c = percentile_curve(&h);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(c.last().map(|p| p.0), Some(NINES_MAX));
    }
}
