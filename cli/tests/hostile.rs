//! Issue 38: hostile and faulty inputs, made here (no binary blobs in the repo) and handed to
//! the real binary. Each is refused with exit 2 and a message naming the file and what is
//! wrong (or, for a folder with link loops, trained on with every image once), within a time
//! far above what it takes, with a peak RSS under 1 GiB (the child's own, from wait4), and
//! without writing anything but under --out.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{ok, tmp};

const GIB_KIB: i64 = 1 << 20;

struct Ran {
    code: i32,
    said: String,
    peak_rss_kib: i64,
}

/// Run `pixmim ARGS` to its end (killed after `limit`, which fails the test), with its peak
/// resident memory as the kernel counts it for the child alone.
fn run_measured(args: &[&str], limit: Duration) -> Ran {
    let mut child = common::command()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pixmim");
    let pid = child.id() as libc::pid_t;
    let mut readers = Vec::new();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    for mut pipe in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
        readers.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        }));
    }
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_err() {
            // SAFETY: signalling our own child, not yet reaped (wait4 below reaps it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return true;
        }
        false
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it for this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let _ = done.send(());
    let killed = killer.join().unwrap();
    let said: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(!killed, "{args:?} ran past {limit:?}: {said}");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::mem::forget(child); // reaped above
    Ran {
        code,
        said,
        peak_rss_kib: usage.ru_maxrss,
    }
}

/// Refused: exit 2, the message names the file and holds `why`, peak RSS under 1 GiB.
fn refused(args: &[&str], file: &Path, why: &str) {
    let r = run_measured(args, Duration::from_secs(600));
    let name = file.file_name().unwrap().to_string_lossy();
    assert_eq!(r.code, 2, "{args:?}: {}", r.said);
    assert!(
        r.said.contains(&*name),
        "{args:?} does not name {name}: {}",
        r.said
    );
    assert!(
        r.said.contains(why),
        "{args:?} does not say `{why}`: {}",
        r.said
    );
    assert!(
        r.peak_rss_kib < GIB_KIB,
        "{args:?} peaked at {} MiB",
        r.peak_rss_kib / 1024
    );
}

/// Everything under `dir`, relative: to check that a refused command wrote nothing.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

// A torch.save file, written op by op (protocol 2), with the entries given.

fn long(v: u64) -> Vec<u8> {
    let mut b = vec![0x8a, 8];
    b.extend(v.to_le_bytes());
    b
}

fn string(s: &str) -> Vec<u8> {
    let mut b = vec![b'X'];
    b.extend((s.len() as u32).to_le_bytes());
    b.extend(s.as_bytes());
    b
}

fn tuple(values: &[u64]) -> Vec<u8> {
    let mut b = vec![b'('];
    for &v in values {
        b.extend(long(v));
    }
    b.push(b't');
    b
}

/// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), 0, shape, stride, ...)`.
fn tensor(key: &str, numel: u64, shape: &[u64]) -> Vec<u8> {
    let mut stride = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    let mut b = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    b.extend(string("storage"));
    b.extend(b"ctorch\nFloatStorage\n");
    b.extend(string(key));
    b.extend(string("cpu"));
    b.extend(long(numel));
    b.extend([b't', b'Q']);
    b.extend(long(0));
    b.extend(tuple(shape));
    b.extend(tuple(&stride));
    b.extend([0x89, b')', b't', b'R']);
    b
}

/// `{"model": {name: tensor, ...}}`.
fn state_dict_pickle(tensors: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0x80, 2, b'}'];
    b.extend(string("model"));
    b.push(b'}');
    for (name, t) in tensors {
        b.extend(string(name));
        b.extend(t);
        b.push(b's');
    }
    b.extend([b's', b'.']);
    b
}

/// A zip's `archive/data/NAME` entries.
type Entries<'a> = Vec<(&'a str, Vec<u8>)>;

fn torch_zip(path: &Path, pickle: &[u8], entries: &[(&str, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    for (name, bytes) in entries {
        z.start_file(format!("archive/data/{name}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

fn import(input: &Path, out: &Path) -> Vec<String> {
    [
        "import",
        "--from",
        "official-mae",
        "--method",
        "mae",
        "--preset",
        "tiny",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Items 1-3: `.pth` files with missing or short storages, a huge declared tensor, deep
/// nesting, a memo bomb and an opcode torch.save never writes; and safetensors whose header
/// lies. None imports, none allocates what it declares, none writes its --out.
#[test]
fn crafted_checkpoints_are_refused_without_allocating_what_they_declare() {
    let dir = tmp("hostile-pth");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("never.safetensors");
    let cls = tensor("0", 192, &[1, 1, 192]);
    // (file name, data.pkl, storage entries, what the refusal says)
    type Case<'a> = (&'a str, Vec<u8>, Entries<'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing.pth",
            state_dict_pickle(&[("cls_token", cls.clone())]),
            vec![],
            "`cls_token`: its storage `archive/data/0` is missing from the archive",
        ),
        (
            "short.pth",
            state_dict_pickle(&[("cls_token", cls.clone())]),
            vec![("0", vec![0u8; 100])],
            "holds 100 bytes, but 192 F32 values need 768",
        ),
        (
            // About 700 bytes declaring a 10^6 x 10^6 tensor (4 TB of float32).
            "huge.pth",
            state_dict_pickle(&[(
                "cls_token",
                tensor("0", 1_000_000_000_000, &[1_000_000, 1_000_000]),
            )]),
            vec![("0", vec![0u8; 16])],
            "need 4000000000000",
        ),
        (
            // 2 MB of nested lists under the state dict's key.
            "deep.pth",
            {
                let mut p = vec![0x80, 2, b'}'];
                p.extend(string("model"));
                p.extend(std::iter::repeat_n(b'(', 1_000_000));
                p.extend(std::iter::repeat_n(b'l', 1_000_000));
                p.extend([b's', b'.']);
                p
            },
            vec![],
            "missing `cls_token`",
        ),
        (
            // A "billion laughs": 10 references per level, 40 levels, under the state dict.
            "laughs.pth",
            {
                let mut p = vec![0x80, 2, b'}'];
                p.extend(string("model"));
                p.extend([b'}']);
                p.extend(string("x"));
                p.extend([b']', b'q', 0]);
                for level in 1..40u8 {
                    // POP the level below (it stays in the memo), make the next.
                    p.extend([b'0', b']', b'q', level, b'(']);
                    p.extend((0..10).flat_map(|_| [b'h', level - 1]));
                    p.push(b'e');
                }
                p.extend([b's', b's', b'.']);
                p
            },
            vec![],
            "missing `cls_token`",
        ),
        (
            // INST calls a class by name: refused, never run.
            "opcode.pth",
            b"\x80\x02(cos\nsystem\nX\x04\x00\x00\x00truei__builtin__\nlist\n.".to_vec(),
            vec![],
            "is not one torch.save writes",
        ),
    ];
    for (name, pickle, entries, why) in cases {
        let input = dir.join(name);
        torch_zip(&input, &pickle, &entries);
        let before = listing(&dir);
        refused(&args(&import(&input, &out)), &input, why);
        assert_eq!(listing(&dir), before, "{name}: nothing written");
    }

    // safetensors: a header longer than the file, and offsets past the data.
    let st = dir.join("lying.safetensors");
    let mut b = (1u64 << 40).to_le_bytes().to_vec();
    b.extend(b"{}");
    std::fs::write(&st, &b).unwrap();
    refused(&args(&import(&st, &out)), &st, "not a safetensors file");
    let header = br#"{"cls_token":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header);
    b.extend([0u8; 64]);
    std::fs::write(&st, &b).unwrap();
    refused(&args(&import(&st, &out)), &st, "not a safetensors file");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 4: `.npy` and IDX headers whose sizes are zero or overflow, and a gzip bomb: exit 2
/// naming the file, bounded memory, no hang, nothing written.
#[test]
fn crafted_arrays_and_idx_files_are_refused() {
    let dir = tmp("hostile-arrays");
    std::fs::create_dir_all(&dir).unwrap();
    let npy = |name: &str, shape: &str| {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        f.extend((header.len() as u16).to_le_bytes());
        f.extend(header.as_bytes());
        f.extend([0u8; 64]);
        let p = dir.join(name);
        std::fs::write(&p, f).unwrap();
        p
    };
    let y = dir.join("y.npy");
    for (name, shape, why) in [
        ("empty.npy", "(3, 0, 8)", "holds no values"),
        (
            "wraps.npy",
            "(3, 4294967296, 4294967296)",
            "needs more than",
        ),
    ] {
        let x = npy(name, shape);
        let a = [
            "target",
            "--generator",
            "lowpass",
            "--input",
            x.to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
        ];
        refused(&a, &x, why);
        assert!(!y.exists());
    }

    let idx = |name: &str, dims: [u32; 3], zeros: usize| {
        let mut b = vec![0, 0, 8, 3];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&b).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..zeros >> 20 {
            enc.write_all(&chunk).unwrap();
        }
        let p = dir.join(name);
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        p
    };
    let run = dir.join("run");
    for (file, why) in [
        (
            idx("over-images-idx3-ubyte.gz", [4, 1 << 31, 1 << 31], 0),
            "overflow",
        ),
        (
            idx("zero-images-idx3-ubyte.gz", [0, 28, 28], 0),
            "holds no images",
        ),
        // 1.5 GiB of zeros (about 1.5 MiB gzipped) behind a header that declares 16 bytes.
        (
            idx("bomb-images-idx3-ubyte.gz", [1, 4, 4], 3 << 29),
            "holds more bytes",
        ),
    ] {
        let a = common::train_tiny_args(&run, 1, &["--data", file.to_str().unwrap()]);
        refused(&args(&a), &file, why);
        assert!(!run.exists(), "a refused run creates no folder");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 5: an image folder with `ln -s . loop` and a link to its parent trains on each image
/// once, says how many links it skipped, and ends.
#[test]
fn a_folder_with_link_loops_lists_each_image_once() {
    let dir = tmp("hostile-links");
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    for name in ["astronaut.jpg", "brick.jpg"] {
        std::fs::copy(samples.join(name), data.join(name)).unwrap();
    }
    std::fs::copy(samples.join("astronaut.jpg"), data.join("sub/again.jpg")).unwrap();
    std::os::unix::fs::symlink(".", data.join("loop")).unwrap();
    std::os::unix::fs::symlink("..", data.join("sub/up")).unwrap();
    let run = dir.join("run");
    let a = common::train_tiny_args(
        &run,
        2,
        &[
            "--data",
            data.to_str().unwrap(),
            "--set",
            "train.batch_size=3",
            "--set",
            "train.image_every=0",
            "--set",
            "train.log_every=1",
        ],
    );
    let r = run_measured(&args(&a), Duration::from_secs(600));
    assert_eq!(r.code, 0, "{}", r.said);
    assert!(r.said.contains("skipped 2 link(s)"), "{}", r.said);
    // Three images: one iteration per epoch of batch 3, so the second step starts epoch 1
    // (a listing that repeated the images would make more iterations per epoch).
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(v["epoch"].as_f64(), Some(1.0), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Items 6, 10, 11, 12 and 15: `eval linear --out` on a training run is refused and leaves
/// its metrics whole; `eval knn` does not serve cached features of replaced images; a second
/// writer on a run folder is refused naming the first; a damaged newest checkpoint is moved
/// aside and the run resumes from the one before; two exports of one checkpoint are the
/// same bytes.
#[test]
fn run_folders_keep_one_writer_and_survive_a_damaged_checkpoint() {
    let dir = tmp("hostile-run");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    // The tiny run, checkpoints every 2 steps and all kept, for `steps` (and `more`).
    let train = |steps: usize, more: &[&str]| {
        let mut extra = vec![
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "train.keep_checkpoints=100000",
            "--set",
            "train.image_every=0",
        ];
        extra.extend_from_slice(more);
        common::train_tiny_args(&run, steps, &extra)
    };
    ok(&args(&train(4, &[])));
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let ck4 = run.join("checkpoints/step-00000004.safetensors");
    let ck2 = run.join("checkpoints/step-00000002.safetensors");

    // 6: another job's folder.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let labelled = dir.join("labelled");
    for (i, name) in ["astronaut.jpg", "brick.jpg", "camera.png", "coffee.jpg"]
        .iter()
        .enumerate()
    {
        let class = labelled.join(["a", "b"][i % 2]);
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(samples.join(name), class.join(name)).unwrap();
    }
    let l = labelled.to_str().unwrap();
    let o = common::pixmim(&[
        "eval",
        "linear",
        "--checkpoint",
        ck4.to_str().unwrap(),
        "--data",
        l,
        "--val-data",
        l,
        "--out",
        r,
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::text(&o));
    assert!(
        common::text(&o).contains("pixmim train"),
        "{}",
        common::text(&o)
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);

    // 12: the feature cache sees an image replaced in place (the folder's time unchanged).
    let knn = [
        "eval",
        "knn",
        "--checkpoint",
        ck4.to_str().unwrap(),
        "--data",
        l,
        "--val-data",
        l,
        "--k",
        "1",
    ];
    // (The same folder is both splits: the second split of a run reads the first's cache.)
    let cached = format!("features of {l}: cached");
    assert_eq!(ok(&knn).matches(&cached).count(), 1);
    assert_eq!(
        ok(&knn).matches(&cached).count(),
        2,
        "the second run reads the cache"
    );
    let photo = labelled.join("a/astronaut.jpg");
    let folder_time = std::fs::metadata(labelled.join("a"))
        .unwrap()
        .modified()
        .unwrap();
    image::open(&photo).unwrap().fliph().save(&photo).unwrap();
    assert_eq!(
        std::fs::metadata(labelled.join("a"))
            .unwrap()
            .modified()
            .unwrap(),
        folder_time
    );
    let said = ok(&knn);
    assert_eq!(
        said.matches(&cached).count(),
        1,
        "stale features for a replaced image: {said}"
    );

    // 15: the same checkpoint exported twice, by two processes.
    let (e1, e2) = (dir.join("e1.safetensors"), dir.join("e2.safetensors"));
    for e in [&e1, &e2] {
        ok(&[
            "export",
            "--to",
            "timm",
            ck4.to_str().unwrap(),
            "--out",
            e.to_str().unwrap(),
        ]);
    }
    assert_eq!(std::fs::read(&e1).unwrap(), std::fs::read(&e2).unwrap());

    // 10: a second writer while the first holds the folder.
    let mut first = common::command()
        .args(train(100000, &["--resume"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = run.join(".pixmim.lock");
    let holder = format!("pid {}", first.id());
    while !std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .contains(&holder)
    {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first writer ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = common::pixmim(&args(&train(8, &["--resume"])));
    let said = common::text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&holder) && said.contains("another process"),
        "{said}"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // 11: the newest checkpoint damaged (a disk that filled): passed over, kept aside.
    for (_, p) in pixmim::checkpoint::run::list_checkpoints(&run).unwrap() {
        if p != ck2 && p != ck4 {
            std::fs::remove_file(p).unwrap();
        }
    }
    let bytes = std::fs::read(&ck4).unwrap();
    std::fs::write(&ck4, &bytes[..bytes.len() / 2]).unwrap();
    let said = ok(&args(&train(6, &["--resume"])));
    assert!(
        said.contains("resuming from") && said.contains("step-00000002"),
        "{said}"
    );
    assert!(
        said.contains("step-00000004.safetensors cannot be resumed from"),
        "{said}"
    );
    let aside = run.join("checkpoints/step-00000004.safetensors.corrupt");
    assert_eq!(std::fs::read(&aside).unwrap(), &bytes[..bytes.len() / 2]);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(text.contains("\"corrupt_checkpoints\""), "{text}");
    assert!(run.join("checkpoints/step-00000006.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
