"""Writes a Model as a Hugging Face checkpoint directory the engine loads:
config.json, model.safetensors (tensor names as engine/mkmodel.c writes
them), tokenizer.json; and reads one back."""
import json
import os
import shutil
import struct

import numpy as np
import torch

from model import Model

DTYPES = {"F32": (np.float32, torch.float32), "BF16": (None, torch.bfloat16)}


def named_tensors(model):
    """(HF name, tensor, stored dtype) in the engine's naming."""
    out = [("model.embed_tokens.weight", model.embed_tokens, "BF16")]
    for i, blk in enumerate(model.layers):
        p = "model.layers.%d" % i
        a = blk.self_attn
        out += [
            (p + ".input_layernorm.weight", blk.input_layernorm, "BF16"),
            (p + ".post_attention_layernorm.weight",
             blk.post_attention_layernorm, "BF16"),
            (p + ".self_attn.q_a_proj.weight", a.q_a_proj, "BF16"),
            (p + ".self_attn.q_a_layernorm.weight", a.q_a_layernorm, "BF16"),
            (p + ".self_attn.q_b_proj.weight", a.q_b_proj, "BF16"),
            (p + ".self_attn.kv_a_proj_with_mqa.weight",
             a.kv_a_proj_with_mqa, "BF16"),
            (p + ".self_attn.kv_a_layernorm.weight", a.kv_a_layernorm, "BF16"),
            (p + ".self_attn.kv_b_proj.weight", a.kv_b_proj, "BF16"),
            (p + ".self_attn.o_proj.weight", a.o_proj, "BF16"),
            (p + ".self_attn.indexer.wq_b.weight", a.indexer.wq_b, "BF16"),
            (p + ".self_attn.indexer.wk.weight", a.indexer.wk, "BF16"),
            (p + ".self_attn.indexer.k_norm.weight", a.indexer.k_norm_weight,
             "BF16"),
            (p + ".self_attn.indexer.k_norm.bias", a.indexer.k_norm_bias,
             "BF16"),
            (p + ".self_attn.indexer.weights_proj.weight",
             a.indexer.weights_proj, "BF16"),
        ]
        mlps = []
        if not blk.is_moe:
            mlps.append((p + ".mlp", blk.mlp))
        else:
            out += [(p + ".mlp.gate.weight", blk.gate, "BF16"),
                    (p + ".mlp.gate.e_score_correction_bias", blk.gate_bias,
                     "F32")]
            for j, ex in enumerate(blk.experts):
                mlps.append((p + ".mlp.experts.%d" % j, ex))
            mlps.append((p + ".mlp.shared_experts", blk.shared))
        for q, m in mlps:
            out += [(q + ".gate_proj.weight", m.gate_proj, "BF16"),
                    (q + ".up_proj.weight", m.up_proj, "BF16"),
                    (q + ".down_proj.weight", m.down_proj, "BF16")]
    out += [("model.norm.weight", model.norm, "BF16"),
            ("lm_head.weight", model.lm_head, "BF16")]
    return out


def round_bf16_(model):
    """Rounds every stored-as-BF16 weight in place (what the file holds)."""
    with torch.no_grad():
        for _, t, dt in named_tensors(model):
            if dt == "BF16":
                t.copy_(t.to(torch.bfloat16).to(torch.float32))


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t, dt in tensors:
        t = t.detach().contiguous()
        if dt == "BF16":
            raw = t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
        else:
            raw = t.to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "BF16":
            t = torch.from_numpy(np.frombuffer(raw, dtype=np.int16).copy())
            t = t.view(torch.bfloat16).to(torch.float32)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
        out[name] = t.reshape(e["shape"])
    return out


def hf_config(cfg):
    c = dict(cfg)
    c.update({
        "architectures": ["DeepseekV32ForCausalLM"],
        "model_type": "deepseek_v32",
        "hidden_act": "silu",
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
        "num_key_value_heads": cfg["num_attention_heads"],
        "num_nextn_predict_layers": 0,
        "attention_bias": False,
    })
    return c


def export(model, out_dir, tokenizer_path, extra_files=None):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model.cfg), f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(out_dir, "model.safetensors"),
                      named_tensors(model))
    if tokenizer_path:
        shutil.copyfile(tokenizer_path, os.path.join(out_dir, "tokenizer.json"))
    for name, text in (extra_files or {}).items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)


MODEL_KEYS = ("vocab_size hidden_size intermediate_size moe_intermediate_size "
              "num_hidden_layers first_k_dense_replace num_attention_heads "
              "q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim "
              "v_head_dim n_routed_experts n_shared_experts "
              "num_experts_per_tok n_group topk_group routed_scaling_factor "
              "norm_topk_prob index_n_heads index_head_dim index_topk "
              "rope_theta max_position_embeddings rms_norm_eps bos_token_id "
              "eos_token_id rope_scaling").split()


def load(model_dir):
    """The Model of a checkpoint directory, weights as stored."""
    with open(os.path.join(model_dir, "config.json")) as f:
        full = json.load(f)
    cfg = {k: full[k] for k in MODEL_KEYS if k in full}
    model = Model(cfg)
    st = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    with torch.no_grad():
        for name, t, _ in named_tensors(model):
            t.copy_(st[name])
    return model
