//! `loadgen plot`: rows/s against rows, pipeline and baseline, from the benchmark's JSON results.
//!
//! For each row count the most recent `own-client` run whose checks all passed is drawn (runs
//! with other settings or scenarios are in the results table; the plot shows the current
//! state of our own client). The x axis is
//! logarithmic so 100k, 1M and 5M rows spread evenly. SVG only: no fonts or image libraries
//! are needed to draw it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Deserialize;

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot read the results in {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("no passing benchmark results in {0}")]
    NoResults(PathBuf),
    #[error("cannot draw {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// The parts of a result file the plot needs.
#[derive(Debug, Clone, Deserialize)]
struct Run {
    timestamp: String,
    /// Missing in results from before there were scenarios: those were all our own client.
    #[serde(default)]
    scenario: Option<String>,
    rows: u64,
    baseline: Rate,
    pipeline: Rate,
    #[serde(default)]
    checks: Vec<CheckOutcome>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Rate {
    rows_per_sec: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct CheckOutcome {
    ok: bool,
}

/// One plotted row count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotPoint {
    pub rows: u64,
    pub baseline_rows_per_sec: f64,
    pub pipeline_rows_per_sec: f64,
}

/// Draws `out` from the JSON files in `results_dir`; returns the plotted points.
pub fn plot(results_dir: &Path, out: &Path) -> Result<Vec<PlotPoint>, PlotError> {
    let points = latest_points(&read_runs(results_dir)?);
    if points.is_empty() {
        return Err(PlotError::NoResults(results_dir.to_owned()));
    }
    draw(&points, out).map_err(|err| PlotError::Draw {
        path: out.to_owned(),
        message: err.to_string(),
    })?;
    Ok(points)
}

fn read_runs(dir: &Path) -> Result<Vec<Run>, PlotError> {
    let read_error = |source| PlotError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read(&path).map_err(|source| PlotError::Read {
            path: path.clone(),
            source,
        })?;
        match serde_json::from_slice::<Run>(&text) {
            Ok(run) => runs.push(run),
            Err(err) => tracing::warn!(path = %path.display(), error = %err, "not a bench result"),
        }
    }
    Ok(runs)
}

/// Per row count, the latest run whose checks passed.
fn latest_points(runs: &[Run]) -> Vec<PlotPoint> {
    let mut latest: BTreeMap<u64, &Run> = BTreeMap::new();
    let plotted = |r: &&Run| {
        r.checks.iter().all(|c| c.ok) && r.scenario.as_deref().is_none_or(|s| s == "own-client")
    };
    for run in runs.iter().filter(plotted) {
        let newer = latest
            .get(&run.rows)
            .is_none_or(|seen| run.timestamp > seen.timestamp);
        if newer {
            latest.insert(run.rows, run);
        }
    }
    latest
        .values()
        .map(|run| PlotPoint {
            rows: run.rows,
            baseline_rows_per_sec: run.baseline.rows_per_sec,
            pipeline_rows_per_sec: run.pipeline.rows_per_sec,
        })
        .collect()
}

/// A line of the plot: its legend, its colour and the rate it draws.
type Series = (&'static str, RGBColor, fn(&PlotPoint) -> f64);

fn draw(points: &[PlotPoint], out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let min_rows = points.iter().map(|p| p.rows).min().unwrap_or(1) as f64;
    let max_rows = points.iter().map(|p| p.rows).max().unwrap_or(1) as f64;
    let top = points
        .iter()
        .flat_map(|p| [p.baseline_rows_per_sec, p.pipeline_rows_per_sec])
        .fold(0.0f64, f64::max);

    let root = SVGBackend::new(out, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Load throughput: pipeline vs psql \\copy",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            ((min_rows / 2.0)..(max_rows * 2.0)).log_scale(),
            0.0..(top * 1.15).max(1.0),
        )?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(8)
        .x_desc("rows (log scale)")
        .y_desc("rows per second")
        .x_label_formatter(&|rows| short_count(*rows))
        .y_label_formatter(&|rate| short_count(*rate))
        .draw()?;

    let series: [Series; 2] = [
        ("pipeline (gateway + engine)", BLUE, |p| {
            p.pipeline_rows_per_sec
        }),
        ("baseline (COPY csv, 1 connection)", RED, |p| {
            p.baseline_rows_per_sec
        }),
    ];
    for (name, color, rate) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.rows as f64, rate(p))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `100k`, `1M`, `5.5M`: counts as axis labels.
fn short_count(value: f64) -> String {
    let (scaled, unit) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.1}");
    format!("{}{unit}", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(timestamp: &str, rows: u64, pipeline: f64, ok: bool) -> String {
        serde_json::json!({
            "timestamp": timestamp, "rows": rows,
            "baseline": {"secs": 1.0, "rows_per_sec": 400_000.0, "mb_per_sec": 20.0},
            "pipeline": {"secs": 1.0, "rows_per_sec": pipeline, "mb_per_sec": 20.0},
            "checks": [{"name": "rows", "ok": ok, "detail": ""}]
        })
        .to_string()
    }

    #[test]
    fn the_latest_passing_run_of_each_size_is_drawn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write =
            |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
        write(
            "a.json",
            run("2025-01-01T00:00:00Z", 100_000, 300_000.0, true),
        );
        write(
            "b.json",
            run("2025-01-02T00:00:00Z", 100_000, 350_000.0, true),
        );
        write("c.json", run("2025-01-03T00:00:00Z", 100_000, 1.0, false));
        write(
            "d.json",
            run("2025-01-01T00:00:00Z", 1_000_000, 500_000.0, true),
        );
        // Another scenario, newer and faster, is not our own client's figure.
        let mut other: serde_json::Value =
            serde_json::from_str(&run("2025-01-04T00:00:00Z", 100_000, 900_000.0, true))
                .expect("json");
        other["scenario"] = "one-file".into();
        write("e.json", other.to_string());
        write("README.md", "not json".into());
        let out = dir.path().join("plot/throughput.svg");
        let points = plot(dir.path(), &out).expect("plot");
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].rows, 100_000);
        assert_eq!(points[0].pipeline_rows_per_sec, 350_000.0);
        assert_eq!(points[1].pipeline_rows_per_sec, 500_000.0);
        let svg = std::fs::read_to_string(out).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("pipeline (gateway + engine)"));
        assert!(svg.contains("rows per second"));
    }

    #[test]
    fn no_results_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = plot(dir.path(), &dir.path().join("x.svg")).expect_err("nothing to plot");
        assert!(matches!(err, PlotError::NoResults(_)), "{err}");
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(short_count(100_000.0), "100k");
        assert_eq!(short_count(1_000_000.0), "1M");
        assert_eq!(short_count(5_500_000.0), "5.5M");
        assert_eq!(short_count(250.0), "250");
    }
}
