//! Training curves (`pixmim plot`): any scalar a run logs in `metrics.jsonl` (loss, lr, img/s,
//! grad_norm, MFF's fusion weights, the adaptive target's radius) against the step, one line
//! per run, one PNG per metric.
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::analyze::plot::{line_plot, Series};
use crate::error::{Error, Result};

/// The lines of a run's `metrics.jsonl`; a line that is not a JSON object is an error naming
/// the file and line, except a last line the file does not end (a write cut short, as by a
/// full disk), which is passed over with a warning, as a resume does.
pub fn read_metrics(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let torn_tail = !text.ends_with('\n');
    let count = text.lines().count();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => out.push(m),
            _ if torn_tail && i + 1 == count => eprintln!(
                "warning: {}: line {} is cut short (the write never finished); passed over",
                path.display(),
                i + 1
            ),
            _ => {
                return Err(Error::data(
                    path,
                    format!("line {} is not a JSON object of metrics", i + 1),
                ))
            }
        }
    }
    Ok(out)
}

/// (step, value) of `metric` over the lines that log it.
pub fn curve(lines: &[Map<String, Value>], metric: &str) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter_map(|m| Some((m.get("step")?.as_f64()?, m.get(metric)?.as_f64()?)))
        .collect()
}

/// Plot `metrics` of the runs (label, run folder) into `out/<metric>.png`; returns the files.
/// A run folder without `metrics.jsonl`, or a metric no run logs, is an error naming it.
pub fn plot_runs(
    runs: &[(String, PathBuf)],
    metrics: &[String],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let logs = runs
        .iter()
        .map(|(label, dir)| Ok((label, read_metrics(&dir.join("metrics.jsonl"))?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = Vec::new();
    for metric in metrics {
        let series: Vec<Series> = logs
            .iter()
            .map(|(label, lines)| Series {
                label: label.to_string(),
                points: curve(lines, metric),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            let known: std::collections::BTreeSet<&String> = logs
                .iter()
                .flat_map(|(_, l)| l.iter().flat_map(|m| m.keys()))
                .collect();
            return Err(Error::Usage(format!(
                "no run logs `{metric}`; they log: {}",
                known.into_iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let file = out.join(format!("{}.png", file_stem(metric)));
        line_plot(&file, metric, "step", metric, &series)?;
        written.push(file);
    }
    Ok(written)
}

fn file_stem(metric: &str) -> String {
    metric
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_come_from_the_lines_that_log_the_metric() {
        let dir = std::env::temp_dir().join(format!("pixmim-curves-{}", std::process::id()));
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("metrics.jsonl"),
            "{\"step\":0,\"loss\":2.0,\"lr\":0.1}\n{\"step\":1,\"loss\":1.5}\n\n{\"step\":2,\"loss\":1.0,\"lr\":0.3}\n",
        )
        .unwrap();
        let lines = read_metrics(&run.join("metrics.jsonl")).unwrap();
        assert_eq!(
            curve(&lines, "loss"),
            vec![(0.0, 2.0), (1.0, 1.5), (2.0, 1.0)]
        );
        assert_eq!(curve(&lines, "lr"), vec![(0.0, 0.1), (2.0, 0.3)]);
        let runs = vec![("a".to_string(), run.clone())];
        let files = plot_runs(&runs, &["loss".into(), "lr".into()], &dir.join("plots")).unwrap();
        for f in &files {
            let img = image::open(f).unwrap();
            assert!(img.width() > 100 && img.height() > 100, "{}", f.display());
        }
        let e = plot_runs(&runs, &["radius".into()], &dir.join("plots")).unwrap_err();
        assert!(
            e.to_string().contains("`radius`") && e.to_string().contains("loss"),
            "{e}"
        );
        std::fs::write(run.join("metrics.jsonl"), "{\"step\":0}\nnot json\n").unwrap();
        let e = read_metrics(&run.join("metrics.jsonl")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert_eq!(e.exit_code(), 2);
        // A torn last line (no newline after it) is passed over; the lines before it count.
        std::fs::write(
            run.join("metrics.jsonl"),
            "{\"step\":0,\"loss\":2.0}\n{\"step\":1,\"loss\":1.5}\n{\"step\":2,\"lo",
        )
        .unwrap();
        let lines = read_metrics(&run.join("metrics.jsonl")).unwrap();
        assert_eq!(curve(&lines, "loss"), vec![(0.0, 2.0), (1.0, 1.5)]);
        plot_runs(&runs, &["loss".into()], &dir.join("plots")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
