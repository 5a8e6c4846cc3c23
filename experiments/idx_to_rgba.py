#!/usr/bin/env python3
"""Write the first N images of an IDX file (MNIST format, optionally gzipped) as RGBA PNGs
whose alpha channel is the foreground (grey > THRESHOLD), for `pixmim analyze coverage`.
Fashion-MNIST objects lie on a black background, so the threshold is the object mask.
Standard library only.

usage: idx_to_rgba.py IMAGES_IDX OUT_DIR [N=200] [THRESHOLD=0]
"""
import gzip
import os
import struct
import sys
import zlib


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim != 3:
        sys.exit(f"{path}: not a u8 IDX images file")
    n, rows, cols = struct.unpack(">III", data[4:16])
    return n, rows, cols, data[16:]


def png_rgba(path, w, h, rgba):
    def chunk(kind, body):
        c = struct.pack(">I", len(body)) + kind + body
        return c + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + rgba[y * w * 4:(y + 1) * w * 4] for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    threshold = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    n, rows, cols, pixels = read_idx(src)
    os.makedirs(out, exist_ok=True)
    for i in range(min(count, n)):
        img = pixels[i * rows * cols:(i + 1) * rows * cols]
        rgba = bytearray()
        for v in img:
            rgba += bytes((v, v, v, 255 if v > threshold else 0))
        png_rgba(os.path.join(out, f"{i:05d}.png"), cols, rows, bytes(rgba))


if __name__ == "__main__":
    main()
