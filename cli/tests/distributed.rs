//! Issue 26: `mpirun -np N pixmim train` trains one model, equal to one process of the same
//! global batch; rank 0 alone writes; killed ranks resume; a dead or hung rank stops the
//! others with its name; ranks that disagree are refused. Needs Open MPI's `mpirun` (CI
//! installs `openmpi-bin`).
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{text, tmp};

/// `mpirun -np NP --oversubscribe`, allowed to run as root (CI does).
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["-np", &np.to_string(), "--oversubscribe"]);
    c
}

const PIXMIM: &str = env!("CARGO_BIN_EXE_pixmim");

/// Tiny MAE, global batch 8, a checkpoint every 2 iterations, metrics every one.
fn tiny(out: &Path, steps: usize) -> Vec<String> {
    [
        "train",
        "--method",
        "mae",
        "--preset",
        "tiny",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.log_every=1",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.keep_checkpoints=10",
        "--steps",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([steps.to_string(), "--out".into(), out.display().to_string()])
    .collect()
}

fn run(mut c: Command) -> Output {
    c.output().expect("run mpirun (apt install openmpi-bin)")
}

fn ok(c: Command) -> String {
    let o = run(c);
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

fn under_mpirun(np: usize, args: &[String]) -> Command {
    let mut c = mpirun(np);
    c.arg(PIXMIM).args(args);
    c
}

fn one_process(args: &[String], device: &str) -> Command {
    let mut c = common::command();
    c.args(args).args(["--device", device]);
    c
}

type Tensors = BTreeMap<String, Vec<f32>>;

/// Every tensor of the checkpoint after `step` (weights and AdamW's moments).
fn checkpoint(out: &Path, step: usize) -> Tensors {
    let path = out.join(format!("checkpoints/step-{step:08}.safetensors"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let f = v.data().chunks_exact(4);
            (
                k,
                f.map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        })
        .collect()
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// What a run folder holds, with the TensorBoard file's name (time, host, pid) reduced to
/// its kind.
fn entries(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|n| match n.starts_with("events.out.tfevents") {
            true => "events.out.tfevents".into(),
            false => n,
        })
        .collect();
    v.sort();
    v
}

/// ||a - b|| / ||a|| over the weights (not the moments) of two checkpoints.
fn weight_difference(a: &Tensors, b: &Tensors) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (k, va) in a.iter().filter(|(k, _)| !k.starts_with("optim.")) {
        for (x, y) in va.iter().zip(&b[k]) {
            diff += ((x - y) as f64).powi(2);
            norm += (*x as f64).powi(2);
        }
    }
    (diff / norm).sqrt()
}

#[test]
fn two_processes_train_the_model_one_process_trains_from_the_same_global_batch() {
    let dir = tmp("mpi-equal");
    let (mpi, dp, one) = (dir.join("mpi"), dir.join("flex2"), dir.join("one"));
    let said = ok(under_mpirun(2, &tiny(&mpi, 4)));
    ok(one_process(&tiny(&dp, 4), "flex,flex"));
    ok(one_process(&tiny(&one, 4), "flex"));
    assert_eq!(said.matches("x 2 processes").count(), 1, "{said}");
    assert_eq!(said.matches("done: steps 0..4").count(), 1, "{said}");

    // Split the same way (two shards of 4), the sums are the same: bit for bit.
    let (a, b) = (checkpoint(&mpi, 4), checkpoint(&dp, 4));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(
            v == &b[k],
            "{k} differs between mpirun -np 2 and --device flex,flex"
        );
    }
    // One device sums the batch in another order: equal up to float summation.
    let c = checkpoint(&one, 4);
    let d = weight_difference(&c, &a);
    assert!(
        d < 1e-5,
        "weights differ from one device's by {d:e} (relative L2)"
    );
    for (x, y) in losses(&one).iter().zip(losses(&mpi)) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "losses {x} vs {y}");
    }
    // Rank 0 alone wrote: the same files as one process, each once.
    assert_eq!(entries(&mpi), entries(&one));
    assert_eq!(losses(&mpi).len(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The rank processes of the run writing to `out` (pid by rank), from /proc.
fn ranks(out: &Path) -> BTreeMap<usize, u32> {
    let mut found = BTreeMap::new();
    let out = out.display().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.first() != Some(&PIXMIM.as_bytes()) || !args.contains(&out.as_bytes()) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(r) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                found.insert(String::from_utf8_lossy(r).parse().unwrap(), pid);
            }
        }
    }
    found
}

fn signal(sig: &str, pid: u32) {
    let s = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success(), "kill {sig} {pid}");
}

/// Start `c` with its output piped, and wait until the checkpoint after `step` is written.
fn start_until_checkpoint(mut c: Command, out: &Path, step: usize) -> Child {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ck = out.join(format!("checkpoints/step-{step:08}.safetensors"));
    let t0 = Instant::now();
    while !ck.exists() || ranks(out).len() < 2 {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "the run ended ({status}) before checkpoint {step}: {}",
                text(&o)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no checkpoint {step}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Wait for `child` to exit; its output and how long that took.
fn finish(child: Child) -> (Output, Duration) {
    let t0 = Instant::now();
    let o = child.wait_with_output().unwrap();
    (o, t0.elapsed())
}

#[test]
fn both_ranks_killed_after_a_checkpoint_resume_to_the_uninterrupted_weights() {
    let dir = tmp("mpi-resume");
    let (run, reference) = (dir.join("run"), dir.join("reference"));
    ok(one_process(&tiny(&reference, 8), "flex,flex"));
    let child = start_until_checkpoint(under_mpirun(2, &tiny(&run, 8)), &run, 4);
    for pid in ranks(&run).values() {
        signal("-KILL", *pid);
    }
    let (o, _) = finish(child);
    assert!(!o.status.success(), "mpirun should report the killed ranks");
    let resume: Vec<String> = ["train", "--resume", "--out"]
        .iter()
        .map(|s| s.to_string())
        .chain([run.display().to_string()])
        .collect();
    let said = ok(under_mpirun(2, &resume));
    assert!(said.contains("resuming from"), "{said}");
    let (a, b) = (checkpoint(&run, 8), checkpoint(&reference, 8));
    for (k, v) in &a {
        assert!(v == &b[k], "{k} differs from the uninterrupted run");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rank_that_dies_stops_the_run_and_the_last_checkpoint_resumes() {
    let dir = tmp("mpi-dies");
    let run = dir.join("run");
    let child = start_until_checkpoint(under_mpirun(2, &tiny(&run, 4000)), &run, 2);
    signal("-KILL", ranks(&run)[&1]);
    let (o, waited) = finish(child);
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(waited < Duration::from_secs(60), "took {waited:?}");
    assert!(
        said.contains("rank 1"),
        "the dead rank is not named: {said}"
    );
    // The newest checkpoint is whole: the run resumes from it (and stops 2 steps later).
    let last = pixmim_last_checkpoint(&run);
    let mut resume: Vec<String> = ["train", "--resume", "--out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    resume.extend([
        run.display().to_string(),
        "--steps".into(),
        (last + 2).to_string(),
    ]);
    let said = ok(under_mpirun(2, &resume));
    assert!(said.contains(&format!("at step {last}")), "{said}");
    checkpoint(&run, last + 2);
    let _ = std::fs::remove_dir_all(&dir);
}

fn pixmim_last_checkpoint(out: &Path) -> usize {
    std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .max()
        .expect("a checkpoint")
}

/// A rank stopped with SIGSTOP (a hang, not a death: the launcher sees nothing) is named by
/// the others within the time-out, and the run stops.
#[test]
fn a_rank_that_hangs_is_named_and_the_run_stops_within_the_time_out() {
    let dir = tmp("mpi-hangs");
    for (hung, named) in [(1, "rank 1"), (0, "rank 0")] {
        let run = dir.join(format!("hung-{hung}"));
        let mut args = tiny(&run, 4000);
        args.extend(["--set".into(), "train.sync_timeout_s=4".into()]);
        let child = start_until_checkpoint(under_mpirun(2, &args), &run, 2);
        let pid = ranks(&run)[&hung];
        signal("-STOP", pid);
        let (o, waited) = finish(child);
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let said = text(&o);
        assert!(!o.status.success(), "{said}");
        // Rank 0 waits the time-out, the others twice it (so that rank 0 speaks first).
        assert!(waited < Duration::from_secs(40), "took {waited:?}: {said}");
        assert!(
            said.contains(&format!("{named} did not"))
                || said.contains(&format!("{named} stopped inside")),
            "the hung rank is not named: {said}"
        );
        assert!(said.contains("train.sync_timeout_s"), "{said}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranks_that_disagree_or_a_batch_that_does_not_split_are_refused() {
    let dir = tmp("mpi-refused");
    let folder = dir.join("run");
    // MPMD: the second rank is started with another learning rate.
    let mut c = mpirun(1);
    c.arg(PIXMIM)
        .args(tiny(&folder, 4))
        .args([":", "-np", "1", PIXMIM]);
    c.args(tiny(&folder, 4)).args(["--set", "optim.blr=0.01"]);
    let o = run(c);
    let said = text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(
        said.contains("the run's config of rank 1 differs from rank 0's"),
        "{said}"
    );
    assert!(!folder.join("metrics.jsonl").exists() && !folder.join("config.toml").exists());

    // Two nodes' copies of a dataset: the same file names, other pixels in one file. The
    // paths may differ (each node mounts its copy where it will); the content may not.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples");
    let copies = [dir.join("data-a"), dir.join("data-b")];
    for copy in &copies {
        std::fs::create_dir_all(copy).unwrap();
        for e in std::fs::read_dir(&samples).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
    }
    let first = copies[1].join("astronaut.jpg");
    image::open(&first).unwrap().fliph().save(&first).unwrap();
    let folder = dir.join("other-pixels");
    let mut c = mpirun(1);
    c.arg(PIXMIM)
        .args(tiny(&folder, 4))
        .args(["--data", copies[0].to_str().unwrap()]);
    c.args([":", "-np", "1", PIXMIM]).args(tiny(&folder, 4));
    c.args(["--data", copies[1].to_str().unwrap()]);
    let o = run(c);
    let said = text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(
        said.contains("the data's content of rank 1 differs from rank 0's"),
        "{said}"
    );
    // The same content at two paths trains.
    let pixels = std::fs::read(copies[0].join(first.file_name().unwrap())).unwrap();
    std::fs::write(&first, pixels).unwrap();
    let mut c = mpirun(1);
    c.arg(PIXMIM)
        .args(tiny(&folder, 2))
        .args(["--data", copies[0].to_str().unwrap()]);
    c.args([":", "-np", "1", PIXMIM]).args(tiny(&folder, 2));
    c.args(["--data", copies[1].to_str().unwrap()]);
    ok(c);

    let o = run(under_mpirun(3, &tiny(&dir.join("three"), 4)));
    let said = text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(
        said.contains("train.batch_size") && said.contains("3 processes"),
        "{said}"
    );

    // NCCL asked for on CPU devices: refused by key before anything is written or trained.
    let mut nccl = tiny(&dir.join("nccl"), 4);
    nccl.extend(["--set".into(), "train.gradient_sync=nccl".into()]);
    let o = run(under_mpirun(2, &nccl));
    let said = text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(
        said.contains("train.gradient_sync") && said.contains("rank(s) 0, 1"),
        "{said}"
    );
    assert!(!dir.join("nccl/metrics.jsonl").exists() && !dir.join("nccl/config.toml").exists());

    let o = run(under_mpirun(
        2,
        &["info".into(), "--method".into(), "mae".into()],
    ));
    let said = text(&o);
    assert_eq!(o.status.code(), Some(2), "{said}");
    assert!(said.contains("`pixmim info` runs in one process"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_times_the_all_reduce_of_mae_base_gradients_over_two_processes() {
    let args: Vec<String> = [
        "bench",
        "--only",
        "allreduce",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = run(under_mpirun(2, &args));
    assert!(o.status.success(), "{}", text(&o));
    // One report (rank 0's), with MAE-B's trainable parameter count.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["allreduce_processes"], 2);
    // On CPU devices `auto` sums on the host, through the process group.
    assert!(v["allreduce_by"].as_str().unwrap().contains("host"), "{v}");
    assert!(v["allreduce_floats"].as_u64().unwrap() > 100_000_000, "{v}");
    assert!(v["allreduce_s"].as_f64().unwrap() > 0.0, "{v}");
}
