//! SVG plots of a report, written next to `results.json`: the latency distribution of each
//! operation (latency at each percentile, log scale) and throughput over time (completions
//! per second of each operation, on the run's time line). SVG only, no font library.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::Report;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("plot {file}: {why}")]
pub struct PlotError {
    file: String,
    why: String,
}

/// Writes `latency.svg` and `throughput.svg` of `report` into `dir`; returns the files
/// written (none when the report has no measurement).
///
/// # Errors
/// A file cannot be written.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<String>, PlotError> {
    let mut written = Vec::new();
    if report.ops.values().any(|s| !s.latency_curve.is_empty()) {
        latency(report, &dir.join("latency.svg"))?;
        written.push("latency.svg".to_string());
    }
    if report.ops.values().any(|s| !s.per_second.is_empty()) {
        throughput(report, &dir.join("throughput.svg"))?;
        written.push("throughput.svg".to_string());
    }
    Ok(written)
}

fn err(file: &Path) -> impl Fn(&dyn std::fmt::Display) -> PlotError + '_ {
    move |e| PlotError {
        file: file.display().to_string(),
        why: e.to_string(),
    }
}

const SIZE: (u32, u32) = (960, 540);

fn latency(report: &Report, file: &Path) -> Result<(), PlotError> {
    let e = err(file);
    let points = report.ops.values().flat_map(|s| s.latency_curve.iter());
    let (lo, hi) = points.fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p[1]), hi.max(p[1])));
    let (lo, hi) = ((lo * 0.8).max(0.001), (hi * 1.25).max(0.01));
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} on {}: latency distribution", report.name, report.system),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, (lo..hi).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (op, s)) in report.ops.iter().enumerate() {
        if s.latency_curve.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.latency_curve.iter().map(|p| (p[0], p[1])),
                color.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(op.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

fn throughput(report: &Report, file: &Path) -> Result<(), PlotError> {
    let e = err(file);
    let end = report
        .ops
        .values()
        .map(|s| s.start_s + s.per_second.len() as f64)
        .fold(1f64, f64::max);
    let top = report
        .ops
        .values()
        .flat_map(|s| s.per_second.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} on {}: throughput over time", report.name, report.system),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("operations per second")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, (op, s)) in report.ops.iter().enumerate() {
        if s.per_second.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        // Each second's count is drawn at the middle of that second.
        let series = s
            .per_second
            .iter()
            .enumerate()
            .map(|(sec, n)| (s.start_s + sec as f64 + 0.5, *n as f64));
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(op.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::stats::{OpStats, summarise};

    #[test]
    fn plots_are_svg_with_a_line_per_operation() {
        let mut ops = BTreeMap::new();
        for (name, ms) in [("1.put", 3u64), ("2.get", 1)] {
            let mut s = OpStats::default();
            for i in 0..50u64 {
                s.ok(
                    Duration::from_millis(ms + i % 5),
                    (4096, 0),
                    Duration::from_millis(i * 40),
                );
            }
            let mut sum = summarise(&s, Duration::from_secs(2));
            sum.start_s = if name == "2.get" { 2.0 } else { 0.0 };
            ops.insert(name.to_string(), sum);
        }
        let report = Report {
            name: "t".into(),
            seconds: 4.0,
            ops,
            servers: None,
            machine: None,
            system: "storaged".into(),
            rss: None,
            extra: BTreeMap::new(),
        };
        let dir = std::env::temp_dir().join(format!("s3bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = write_all(&report, &dir).unwrap();
        assert_eq!(files, ["latency.svg", "throughput.svg"]);
        for f in files {
            let svg = std::fs::read_to_string(dir.join(&f)).unwrap();
            assert!(svg.starts_with("<svg"), "{f}");
            assert!(svg.contains("2.get") && svg.contains("1.put"), "{f}");
            assert!(svg.matches("<polyline").count() >= 2, "{f}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
