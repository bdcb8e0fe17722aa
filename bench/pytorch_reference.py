"""The PyTorch side of `soft-train bench --against pytorch`: the same work, on the same machine,
in PyTorch + Hugging Face transformers + peft.

`soft-train bench` writes a spec (model configs, shapes, runs, thread count) and reads back, on
stdout, one JSON list of per-run throughputs per requested measurement, in order. Progress goes
to stderr. Weights are random (seeded), as on the Rust side: speed does not depend on them.

    python bench/pytorch_reference.py --spec SPEC.json
"""

import argparse
import contextlib
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def hf_config(c):
    return LlamaConfig(
        vocab_size=c["vocab_size"],
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_hidden_layers=c["n_layers"],
        num_attention_heads=c["n_heads"],
        num_key_value_heads=c["n_kv_heads"],
        head_dim=c["head_dim"],
        rope_theta=c["rope_theta"],
        rms_norm_eps=c["rms_eps"],
        max_position_embeddings=c["max_seq_len"],
        tie_word_embeddings=c["tie_embeddings"],
        attention_bias=c["attention_bias"],
        hidden_act="silu",
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tokens(n, vocab, seed):
    """splitmix64 ids in 4..vocab, the same stream as the Rust side's."""
    mask = (1 << 64) - 1
    state, out = seed, []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(4 + (z ^ (z >> 31)) % (vocab - 4))
    return out


def measure(warmup, runs, units, f):
    for _ in range(warmup):
        f()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        rates.append(units / (time.perf_counter() - start))
    return rates


def examples(s, vocab, batch, seed):
    p, r = s["prompt_tokens"], s["response_tokens"]
    return [
        (tokens(p, vocab, seed + 3 * i), tokens(r, vocab, seed + 3 * i + 1), tokens(r, vocab, seed + 3 * i + 2))
        for i in range(batch)
    ]


def lora_model(cfg, s, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    lora = s["lora"]
    peft_cfg = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s["lr"], weight_decay=0.0)
    return model, opt


def train_row(cfg, s, batch, seed, warmup, runs):
    model, opt = lora_model(cfg, s, seed)
    ex = examples(s, cfg.vocab_size, batch, seed)
    ids = torch.tensor([p + r for p, r, _ in ex])
    labels = torch.tensor([[-100] * len(p) + r for p, r, _ in ex])

    def step():
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    return measure(warmup, runs, batch * (s["prompt_tokens"] + s["response_tokens"]), step)


def soft_row(cfg, s, batch, seed, warmup, runs):
    """SOFT's step as a plain implementation writes it: prompt + real and prompt + distilled as
    one batch of 2B sequences, the two mean losses mixed by lambda."""
    model, opt = lora_model(cfg, s, seed)
    ex = examples(s, cfg.vocab_size, batch, seed)
    ids = torch.tensor([p + r for p, r, _ in ex] + [p + d for p, _, d in ex])
    labels = torch.tensor([[-100] * len(p) + r for p, r, _ in ex] + [[-100] * len(p) + d for p, _, d in ex])
    ce = torch.nn.CrossEntropyLoss()

    def step():
        logits = model(input_ids=ids).logits[:, :-1]
        target = labels[:, 1:]
        real = ce(logits[:batch].reshape(-1, logits.shape[-1]), target[:batch].reshape(-1))
        dist = ce(logits[batch:].reshape(-1, logits.shape[-1]), target[batch:].reshape(-1))
        loss = 0.5 * real + 0.5 * dist
        real.item(), dist.item()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return measure(warmup, runs, batch * (s["prompt_tokens"] + 2 * s["response_tokens"]), step)


def generate_row(cfg, s, batch, seed, warmup, runs):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    ex = examples(s, cfg.vocab_size, batch, seed)
    ids = torch.tensor([p for p, _, _ in ex])
    n = s["new_tokens"]

    def gen():
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                num_beams=s["beams"],
                num_return_sequences=s["beams"],
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                length_penalty=1.0,
                early_stopping=False,
                pad_token_id=0,
            )
        if out.shape[1] != ids.shape[1] + n:
            raise RuntimeError(f"generate wrote {out.shape[1] - ids.shape[1]} tokens, not {n}")

    return measure(warmup, runs, batch * n, gen)


def grounding_row(cfg, s, seed, warmup, runs):
    g = torch.Generator().manual_seed(seed)
    d = cfg.hidden_size
    queries = torch.randn(s["queries"], d, generator=g)
    table = torch.randn(s["items"], d, generator=g)

    def ground():
        with torch.inference_mode():
            torch.cdist(queries, table).topk(s["top_k"], dim=1, largest=False).indices.tolist()

    return measure(warmup, runs, s["queries"], ground)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    s, seed, warmup, runs = spec["shapes"], spec["seed"], spec["warmup"], spec["runs"]
    # `soft-train bench --against pytorch-bf16`: every row's products in bf16 (oneDNN), weights,
    # optimizer and loss in f32.
    autocast = spec.get("autocast")
    if autocast not in (None, "bfloat16"):
        raise SystemExit(f"unknown autocast {autocast!r}")

    def precision():
        if autocast is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, autocast {autocast}", file=sys.stderr)
    out = []
    for row in spec["rows"]:
        cfg = hf_config(row["config"])
        work, batch = row["work"], row["batch"]
        with precision():
            if work == "train":
                rates = train_row(cfg, s, batch, seed, warmup, runs)
            elif work == "soft":
                rates = soft_row(cfg, s, batch, seed, warmup, runs)
            elif work == "generate":
                rates = generate_row(cfg, s, batch, seed, warmup, runs)
            elif work == "grounding":
                rates = grounding_row(cfg, s, seed, warmup, runs)
            else:
                raise SystemExit(f"unknown work {work!r}")
        rates.sort()
        print(f"  {row['model']} {work} batch {batch}: median {rates[len(rates) // 2]:.1f}/s", file=sys.stderr)
        out.append(rates)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
