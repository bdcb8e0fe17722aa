"""Do `soft-train`'s LoRA adapters and Python PEFT's mean the same model?

Loads a model in transformers — SmolLM2-135M-Instruct from its GGUF, or a Hugging Face directory
such as the Llama-3.2- and Qwen2.5-shaped checkpoints of bench/hf_rope_check.py — and compares
next-token logits with `soft-train generate --logits` on the same token ids, three ways:
  base       no adapter: the two implementations of the model itself;
  ours->peft an adapter written by `soft-train sft` (--ours DIR), loaded by peft;
  peft->ours an adapter created by peft (random, non-zero B so it changes the output), saved by
             `save_pretrained`, loaded by soft-train.
Prints one JSON object with the max absolute logit difference of each; exits 1 when one is
above --tolerance. Needs the bench venv (scripts/setup-bench.sh).

    python bench/peft_roundtrip.py --soft-train BIN --model models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --ours RUN/adapter
    python bench/peft_roundtrip.py --soft-train BIN --model /tmp/hf-rope-check/qwen25 --ours RUN/adapter

The prompts' ids are taken modulo the model's vocabulary (the small checkpoints have 512 tokens).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

PROMPTS = [
    "504 3575 282 4649 314",
    "1 9690 198 1 4093 198 504 1159 14946 282 253 5213 30",
    "30 42 1024 2048 7 7 7 9000 12000 4 5",
]


def base_model(path):
    if os.path.isdir(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    directory, name = os.path.split(os.path.abspath(path))
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    return model.eval()


def prompts(vocab_size):
    return [" ".join(str(int(t) % vocab_size) for t in text.split()) for text in PROMPTS]


def torch_logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def ours_logits(binary, gguf, ids, adapter):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.json")
        cmd = [binary, "generate", "--model", gguf, "--ids", ids, "--max-new-tokens", "1", "--backend", "cpu", "--logits", out]
        if adapter:
            cmd += ["--adapter", adapter]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return torch.tensor(json.load(f))


def max_diff(binary, gguf, model, adapter):
    worst = 0.0
    for text in prompts(model.config.vocab_size):
        ids = [int(t) for t in text.split()]
        ours = ours_logits(binary, gguf, text, adapter)
        theirs = torch_logits(model, ids)
        worst = max(worst, (ours - theirs).abs().max().item())
    return worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--soft-train", required=True, help="the soft-train binary")
    parser.add_argument("--model", "--gguf", dest="model", required=True, help="a GGUF file or a Hugging Face directory")
    parser.add_argument("--ours", required=True, help="an adapter directory written by soft-train sft")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()
    torch.manual_seed(0)
    result = {}

    base = base_model(args.model)
    result["base"] = max_diff(args.soft_train, args.model, base, None)

    ours = PeftModel.from_pretrained(base_model(args.model), args.ours).eval()
    result["ours->peft"] = max_diff(args.soft_train, args.model, ours, args.ours)
    # The adapter must matter, or the comparison above proves nothing.
    result["ours adapter effect"] = max(
        (torch_logits(ours, [int(t) for t in p.split()]) - torch_logits(base, [int(t) for t in p.split()])).abs().max().item()
        for p in prompts(base.config.vocab_size)
    )

    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    theirs = get_peft_model(base_model(args.model), config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        theirs.save_pretrained(tmp)
        result["peft->ours"] = max_diff(args.soft_train, args.model, theirs, tmp)
    result["peft adapter effect"] = max(
        (torch_logits(theirs, [int(t) for t in p.split()]) - torch_logits(base, [int(t) for t in p.split()])).abs().max().item()
        for p in prompts(base.config.vocab_size)
    )
    result["tolerance"] = args.tolerance
    print(json.dumps(result, indent=2))
    failed = [k for k in ("base", "ours->peft", "peft->ours") if not result[k] <= args.tolerance]
    if failed:
        print(f"above tolerance: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
