#!/usr/bin/env python3
"""PyTorch reference for `pixmim bench`: the MAE training step of the official recipe (spec
§1.2-1.3), written from the spec in plain PyTorch (no timm): mask ratio 0.75, norm_pix loss,
AdamW (0.9, 0.95), wd 0.05 on weights only, and on a GPU AMP fp16 with a GradScaler as the
official `main_pretrain.py`. Prints one JSON line.

  --preset base: ViT-B/16 encoder, 512-wide 8-block decoder, 224 px (the GPU comparison);
  --preset tiny: pixmim's `tiny` preset, 32 px, patch 4, 192 x 4 (3 heads), decoder 128 x 2
                 (4 heads): the CPU comparison of issue 7 (`pixmim bench --only steps`).

    python3 bench/torch/mae_step.py --batch 256 --steps 50 [--no-amp [--tf32]] [--compile]
    python3 bench/torch/mae_step.py --device cpu --preset tiny --batch 64 --steps 10
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(dim, grid, cls=True):
    # Official orientation (numerics §0.3): first half encodes the column.
    import numpy as np

    q = dim // 4
    omega = 1.0 / 10000 ** (np.arange(q, dtype=np.float64) / q)
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    c = cols.reshape(-1)[:, None] * omega[None]
    r = rows.reshape(-1)[:, None] * omega[None]
    pe = np.concatenate([np.sin(c), np.cos(c), np.sin(r), np.cos(r)], axis=1)
    if cls:
        pe = np.concatenate([np.zeros((1, dim)), pe], axis=0)
    return torch.from_numpy(pe).float().unsqueeze(0)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)
        self.heads = heads

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class MAE(nn.Module):
    def __init__(self, img=224, p=16, dim=768, depth=12, heads=12, ddim=512, ddepth=8, dheads=16):
        super().__init__()
        self.p, self.g = p, img // p
        self.patch_embed = nn.Conv2d(3, dim, p, p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, self.g))
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.register_buffer("decoder_pos_embed", sincos_2d(ddim, self.g))
        self.decoder_blocks = nn.ModuleList([Block(ddim, dheads) for _ in range(ddepth)])
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, p * p * 3)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, imgs):
        b, p, g = imgs.shape[0], self.p, self.g
        x = imgs.reshape(b, 3, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, g * g, p * p * 3)

    def forward(self, imgs, ratio=0.75):
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        b, l, d = x.shape
        keep = int(l * (1 - ratio))
        noise = torch.rand(b, l, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        mask = torch.ones(b, l, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        m = self.mask_token.expand(b, l + 1 - x.shape[1], -1)
        y = torch.cat([x[:, 1:], m], 1)
        y = torch.gather(y, 1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], y], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        t = self.patchify(imgs)
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred.float() - t) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


PRESETS = {
    "base": dict(img=224, p=16, dim=768, depth=12, heads=12, ddim=512, ddepth=8, dheads=16),
    "tiny": dict(img=32, p=4, dim=192, depth=4, heads=3, ddim=128, ddepth=2, dheads=4),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="base")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument(
        "--tf32",
        action="store_true",
        help="fp32 with TF32 tensor-core matmuls: what burn-cuda's f32 matmuls do (README, GPU)",
    )
    a = ap.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    amp = cuda and not a.no_amp  # the official recipe's AMP is fp16 on the GPU only
    if a.threads:
        torch.set_num_threads(a.threads)
    # PyTorch's default fp32 matmul keeps full f32 inputs; cubek (burn-cuda 0.21) rounds f32
    # inputs to TF32 in its tensor-core kernels, so `--tf32` is the like-for-like comparison.
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    cfg = PRESETS[a.preset]
    model = MAE(**cfg).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(".bias"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1.5e-4 * a.batch / 256,
        betas=(0.9, 0.95),
    )
    scaler = torch.amp.GradScaler(enabled=amp)
    step_model = torch.compile(model) if a.compile else model
    imgs = torch.randn(a.batch, 3, cfg["img"], cfg["img"], device=dev)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            loss = step_model(imgs)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    step = times[len(times) // 2]
    img_s = a.batch / step
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                "threads": torch.get_num_threads(),
                "preset": a.preset,
                "amp_fp16": amp,
                "tf32": a.tf32 and not amp,
                "compile": a.compile,
                "batch": a.batch,
                "step_s": step,
                "img_s": img_s,
                # numerics §1.2: MAE-B is ~59 GFLOP per image forward + backward
                "tflops": 59.0 * img_s / 1e3 if a.preset == "base" else None,
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                # what the caching allocator held, beside burn's pools' "reserved"
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
                "loss": loss.item(),
            }
        )
    )


if __name__ == "__main__":
    main()
