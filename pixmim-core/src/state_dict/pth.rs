//! Writing PyTorch checkpoints (`torch.save`'s zip format) without PyTorch, so an export is a
//! file `torch.load`, detectron2 and mmseg take as it is.
//!
//! The file is what `torch.save({key: OrderedDict(state_dict)}, path)` writes: a zip with
//! `archive/data.pkl` (a protocol-2 pickle whose tensors are rebuilt by
//! `torch._utils._rebuild_tensor_v2` from persistent ids
//! `('storage', torch.FloatStorage, id, 'cpu', numel)`), one raw little-endian float32 file per
//! tensor under `archive/data/`, and `archive/byteorder` / `archive/version`.
use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use crate::checkpoint::HostTensor;
use crate::error::{Error, Result};

/// The pickle opcodes used (protocol 2).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEMS: u8 = b'u';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const NEWFALSE: u8 = 0x89;
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn str(&mut self, s: &str) {
        self.0.push(op::BINUNICODE);
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        if v < 256 {
            self.0.extend([op::BININT1, v as u8]);
        } else if v < 65536 {
            self.0.push(op::BININT2);
            self.0.extend((v as u16).to_le_bytes());
        } else if v < i32::MAX as usize {
            self.0.push(op::BININT);
            self.0.extend((v as i32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, a zero byte keeps it positive.
            let mut b = (v as u64).to_le_bytes().to_vec();
            while b.len() > 1 && b[b.len() - 1] == 0 && b[b.len() - 2] & 0x80 == 0 {
                b.pop();
            }
            self.0.extend([op::LONG1, b.len() as u8]);
            self.0.extend(b);
        }
    }
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(op::GLOBAL);
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn tuple_of(&mut self, values: &[usize]) {
        self.0.push(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.0.push(op::TUPLE);
    }
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.extend([op::EMPTY_TUPLE, op::REDUCE]);
    }
    /// `_rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())`.
    fn tensor(&mut self, storage: &str, shape: &[usize]) {
        let numel: usize = shape.iter().product();
        let mut stride = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(op::MARK);
        self.0.push(op::MARK);
        self.str("storage");
        self.global("torch", "FloatStorage");
        self.str(storage);
        self.str("cpu");
        self.int(numel);
        self.0.extend([op::TUPLE, op::BINPERSID]);
        self.int(0);
        self.tuple_of(shape);
        self.tuple_of(&stride);
        self.0.push(op::NEWFALSE);
        self.empty_ordered_dict();
        self.0.extend([op::TUPLE, op::REDUCE]);
    }
}

/// Write `{key: OrderedDict(tensors)}`, or the `OrderedDict` itself when `key` is `None`, as
/// `torch.save` does (tensors in the given order).
pub fn write_pth(path: &Path, key: Option<&str>, tensors: &[(String, HostTensor)]) -> Result<()> {
    let mut p = Pickle(vec![op::PROTO, 2]);
    if let Some(key) = key {
        p.0.extend([op::EMPTY_DICT, op::MARK]);
        p.str(key);
    }
    p.empty_ordered_dict();
    p.0.push(op::MARK);
    for (i, (name, t)) in tensors.iter().enumerate() {
        p.str(name);
        p.tensor(&i.to_string(), &t.shape);
    }
    p.0.push(op::SETITEMS); // the state dict's entries
    if key.is_some() {
        p.0.push(op::SETITEMS); // {key: state_dict}
    }
    p.0.push(op::STOP);

    let bytes = || -> std::io::Result<Vec<u8>> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        // torch.save stores every entry uncompressed and 64-byte aligned (mmap-able).
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .with_alignment(64);
        z.start_file("archive/data.pkl", opts)?;
        z.write_all(&p.0)?;
        z.start_file("archive/byteorder", opts)?;
        z.write_all(b"little")?;
        for (i, (_, t)) in tensors.iter().enumerate() {
            let large = t.data.len() * 4 >= u32::MAX as usize;
            z.start_file(format!("archive/data/{i}"), opts.large_file(large))?;
            let raw: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            z.write_all(&raw)?;
        }
        z.start_file("archive/version", opts)?;
        z.write_all(b"3\n")?;
        Ok(z.finish()?.into_inner())
    };
    let bytes = bytes().map_err(|e| Error::io(path, e))?;
    crate::checkpoint::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written here reads back through the `.pth` reader (the one `pixmim
    /// import` uses) with the same names, shapes and values, including a tensor of more than
    /// 65,536 values and a scalar-shaped one.
    #[test]
    fn a_written_pth_reads_back_through_the_pytorch_reader() {
        let dir = std::env::temp_dir().join(format!("pixmim-pth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.pth");
        let t = |shape: Vec<usize>, k: f32| HostTensor {
            data: (0..shape.iter().product::<usize>())
                .map(|i| i as f32 * k)
                .collect(),
            shape,
        };
        let tensors = vec![
            (
                "blocks.0.attn.qkv.weight".to_string(),
                t(vec![300, 240], 0.5),
            ),
            ("cls_token".to_string(), t(vec![1, 1, 8], -1.0)),
            ("norm.bias".to_string(), t(vec![8], 2.0)),
        ];
        write_pth(&path, Some("model"), &tensors).unwrap();
        let back = crate::interop::read_raw(&path, crate::interop::Format::Official).unwrap();
        assert_eq!(back.len(), 3);
        for (name, want) in &tensors {
            let got = &back[name];
            assert_eq!(got.shape, want.shape, "{name}");
            assert_eq!(got.data, want.data, "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn big_integers_use_long1() {
        let mut p = Pickle(Vec::new());
        p.int(3_000_000_000);
        assert_eq!(p.0, [op::LONG1, 5, 0x00, 0x5e, 0xd0, 0xb2, 0x00]);
        let mut p = Pickle(Vec::new());
        p.int(70_000);
        assert_eq!(p.0, [op::BININT, 0x70, 0x11, 0x01, 0x00]);
    }
}
