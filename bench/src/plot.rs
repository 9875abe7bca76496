//! benchmarks.png: cost vs blocked-list size, one panel per workload, one
//! line per contender (iptables one rule per CIDR, ipset, the filter), as a
//! fraction of the no-filter rate of the same repetition.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;
use crate::setups::Setup;
use crate::workloads::Metric;

/// Debian's fonts-dejavu-core.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT_BOLD: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

const IPTABLES: RGBColor = RGBColor(214, 39, 40);
const IPSET: RGBColor = RGBColor(255, 127, 14);
const FILTER: RGBColor = RGBColor(31, 119, 180);

/// A contender's line: legend text, colour, its setup for a list size.
type Line = (&'static str, RGBColor, fn(usize) -> Setup);

/// Draws the plot; `Ok(false)` (with a message) if there is nothing to draw
/// or no font to draw text with.
pub fn draw(report: &Report, path: &Path) -> Result<bool> {
    let Some(c) = &report.results.scaling else {
        return Ok(false);
    };
    if let Err(e) = register_fonts() {
        println!("warning: no plot: {e:#} (Debian: apt-get install fonts-dejavu-core)");
        return Ok(false);
    }
    let sizes = c.filter_sizes();
    let root = BitMapBackend::new(path, (1400, 1150)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (title, body) = root.split_vertically(70);
    title
        .titled(
            "Cost of a blocked-destination list, relative to no filter (higher is better)",
            ("sans-serif", 26, FontStyle::Bold).into_font(),
        )
        .map_err(|e| anyhow!("{e:?}"))?;
    let panels = body.split_evenly((2, 2));
    let metrics = [
        Metric::UdpPps,
        Metric::CrrPerSec,
        Metric::UdpCpuNs,
        Metric::CrrCpuUs,
    ];
    let x_max = sizes.iter().copied().max().unwrap_or(10_000) as f64 * 1.6;
    let y_max = c
        .setups
        .iter()
        .flat_map(|&x| metrics.map(|m| c.ratio(x, m)))
        .flatten()
        .map(|r| r.hi)
        .fold(1.1f64, f64::max)
        + 0.05;
    for (panel, metric) in panels.iter().zip(metrics) {
        let base = c.summary(Setup::NoFilter, metric).map_or(0.0, |s| s.median);
        let caption = format!(
            "{} (no filter: {} {})",
            metric.label(),
            crate::suite::fmt(base),
            metric.unit()
        );
        let y_desc = if metric.is_cpu_cost() {
            "no-filter CPU time ÷ this CPU time"
        } else {
            "fraction of no-filter rate"
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 20))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d((0.7f64..x_max).log_scale(), 0f64..y_max)
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .configure_mesh()
            .x_desc("blocked CIDRs (log scale)")
            .y_desc(y_desc)
            .x_label_formatter(&|x| crate::setups::thousands(x.round() as usize))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
        chart
            .draw_series(LineSeries::new(
                [(0.7, 1.0), (x_max, 1.0)],
                ShapeStyle::from(&BLACK.mix(0.4)).stroke_width(1),
            ))
            .map_err(|e| anyhow!("{e:?}"))?;
        let lines: [Line; 3] = [
            ("iptables, one rule per CIDR", IPTABLES, Setup::Iptables),
            ("ipset (hash:net), one rule", IPSET, Setup::Ipset),
            ("egress filter (LPM trie)", FILTER, Setup::Filter),
        ];
        for (name, color, setup) in lines {
            let points: Vec<(f64, f64, f64, f64)> = sizes
                .iter()
                .filter_map(|&n| {
                    let r = c.ratio(setup(n), metric)?;
                    Some((n as f64, r.median, r.lo, r.hi))
                })
                .collect();
            let style = ShapeStyle::from(&color).stroke_width(3);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(x, y, _, _)| (x, y)),
                    style,
                ))
                .map_err(|e| anyhow!("{e:?}"))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y, _, _)| Circle::new((x, y), 5, color.filled())),
                )
                .map_err(|e| anyhow!("{e:?}"))?;
            // The 95% confidence interval of the median.
            chart
                .draw_series(points.iter().map(|&(x, _, lo, hi)| {
                    PathElement::new(vec![(x, lo), (x, hi)], color.stroke_width(1))
                }))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    root.present()
        .map_err(|e| anyhow!("{e:?}"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

fn register_fonts() -> Result<()> {
    for (path, style) in [(FONT, FontStyle::Normal), (FONT_BOLD, FontStyle::Bold)] {
        let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", style, bytes)
            .map_err(|_| anyhow!("{path} is not a usable font"))?;
    }
    Ok(())
}
