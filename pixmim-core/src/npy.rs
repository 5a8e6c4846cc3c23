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
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = &b[start + hlen..];
    let n: usize = shape.iter().product();
    let values: Vec<f32> = if header.contains("'<f4'") {
        if data.len() < 4 * n {
            return Err(bad("truncated data"));
        }
        data.chunks_exact(4)
            .take(n)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if header.contains("'|u1'") {
        data.iter().take(n).map(|&v| v as f32).collect()
    } else {
        return Err(bad("dtype must be float32 ('<f4') or uint8"));
    };
    if values.len() != n {
        return Err(bad("truncated data"));
    }
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
