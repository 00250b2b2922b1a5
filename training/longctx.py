"""Sparse training at long contexts (8K-16K tokens) on two cores.

A full forward with gradients at 16K tokens holds T x T score and mask
tensors (gigabytes per layer), so a long sequence is split in two:

  prefix  the passages: run without gradients, chunk by chunk, each row
          attending over its indexer top-k only (gathered, as the engine
          serves DSA): memory O(chunk x T), never T x T.  What is kept is
          each layer's input for every prefix position.
  tail    the question(s) and answers: run with gradients.  At every layer
          the prefix's keys and values are projected again from its kept
          input through the current weights (so the projections learn from
          the prefix positions too), and each tail row attends over its
          top-k of prefix + tail.

What the tail does not train is how the prefix positions' own layer inputs
are formed (their attention is taken as given); that is learned at the
short lengths, where the whole sequence trains.
"""
import torch
import torch.nn.functional as F

from model import Model, rmsnorm, rope_cos_sin


def index_scores(iq, ik, iw):
    """Unquantized index scores of rows iq [n, IH, ID] (weights iw [n, IH])
    against keys ik [S, ID] -> [n, S]."""
    dots = torch.einsum("thd,sd->ths", iq, ik)
    return torch.einsum("ths,th->ts", F.relu(dots), iw)


def select(isc, first_row, K, stable):
    """Each row's K best causal keys (row i is position first_row + i):
    (indices [n, K], valid [n, K]; invalid where a row has fewer than K
    causal keys), and the causally masked scores.  stable: ties (ReLU
    makes many exact zeros) to the lowest index, as the engine and
    Model.topk_mask; a sort, so only where it matters (evaluation)."""
    n, S = isc.shape
    K = min(K, S)
    rows = torch.arange(first_row, first_row + n)[:, None]
    isc = isc.masked_fill(torch.arange(S)[None] > rows, float("-inf"))
    if stable:
        val, idx = torch.sort(isc.detach(), dim=-1, descending=True,
                              stable=True)
        val, idx = val[:, :K], idx[:, :K]
    else:
        val, idx = torch.topk(isc.detach(), K, dim=-1)
    return idx, torch.isfinite(val), isc


def gathered_attention(q, k, val, idx, valid, scale):
    """q [n, H, qk] over its selected keys k[idx] ([S, H, qk]) and values
    val[idx] -> (out [n, H, v], log-probabilities [n, H, K])."""
    sc = torch.einsum("nhd,nkhd->nhk", q * scale, k[idx])
    sc = sc.masked_fill(~valid[:, None, :], float("-inf"))
    logp = torch.log_softmax(sc, dim=-1)
    out = torch.einsum("nhk,nkhv->nhv", logp.exp(), val[idx])
    return out, logp


def prefix_states(model, ids, P, chunk=1024):
    """Each layer's input [1, P, d] for positions [0, P) of ids, without
    gradients, under DSA (top-k attention, the indexer unquantized)."""
    with torch.no_grad():
        cos, sin = rope_cos_sin(model.freqs, torch.arange(P))
        x = F.embedding(ids[None, :P], model.embed_tokens)
        xs = []
        for blk in model.layers:
            a = blk.self_attn
            xs.append(x)
            h, qr, q, k, val = Model.project(blk, x, cos, sin, True)
            iq, ik, iw = a.indexer.qkw(h, qr, cos, sin)
            out = torch.empty(P, a.H, a.v)
            for c0 in range(0, P, chunk):
                c1 = min(P, c0 + chunk)
                idx, valid, _ = select(index_scores(iq[0, c0:c1], ik[0, :c1],
                                                    iw[0, c0:c1]),
                                       c0, model.topk, not model.training)
                out[c0:c1] = gathered_attention(q[0, c0:c1], k[0, :c1],
                                                val[0, :c1], idx, valid,
                                                a.scale)[0]
            x = x + F.linear(out.reshape(1, P, -1), a.o_proj)
            x = x + model.ffn(blk, x)
        return xs


def target_nll(logp, idx, valid, target):
    """Mean -log p of a target key per row among the selected keys (logp
    [n, K] over idx [n, K]); rows whose target is -1 or not selected are
    left out.  None when no row counts."""
    hit = (idx == target[:, None]) & valid & (target[:, None] >= 0)
    rows = hit.any(-1)
    if not rows.any():
        return None
    # where, not a product: an unselected slot's log p is -inf
    return -torch.where(hit, logp, torch.zeros_like(logp)).sum(-1)[rows].mean()


def tail_forward(model, ids, P, xs, targets, load=None, hits=None):
    """Positions [P, T) of ids with gradients over the kept prefix xs
    (prefix_states).  targets: {layer: (head, key position per tail row,
    -1 for none)}, the attention supervision of train.supervision; hits,
    a list, gets per target layer (layer, rows with a target, rows whose
    target the indexer selected).
    -> (logits [T - P, V], indexer KL per layer, supervision losses)."""
    T = ids.shape[0]
    n = T - P
    cos, sin = rope_cos_sin(model.freqs, torch.arange(T))
    x = F.embedding(ids[None, P:], model.embed_tokens)
    kls, sup = [], []
    for li, blk in enumerate(model.layers):
        a = blk.self_attn
        xall = torch.cat((xs[li], x), 1)
        h, qr, q, k, val = Model.project(blk, xall, cos, sin, True)
        iq, ik, iw = a.indexer.qkw(h.detach(), qr.detach(), cos, sin)
        idx, valid, isc = select(index_scores(iq[0, P:], ik[0], iw[0, P:]),
                                 P, model.topk, not model.training)
        out, logp = gathered_attention(q[0, P:], k[0], val[0], idx, valid,
                                       a.scale)
        # the indexer: KL to the head-summed attention on its selected set
        # (Model.indexer_kl over the gathered slots: [1, H, n, K])
        kls.append(Model.indexer_kl(logp.detach().exp().transpose(0, 1)[None],
                                    torch.gather(isc, -1, idx)[None], None,
                                    valid[None]))
        if li in targets:
            head, target = targets[li]
            loss = target_nll(logp[:, head], idx, valid, target)
            if loss is not None:
                sup.append(loss)
            # the same key for the indexer over every causal key: what
            # falls out of the top-k has nothing else pulling it back in
            rows = target >= 0
            if hits is not None:
                sel = ((idx == target[:, None]) & valid).any(-1)
                hits.append((li, int(rows.sum()), int(sel[rows].sum())))
            if rows.any():
                sup.append(Model.attn_target_loss(
                    torch.log_softmax(isc, -1)[None], target[None]))
        x = x + F.linear(out.reshape(1, n, -1), a.o_proj)
        x = x + model.ffn(blk, x, load)
    return F.linear(rmsnorm(x, model.norm), model.lm_head)[0], kls, sup
