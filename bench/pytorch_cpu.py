"""
The engine's browser-bench run in PyTorch on this machine's CPU: LoRA r8 on every linear layer of the
shipped base (PEFT), 8 rows of 64 tokens of the shipped sample per step, AdamW at 5e-3. Prints one JSON
line: the median step time after 3 warm-up steps and tokens per second. Run by bench/cpu-node.ts.
"""
import json, os, statistics, sys, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

root = sys.argv[1]
steps = int(sys.argv[2])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(os.path.join(root, "public/models/tiny-llama-skills"), dtype=torch.float32)
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(root, "public/models/tiny-llama-skills/tokenizer.json"))
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0))
rows = [json.loads(l) for l in open(os.path.join(root, "public/datasets/next-letter.jsonl"))]
ids = [t for r in rows for t in tok.encode(r["prompt"] + r["completion"])]
S, B = 64, 8
batches = [torch.tensor(ids[i * B * S:(i + 1) * B * S]).view(B, S) for i in range(steps)]
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
times = []
for b in batches:
    t = time.perf_counter()
    loss = model(input_ids=b, labels=b).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t)
ms = statistics.median(times[3:]) * 1000
print(json.dumps({"where": f"pytorch {torch.__version__} cpu ({torch.get_num_threads()} threads)", "step_ms": ms, "tokens_per_s": B * S / ms * 1000}))
