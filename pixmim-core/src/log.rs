//! What a run reports as it goes: `OUT/metrics.jsonl` (one JSON object per logged iteration),
//! the same scalars (and the reconstruction images) as a TensorBoard event file beside it
//! ([`crate::tensorboard`]), and a progress bar.
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tensorboard::EventWriter;

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
    events: EventWriter,
}

impl MetricsLog {
    /// Open for appending; on resume, drop lines for iterations at or after `keep_below`
    /// (they were logged after the checkpoint we resume from and will be logged again).
    pub fn open(path: &Path, keep_below: usize) -> Result<Self> {
        if path.exists() {
            let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let kept: Vec<String> = BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(Value::as_u64))
                        .map(|s| (s as usize) < keep_below)
                        .unwrap_or(false)
                })
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            crate::checkpoint::atomic_write(path, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut events = EventWriter::create(dir)?;
        // The event files' counterpart of dropping those lines.
        events.session_start(keep_below as i64)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            events,
        })
    }

    /// One line; every number in it but `step` is also a TensorBoard scalar at that step.
    pub fn log(&mut self, fields: Map<String, Value>) -> Result<()> {
        let step = fields.get("step").and_then(Value::as_i64).unwrap_or(0);
        for (k, v) in &fields {
            if let (true, Some(x)) = (k != "step", v.as_f64()) {
                self.events.scalar(k, step, x)?;
            }
        }
        let line = Value::Object(fields).to_string();
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))
    }
}

impl MetricsLog {
    /// An image for TensorBoard at `step` (not in `metrics.jsonl`).
    pub fn image(&mut self, tag: &str, step: usize, img: &image::RgbImage) -> Result<()> {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::Training(format!("cannot encode the `{tag}` image: {e}")))?;
        let hwc = (img.height(), img.width(), 3);
        self.events.image(tag, step as i64, hwc, &png)
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (logs, tests, CI).
pub fn progress_bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("a valid template"),
    );
    pb.set_prefix(prefix.to_string());
    pb
}
