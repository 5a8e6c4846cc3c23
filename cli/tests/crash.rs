//! Issue 8: runs killed with SIGKILL (no chance to clean up) or aborted half-way through a
//! checkpoint write resume to weights bit-identical to an uninterrupted run; checkpoints of
//! another method or shape are refused by name.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{text, tmp};

const STEPS: usize = 12;

/// 12 iterations of batch 8, accumulation 2, a checkpoint every 2, metrics every step.
fn train_cmd(out: &Path, resume: bool) -> Command {
    let mut c = common::command();
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if resume {
        c.args(["train", "--resume", "--out", out.to_str().unwrap()]);
    } else {
        c.args(["train", "--method", "mae", "--preset", "tiny"])
            .args(["--steps", &STEPS.to_string()])
            .args(["--set", "train.batch_size=8", "--set", "train.accum_iter=2"])
            .args([
                "--set",
                "train.checkpoint_every=2",
                "--set",
                "train.log_every=1",
            ])
            .args(["--set", "train.keep_checkpoints=2"])
            .args(["--out", out.to_str().unwrap()]);
    }
    c
}

fn run_to_end(out: &Path, resume: bool) {
    let o = train_cmd(out, resume).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Start a fresh run (or resume one) and SIGKILL it once `ready` holds.
fn kill_when(out: &Path, resume: bool, ready: impl Fn(&Path) -> bool) {
    let mut child: Child = train_cmd(out, resume).spawn().unwrap();
    let t0 = Instant::now();
    while !ready(out) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the kill point");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "kill point never reached"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Every tensor of the newest checkpoint (weights and optimiser moments), and its metadata.
fn final_state(out: &Path) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>) {
    let path = out.join(format!("checkpoints/step-{STEPS:08}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.data().to_vec()))
        .collect();
    let mut meta: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    meta.remove("config"); // differs only in the output path, which the test chose
    (tensors, meta)
}

fn assert_same_run(reference: &Path, resumed: &Path, what: &str) {
    let (a, ma) = final_state(reference);
    let (b, mb) = final_state(resumed);
    assert_eq!(ma, mb, "{what}: metadata differs");
    assert_eq!(a.len(), b.len(), "{what}: tensor count differs");
    for (k, v) in &a {
        assert!(v == &b[k], "{what}: `{k}` is not bit-identical");
    }
    // The metrics log holds each step exactly once, in order, as if never interrupted.
    let steps: Vec<u64> = std::fs::read_to_string(resumed.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (0..STEPS as u64).collect::<Vec<_>>(),
        "{what}: metrics"
    );
}

/// When to kill: a condition on the run folder.
type KillPoint = Box<dyn Fn(&Path) -> bool>;

fn has_checkpoint(step: usize) -> impl Fn(&Path) -> bool {
    move |out| {
        out.join(format!("checkpoints/step-{step:08}.safetensors"))
            .exists()
    }
}

#[test]
fn sigkill_at_any_point_resumes_bit_identical() {
    let reference = tmp("reference");
    run_to_end(&reference, false);

    // Kill points: right after the first checkpoint lands; mid-accumulation (an odd step,
    // between checkpoints, so steps are redone); just before the end; and twice in one run.
    let cases: Vec<(&str, Vec<KillPoint>)> = vec![
        (
            "after the first checkpoint",
            vec![Box::new(has_checkpoint(2))],
        ),
        (
            "mid-accumulation at step 7",
            vec![Box::new(|o: &Path| logged_steps(o) >= 7)],
        ),
        (
            "after step 10's checkpoint",
            vec![Box::new(has_checkpoint(10))],
        ),
        (
            "twice: at step 5, then at step 9 of the resumed run",
            vec![
                Box::new(|o: &Path| logged_steps(o) >= 5),
                Box::new(|o: &Path| logged_steps(o) >= 9),
            ],
        ),
    ];
    for (i, (what, kills)) in cases.iter().enumerate() {
        let out = tmp(&format!("killed{i}"));
        for (k, ready) in kills.iter().enumerate() {
            kill_when(&out, k > 0, ready);
        }
        assert!(!has_checkpoint(STEPS)(&out), "{what}: killed too late");
        run_to_end(&out, true);
        assert_same_run(&reference, &out, what);
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&reference);
}

#[test]
fn a_crash_while_writing_a_checkpoint_leaves_the_previous_one_loadable() {
    let reference = tmp("reference-fault");
    run_to_end(&reference, false);
    let out = tmp("fault");
    let o = train_cmd(&out, false)
        .env("PIXMIM_FAULT_ABORT_WRITE", "step-00000006")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the fault switch must abort the run");
    let ckdir = out.join("checkpoints");
    let names: Vec<String> = std::fs::read_dir(&ckdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".tmp")),
        "a half-written file: {names:?}"
    );
    assert!(
        !names.contains(&"step-00000006.safetensors".to_string()),
        "the torn checkpoint must not appear under its real name: {names:?}"
    );
    let prev = ckdir.join("step-00000004.safetensors");
    let bytes = std::fs::read(&prev).unwrap();
    safetensors::SafeTensors::deserialize(&bytes).expect("the previous checkpoint loads");

    let o = train_cmd(&out, true).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("never finished"), "{}", text(&o));
    assert_same_run(&reference, &out, "after an aborted checkpoint write");
    let leftovers = std::fs::read_dir(&ckdir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
    // keep_checkpoints = 2
    assert_eq!(std::fs::read_dir(&ckdir).unwrap().count(), 2);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&reference);
}

/// Rewrite one `key = value` line of the run's config.toml.
fn edit_config(out: &Path, section: &str, key: &str, value: &str) {
    let path = out.join("config.toml");
    let mut t: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let v: toml::Value = format!("x = {value}").parse::<toml::Table>().unwrap()["x"].clone();
    if section.is_empty() {
        t.insert(key.into(), v);
    } else {
        t[section].as_table_mut().unwrap().insert(key.into(), v);
    }
    t["train"]
        .as_table_mut()
        .unwrap()
        .insert("steps".into(), 14.into());
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
}

#[test]
fn resuming_a_checkpoint_of_another_shape_or_method_is_refused_by_name() {
    let base = tmp("wrong");
    run_to_end(&base, false);
    let copy = |name: &str| {
        let d = tmp(name);
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        for f in ["config.toml", "checkpoints/step-00000012.safetensors"] {
            std::fs::copy(base.join(f), d.join(f)).unwrap();
        }
        d
    };

    let shape = copy("wrong-shape");
    edit_config(&shape, "model", "decoder_embed_dim", "64");
    let o = train_cmd(&shape, true).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("step-00000012.safetensors"),
        "names the file: {t}"
    );
    assert!(
        t.contains("decoder_embed.weight"),
        "names the parameter: {t}"
    );
    assert!(
        t.contains("[64, 192]") || t.contains("[192, 64]"),
        "gives shapes: {t}"
    );
    assert!(!t.contains("panicked"), "{t}");

    // A checkpoint of another method dropped into the run folder.
    let method = copy("wrong-method");
    let ck = method.join("checkpoints/step-00000012.safetensors");
    let bytes = std::fs::read(&ck).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap();
    meta.insert("method".into(), "convmae".into());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    std::fs::write(
        &ck,
        safetensors::serialize(st.tensors(), &Some(meta)).unwrap(),
    )
    .unwrap();
    edit_config(&method, "train", "steps", "14");
    let o = train_cmd(&method, true).output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("`convmae`") && t.contains("`mae`"),
        "names both methods: {t}"
    );
    for d in [base, shape, method] {
        let _ = std::fs::remove_dir_all(d);
    }
}
