"""
4-bit checkpoints written by bitsandbytes through transformers (BitsAndBytesConfig with load_in_4bit,
as the `*-bnb-4bit` uploads are made), with the logits transformers computes from the saved files, for
test/interop/. bitsandbytes is not on the package index here: scripts/reference/run.sh installs it from
a source checkout (BNB_SOURCE) without its native library, so its plain-torch backend
(bitsandbytes/backends/default/ops.py) quantizes and dequantizes; without one these fixtures stay as
committed.

Each case quantizes a base model make_fixtures.py wrote (test/fixtures/reference/models/<base>, or a
wider Llama made here, whose in-widths are multiples of 64) on the CPU, saves it with save_pretrained,
loads the saved folder again and records its float32 logits (Linear4bit computes F.linear on the
dequantized weight in bnb_4bit_compute_dtype), and how far they are from the unquantized model's.
"""
import json
import os
import shutil
import sys

import torch
import bitsandbytes
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "reference")

CASES = {
    # In-widths 32 and 48: bitsandbytes' blocks of 64 run across rows.
    "llama-nf4-double-quant": ("llama", dict(bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)),
    # In-widths 64 and 128: its blocks are the engine's per-row blocks.
    "llama-wide-fp4-double-quant": ("wide-llama", dict(bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True)),
    # Phi-3's fused qkv_proj and gate_up_proj, quantized whole and split by the engine.
    "phi3-fp4": ("phi3", dict(bnb_4bit_quant_type="fp4")),
    # GPT-2's Conv1D, transposed before quantization; c_attn fused.
    "gpt2-nf4-double-quant": ("gpt2", dict(bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)),
    # Modules bitsandbytes leaves in full precision.
    "llama-nf4-skip-modules": ("llama", dict(bnb_4bit_quant_type="nf4", llm_int8_skip_modules=["down_proj", "lm_head"])),
}


def base_folder(base):
    if base != "wide-llama":
        return os.path.join(OUT, "models", base)
    folder = os.path.join("/tmp", "bnb-wide-llama")
    torch.manual_seed(7)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         vocab_size=96, max_position_embeddings=64, rms_norm_eps=0.01, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * (1.5 / p.shape[-1] ** 0.5) if p.dim() == 2 else 1 + 0.3 * torch.randn(p.shape))
    model.save_pretrained(folder)
    return folder


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def main():
    ids = json.load(open(os.path.join(OUT, "models", "llama", "expected.json")))["ids"]
    for name, (base, options) in CASES.items():
        folder = os.path.join(OUT, "bitsandbytes", name)
        shutil.rmtree(folder, ignore_errors=True)
        source = base_folder(base)
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32, **options)
        quantized = AutoModelForCausalLM.from_pretrained(source, quantization_config=config, device_map="cpu", dtype=torch.float32)
        quantized.save_pretrained(folder)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(folder, extra)):
                os.remove(os.path.join(folder, extra))
        vocab = quantized.config.vocab_size
        batch = torch.tensor(ids) % vocab
        loaded = AutoModelForCausalLM.from_pretrained(folder, device_map="cpu").eval()
        logits = logits_of(loaded, batch)
        assert torch.equal(logits, logits_of(quantized.eval(), batch)), name
        full = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
        moved = float((logits_of(full, batch) - logits).norm() / logits.norm())
        save_file({"logits": logits.contiguous()}, os.path.join(folder, "logits.safetensors"))
        expected = {"ids": batch.tolist(), "base": base, "quantization": options, "quantization_moves_logits": moved,
                    "transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__}
        with open(os.path.join(folder, "expected.json"), "w") as f:
            json.dump(expected, f, indent=1)
        print(f"{name}: quantization moves the logits by {moved:.3g} (relative)")


if __name__ == "__main__":
    main()
