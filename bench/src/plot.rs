//! PNG plot of write throughput vs number of clients (log scale, 1..1000),
//! one line per system and cluster size. No text is drawn (no font needed):
//! the legend and the scale are returned as Markdown to print beside it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::stats::CaseResult;

const W: i32 = 900;
const H: i32 = 540;
const LEFT: i32 = 60;
const RIGHT: i32 = 30;
const TOP: i32 = 30;
const BOTTOM: i32 = 50;

/// (system, nodes, colour name, colour, dashed)
const SERIES: [(&str, usize, &str, RGBColor, bool); 9] = [
    (
        "d-engine-embedded",
        1,
        "blue, solid",
        RGBColor(31, 119, 180),
        false,
    ),
    (
        "d-engine-embedded",
        3,
        "blue, dashed",
        RGBColor(31, 119, 180),
        true,
    ),
    (
        "d-engine-standalone",
        1,
        "green, solid",
        RGBColor(44, 160, 44),
        false,
    ),
    (
        "d-engine-standalone",
        3,
        "green, dashed",
        RGBColor(44, 160, 44),
        true,
    ),
    (
        "upstream-embedded",
        1,
        "purple, solid",
        RGBColor(148, 103, 189),
        false,
    ),
    (
        "upstream-embedded",
        3,
        "purple, dashed",
        RGBColor(148, 103, 189),
        true,
    ),
    (
        "upstream-standalone",
        3,
        "orange, dashed",
        RGBColor(255, 127, 14),
        true,
    ),
    ("etcd", 1, "red, solid", RGBColor(214, 39, 40), false),
    ("etcd", 3, "red, dashed", RGBColor(214, 39, 40), true),
];

/// A round number ≥ `max` for the top of the y axis, and its grid step.
pub fn nice_top(max: f64) -> (f64, f64) {
    let max = max.max(1.0);
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= max {
            let top = m * mag;
            let step = if m == 2.5 {
                mag / 2.0
            } else {
                top / m.clamp(2.0, 5.0)
            };
            return (top, step);
        }
    }
    (10.0 * mag, 2.0 * mag)
}

/// Points (clients, ops/s) of each series from the write cases.
pub fn series(cases: &[CaseResult]) -> BTreeMap<(String, usize), Vec<(usize, f64)>> {
    let mut out: BTreeMap<(String, usize), Vec<(usize, f64)>> = BTreeMap::new();
    for c in cases
        .iter()
        .filter(|c| c.scenario == "write" || c.scenario == "write-single")
    {
        out.entry((c.system.clone(), c.nodes))
            .or_default()
            .push((c.clients, c.median.ops_per_sec));
    }
    for v in out.values_mut() {
        v.sort_by_key(|p| p.0);
        v.dedup_by_key(|p| p.0);
    }
    out
}

/// Draws the plot into `path`; returns the Markdown legend (empty if there
/// is nothing to plot).
pub fn write_png(cases: &[CaseResult], path: &Path) -> Result<String> {
    let data = series(cases);
    let max = data
        .values()
        .flat_map(|v| v.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    if data.is_empty() {
        return Ok(String::new());
    }
    let (top, step) = nice_top(max);
    let root = BitMapBackend::new(path, (W as u32, H as u32)).into_drawing_area();
    let e = |e| anyhow!("plotting: {e:?}");
    root.fill(&WHITE).map_err(e)?;
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let px = |clients: usize| -> i32 {
        let f = (clients.max(1) as f64).log10() / 3.0;
        x0 + ((x1 - x0) as f64 * f.clamp(0.0, 1.05)) as i32
    };
    let py = |v: f64| -> i32 { y0 - ((y0 - y1) as f64 * (v / top)) as i32 };
    let grid = RGBColor(220, 220, 220);
    let mut y = 0.0;
    while y <= top + 1e-9 {
        root.draw(&PathElement::new(
            vec![(x0, py(y)), (x1, py(y))],
            grid.stroke_width(1),
        ))
        .map_err(e)?;
        y += step;
    }
    for c in [1, 10, 100, 1000] {
        root.draw(&PathElement::new(
            vec![(px(c), y0), (px(c), y1)],
            grid.stroke_width(1),
        ))
        .map_err(e)?;
        root.draw(&PathElement::new(
            vec![(px(c), y0), (px(c), y0 + 8)],
            BLACK.stroke_width(2),
        ))
        .map_err(e)?;
    }
    root.draw(&PathElement::new(
        vec![(x0, y1), (x0, y0), (x1, y0)],
        BLACK.stroke_width(2),
    ))
    .map_err(e)?;
    let mut legend = String::new();
    for (sys, nodes, name, color, dashed) in SERIES {
        let Some(points) = data.get(&(sys.to_string(), nodes)) else {
            continue;
        };
        let pts: Vec<(i32, i32)> = points.iter().map(|(c, v)| (px(*c), py(*v))).collect();
        if dashed {
            for seg in pts.windows(2) {
                draw_dashed(&root, seg[0], seg[1], color).map_err(e)?;
            }
        } else {
            root.draw(&PathElement::new(pts.clone(), color.stroke_width(3)))
                .map_err(e)?;
        }
        for p in &pts {
            root.draw(&Circle::new(*p, 5, color.filled())).map_err(e)?;
        }
        legend += &format!(
            "- {name}: {sys}, {nodes} node{}\n",
            if nodes == 1 { "" } else { "s" }
        );
    }
    root.present().map_err(e)?;
    Ok(format!(
        "Write throughput (successful ops/s, y, linear from 0 to {} with a grid line every {}) vs clients in flight (x, log scale; ticks at 1, 10, 100, 1,000).\n\n{legend}",
        crate::report::thousands(top),
        crate::report::thousands(step)
    ))
}

fn draw_dashed<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    a: (i32, i32),
    b: (i32, i32),
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (dx, dy) = ((b.0 - a.0) as f64, (b.1 - a.1) as f64);
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let n = (len / 12.0).ceil() as i32;
    for i in (0..n).step_by(2) {
        let t0 = i as f64 / n as f64;
        let t1 = ((i + 1) as f64 / n as f64).min(1.0);
        let p = |t: f64| (a.0 + (dx * t) as i32, a.1 + (dy * t) as i32);
        root.draw(&PathElement::new(vec![p(t0), p(t1)], color.stroke_width(3)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_top_covers_the_maximum() {
        for v in [1.0, 7.0, 123.0, 17_119.0, 160_000.0, 999_999.0] {
            let (top, step) = nice_top(v);
            assert!(top >= v && top < v * 10.0, "{v} -> {top}");
            assert!(step > 0.0 && (top / step) <= 10.0, "{v} -> {top}/{step}");
        }
    }
}
