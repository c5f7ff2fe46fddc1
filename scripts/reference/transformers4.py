"""
The transformers 4 half of make_fixtures.py, run in an environment with transformers 4.57: reads a JSON
request on stdin and prints a JSON answer as its last line.
- {"family", "config", "attention", "weights", "ids", "out"}: builds the 4.x config from the keywords (and
  the attention implementation), loads the weights
  transformers 5 saved, writes the config.json transformers 4 saves to `out`, answers its float64 logits.
- {"fields": [family, ...]}: answers the config fields transformers 4 defines and writes, per family.
"""
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile

# transformers 4.57 insists on huggingface-hub < 1.0 at import, which only matters for downloads; where
# only a newer hub is installable (an offline package mirror), the check is told what it wants to hear.
_version = importlib.metadata.version


def _hub_version(package):
    found = _version(package)
    if package.replace("_", "-") == "huggingface-hub" and int(found.split(".")[0]) >= 1:
        return "0.36.0"
    return found


importlib.metadata.version = _hub_version

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, GPT2Config, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config, Qwen3Config  # noqa: E402

CLASSES = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig, "gemma2": Gemma2Config,
           "gemma3_text": Gemma3TextConfig, "phi3": Phi3Config, "gpt2": GPT2Config}
assert transformers.__version__.startswith("4."), transformers.__version__


def fields(cls):
    import inspect
    names = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    return sorted(names | set(cls().to_dict()))


def main():
    request = json.loads(sys.stdin.read())
    if "fields" in request:
        print(json.dumps({"version": transformers.__version__, "fields": {f: fields(CLASSES[f]) for f in request["fields"]}}))
        return
    config = CLASSES[request["family"]](**request["config"])
    model = AutoModelForCausalLM.from_config(config, **request.get("attention", {}))
    state = load_file(request["weights"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied head is saved once, as the embedding.
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    model.tie_weights()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "config.json"), request["out"])
    model = model.double().eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(request["ids"])).logits
    print(json.dumps({"logits": logits.tolist()}))


if __name__ == "__main__":
    main()
