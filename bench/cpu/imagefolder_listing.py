#!/usr/bin/env python3
"""How long torchvision's ImageFolder takes to list a folder, for `pixmim bench --only listing`
to be compared with on the same machine (issue 40). torchvision is not installed here, so its
listing is written out as `torchvision.datasets.folder` does it: the classes are the sorted
`os.scandir` entries of the root that are folders; each class folder is walked with
`os.walk(followlinks=True)`, sorted, keeping files whose lower-cased name ends in one of
ImageFolder's extensions; one (path, class index) tuple per image.

    python3 bench/cpu/imagefolder_listing.py ROOT [--rounds 3]

prints one JSON object: files and the median seconds.
"""
import argparse
import json
import os
import statistics
import time

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def list_like_imagefolder(root):
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for c in classes:
        folder = os.path.join(root, c)
        for dirpath, _, names in sorted(os.walk(folder, followlinks=True)):
            for name in sorted(names):
                if name.lower().endswith(EXTENSIONS):
                    items.append((os.path.join(dirpath, name), index[c]))
    return items


def main():
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    times, n = [], 0
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        n = len(list_like_imagefolder(a.root))
        times.append(time.perf_counter() - t0)
    print(json.dumps({"files": n, "seconds": statistics.median(times), "all": times}))


if __name__ == "__main__":
    main()
