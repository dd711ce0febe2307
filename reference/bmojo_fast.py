"""The fast PyTorch formulation of the bmojo model: what a PyTorch user would run, used for the speed
comparison (reference/bench_vs_torch.py). Same parameters and the same function as bmojo_ref.Reference
(reference/parity_test.py checks it against the plain reference), but:
- the selective scan computes the decays and inputs of all steps at once and runs the recurrence as T
  steps of batched work (see fast_scan for why not chunked);
- attention is one masked matrix product per layer (window, fading and eidetic keys as extra column
  blocks of the score matrix), as with SDPA and an attention mask (PyTorch 1.13 has no SDPA);
- the eidetic plan is computed per chunk, not per token, and turned into the mask with tensor operations.
"""
import torch
import torch.nn.functional as F

import bmojo_ref
from bmojo_ref import rmsnorm, rope

def fast_scan(x, dt, A, Bm, Cm, Dskip):
    """x, dt (B, T, C); A (C, N); Bm, Cm (B, T, N) -> y (B, T, C). Decays and inputs of every step are
    computed at once; the recurrence itself is T steps of batched (B, C, N) work. The steps are taken with
    unbind, not indexing: the backward of x[:, t] materialises a zero tensor of x's full shape per step,
    which makes a step loop quadratic. (A two-level chunked scan, 16 steps within all chunks at once then
    the chunks chained, measured 2x slower here for forward + backward at width 256, T = 256.)"""
    decay = torch.exp(dt[..., None] * A)  # (B, T, C, N)
    u = (dt * x)[..., None] * Bm[:, :, None, :]
    s = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])
    ys = []
    for a, b, c in zip(decay.unbind(1), u.unbind(1), Cm.unbind(1)):
        s = a * s + b
        ys.append((s * c[:, None, :]).sum(-1))
    return torch.stack(ys, dim=1) + Dskip * x


def mamba_fast(u, p, pre, cfg):
    C, N, R, K = cfg.d_inner, cfg.d_state, cfg.rank, cfg.d_conv
    xz = u @ p[pre + "in_proj"]
    x, z = xz[..., :C], xz[..., C:]
    xt = F.pad(x.transpose(1, 2), (K - 1, 0))
    x = F.silu(F.conv1d(xt, p[pre + "conv_weight"][:, None, :], p[pre + "conv_bias"], groups=C).transpose(1, 2))
    dbc = x @ p[pre + "x_proj"]
    d, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    dt = F.softplus(d @ p[pre + "dt_proj"] + p[pre + "dt_bias"], beta=1.0, threshold=20.0)
    y = fast_scan(x, dt, -torch.exp(p[pre + "A_log"]), Bm, Cm, p[pre + "D"])
    return (y * F.silu(z)) @ p[pre + "out_proj"]


def eidetic_mask(scores, cfg):
    """scores (B, T) -> bool (B, T, T): query t may read entry p (held before t's chunk, p <= t - W)."""
    Bsz, T = scores.shape
    W = cfg.window
    held = torch.zeros(Bsz, T // W + 1, T, dtype=torch.bool)  # held[b, c, p]: p in memory before chunk c
    for b in range(Bsz):
        plan = bmojo_ref.eidetic_plan(scores[b].tolist(), cfg)
        for c, positions in enumerate(plan):
            if positions:
                held[b, c, list(positions)] = True
    t = torch.arange(T)
    chunk_of = (t // W)
    visible = t[None, :] <= (t[:, None] - W)  # (T, T): p <= t - W
    return held[:, chunk_of] & visible[None]


def mixer_fast(xn, p, pre, cfg, kind):
    B, T, D = xn.shape
    H, Hk, dh, W = cfg.n_heads, cfg.hk, cfg.dh, cfg.window
    rep, scale = H // Hk, dh ** -0.5
    wqkv = p[pre + "attn.wqkv"]
    qkv = xn @ wqkv
    q = qkv[..., :H * dh].reshape(B, T, H, dh)
    k = qkv[..., H * dh:(H + Hk) * dh].reshape(B, T, Hk, dh)
    v = qkv[..., (H + Hk) * dh:].reshape(B, T, Hk, dh)
    qr = rope(q, cfg.rope_base).transpose(1, 2)  # (B, H, T, dh)
    kr = rope(k, cfg.rope_base).repeat_interleave(rep, dim=2).transpose(1, 2)
    vh = v.repeat_interleave(rep, dim=2).transpose(1, 2)
    t = torch.arange(T)
    window = (t[None, :] <= t[:, None]) & ((t[None, :] >= t[:, None] - W + 1) if W > 0 else True)
    keys, values, masks = [kr], [vh], [window[None, None]]
    queries = [qr]
    innovation = None
    if kind in "FB" and (cfg.fading or kind == "B"):
        y = mamba_fast(xn, p, pre + "mamba.", cfg)
    if kind in "FB" and cfg.fading:
        if cfg.tie_fading:
            wkv = wqkv[:, H * dh:]
        else:
            wkv = p[pre + "attn.wkvf"]
        kvf = y @ wkv
        kf = rope(kvf[..., :Hk * dh].reshape(B, T, Hk, dh), cfg.rope_base)
        keys.append(kf.repeat_interleave(rep, dim=2).transpose(1, 2))
        values.append(kvf[..., Hk * dh:].reshape(B, T, Hk, dh).repeat_interleave(rep, dim=2).transpose(1, 2))
        masks.append(((t[None, :] >= t[:, None] - 2 * W + 1) & (t[None, :] <= t[:, None] - W))[None, None])
        queries.append(qr)
    if kind == "B":
        y_prev = torch.cat([torch.zeros(B, 1, D), y[:, :-1]], dim=1)
        e = xn.detach() - y_prev @ p[pre + "innovation.P"]
        s = e.pow(2).sum(-1) / D
        innovation = s.mean()
        if cfg.k > 0 and cfg.m > 0:
            keys.append(k.repeat_interleave(rep, dim=2).transpose(1, 2))
            values.append(vh)
            masks.append(eidetic_mask(s.detach(), cfg)[:, None])
            queries.append(q.transpose(1, 2))
    scores = torch.cat([(qq @ kk.transpose(-1, -2)) * scale for qq, kk in zip(queries, keys)], dim=-1)
    mask = torch.cat([m.expand(B, 1, T, T) for m in masks], dim=-1)
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    out = probs @ torch.cat(values, dim=2)
    return out.transpose(1, 2).reshape(B, T, H * dh) @ p[pre + "attn.wo"], innovation


class Fast(bmojo_ref.Reference):
    def forward(self, tokens, targets=None):
        cfg, p = self.cfg, self.params()
        h = p["embedding"][tokens]
        innovation = torch.zeros(())
        for i, kind in enumerate(cfg.layers):
            pre = f"layers.{i}."
            xn = rmsnorm(h, p[pre + "norm1"], cfg.norm_eps)
            if kind == "M":
                h = h + mamba_fast(xn, p, pre + "mamba.", cfg)
            else:
                out, inn = mixer_fast(xn, p, pre, cfg, kind)
                h = h + out
                if inn is not None:
                    innovation = innovation + cfg.lambda_innov * inn
            if cfg.d_ff > 0:
                xn = rmsnorm(h, p[pre + "norm2"], cfg.norm_eps)
                gu = xn @ p[pre + "mlp.w_in"]
                h = h + (F.silu(gu[..., :cfg.d_ff]) * gu[..., cfg.d_ff:]) @ p[pre + "mlp.w_out"]
        h = rmsnorm(h, p["norm_f"], cfg.norm_eps)
        logits = h @ (p["embedding"] if cfg.tie_embeddings else p["lm_head"]).T
        ce = None
        if targets is not None:
            ce = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1),
                                 ignore_index=bmojo_ref.IGNORE)
        return logits, ce, innovation
