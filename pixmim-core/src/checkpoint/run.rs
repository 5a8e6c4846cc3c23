//! A training run's folder: `config.toml`, `metrics.jsonl`, `bad_files.txt` and
//! `checkpoints/step-NNNNNNNN.safetensors`, each checkpoint the model's parameters plus AdamW's
//! moments (`optim.exp_avg.<name>`, `optim.exp_avg_sq.<name>`, their step counts in the
//! metadata) and a trainable target's parameters (`target.<name>`), so that a resumed run
//! continues bit for bit.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde_json::{Map, Value};

use crate::checkpoint::{self, HostTensor, TARGET_PREFIX};
use crate::error::{Error, Result};
use crate::out_dir::{self, JobKind};

/// An optimiser's state as a checkpoint holds it: its tensors under their `optim.*` names
/// (AdamW: `optim.exp_avg.<name>`, `optim.exp_avg_sq.<name>`) and each parameter's step count
/// by name (the metadata's `optim_steps`). The optimiser converts to and from it
/// ([`crate::optim::AdamW::export_state`], [`crate::optim::AdamW::import_state`]).
#[derive(Default)]
pub struct OptimizerState {
    pub tensors: HashMap<String, HostTensor>,
    pub steps: Map<String, Value>,
}

/// The prefix of an optimiser's tensors in a checkpoint.
pub const OPTIM_PREFIX: &str = "optim.";

/// The folder of one training run.
pub struct RunDir {
    pub out: PathBuf,
    /// The writer's lock on the folder ([`crate::out_dir`]), held for the run's life by the
    /// process that writes it.
    lock: Option<std::fs::File>,
}

impl RunDir {
    /// Open `out` for a run: refuse a folder of another job or one another process is
    /// writing, clear writes a killed process left; checkpoints already there are an error
    /// unless the run resumes. Nothing is created until [`RunDir::start`] (but the lock file
    /// of a folder that exists), so a run refused later (device, memory, a checkpoint of
    /// another shape) leaves no folder behind.
    pub fn open(out: &Path, resume: bool) -> Result<Self> {
        out_dir::check(out, JobKind::Train)?;
        // Locked before anything in it is touched: the `.tmp` files removed below may be
        // another live writer's.
        let lock = match out.is_dir() {
            true => Some(out_dir::lock(out)?),
            false => None,
        };
        let dir = Self {
            out: out.to_path_buf(),
            lock,
        };
        if dir.checkpoint_dir().exists() {
            dir.remove_partial_writes()?;
        }
        if !resume && !dir.checkpoints()?.is_empty() {
            return Err(Error::Usage(format!(
                "{} already holds checkpoints; pass --resume to continue that run, or choose another --out",
                out.display()
            )));
        }
        Ok(dir)
    }

    /// The run in `out` as a process that does not write it sees it (ranks other than 0 of a
    /// distributed run): nothing is created or cleared.
    pub fn follow(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            lock: None,
        }
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out.join("checkpoints")
    }

    /// Checkpoints, oldest first, with the iteration they resume at.
    pub fn checkpoints(&self) -> Result<Vec<(usize, PathBuf)>> {
        list_checkpoints(&self.out)
    }

    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.checkpoints()?.pop().map(|(_, p)| p))
    }

    /// The newest checkpoint that reads whole, for a resume. Newer ones that do not (a disk
    /// that filled, a file damaged since) are passed over, named on stderr and returned; the
    /// writer (`rename`) moves each aside to `NAME.corrupt`, out of the checkpoint list and
    /// of the pruning of old checkpoints, never deleting it.
    pub fn newest_intact(&self, rename: bool) -> Result<(Option<Intact>, Vec<PathBuf>)> {
        let mut corrupt = Vec::new();
        for (_, path) in self.checkpoints()?.into_iter().rev() {
            match read_intact(&path) {
                Ok(c) => return Ok((Some(c), corrupt)),
                Err(why) => {
                    let aside = path.with_extension("safetensors.corrupt");
                    eprintln!(
                        "warning: checkpoint {} cannot be resumed from ({why}){}",
                        path.display(),
                        if rename {
                            format!("; moved to {} and passing to an older one", aside.display())
                        } else {
                            "; passing to an older one".into()
                        }
                    );
                    if rename {
                        std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
                    }
                    corrupt.push(path);
                }
            }
        }
        Ok((None, corrupt))
    }

    /// Create the run's folders and write its resolved config, as the run will use it: the
    /// first write to `out`, made once every check before training has passed.
    pub fn start(&mut self, config: &toml::Table) -> Result<()> {
        std::fs::create_dir_all(&self.out).map_err(|e| Error::io(&self.out, e))?;
        if self.lock.is_none() {
            self.lock = Some(out_dir::lock(&self.out)?);
        }
        out_dir::mark(&self.out, JobKind::Train)?;
        let ckdir = self.checkpoint_dir();
        std::fs::create_dir_all(&ckdir).map_err(|e| Error::io(&ckdir, e))?;
        checkpoint::atomic_write(
            &self.out.join("config.toml"),
            toml::to_string(config).unwrap_or_default().as_bytes(),
        )
    }

    /// Write the checkpoint after `iteration` steps, then keep the newest `keep`.
    ///
    /// A checkpoint is only worth keeping if it can be resumed from: parameters holding NaN or
    /// Inf are an error and the last good checkpoint stays.
    pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, T: AutodiffModule<B>>(
        &self,
        iteration: usize,
        (model, target): (&M, &T),
        optim: OptimizerState,
        (method, config): (&str, &toml::Table),
        keep: usize,
    ) -> Result<PathBuf> {
        let mut tensors = checkpoint::export_params(model);
        tensors.extend(
            checkpoint::export_params(target)
                .into_iter()
                .map(|(k, t)| (format!("{TARGET_PREFIX}{k}"), t)),
        );
        if let Some((name, _)) = tensors
            .iter()
            .find(|(_, t)| t.data.iter().any(|v| !v.is_finite()))
        {
            return Err(Error::Training(format!(
                "`{name}` holds NaN or Inf after step {iteration}: stopping without writing a checkpoint"
            )));
        }
        let mut optim_tensors: Vec<_> = optim.tensors.into_iter().collect();
        optim_tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in optim_tensors {
            debug_assert!(name.starts_with(OPTIM_PREFIX), "{name}");
            tensors.push((name, t));
        }
        let mut meta = checkpoint::run_metadata(method, iteration, config);
        meta.insert(
            "optim_steps".to_string(),
            Value::Object(optim.steps).to_string(),
        );
        let path = self
            .checkpoint_dir()
            .join(format!("step-{iteration:08}.safetensors"));
        checkpoint::write_safetensors(&path, &tensors, meta)?;
        let all = self.checkpoints()?;
        if all.len() > keep {
            for (_, p) in &all[..all.len() - keep] {
                std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
            }
        }
        Ok(path)
    }

    /// A process killed while writing a checkpoint leaves only its temporary file (the rename
    /// never happened); remove it so it is never mistaken for a checkpoint or left to pile up.
    fn remove_partial_writes(&self) -> Result<()> {
        let ckdir = self.checkpoint_dir();
        for entry in std::fs::read_dir(&ckdir).map_err(|e| Error::io(&ckdir, e))? {
            let p = entry.map_err(|e| Error::io(&ckdir, e))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') && name.ends_with(".tmp") {
                eprintln!(
                    "removing {} (a checkpoint write that never finished)",
                    p.display()
                );
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        Ok(())
    }
}

/// Checkpoints in run folder `out`, oldest first, with the iteration they resume at.
pub fn list_checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let dir = out.join("checkpoints");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name.strip_prefix("step-")?.strip_suffix(".safetensors")?;
            Some((n.parse().ok()?, p))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A checkpoint read whole: what [`load`] applies.
pub struct Intact {
    pub path: PathBuf,
    tensors: HashMap<String, HostTensor>,
    meta: HashMap<String, String>,
}

/// Read a training checkpoint, or say why it cannot be one (unreadable, not safetensors,
/// truncated, no pixmim metadata): damage, as opposed to a checkpoint of another model.
pub fn read_intact(path: &Path) -> std::result::Result<Intact, String> {
    let (tensors, meta) = checkpoint::read_safetensors(path).map_err(|e| match e {
        Error::Checkpoint { msg, .. } => msg,
        other => other.to_string(),
    })?;
    if meta.get("format").map(String::as_str) != Some(checkpoint::FORMAT) {
        return Err(format!("not a {} file", checkpoint::FORMAT));
    }
    if meta
        .get("iteration")
        .and_then(|s| s.parse::<usize>().ok())
        .is_none()
    {
        return Err("has no iteration".into());
    }
    Ok(Intact {
        path: path.to_path_buf(),
        tensors,
        meta,
    })
}

/// What a training checkpoint restores: the model, the target's parameters, the optimiser's
/// state and the iteration to continue from.
pub struct Restored<M, T> {
    pub model: M,
    pub target: T,
    pub optim: OptimizerState,
    pub iteration: usize,
}

/// Load a training checkpoint of `method` into `model` and the target's parameters; the
/// optimiser's state comes back as the checkpoint holds it.
pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, T: AutodiffModule<B>>(
    checkpoint: Intact,
    (model, target): (M, T),
    method: &str,
) -> Result<Restored<M, T>> {
    let Intact {
        path,
        tensors,
        meta,
    } = checkpoint;
    let path = path.as_path();
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    if meta.get("method").map(String::as_str) != Some(method) {
        return Err(bad(format!(
            "was written by method `{}`, this run is `{method}`",
            meta.get("method").cloned().unwrap_or_default(),
        )));
    }
    let iteration: usize = meta
        .get("iteration")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("has no iteration".into()))?;
    let part = |prefix: &str| -> HashMap<String, HostTensor> {
        tensors
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect()
    };
    let mut params = part("");
    params.retain(|k, _| checkpoint::is_model_key(k));
    let (model, unused) = checkpoint::import_params(model, &params, path)?;
    if !unused.is_empty() {
        return Err(bad(format!(
            "has parameters this model lacks: {}",
            unused.join(", ")
        )));
    }
    // A run whose target is trainable needs its parameters; one whose target is fixed
    // refuses them (the config's target changed since the checkpoint).
    let target_params = part(TARGET_PREFIX);
    let wanted = checkpoint::export_params(&target);
    if target_params.is_empty() && !wanted.is_empty() {
        return Err(bad(format!(
            "has no trainable target parameters ({TARGET_PREFIX}{}) but this run's target learns them",
            wanted[0].0
        )));
    }
    let (target, unused) = checkpoint::import_params(target, &target_params, path)?;
    if !unused.is_empty() {
        return Err(bad(format!(
            "holds trainable target parameters ({}) but this run's target has none",
            unused.join(", ")
        )));
    }
    let steps: Map<String, Value> = meta
        .get("optim_steps")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    Ok(Restored {
        model,
        target,
        optim: OptimizerState {
            tensors: tensors
                .into_iter()
                .filter(|(k, _)| k.starts_with(OPTIM_PREFIX))
                .collect(),
            steps,
        },
        iteration,
    })
}
