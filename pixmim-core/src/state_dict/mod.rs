//! The official code's checkpoint files and key layouts: `.pth` files read through a restricted
//! pickle reader of pixmim's own ([`pickle`], [`pth_reader`]; nothing runs) and written
//! ([`pth`]), safetensors, and how the official, mm* and timm layouts name a method's
//! parameters ([`layout`], a method's [`OfficialLayout`]). This module: a checkpoint's state
//! dict as an import sees it, official names and shapes first and data on demand, so that what
//! a file declares never decides how much memory is taken.
pub mod layout;
pub mod pickle;
pub mod pth;
pub mod pth_reader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use layout::OfficialLayout;

use crate::checkpoint::{self, HostTensor};
use crate::error::{Error, Result};
use layout::mm_to_official;
use pth_reader::PthStateDict;

/// How to open a checkpoint file.
#[derive(Clone, Copy, Debug)]
pub struct Opening {
    /// safetensors rather than a `.pth`.
    pub safetensors: bool,
    /// The `.pth` entry holding the state dict (`model`, `state_dict`); the whole file when
    /// it has none.
    pub pth_key: &'static str,
    /// Names are mm* (`backbone.`, `neck.`) even if no key shows it.
    pub mm: bool,
}

/// A checkpoint's state dict under official names, with every tensor's shape known and its
/// data read only when asked for ([`StateDict::load`]): an import reads just the tensors that
/// fit its model, so what a file declares never decides how much memory is taken.
pub struct StateDict {
    path: PathBuf,
    /// Official name -> the name in the file.
    names: HashMap<String, String>,
    shapes: HashMap<String, Vec<usize>>,
    source: Mutex<Source>,
}

enum Source {
    Pth(PthStateDict),
    /// safetensors, read whole (the format's offsets are checked against the file's bytes).
    Loaded(HashMap<String, HostTensor>),
}

impl StateDict {
    /// Official names, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.shapes.keys()
    }
    pub fn shape(&self, official: &str) -> Option<&[usize]> {
        self.shapes.get(official).map(Vec::as_slice)
    }
    /// Read one tensor's values (each once: an import takes them as it reads them).
    pub fn load(&self, official: &str) -> Result<HostTensor> {
        let missing = || Error::Checkpoint {
            path: self.path.clone(),
            msg: format!("has no tensor `{official}`"),
        };
        let file_name = self.names.get(official).ok_or_else(missing)?;
        let mut source = self.source.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *source {
            Source::Pth(p) => p.load(file_name),
            Source::Loaded(m) => m.remove(file_name).ok_or_else(missing),
        }
    }

    /// Open `path` and list its tensors under official names (mm* names mapped).
    pub fn open(path: &Path, how: &Opening) -> Result<Self> {
        let source = open_source(path, how)?;
        let file_shapes: Vec<(String, Vec<usize>)> = match &source {
            Source::Pth(p) => p
                .tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect(),
            Source::Loaded(m) => m
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone()))
                .collect(),
        };
        let mm = how.mm || file_shapes.iter().any(|(k, _)| is_mm_key(k));
        let mut names = HashMap::new();
        let mut shapes = HashMap::new();
        for (k, shape) in file_shapes {
            let official = if mm {
                mm_to_official(&k)
            } else {
                Some(k.clone())
            };
            if let Some(official) = official {
                names.insert(official.clone(), k);
                shapes.insert(official, shape);
            }
        }
        Ok(Self {
            path: path.into(),
            names,
            shapes,
            source: Mutex::new(source),
        })
    }
}

fn is_mm_key(k: &str) -> bool {
    k.starts_with("backbone.") || k.starts_with("neck.")
}

/// A state dict under the names the file has, every tensor read.
pub fn read_raw(path: &Path, how: &Opening) -> Result<HashMap<String, HostTensor>> {
    match open_source(path, how)? {
        Source::Loaded(m) => Ok(m),
        Source::Pth(mut p) => {
            let names: Vec<String> = p.tensors.keys().cloned().collect();
            names
                .into_iter()
                .map(|k| Ok((k.clone(), p.load(&k)?)))
                .collect()
        }
    }
}

fn open_source(path: &Path, how: &Opening) -> Result<Source> {
    if how.safetensors {
        return Ok(Source::Loaded(
            checkpoint::read_safetensors(path)?
                .0
                .into_iter()
                .filter(|(k, _)| checkpoint::is_model_key(k))
                .collect(),
        ));
    }
    let p = PthStateDict::open(path, how.pth_key)?;
    // Each value takes at least a byte of the file unless tensors share a storage (tied
    // weights); far more declared values than bytes is a crafted file.
    let file_len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if p.total_values() > 2 * file_len + 1024 {
        return Err(Error::Checkpoint {
            path: path.into(),
            msg: format!(
                "its tensors declare {} values in a file of {file_len} bytes (views of one storage repeated?)",
                p.total_values()
            ),
        });
    }
    Ok(Source::Pth(p))
}
