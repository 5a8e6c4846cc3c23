//! Moving weights between pixmim and the PyTorch codebases: reading released checkpoints
//! (`.pth` through a restricted pickle reader of its own, no Python; or safetensors) in the official, mm*
//! or timm key layouts, and writing ours out in those layouts (`pixmim import` / `export`).
//! The formats and layouts themselves are [`crate::state_dict`]'s; this module runs the jobs.

use std::collections::HashMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::DispatchDevice;

use crate::checkpoint::{self, HostTensor};
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::job::{ImportOptions, ImportReport};
use crate::registry::Composed;
use crate::RunBackend;

use crate::state_dict::layout::{official_to_mm, official_to_mmseg, OfficialLayout};
use crate::state_dict::{self, pth, Opening, StateDict};

/// A checkpoint format of the reference codebases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The method's official code, `{"model": state_dict}`: facebookresearch/mae (also its
    /// encoder-only `mae_pretrain_vit_*.pth`), Alpha-VL/ConvMAE, facebookresearch/long_seq_mae.
    /// How a method's names and shapes differ from pixmim's is the method's
    /// [`OfficialLayout`].
    Official,
    /// mmselfsup 1.x (PixMIM, MAE): `state_dict`, `backbone.` / `neck.` keys.
    Mmselfsup,
    /// mmpretrain (MFF, MAE): same layout as mmselfsup.
    Mmpretrain,
    /// timm VisionTransformer: the encoder alone, official names.
    Timm,
    /// detectron2's ViTDet (export only): the encoder alone in the official names, as the
    /// released `mae_pretrain_vit_*.pth` its configs load (`{"model": encoder}`).
    Detectron2,
    /// mmsegmentation's `MAE` backbone (export only): the encoder renamed as its
    /// `tools/model_converters/beit2mmseg.py` does (numerics §0.9), a bare state dict; for a
    /// method whose own segmentation code loads the official names (ConvMAE), those.
    Mmseg,
    /// safetensors in any of the layouts above (detected from the keys).
    Safetensors,
}

/// The formats but the official one, by the name `--from` / `--to` take.
const BY_NAME: &[(&str, Format)] = &[
    ("mmselfsup", Format::Mmselfsup),
    ("mmpretrain", Format::Mmpretrain),
    ("timm", Format::Timm),
    ("detectron2", Format::Detectron2),
    ("mmseg", Format::Mmseg),
    ("safetensors", Format::Safetensors),
];

/// The format names `--from` / `--to` take: `official-METHOD` for every registered method
/// (the same format as `official`; a method's name reads better in scripts), then the others.
pub fn format_names() -> Vec<String> {
    let mut v = vec!["official".to_string()];
    v.extend(
        crate::registry::methods()
            .iter()
            .map(|m| format!("official-{}", m.name())),
    );
    v.extend(BY_NAME.iter().map(|(name, _)| name.to_string()));
    v
}

impl Format {
    pub fn parse(s: &str) -> Result<Self> {
        let official_of_a_method = s
            .strip_prefix("official-")
            .is_some_and(|m| crate::registry::method(m).is_ok());
        if s == "official" || official_of_a_method {
            return Ok(Self::Official);
        }
        BY_NAME
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "unknown checkpoint format `{s}`; known: {}",
                    format_names().join(", ")
                ))
            })
    }
    fn is_mm(self) -> bool {
        matches!(self, Self::Mmselfsup | Self::Mmpretrain)
    }
    /// Formats that hold the encoder alone.
    fn encoder_only(self) -> bool {
        matches!(self, Self::Timm | Self::Detectron2 | Self::Mmseg)
    }
    /// The entry `torch.save` puts the state dict under in this format's `.pth` files, if any.
    fn pth_key(self) -> Option<&'static str> {
        match self {
            Self::Official | Self::Detectron2 | Self::Safetensors => Some("model"),
            Self::Mmselfsup | Self::Mmpretrain => Some("state_dict"),
            Self::Timm | Self::Mmseg => None,
        }
    }
}

/// A checkpoint's state dict under official names: `.pth` (the `model` or `state_dict`
/// entry, else the top level) or safetensors; mm* names are mapped to official ones.
pub fn read_state_dict(path: &Path, format: Format) -> Result<StateDict> {
    if format == Format::Mmseg {
        return Err(Error::Usage(
            "--from mmseg: mmseg's layout is for export only; import the pretraining checkpoint it was converted from".into(),
        ));
    }
    StateDict::open(path, &Opening::for_format(path, format))
}

/// A state dict under the names the file has, every tensor read.
pub fn read_raw(path: &Path, format: Format) -> Result<HashMap<String, HostTensor>> {
    state_dict::read_raw(path, &Opening::for_format(path, format))
}

impl Opening {
    fn for_format(path: &Path, format: Format) -> Self {
        Self {
            safetensors: format == Format::Safetensors
                || path.extension().and_then(|e| e.to_str()) == Some("safetensors"),
            pth_key: if format.is_mm() {
                "state_dict"
            } else {
                "model"
            },
            mm: format.is_mm(),
        }
    }
}

/// Our state dict in `format`'s layout (the method's official names and shapes, then the mm
/// renames or timm's encoder selection), sorted by name.
pub fn to_format(
    tensors: &HashMap<String, HostTensor>,
    layout: &OfficialLayout,
    format: Format,
) -> Vec<(String, HostTensor)> {
    let mut v: Vec<(String, HostTensor)> = tensors
        .iter()
        .filter(|(k, _)| checkpoint::is_model_key(k))
        .map(|(k, t)| layout.to_official(k, t.clone()))
        .filter(|(k, _)| !format.encoder_only() || layout.is_encoder_key(k))
        .map(|(k, t)| {
            let name = if format.is_mm() {
                official_to_mm(&k)
            } else if format == Format::Mmseg && layout.mmseg_renames {
                official_to_mmseg(&k)
            } else {
                k
            };
            (name, t)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Write a pixmim checkpoint (for `export`), in `format`'s layout, with the official layout
/// of the method named in its metadata: a PyTorch `.pth` (`torch.save`'s format, the state
/// dict under the format's usual entry) when `out` ends in `.pth`, else safetensors.
pub fn export(checkpoint_path: &Path, format: Format, out: &Path) -> Result<usize> {
    let (tensors, meta) = checkpoint::read_safetensors(checkpoint_path)?;
    let layout = match meta.get("method") {
        Some(name) => crate::registry::method(name)
            .map_err(|e| Error::Checkpoint {
                path: checkpoint_path.into(),
                msg: format!("written by method `{name}`: {e}"),
            })?
            .official_layout(),
        None => OfficialLayout::PLAIN,
    };
    let v = to_format(&tensors, &layout, format);
    if out.extension().and_then(|e| e.to_str()) == Some("pth") {
        pth::write_pth(out, format.pth_key(), &v)?;
        return Ok(v.len());
    }
    let mut m = HashMap::from([("format".to_string(), "pt".to_string())]);
    if let Some(method) = meta.get("method") {
        m.insert("pixmim_method".into(), method.clone());
    }
    checkpoint::write_safetensors(out, &v, m)?;
    Ok(v.len())
}

/// Load `opts.tensors` (official names) into the composed method's model and write it as a
/// pixmim checkpoint. An encoder-only file gets a freshly initialised decoder; anything
/// else missing, extra or of the wrong shape is refused with the full list, before any
/// tensor's data is read.
pub fn import_into<M, F>(c: &Composed, opts: &ImportOptions, build: F) -> Result<ImportReport>
where
    M: AutodiffModule<RunBackend>,
    F: Fn(&DispatchDevice, u64) -> M,
{
    let device = DeviceSpec::NdArray.train_device()?;
    let fresh_model = build(&device, c.seed);
    let fresh_params = checkpoint::export_params(&fresh_model);
    let layout = c.method.official_layout();
    let file = &opts.tensors;
    let file_has_decoder = file.keys().any(|k| !layout.is_encoder_key(k));
    let mut wanted = Vec::new();
    let mut by_model_name = HashMap::new();
    let mut fresh = Vec::new();
    let mut missing = Vec::new();
    let mut used = std::collections::HashSet::new();
    for (ours, init) in &fresh_params {
        let (key, official_init) = layout.to_official(ours, init.clone());
        match file.shape(&key) {
            Some(shape) if shape == official_init.shape.as_slice() => {
                wanted.push((ours.clone(), key.clone()));
                used.insert(key);
            }
            Some(shape) => {
                missing.push(format!(
                    "`{key}` is {shape:?} in the file, {:?} in the model",
                    official_init.shape
                ));
                used.insert(key);
            }
            None if !file_has_decoder && !layout.is_encoder_key(&key) => {
                fresh.push(key);
                by_model_name.insert(ours.clone(), init.clone());
            }
            None => missing.push(format!("missing `{key}` {:?}", official_init.shape)),
        }
    }
    let mut ignored = Vec::new();
    let mut extra = Vec::new();
    for k in file.keys().filter(|k| !used.contains(*k)) {
        // timm-style classifier heads and fc_norm are not part of a MIM model.
        if k.starts_with("head.") || k.starts_with("fc_norm.") {
            ignored.push(k.clone());
        } else {
            extra.push(format!(
                "unexpected `{k}` {:?}",
                file.shape(k).unwrap_or(&[])
            ));
        }
    }
    if !missing.is_empty() || !extra.is_empty() {
        missing.sort();
        extra.sort();
        return Err(refusal(&opts.input, c, &missing, &extra));
    }
    // Only now is data read: the tensors the model takes, each of the model's own size.
    for (ours, key) in &wanted {
        let t = file.load(key)?;
        by_model_name.insert(ours.clone(), layout.to_pixmim(key, t));
    }
    let (model, _) = match checkpoint::import_params(fresh_model, &by_model_name, &opts.input) {
        Ok(r) => r,
        Err(Error::Checkpoint { msg, .. }) => {
            missing.push(msg);
            return Err(refusal(&opts.input, c, &missing, &extra));
        }
        Err(e) => return Err(e),
    };
    checkpoint::write_model(&opts.out, &model, c.method.name(), &c.table, 0)?;
    fresh.sort();
    ignored.sort();
    Ok(ImportReport {
        loaded: used.len(),
        fresh,
        ignored,
    })
}

fn refusal(input: &Path, c: &Composed, missing: &[String], extra: &[String]) -> Error {
    let mut all: Vec<String> = missing.to_vec();
    all.extend(extra.iter().cloned());
    Error::Checkpoint {
        path: input.into(),
        msg: format!(
            "does not fit {} ({}):\n  {}",
            c.method.name(),
            c.table
                .get("preset")
                .and_then(|v| v.as_str())
                .unwrap_or("custom"),
            all.join("\n  ")
        ),
    }
}
