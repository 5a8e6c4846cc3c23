//! Issue 8, bad data: every odd file decodes to upright 8-bit RGB or is refused with its path;
//! `data.on_error = "skip"` trains past the refused ones, listing each once.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use pixmim::config::OnError;
use pixmim::data::decode::{decode, Encoded};
use pixmim::data::loader::{make_batch, BatchRows, Source};
use pixmim::data::{BadFiles, Dataset};
use pixmim::device::DeviceSpec;
use pixmim::job::TrainOptions;
use pixmim::registry::{compose, Composed, Request};
use pixmim::traits::EncodedImage;
use pixmim_tests::corpus::write_corpus;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pixmim-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn composed(plugins: &[&str], sets: &[String]) -> Composed {
    compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        plugins: plugins.iter().map(|s| s.to_string()).collect(),
        sets: sets.to_vec(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn odd_files_decode_upright_to_8_bit_rgb_and_bad_ones_name_their_path() {
    let dir = tmp("decode");
    let corpus = write_corpus(&dir);
    for (path, dims) in &corpus.good {
        let img = decode(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.dimensions(), *dims, "{}", path.display());
        // What the data workers read: the size before decoding, the same pixels after.
        let encoded = Encoded::new(path, std::fs::read(path).unwrap(), true).unwrap();
        assert_eq!(encoded.size(), *dims, "{}", path.display());
        assert!(*encoded.image().unwrap() == img, "{}", path.display());
    }
    // EXIF orientation 6 turns the red left half into the top half.
    let rot = decode(&dir.join("exif_rotated.jpg")).unwrap();
    let top = rot.get_pixel(10, 5);
    let bottom = rot.get_pixel(10, 35);
    assert!(top[0] > 180 && top[2] < 80, "top should be red: {top:?}");
    assert!(
        bottom[2] > 180 && bottom[0] < 80,
        "bottom should be blue: {bottom:?}"
    );
    // CMYK (0, 200, 200, 0) is a red; 16-bit grey is scaled, not truncated.
    let cmyk = decode(&dir.join("cmyk.jpg")).unwrap();
    let px = cmyk.get_pixel(16, 12);
    assert!(
        px[0] > 150 && px[1] < 120 && px[2] < 120,
        "CMYK red: {px:?}"
    );
    let g16 = decode(&dir.join("gray16.png")).unwrap();
    let (a, b) = (g16.get_pixel(10, 0)[0], g16.get_pixel(29, 0)[0]);
    assert!(
        (a as i32 - 78).abs() <= 1 && (b as i32 - 226).abs() <= 1,
        "{a} {b}"
    );
    for path in &corpus.bad {
        let encoded = std::fs::read(path)
            .map_err(|e| pixmim::Error::io(path, e))
            .and_then(|bytes| Encoded::new(path, bytes, true))
            .and_then(|enc| enc.image().map(|_| ()));
        let e = encoded.expect_err("must be refused");
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        let e = decode(path).expect_err("must be refused");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .contains(&*path.file_name().unwrap().to_string_lossy()),
            "{e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn batches(source: &Source, c: &Composed, iterations: usize) -> Vec<pixmim::Result<()>> {
    let mut cache = None;
    (0..iterations)
        .map(|it| {
            make_batch(
                source,
                &c.parts,
                0,
                &BatchRows::all(source.dataset.len()),
                it,
                false,
                &mut cache,
            )
            .map(|b| {
                assert!(b.images.data.iter().all(|v| v.is_finite()));
            })
        })
        .collect()
}

#[test]
fn skip_lists_each_bad_file_once_and_fail_names_it() {
    let dir = tmp("policy");
    let corpus = write_corpus(&dir.join("data"));
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    for plugins in [&[][..], &["pixmim"][..]] {
        let c = composed(plugins, &[]);
        let _ = std::fs::remove_file(out.join("bad_files.txt"));
        let source = Source {
            dataset: Dataset::open(&dir.join("data")).unwrap(),
            on_error: OnError::Skip,
            bad: Arc::new(BadFiles::open(&out).unwrap()),
            scaled_decode: true,
        };
        // Every image (good and bad) is drawn in each of 3 epochs, through RRC or SRC.
        for r in batches(&source, &c, 3) {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(source.bad.count(), corpus.bad.len());
        let listed = std::fs::read_to_string(out.join("bad_files.txt")).unwrap();
        let mut listed: Vec<&str> = listed
            .lines()
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        listed.sort();
        let mut expected: Vec<String> =
            corpus.bad.iter().map(|p| p.display().to_string()).collect();
        expected.sort();
        assert_eq!(listed, expected, "each bad file listed exactly once");

        // The same run resumed knows its bad files: nothing is listed twice.
        let again = BadFiles::open(&out).unwrap();
        assert_eq!(again.count(), corpus.bad.len());

        let strict = Source::strict(Dataset::open(&dir.join("data")).unwrap());
        let errors: Vec<String> = batches(&strict, &c, 1)
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(
            corpus
                .bad
                .iter()
                .any(|p| errors[0].contains(&p.display().to_string())),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].contains("on_error"),
            "says how to skip: {}",
            errors[0]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 40: the corpus packed into tar shards. Each bad member is listed once as
/// `SHARD#MEMBER` under `skip` and named under `fail`, as the files are; a shard cut inside a
/// member and a shard with a corrupt header each become an item that cannot be read, named by
/// the shard and the member (or the header's offset), under the same policy.
#[test]
fn bad_members_and_damaged_shards_are_named_under_the_data_policy() {
    use pixmim::data::pack::{pack, PackOptions};
    use pixmim::data::shards::index_shard;
    let dir = tmp("shards");
    let corpus = write_corpus(&dir.join("data"));
    let folder = Dataset::open(&dir.join("data")).unwrap();
    let packed = pack(
        &folder,
        &PackOptions {
            out: dir.join("shards"),
            prefix: "c".into(),
            per_shard: 4,
            shuffle_seed: None,
        },
    )
    .unwrap();
    assert!(packed.shards.len() >= 3);
    // Cut the last shard halfway through its last member that has bytes.
    let last = packed.shards.last().unwrap();
    let mut samples = index_shard(last).unwrap().samples;
    samples.retain(|s| s.len > 1);
    let cut = samples.pop().unwrap();
    let bytes = std::fs::read(last).unwrap();
    std::fs::write(last, &bytes[..(cut.offset + cut.len / 2) as usize]).unwrap();
    // Flip a byte in the name of the first shard's second member.
    let first = &packed.shards[0];
    let second = index_shard(first).unwrap().samples[1].clone();
    let mut bytes = std::fs::read(first).unwrap();
    let header = (second.offset - 512) as usize;
    bytes[header] ^= 1;
    std::fs::write(first, &bytes).unwrap();

    let shards = Dataset::open(std::path::Path::new(&packed.spec)).unwrap();
    let truncated = format!("{}#{}", last.display(), cut.member);
    let corrupt = format!("{}#header at byte {header}", first.display());
    let names: Vec<String> = shards
        .items
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        names.contains(&truncated) && names.contains(&corrupt),
        "{names:?}"
    );
    // Bad: the two damaged places, and the corpus's bad files (member KEY = folder index).
    let mut expected: Vec<&String> = names
        .iter()
        .filter(|n| {
            let member = n.rsplit('#').next().unwrap();
            let key = member.split('.').next().unwrap().parse::<usize>();
            **n == truncated
                || **n == corrupt
                || key.is_ok_and(|k| corpus.bad.contains(&folder.items[k]))
        })
        .collect();
    expected.sort();
    assert!(expected.len() >= 4, "{expected:?}");

    let c = composed(&[], &[]);
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let source = Source {
        dataset: shards.clone(),
        on_error: OnError::Skip,
        bad: Arc::new(BadFiles::open(&out).unwrap()),
        scaled_decode: true,
    };
    for r in batches(&source, &c, 3) {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    let listed = std::fs::read_to_string(out.join("bad_files.txt")).unwrap();
    let reasons: HashMap<&str, &str> = listed
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .collect();
    let mut got: Vec<&str> = reasons.keys().copied().collect();
    got.sort();
    assert_eq!(got, expected, "each bad member listed exactly once");
    assert_eq!(listed.lines().count(), expected.len());
    assert!(reasons[truncated.as_str()].contains("truncated shard"));
    assert!(reasons[corrupt.as_str()].contains("corrupt tar header"));

    let strict = Source::strict(shards);
    let error = batches(&strict, &c, 1)
        .into_iter()
        .find_map(|r| r.err())
        .expect("fail stops at a bad member")
        .to_string();
    assert!(
        expected.iter().any(|n| error.contains(n.as_str())),
        "{error}"
    );
    assert!(error.contains("on_error"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_folder_of_only_bad_files_is_an_error_not_a_hang() {
    let dir = tmp("allbad");
    let corpus = write_corpus(&dir.join("all"));
    for (p, _) in &corpus.good {
        std::fs::remove_file(p).unwrap();
    }
    let c = composed(&[], &[]);
    let source = Source {
        dataset: Dataset::open(&dir.join("all")).unwrap(),
        on_error: OnError::Skip,
        bad: Arc::new(BadFiles::in_memory()),
        scaled_decode: true,
    };
    let e = batches(&source, &c, 1).remove(0).unwrap_err().to_string();
    assert!(e.contains("no readable image"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn training_with_skip_counts_bad_files_in_the_metrics() {
    let dir = tmp("train");
    let corpus = write_corpus(&dir.join("data"));
    let out = dir.join("run");
    let sets = vec![
        format!("data.path={:?}", dir.join("data").display().to_string()),
        "data.on_error=\"skip\"".to_string(),
        "train.steps=3".into(),
        "train.batch_size=12".into(),
    ];
    let c = composed(&[], &sets);
    let opts = TrainOptions {
        out: out.clone(),
        device: DeviceSpec::NdArray,
        replicas: vec![],
        resume: false,
        progress: false,
        stop_after: None,
        group: None,
    };
    let s = c.train(&opts).unwrap();
    assert_eq!(s.losses.len(), 3);
    let last: HashMap<String, serde_json::Value> = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["bad_files"], corpus.bad.len());
    assert_eq!(
        std::fs::read_to_string(out.join("bad_files.txt"))
            .unwrap()
            .lines()
            .count(),
        corpus.bad.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 24: partial downloads of real photos (baseline JPEG, the same photo re-encoded as a
/// progressive JPEG, PNG) are refused wherever they are cut, naming the file and why; the whole
/// files decode as the `image` crate decodes them (PNG exactly, JPEG within 4 levels), trailing
/// bytes or not.
#[test]
fn photos_cut_anywhere_are_refused_and_whole_ones_decode_as_before() {
    let dir = tmp("cuts");
    std::fs::create_dir_all(&dir).unwrap();
    let samples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let astronaut = std::fs::read(samples.join("astronaut.jpg")).unwrap();
    let progressive = pixmim_tests::corpus::progressive_jpeg(
        &image::load_from_memory(&astronaut).unwrap().into_rgb8(),
    );
    let files = [
        ("baseline.jpg", astronaut),
        ("progressive.jpg", progressive),
        (
            "coins.png",
            std::fs::read(samples.join("coins.png")).unwrap(),
        ),
        (
            "camera.png",
            std::fs::read(samples.join("camera.png")).unwrap(),
        ),
    ];
    for (name, full) in &files {
        let whole = dir.join(name);
        std::fs::write(&whole, full).unwrap();
        // The `image` crate's decoders, as an independent reading: PNG's pixels are exact;
        // its JPEG decoder (zune-jpeg) rounds its IDCT and upsampling otherwise than
        // libjpeg-turbo (Pillow's decoder, which pixmim uses), by a few levels at most.
        let reference = image::load_from_memory(full).unwrap().into_rgb8();
        let before = decode(&whole).unwrap();
        assert_eq!(before.dimensions(), reference.dimensions(), "{name}");
        let tolerance = if name.ends_with(".jpg") { 4 } else { 0 };
        let worst = before
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| a.abs_diff(*b))
            .max();
        assert!(
            worst <= Some(tolerance),
            "{name}: {worst:?} levels from the image crate's"
        );
        let mut tail = full.clone();
        tail.extend_from_slice(b"\0appended by a downloader\0");
        std::fs::write(&whole, &tail).unwrap();
        assert_eq!(
            decode(&whole).unwrap(),
            before,
            "{name} with trailing bytes"
        );

        // Inside the header, then about 10%, 33%, 50%, 90% of the bytes, and one byte short.
        for cut in [
            20,
            full.len() / 10,
            full.len() / 3,
            full.len() / 2,
            full.len() * 9 / 10,
            full.len() - 1,
        ] {
            let path = dir.join(format!("cut{cut}_{name}"));
            std::fs::write(&path, &full[..cut]).unwrap();
            let e =
                decode(&path).expect_err(&format!("{name} cut at {cut} of {} bytes", full.len()));
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(msg.contains(&format!("cut{cut}_{name}")), "{msg}");
            assert!(msg.contains("truncated") || msg.contains("decode"), "{msg}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
