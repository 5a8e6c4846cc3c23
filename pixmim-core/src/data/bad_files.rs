//! The record of unreadable images under `data.on_error = "skip"`: each file is logged once,
//! listed in `OUT/bad_files.txt` (one `path<TAB>reason` a line) and counted for the metrics.
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

#[derive(Default)]
pub struct BadFiles {
    list: Option<PathBuf>,
    seen: Mutex<HashSet<PathBuf>>,
}

impl BadFiles {
    /// A record kept only in memory (previews, benchmarks, tests).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The record of the run in `out`; files listed by an earlier part of the run (before a
    /// resume) are known bad from the start and not logged again.
    pub fn open(out: &Path) -> Result<Self> {
        let list = out.join("bad_files.txt");
        let mut seen = HashSet::new();
        if list.exists() {
            let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
            for line in text.lines() {
                if let Some(p) = line.split('\t').next().filter(|p| !p.is_empty()) {
                    seen.insert(PathBuf::from(p));
                }
            }
        }
        Ok(Self {
            list: Some(list),
            seen: Mutex::new(seen),
        })
    }

    pub fn is_known(&self, path: &Path) -> bool {
        self.seen.lock().expect("bad-file lock").contains(path)
    }

    /// Note a file that failed; logs and lists it the first time only.
    pub fn record(&self, path: &Path, reason: &Error) -> Result<()> {
        let mut seen = self.seen.lock().expect("bad-file lock");
        if !seen.insert(path.to_path_buf()) {
            return Ok(());
        }
        let reason = reason.to_string().replace(['\n', '\t'], " ");
        eprintln!("warning: skipping unreadable image ({reason})");
        if let Some(list) = &self.list {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(list)
                .map_err(|e| Error::io(list, e))?;
            writeln!(f, "{}\t{reason}", path.display()).map_err(|e| Error::io(list, e))?;
        }
        Ok(())
    }

    /// Files skipped so far in this run (including before a resume).
    pub fn count(&self) -> usize {
        self.seen.lock().expect("bad-file lock").len()
    }
}
