//! Issue 5: `reconstruct --noise` reproduces the official forward pass; `import` and `export`
//! round-trip through the official, mm* and timm layouts; mismatches are refused by name.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pixmim::checkpoint::HostTensor;
use pixmim_tests::{load, rel_err};

mod common;
use common::{ok, pixmim, text};

/// A fresh folder for one test.
fn tmp(name: &str) -> PathBuf {
    let d = common::tmp(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vectors() -> PathBuf {
    pixmim_tests::vectors("mae")
}

/// The MAE of the official parity vectors (tests/vectors/mae/README.md).
const VECTOR_MODEL: &[&str] = &[
    "--method",
    "mae",
    "--preset",
    "tiny",
    "--set",
    "model.img_size=64",
    "--set",
    "model.patch_size=8",
    "--set",
    "model.embed_dim=96",
    "--set",
    "model.depth=3",
    "--set",
    "model.num_heads=3",
    "--set",
    "model.decoder_embed_dim=64",
    "--set",
    "model.decoder_depth=2",
    "--set",
    "model.decoder_num_heads=4",
];

#[test]
fn reconstruct_with_the_official_noise_gives_the_official_loss_and_prediction() {
    let dir = tmp("recon");
    let fwd = load(&vectors().join("forward.safetensors"));
    let (l, d) = (64, 8 * 8 * 3);
    let img0 = &fwd["imgs"].data[..3 * 64 * 64];
    let noise0 = &fwd["noise"].data[..l];
    pixmim::npy::write(&dir.join("img.npy"), &[3, 64, 64], img0).unwrap();
    pixmim::npy::write(&dir.join("noise.npy"), &[1, l], noise0).unwrap();
    let weights = vectors().join("weights.safetensors");
    let (grid, dump) = (dir.join("grid.png"), dir.join("dump.safetensors"));
    let (img, noise) = (dir.join("img.npy"), dir.join("noise.npy"));
    let mut args = vec!["reconstruct", "--checkpoint", weights.to_str().unwrap()];
    args.extend(VECTOR_MODEL);
    args.extend([
        "--image",
        img.to_str().unwrap(),
        "--noise",
        noise.to_str().unwrap(),
        "--out",
        grid.to_str().unwrap(),
        "--dump",
        dump.to_str().unwrap(),
    ]);
    let out = ok(&args);
    let got = load(&dump);
    let official_pred = &fwd["pred"].data[..l * d];
    let official_target = &fwd["target_norm_pix"].data[..l * d];
    let official_mask = &fwd["mask"].data[..l];
    assert_eq!(
        got["mask"].data, official_mask,
        "the noise decides the same mask"
    );
    assert_eq!(got["pred"].shape, vec![1, l, d]);
    let e = rel_err(&got["pred"].data, official_pred);
    assert!(e < 1e-5, "pred rel err {e:e}");
    let e = rel_err(&got["target"].data, official_target);
    assert!(e < 1e-5, "target rel err {e:e}");
    // The official loss of image 0 alone, from the official pred / target / mask.
    let (mut sum, mut n) = (0.0f64, 0.0f64);
    for t in 0..l {
        if official_mask[t] == 1.0 {
            let p = &official_pred[t * d..(t + 1) * d];
            let q = &official_target[t * d..(t + 1) * d];
            sum += p
                .iter()
                .zip(q)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / d as f64;
            n += 1.0;
        }
    }
    let want = sum / n;
    let loss = got["loss"].data[0] as f64;
    assert!(
        (loss - want).abs() / want < 1e-5,
        "loss {loss} vs official {want}"
    );
    assert!(out.contains("loss="), "{out}");
    let img = image::open(&grid).unwrap();
    assert_eq!(img.height(), 128 + 8, "one row of 2x enlarged 64 px panels");
    assert_eq!(img.width(), 4 * (128 + 4) + 4, "four panels");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A photo goes through the evaluation transform (short side to the model's size, centre kept):
/// the same target as the `.npy` of that view, on a non-square image.
#[test]
fn reconstruct_takes_a_photo_through_the_evaluation_centre_crop() {
    let dir = tmp("recon-photo");
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples/chelsea.jpg"); // 241 x 160
    let decoded = pixmim::data::decode::decode(&photo).unwrap();
    let mut view = vec![0.0; 3 * 64 * 64];
    pixmim::augment::CenterCrop::eval((64, 64), 1.0)
        .unwrap()
        .view(&decoded, &mut view);
    pixmim::npy::write(&dir.join("view.npy"), &[3, 64, 64], &view).unwrap();
    let weights = vectors().join("weights.safetensors");
    let dump = |input: &Path, name: &str| {
        let mut args = vec!["reconstruct", "--checkpoint", weights.to_str().unwrap()];
        args.extend(VECTOR_MODEL);
        let (grid, dump) = (dir.join(format!("{name}.png")), dir.join(name));
        args.extend(["--image", input.to_str().unwrap(), "--seed", "3"]);
        args.extend([
            "--out",
            grid.to_str().unwrap(),
            "--dump",
            dump.to_str().unwrap(),
        ]);
        ok(&args);
        load(&dump)
    };
    let from_photo = dump(&photo, "photo.safetensors");
    let from_view = dump(&dir.join("view.npy"), "view.safetensors");
    assert_eq!(from_photo["mask"].data, from_view["mask"].data);
    assert!(from_photo["target"].data == from_view["target"].data);
    let _ = std::fs::remove_dir_all(&dir);
}

fn same(a: &HashMap<String, HostTensor>, b: &HashMap<String, HostTensor>, keys: &[&String]) {
    for k in keys {
        assert_eq!(a[*k].shape, b[*k].shape, "{k}");
        assert!(a[*k].data == b[*k].data, "`{k}` changed in the round trip");
    }
}

#[test]
fn import_and_export_round_trip_through_every_layout() {
    let dir = tmp("roundtrip");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let weights = vectors().join("weights.safetensors");
    let official = load(&weights);
    let import = |from: &str, input: &str, out: &str| {
        let mut args = vec!["import", "--from", from];
        args.extend(VECTOR_MODEL);
        args.extend([input, "--out", out]);
        ok(&args)
    };
    import(
        "official-mae",
        weights.to_str().unwrap(),
        &p("ours.safetensors"),
    );
    let ours = load(&dir.join("ours.safetensors"));
    let all: Vec<&String> = official.keys().collect();
    same(&official, &ours, &all);

    // official-mae: the whole model, same names and values as the official state dict.
    ok(&[
        "export",
        "--to",
        "official-mae",
        &p("ours.safetensors"),
        "--out",
        &p("off.safetensors"),
    ]);
    let off = load(&dir.join("off.safetensors"));
    assert_eq!(off.len(), official.len());
    same(&official, &off, &all);

    // mmselfsup: backbone./neck. names; importing it back is the identity.
    ok(&[
        "export",
        "--to",
        "mmselfsup",
        &p("ours.safetensors"),
        "--out",
        &p("mm.safetensors"),
    ]);
    let mm = load(&dir.join("mm.safetensors"));
    assert!(mm
        .keys()
        .all(|k| k.starts_with("backbone.") || k.starts_with("neck.")));
    assert!(mm.contains_key("backbone.layers.0.ffn.layers.0.0.weight"));
    assert!(mm.contains_key("neck.ln1.weight"));
    import("mmselfsup", &p("mm.safetensors"), &p("back.safetensors"));
    same(&ours, &load(&dir.join("back.safetensors")), &all);

    // timm: the encoder alone; importing it gives a fresh decoder and says so.
    ok(&[
        "export",
        "--to",
        "timm",
        &p("ours.safetensors"),
        "--out",
        &p("timm.safetensors"),
    ]);
    let timm = load(&dir.join("timm.safetensors"));
    assert!(timm
        .keys()
        .all(|k| !k.starts_with("decoder_") && k != "mask_token"));
    assert!(timm.contains_key("blocks.2.mlp.fc2.weight") && timm.contains_key("norm.weight"));
    let msg = import("timm", &p("timm.safetensors"), &p("enc.safetensors"));
    assert!(msg.contains("freshly initialised"), "{msg}");
    let enc = load(&dir.join("enc.safetensors"));
    let encoder: Vec<&String> = timm.keys().collect();
    same(&ours, &enc, &encoder);
    assert!(enc["decoder_pred.weight"].data != ours["decoder_pred.weight"].data);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_of_another_shape_is_refused_with_names_and_shapes() {
    let dir = tmp("refuse");
    let weights = vectors().join("weights.safetensors");
    let out = dir.join("x.safetensors");
    let o = pixmim(&[
        "import",
        "--from",
        "official-mae",
        "--method",
        "mae",
        "--preset",
        "tiny",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("weights.safetensors"), "names the file: {t}");
    assert!(
        t.contains("patch_embed.proj.weight"),
        "names a parameter: {t}"
    );
    assert!(t.contains("[96, 3, 8, 8]"), "gives the file's shape: {t}");
    assert!(t.contains("blocks.3."), "lists what the file lacks: {t}");
    assert!(!out.exists(), "nothing is written");
    let o = pixmim(&[
        "import", "--from", "caffe", "--method", "mae", "x", "--out", "y",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("official-mae"), "lists the known formats");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `official-METHOD` names the official format for every registered method, from the
/// registry (a new method crate gets its name with no edit here); other names are refused.
#[test]
fn every_registered_method_has_its_official_format_name() {
    use pixmim::interop::Format;
    for m in pixmim::registry::methods() {
        let name = format!("official-{}", m.name());
        assert_eq!(
            Format::parse(&name).unwrap(),
            Format::parse("official").unwrap()
        );
        assert!(pixmim::interop::format_names().contains(&name), "{name}");
    }
    let e = Format::parse("official-nosuch").unwrap_err().to_string();
    assert!(e.contains("official-nosuch") && e.contains("timm"), "{e}");
}

#[test]
fn pytorch_pth_files_import_in_the_official_and_mmselfsup_layouts() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pth");
    let want = load(&fixtures.join("tiny_mae.safetensors"));
    let dir = tmp("pth");
    for (format, file) in [
        ("official-mae", "tiny_mae_official.pth"),
        ("mmselfsup", "tiny_mae_mmselfsup.pth"),
    ] {
        let out = dir.join(format!("{format}.safetensors"));
        let input = fixtures.join(file);
        let mut args = vec![
            "import", "--from", format, "--method", "mae", "--preset", "tiny",
        ];
        for s in [
            "model.img_size=16",
            "model.patch_size=4",
            "model.embed_dim=32",
            "model.depth=2",
            "model.num_heads=2",
            "model.decoder_embed_dim=32",
            "model.decoder_depth=1",
            "model.decoder_num_heads=2",
        ] {
            args.extend(["--set", s]);
        }
        args.extend([input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        ok(&args);
        let got = load(&out);
        assert_eq!(got.len(), want.len(), "{format}");
        let keys: Vec<&String> = want.keys().collect();
        same(&want, &got, &keys);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every registered method's trained weights go out in its official layout and come back
/// unchanged; MFF's also through mmpretrain's, the layout its reference code saves.
#[test]
fn every_method_round_trips_through_its_reference_layout() {
    let dir = tmp("methods");
    let official: Vec<(String, String)> = pixmim::registry::methods()
        .iter()
        .map(|m| (m.name().to_string(), format!("official-{}", m.name())))
        .collect();
    let cases = official
        .iter()
        .map(|(m, l)| (m.as_str(), l.as_str()))
        .chain([("mff", "mmpretrain")]);
    for (method, layout) in cases {
        let run = dir.join(format!("{method}-{layout}-run"));
        let run_s = run.to_str().unwrap().to_string();
        ok(&[
            "train",
            "--method",
            method,
            "--preset",
            "tiny",
            "--steps",
            "1",
            "--set",
            "train.batch_size=2",
            "--out",
            &run_s,
        ]);
        let ck = run.join("checkpoints/step-00000001.safetensors");
        let exported = dir.join(format!("{method}-{layout}.safetensors"));
        ok(&[
            "export",
            "--to",
            layout,
            ck.to_str().unwrap(),
            "--out",
            exported.to_str().unwrap(),
        ]);
        let back = dir.join(format!("{method}-{layout}-back.safetensors"));
        ok(&[
            "import",
            "--from",
            layout,
            "--method",
            method,
            "--preset",
            "tiny",
            exported.to_str().unwrap(),
            "--out",
            back.to_str().unwrap(),
        ]);
        let (a, b) = (load(&ck), load(&back));
        let keys: Vec<&String> = a.keys().filter(|k| !k.starts_with("optim.")).collect();
        assert_eq!(keys.len(), b.len(), "{method}");
        same(&a, &b, &keys);
        if layout == "mmpretrain" {
            let mm = load(&exported);
            assert!(
                mm.contains_key("backbone.proj_weights"),
                "{method}: {:?}",
                mm.keys()
            );
            assert!(
                mm.keys().all(|k| !k.contains("mae.")),
                "{method}: MFF's wrapper leaks"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 24: state dicts laid out as the official code saves them (written by
/// tools/official_state_dict.py from the official module definitions, not from pixmim's
/// exporter) import, and export back key for key, shape for shape and value for value; the
/// ConvMAE one as `load_state_dict(strict=True)` of `models_convmae.py` needs it.
#[test]
fn official_state_dicts_import_and_export_back_identically() {
    use pixmim::interop::{read_raw, Format};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pth");
    let dir = tmp("official");
    let vit = [
        "model.img_size=16",
        "model.patch_size=4",
        "model.embed_dim=16",
        "model.num_heads=2",
        "model.decoder_embed_dim=16",
        "model.decoder_depth=1",
        "model.decoder_num_heads=2",
    ];
    let cases: [(&str, &str, Vec<&str>); 3] = [
        (
            "convmae",
            "official-convmae",
            vec![
                "model.img_size=16",
                "model.patch_size=[2, 2, 2]",
                "model.embed_dim=[8, 12, 16]",
                "model.depth=[1, 1, 1]",
                "model.num_heads=2",
                "model.decoder_embed_dim=16",
                "model.decoder_depth=1",
                "model.decoder_num_heads=2",
            ],
        ),
        (
            "lsmae",
            "official-lsmae",
            [&vit[..], &["model.depth=1"]].concat(),
        ),
        (
            "mff",
            "mmpretrain",
            [&vit[..], &["model.depth=3", "model.out_indices=[0, 2]"]].concat(),
        ),
    ];
    for (method, format, sets) in cases {
        let input = fixtures.join(format!("tiny_{method}_official.pth"));
        let ours = dir.join(format!("{method}.safetensors"));
        let back = dir.join(format!("{method}-official.safetensors"));
        let mut args = vec![
            "import", "--from", format, "--method", method, "--preset", "tiny",
        ];
        for s in &sets {
            args.extend(["--set", s]);
        }
        args.extend([input.to_str().unwrap(), "--out", ours.to_str().unwrap()]);
        let msg = ok(&args);
        assert!(
            !msg.contains("freshly"),
            "{method}: the whole model loads: {msg}"
        );
        ok(&[
            "export",
            "--to",
            format,
            ours.to_str().unwrap(),
            "--out",
            back.to_str().unwrap(),
        ]);
        let fmt = Format::parse(format).unwrap();
        let want = read_raw(&input, fmt).unwrap();
        let got = read_raw(&back, fmt).unwrap();
        let mut wk: Vec<&String> = want.keys().collect();
        let mut gk: Vec<&String> = got.keys().collect();
        wk.sort();
        gk.sort();
        assert_eq!(gk, wk, "{method}: the official key set");
        for k in wk {
            assert_eq!(got[k].shape, want[k].shape, "{method}: shape of `{k}`");
            assert_eq!(got[k].data, want[k].data, "{method}: values of `{k}`");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `export --to detectron2` and `--to mmseg` write `.pth` files with the key sets and shapes
/// their code bases load, written down here from the upstream sources: detectron2's ViTDet
/// configs load the official `mae_pretrain_vit_base.pth` (`{"model": encoder}` in
/// `models_mae.py`'s names, `?matching_heuristics=True`); mmseg's `configs/mae` load the output
/// of `tools/model_converters/beit2mmseg.py` (`blocks` -> `layers`, `norm` -> `ln` inside them,
/// `mlp.fc1` -> `ffn.layers.0.0`, `mlp.fc2` -> `ffn.layers.1`, `patch_embed.proj` ->
/// `patch_embed.projection`, everything under `backbone.`, a bare state dict). Importing the
/// detectron2 file back gives the same encoder.
#[test]
fn exports_for_detection_and_segmentation_have_the_upstream_keys() {
    use pixmim::interop::{read_raw, Format};
    let dir = tmp("dense");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let weights = vectors().join("weights.safetensors");
    let mut args = vec!["import", "--from", "official-mae"];
    args.extend(VECTOR_MODEL);
    let ours = p("ours.safetensors");
    args.extend([weights.to_str().unwrap(), "--out", ours.as_str()]);
    ok(&args);
    // The vector model: 64 px, patch 8 (64 patches), width 96, depth 3, MLP 384.
    let (d, hidden, depth) = (96, 384, 3);
    let block = |prefix: &str, i: usize, mm: bool| -> Vec<(String, Vec<usize>)> {
        let (n1, n2, fc1, fc2) = if mm {
            ("ln1", "ln2", "ffn.layers.0.0", "ffn.layers.1")
        } else {
            ("norm1", "norm2", "mlp.fc1", "mlp.fc2")
        };
        let b = format!("{prefix}{i}.");
        vec![
            (format!("{b}{n1}.weight"), vec![d]),
            (format!("{b}{n1}.bias"), vec![d]),
            (format!("{b}attn.qkv.weight"), vec![3 * d, d]),
            (format!("{b}attn.qkv.bias"), vec![3 * d]),
            (format!("{b}attn.proj.weight"), vec![d, d]),
            (format!("{b}attn.proj.bias"), vec![d]),
            (format!("{b}{n2}.weight"), vec![d]),
            (format!("{b}{n2}.bias"), vec![d]),
            (format!("{b}{fc1}.weight"), vec![hidden, d]),
            (format!("{b}{fc1}.bias"), vec![hidden]),
            (format!("{b}{fc2}.weight"), vec![d, hidden]),
            (format!("{b}{fc2}.bias"), vec![d]),
        ]
    };
    let expected = |mm: bool| -> HashMap<String, Vec<usize>> {
        let (pre, layers, proj) = if mm {
            ("backbone.", "backbone.layers.", "patch_embed.projection")
        } else {
            ("", "blocks.", "patch_embed.proj")
        };
        let mut v = vec![
            (format!("{pre}cls_token"), vec![1, 1, d]),
            (format!("{pre}pos_embed"), vec![1, 65, d]),
            (format!("{pre}{proj}.weight"), vec![d, 3, 8, 8]),
            (format!("{pre}{proj}.bias"), vec![d]),
            (format!("{pre}norm.weight"), vec![d]),
            (format!("{pre}norm.bias"), vec![d]),
        ];
        for i in 0..depth {
            v.extend(block(layers, i, mm));
        }
        v.into_iter().collect()
    };
    for (to, mm) in [("detectron2", false), ("mmseg", true)] {
        let out = p(&format!("{to}.pth"));
        ok(&["export", "--to", to, &ours, "--out", &out]);
        let got: HashMap<String, Vec<usize>> = read_raw(Path::new(&out), Format::Official)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.shape))
            .collect();
        assert_eq!(got, expected(mm), "--to {to}");
    }
    // detectron2's file is the official encoder: importing it gives our encoder back.
    let mut args = vec!["import", "--from", "official-mae"];
    args.extend(VECTOR_MODEL);
    let d2 = p("detectron2.pth");
    let back = p("back.safetensors");
    args.extend([d2.as_str(), "--out", back.as_str()]);
    let msg = ok(&args);
    assert!(msg.contains("freshly initialised"), "{msg}");
    let (a, b) = (load(Path::new(&ours)), load(Path::new(&back)));
    let encoder: Vec<&String> = a
        .keys()
        .filter(|k| !k.starts_with("decoder_") && *k != "mask_token")
        .collect();
    same(&a, &b, &encoder);
    let _ = std::fs::remove_dir_all(&dir);
}

/// ConvMAE's own detection and segmentation code loads its encoder by the official
/// pretraining names, `strict=False`, from `{"model": ...}` (`DET/models/convmae.py`) or a
/// bare or wrapped state dict (`SEG/mmcv_custom/checkpoint.py`), so a name it does not know is
/// silently left untrained. Every exported name outside the pretraining-only parts (the final
/// `norm`, `stageN_output_decode`) must be one of the backbones' parameters, written down here
/// from `SEG/backbone/convmae.py` / `DET/models/convmae.py` for the tiny dims (PatchEmbed: proj,
/// norm; CBlock: norm1, conv1, conv2, attn (5x5 depthwise), norm2, mlp.fc1/fc2 as 1x1 convs;
/// Block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2; patch_embed4 Linear; pos_embed
/// without a cls token); and every one of those the pretraining has is exported.
#[test]
fn convmae_exports_for_detection_and_segmentation_keep_the_official_names() {
    use pixmim::interop::{read_raw, Format};
    let dir = tmp("convmae-dense");
    let out = dir.join("run");
    let o = common::pixmim(&[
        "train",
        "--method",
        "convmae",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--set",
        "train.batch_size=4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::text(&o));
    let ck = out.join("checkpoints/step-00000001.safetensors");
    // tiny: embed [32, 48, 96], depth [1, 1, 2], patch [2, 2, 2] at 32 px, mlp 4.
    let (dims, depth, mlp) = ([32usize, 48, 96], [1usize, 1, 2], 4);
    let mut upstream: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |k: String, s: Vec<usize>| upstream.push((k, s));
    let ins = [3, dims[0], dims[1]];
    for s in 0..3 {
        let (d, p) = (dims[s], format!("patch_embed{}", s + 1));
        add(format!("{p}.proj.weight"), vec![d, ins[s], 2, 2]);
        add(format!("{p}.proj.bias"), vec![d]);
        add(format!("{p}.norm.weight"), vec![d]);
        add(format!("{p}.norm.bias"), vec![d]);
    }
    add("patch_embed4.weight".into(), vec![dims[2], dims[2]]);
    add("patch_embed4.bias".into(), vec![dims[2]]);
    add("pos_embed".into(), vec![1, 16, dims[2]]);
    for s in 0..2 {
        let d = dims[s];
        for i in 0..depth[s] {
            let b = format!("blocks{}.{i}.", s + 1);
            for (k, shape) in [
                ("norm1.weight", vec![d]),
                ("norm1.bias", vec![d]),
                ("conv1.weight", vec![d, d, 1, 1]),
                ("conv1.bias", vec![d]),
                ("conv2.weight", vec![d, d, 1, 1]),
                ("conv2.bias", vec![d]),
                ("attn.weight", vec![d, 1, 5, 5]),
                ("attn.bias", vec![d]),
                ("norm2.weight", vec![d]),
                ("norm2.bias", vec![d]),
                ("mlp.fc1.weight", vec![mlp * d, d, 1, 1]),
                ("mlp.fc1.bias", vec![mlp * d]),
                ("mlp.fc2.weight", vec![d, mlp * d, 1, 1]),
                ("mlp.fc2.bias", vec![d]),
            ] {
                add(format!("{b}{k}"), shape);
            }
        }
    }
    let d = dims[2];
    for i in 0..depth[2] {
        let b = format!("blocks3.{i}.");
        for (k, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.qkv.bias", vec![3 * d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![mlp * d, d]),
            ("mlp.fc1.bias", vec![mlp * d]),
            ("mlp.fc2.weight", vec![d, mlp * d]),
            ("mlp.fc2.bias", vec![d]),
        ] {
            add(format!("{b}{k}"), shape);
        }
    }
    let upstream: HashMap<String, Vec<usize>> = upstream.into_iter().collect();
    let pretraining_only = |k: &str| k.starts_with("norm.") || k.contains("_output_decode.");
    for to in ["detectron2", "mmseg"] {
        let file = dir.join(format!("{to}.pth"));
        ok(&[
            "export",
            "--to",
            to,
            ck.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ]);
        let got: HashMap<String, Vec<usize>> = read_raw(&file, Format::Official)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !pretraining_only(k))
            .map(|(k, t)| (k, t.shape))
            .collect();
        assert_eq!(got, upstream, "--to {to}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
