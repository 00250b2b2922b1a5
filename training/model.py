"""A DeepSeek-V3.2 model in PyTorch, op for op what engine/forward.c runs.

MLA (q_lora, kv_lora, nope/rope split, interleaved RoPE, the latent cached
as FP8 e4m3 with one ue8m0 scale per 128 channels), the DSA lightning
indexer (wq_b from the q latent, wk + LayerNorm, non-interleaved RoPE on the
first rope dims, Hadamard, FP8 q/k, ReLU head-weighted sum, top-k), a dense
first layer then MoE layers (sigmoid scores, e_score_correction_bias for
selection only, shared expert), RMSNorm, YaRN frequencies and softmax scale.

Two uses: training (differentiable paths: dense or top-k masked attention,
straight-through FP8 on the latent, the indexer's scores unquantized) and
the reference for the engine (exact FP8 emulation of the indexer's q/k).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- FP8 e4m3 with ue8m0 scales (DeepSeek's act_quant) --------------------


def e4m3_round(v):
    """Round to the nearest e4m3fn value, ties to even, |v| <= 448."""
    a = v.abs().clamp(max=448.0)
    _, e = torch.frexp(a)                 # a = m * 2^e, m in [0.5, 1)
    e = (e - 1).clamp(min=-6)             # binade; subnormals share 2^-6's
    step = torch.pow(2.0, (e - 3).to(v.dtype))
    q = torch.round(a / step) * step      # torch.round: half to even
    return torch.where(v < 0, -q, q).clamp(-448.0, 448.0)


def ue8m0_scale(amax):
    """amax / 448 rounded up to a power of two (exact powers stay)."""
    s = amax.clamp(min=1e-4) * torch.tensor(1.0 / 448.0, dtype=amax.dtype)
    m, e = torch.frexp(s)
    up = torch.pow(2.0, e.to(s.dtype))
    return torch.where(m == 0.5, s, up)


def act_quant(x, block=128):
    """(e4m3 values, scales) per `block` channels of the last dim."""
    shp = x.shape
    xb = x.reshape(*shp[:-1], shp[-1] // block, block)
    scale = ue8m0_scale(xb.abs().amax(-1, keepdim=True))
    q = e4m3_round(xb / scale)
    return q.reshape(shp), scale.squeeze(-1)


def fp8_fake(x, block=128):
    """Quantize-dequantize with a straight-through gradient."""
    with torch.no_grad():
        q, s = act_quant(x, block)
        shp = x.shape
        d = (q.reshape(*shp[:-1], shp[-1] // block, block)
             * s.unsqueeze(-1)).reshape(shp)
    return x + (d - x).detach()


def hadamard(x):
    """Sylvester-ordered Walsh-Hadamard over the last dim, times dim^-0.5."""
    d = x.shape[-1]
    h = 1
    y = x.clone()
    while h < d:
        y = y.reshape(*x.shape[:-1], d // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return y.reshape(x.shape) * (d ** -0.5)


# ---- RoPE with YaRN, as engine/model.c builds its table --------------------


def rope_freqs(cfg):
    dim = cfg["qk_rope_head_dim"]
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32)
    freqs = 1.0 / torch.pow(torch.tensor(float(cfg["rope_theta"])),
                            (2 * i) / dim)
    rs = cfg.get("rope_scaling")
    if rs and cfg["max_position_embeddings"] > \
            rs["original_max_position_embeddings"]:
        orig = rs["original_max_position_embeddings"]
        lb = math.log(cfg["rope_theta"])
        dlow = dim * math.log(orig / (rs["beta_fast"] * 2 * math.pi)) / (2 * lb)
        dhigh = dim * math.log(orig / (rs["beta_slow"] * 2 * math.pi)) / (2 * lb)
        low, high = max(math.floor(dlow), 0), min(math.ceil(dhigh), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((i - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / rs["factor"] * (1 - smooth) + freqs * smooth
    return freqs


def softmax_scale(cfg):
    s = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rs = cfg.get("rope_scaling")
    if rs and cfg["max_position_embeddings"] > \
            rs["original_max_position_embeddings"] and rs["factor"] > 1:
        m = 0.1 * rs.get("mscale_all_dim", 0) * math.log(rs["factor"]) + 1
        s *= m * m
    return s


def rope_cos_sin(freqs, pos):
    a = pos.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cos(a), torch.sin(a)


def rope_interleaved(x, cos, sin):
    """Pairs (2j, 2j+1); x [..., T, (heads,) dim], cos/sin [T, dim/2]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    if x0.dim() == 4:                     # [B, T, heads, d]
        cos, sin = cos[:, None], sin[:, None]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos),
                       dim=-1).flatten(-2)


def rope_half(x, cos, sin):
    """Pairs (j, j + dim/2) (rotate-half)."""
    h = x.shape[-1] // 2
    x0, x1 = x[..., :h], x[..., h:]
    if x0.dim() == 4:                     # [B, T, heads, d]
        cos, sin = cos[:, None], sin[:, None]
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)


def rmsnorm(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


# ---- the model -------------------------------------------------------------


def lin(o, i, std):
    w = nn.Parameter(torch.empty(o, i))
    nn.init.normal_(w, std=std)
    return w


class MLP(nn.Module):
    def __init__(self, d, inter, std, out_std):
        super().__init__()
        self.gate_proj = lin(inter, d, std)
        self.up_proj = lin(inter, d, std)
        self.down_proj = lin(d, inter, out_std)

    def forward(self, x):
        return F.linear(F.silu(F.linear(x, self.gate_proj))
                        * F.linear(x, self.up_proj), self.down_proj)


class Indexer(nn.Module):
    def __init__(self, cfg, std):
        super().__init__()
        d, ql = cfg["hidden_size"], cfg["q_lora_rank"]
        ih, idim = cfg["index_n_heads"], cfg["index_head_dim"]
        self.ih, self.idim = ih, idim
        self.rope = cfg["qk_rope_head_dim"]
        self.wq_b = lin(ih * idim, ql, std)
        self.wk = lin(idim, d, std)
        self.k_norm_weight = nn.Parameter(torch.ones(idim))
        self.k_norm_bias = nn.Parameter(torch.zeros(idim))
        self.weights_proj = lin(ih, d, std)

    def qkw(self, h, qr, cos, sin):
        """Rotated queries [B,T,IH,ID], key [B,T,ID], head weights [B,T,IH]
        (without the q-scale factor)."""
        B, T, _ = h.shape
        r = self.rope
        k = F.layer_norm(F.linear(h, self.wk), (self.idim,),
                         self.k_norm_weight, self.k_norm_bias, 1e-6)
        k = torch.cat((rope_half(k[..., :r], cos, sin), k[..., r:]), -1)
        q = F.linear(qr, self.wq_b).view(B, T, self.ih, self.idim)
        q = torch.cat((rope_half(q[..., :r], cos, sin), q[..., r:]), -1)
        w = F.linear(h, self.weights_proj) * (self.ih ** -0.5) \
            * (self.idim ** -0.5)
        return q, k, w

    def scores(self, h, qr, cos, sin):
        """Unquantized index scores [B, T, T] (training: Hadamard is
        orthogonal, so exact dot products do not need it)."""
        q, k, w = self.qkw(h, qr, cos, sin)
        dots = torch.einsum("bthd,bsd->bths", q, k)
        return torch.einsum("bths,bth->bts", F.relu(dots), w)

    def scores_fp8(self, h, qr, cos, sin):
        """What the engine computes: Hadamard, e4m3 q/k with one ue8m0 scale
        per row and head, relu(q8 . k8) * w * q_scale summed, * k_scale."""
        q, k, w = self.qkw(h, qr, cos, sin)
        q8, qs = act_quant(hadamard(q), self.idim)       # qs [B,T,IH,1]
        k8, ks = act_quant(hadamard(k), self.idim)       # ks [B,T,1]
        wq = w * qs.squeeze(-1)
        dots = torch.einsum("bthd,bsd->bths", q8, k8)
        sc = torch.einsum("bths,bth->bts", F.relu(dots), wq)
        return sc * ks.squeeze(-1)[:, None, :]


class Attention(nn.Module):
    def __init__(self, cfg, std):
        super().__init__()
        d = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.nope, self.rope = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
        self.v = cfg["v_head_dim"]
        self.lora, self.ql = cfg["kv_lora_rank"], cfg["q_lora_rank"]
        H, qk = self.H, self.nope + self.rope
        self.q_a_proj = lin(self.ql, d, std)
        self.q_a_layernorm = nn.Parameter(torch.ones(self.ql))
        self.q_b_proj = lin(H * qk, self.ql, std)
        self.kv_a_proj_with_mqa = lin(self.lora + self.rope, d, std)
        self.kv_a_layernorm = nn.Parameter(torch.ones(self.lora))
        self.kv_b_proj = lin(H * (self.nope + self.v), self.lora, std)
        self.o_proj = lin(d, H * self.v, std / math.sqrt(2 * cfg["num_hidden_layers"]))
        self.indexer = Indexer(cfg, std)
        self.scale = softmax_scale(cfg)


class Block(nn.Module):
    def __init__(self, cfg, i, std):
        super().__init__()
        d = cfg["hidden_size"]
        self.input_layernorm = nn.Parameter(torch.ones(d))
        self.post_attention_layernorm = nn.Parameter(torch.ones(d))
        self.self_attn = Attention(cfg, std)
        out_std = std / math.sqrt(2 * cfg["num_hidden_layers"])
        self.is_moe = i >= cfg["first_k_dense_replace"]
        if not self.is_moe:
            self.mlp = MLP(d, cfg["intermediate_size"], std, out_std)
        else:
            E, mi = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
            self.gate = lin(E, d, std)
            self.register_buffer("gate_bias", torch.zeros(E))
            self.experts = nn.ModuleList(MLP(d, mi, std, out_std)
                                         for _ in range(E))
            self.shared = MLP(d, mi * cfg["n_shared_experts"], std, out_std)
            self.k = cfg["num_experts_per_tok"]
            self.route_scale = cfg["routed_scaling_factor"]
            self.norm_topk = cfg["norm_topk_prob"]
            assert cfg["n_group"] == 1, "group-limited routing not modelled"


class Model(nn.Module):
    """mode: 'dense' | 'sparse' (indexer top-k) | 'window' (last k keys).
    kv_fp8: simulate the engine's FP8 latent cache.  index_fp8: the
    engine's FP8 indexer (reference use; no gradient)."""

    def __init__(self, cfg, std=0.02):
        super().__init__()
        self.cfg = cfg
        d, V = cfg["hidden_size"], cfg["vocab_size"]
        self.embed_tokens = nn.Parameter(torch.randn(V, d) * 1.0 * std * 20)
        self.layers = nn.ModuleList(Block(cfg, i, std)
                                    for i in range(cfg["num_hidden_layers"]))
        self.norm = nn.Parameter(torch.ones(d))
        self.lm_head = lin(V, d, std)
        self.register_buffer("freqs", rope_freqs(cfg), persistent=False)
        # attention supervision (training only): {layer: (head, target
        # key per row [B, T])}; each loss lands in attn_aux
        self.attn_targets, self.attn_aux, self._layer = None, [], 0
        self.topk = cfg["index_topk"]

    # -- attention ---------------------------------------------------------
    @staticmethod
    def project(blk, x, cos, sin, kv_fp8):
        """One layer's MLA projections of x [B, T, d]: (h the normed input,
        qr the q latent, q [B,T,H,qk] and k [B,T,H,qk] with RoPE on their
        last rope dims, values [B,T,H,v])."""
        a = blk.self_attn
        B, T, _ = x.shape
        H, nope, rope, v = a.H, a.nope, a.rope, a.v
        h = rmsnorm(x, blk.input_layernorm)
        qr = rmsnorm(F.linear(h, a.q_a_proj), a.q_a_layernorm)
        q = F.linear(qr, a.q_b_proj).view(B, T, H, nope + rope)
        q_nope, q_pe = q[..., :nope], rope_interleaved(q[..., nope:], cos, sin)
        kv = F.linear(h, a.kv_a_proj_with_mqa)
        lat = rmsnorm(kv[..., :a.lora], a.kv_a_layernorm)
        if kv_fp8:
            lat = fp8_fake(lat)
        k_pe = rope_interleaved(kv[..., a.lora:], cos, sin)       # [B,T,r]
        kvf = F.linear(lat, a.kv_b_proj).view(B, T, H, nope + v)
        k_nope, val = kvf[..., :nope], kvf[..., nope:]
        k = torch.cat((k_nope, k_pe[:, :, None, :].expand(B, T, H, rope)), -1)
        return h, qr, torch.cat((q_nope, q_pe), -1), k, val

    def attend(self, blk, x, cos, sin, mode, kv_fp8, index_fp8, aux,
               detach_indexer, topk_out=None):
        a = blk.self_attn
        B, T, _ = x.shape
        H, v = a.H, a.v
        h, qr, q, k, val = self.project(blk, x, cos, sin, kv_fp8)
        qf = q.transpose(1, 2)                                   # [B,H,T,qk]
        kf = k.permute(0, 2, 3, 1)                               # [B,H,qk,S]
        sc = torch.matmul(qf * a.scale, kf)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        allow = causal[None]
        iscores = None
        if mode == "sparse" or aux is not None:
            hi, qi = (h.detach(), qr.detach()) if detach_indexer else (h, qr)
            if index_fp8:
                with torch.no_grad():
                    iscores = a.indexer.scores_fp8(hi, qi, cos, sin)
            else:
                iscores = a.indexer.scores(hi, qi, cos, sin)
        if mode == "sparse":
            allow, idx = self.topk_mask(iscores.detach(), causal,
                                        stable=not self.training)
            if topk_out is not None:
                topk_out.append(idx)
        elif mode == "window":
            idx = torch.arange(T, device=x.device)
            allow = (causal & (idx[:, None] - idx[None, :] < self.topk))[None]
        bias = torch.zeros(allow.shape, dtype=sc.dtype).masked_fill_(
            ~allow, float("-inf"))
        p = torch.softmax(sc + bias[:, None], dim=-1)
        if self.attn_targets is not None and self._layer in self.attn_targets:
            head, target = self.attn_targets[self._layer]
            # from the logits: -log of a probability that underflows to a
            # denormal has an infinite gradient (it turned a run to NaN)
            logp = torch.log_softmax(sc[:, head] + bias, dim=-1)
            self.attn_aux.append(self.attn_target_loss(logp, target))
            if iscores is not None and self.training:
                # the same key for this layer's indexer, over every causal
                # key: the KL of the sparse stage only sees the selected
                # set, so a copy source that falls out of the top-k at a
                # long context would have nothing pulling it back in
                logq = torch.log_softmax(iscores.masked_fill(
                    ~causal[None], float("-inf")), dim=-1)
                self.attn_aux.append(self.attn_target_loss(logq, target))
        out = torch.matmul(p, val.transpose(1, 2)).transpose(1, 2)
        out = out.reshape(B, T, H * v)
        if aux is not None:
            aux.append(self.indexer_kl(p.detach(), iscores, causal,
                                       allow if mode == "sparse" else None))
        return F.linear(out, a.o_proj)

    def topk_mask(self, iscores, causal, stable=False):
        """Each row's index_topk best causal keys (ties: lowest index, as
        engine/cpu/cpu_index.c)."""
        B, T, _ = iscores.shape
        K = min(self.topk, T)
        s = iscores.masked_fill(~causal[None], float("-inf"))
        if stable:      # ties to the lowest index, as the engine
            idx = torch.sort(s, dim=-1, descending=True,
                             stable=True).indices[..., :K]
        else:
            idx = torch.topk(s, K, dim=-1).indices
        m = torch.zeros(B, T, T, dtype=torch.bool, device=s.device)
        m.scatter_(-1, idx, True)
        rows = torch.arange(T, device=s.device)[None, :, None]
        idx = torch.where(idx <= rows, idx, torch.full_like(idx, -1))
        return m & causal[None], idx

    @staticmethod
    def attn_target_loss(logp, target):
        """Mean -log of one head's attention weight on a given key per row
        (logp [B, T, S] its log-probabilities, target [B, T], -1 where the
        row has none)."""
        got = torch.gather(logp, -1, target.clamp(min=0)[..., None])[..., 0]
        rows = (target >= 0) & torch.isfinite(got)  # sparse: key selected
        if not rows.any():
            return logp.new_zeros(())
        return -got[rows].mean()

    @staticmethod
    def indexer_kl(p, iscores, causal, sel):
        """KL(target || softmax(index scores)) per row, summed over rows:
        the target is the attention summed over heads, L1-normalised; with
        sel given (sparse stage) both live on the selected keys only."""
        tgt = p.sum(1)                                       # [B,T,S]
        mask = causal[None] if sel is None else sel
        tgt = tgt * mask
        tgt = tgt / tgt.sum(-1, keepdim=True).clamp(min=1e-9)
        logq = torch.log_softmax(iscores.masked_fill(~mask, float("-inf")),
                                 -1)
        logq = torch.where(mask, logq, torch.zeros_like(logq))
        kl = (tgt * (torch.log(tgt.clamp(min=1e-9)) - logq)).sum(-1)
        return kl.mean()

    # -- feed-forward --------------------------------------------------------
    def ffn(self, blk, x, load=None):
        h = rmsnorm(x, blk.post_attention_layernorm)
        if not blk.is_moe:
            return blk.mlp(h)
        logits = F.linear(h, blk.gate)
        s = torch.sigmoid(logits)
        sel = (s + blk.gate_bias).detach()
        top = torch.topk(sel, blk.k, dim=-1).indices             # [B,T,k]
        w = torch.gather(s, -1, top)
        if blk.norm_topk:
            w = w / w.sum(-1, keepdim=True)
        w = w * blk.route_scale
        hf = h.reshape(-1, h.shape[-1])
        topf, wf = top.reshape(-1, blk.k), w.reshape(-1, blk.k)
        y = torch.zeros_like(hf)
        for e, ex in enumerate(blk.experts):
            rows, slot = (topf == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            y = y.index_add(0, rows, ex(hf[rows]) * wf[rows, slot][:, None])
        if load is not None:
            load.append((blk, torch.bincount(topf.reshape(-1),
                                             minlength=len(blk.experts))))
        return y.reshape(h.shape) + blk.shared(h)

    def forward(self, tokens, mode="dense", kv_fp8=True, index_fp8=False,
                indexer_kl=False, detach_indexer=True, load=None,
                hidden=False, topk_out=None):
        """tokens [B, T] -> logits [B, T, V] (and the indexer KL losses)."""
        B, T = tokens.shape
        pos = torch.arange(T, device=tokens.device)
        cos, sin = rope_cos_sin(self.freqs, pos)
        x = F.embedding(tokens, self.embed_tokens)
        aux = [] if indexer_kl else None
        for self._layer, blk in enumerate(self.layers):
            x = x + self.attend(blk, x, cos, sin, mode, kv_fp8, index_fp8,
                                aux, detach_indexer, topk_out)
            x = x + self.ffn(blk, x, load)
        if hidden:
            return x
        logits = F.linear(rmsnorm(x, self.norm), self.lm_head)
        return (logits, aux) if indexer_kl else logits
