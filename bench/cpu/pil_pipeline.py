#!/usr/bin/env python3
"""The PIL + torchvision data pipeline of MAE (RRC) and PixMIM (SRC), for `pixmim bench`'s
pipeline rows to be compared with on the same machine in the same minute (issue 7).

Same work as pixmim's pipeline benchmark: decode a JPEG from bytes already in memory, crop,
resize to 224 (antialiased, PIL), flip, ToTensor + Normalize. torchvision is not installed here,
so its transforms are written out as it does them on a PIL image (spec 1.4, 2.2):
RandomResizedCrop = get_params (10 tries, then the centre fallback) + img.resize(box=..., BICUBIC);
SRC = Resize(224, BILINEAR) + reflect-pad-4 RandomCrop(224) + flip. numpy does ToTensor/Normalize.

    python3 bench/cpu/pil_pipeline.py DIR [--transforms rrc,src] [--secs 3] [--rounds 3]

prints one JSON object: images/s on one core (median of the rounds) per transform.
`pixmim bench --compare-pil` runs it between its own windows.
"""
import argparse
import io
import json
import math
import pathlib
import random
import statistics
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
SIZE = 224


def to_tensor_normalise(img):
    # ToTensor: bytes permuted to CHW and made contiguous, then float and /255; Normalize in
    # place, as torchvision does (numpy's copies would otherwise cost more than torch's).
    t = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)).astype(np.float32)
    t /= 255.0
    t -= MEAN
    t /= STD
    return t


def rrc(img, rng):
    w, h = img.size
    area = w * h
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(0.2, 1.0)
        ar = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            top = rng.randint(0, h - ch)
            left = rng.randint(0, w - cw)
            break
    else:
        cw, ch, top, left = w, h, 0, 0
    out = img.resize((SIZE, SIZE), Image.BICUBIC, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return to_tensor_normalise(out)


def src(img, rng):
    w, h = img.size
    if w <= h:
        nw, nh = SIZE, int(SIZE * h / w)
    else:
        nw, nh = int(SIZE * w / h), SIZE
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    a = np.pad(np.asarray(img), ((4, 4), (4, 4), (0, 0)), mode="reflect")
    top = rng.randint(0, a.shape[0] - SIZE)
    left = rng.randint(0, a.shape[1] - SIZE)
    a = a[top : top + SIZE, left : left + SIZE]
    if rng.random() < 0.5:
        a = a[:, ::-1]
    return to_tensor_normalise(a)


def rate(blobs, transform, secs):
    rng = random.Random(0)
    done, t0 = 0, time.perf_counter()
    while done == 0 or time.perf_counter() - t0 < secs:
        img = Image.open(io.BytesIO(blobs[done % len(blobs)])).convert("RGB")
        transform(img, rng)
        done += 1
    return done / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--transforms", default="rrc,src")
    a = ap.parse_args()
    files = sorted(p for p in a.dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"{a.dir}: no .jpg files")
    blobs = [p.read_bytes() for p in files]
    out = {"pil": Image.__version__, "images": len(blobs)}
    for name in a.transforms.split(","):
        t = {"rrc": rrc, "src": src}[name]
        rates = [rate(blobs, t, a.secs) for _ in range(a.rounds)]
        out[f"pil_{name}_img_s_1core"] = statistics.median(rates)
        out[f"pil_{name}_img_s_rounds"] = rates
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
