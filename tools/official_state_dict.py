#!/usr/bin/env python3
"""Write a state dict in a method's official layout as `torch.save` does, without PyTorch: the
fixtures that `pixmim import` / `export` are tested against (tests/fixtures/pth/README.md).

    tools/official_state_dict.py convmae OUT.pth
    tools/official_state_dict.py lsmae OUT.pth
    tools/official_state_dict.py mff OUT.pth

Key names and shapes are transcribed here from the official module definitions, not from
pixmim's exporter, so a test comparing the two checks pixmim's layout against an independent
statement of the official one:
* convmae: Alpha-VL/ConvMAE `models_convmae.py` (MaskedAutoencoderConvViT) and
  `vision_transformer.py` (PatchEmbed with proj/norm, CBlock with 1x1 `nn.Conv2d`s conv1/conv2,
  depthwise 5x5 `attn`, CMlp fc1/fc2 as 1x1 `nn.Conv2d`s; Block as timm's);
  `stage1_output_decode = nn.Conv2d(embed_dim[0], embed_dim[2], 4, stride=4)` and
  `stage2_output_decode = nn.Conv2d(embed_dim[1], embed_dim[2], 2, stride=2)`.
* lsmae: facebookresearch/long_seq_mae `models_mae.py` (MaskedAutoencoderViT with timm's
  PatchEmbed and Block; decoder_downsampling = pred_downsampling = 1, so no extra convs).
* mff: mmpretrain `MFFViT` / `MAEPretrainDecoder`: `backbone.` / `neck.` keys with mmcv block
  names (`ln1`, `ffn.layers.0.0`, ...), `backbone.proj_layers.k` Linear(D, D) for all but the
  last out-index and `backbone.proj_weights` (n, 1, 1, 1), saved as `{"state_dict": ...}`.

Values are a fixed pseudo-random sequence, so a round trip checks values as well as layout.
The sizes are the small configs the tests pass to `pixmim import` (printed by --print-config).
"""
import argparse
import collections
import io
import os
import struct
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_to_pth import Pickler, Tensor  # noqa: E402  (sets up the torch stand-ins)

# The configurations of the fixtures (as pixmim `--set model.*` overrides).
CONFIGS = {
    "convmae": dict(img=16, patch=[2, 2, 2], dim=[8, 12, 16], depth=[1, 1, 1], heads=2,
                    dec=16, dec_depth=1, dec_heads=2),
    "lsmae": dict(img=16, patch=4, dim=16, depth=1, heads=2, dec=16, dec_depth=1, dec_heads=2),
    "mff": dict(img=16, patch=4, dim=16, depth=3, heads=2, dec=16, dec_depth=1, dec_heads=2,
                out_indices=[0, 2]),
}


def timm_block(sd, pre, d, mlp=4):
    """timm's (and ConvMAE's) ViT Block: pre-norm attention and MLP."""
    h = int(d * mlp)
    sd[pre + "norm1.weight"] = [d]
    sd[pre + "norm1.bias"] = [d]
    sd[pre + "attn.qkv.weight"] = [3 * d, d]
    sd[pre + "attn.qkv.bias"] = [3 * d]
    sd[pre + "attn.proj.weight"] = [d, d]
    sd[pre + "attn.proj.bias"] = [d]
    sd[pre + "norm2.weight"] = [d]
    sd[pre + "norm2.bias"] = [d]
    sd[pre + "mlp.fc1.weight"] = [h, d]
    sd[pre + "mlp.fc1.bias"] = [h]
    sd[pre + "mlp.fc2.weight"] = [d, h]
    sd[pre + "mlp.fc2.bias"] = [d]


def mm_block(sd, pre, d, mlp=4):
    """mmpretrain's TransformerEncoderLayer: the same tensors under mmcv names."""
    h = int(d * mlp)
    sd[pre + "ln1.weight"] = [d]
    sd[pre + "ln1.bias"] = [d]
    sd[pre + "attn.qkv.weight"] = [3 * d, d]
    sd[pre + "attn.qkv.bias"] = [3 * d]
    sd[pre + "attn.proj.weight"] = [d, d]
    sd[pre + "attn.proj.bias"] = [d]
    sd[pre + "ln2.weight"] = [d]
    sd[pre + "ln2.bias"] = [d]
    sd[pre + "ffn.layers.0.0.weight"] = [h, d]
    sd[pre + "ffn.layers.0.0.bias"] = [h]
    sd[pre + "ffn.layers.1.weight"] = [d, h]
    sd[pre + "ffn.layers.1.bias"] = [d]


def convmae(c):
    sd = collections.OrderedDict()
    (p1, p2, p3), (d1, d2, d3) = c["patch"], c["dim"]
    grid = c["img"] // (p1 * p2 * p3)
    for k, (cin, d, p) in enumerate([(3, d1, p1), (d1, d2, p2), (d2, d3, p3)], start=1):
        sd[f"patch_embed{k}.proj.weight"] = [d, cin, p, p]
        sd[f"patch_embed{k}.proj.bias"] = [d]
        sd[f"patch_embed{k}.norm.weight"] = [d]
        sd[f"patch_embed{k}.norm.bias"] = [d]
    sd["patch_embed4.weight"] = [d3, d3]
    sd["patch_embed4.bias"] = [d3]
    sd["stage1_output_decode.weight"] = [d3, d1, 4, 4]
    sd["stage1_output_decode.bias"] = [d3]
    sd["stage2_output_decode.weight"] = [d3, d2, 2, 2]
    sd["stage2_output_decode.bias"] = [d3]
    sd["pos_embed"] = [1, grid * grid, d3]
    for stage, (d, n) in enumerate([(d1, c["depth"][0]), (d2, c["depth"][1])], start=1):
        for i in range(n):
            pre = f"blocks{stage}.{i}."
            sd[pre + "norm1.weight"] = [d]
            sd[pre + "norm1.bias"] = [d]
            sd[pre + "conv1.weight"] = [d, d, 1, 1]
            sd[pre + "conv1.bias"] = [d]
            sd[pre + "conv2.weight"] = [d, d, 1, 1]
            sd[pre + "conv2.bias"] = [d]
            sd[pre + "attn.weight"] = [d, 1, 5, 5]
            sd[pre + "attn.bias"] = [d]
            sd[pre + "norm2.weight"] = [d]
            sd[pre + "norm2.bias"] = [d]
            sd[pre + "mlp.fc1.weight"] = [4 * d, d, 1, 1]
            sd[pre + "mlp.fc1.bias"] = [4 * d]
            sd[pre + "mlp.fc2.weight"] = [d, 4 * d, 1, 1]
            sd[pre + "mlp.fc2.bias"] = [d]
    for i in range(c["depth"][2]):
        timm_block(sd, f"blocks3.{i}.", d3)
    sd["norm.weight"] = [d3]
    sd["norm.bias"] = [d3]
    decoder(sd, "", c["dec"], c["dec_depth"], d3, grid * grid, (p1 * p2 * p3) ** 2 * 3, timm_block)
    return sd, "model"


def decoder(sd, pre, dd, depth, d, tokens, pred, block, norm="decoder_norm"):
    sd[pre + "decoder_embed.weight"] = [dd, d]
    sd[pre + "decoder_embed.bias"] = [dd]
    sd[pre + "mask_token"] = [1, 1, dd]
    sd[pre + "decoder_pos_embed"] = [1, tokens, dd]
    for i in range(depth):
        block(sd, f"{pre}decoder_blocks.{i}.", dd)
    sd[pre + norm + ".weight"] = [dd]
    sd[pre + norm + ".bias"] = [dd]
    sd[pre + "decoder_pred.weight"] = [pred, dd]
    sd[pre + "decoder_pred.bias"] = [pred]


def lsmae(c):
    sd = collections.OrderedDict()
    d, p = c["dim"], c["patch"]
    n = (c["img"] // p) ** 2
    sd["cls_token"] = [1, 1, d]
    sd["pos_embed"] = [1, n + 1, d]
    sd["patch_embed.proj.weight"] = [d, 3, p, p]
    sd["patch_embed.proj.bias"] = [d]
    for i in range(c["depth"]):
        timm_block(sd, f"blocks.{i}.", d)
    sd["norm.weight"] = [d]
    sd["norm.bias"] = [d]
    decoder(sd, "", c["dec"], c["dec_depth"], d, n + 1, p * p * 3, timm_block)
    return sd, "model"


def mff(c):
    sd = collections.OrderedDict()
    d, p = c["dim"], c["patch"]
    n = (c["img"] // p) ** 2
    sd["backbone.cls_token"] = [1, 1, d]
    sd["backbone.pos_embed"] = [1, n + 1, d]
    sd["backbone.patch_embed.projection.weight"] = [d, 3, p, p]
    sd["backbone.patch_embed.projection.bias"] = [d]
    for i in range(c["depth"]):
        mm_block(sd, f"backbone.layers.{i}.", d)
    sd["backbone.ln1.weight"] = [d]
    sd["backbone.ln1.bias"] = [d]
    for k in range(len(c["out_indices"]) - 1):
        sd[f"backbone.proj_layers.{k}.weight"] = [d, d]
        sd[f"backbone.proj_layers.{k}.bias"] = [d]
    sd["backbone.proj_weights"] = [len(c["out_indices"]), 1, 1, 1]
    decoder(sd, "neck.", c["dec"], c["dec_depth"], d, n + 1, p * p * 3, mm_block, norm="ln1")
    return sd, "state_dict"


def values(n, state):
    """A fixed LCG in [-0.5, 0.5): reproducible without numpy."""
    out = []
    for _ in range(n):
        state[0] = (state[0] * 1664525 + 1013904223) % (1 << 32)
        out.append((state[0] >> 8) / (1 << 24) - 0.5)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=sorted(CONFIGS))
    ap.add_argument("dst")
    a = ap.parse_args()
    shapes, key = {"convmae": convmae, "lsmae": lsmae, "mff": mff}[a.method](CONFIGS[a.method])
    state, blobs, rng = collections.OrderedDict(), {}, [12345]
    for i, (name, shape) in enumerate(shapes.items()):
        numel = 1
        for s in shape:
            numel *= s
        state[name] = Tensor(str(i), shape)
        blobs[str(i)] = struct.pack(f"<{numel}f", *values(numel, rng))
    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump({key: state, "epoch": 1})
    with zipfile.ZipFile(a.dst, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        for k, raw in blobs.items():
            z.writestr(f"archive/data/{k}", raw)
        z.writestr("archive/version", "3\n")
    print(f"{a.dst}: {len(state)} tensors")


if __name__ == "__main__":
    main()
