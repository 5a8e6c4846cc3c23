//! Output folders (`--out`): which job a folder belongs to, and one writer at a time.
//!
//! A job writes `metrics.jsonl`, event files and its own results into its folder, so a folder
//! of another job must never be handed to it (an `eval linear --out` pointed at a training run
//! would truncate the run's metrics). Each job marks its folder with `.pixmim-job` (the job's
//! name) and holds an advisory lock on `.pixmim.lock` (with its host and pid in it) for as
//! long as it writes, so a second writer, such as a requeued Slurm job overlapping the first,
//! is refused instead of interleaving with it.
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MARKER: &str = ".pixmim-job";
const LOCK: &str = ".pixmim.lock";

/// The jobs that own an output folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// `pixmim train`: config.toml, checkpoints/, metrics.jsonl, bad_files.txt, events.
    Train,
    /// `pixmim eval linear`: metrics.jsonl, events.
    LinearProbe,
    /// `pixmim eval finetune`: metrics.jsonl, finetuned.safetensors, events.
    Finetune,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::LinearProbe => "eval linear",
            Self::Finetune => "eval finetune",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [Self::Train, Self::LinearProbe, Self::Finetune]
            .into_iter()
            .find(|k| k.name() == s.trim())
    }
    /// Files this job writes, which a folder of unknown origin must not hold.
    fn writes(self) -> &'static [&'static str] {
        match self {
            Self::Train => &[
                "config.toml",
                "checkpoints",
                "metrics.jsonl",
                "bad_files.txt",
            ],
            Self::LinearProbe => &["metrics.jsonl"],
            Self::Finetune => &["metrics.jsonl", "finetuned.safetensors"],
        }
    }
}

/// The job a folder holds: from its marker, or for a folder written before markers existed,
/// from what it holds (a training run has config.toml and checkpoints/).
fn owner(dir: &Path) -> Option<JobKind> {
    if let Ok(text) = std::fs::read_to_string(dir.join(MARKER)) {
        return JobKind::parse(&text);
    }
    if dir.join("config.toml").exists() && dir.join("checkpoints").is_dir() {
        return Some(JobKind::Train);
    }
    if dir.join("finetuned.safetensors").exists() {
        return Some(JobKind::Finetune);
    }
    None
}

/// Refuse (exit 2) a folder that another job wrote, or that holds files this job would
/// overwrite without a mark saying it wrote them. Creates nothing.
pub fn check(dir: &Path, kind: JobKind) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--out {} is a file, not a folder",
            dir.display()
        )));
    }
    match owner(dir) {
        Some(k) if k == kind => Ok(()),
        Some(other) => Err(Error::Usage(format!(
            "--out {} holds the output of `pixmim {}`; `pixmim {}` would overwrite its files: choose another folder",
            dir.display(),
            other.name(),
            kind.name()
        ))),
        None => {
            let clash: Vec<&str> = kind
                .writes()
                .iter()
                .copied()
                .filter(|f| dir.join(f).exists())
                .collect();
            if clash.is_empty() {
                return Ok(());
            }
            Err(Error::Usage(format!(
                "--out {} already holds {} not written by `pixmim {}`: choose another folder",
                dir.display(),
                clash.join(", "),
                kind.name()
            )))
        }
    }
}

/// A folder claimed by a job: marked as its own and locked until this is dropped.
#[derive(Debug)]
pub struct Claim {
    pub dir: PathBuf,
    _lock: File,
}

/// Check `dir` ([`check`]), create it, take its lock (refused, exit 2, naming the holder,
/// while another process holds it) and mark it as `kind`'s.
pub fn claim(dir: &Path, kind: JobKind) -> Result<Claim> {
    check(dir, kind)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock = lock(dir)?;
    mark(dir, kind)?;
    Ok(Claim {
        dir: dir.to_path_buf(),
        _lock: lock,
    })
}

/// Mark `dir` (created, its lock held) as `kind`'s, checking again under the lock: another
/// job may have claimed the folder meanwhile.
pub fn mark(dir: &Path, kind: JobKind) -> Result<()> {
    check(dir, kind)?;
    let marker = dir.join(MARKER);
    if !marker.exists() {
        std::fs::write(&marker, format!("{}\n", kind.name())).map_err(|e| Error::io(&marker, e))?;
    }
    Ok(())
}

/// Take `dir`'s writer lock, or say who holds it. The lock is the kernel's (flock), so a
/// writer that dies releases it; the file's text only names the holder.
pub fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            return Err(Error::Usage(format!(
                "{} is being written by another process ({}); wait for it to end or choose another --out",
                dir.display(),
                holder.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let holder = format!(
        "pid {} on {}, since {}",
        std::process::id(),
        host_name(),
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
    );
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(holder.as_bytes()))
        .map_err(|e| Error::io(&path, e))?;
    Ok(f)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pixmim-out-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_folder_of_another_job_is_refused_and_left_alone() {
        let run = tmp("run");
        let claim_train = claim(&run, JobKind::Train).unwrap();
        std::fs::write(run.join("metrics.jsonl"), "{\"step\": 0}\n").unwrap();
        drop(claim_train);
        for kind in [JobKind::LinearProbe, JobKind::Finetune] {
            let e = claim(&run, kind).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("pixmim train"), "{e}");
        }
        assert_eq!(
            std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
            "{\"step\": 0}\n"
        );
        // The same job again is its own folder.
        claim(&run, JobKind::Train).unwrap();
        // A folder nobody marked, holding a metrics file: not overwritten.
        let loose = tmp("loose");
        std::fs::create_dir_all(&loose).unwrap();
        std::fs::write(loose.join("metrics.jsonl"), "x").unwrap();
        let e = claim(&loose, JobKind::LinearProbe).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl"), "{e}");
        // An unrelated file is no obstacle.
        let notes = tmp("notes");
        std::fs::create_dir_all(&notes).unwrap();
        std::fs::write(notes.join("notes.txt"), "x").unwrap();
        claim(&notes, JobKind::Finetune).unwrap();
        for d in [run, loose, notes] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn a_second_writer_is_refused_naming_the_holder() {
        let dir = tmp("lock");
        let first = claim(&dir, JobKind::Train).unwrap();
        let e = claim(&dir, JobKind::Train).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("another process"),
            "{msg}"
        );
        drop(first);
        claim(&dir, JobKind::Train).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
