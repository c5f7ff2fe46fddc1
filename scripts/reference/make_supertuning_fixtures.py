"""
Super-Tuning adapters (peft_type "SUPERTUNING") written by PEFT itself, with PEFT's logits, for
test/interop/: the method is on PEFT's main branch and in no PEFT release the other fixtures pin, so
this runs in an environment of its own (scripts/reference/run.sh: PEFT_MAIN names a PEFT checkout that
has peft/tuners/supertuning; without it these fixtures stay as they are).

Each case loads a base model make_fixtures.py wrote (test/fixtures/reference/models/<base>), attaches
Super-Tuning with non-zero starting values (init_weights=False, as PEFT's own tests exercise a
non-trivial adapter), moves every adapter tensor as training would, saves it, and records the logits
PEFT computes from the saved files on the base (float64). Then the other direction: PEFT loads the
Super-Tuning files the engine wrote (test/fixtures/reference/engine/, scripts/reference/engine-adapters.ts)
and must compute the engine's logits.
"""
import glob
import json
import os
import shutil
import sys

import torch
import peft
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "reference")

CASES = {
    # Super: the sparse support alone, at 10% of each weight.
    "supertuning-llama": ("llama", dict(target_modules=["q_proj", "down_proj"], sparsity=0.9)),
    # Supra: the support and a LoRA on the same modules.
    "supertuning-llama-supra": ("llama", dict(target_modules=["q_proj", "v_proj", "up_proj"], sparsity=0.95, r=2, lora_alpha=3)),
    # Phi-3's fused qkv_proj and gate_up_proj: indices into the fused weights.
    "supertuning-phi3-fused": ("phi3", dict(target_modules=["qkv_proj", "gate_up_proj"], sparsity=0.9, r=2)),
}


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    from peft import PeftModel, SupertuningConfig, get_peft_model
    torch.use_deterministic_algorithms(True)
    for name, (base_name, options) in CASES.items():
        folder = os.path.join(OUT, "peft", name)
        shutil.rmtree(folder, ignore_errors=True)
        base_folder = os.path.join(OUT, "models", base_name)
        torch.manual_seed(sum(map(ord, name)))
        base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
        model = get_peft_model(base, SupertuningConfig(task_type="CAUSAL_LM", init_weights=False, **options))
        gen = torch.Generator().manual_seed(sum(map(ord, name)))
        with torch.no_grad():  # "training": move every adapter tensor
            for n, p in model.named_parameters():
                if "supertuning_" in n:
                    p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
        model.peft_config["default"].base_model_name_or_path = f"models/{base_name}"  # not this machine's path
        model.save_pretrained(folder)
        for readme in ("README.md",):
            if os.path.exists(os.path.join(folder, readme)):
                os.remove(os.path.join(folder, readme))
        ids = torch.tensor(json.load(open(os.path.join(base_folder, "expected.json")))["ids"])
        fresh = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
        loaded = PeftModel.from_pretrained(fresh, folder).double().eval()
        with torch.no_grad():
            logits = loaded(input_ids=ids).logits
            plain = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float64).eval()(input_ids=ids).logits
        assert float((logits - plain).norm() / plain.norm()) > 1e-3, f"{name}: the adapter changes nothing"
        save_file({"logits": logits.float().contiguous()}, os.path.join(folder, "logits.safetensors"), metadata={"format": "pt"})
        json.dump({"base": base_name, "peft": peft.__version__, "forms": []}, open(os.path.join(folder, "expected.json"), "w"), indent=1)
        print(f"peft {name}: written with peft {peft.__version__}")
    # The engine's own Super-Tuning files (scripts/reference/engine-adapters.ts): PEFT loads them on the
    # unchanged base and computes the engine's logits.
    from safetensors.torch import load_file
    for folder in sorted(glob.glob(os.path.join(OUT, "engine", "supertuning-*"))):
        base_folder = os.path.join(OUT, "models", json.load(open(os.path.join(folder, "expected.json")))["base"])
        ids = torch.tensor(json.load(open(os.path.join(base_folder, "expected.json")))["ids"])
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32), folder).double().eval()
        with torch.no_grad():
            logits = loaded(input_ids=ids).logits.float()
        want = load_file(os.path.join(folder, "logits.safetensors"))["logits"]
        err = float((logits - want).norm() / want.norm())
        assert err < 1e-5, f"{os.path.basename(folder)}: PEFT's logits differ from the engine's by {err:.2e}"
        print(f"engine {os.path.basename(folder)}: PEFT gives the engine's logits ({err:.1e})")
    # The config class's fields, which test/interop/fields.node.test.ts checks the engine classifies.
    import dataclasses
    fields = {"peft": peft.__version__, "SupertuningConfig": sorted(f.name for f in dataclasses.fields(SupertuningConfig))}
    json.dump(fields, open(os.path.join(OUT, "supertuning-fields.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
