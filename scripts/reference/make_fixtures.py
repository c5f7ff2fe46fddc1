"""
Reference fixtures written by the real libraries (PyTorch, transformers 5, PEFT), which the engine's
tests compare against without Python (test/interop/). Run through `npm run test:reference`, which
sets up the environments (scripts/reference/run.sh) and then runs those tests on what this wrote.

Per model case: a tiny seeded checkpoint (model.safetensors, written by transformers 5's
save_pretrained), its config.json in transformers 5's layout (rope_parameters, dtype) and in the 4.x
layout (config.transformers4.json, written by transformers 4.57's save_pretrained from the same weights,
see transformers4.py), token ids, and transformers' logits computed in float64. The script asserts that
both layouts give the same logits in transformers 5 and in transformers 4, and that switching each
feature of the case off moves the logits, so a test cannot pass by ignoring a feature.

Per PEFT case: an adapter PEFT saved for one of those bases, with PEFT's logits (float64).

Per tokenizer case: a tokenizer.json in a family's format (Llama 3's and Qwen's byte-level BPE, Gemma's
SentencePiece-style BPE with byte fallback) trained by the tokenizers library, with the ids and texts it gives.

Per learning-rate schedule: the rate transformers' get_{constant,linear,cosine}_schedule_with_warmup and
get_cosine_with_min_lr_schedule_with_warmup give a torch optimizer at each step (schedules.json).

Also the config fields of the installed transformers config classes and of PEFT's LoraConfig
(fields.json), which test/interop/fields.node.test.ts checks are all known to the engine.
"""
import copy
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers
import peft
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, GPT2Config, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "test", "fixtures", "reference")
SHIPPED = os.path.join(ROOT, "public", "models", "tiny-llama-skills")
CLASSES = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig, "gemma2": Gemma2Config,
           "gemma3_text": Gemma3TextConfig, "phi3": Phi3Config, "gpt2": GPT2Config}

# Each case: the config in keyword arguments both major versions accept (transformers 5 moves rope_theta
# into rope_parameters itself), the batch shape, and the config changes that must move the logits.
COMMON = dict(vocab_size=96, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
CASES = {
    "llama": dict(
        family="llama",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-2),
        features={"rope_theta": dict(rope_theta=10000.0), "rms_norm_eps": dict(rms_norm_eps=1e-6)},
    ),
    "llama-biases-tied-head-dim": dict(
        family="llama",
        config=dict(**COMMON, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=24, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                    rope_theta=20000.0),
        features={"rope_theta": dict(rope_theta=10000.0), "attention_bias": "zero:self_attn.*bias",
                  "mlp_bias": "zero:mlp.*bias"},
    ),
    # Llama 3.2's shape of config: tied embeddings and Llama 3.1's RoPE scaling. A pre-training context of
    # 16 with head_dim 8 puts one frequency in each of the three bands (kept, blended, divided by factor).
    "llama3-rope-scaling-tied": dict(
        family="llama",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=True,
                    rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=16)),
        features={"rope_scaling": dict(rope_scaling=None), "low_freq_factor": dict(rope_scaling=dict(
            rope_type="llama3", factor=4.0, low_freq_factor=2.0, high_freq_factor=4.0, original_max_position_embeddings=16))},
    ),
    "llama-linear-rope-scaling": dict(
        family="llama",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, rope_theta=10000.0, rope_scaling=dict(rope_type="linear", factor=3.0)),
        features={"rope_scaling": dict(rope_scaling=None)},
    ),
    # Dynamic NTK scaling rescales RoPE's base only for sequences past max_position_embeddings: within them
    # transformers computes plain RoPE, and so does the engine (which runs no longer ones).
    "llama-dynamic-rope-scaling": dict(
        family="llama",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, rope_theta=10000.0, rope_scaling=dict(rope_type="dynamic", factor=2.0)),
        features={"rope_theta": dict(rope_theta=1000.0)},
    ),
    "qwen2-sliding-window": dict(
        family="qwen2",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=True,
                    sliding_window=4, max_window_layers=1),
        features={"rope_theta": dict(rope_theta=10000.0), "use_sliding_window": dict(use_sliding_window=False),
                  "max_window_layers": dict(max_window_layers=2), "qkv_bias": "zero:self_attn.*bias"},
    ),
    # Qwen3: per-head q/k RMSNorm before RoPE, head_dim not hidden / heads, Qwen2's windows (on layer 2).
    "qwen3": dict(
        family="qwen3",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=12, rope_theta=1000000.0, tie_word_embeddings=True,
                    use_sliding_window=True, sliding_window=4, max_window_layers=2),
        features={"q_norm": "zero:self_attn.q_norm", "k_norm": "zero:self_attn.k_norm", "use_sliding_window": dict(use_sliding_window=False)},
    ),
    "mistral": dict(
        family="mistral",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=12, rope_theta=1000000.0, sliding_window=5),
        features={"rope_theta": dict(rope_theta=10000.0), "sliding_window": dict(sliding_window=None)},
    ),
    # Gemma 2: (1 + w) norms before and after both sublayers, GeGLU, embeddings scaled by sqrt(hidden),
    # attention scaled by query_pre_attn_scalar, soft caps on scores and logits small enough to bend them,
    # windows on layers 0 and 2. Eager attention: transformers' default (sdpa) drops the score soft cap.
    "gemma2": dict(
        family="gemma2", attn="eager",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=12, query_pre_attn_scalar=20, sliding_window=4,
                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0, rope_theta=10000.0),
        features={"attn_logit_softcapping": dict(attn_logit_softcapping=None), "final_logit_softcapping": dict(final_logit_softcapping=None),
                  "query_pre_attn_scalar": dict(query_pre_attn_scalar=12), "sliding_window": dict(layer_types=["full_attention"] * 3),
                  "post_feedforward_layernorm": "zero:post_feedforward_layernorm"},
    ),
    # Gemma 3 (text): Gemma 2's decoder with (1 + w) q/k norms, no score soft cap, and two RoPEs: full layers
    # at rope_theta with rope_scaling, sliding ones (0 and 2, window 5) plain at rope_local_base_freq.
    "gemma3": dict(
        family="gemma3_text", attn="eager",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"], rope_theta=1000000.0,
                    rope_local_base_freq=100.0, rope_scaling=dict(rope_type="linear", factor=4.0), final_logit_softcapping=3.0),
        features={"q_norm": "zero:self_attn.q_norm", "rope_local_base_freq": dict(rope_local_base_freq=10000.0),
                  "rope_scaling": dict(rope_scaling=None), "final_logit_softcapping": dict(final_logit_softcapping=None),
                  "sliding_window": dict(layer_types=["full_attention"] * 3)},
    ),
    # Phi-3: q, k, v fused in qkv_proj (with GQA, so its parts differ in size), gate and up in gate_up_proj,
    # a window on every layer.
    "phi3": dict(
        family="phi3",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rope_theta=10000.0, sliding_window=5, pad_token_id=0),
        features={"rope_theta": dict(rope_theta=500000.0), "sliding_window": dict(sliding_window=None),
                  "qkv_proj": "zero:qkv_proj"},
    ),
    # Phi-4-mini's RoPE: 3/4 of each 16-wide head rotating, LongRoPE with a pre-training context of 8, so these
    # 12-token rows take the long factors (and the attention factor sqrt(1 + ln 8 / ln 8) from 64 / 8).
    "phi3-longrope-partial": dict(
        family="phi3",
        config=dict(**COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, rope_theta=10000.0, partial_rotary_factor=0.75, original_max_position_embeddings=8,
                    rope_scaling=dict(type="longrope", short_factor=[1.0, 1.2, 1.9, 3.1, 4.4, 6.0],
                                      long_factor=[1.1, 2.3, 4.1, 7.5, 13.0, 24.0]), pad_token_id=0),
        features={"rope_scaling": dict(rope_scaling=None), "original_max_position_embeddings": dict(original_max_position_embeddings=16)},
    ),
    "gpt2": dict(
        family="gpt2",
        config=dict(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=80,
                    layer_norm_epsilon=1e-2, bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0),
        features={"layer_norm_epsilon": dict(layer_norm_epsilon=1e-5), "activation_function": dict(activation_function="relu")},
    ),
}
B, S = 2, 12


def perturb(model, gen):
    """Weights far from a fresh init, norm weights off 1 and biases off 0: no feature is an identity."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if ("norm" in name or name.split(".")[-2].startswith("ln")) and name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
            else:
                fan_in = p.shape[1] if "c_" not in name else p.shape[0]  # GPT-2's Conv1D stores [in, out]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * (1.5 / fan_in ** 0.5))


def logits_of(model, ids):
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def rel(a, b):
    return float((a - b).norm() / b.norm())


def with_changes(model, case, change):
    """The same weights under a changed config, or with some parameters zeroed ('zero:<regex>')."""
    import re
    if isinstance(change, str):
        other = copy.deepcopy(model)
        pattern = re.compile(change.split(":", 1)[1])
        with torch.no_grad():
            hit = [n for n, p in other.named_parameters() if pattern.search(n)]
            assert hit, change
            for n, p in other.named_parameters():
                if pattern.search(n):
                    p.zero_()
        return other
    other = AutoModelForCausalLM.from_config(CLASSES[case["family"]](**copy.deepcopy({**case["config"], **change})), **attention(case))
    other.load_state_dict(model.state_dict())
    return other


def attention(case):
    """The attention implementation a case asks for (eager where sdpa would drop part of the math)."""
    return {"attn_implementation": case["attn"]} if "attn" in case else {}


def make_case(name, case, t4):
    folder = os.path.join(OUT, "models", name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    torch.manual_seed(sum(map(ord, name)))
    # A copy: transformers 5 standardises a RoPE dict it is given in place (type -> rope_type, added keys).
    config = CLASSES[case["family"]](**copy.deepcopy(case["config"]))
    model = AutoModelForCausalLM.from_config(config, **attention(case))
    perturb(model, gen)
    model.eval()
    ids = torch.randint(3, config.vocab_size, (B, S), generator=gen)
    logits = logits_of(model, ids)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(folder, "config.json"))
        shutil.copy(os.path.join(tmp, "model.safetensors"), os.path.join(folder, "model.safetensors"))
    layout5 = json.load(open(os.path.join(folder, "config.json")))
    assert "rope_theta" not in layout5 and "rope_scaling" not in layout5, "transformers 5 should write rope_parameters only"
    # The case's features must matter: switched off, the logits move.
    moved = {}
    for feature, change in case["features"].items():
        r = rel(logits_of(with_changes(model, case, change), ids), logits)
        assert r > 1e-3, f"{name}: switching {feature} off moves the logits by only {r:.2e}"
        moved[feature] = r
    # The 4.x layout: transformers 4 builds the config from the same keywords, loads these weights, saves
    # its config.json and computes its own logits.
    if t4:
        request = {"family": case["family"], "config": case["config"], "attention": attention(case), "weights": os.path.join(folder, "model.safetensors"),
                   "ids": ids.tolist(), "out": os.path.join(folder, "config.transformers4.json")}
        result = json.loads(subprocess.run([t4, os.path.join(HERE, "transformers4.py")], input=json.dumps(request),
                                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        r4 = rel(torch.tensor(result["logits"], dtype=torch.float64), logits)
        # Gemma: transformers 4 scales the embeddings by sqrt(hidden_size) in the model's dtype (float64
        # here), transformers 5 by its float32 rounding (the embedding's buffer); in float32 they agree.
        assert r4 < (1e-6 if case["family"].startswith("gemma") else 1e-12), f"{name}: transformers 4 computes other logits ({r4:.2e})"
    layout4 = json.load(open(os.path.join(folder, "config.transformers4.json")))
    assert "rope_parameters" not in layout4
    # transformers 5 reads the 4.x layout into the same model.
    for layout in ("config.json", "config.transformers4.json"):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(folder, layout), os.path.join(tmp, "config.json"))
            shutil.copy(os.path.join(folder, "model.safetensors"), tmp)
            again = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, **attention(case))
            r = rel(logits_of(again, ids), logits)
            assert r < 1e-12, f"{name}: transformers 5 reads {layout} into another model ({r:.2e})"
    save_file({"logits": logits.float().contiguous()}, os.path.join(folder, "logits.safetensors"), metadata={"format": "pt"})
    json.dump({"ids": ids.tolist(), "family": case["family"], "features": moved, "transformers": transformers.__version__},
              open(os.path.join(folder, "expected.json"), "w"), indent=1)
    print(f"model {name}: features move the logits by {', '.join(f'{k} {v:.2e}' for k, v in moved.items())}")
    return model, ids


def peft_cases(bases):
    """Adapters PEFT saves, with PEFT's logits: plain LoRA variants load; PiSSA and OLoRA as saved raw are refused."""
    from peft import LoraConfig, PeftModel, ShiraConfig, get_peft_model
    llama, llama_ids = bases["llama"]
    gpt2, gpt2_ids = bases["gpt2"]
    gemma2, gemma2_ids = bases["gemma2"]
    gemma3, gemma3_ids = bases["gemma3"]
    phi3, phi3_ids = bases["phi3"]
    cases = {
        "lora-llama-rslora-patterns": (llama, llama_ids, dict(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True,
                                                              rank_pattern={"down_proj": 2}, alpha_pattern={"o_proj": 3})),
        "lora-gpt2-fused-qkv": (gpt2, gpt2_ids, dict(r=4, lora_alpha=6, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)),
        "lora-gemma2-all-linear": (gemma2, gemma2_ids, dict(r=4, lora_alpha=8, target_modules="all-linear")),
        "lora-gemma3-all-linear": (gemma3, gemma3_ids, dict(r=4, lora_alpha=8, target_modules="all-linear")),
        "lora-phi3-fused": (phi3, phi3_ids, dict(r=4, lora_alpha=8, target_modules=["qkv_proj", "gate_up_proj", "o_proj"])),
        "lora-llama-orthogonal-init": (llama, llama_ids, dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights="orthogonal")),
        "lora-llama-eva-init": (llama, llama_ids, dict(r=4, lora_alpha=4, target_modules=["k_proj", "up_proj"], init_lora_weights="eva")),
        "pissa-llama": (llama, llama_ids, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights="pissa")),
        "olora-llama": (llama, llama_ids, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="olora")),
        "dora-llama": (llama, llama_ids, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True)),
        "dora-gpt2-fused-qkv": (gpt2, gpt2_ids, dict(r=4, lora_alpha=6, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, use_dora=True)),
        "shira-llama": (llama, llama_ids, dict(r=2, target_modules=["q_proj", "down_proj"], mask_type="random", random_seed=5)),
    }
    for name, (base, ids, options) in cases.items():
        folder = os.path.join(OUT, "peft", name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        gen = torch.Generator().manual_seed(sum(map(ord, name)))
        torch.manual_seed(sum(map(ord, name)))
        config = ShiraConfig(task_type="CAUSAL_LM", **options) if name.startswith("shira") else LoraConfig(task_type="CAUSAL_LM", **options)
        model = get_peft_model(copy.deepcopy(base), config)
        converted = options.get("init_lora_weights") in ("pissa", "olora")
        with tempfile.TemporaryDirectory() as tmp:
            initial = os.path.join(tmp, "initial")
            if converted:
                # The adapter as initialised, saved before training for PEFT's conversion on save.
                model.peft_config["default"].init_lora_weights = True
                model.save_pretrained(initial)
                model.peft_config["default"].init_lora_weights = options["init_lora_weights"]
            with torch.no_grad():  # "training": move every adapter tensor
                for n, p in model.named_parameters():
                    if "lora_" in n or "shira_" in n:
                        p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
            raw = os.path.join(folder, "raw" if converted else "")
            model.save_pretrained(raw)
            logits = {"raw": logits_of(PeftModel.from_pretrained(copy.deepcopy(base), raw), ids)}
            if converted:
                out = os.path.join(folder, "converted")
                model.save_pretrained(out, path_initial_model_for_weight_conversion=initial)
                logits["converted"] = logits_of(PeftModel.from_pretrained(copy.deepcopy(base), out), ids)
                # The conversion is exact: the converted LoRA on the original base is the raw one on the residual.
                assert rel(logits["converted"], logits["raw"]) < 1e-5, name
            assert rel(logits["raw"], logits_of(base, ids)) > 1e-3, f"{name}: the adapter changes nothing"
        for readme in glob.glob(os.path.join(folder, "**", "README.md"), recursive=True):
            os.remove(readme)  # PEFT's model card template: nothing a test reads
        for form, value in logits.items():
            save_file({"logits": value.float().contiguous()}, os.path.join(folder, form if converted else "", "logits.safetensors"), metadata={"format": "pt"})
        json.dump({"base": next(n for n, (m, _) in bases.items() if m is base), "peft": peft.__version__, "forms": sorted(logits)},
                  open(os.path.join(folder, "expected.json"), "w"), indent=1)
        print(f"peft {name}: {', '.join(sorted(logits))}")


def shipped_in_transformers5_layout():
    """The shipped tiny base re-saved by transformers 5: its config.json in the 5.x layout."""
    model = AutoModelForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32)
    folder = os.path.join(OUT, "tiny-llama-skills-transformers5")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "config.json"), folder)
        # Same weights, bit for bit: the fixture keeps only the config and uses the shipped weights.
        from safetensors.torch import load_file
        mine, theirs = load_file(os.path.join(SHIPPED, "model.safetensors")), load_file(os.path.join(tmp, "model.safetensors"))
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


TOKENIZER_TEXTS = [
    "Hello world", "  two  spaces and a tab\there", "Numbers 12345 and 3.14159", "Ünïcödé façade naïve", "emoji 😀 and 漢字",
    "line one\nline two\r\n", "it's we're they'll I'd", "<start_of_turn>user\nhi<end_of_turn>", "<|eot_id|> after", "",
]


def tokenizer_cases():
    """Tokenizers in the formats of the new families' tokenizer.json, trained by the tokenizers library on a
    small corpus, with the ids and texts it gives (texts with characters outside the corpus, so byte-level
    BPE and byte fallback are both exercised)."""
    import tokenizers
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    import random
    words = ("the model learns to answer questions about numbers 1 23 456 and words it has seen; fine-tuning "
             "adapters with low rank, it's what we'll train: hello world! tabs\tand\nnew lines").split(" ")
    pick = random.Random(0)
    corpus = [" ".join(pick.choice(words) for _ in range(12)) for _ in range(400)]
    llama3_split = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    qwen_split = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

    def byte_level(split, specials, bos, normalizer=None):
        # Llama 3's and Qwen's layout: a regex split, then bytes as characters (ByteLevel without its own regex).
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        steps = [processors.ByteLevel(trim_offsets=False)]
        if bos:
            steps.append(processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]))
        tok.post_processor = processors.Sequence(steps)
        return tok

    def sentencepiece_bpe():
        # Gemma's layout: spaces as U+2581, no pre-tokenizer, BPE with the 256 <0xXX> byte tokens as fallback.
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=specials))
        spec = json.loads(tok.to_str())
        vocab = spec["model"]["vocab"]
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        tok = Tokenizer.from_str(json.dumps(spec))
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
        return tok

    cases = {
        "llama3-byte-level-bpe": (byte_level(llama3_split, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], "<|begin_of_text|>"),
                                  {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
        "qwen3-byte-level-bpe": (byte_level(qwen_split, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, normalizers.NFC()),
                                 {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
        "gemma-sentencepiece-bpe": (sentencepiece_bpe(), {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}),
    }
    for name, (tok, config) in cases.items():
        folder = os.path.join(OUT, "tokenizers", name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        tok.save(os.path.join(folder, "tokenizer.json"))
        json.dump(config, open(os.path.join(folder, "tokenizer_config.json"), "w"), indent=1)
        encoded = []
        for text in TOKENIZER_TEXTS:
            with_special, plain = tok.encode(text).ids, tok.encode(text, add_special_tokens=False).ids
            encoded.append({"text": text, "ids": with_special, "ids_plain": plain,
                            "decoded": tok.decode(with_special, skip_special_tokens=False),
                            "decoded_skip": tok.decode(with_special, skip_special_tokens=True)})
        if name.startswith("gemma"):
            assert any(t.startswith("<0x") for e in encoded for t in map(tok.id_to_token, e["ids"])), "no byte fallback exercised"
        json.dump({"tokenizers": tokenizers.__version__, "cases": encoded}, open(os.path.join(folder, "expected.json"), "w"), indent=1, ensure_ascii=False)
        print(f"tokenizer {name}: {tok.get_vocab_size()} tokens")


def field_lists(t4):
    """Every field of the config classes, as the installed releases define and write them."""
    def fields5(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        return sorted(names | set(cls().to_dict()))
    from peft import LoraConfig, ShiraConfig
    out = {
        "transformers": transformers.__version__,
        "config": {family: fields5(cls) for family, cls in CLASSES.items()},
        "rope_parameters": sorted(transformers.modeling_rope_utils.RopeParameters.__annotations__),
        "peft": peft.__version__,
        "LoraConfig": sorted(f.name for f in dataclasses.fields(LoraConfig)),
        "ShiraConfig": sorted(f.name for f in dataclasses.fields(ShiraConfig)),
    }
    if t4:
        result = json.loads(subprocess.run([t4, os.path.join(HERE, "transformers4.py")], input=json.dumps({"fields": list(CLASSES)}),
                                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        out["transformers4"] = result["version"]
        out["config4"] = result["fields"]
    json.dump(out, open(os.path.join(OUT, "fields.json"), "w"), indent=1)


def schedules():
    """The learning rate at each optimizer step, read from a torch optimizer driven by transformers' schedulers."""
    from transformers import optimization as o
    makers = {
        "constant": lambda opt, w, t: o.get_constant_schedule_with_warmup(opt, w),
        "linear": lambda opt, w, t: o.get_linear_schedule_with_warmup(opt, w, t),
        "cosine": lambda opt, w, t: o.get_cosine_schedule_with_warmup(opt, w, t),
        "cosine_min_lr": lambda opt, w, t: o.get_cosine_with_min_lr_schedule_with_warmup(opt, w, t, min_lr_rate=0.1),
    }
    out = []
    for kind, make in makers.items():
        for total, warmup in [(1, 0), (2, 0), (5, 1), (7, 3), (20, 0), (20, 1), (33, 4), (10, 10)]:
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
            sched = make(opt, warmup, total)
            rates = []
            for _ in range(total):
                rates.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            out.append({"schedule": kind, "lr": 2e-4, "total": total, "warmup": warmup, "rates": rates})
    json.dump({"transformers": transformers.__version__, "cases": out}, open(os.path.join(OUT, "schedules.json"), "w"), indent=1)


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":
        # PEFT keeps target_modules in a set: a fixed hash seed writes them in the same order every run.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    t4 = sys.argv[1] if len(sys.argv) > 1 else None
    if not t4:
        print("no transformers 4 interpreter given: the 4.x layouts and fields are kept as they are", file=sys.stderr)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    bases = {name: make_case(name, case, t4) for name, case in CASES.items()}
    peft_cases(bases)
    shipped_in_transformers5_layout()
    tokenizer_cases()
    field_lists(t4)
    schedules()
    print(f"fixtures written to {os.path.relpath(OUT, ROOT)} with torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")


if __name__ == "__main__":
    main()
