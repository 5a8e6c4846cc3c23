//! `pixmim eval` and `pixmim analyze` on small generated data: output contracts (the last
//! lines checks parse), caching, files written, and that the numbers mean what they say.
mod common;
use std::path::{Path, PathBuf};

use common::{ok, pixmim, text, tmp, train_tiny};
use pixmim::data::idx::IdxImages;

/// Two classes a random encoder already separates: dark and bright noisy 28x28 images.
fn write_idx(dir: &Path, split: &str, n: usize, seed: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut pics = Vec::new();
    let mut labels = Vec::new();
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    for i in 0..n {
        let class = (i % 2) as u8;
        pics.push(image::GrayImage::from_fn(28, 28, |_, _| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let noise = (s % 40) as u8;
            image::Luma([if class == 0 { 20 + noise } else { 190 + noise }])
        }));
        labels.push(class);
    }
    let p = dir.join(format!("{split}-images-idx3-ubyte"));
    IdxImages::write(&p, &pics, &labels).unwrap();
    p
}

/// A one-step tiny checkpoint (weights barely trained: the evaluations must still run).
fn checkpoint(dir: &Path, data: &Path, plugin: Option<&str>) -> PathBuf {
    let mut args = vec![
        "--data",
        data.to_str().unwrap(),
        "--set",
        "train.batch_size=4",
    ];
    if let Some(p) = plugin {
        args.extend(["--plugin", p]);
    }
    let o = train_tiny(dir, 1, &args);
    assert!(o.status.success(), "{}", text(&o));
    dir.join("checkpoints/step-00000001.safetensors")
}

fn last_line(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// A temporary folder with dark-vs-bright train and validation IDX files of the given sizes
/// and seeds, and a one-step tiny checkpoint trained on the train split: (root, train, val,
/// checkpoint).
fn labelled_run(
    name: &str,
    (n_train, n_val): (usize, usize),
    (train_seed, val_seed): (u32, u32),
) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let root = tmp(name);
    let train = write_idx(&root.join("data"), "train", n_train, train_seed);
    let val = write_idx(&root.join("data"), "t10k", n_val, val_seed);
    let ck = checkpoint(&root.join("run"), &train, None);
    (root, train, val, ck)
}

/// `pixmim eval finetune` of `ck` on whole 28 px images, then `extra`.
fn finetune(
    ck: &Path,
    train: &Path,
    val: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "eval",
        "finetune",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--crop-pct",
        "1.0",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    pixmim(&args)
}

/// [`labelled_run`] on 16 + 8 images, fine-tuned for one epoch (it classifies the validation
/// images all right): (root, val, pretrained checkpoint, fine-tuned classifier).
fn finetuned_classifier(name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (root, train, val, ck) = labelled_run(name, (16, 8), (8, 9));
    let ft = root.join("ft");
    let o = finetune(
        &ck,
        &train,
        &val,
        &ft,
        &["--epochs", "1", "--warmup-epochs", "0", "--batch", "8"],
    );
    assert!(o.status.success(), "{}", text(&o));
    (root, val, ck, ft.join("finetuned.safetensors"))
}

/// `top1=NN.NN%` -> NN.NN
fn percent(s: &str, key: &str) -> f64 {
    let v = s
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("{key} in {s}"));
    v.split('%').next().unwrap().parse().unwrap()
}

#[test]
fn knn_and_linear_probe_on_idx_files_with_a_feature_cache() {
    let root = tmp("eval-knn");
    let train = write_idx(&root.join("data"), "train", 40, 1);
    let val = write_idx(&root.join("data"), "t10k", 20, 2);
    let ck = checkpoint(&root.join("run"), &train, None);
    let ck_s = ck.to_str().unwrap();
    let common = [
        "--checkpoint",
        ck_s,
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        val.to_str().unwrap(),
        "--crop-pct",
        "1.0",
    ];

    let mut args = vec!["eval", "knn"];
    args.extend(common);
    args.extend(["--k", "5"]);
    let o = pixmim(&args);
    assert!(o.status.success(), "{}", text(&o));
    let line = last_line(&o);
    let shape = line.len() > 20
        && line.starts_with("top1=")
        && line.contains("%  top5=")
        && line.ends_with('%');
    assert!(shape, "last line: {line}");
    assert!(
        percent(&line, "top1") >= 90.0,
        "dark vs bright must separate: {line}"
    );
    assert_eq!(percent(&line, "top5"), 100.0, "two classes: {line}");
    // Computed once: the second run reads both splits from the cache and agrees.
    let o2 = pixmim(&args);
    assert_eq!(text(&o2).matches(": cached").count(), 2, "{}", text(&o2));
    assert_eq!(last_line(&o2), line);
    // Both splits packed into tar shards in order (labels as `.cls` members): the same line.
    let shards = |split: &Path, name: &str| {
        let out = root.join(name);
        let o = pixmim(&[
            "shards",
            "--data",
            split.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--per-shard",
            "7",
            "--in-order",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("2 classes as .cls members"),
            "{}",
            text(&o)
        );
        out.join("train-*.tar").display().to_string()
    };
    let (train_shards, val_shards) = (shards(&train, "train-shards"), shards(&val, "val-shards"));
    let o3 = pixmim(&[
        "eval",
        "knn",
        "--checkpoint",
        ck_s,
        "--data",
        &train_shards,
        "--val-data",
        &val_shards,
        "--crop-pct",
        "1.0",
        "--k",
        "5",
    ]);
    assert!(o3.status.success(), "{}", text(&o3));
    assert_eq!(last_line(&o3), line, "shards evaluate as the IDX files");

    let metrics = root.join("probe");
    let mut args = vec!["eval", "linear"];
    args.extend(common);
    let m = metrics.to_str().unwrap();
    args.extend([
        "--epochs",
        "6",
        "--warmup-epochs",
        "1",
        "--batch",
        "8",
        "--optimizer",
        "sgd",
        "--out",
        m,
    ]);
    let o = pixmim(&args);
    assert!(o.status.success(), "{}", text(&o));
    let line = last_line(&o);
    assert!(
        line.starts_with("top1=") && line.ends_with('%') && !line.contains("top5"),
        "{line}"
    );
    assert!(percent(&line, "top1") >= 90.0, "{line}");
    let log = std::fs::read_to_string(metrics.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6, "{log}");
    // The printed value is the best epoch's.
    let best = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["top1"]
                .as_f64()
                .unwrap()
        })
        .fold(0.0, f64::max);
    assert!(
        (percent(&line, "top1") - 100.0 * best).abs() < 0.006,
        "{line} vs {best}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn eval_refuses_unlabelled_data_and_bad_flags_naming_them() {
    let root = tmp("eval-bad");
    let train = write_idx(&root.join("data"), "train", 8, 3);
    let ck = checkpoint(&root.join("run"), &train, None);
    // An IDX file without its labels file.
    let unlabelled = root.join("u");
    std::fs::create_dir_all(&unlabelled).unwrap();
    let lone = unlabelled.join("x-images-idx3-ubyte");
    std::fs::copy(&train, &lone).unwrap();
    let o = pixmim(&[
        "eval",
        "knn",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        lone.to_str().unwrap(),
        "--val-data",
        train.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("x-images-idx3-ubyte") && text(&o).contains("no labels"),
        "{}",
        text(&o)
    );
    let o = pixmim(&[
        "eval",
        "linear",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--data",
        train.to_str().unwrap(),
        "--val-data",
        train.to_str().unwrap(),
        "--optimizer",
        "adam",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--optimizer"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn finetune_trains_the_encoder_and_a_head_and_leaves_the_decoder() {
    let (root, train, val, ck) = labelled_run("eval-ft", (16, 8), (4, 5));
    let out = root.join("ft");
    let o = finetune(
        &ck,
        &train,
        &val,
        &out,
        &["--epochs", "2", "--warmup-epochs", "1", "--batch", "8"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let line = last_line(&o);
    assert!(line.starts_with("top1=") && line.ends_with('%'), "{line}");
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let (before, _) = pixmim::checkpoint::read_safetensors(&ck).unwrap();
    let (after, meta) =
        pixmim::checkpoint::read_safetensors(&out.join("finetuned.safetensors")).unwrap();
    assert_eq!(meta.get("classes").map(String::as_str), Some("2"));
    assert_eq!(after["head.weight"].shape, vec![2, 192]);
    assert_eq!(after["fc_norm.weight"].shape, vec![192]);
    let key = "blocks.0.attn.qkv.weight";
    assert_ne!(
        before[key].data, after[key].data,
        "the encoder is fine-tuned"
    );
    let key = "decoder_pred.weight";
    assert_eq!(
        before[key].data, after[key].data,
        "the decoder takes no part"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn finetune_with_the_whole_recipe_still_learns_a_separable_set_and_each_part_switches_off() {
    let (root, train, val, ck) = labelled_run("eval-ft-recipe", (32, 16), (6, 7));
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "--epochs",
            "6",
            "--warmup-epochs",
            "1",
            "--batch",
            "8",
            "--blr",
            "2e-3",
        ];
        args.extend(extra);
        let o = finetune(&ck, &train, &val, &root.join(out), &args);
        assert!(o.status.success(), "{}", text(&o));
        o
    };
    // Defaults: RandAugment, Mixup/CutMix, label smoothing and random erasing all on.
    let o = run("full", &[]);
    let log = text(&o);
    for part in [
        "RandAugment(n=2, m=9, mstd=0.5",
        "RandomErasing(p=0.25",
        "Mixup(alpha=0.8) / CutMix(alpha=1)",
        "label smoothing 0.1",
    ] {
        assert!(log.contains(part), "{part} in {log}");
    }
    let top1 = percent(&last_line(&o), "top1");
    assert!(
        top1 >= 87.5,
        "the full recipe learns dark vs bright: {top1}% ({log})"
    );
    let o = run(
        "off",
        &[
            "--aa", "none", "--reprob", "0", "--mixup", "0", "--cutmix", "0",
        ],
    );
    let log = text(&o);
    assert!(
        !log.contains("RandAugment") && !log.contains("Erasing"),
        "{log}"
    );
    assert!(log.contains("no Mixup/CutMix"), "{log}");
    // Bad values name their option.
    let bad_out = root.join("bad");
    for (args, key) in [
        (&["--aa", "rand-m9-q2-inc1"][..], "--aa"),
        (&["--reprob", "1.5"][..], "--reprob"),
        (&["--mixup-switch-prob", "1.5"][..], "--mixup-switch-prob"),
        (&["--batch", "7"][..], "--batch"),
    ] {
        let o = finetune(&ck, &train, &val, &bad_out, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(key), "{args:?}: {}", text(&o));
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn robustness_reports_every_setting_against_a_baseline_dumps_grids_and_names_bad_input() {
    let (root, val, ck, finetuned) = finetuned_classifier("eval-robust");
    // The validation images labelled the other way round: the classifier (100% on `val`)
    // errs on them, so the baseline's errors are not 0 and the CE ratios are defined.
    let flipped = root.join("flipped/t10k-images-idx3-ubyte");
    std::fs::create_dir_all(flipped.parent().unwrap()).unwrap();
    std::fs::copy(&val, &flipped).unwrap();
    let labels = pixmim::data::idx::labels_path(&val).unwrap();
    let mut bytes = std::fs::read(&labels).unwrap();
    // An IDX labels file: an 8-byte header, then one byte per label.
    bytes[8..].iter_mut().for_each(|l| *l = 1 - *l);
    std::fs::write(pixmim::data::idx::labels_path(&flipped).unwrap(), bytes).unwrap();
    let val = flipped;
    let (csv, dump) = (root.join("r.csv"), root.join("dump"));
    let robust = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "robustness",
            "--checkpoint",
            finetuned.to_str().unwrap(),
            "--val-data",
            val.to_str().unwrap(),
            "--crop-pct",
            "1.0",
        ];
        args.extend(extra);
        pixmim(&args)
    };
    let o = robust(&[
        "--corruptions",
        "fog,contrast",
        "--severities",
        "1,5",
        "--baseline",
        finetuned.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--dump",
        dump.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Its own baseline: every corruption error is 100%.
    let line = last_line(&o);
    assert!(line.contains("  mCE=100.0%"), "{line}");
    let clean = percent(&line, "clean");
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(rows[0], "corruption,severity,top1");
    assert_eq!(rows.len(), 2 + 4, "{rows:?}");
    assert!(rows[1].starts_with("clean,0,"));
    let top1: f64 = rows[1].rsplit(',').next().unwrap().parse().unwrap();
    assert!((100.0 * top1 - clean).abs() < 0.01);
    for (row, want) in rows[2..]
        .iter()
        .zip(["fog,1,", "fog,5,", "contrast,1,", "contrast,5,"])
    {
        assert!(row.starts_with(want), "{row}");
    }
    // Three grids: two rows (corruptions) of clean + two severities, 32 px panels at 4x.
    for i in 0..3 {
        let g = image::open(dump.join(format!("corruptions-{i}.png"))).unwrap();
        assert_eq!((g.width(), g.height()), (3 * 132 + 4, 2 * 132 + 4));
    }
    // The same key, the same numbers (fog draws a random fractal per image).
    let again = robust(&["--corruptions", "fog,contrast", "--severities", "1,5"]);
    assert_eq!(
        last_line(&again).split("  mCE").next().unwrap(),
        line.split("  mCE").next().unwrap()
    );
    for (args, key) in [
        (&["--corruptions", "frost"][..], "frost"),
        (&["--severities", "0-5"][..], "--severities"),
        (&["--baseline", ck.to_str().unwrap()][..], "classifier head"),
    ] {
        let o = robust(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(key), "{args:?}: {}", text(&o));
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The two classes differ only in brightness, and with `non_black` masks every pixel is object,
/// so each cue-conflict image is its texture source whole: a classifier right on every source
/// decides by texture every time (shape bias 0).
#[test]
fn shape_bias_follows_the_texture_where_only_texture_tells_classes_apart() {
    let (root, val, ck, finetuned) = finetuned_classifier("eval-shape-bias");
    let (dump, json) = (root.join("conflict"), root.join("shape-bias.json"));
    let shape_bias = |checkpoint: &Path, masks: &str| {
        pixmim(&[
            "eval",
            "shape-bias",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--data",
            val.to_str().unwrap(),
            "--masks",
            masks,
            "--crop-pct",
            "1.0",
            "--dump",
            dump.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
    };
    let o = shape_bias(&finetuned, "non_black");
    assert!(o.status.success(), "{}", text(&o));
    let line = last_line(&o);
    assert_eq!(
        line,
        "shape_bias=0.0%  shape=0  texture=8  neither=0  images=8  skipped=0",
        "{}",
        text(&o)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        report["decisions"]["per_class"][1]["texture"], 4,
        "{report}"
    );
    let pngs = std::fs::read_dir(&dump)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 8);
    let pairs = std::fs::read_to_string(dump.join("pairs.csv")).unwrap();
    assert_eq!(pairs.lines().count(), 9, "{pairs}");
    for (checkpoint, masks, named) in [
        (&finetuned, "no/such/masks", "--masks"),
        (&ck, "non_black", "classifier head"),
    ] {
        let o = shape_bias(checkpoint, masks);
        assert_eq!(o.status.code(), Some(2), "{masks}: {}", text(&o));
        assert!(text(&o).contains(named), "{masks}: {}", text(&o));
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn coverage_prints_one_parseable_line_per_transform_from_masks_or_alpha() {
    let root = tmp("coverage");
    let (imgs, masks, rgba) = (root.join("imgs"), root.join("masks"), root.join("rgba"));
    for d in [&imgs, &masks, &rgba] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Three 64x64 images whose object is the whole frame.
    for i in 0..3 {
        image::RgbImage::from_pixel(64, 64, image::Rgb([i * 40, 90, 10]))
            .save(imgs.join(format!("im{i}.jpg")))
            .unwrap();
        image::GrayImage::from_pixel(64, 64, image::Luma([255]))
            .save(masks.join(format!("im{i}.png")))
            .unwrap();
        image::RgbaImage::from_pixel(64, 64, image::Rgba([i * 40, 90, 10, 255]))
            .save(rgba.join(format!("im{i}.png")))
            .unwrap();
    }
    let csv = root.join("cov.csv");
    let run = |data: &Path, masks: Option<&Path>| {
        let mut args = vec![
            "analyze",
            "coverage",
            "--data",
            data.to_str().unwrap(),
            "--transform",
            "rrc,src,cc,resize",
            "--img-size",
            "32",
            "--patch-size",
            "8",
            "--samples",
            "20",
            "--out",
            csv.to_str().unwrap(),
        ];
        if let Some(m) = masks {
            args.extend(["--masks", m.to_str().unwrap()]);
        }
        let o = pixmim(&args);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = run(&imgs, Some(&masks));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for (line, t) in lines.iter().zip(["rrc", "src", "cc", "resize"]) {
        // Exactly `TRANSFORM  J(F)=NN.N%  J(MoF)=NN.N%`.
        let rest = line
            .strip_prefix(&format!("{t}  J(F)="))
            .unwrap_or_else(|| panic!("{line}"));
        let (jf, rest) = rest.split_once("%  J(MoF)=").unwrap();
        let jmf = rest.strip_suffix('%').unwrap();
        for v in [jf, jmf] {
            let (int, frac) = v.split_once('.').unwrap();
            assert!(int.parse::<u32>().is_ok() && frac.len() == 1, "{line}");
        }
        let (jf, jmf): (f64, f64) = (jf.parse().unwrap(), jmf.parse().unwrap());
        // Masking keeps 4 of 16 patches: J(MoF) is about a quarter of J(F).
        assert!((jmf - jf / 4.0).abs() < 2.5, "{line}");
    }
    // A whole-frame object. SRC: 64 -> 32 px, then a 32 crop of the 4-px reflect-padded
    // image at offsets -4..4, so on average (32 - 20/9)^2 / 32^2 = 86.6% is image, the rest
    // padding. RRC: about its mean crop area. The centre crop: exactly the 56x56 source
    // pixels it samples from 64x64 (int(32/0.875) = 36, crop 32 at offset 2).
    let jf = |l: &str| -> f64 {
        l.split("J(F)=")
            .nth(1)
            .unwrap()
            .split('%')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!((jf(lines[1]) - 86.6).abs() < 4.0, "{}", lines[1]);
    assert!((40.0..70.0).contains(&jf(lines[0])), "{}", lines[0]);
    assert!(lines[2].starts_with("cc  J(F)=76.6%"), "{}", lines[2]);
    // Resize keeps the whole image: the whole object.
    assert!(lines[3].starts_with("resize  J(F)=100.0%"), "{}", lines[3]);
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 1 + 12, "{rows}");
    // The alpha channel gives the same answer as mask files.
    assert_eq!(run(&rgba, None), out);
    // An unknown transform is refused, listing the registered ones.
    let o = pixmim(&[
        "analyze",
        "coverage",
        "--data",
        imgs.to_str().unwrap(),
        "--masks",
        masks.to_str().unwrap(),
        "--transform",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("`nope`") && text(&o).contains("resize"),
        "{}",
        text(&o)
    );
    // Images without alpha and no --masks: refused, naming the image.
    let o = pixmim(&["analyze", "coverage", "--data", imgs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("im0.jpg") && text(&o).contains("alpha"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn frequency_compares_checkpoints_in_a_csv_and_a_plot() {
    let root = tmp("frequency");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let mae = checkpoint(&root.join("mae"), &samples, None);
    let pix = checkpoint(&root.join("pixmim"), &samples, Some("pixmim"));
    let out = root.join("freq");
    let o = pixmim(&[
        "analyze",
        "frequency",
        "--checkpoint",
        mae.to_str().unwrap(),
        "--checkpoint",
        pix.to_str().unwrap(),
        "--data",
        samples.to_str().unwrap(),
        "--images",
        "4",
        "--bands",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(out.join("frequency.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "band,f_low,f_high,mae,pixmim", "{csv}");
    assert_eq!(lines.len(), 6, "{csv}");
    for l in &lines[1..] {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(
            v[3] > 0.0 && v[3] < 100.0 && v[4] > 0.0 && v[4] < 100.0,
            "{l}"
        );
    }
    let last: Vec<f64> = lines[5].split(',').map(|x| x.parse().unwrap()).collect();
    assert!(
        (last[2] - 0.5f64.sqrt()).abs() < 1e-4,
        "bands reach the corner frequency"
    );
    let png = image::open(out.join("frequency.png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 500));
    // One --label per checkpoint, or none.
    let o = pixmim(&[
        "analyze",
        "frequency",
        "--checkpoint",
        mae.to_str().unwrap(),
        "--label",
        "a",
        "--label",
        "b",
        "--data",
        samples.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&root);
}

fn modified(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// `pixmim sweep`: every (variant, seed) pretrained and evaluated, one table with the
/// baseline's differences; a rerun redoes nothing, a change of evaluation settings
/// re-evaluates without retraining, and bad files are refused before anything trains.
#[test]
fn sweep_runs_every_variant_and_seed_once_and_continues_where_it_stopped() {
    let dir = tmp("sweep");
    let train = write_idx(&dir.join("data"), "train", 48, 5);
    let val = write_idx(&dir.join("data"), "t10k", 16, 6);
    let out = dir.join("runs");
    let sweep = |epochs: usize, extra: &str| {
        format!(
            r#"out = {out:?}
method = "mae"
preset = "tiny"
data = {train:?}
seeds = [0, 1]
baseline = "mae"
sets = ["train.steps=2", "train.batch_size=4"]
{extra}
[eval]
data = {train:?}
val_data = {val:?}
crop_pct = 1.0
eval_batch = 16
linear_epochs = {epochs}
linear_warmup_epochs = 0
linear_batch = 16
linear_optimizer = "sgd"
probe_seeds = [0, 1]
shape_bias_masks = "non_black"

[[variant]]
name = "mae"

[[variant]]
name = "pixmim"
plugins = ["pixmim"]
seeds = [0]

[[variant]]
name = "init"
sets = ["seed=5"]
seed_keys = ["train.init_seed"]
seeds = [1]
"#
        )
    };
    let file = dir.join("sweep.toml");
    std::fs::write(&file, sweep(1, "")).unwrap();
    let f = file.to_str().unwrap();
    let first = ok(&["sweep", f]);
    for (v, s) in [("mae", 0), ("mae", 1), ("pixmim", 0), ("init", 1)] {
        assert!(
            out.join(format!("{v}/seed-{s}/eval.json")).exists(),
            "{first}"
        );
    }
    assert!(
        !out.join("pixmim/seed-1").exists(),
        "pixmim runs seed 0 only"
    );
    // Seed by seed: a sweep stopped early has its variants on the same seeds.
    let order: Vec<&str> = first
        .lines()
        .filter(|l| l.starts_with('[') && l.ends_with(": to run"))
        .collect();
    assert_eq!(
        order,
        [
            "[1/4] mae seed 0: to run",
            "[2/4] pixmim seed 0: to run",
            "[3/4] mae seed 1: to run",
            "[4/4] init seed 1: to run"
        ],
        "{first}"
    );
    // `seed_keys` writes the run's seed to the keys named, here the initial weights' alone.
    let config = std::fs::read_to_string(out.join("init/seed-1/config.toml")).unwrap();
    assert!(config.contains("seed = 5\n"), "{config}");
    assert!(config.contains("init_seed = 1\n"), "{config}");
    // The probe trained once per probe seed; the run's linear top-1 is their mean.
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mae/seed-0/eval.json")).unwrap())
            .unwrap();
    let probes: Vec<f64> = result["linear_top1_by_probe_seed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(probes.len(), 2, "{result}");
    let mean = result["linear_top1"].as_f64().unwrap();
    assert!(
        (mean - (probes[0] + probes[1]) / 2.0).abs() < 1e-12,
        "{result}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    let row = md.lines().find(|l| l.starts_with("| pixmim |")).unwrap();
    // One paired seed: a difference but no interval.
    assert!(row.contains("(one seed)"), "{md}");
    let mae = md
        .lines()
        .find(|l| l.starts_with("| mae | 0, 1 |"))
        .unwrap();
    assert!(mae.contains(" ± "), "{md}");
    // One pair (a win, a loss or a tie): the sign test cannot reject.
    assert!(row.contains("(p 1.000)"), "{md}");
    // The probes' shape bias on the cue-conflict images made once from the validation set.
    assert!(md.contains("| shape bias | Δ shape bias | wins |"), "{md}");
    assert_eq!(
        std::fs::read_dir(out.join("cue_conflict")).unwrap().count(),
        16 + 1,
        "the images and pairs.csv"
    );
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 5, "{runs}");
    assert!(
        runs.lines()
            .skip(1)
            .all(|l| !l.split(',').nth(6).unwrap().is_empty()),
        "every run's shape bias: {runs}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.starts_with("variant,runs,knn_top1_mean"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // Rerun: nothing is redone.
    let eval_json = out.join("mae/seed-0/eval.json");
    let ck = out.join("mae/seed-0/checkpoints/step-00000002.safetensors");
    let (e0, c0) = (modified(&eval_json), modified(&ck));
    let again = ok(&["sweep", f]);
    assert_eq!(again.matches(": done").count(), 4, "{again}");
    assert_eq!((modified(&eval_json), modified(&ck)), (e0, c0));
    // Interim tables: from the finished runs alone; nothing trained or evaluated.
    let pixmim_eval = out.join("pixmim/seed-0/eval.json");
    std::fs::remove_file(&pixmim_eval).unwrap();
    let interim = ok(&["sweep", f, "--tables"]);
    assert!(!pixmim_eval.exists(), "{interim}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    let empty = md.lines().find(|l| l.starts_with("| pixmim |  | - |"));
    assert!(empty.is_some_and(|l| l.ends_with("| - |")), "{md}");
    assert!(md.lines().any(|l| l.starts_with("| mae | 0, 1 |")), "{md}");
    // Other evaluation settings: evaluated again, not trained again.
    std::fs::write(&file, sweep(2, "")).unwrap();
    let third = ok(&["sweep", f]);
    assert_eq!(third.matches(": done").count(), 0, "{third}");
    assert_ne!(modified(&eval_json), e0);
    assert_eq!(modified(&ck), c0);
    // A changed pretraining config is refused for a folder that holds a run of the old one.
    std::fs::remove_file(&eval_json).unwrap();
    std::fs::write(
        &file,
        sweep(2, "").replace("train.steps=2", "train.steps=3"),
    )
    .unwrap();
    let o = pixmim(&["sweep", f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("another config"), "{}", text(&o));
    // A bad key in a variant stops the sweep before anything trains, naming it.
    let bad = sweep(1, "").replace(
        "plugins = [\"pixmim\"]",
        "plugins = [\"pixmim\"]\nsets = [\"target.radious=3.0\"]",
    );
    std::fs::write(&file, bad).unwrap();
    let o = pixmim(&["sweep", f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("radious"), "{}", text(&o));
    assert!(!text(&o).contains("[1/"), "{}", text(&o));
    std::fs::write(&file, sweep(1, "").replace("[\"train.init_seed\"]", "[]")).unwrap();
    let o = pixmim(&["sweep", f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("variant.seed_keys"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
