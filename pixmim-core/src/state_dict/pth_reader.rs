//! Reading PyTorch checkpoints (`torch.save`'s zip format) without PyTorch: the pickle is
//! interpreted by [`super::pickle`] (nothing in it runs), the state dict is found in it, and
//! only then are tensors read, each from its storage entry by offset.
//!
//! Nothing the file declares is trusted: every storage must be a stored (uncompressed) zip
//! entry, as torch.save writes them, holding at least `numel x itemsize` bytes; every tensor
//! must lie inside its storage; and the tensors of a state dict are listed with their shapes
//! before any data is read, so a caller can refuse a file that does not fit its model (or
//! holds more than a budget of values) without allocating what it declares.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::pickle::{self, Dtype, Node, Pickle, TensorRef, V};
use crate::checkpoint::HostTensor;
use crate::error::{Error, Result};

/// Largest `data.pkl` read: a ViT-H checkpoint with its optimizer state has well under 1 MiB.
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most tensors (and nested dict levels) a state dict may list.
const MAX_ENTRIES: usize = 100_000;
const MAX_DEPTH: usize = 8;

/// A `.pth` file's state dict: names and tensor views, no data read yet.
pub struct PthStateDict {
    path: PathBuf,
    /// The zip's folder (`archive/`, or the name torch.save gave it).
    prefix: String,
    zip: zip::ZipArchive<BufReader<File>>,
    pub tensors: BTreeMap<String, TensorRef>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.into(),
        msg: msg.into(),
    }
}

impl PthStateDict {
    /// Open `path` and list the tensors of its `key` entry (`model`, `state_dict`), or of the
    /// whole file when it has no such entry. Nested dicts give dotted names.
    pub fn open(path: &Path, key: &str) -> Result<Self> {
        if !path.exists() {
            return Err(Error::data(path, "does not exist"));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            bad(
                path,
                format!("cannot read as a PyTorch checkpoint (torch.save's zip format): {e}"),
            )
        })?;
        let pkl = zip
            .file_names()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| bad(path, "has no data.pkl: not a file torch.save wrote"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let bytes = {
            let entry = zip
                .by_name(&pkl)
                .map_err(|e| bad(path, format!("{pkl}: {e}")))?;
            if entry.size() > MAX_PICKLE_BYTES {
                return Err(bad(
                    path,
                    format!(
                        "{pkl} declares {} bytes; a checkpoint's has far fewer",
                        entry.size()
                    ),
                ));
            }
            let mut b = Vec::new();
            entry
                .take(MAX_PICKLE_BYTES + 1)
                .read_to_end(&mut b)
                .map_err(|e| bad(path, format!("{pkl}: {e}")))?;
            b
        };
        let pk = pickle::parse(&bytes).map_err(|e| bad(path, format!("{pkl}: {e}")))?;
        let root = match pk.node(&pk.root) {
            Some(Node::Dict(items)) => items
                .iter()
                .find(|(k, v)| matches!(k, V::Str(s) if &**s == key) && is_dict(&pk, v))
                .map(|(_, v)| v.clone())
                .unwrap_or(pk.root.clone()),
            _ => return Err(bad(path, "holds no dict of tensors (a state dict)")),
        };
        let mut tensors = BTreeMap::new();
        let mut visited = 0;
        collect(&pk, &root, "", 0, &mut visited, &mut tensors).map_err(|m| bad(path, m))?;
        let mut dict = Self {
            path: path.into(),
            prefix,
            zip,
            tensors,
        };
        dict.check_storages()?;
        Ok(dict)
    }

    fn entry_name(&self, t: &TensorRef) -> String {
        format!("{}data/{}", self.prefix, t.storage.key)
    }

    /// Every storage exists as a stored entry holding its declared values.
    fn check_storages(&mut self) -> Result<()> {
        let file_len = std::fs::metadata(&self.path)
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        let refs: Vec<(String, TensorRef)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (name, t) in refs {
            let entry_name = self.entry_name(&t);
            let need = t.storage.numel.checked_mul(t.storage.dtype.size() as u64);
            let entry = match self.zip.by_name(&entry_name) {
                Ok(e) => e,
                Err(_) => {
                    return Err(bad(
                        &self.path,
                        format!("`{name}`: its storage `{entry_name}` is missing from the archive (a download cut short?)"),
                    ))
                }
            };
            if entry.compression() != zip::CompressionMethod::Stored {
                return Err(bad(
                    &self.path,
                    format!("`{name}`: storage `{entry_name}` is compressed; torch.save stores them as they are"),
                ));
            }
            let have = entry.size();
            match need {
                Some(need) if have >= need && have <= file_len => {}
                _ => {
                    return Err(bad(
                        &self.path,
                        format!(
                            "`{name}`: storage `{entry_name}` holds {have} bytes, but {} {:?} values need {}",
                            t.storage.numel,
                            t.storage.dtype,
                            need.map_or("more than 2^64".into(), |n| n.to_string())
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Values the listed tensors hold, in total.
    pub fn total_values(&self) -> u64 {
        self.tensors
            .values()
            .fold(0u64, |a, t| a.saturating_add(t.numel()))
    }

    /// Read tensor `name` as f32 (float and integer storages are converted).
    pub fn load(&mut self, name: &str) -> Result<HostTensor> {
        let t = self
            .tensors
            .get(name)
            .cloned()
            .ok_or_else(|| bad(&self.path, format!("has no tensor `{name}`")))?;
        let size = t.storage.dtype.size() as u64;
        let (first, end) = t.span();
        let entry_name = self.entry_name(&t);
        let path = self.path.clone();
        let mut entry = self
            .zip
            .by_name(&entry_name)
            .map_err(|e| bad(&path, format!("`{name}`: {entry_name}: {e}")))?;
        // Checked in `open`: the span lies inside the storage, which the entry holds.
        std::io::copy(&mut (&mut entry).take(first * size), &mut std::io::sink())
            .map_err(|e| bad(&path, format!("`{name}`: {entry_name}: {e}")))?;
        let want = ((end - first) * size) as usize;
        let mut raw = Vec::new();
        (&mut entry)
            .take(want as u64)
            .read_to_end(&mut raw)
            .map_err(|e| bad(&path, format!("`{name}`: {entry_name}: {e}")))?;
        if raw.len() != want {
            return Err(bad(
                &path,
                format!(
                    "`{name}`: storage `{entry_name}` ends early ({} of {want} bytes)",
                    raw.len()
                ),
            ));
        }
        let values = decode(&raw, t.storage.dtype);
        let numel = t.numel() as usize;
        let contiguous = t
            .shape
            .iter()
            .zip(&t.stride)
            .rev()
            .try_fold(1u64, |expect, (&d, &s)| {
                (d <= 1 || s == expect).then_some(expect * d as u64)
            })
            .is_some();
        let data = if contiguous {
            values[..numel].to_vec()
        } else {
            strided(&values, &t.shape, &t.stride, numel)
        };
        Ok(HostTensor {
            shape: t.shape.clone(),
            data,
        })
    }
}

fn is_dict(pk: &Pickle, v: &V) -> bool {
    matches!(pk.node(v), Some(Node::Dict(_)))
}

/// Tensors under `v`, nested dicts as dotted names; anything else (an epoch number, the
/// optimizer's integer-keyed state, argparse's Namespace) is passed over.
fn collect(
    pk: &Pickle,
    v: &V,
    prefix: &str,
    depth: usize,
    visited: &mut usize,
    out: &mut BTreeMap<String, TensorRef>,
) -> std::result::Result<(), String> {
    let Some(Node::Dict(items)) = pk.node(v) else {
        return Ok(());
    };
    for (k, v) in items {
        *visited += 1;
        if *visited > MAX_ENTRIES {
            return Err(format!("lists more than {MAX_ENTRIES} entries"));
        }
        let V::Str(k) = k else { continue };
        let name = format!("{prefix}{k}");
        match pk.node(v) {
            Some(Node::Tensor(t)) if out.insert(name.clone(), t.clone()).is_some() => {
                return Err(format!("lists `{name}` twice"));
            }
            Some(Node::Tensor(_)) => {}
            Some(Node::Dict(_)) if depth < MAX_DEPTH => {
                collect(pk, v, &format!("{name}."), depth + 1, visited, out)?
            }
            Some(Node::Dict(_)) => {
                return Err(format!("nests dicts deeper than {MAX_DEPTH} at `{name}`"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn decode(raw: &[u8], dtype: Dtype) -> Vec<f32> {
    fn each<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect()
    }
    match dtype {
        Dtype::F32 => each(raw, f32::from_le_bytes),
        Dtype::F64 => each(raw, |b| f64::from_le_bytes(b) as f32),
        Dtype::F16 => each(raw, |b| half_to_f32(u16::from_le_bytes(b))),
        Dtype::BF16 => each(raw, |b: [u8; 2]| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
        }),
        Dtype::I64 => each(raw, |b| i64::from_le_bytes(b) as f32),
        Dtype::I32 => each(raw, |b| i32::from_le_bytes(b) as f32),
        Dtype::I16 => each(raw, |b| i16::from_le_bytes(b) as f32),
        Dtype::I8 => each(raw, |b: [u8; 1]| b[0] as i8 as f32),
        Dtype::U8 | Dtype::Bool => each(raw, |b: [u8; 1]| b[0] as f32),
    }
}

/// IEEE half to single, subnormals included.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f * 2^-24.
            let v = f as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Gather a strided view (`values` start at the view's offset) in row-major order.
fn strided(values: &[f32], shape: &[usize], stride: &[u64], numel: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        let at: u64 = index.iter().zip(stride).map(|(&i, &s)| i as u64 * s).sum();
        out.push(values[at as usize]);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_and_strides_decode_as_pytorch_does() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
        assert!(half_to_f32(0x7c00).is_infinite());
        // A (2, 3) tensor stored transposed: stride (1, 2) over [0..6).
        let v: Vec<f32> = (0..6).map(|i| i as f32).collect();
        assert_eq!(strided(&v, &[2, 3], &[1, 2], 6), [0., 2., 4., 1., 3., 5.]);
    }
}
