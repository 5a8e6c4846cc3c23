#!/usr/bin/env python3
"""Write a safetensors state dict as a PyTorch zip checkpoint (`torch.save` format), without
PyTorch: the fixtures for `pixmim import` tests of the `.pth` path.

    tools/safetensors_to_pth.py IN.safetensors OUT.pth --key model [--mm]

The file is what `torch.save({KEY: state_dict}, OUT)` writes: a zip with `archive/data.pkl`
(protocol 2 pickle; tensors rebuilt by `torch._utils._rebuild_tensor_v2` from persistent
`('storage', torch.FloatStorage, key, 'cpu', numel)` ids), one raw little-endian float32 file per
tensor under `archive/data/`, `archive/byteorder` and `archive/version`. `--mm` renames keys to the
mmselfsup layout (numerics §0.9) the way pixmim's own exporter does, so the test checks the mapping
against an independent implementation.
"""
import argparse
import collections
import json
import pickle
import struct
import sys
import types
import zipfile

# Stand-ins so pickle writes the same GLOBAL references torch.save does.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


class FloatStorage:
    pass


def _rebuild_tensor_v2(*args):  # never called here; only its name is pickled
    raise NotImplementedError


FloatStorage.__module__ = "torch"
_rebuild_tensor_v2.__module__ = "torch._utils"
torch.FloatStorage = FloatStorage
torch._utils = torch_utils
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class Tensor:
    def __init__(self, key, shape):
        self.key, self.shape = key, tuple(shape)

    def __reduce__(self):
        numel = 1
        for d in self.shape:
            numel *= d
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (
            _rebuild_tensor_v2,
            (StorageRef(self.key, numel), 0, self.shape, tuple(stride), False, collections.OrderedDict()),
        )


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header.pop("__metadata__", None)
    body = blob[8 + n :]
    out = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: only F32 is supported, got {info['dtype']}")
        a, b = info["data_offsets"]
        out[name] = (info["shape"], body[a:b])
    return out


BLOCK = [("norm1.", "ln1."), ("norm2.", "ln2."), ("mlp.fc1.", "ffn.layers.0.0."), ("mlp.fc2.", "ffn.layers.1.")]
TOP = [
    ("patch_embed.proj.", "backbone.patch_embed.projection."),
    ("blocks.", "backbone.layers."),
    ("norm.", "backbone.ln1."),
    ("decoder_blocks.", "neck.decoder_blocks."),
    ("decoder_norm.", "neck.ln1."),
    ("decoder_embed.", "neck.decoder_embed."),
    ("decoder_pred.", "neck.decoder_pred."),
    ("decoder_pos_embed", "neck.decoder_pos_embed"),
    ("mask_token", "neck.mask_token"),
]


def to_mm(name):
    for old, new in TOP:
        if name.startswith(old):
            rest = name[len(old) :]
            if old.endswith("blocks."):
                idx, tail = rest.split(".", 1)
                for o, m in BLOCK:
                    if tail.startswith(o):
                        tail = m + tail[len(o) :]
                        break
                return f"{new}{idx}.{tail}"
            return new + rest
    return "backbone." + name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--key", default="model")
    ap.add_argument("--mm", action="store_true")
    a = ap.parse_args()
    tensors = read_safetensors(a.src)
    state = collections.OrderedDict()
    blobs = {}
    for i, name in enumerate(sorted(k for k in tensors if not k.startswith("optim."))):
        shape, raw = tensors[name]
        state[to_mm(name) if a.mm else name] = Tensor(str(i), shape)
        blobs[str(i)] = raw
    if a.mm:  # what a PixMIM checkpoint also carries
        state["target_generator.low_pass_filter"] = Tensor("lpf", [1])
        blobs["lpf"] = struct.pack("<f", 1.0)
    pkl = __import__("io").BytesIO()
    Pickler(pkl, protocol=2).dump({a.key: state, "epoch": 1})
    with zipfile.ZipFile(a.dst, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, raw in blobs.items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main()
