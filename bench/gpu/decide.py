#!/usr/bin/env python3
"""The decision table of a `bench/gpu/run.sh` run: every pixmim build and precision it timed
beside PyTorch on the same card, against issue 27's goals (MAE-B at batch BATCH: at least
PyTorch AMP's images/s with pixmim's bf16, at least 35% of the card's bf16 peak, device memory
no more than PyTorch's). Reads OUT/pixmim-bench*.json and OUT/torch.jsonl, writes
OUT/decision.md and prints it. Standard library only (the device machine has no extra packages).

    python3 bench/gpu/decide.py bench/results/gpu-2026-12-01 [--preset base]
"""
import argparse
import json
import pathlib

# pixmim-bench.json is the default build; the others are the builds run.sh names so.
BUILDS = [
    ("pixmim-bench.json", "default (no fusion, no autotune)"),
    ("pixmim-bench-checkpointing.json", "default, activation checkpointing"),
    ("pixmim-bench-fusion.json", "fusion"),
    ("pixmim-bench-tuned.json", "fusion + autotune, tuned cache"),
]


def load_json(path):
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        return None
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return None


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--preset", default="base")
    ap.add_argument("--method", default="mae")
    a = ap.parse_args()

    torch = {}
    torch_path = a.out / "torch.jsonl"
    if torch_path.exists():
        for line in torch_path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            name = "amp" if r.get("amp_fp16") else ("tf32" if r.get("tf32") else "fp32")
            torch[name] = r
    amp = torch.get("amp", {})
    amp_img_s = amp.get("img_s")
    amp_mem = amp.get("peak_reserved_gib")

    rows = []
    card = None
    for file, build in BUILDS:
        report = load_json(a.out / file)
        if report is None:
            continue
        card = card or report.get("card")
        for key, step in sorted(report.get("steps", {}).items()):
            parts = key.split("/")
            if parts[0] != a.method or parts[1] != a.preset:
                continue
            precision = parts[2] if len(parts) > 2 else "f32"
            img_s = step.get("img_s")
            rows.append(
                {
                    "build": build,
                    "precision": precision,
                    "img_s": img_s,
                    "mfu": step.get("mfu_pct"),
                    "reserved": step.get("device_mem_reserved_gib"),
                    "vs_amp": img_s / amp_img_s if img_s and amp_img_s else None,
                    "goal": (
                        precision == "bf16"
                        and img_s is not None
                        and amp_img_s is not None
                        and img_s >= amp_img_s
                        and (step.get("mfu_pct") or 0) >= 35
                        and (
                            amp_mem is None
                            or (step.get("device_mem_reserved_gib") or 0) <= amp_mem
                        )
                    ),
                }
            )

    lines = [
        f"# Decision table: {a.method.upper()} ({a.preset}) training step"
        + (f" on {card}" if card else ""),
        "",
        "| build | precision | img/s | x PyTorch AMP | MFU % | reserved GiB | goal met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("amp", "tf32", "fp32"):
        r = torch.get(name)
        if r:
            vs = r["img_s"] / amp_img_s if amp_img_s else None
            lines.append(
                f"| PyTorch {name} | {'fp16' if name == 'amp' else 'f32'} | {fmt(r['img_s'], '.1f')} "
                f"| {fmt(vs, '.2f')} | - | {fmt(r.get('peak_reserved_gib'), '.1f')} | (reference) |"
            )
    for r in rows:
        lines.append(
            f"| pixmim {r['build']} | {r['precision']} | {fmt(r['img_s'], '.1f')} "
            f"| {fmt(r['vs_amp'], '.2f')} | {fmt(r['mfu'], '.1f')} | {fmt(r['reserved'], '.1f')} "
            f"| {'yes' if r['goal'] else 'no'} |"
        )
    best = max(
        (r for r in rows if r["img_s"] is not None),
        key=lambda r: r["img_s"],
        default=None,
    )
    lines.append("")
    if best is None:
        lines.append(f"No pixmim {a.method}/{a.preset} step was timed: see gpu.log.")
    else:
        lines.append(
            f"Fastest pixmim configuration: {best['build']}, {best['precision']} "
            f"({fmt(best['img_s'], '.1f')} img/s, {fmt(best['vs_amp'], '.2f')}x PyTorch AMP). "
            "Goal: bf16 at least PyTorch AMP's images/s, at least 35% MFU, reserved memory at "
            "most PyTorch AMP's."
        )
    text = "\n".join(lines) + "\n"
    (a.out / "decision.md").write_text(text)
    print(text, end="")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
