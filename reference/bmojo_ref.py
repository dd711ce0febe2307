"""An independent PyTorch reference of the bmojo model (../shared/SPEC.md), written plainly.

It reads the same safetensors checkpoints as bmojo (tensors under bmojo's parameter names, the run's config
in the metadata) and can write one back, and computes logits, the cross-entropy and the innovation loss with
autograd doing the backward pass. The selective scan is the sequential definition and attention builds the
full T x T score matrices with masks: slow, but nothing in it is shared with the C++ engine.

Run with Debian's PyTorch: /usr/bin/python3 (python3-torch).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100

# Config defaults: the same as bmojo's ModelConfig (src/model/config.hpp).
MODEL_DEFAULTS = {
    "vocab_size": 8192, "d_model": 64, "n_heads": 2, "n_kv_heads": 0, "layers": "AA", "window": 0,
    "d_ff": 0, "d_state": 16, "expand": 2, "d_conv": 4, "dt_rank": 0, "rope_base": 10000.0,
    "norm_eps": 1e-5, "tie_embeddings": True, "fading": True, "tie_fading": True, "k": 4, "m": 64,
    "tau": 0.0, "lambda_innov": 0.1, "eviction": "fifo",
}
NO_DECAY_SUFFIXES = ("norm1", "norm2", "norm_f", "conv_bias", "dt_bias", "A_log", ".D")


def load_safetensors(path):
    """Returns ({name: float32 tensor}, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, spec in header.items():
        if spec["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} has dtype {spec['dtype']}, expected F32")
        a, b = spec["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype="<f4").reshape(spec["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return tensors, meta


def save_safetensors(path, tensors, meta):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        arr = t.detach().to(torch.float32).contiguous().numpy().astype("<f4")
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    # bmojo's checksum covers the tensors it wrote; this writer changes them, so it leaves the checksum out
    # (bmojo then loads the file like one from an older writer, with a notice).
    header["__metadata__"] = {k: v for k, v in meta.items() if k != "checksum"}
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


class Cfg:
    def __init__(self, model_json):
        unknown = set(model_json) - set(MODEL_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown model keys {sorted(unknown)}")
        for key, value in {**MODEL_DEFAULTS, **model_json}.items():
            setattr(self, key, value)
        self.hk = self.n_kv_heads or self.n_heads
        self.dh = self.d_model // self.n_heads
        self.d_inner = self.expand * self.d_model
        self.rank = self.dt_rank or (self.d_model + 15) // 16


def rmsnorm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def rope(x, base):
    """x (B, T, heads, Dh), rotate-half convention, position t for row t."""
    T, dh = x.shape[1], x.shape[-1]
    half = dh // 2
    freq = torch.tensor([base ** (-2.0 * i / dh) for i in range(half)], dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
    c, s = torch.cos(ang).float()[None, :, None, :], torch.sin(ang).float()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def mamba(u, p, pre, cfg):
    """SPEC section 2 with the sequential scan. u (B, T, D) -> (B, T, D)."""
    C, N, R, K = cfg.d_inner, cfg.d_state, cfg.rank, cfg.d_conv
    xz = u @ p[pre + "in_proj"]
    x, z = xz[..., :C], xz[..., C:]
    xt = F.pad(x.transpose(1, 2), (K - 1, 0))
    x = F.silu(F.conv1d(xt, p[pre + "conv_weight"][:, None, :], p[pre + "conv_bias"], groups=C).transpose(1, 2))
    dbc = x @ p[pre + "x_proj"]
    d, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    dt = F.softplus(d @ p[pre + "dt_proj"] + p[pre + "dt_bias"], beta=1.0, threshold=20.0)
    A = -torch.exp(p[pre + "A_log"])
    s = torch.zeros(u.shape[0], C, N)
    ys = []
    for t in range(u.shape[1]):
        s = torch.exp(dt[:, t, :, None] * A) * s + (dt[:, t] * x[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((s * Cm[:, t, None, :]).sum(-1) + p[pre + "D"] * x[:, t])
    y = torch.stack(ys, dim=1)
    return (y * F.silu(z)) @ p[pre + "out_proj"]


def eidetic_plan(scores, cfg):
    """scores (T,) of one sequence -> per chunk, the set of memory positions held before it (SPEC 4)."""
    T, W = len(scores), cfg.window
    memory, before = [], []  # memory: [(position, score)]
    for c in range(math.ceil(T / W)):
        before.append({pos for pos, _ in memory})
        if (c + 1) * W > T:
            break
        cand = [(q, scores[q]) for q in range(c * W, (c + 1) * W) if scores[q] >= cfg.tau]
        cand.sort(key=lambda e: (-e[1], e[0]))
        memory += sorted(cand[:cfg.k])
        while len(memory) > cfg.m:
            if cfg.eviction == "fifo":
                victim = min(memory, key=lambda e: e[0])
            else:
                victim = min(memory, key=lambda e: (e[1], e[0]))
            memory.remove(victim)
    return before


def mixer_attention(xn, p, pre, cfg, kind):
    """A, F and B mixers (SPEC sections 3-4). Returns (output (B, T, D), innovation mean or None)."""
    B, T, D = xn.shape
    H, Hk, dh, W = cfg.n_heads, cfg.hk, cfg.dh, cfg.window
    rep = H // Hk
    scale = dh ** -0.5
    wqkv = p[pre + "attn.wqkv"]
    qkv = xn @ wqkv
    q = qkv[..., :H * dh].reshape(B, T, H, dh)
    k = qkv[..., H * dh:(H + Hk) * dh].reshape(B, T, Hk, dh)
    v = qkv[..., (H + Hk) * dh:].reshape(B, T, Hk, dh)
    qr, kr = rope(q, cfg.rope_base), rope(k, cfg.rope_base)
    heads = lambda t: t.repeat_interleave(rep, dim=2)  # KV head h // rep serves query head h
    tpos = torch.arange(T)[:, None]
    spos = torch.arange(T)[None, :]

    blocks = []  # (scores (B, H, T, S), mask (B or 1, 1, T, S), values (B, S, H, dh))
    window_mask = (spos <= tpos) & ((spos >= tpos - W + 1) if W > 0 else torch.ones(T, T, dtype=torch.bool))
    blocks.append((torch.einsum("bthd,bshd->bhts", qr, heads(kr)) * scale, window_mask[None, None], heads(v)))

    innovation = None
    ssm = kind in "FB" and (cfg.fading or kind == "B")
    if ssm:
        y = mamba(xn, p, pre + "mamba.", cfg)
    if kind in "FB" and cfg.fading:
        if cfg.tie_fading:
            wkf, wvf = wqkv[:, H * dh:(H + Hk) * dh], wqkv[:, (H + Hk) * dh:]
        else:
            wkvf = p[pre + "attn.wkvf"]
            wkf, wvf = wkvf[:, :Hk * dh], wkvf[:, Hk * dh:]
        kf = rope((y @ wkf).reshape(B, T, Hk, dh), cfg.rope_base)
        vf = (y @ wvf).reshape(B, T, Hk, dh)
        fading_mask = (spos >= tpos - 2 * W + 1) & (spos <= tpos - W)
        blocks.append((torch.einsum("bthd,bshd->bhts", qr, heads(kf)) * scale, fading_mask[None, None], heads(vf)))
    if kind == "B":
        y_prev = torch.cat([torch.zeros(B, 1, D), y[:, :-1]], dim=1)
        e = xn.detach() - y_prev @ p[pre + "innovation.P"]
        s = e.pow(2).sum(-1) / D  # (B, T)
        innovation = s.mean()
        if cfg.k > 0 and cfg.m > 0:
            mask = torch.zeros(B, T, T, dtype=torch.bool)
            for b in range(B):
                plan = eidetic_plan(s[b].detach().tolist(), cfg)
                for t in range(T):
                    for pos in plan[t // W]:
                        if pos <= t - W:
                            mask[b, t, pos] = True
            # Position-free entries: the query before rotation against the entry's unrotated key.
            blocks.append((torch.einsum("bthd,bshd->bhts", q, heads(k)) * scale, mask[:, None], heads(v)))

    scores = torch.cat([torch.where(m, sc, torch.tensor(float("-inf"))) for sc, m, _ in blocks], dim=-1)
    probs = torch.softmax(scores, dim=-1)
    out, at = 0, 0
    for sc, _, vals in blocks:
        width = sc.shape[-1]
        out = out + torch.einsum("bhts,bshd->bthd", probs[..., at:at + width], vals)
        at += width
    return out.reshape(B, T, H * dh) @ p[pre + "attn.wo"], innovation


class Reference(torch.nn.Module):
    def __init__(self, model_json, tensors):
        super().__init__()
        self.cfg = Cfg(model_json)
        self.names = list(tensors)
        for name, t in tensors.items():
            self.register_parameter(name.replace(".", "__"), torch.nn.Parameter(t.clone()))

    def params(self):
        return {n: getattr(self, n.replace(".", "__")) for n in self.names}

    def forward(self, tokens, targets=None):
        """tokens, targets (B, T) int64. Returns (logits, cross-entropy, innovation loss)."""
        cfg, p = self.cfg, self.params()
        h = p["embedding"][tokens]
        innovation = torch.zeros(())
        for i, kind in enumerate(cfg.layers):
            pre = f"layers.{i}."
            xn = rmsnorm(h, p[pre + "norm1"], cfg.norm_eps)
            if kind == "M":
                h = h + mamba(xn, p, pre + "mamba.", cfg)
            else:
                out, inn = mixer_attention(xn, p, pre, cfg, kind)
                h = h + out
                if inn is not None:
                    innovation = innovation + cfg.lambda_innov * inn
            if cfg.d_ff > 0:
                xn = rmsnorm(h, p[pre + "norm2"], cfg.norm_eps)
                gu = xn @ p[pre + "mlp.w_in"]
                h = h + (F.silu(gu[..., :cfg.d_ff]) * gu[..., cfg.d_ff:]) @ p[pre + "mlp.w_out"]
        h = rmsnorm(h, p["norm_f"], cfg.norm_eps)
        head = p["embedding"] if cfg.tie_embeddings else p["lm_head"]
        logits = h @ head.T
        ce = None
        if targets is not None:
            ce = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1), ignore_index=IGNORE)
        return logits, ce, innovation


def adamw_for(model, train_json):
    """torch.optim.AdamW with bmojo's groups: no weight decay on norms, biases, A_log, D (SPEC section 7)."""
    decay, no_decay = [], []
    for name, param in model.params().items():
        (no_decay if name.endswith(NO_DECAY_SUFFIXES) else decay).append(param)
    t = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "adam_eps": 1e-8, "weight_decay": 0.1, **train_json}
    return torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["adam_eps"])
