//! Minimal `.npy` (format 1.0, little-endian, C order) for float32 (and uint8 input) arrays:
//! what `pixmim target` reads and writes.
use std::path::Path;

use crate::error::{Error, Result};

/// Read a `<f4` or `|u1` array as f32 values with its shape.
pub fn read(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: &str| Error::data(path, format!("not a supported .npy file: {m}"));
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("missing the NUMPY magic"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        _ => return Err(bad("unknown format version")),
    };
    let header = std::str::from_utf8(
        b.get(start..start + hlen)
            .ok_or_else(|| bad("truncated header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order is not supported"));
    }
    let dims: Vec<&str> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|_| bad(&format!("shape entry `{d}` is not a size")))
        })
        .collect::<Result<_>>()?;
    if shape.is_empty() || shape.len() > 8 {
        return Err(bad(&format!(
            "shape {shape:?}: an image array has 1 to 8 dimensions"
        )));
    }
    if shape.contains(&0) {
        return Err(bad(&format!("shape {shape:?} holds no values")));
    }
    let item = if header.contains("'<f4'") {
        4
    } else if header.contains("'|u1'") {
        1
    } else {
        return Err(bad("dtype must be float32 ('<f4') or uint8"));
    };
    let data = &b[start + hlen..];
    // Sizes from the header are checked against the file before anything is allocated.
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(item).is_some_and(|bytes| bytes <= data.len()))
        .ok_or_else(|| {
            bad(&format!(
                "shape {shape:?} needs more than the {} bytes of data the file holds (truncated?)",
                data.len()
            ))
        })?;
    let values: Vec<f32> = if item == 4 {
        data.chunks_exact(4)
            .take(n)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.iter().take(n).map(|&v| v as f32).collect()
    };
    Ok((shape, values))
}

/// Write a float32 array.
pub fn write(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in values {
        out.extend(v.to_le_bytes());
    }
    crate::checkpoint::atomic_write(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("pixmim-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        write(&p, &[2, 3, 4], &v).unwrap();
        assert_eq!(read(&p).unwrap(), (vec![2, 3, 4], v));
        std::fs::write(dir.join("b.npy"), b"hello").unwrap();
        let e = read(&dir.join("b.npy")).unwrap_err();
        assert!(e.to_string().contains("b.npy") && e.exit_code() == 2, "{e}");
        // Headers whose sizes are zero, overflow, or exceed the data: refused, nothing
        // allocated from them.
        for (shape, why) in [
            ("(3, 0, 8)", "holds no values"),
            ("(3, 4294967296, 4294967296)", "needs more than"),
            ("(4611686018427387904, 8)", "needs more than"),
            ("(2, x)", "is not a size"),
        ] {
            let header =
                format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
            let mut f = b"\x93NUMPY\x01\x00".to_vec();
            f.extend((header.len() as u16).to_le_bytes());
            f.extend(header.as_bytes());
            f.extend([0u8; 96]);
            let c = dir.join("c.npy");
            std::fs::write(&c, &f).unwrap();
            let e = read(&c).unwrap_err().to_string();
            assert!(e.contains("c.npy") && e.contains(why), "{shape}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
