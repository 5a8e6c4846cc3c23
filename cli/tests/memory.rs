//! Issue 24: the memory pre-flight. The design card's headline command at the base preset is
//! refused before training on a machine too small for it, naming the numbers and what fits;
//! the estimate `info` prints is close to the peak a tiny run measures.
mod common;
use common::{command, text, tmp};

/// The number after `marker` in `out`, in GiB when a unit (GiB, MiB) follows it.
fn gib_after(out: &str, marker: &str) -> f64 {
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in {out}"));
    let mut words = out[at + marker.len()..].split_whitespace();
    let v: f64 = words
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure after `{marker}` in {out}"));
    match words.next() {
        Some(u) if u.starts_with("MiB") => v / 1024.0,
        _ => v,
    }
}

#[test]
fn the_headline_command_is_refused_when_it_cannot_fit() {
    let out = tmp("memory-refused");
    let o = command()
        .args([
            "train", "--method", "convmae", "--plugin", "pixmim", "--steps", "1", "--out",
        ])
        .arg(&out)
        .env("PIXMIM_MEMORY_AVAILABLE", "12G")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("train.batch_size"), "names the key: {t}");
    assert!(
        t.contains("12.00 GiB available"),
        "names what is available: {t}"
    );
    let need = gib_after(&t, "needs about ");
    assert!(need > 12.0, "the estimate exceeds it: {t}");
    // What fits keeps the effective batch: batch_size x accum_iter = 128 x 24.
    let b = gib_after(&t.replace('=', " "), "train.batch_size ");
    let a = gib_after(&t.replace('=', " "), "train.accum_iter ");
    assert_eq!(b * a, 128.0 * 24.0, "{t}");
    assert!(
        t.contains("train.memory_check=false"),
        "says how to override: {t}"
    );
    // Refused before anything is written: not even an empty run folder is left behind.
    assert!(!out.exists(), "{} was created", out.display());
    // The suggestion itself passes the check.
    let o = command()
        .args(["info", "--method", "convmae", "--plugin", "pixmim", "--set"])
        .arg(format!("train.batch_size={b}"))
        .args(["--set", &format!("train.accum_iter={a}")])
        .env("PIXMIM_MEMORY_AVAILABLE", "12G")
        .output()
        .unwrap();
    assert!(text(&o).contains("(fits)"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&out);
}

/// The estimate against the peak resident memory of short tiny runs of every method, at a
/// batch where activations are a real part of it.
#[test]
fn the_estimate_is_close_to_the_measured_peak_of_tiny_runs() {
    for method in pixmim::registry::methods().iter().map(|m| m.name()) {
        let out = tmp(&format!("memory-{method}"));
        let sets = [
            "--set",
            "train.batch_size=64",
            "--set",
            "train.num_workers=1",
        ];
        let o = command()
            .args(["info", "--method", method, "--preset", "tiny"])
            .args(sets)
            .output()
            .unwrap();
        let estimate = gib_after(&text(&o), "at batch 64: about ");
        let o = command()
            .args([
                "train", "--method", method, "--preset", "tiny", "--steps", "3", "--out",
            ])
            .arg(&out)
            .args(sets)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let peak = gib_after(&text(&o), "peak memory ");
        let ratio = peak / estimate;
        eprintln!("{method}: estimate {estimate:.3} GiB, peak {peak:.3} GiB, ratio {ratio:.2}");
        assert!(
            (0.5..=1.5).contains(&ratio),
            "{method}: peak {peak} vs estimate {estimate}"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}
