//! TensorBoard event files (`events.out.tfevents.*`), written beside every `metrics.jsonl` so a
//! run folder opens in TensorBoard as the official MAE code's do.
//!
//! The format, written here directly (no crate for it is kept up): a sequence of records, each
//! `u64 length (LE) | masked CRC32C of those 8 bytes | data | masked CRC32C of data`, the data
//! an `Event` protobuf. The first event holds `file_version = "brain.Event:2"`; the others a
//! `Summary` with one `Value { tag, simple_value }` per scalar, or `Value { tag, image }` with
//! an encoded PNG, or a `SessionLog` START where a run resumes. Field numbers from tensorflow's `event.proto` and `summary.proto`.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as the record format uses.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The record format's masked CRC: rotated right by 15 bits, plus a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// One record around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

/// Protobuf field writers (wire types: 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// An `Event` with its wall time and step, and either a file version or a summary.
fn event(step: i64, file_version: Option<&str>, summary: Option<&[u8]>) -> Vec<u8> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut e = Vec::new();
    key(&mut e, 1, 1); // wall_time: double
    e.extend_from_slice(&wall.to_le_bytes());
    key(&mut e, 2, 0); // step: int64
    varint(&mut e, step as u64);
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if let Some(s) = summary {
        bytes_field(&mut e, 5, s);
    }
    e
}

/// `Summary { value: [Value { tag, simple_value }] }`.
fn scalar_summary(tag: &str, value: f32) -> Vec<u8> {
    let mut v = Vec::new();
    bytes_field(&mut v, 1, tag.as_bytes());
    key(&mut v, 2, 5); // simple_value: float
    v.extend_from_slice(&value.to_le_bytes());
    let mut s = Vec::new();
    bytes_field(&mut s, 1, &v);
    s
}

/// `Summary { value: [Value { tag, image: Image { height, width, colorspace, png } }] }`.
fn image_summary(tag: &str, (height, width, channels): (u32, u32, u32), png: &[u8]) -> Vec<u8> {
    let mut img = Vec::new();
    key(&mut img, 1, 0);
    varint(&mut img, height as u64);
    key(&mut img, 2, 0);
    varint(&mut img, width as u64);
    key(&mut img, 3, 0);
    varint(&mut img, channels as u64);
    bytes_field(&mut img, 4, png);
    let mut v = Vec::new();
    bytes_field(&mut v, 1, tag.as_bytes());
    bytes_field(&mut v, 4, &img);
    let mut s = Vec::new();
    bytes_field(&mut s, 1, &v);
    s
}

/// An event file in a run folder, flushed after every write so a killed run keeps its curves.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` (a resumed run starts another; TensorBoard reads them all).
    pub fn create(dir: &Path) -> Result<Self> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "pixmim".into());
        let name = format!("events.out.tfevents.{secs}.{host}.{}", std::process::id());
        let path = dir.join(name);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = Self {
            path,
            file: BufWriter::new(file),
        };
        w.write(&event(0, Some("brain.Event:2"), None))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `SessionLog { status: START }` at `step`: the run (re)starts there, so TensorBoard
    /// drops the events of earlier files at that step and after (its purge of orphaned data),
    /// as a resume logs them again.
    pub fn session_start(&mut self, step: i64) -> Result<()> {
        let mut e = event(step, None, None);
        let mut log = Vec::new();
        key(&mut log, 1, 0); // SessionLog.status
        varint(&mut log, 1); // START
        bytes_field(&mut e, 7, &log); // Event.session_log
        self.write(&e)
    }

    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        self.write(&event(step, None, Some(&scalar_summary(tag, value as f32))))
    }

    /// A PNG image (`(height, width, channels)` as encoded).
    pub fn image(&mut self, tag: &str, step: i64, hwc: (u32, u32, u32), png: &[u8]) -> Result<()> {
        self.write(&event(step, None, Some(&image_summary(tag, hwc, png))))
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let path = &self.path;
        self.file
            .write_all(&record(data))
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published CRC32C check values (RFC 3720 B.4; the "123456789" check value).
    #[test]
    fn crc32c_matches_the_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    /// A record is length, its masked CRC, the data and its masked CRC; and a scalar event
    /// decodes field by field as the protobuf wire format says.
    #[test]
    fn records_frame_the_data_and_events_encode_their_fields() {
        let r = record(b"abc");
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
        let s = scalar_summary("loss", 0.5);
        // Summary.value (1, len) -> Value.tag (1, "loss"), simple_value (2, fixed32).
        let mut want = vec![0x0A, 11, 0x0A, 4];
        want.extend_from_slice(b"loss");
        want.push(0x15);
        want.extend_from_slice(&0.5f32.to_le_bytes());
        assert_eq!(s, want);
        let e = event(300, None, Some(&s));
        assert_eq!(e[0], 0x09); // wall_time
        assert_eq!(&e[9..12], &[0x10, 0xAC, 0x02]); // step 300 as a varint
        assert_eq!(e[12], 0x2A); // summary
        assert_eq!(&e[14..], &s[..]);
    }
}
