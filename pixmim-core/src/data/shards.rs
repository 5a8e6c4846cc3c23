//! Tar shards in the WebDataset layout (`train-{000000..001023}.tar`, members `KEY.jpg` and
//! optionally `KEY.cls`) as a data source.
//!
//! A sample stays a pure function of (seed, step, index): every shard is indexed once (the
//! offset and size of each image member, its label), and an item is read by its offset, so the
//! sampler's global shuffle, resume and each rank reading only its own rows work as for image
//! folders. The index of a shard is cached (see [`super::cache_dir`]) keyed by its path, size and
//! modification time, so ranks and resumed runs skip the scan.
//!
//! Members are grouped by key as WebDataset does: the path up to the first dot of the file
//! name. A sample is a key with an image member (`jpg`, `jpeg` or `png`); its `cls` member, a
//! decimal class number, is the label. A set is labelled when every sample has one.
//!
//! A shard's damage becomes an item that cannot be read, so the run's `data.on_error` policy
//! applies as to a bad image file: a member cut short by the end of the shard, or a header that
//! fails its checksum (nothing after it in that shard can be found), each names the shard and
//! the member.
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::retry::{retry_io, RETRY_DELAYS};
use crate::error::{Error, Result};

/// Image members a sample is made of (the same as image folders').
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

const BLOCK: u64 = 512;
/// The largest label, long-name or pax member read into memory while indexing.
const MAX_META: u64 = 1 << 20;
const INDEX_MAGIC: &str = "pixmim-shard-index 1";

/// Is this `--data` value a shard set: a brace range, a glob, or a `.tar` file?
pub fn is_shard_spec(spec: &Path) -> bool {
    let s = spec.to_string_lossy();
    s.ends_with(".tar") || s.contains('{') || s.contains('*') || s.contains('?')
}

/// The shards a spec names, in order: brace ranges (`{000..127}`, zero padding kept) and
/// lists (`{a,b}`) expanded, then globs (`*`, `?`, `[...]`) matched in sorted order. A shard
/// a range names that does not exist is an error naming it.
pub fn expand(spec: &str) -> Result<Vec<PathBuf>> {
    let mut shards = Vec::new();
    for s in expand_braces(spec).map_err(|why| Error::data(spec, why))? {
        if s.contains(['*', '?', '[']) {
            let found = glob::glob(&s).map_err(|e| Error::data(spec, format!("bad glob: {e}")))?;
            let mut found: Vec<PathBuf> = found.filter_map(|p| p.ok()).collect();
            found.sort();
            shards.extend(found);
        } else {
            let p = PathBuf::from(&s);
            if !p.is_file() {
                return Err(Error::data(
                    &p,
                    format!("shard does not exist (from {spec})"),
                ));
            }
            shards.push(p);
        }
    }
    if shards.is_empty() {
        return Err(Error::data(spec, "no shard matches"));
    }
    Ok(shards)
}

/// Brace expansion, left to right: `{A..B}` with decimal bounds (padded to A's width when A
/// has a leading zero or both have the same width) and `{x,y,z}`.
pub fn expand_braces(s: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = s.find('{') else {
        return Ok(vec![s.to_string()]);
    };
    let close = s[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("unclosed '{{' at {open}"))?;
    let (head, body, tail) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
    let choices: Vec<String> = match body.split_once("..") {
        Some((a, b)) => {
            let parse = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("'{{{body}}}': '{v}' is not a number"))
            };
            let (lo, hi) = (parse(a)?, parse(b)?);
            if lo > hi {
                return Err(format!("'{{{body}}}' runs backwards"));
            }
            if hi - lo >= 10_000_000 {
                return Err(format!("'{{{body}}}' names too many shards"));
            }
            let width = if a.len() == b.len() || a.starts_with('0') {
                a.len()
            } else {
                0
            };
            (lo..=hi).map(|v| format!("{v:0width$}")).collect()
        }
        None => body.split(',').map(str::to_string).collect(),
    };
    let rest = expand_braces(tail)?;
    Ok(choices
        .iter()
        .flat_map(|c| rest.iter().map(move |r| format!("{head}{c}{r}")))
        .collect())
}

/// One sample of a shard: its image member and label.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedSample {
    /// The image member's path in the tar (`KEY.jpg`).
    pub member: String,
    pub offset: u64,
    pub len: u64,
    pub label: Option<u32>,
}

/// Where a shard cannot be read on: a member cut short, or a corrupt header.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// The member's name, or `header at byte N` when even its name is unknown.
    pub member: String,
    pub why: String,
}

/// What one shard holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardIndex {
    pub samples: Vec<IndexedSample>,
    pub fault: Option<Fault>,
}

/// The value of a numeric header field: octal text (spaces and NULs around it), or GNU's
/// base-256 for values that do not fit.
fn header_number(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |v, &b| {
                v.checked_mul(256)?.checked_add(u64::from(b))
            });
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Does the header's checksum (the sum of its bytes, the checksum field counted as spaces)
/// match? Old writers summed signed bytes; both are accepted.
fn checksum_ok(h: &[u8; 512]) -> bool {
    let Some(stored) = header_number(&h[148..156]) else {
        return false;
    };
    let spaces = 8 * u64::from(b' ');
    let unsigned: u64 = h[..148]
        .iter()
        .chain(&h[156..])
        .map(|&b| u64::from(b))
        .sum();
    let signed: i64 = h[..148]
        .iter()
        .chain(&h[156..])
        .map(|&b| i64::from(b as i8))
        .sum();
    stored == unsigned + spaces || stored as i64 == signed + spaces as i64
}

/// The `path` and `size` records of a pax extended header.
fn pax_records(data: &[u8]) -> (Option<String>, Option<u64>) {
    let (mut path, mut size) = (None, None);
    let mut rest = data;
    while let Some(space) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len <= space || len > rest.len() {
            break;
        }
        let record = String::from_utf8_lossy(&rest[space + 1..len]);
        let record = record.trim_end_matches('\n');
        if let Some((k, v)) = record.split_once('=') {
            match k {
                "path" => path = Some(v.to_string()),
                "size" => size = v.parse().ok(),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    (path, size)
}

/// A member's key and extension: `dir/a.b.jpg` -> (`dir/a`, `b.jpg`).
fn key_and_extension(member: &str) -> (&str, &str) {
    let base = member.rfind('/').map_or(0, |s| s + 1);
    match member[base..].find('.') {
        Some(dot) => (&member[..base + dot], &member[base + dot + 1..]),
        None => (member, ""),
    }
}

/// Scan a shard's headers (reading only labels and long names): its samples, in order, and
/// where it stops being readable. A label that is not a class number is an error naming it.
pub fn index_shard(path: &Path) -> Result<ShardIndex> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let read_at = |offset: u64, n: u64| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n as usize];
        retry_io(RETRY_DELAYS, || file.read_exact_at(&mut buf, offset))
            .map_err(|e| Error::io(path, e))?;
        Ok(buf)
    };
    let mut index = ShardIndex::default();
    // The sample being gathered: its key, image member and label.
    let mut key: Option<String> = None;
    let mut image: Option<(String, u64, u64)> = None;
    let mut label: Option<u32> = None;
    let flush = |index: &mut ShardIndex,
                 image: &mut Option<(String, u64, u64)>,
                 label: &mut Option<u32>| {
        if let Some((member, offset, len)) = image.take() {
            index.samples.push(IndexedSample {
                member,
                offset,
                len,
                label: *label,
            });
        }
        *label = None;
    };
    let (mut long_name, mut pax_size): (Option<String>, Option<u64>) = (None, None);
    let mut pos = 0u64;
    let mut last_member = String::from("the start");
    while pos < len {
        if pos + BLOCK > len {
            index.fault = Some(Fault {
                member: format!("header at byte {pos}"),
                why: format!(
                    "the shard ends inside a tar header ({len} bytes; truncated after {last_member})"
                ),
            });
            break;
        }
        let header: [u8; 512] = read_at(pos, BLOCK)?.try_into().expect("one block");
        if header.iter().all(|&b| b == 0) {
            break; // the end-of-archive marker
        }
        if !checksum_ok(&header) {
            index.fault = Some(Fault {
                member: format!("header at byte {pos}"),
                why: format!(
                    "corrupt tar header (checksum mismatch) after {last_member}: this and any later member of the shard cannot be read"
                ),
            });
            break;
        }
        let mut name = c_string(&header[..100]);
        if &header[257..262] == b"ustar" {
            let prefix = c_string(&header[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(n) = long_name.take() {
            name = n;
        }
        let size = match pax_size.take() {
            Some(s) => s,
            None => header_number(&header[124..136]).unwrap_or(u64::MAX),
        };
        let data = pos + BLOCK;
        let kind = header[156];
        if size > len.saturating_sub(data) {
            let (k, _) = key_and_extension(&name);
            if key.as_deref() != Some(k) {
                flush(&mut index, &mut image, &mut label);
            }
            index.fault = Some(Fault {
                member: name.clone(),
                why: format!(
                    "truncated shard: the member needs {size} bytes at byte {data}, the shard ends at {len}"
                ),
            });
            image = None;
            break;
        }
        let meta = |what: &str| -> Result<Vec<u8>> {
            if size > MAX_META {
                return Err(Error::data(
                    path,
                    format!("{what} {name} of {size} bytes (more than {MAX_META})"),
                ));
            }
            read_at(data, size)
        };
        match kind {
            b'L' => long_name = Some(c_string(&meta("GNU long name")?)),
            b'x' => {
                let (p, s) = pax_records(&meta("pax header")?);
                long_name = p;
                pax_size = s;
            }
            b'0' | b'\0' | b'7' => {
                let (k, ext) = key_and_extension(&name);
                if key.as_deref() != Some(k) {
                    flush(&mut index, &mut image, &mut label);
                    key = Some(k.to_string());
                }
                let ext = ext.to_ascii_lowercase();
                if IMAGE_EXTENSIONS.contains(&ext.as_str()) && image.is_none() {
                    image = Some((name.clone(), data, size));
                } else if ext == "cls" {
                    let text = meta("label")?;
                    let text = String::from_utf8_lossy(&text);
                    let value = text.trim().parse::<u32>().map_err(|_| {
                        Error::data(
                            format!("{}#{name}", path.display()),
                            format!("the label '{}' is not a class number", text.trim()),
                        )
                    })?;
                    label = Some(value);
                }
                last_member = name;
            }
            _ => {} // folders, links, global pax headers
        }
        pos = data + size.div_ceil(BLOCK) * BLOCK;
    }
    flush(&mut index, &mut image, &mut label);
    Ok(index)
}

/// A shard's identity for the cache: its size and modification time.
fn stamp(path: &Path) -> Result<(u64, u128)> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((m.len(), mtime))
}

impl ShardIndex {
    /// The index as text: a header with the shard's stamp, one `offset len label member` line
    /// per sample, and the fault.
    fn to_text(&self, (len, mtime): (u64, u128)) -> String {
        let mut s = format!("{INDEX_MAGIC}\n{len} {mtime}\n");
        for x in &self.samples {
            let label = x.label.map_or("-".to_string(), |l| l.to_string());
            s += &format!("s\t{}\t{}\t{label}\t{}\n", x.offset, x.len, x.member);
        }
        if let Some(f) = &self.fault {
            s += &format!("f\t{}\t{}\n", f.member, f.why.replace(['\n', '\t'], " "));
        }
        s
    }

    /// The index written by [`Self::to_text`] for a shard of this stamp; `None` when the file
    /// is another shard's version or unreadable.
    fn from_text(text: &str, stamp: (u64, u128)) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != INDEX_MAGIC || lines.next()? != format!("{} {}", stamp.0, stamp.1) {
            return None;
        }
        let mut index = ShardIndex::default();
        for line in lines {
            let mut f = line.splitn(5, '\t');
            match f.next()? {
                "s" => {
                    let offset = f.next()?.parse().ok()?;
                    let len = f.next()?.parse().ok()?;
                    let label = match f.next()? {
                        "-" => None,
                        l => Some(l.parse().ok()?),
                    };
                    let member = f.next()?.to_string();
                    index.samples.push(IndexedSample {
                        member,
                        offset,
                        len,
                        label,
                    });
                }
                "f" => {
                    let (member, why) = (f.next()?, f.next()?);
                    index.fault = Some(Fault {
                        member: member.to_string(),
                        why: why.to_string(),
                    });
                }
                _ => return None,
            }
        }
        Some(index)
    }

    /// The shard's index from `cache` when it is there for this version of the shard, else
    /// scanned and written there (a cache that cannot be written only costs the next start).
    pub fn load(shard: &Path, cache: Option<&Path>) -> Result<Self> {
        let Some(cache) = cache else {
            return index_shard(shard);
        };
        let stamp = stamp(shard)?;
        let file = super::cache_file(cache, "shards", shard, "idx");
        if let Some(index) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| Self::from_text(&t, stamp))
        {
            return Ok(index);
        }
        let index = index_shard(shard)?;
        super::write_cache(
            &file,
            index.to_text(stamp).as_bytes(),
            &format!("the index of {}", shard.display()),
        );
        Ok(index)
    }
}

/// Where item `i` of a shard set is: its shard, offset and size.
#[derive(Clone, Copy, Debug)]
struct Location {
    shard: u32,
    offset: u64,
    len: u64,
}

/// The items of a set of shards, readable by index.
#[derive(Debug)]
pub struct ShardSet {
    pub shards: Vec<PathBuf>,
    locations: Vec<Location>,
    /// Items that stand for a shard's damage: why they cannot be read.
    faults: HashMap<usize, String>,
}

/// What [`ShardSet::open`] lists: the set, each item's name (`SHARD#MEMBER`) and label.
pub struct Listing {
    pub set: ShardSet,
    pub names: Vec<PathBuf>,
    /// One per item when every sample has a label.
    pub labels: Option<Vec<usize>>,
}

impl ShardSet {
    /// Index every shard of `spec` (in parallel; from `cache` when it holds them).
    pub fn open(spec: &Path, cache: Option<&Path>) -> Result<Listing> {
        use rayon::prelude::*;
        let shards = expand(&spec.to_string_lossy())?;
        if shards.len() > u32::MAX as usize {
            return Err(Error::data(spec, "more shards than an index can hold"));
        }
        let indexes: Vec<ShardIndex> = shards
            .par_iter()
            .map(|s| ShardIndex::load(s, cache))
            .collect::<Result<_>>()?;
        let mut set = ShardSet {
            shards,
            locations: Vec::new(),
            faults: HashMap::new(),
        };
        let (mut names, mut labels) = (Vec::new(), Vec::new());
        let mut labelled = true;
        for (s, index) in indexes.iter().enumerate() {
            let shard = &set.shards[s];
            for x in &index.samples {
                set.locations.push(Location {
                    shard: s as u32,
                    offset: x.offset,
                    len: x.len,
                });
                names.push(PathBuf::from(format!("{}#{}", shard.display(), x.member)));
                labelled &= x.label.is_some();
                labels.push(x.label.unwrap_or(0) as usize);
            }
            if let Some(f) = &index.fault {
                set.faults.insert(set.locations.len(), f.why.clone());
                set.locations.push(Location {
                    shard: s as u32,
                    offset: 0,
                    len: 0,
                });
                names.push(PathBuf::from(format!("{}#{}", shard.display(), f.member)));
                labels.push(0);
            }
        }
        let labelled = labelled && set.faults.len() < names.len();
        Ok(Listing {
            set,
            names,
            labels: labelled.then_some(labels),
        })
    }

    /// The bytes of item `i` (`name` is its `SHARD#MEMBER`, for messages).
    pub fn bytes(&self, i: usize, name: &Path) -> Result<Vec<u8>> {
        if let Some(why) = self.faults.get(&i) {
            return Err(Error::data(name, why.clone()));
        }
        let at = self.locations[i];
        let shard = &self.shards[at.shard as usize];
        let mut buf = vec![0u8; at.len as usize];
        retry_io(RETRY_DELAYS, || {
            std::fs::File::open(shard)?.read_exact_at(&mut buf, at.offset)
        })
        .map_err(|e| Error::io(name, e))?;
        Ok(buf)
    }

    /// Items, damaged ones included.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }
}
