"""
Runs llama.cpp's own converter (convert_hf_to_gguf.py of the llama.cpp
source tree given) on a SparseGate checkpoint, with Debian's packages only.

    /usr/bin/python3 convert.py LLAMA_SRC MODEL_DIR TOKENIZER_DIR OUT.gguf \
        {dsa|dense} {bf16|f32}

What the converter needs and where it comes from:
  - torch, numpy, yaml: Debian's python3-torch, python3-numpy, python3-yaml;
    gguf-py: the llama.cpp source tree itself.  Debian's torch (1.13) has
    no FP8 dtypes, which the converter names in its dtype tables: they get
    stand-in values that no tensor of a bf16 checkpoint has.
  - transformers: imported for AutoConfig (whose failure the converter
    already handles by reading config.json) and AutoTokenizer (the
    vocabulary).  Debian has no package for it, so a stand-in module
    without AutoConfig's remote loading is installed, and the DeepSeek
    vocabulary (tokens, types, pre-tokenizer "deepseek-v3") is read here
    from tokenizer.json, as transformers would return it; merges and the
    special tokens are read by gguf-py's own SpecialVocab.
dsa:   the checkpoint as it is (DeepseekV32ForCausalLM: llama.cpp's
       DEEPSEEK32 architecture, lightning indexer and top-k attention).
dense: the same weights as DeepseekV3ForCausalLM (llama.cpp's DEEPSEEK2
       architecture: MLA attention over every earlier key), the indexer's
       tensors left out.
"""
import json
import os
import sys
import tempfile
import types


def main():
    src, model, tok_dir, out, mode, outtype = sys.argv[1:7]
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    sys.path.insert(0, src)

    class AutoConfig:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise OSError("transformers stand-in: read config.json")

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise OSError("transformers stand-in: no tokenizer class")

    stub = types.ModuleType("transformers")
    stub.AutoConfig = AutoConfig
    stub.AutoTokenizer = AutoTokenizer
    sys.modules["transformers"] = stub

    import torch
    for name in ("float8_e4m3fn", "float8_e5m2"):
        if not hasattr(torch, name):
            setattr(torch, name, "absent:" + name)

    import gguf
    import convert_hf_to_gguf
    from conversion import base, deepseek

    def vocab_from_tokenizer_json(self):
        with open(os.path.join(self.dir_model, "tokenizer.json"),
                  encoding="utf-8") as f:
            tj = json.load(f)
        vocab = dict(tj["model"]["vocab"])
        added = {a["id"]: a for a in tj.get("added_tokens", [])}
        for i, a in added.items():
            vocab[a["content"]] = i
        n = self.hparams.get("vocab_size", len(vocab))
        rev = {i: t for t, i in vocab.items()}
        tokens, types_ = [], []
        for i in range(n):
            if i not in rev:
                tokens.append(f"[PAD{i}]")
                types_.append(gguf.TokenType.UNUSED)
            elif i in added:
                tokens.append(rev[i])
                types_.append(gguf.TokenType.CONTROL if added[i]["special"]
                              else gguf.TokenType.USER_DEFINED)
            else:
                tokens.append(rev[i])
                types_.append(gguf.TokenType.NORMAL)
        return tokens, types_, "deepseek-v3"

    base.TextModel.get_vocab_base = vocab_from_tokenizer_json
    deepseek.DeepseekV32Model.set_vocab = base.TextModel._set_vocab_gpt2

    with tempfile.TemporaryDirectory() as tmp:
        for name in os.listdir(model):
            if name != "config.json":
                os.symlink(os.path.abspath(os.path.join(model, name)),
                           os.path.join(tmp, name))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if not os.path.exists(os.path.join(tmp, name)):
                os.symlink(os.path.abspath(os.path.join(tok_dir, name)),
                           os.path.join(tmp, name))
        with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        if mode == "dense":
            cfg["architectures"] = ["DeepseekV3ForCausalLM"]
            cfg["model_type"] = "deepseek_v3"
            keep = deepseek.DeepseekV2Model.filter_tensors.__func__

            def no_indexer(cls, item):
                if ".indexer." in item[0]:
                    return None
                return keep(cls, item)

            deepseek.DeepseekV2Model.filter_tensors = classmethod(no_indexer)
        with open(os.path.join(tmp, "config.json"), "w",
                  encoding="utf-8") as f:
            json.dump(cfg, f)
        sys.argv = ["convert_hf_to_gguf.py", tmp, "--outfile", out,
                    "--outtype", outtype]
        convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
