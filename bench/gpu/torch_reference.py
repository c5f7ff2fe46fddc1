"""The GPU kit's PyTorch reference: the benchmark's models and batches in PyTorch, for loss and speed.

    python3 bench/gpu/torch_reference.py REFERENCE_DIR OUT_JSON

REFERENCE_DIR is what `node kit.mjs reference` writes: reference-inputs.json (per model: its folder, the
batch shape, the token ids and the engine's loss on them) and the models as Hugging Face folders. For each
model this computes the loss of the same batch with a plain PyTorch Llama (and with Hugging Face
transformers where it is installed) and times training steps (forward, backward, clipping, AdamW) for
full fine-tuning and LoRA (rank 16 on every projection), in fp32 and in bf16 autocast. Needs torch and
numpy only; runs on CUDA when available, else on the CPU.
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[8 + n + start : 8 + n + end]
        if info["dtype"] == "F32":
            a = np.frombuffer(raw, dtype=np.float32)
        elif info["dtype"] == "F16":
            a = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: dtype {info['dtype']} of {name} is not read here")
        tensors[name] = torch.from_numpy(a.copy()).reshape(info["shape"])
    return tensors


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Llama(torch.nn.Module):
    """Hugging Face's Llama forward (RMSNorm, RoPE on halves, grouped-query attention, SwiGLU), written out."""

    def __init__(self, cfg, weights):
        super().__init__()
        self.cfg = cfg
        self.w = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v) for k, v in weights.items()})
        self.lora = torch.nn.ParameterDict()
        self.lora_scale = 0.0

    def p(self, name):
        return self.w[name.replace(".", "__")]

    def add_lora(self, rank, alpha):
        """Freeze the base and put rank-`rank` A and B (B zero, as PEFT starts) beside every projection."""
        for param in self.w.values():
            param.requires_grad_(False)
        for key, param in list(self.w.items()):
            if key.endswith("_proj__weight"):
                out_f, in_f = param.shape
                self.lora[key + "__A"] = torch.nn.Parameter(torch.randn(rank, in_f, device=param.device) / math.sqrt(in_f))
                self.lora[key + "__B"] = torch.nn.Parameter(torch.zeros(out_f, rank, device=param.device))
        self.lora_scale = alpha / rank

    def linear(self, x, name):
        key = name.replace(".", "__")
        y = x @ self.w[key].t()
        if key + "__A" in self.lora:
            y = y + (x @ self.lora[key + "__A"].t()) @ self.lora[key + "__B"].t() * self.lora_scale
        return y

    def forward(self, ids):
        c = self.cfg
        B, S = ids.shape
        nH, nKV = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
        D = c["hidden_size"] // nH
        eps = c.get("rms_norm_eps", 1e-6)
        inv_freq = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, D, 2, device=ids.device, dtype=torch.float32) / D))
        freqs = torch.arange(S, device=ids.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
        x = self.p("model.embed_tokens.weight")[ids]
        for i in range(c["num_hidden_layers"]):
            pre = f"model.layers.{i}."
            h = rms_norm(x, self.p(pre + "input_layernorm.weight"), eps)
            q = self.linear(h, pre + "self_attn.q_proj.weight").view(B, S, nH, D).transpose(1, 2)
            k = self.linear(h, pre + "self_attn.k_proj.weight").view(B, S, nKV, D).transpose(1, 2)
            v = self.linear(h, pre + "self_attn.v_proj.weight").view(B, S, nKV, D).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = k.repeat_interleave(nH // nKV, dim=1), v.repeat_interleave(nH // nKV, dim=1)
            if hasattr(F, "scaled_dot_product_attention"):
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
                scores = scores.masked_fill(torch.ones(S, S, dtype=torch.bool, device=ids.device).triu(1), float("-inf"))
                a = scores.softmax(-1) @ v
            x = x + self.linear(a.transpose(1, 2).reshape(B, S, nH * D), pre + "self_attn.o_proj.weight")
            h = rms_norm(x, self.p(pre + "post_attention_layernorm.weight"), eps)
            gate, up = self.linear(h, pre + "mlp.gate_proj.weight"), self.linear(h, pre + "mlp.up_proj.weight")
            x = x + self.linear(F.silu(gate) * up, pre + "mlp.down_proj.weight")
        x = rms_norm(x, self.p("model.norm.weight"), eps)
        head = self.p("model.embed_tokens.weight") if c.get("tie_word_embeddings") else self.p("lm_head.weight")
        logits = x @ head.t()
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def load(folder, device):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "llama":
        raise ValueError(f"{folder}: the reference implements Llama, not {cfg.get('model_type')}")
    return Llama(cfg, read_safetensors(os.path.join(folder, "model.safetensors"))).to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(model, ids, steps, precision, device):
    params = [p for p in model.parameters() if p.requires_grad]
    fused = {"fused": True} if device.type == "cuda" and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames else {}
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **fused)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, allocator
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) * 1000 / steps


def transformers_loss(folder, ids):
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager").to(ids.device)
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def main():
    ref_dir, out_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(ref_dir, "reference-inputs.json")) as f:
        inputs = json.load(f)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = 10 if device.type == "cuda" else 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as the engine computes it
    result = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "engine_device": inputs["device"],
        "steps_timed": steps,
        "models": [],
    }
    for m in inputs["models"]:
        folder = os.path.join(ref_dir, m["folder"])
        ids = torch.tensor(m["ids"], dtype=torch.long, device=device).view(m["B"], m["S"])
        model = load(folder, device)
        with torch.no_grad():
            loss = float(model(ids))
        row = {"name": m["name"], "batch": f"{m['B']}x{m['S']}", "engine_loss": m["engineLoss"], "torch_loss": loss,
               "loss_rel_diff": abs(m["engineLoss"] - loss) / abs(loss), "transformers_loss": transformers_loss(folder, ids), "steps": []}
        for method in ("full", "lora"):
            for precision in ("fp32", "bf16"):
                model = load(folder, device)
                if method == "lora":
                    model.add_lora(16, 32)
                ms = time_steps(model, ids, steps, precision, device)
                row["steps"].append({"method": method, "precision": precision, "step_ms": ms, "tokens_per_s": m["B"] * m["S"] / (ms / 1000)})
                print(f"{m['name']} {method} {precision}: {ms:.1f} ms/step", flush=True)
                del model
        print(f"{m['name']}: engine loss {m['engineLoss']:.6f}, torch {loss:.6f} (rel diff {row['loss_rel_diff']:.2e}), transformers {row['transformers_loss']}", flush=True)
        result["models"].append(row)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
