//! The latency distributions as an SVG percentile plot, written by hand (no plotting crate):
//! x is the percentile on a "nines" scale (0, 90, 99, 99.9, ... evenly spaced), y the latency on
//! a log scale — the usual way to show a tail.

use super::flow::Series;
use super::latency;
use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 300.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-7);
    -rest.log10()
}

/// An SVG document plotting each non-empty series.
pub fn plot(series: &[Series]) -> String {
    let curves: Vec<(&str, Vec<(f64, u64)>)> = series
        .iter()
        .filter(|s| !s.histogram.is_empty())
        .map(|s| (s.label.as_str(), latency::curve(&s.histogram)))
        .collect();
    let max_x = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| nines(p.0)))
        .fold(1.0f64, f64::max)
        .ceil()
        .min(7.0);
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1.max(1) as f64))
        .fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_decade = if lo == f64::MAX {
        0.0
    } else {
        lo.log10().floor()
    };
    let hi_decade = hi.log10().ceil().max(lo_decade + 1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |n: f64| LEFT + pw * n.min(max_x) / max_x;
    let y =
        |ns: f64| TOP + ph * (1.0 - (ns.max(1.0).log10() - lo_decade) / (hi_decade - lo_decade));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Latency by percentile (tickerd, loopback)</text>"#,
        LEFT + pw / 2.0
    );
    for d in (lo_decade as i64)..=(hi_decade as i64) {
        let yy = y(10f64.powi(d as i32));
        let label = match d {
            d if d < 3 => format!("{} ns", 10u64.pow(d as u32)),
            d if d < 6 => format!("{} µs", 10u64.pow(d as u32 - 3)),
            d if d < 9 => format!("{} ms", 10u64.pow(d as u32 - 6)),
            d => format!("{} s", 10u64.pow(d as u32 - 9)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    for n in 0..=(max_x as i64) {
        let xx = x(n as f64);
        let label = match n {
            0 => "0%".to_string(),
            n => {
                let p = 100.0 * (1.0 - 10f64.powi(-(n as i32)));
                format!("{}%", trim(p))
            }
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 15.0
    );
    for (i, (label, curve)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = curve
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x(nines(*p)), y(*v as f64)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 15.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn trim(p: f64) -> String {
    let t = format!("{p:.5}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_one_polyline_per_non_empty_series_with_a_legend() {
        let mut a = latency::histogram();
        for v in 1..1000u64 {
            a.record(v * 1000).unwrap();
        }
        let series = vec![
            Series {
                label: "gRPC <ack>".into(),
                histogram: a,
            },
            Series {
                label: "empty".into(),
                histogram: latency::histogram(),
            },
        ];
        let svg = plot(&series);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("gRPC &lt;ack&gt;"));
        assert!(!svg.contains("empty"));
        assert!(svg.contains("99.9%") || svg.contains("99%"));
    }
}
