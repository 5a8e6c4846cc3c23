//! Checkpoints: one safetensors file per save, parameters under their official checkpoint
//! names and layout (Linear weights as PyTorch's (out, in)), optimiser moments under
//! `optim.*`, and the run state in the metadata. Written to a temporary file, fsynced and
//! renamed, so a crash mid-write leaves the previous checkpoint intact.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use safetensors::tensor::Dtype;

use crate::error::{Error, Result};

pub mod run;

/// A parameter as the checkpoint sees it.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub id: ParamId,
    /// Official-style key, e.g. `blocks.0.attn.qkv.weight`.
    pub name: String,
    /// Shape in burn's layout.
    pub shape: Vec<usize>,
    /// A `Linear` weight: burn stores (in, out), PyTorch (out, in).
    pub is_linear_weight: bool,
    pub is_layernorm: bool,
    pub require_grad: bool,
}

/// Modules whose field name is left out of their parameters' names: shared blocks holding
/// parameters the official code keeps at the model's top level, so that a method built from
/// them keeps the official names (`decoder_embed.weight`, not `decoder.decoder_embed.weight`).
/// burn names a module's container type `Struct:<name>`.
pub const TRANSPARENT: &[&str] = &["Struct:MaeDecoder"];

/// Path tracking shared by the visitor and the mapper.
#[derive(Default)]
struct PathStack {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }
    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }
    /// The field names down to the parameter, but those of [`TRANSPARENT`] modules (burn
    /// enters each field with the type that holds it: a field is left out when the next
    /// level's holder is transparent). burn's LayerNorm calls its affine parameters
    /// gamma/beta; PyTorch weight/bias.
    fn key(&self) -> String {
        let transparent = |i: usize| {
            self.containers
                .get(i + 1)
                .is_some_and(|c| TRANSPARENT.contains(&c.as_str()))
        };
        let mut parts: Vec<&str> = (0..self.names.len())
            .filter(|&i| !transparent(i))
            .map(|i| self.names[i].as_str())
            .collect();
        if self.is_layernorm() {
            if let Some(last) = parts.last_mut() {
                *last = match *last {
                    "gamma" => "weight",
                    "beta" => "bias",
                    other => other,
                };
            }
        }
        parts.join(".")
    }
    fn parent(&self) -> &str {
        self.containers.last().map(String::as_str).unwrap_or("")
    }
    fn is_layernorm(&self) -> bool {
        self.parent() == "Struct:LayerNorm"
    }
    fn is_linear_weight(&self) -> bool {
        self.parent() == "Struct:Linear" && self.names.last().map(String::as_str) == Some("weight")
    }
}

struct InfoVisitor {
    path: PathStack,
    out: Vec<ParamInfo>,
}

impl<B: Backend> ModuleVisitor<B> for InfoVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        self.out.push(ParamInfo {
            id: param.id,
            name: self.path.key(),
            shape: t.dims().to_vec(),
            is_linear_weight: self.path.is_linear_weight(),
            is_layernorm: self.path.is_layernorm(),
            require_grad: param.is_require_grad(),
        });
    }
}

/// Every float parameter of a module, in visiting order.
pub fn param_infos<B: Backend, M: Module<B>>(model: &M) -> Vec<ParamInfo> {
    let mut v = InfoVisitor {
        path: PathStack::default(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// (trainable, frozen) parameter counts.
pub fn count_params<B: Backend, M: Module<B>>(model: &M) -> (usize, usize) {
    param_infos(model).iter().fold((0, 0), |(t, f), p| {
        let n: usize = p.shape.iter().product();
        if p.require_grad {
            (t + n, f)
        } else {
            (t, f + n)
        }
    })
}

/// A host tensor in official layout.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn transpose2(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

struct ExportVisitor {
    path: PathStack,
    out: Vec<(String, HostTensor)>,
}

impl<B: Backend> ModuleVisitor<B> for ExportVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let mut shape = t.dims().to_vec();
        let mut data: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32 data");
        if self.path.is_linear_weight() {
            data = transpose2(&data, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        self.out.push((self.path.key(), HostTensor { shape, data }));
    }
}

/// All parameters under their official names and layout.
pub fn export_params<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, HostTensor)> {
    let mut v = ExportVisitor {
        path: PathStack::default(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

struct ImportMapper<'a> {
    path: PathStack,
    tensors: &'a HashMap<String, HostTensor>,
    used: Vec<String>,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for ImportMapper<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.path.key();
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let mut want: Vec<usize> = dims.to_vec();
        let linear = self.path.is_linear_weight();
        if linear {
            want.swap(0, 1);
        }
        let Some(src) = self.tensors.get(&key) else {
            self.problems.push(format!("missing `{key}` {want:?}"));
            return Param::from_mapped_value(id, tensor, mapper);
        };
        self.used.push(key.clone());
        if src.shape != want {
            self.problems.push(format!(
                "`{key}`: file has {:?}, model needs {want:?}",
                src.shape
            ));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let data = if linear {
            transpose2(&src.data, want[0], want[1])
        } else {
            src.data.clone()
        };
        let require_grad = tensor.is_require_grad();
        let mut t = Tensor::<B, D>::from_data(TensorData::new(data, dims), &tensor.device());
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Load parameters by official name. Missing keys and shape mismatches are refused with
/// the full list; keys in `tensors` that the model lacks are returned (callers decide).
pub fn import_params<B: Backend, M: Module<B>>(
    model: M,
    tensors: &HashMap<String, HostTensor>,
    source: &Path,
) -> Result<(M, Vec<String>)> {
    let mut m = ImportMapper {
        path: PathStack::default(),
        tensors,
        used: Vec::new(),
        problems: Vec::new(),
    };
    let model = model.map(&mut m);
    if !m.problems.is_empty() {
        return Err(Error::Checkpoint {
            path: source.to_path_buf(),
            msg: format!("does not fit this model:\n  {}", m.problems.join("\n  ")),
        });
    }
    let mut unused: Vec<String> = tensors
        .keys()
        .filter(|k| !m.used.contains(k))
        .cloned()
        .collect();
    unused.sort();
    Ok((model, unused))
}

/// Load a checkpoint's weights into `model`; every model parameter must be in the file with
/// its shape, and the file may hold nothing else but optimiser state and a trainable
/// target's parameters.
pub fn load_weights<B: Backend, M: Module<B>>(model: M, path: &Path) -> Result<M> {
    let (tensors, _) = read_safetensors(path)?;
    let params: HashMap<String, HostTensor> = tensors
        .into_iter()
        .filter(|(k, _)| is_model_key(k))
        .collect();
    let (model, unused) = import_params(model, &params, path)?;
    refuse_unused(path, &unused)?;
    Ok(model)
}

/// A file whose tensors the model did not all take was written for another model.
pub fn refuse_unused(path: &Path, unused: &[String]) -> Result<()> {
    if unused.is_empty() {
        return Ok(());
    }
    Err(Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!(
            "has tensors this model lacks (another method or preset?): {}",
            unused.join(", ")
        ),
    })
}

/// A trainable target's parameters as a checkpoint holds them (`target.*`, what its run
/// learnt), or `target` unchanged when it holds none (a fixed target's run, an import).
pub fn load_target_params<B: Backend, M: Module<B>>(target: M, path: &Path) -> Result<M> {
    let (tensors, _) = read_safetensors(path)?;
    let params: HashMap<String, HostTensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(TARGET_PREFIX)?.to_string(), v)))
        .collect();
    if params.is_empty() {
        return Ok(target);
    }
    Ok(import_params(target, &params, path)?.0)
}

/// Where a training checkpoint keeps a trainable target's parameters (`target.theta`).
pub const TARGET_PREFIX: &str = "target.";

/// Is this checkpoint tensor one of the model's parameters, not AdamW's moments (`optim.*`)
/// or a trainable target's parameters (`target.*`)? Loading weights, import and export
/// read only these.
pub fn is_model_key(key: &str) -> bool {
    !key.starts_with("optim.") && !key.starts_with(TARGET_PREFIX)
}

/// The `format` entry of every checkpoint pixmim writes.
pub const FORMAT: &str = "pixmim-checkpoint-v1";

/// The metadata of a checkpoint of run `config` (a method's resolved config) at `iteration`:
/// one place for every writer (training, import, fine-tuning).
pub fn run_metadata(
    method: &str,
    iteration: usize,
    config: &toml::Table,
) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("method".to_string(), method.to_string()),
        ("iteration".to_string(), iteration.to_string()),
        (
            "config".to_string(),
            toml::to_string(config).unwrap_or_default(),
        ),
    ])
}

/// A weights-only checkpoint (no optimiser state) at `path`, resumable as step `iteration`
/// with fresh AdamW moments: what `pixmim import` writes.
pub fn write_model<B: Backend, M: Module<B>>(
    path: &Path,
    model: &M,
    method: &str,
    config: &toml::Table,
    iteration: usize,
) -> Result<()> {
    write_safetensors(
        path,
        &export_params(model),
        run_metadata(method, iteration, config),
    )
}

/// Read every f32 tensor of a safetensors file, and its metadata.
pub fn read_safetensors(
    path: &Path,
) -> Result<(HashMap<String, HostTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Checkpoint {
            path: path.into(),
            msg: format!("not a safetensors file: {e:?}"),
        })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: path.into(),
        msg: format!("not a safetensors file: {e:?}"),
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => {
                return Err(Error::Checkpoint {
                    path: path.into(),
                    msg: format!("`{name}` has dtype {other:?}; only F32 is supported"),
                })
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Write tensors + metadata atomically: temp file, fsync, rename, fsync the folder.
///
/// The same tensors and metadata always give the same bytes (an export can be checksummed):
/// the header is written here with the metadata's keys and the tensors in name order, the
/// order the safetensors crate itself gives tensors of one dtype, where its own writer puts
/// the metadata map in hash order.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut order: Vec<&(String, HostTensor)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata: std::collections::BTreeMap<String, String> = metadata.into_iter().collect();
    let mut entries = vec![(
        "__metadata__".to_string(),
        serde_json::to_value(&metadata).expect("strings"),
    )];
    let mut offset = 0usize;
    for (name, t) in &order {
        if t.data.len() != t.shape.iter().product::<usize>() {
            return Err(Error::Training(format!(
                "tensor `{name}` holds {} values for shape {:?}",
                t.data.len(),
                t.shape
            )));
        }
        let end = offset + 4 * t.data.len();
        entries.push((
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        ));
        offset = end;
    }
    // serde_json's Map may keep insertion order or sort, depending on a feature another crate
    // can turn on: the text is joined here so the order is this function's either way.
    let mut text = String::from("{");
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(k).expect("a string"));
        text.push(':');
        text.push_str(&v.to_string());
    }
    text.push('}');
    // Data starts 8-aligned, the header padded with spaces as the safetensors writer does.
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut blob = Vec::with_capacity(8 + text.len() + offset);
    blob.extend((text.len() as u64).to_le_bytes());
    blob.extend(text.as_bytes());
    for (_, t) in &order {
        for v in &t.data {
            blob.extend(v.to_le_bytes());
        }
    }
    atomic_write(path, &blob)
}

/// Environment switch for crash tests: `PIXMIM_FAULT_ABORT_WRITE=step-00000004` aborts the
/// process in the middle of writing any file whose name contains that text.
pub const FAULT_ABORT_WRITE: &str = "PIXMIM_FAULT_ABORT_WRITE";

fn fault_abort_requested(path: &Path) -> bool {
    match (std::env::var(FAULT_ABORT_WRITE), path.file_name()) {
        (Ok(pat), Some(name)) if !pat.is_empty() => name.to_string_lossy().contains(&pat),
        _ => false,
    }
}

/// Write `bytes` to `path` so that a crash at any moment leaves either the old file or the
/// complete new one: temporary file in the same folder, fsync, rename, fsync the folder.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if fault_abort_requested(path) {
        // Fault injection (tests of crash safety): die half-way through the write, as a
        // power cut or SIGKILL would, without any chance to clean up.
        let _ = f.write_all(&bytes[..bytes.len() / 2]);
        let _ = f.sync_all();
        std::process::abort();
    }
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::HostInit;
    use crate::nn::BlockConfig;
    type B = burn::backend::Flex;

    #[test]
    fn names_follow_the_official_keys_and_round_trip() {
        let dev = Default::default();
        let cfg = BlockConfig {
            dim: 8,
            num_heads: 2,
            mlp_ratio: 4.0,
            ln_eps: 1e-6,
        };
        let blk = cfg.init::<B>(&mut HostInit::new(0), &dev);
        let names: Vec<String> = param_infos(&blk).into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.qkv.bias",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias"
            ]
        );
        let exported = export_params(&blk);
        let qkv = &exported
            .iter()
            .find(|(n, _)| n == "attn.qkv.weight")
            .unwrap()
            .1;
        assert_eq!(qkv.shape, vec![24, 8], "PyTorch (out, in) layout");
        let dir = std::env::temp_dir().join(format!("pixmim-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.safetensors");
        write_safetensors(&path, &exported, HashMap::from([("k".into(), "v".into())])).unwrap();
        let (tensors, meta) = read_safetensors(&path).unwrap();
        assert_eq!(meta["k"], "v");
        let fresh = cfg.init::<B>(&mut HostInit::new(99), &dev);
        let (loaded, unused) = import_params(fresh, &tensors, &path).unwrap();
        assert!(unused.is_empty());
        let a: Vec<f32> = loaded.attn.qkv.weight.val().into_data().to_vec().unwrap();
        let b: Vec<f32> = blk.attn.qkv.weight.val().into_data().to_vec().unwrap();
        assert_eq!(a, b);
        // A model of another width is refused, with the mismatches listed.
        let other = BlockConfig { dim: 4, ..cfg }.init::<B>(&mut HostInit::new(0), &dev);
        let err = import_params(other, &tensors, &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("attn.qkv.weight") && err.contains("[24, 8]"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
