#!/usr/bin/env python3
"""Makes this folder's JPEG decode vectors (see README.md): JPEGs of an odd-sized crop of
scikit-image's astronaut photo (data/samples/astronaut.jpg) in the layouts datasets hold, each
beside the pixels Pillow decodes it to, stored losslessly as PNG.

    python3 tests/vectors/jpeg/make.py [PATH/TO/skimage/data/coffee.png]
"""
import pathlib

from PIL import Image, features

here = pathlib.Path(__file__).parent
photo = Image.open(here / "../../../data/samples/astronaut.jpg").convert("RGB")
crop = photo.crop((101, 37, 101 + 203, 37 + 157))  # 203 x 157: no side a multiple of 8 or 16
cases = {
    "baseline_420": dict(quality=85),
    "baseline_444": dict(quality=92, subsampling=0),
    "progressive_420": dict(quality=80, progressive=True),
}
for name, opts in cases.items():
    crop.save(here / f"{name}.jpg", **opts)
crop.convert("L").save(here / "grey.jpg", quality=85)

# The resize of a crop (RandomResizedCrop's `img.resize(size, BICUBIC, box=...)`) of a real
# 600 x 400 photo (scikit-image's coffee.png, CC0, from the scikit-image wheel), at output
# sizes where the crop shrinks by under 2x, 2-4x, 4-8x and over 8x.
import json
import sys

coffee = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None
if coffee:
    Image.open(coffee).convert("RGB").save(here / "coffee.jpg", quality=90)
    img = Image.open(here / "coffee.jpg").convert("RGB")
    cases = []
    for i, box in enumerate([(0, 0, 600, 400), (57, 31, 380, 301), (250, 120, 233, 201)]):
        for size in (160, 112, 48, 24):
            l, t, w, h = box
            out = img.resize((size, size), Image.BICUBIC, box=(l, t, l + w, t + h))
            name = f"coffee.box{i}.{size}.pil.png"
            out.save(here / name)
            cases.append({"box": box, "size": size, "file": name})
    (here / "coffee_resized.json").write_text(json.dumps(cases, indent=1) + "\n")

for jpg in sorted(j for j in here.glob("*.jpg") if j.stem != "coffee"):
    Image.open(jpg).convert("RGB").save(jpg.with_suffix(".pil.png"))
print("Pillow", Image.__version__, "libjpeg-turbo", features.version("libjpeg_turbo"))
