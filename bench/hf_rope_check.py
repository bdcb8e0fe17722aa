"""Does soft-core read a Hugging Face checkpoint's rotary settings as transformers does?

Writes, with transformers' own `save_pretrained`, small random checkpoints shaped like the paper's
backbones (published config patterns, layers and widths scaled down; head size kept):

  llama32      Llama-3.2: GQA 3:1, tied head, head_dim 128, rope_theta 500000 with `llama3` scaling
               (factor 32, low 1, high 4, original context 8192), rms_norm_eps 1e-5; weights stored
               bf16 in two shards (model.safetensors.index.json); config.json in transformers 5's
               spelling (`rope_parameters`), as save_pretrained writes it.
  llama32-old  the same weights, config.json rewritten to the older spelling of the published
               Llama-3.2 config (top-level `rope_theta` + `rope_scaling`); transformers must read it
               to the same logits (checked here).
  qwen25       Qwen2.5: q/k/v biases, GQA 7:1, tied head, head_dim 64, rope_theta 1e6,
               rms_norm_eps 1e-6, f32, one file.

For each, `reference.json` holds a fixed prompt of token ids, HF's logits at every prompt position
(computed in f32 from the stored weights), HF's greedy continuation (full forward per step) and
its last-position logits at each step. A `tokenizer.json` (word-level, fits the vocabulary) is
saved beside, as the loader wants one. Then, on the Rust side:

    SOFT_HF_ROPE_CHECK=DIR cargo test --release -p soft-core --lib hf_checkpoints_match_transformers \
        -- --ignored --nocapture

Not run by CI (needs torch + transformers: see bench/HF_ROPE_CHECK.md).

    python bench/hf_rope_check.py --out DIR
"""

import argparse
import json
import os
import shutil

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

VOCAB = 512
PROMPT_LEN = 48
GREEDY_STEPS = 16

LLAMA32_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def prompt_ids(n, seed):
    """A fixed pseudo-random prompt (LCG) of ids in 3..VOCAB."""
    state, out = seed, []
    for _ in range(n):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(3 + (state >> 33) % (VOCAB - 3))
    return out


def randomize(model, seed):
    """Weights that give peaked logits (HF's 0.02 init gives near-uniform ones) and a greedy path
    that does not just repeat its input (a tied head over large embeddings does): small embeddings,
    unit-gain projections, a final norm that scales the logits up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "model.norm.weight":
                p.copy_(3.0 + 0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name == "model.embed_tokens.weight":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)


def save_tokenizer(directory):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(directory, "tokenizer.json"))


@torch.no_grad()
def reference(directory, prompt):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    logits = model(torch.tensor([prompt])).logits[0]
    ids, greedy, greedy_logits = list(prompt), [], []
    for _ in range(GREEDY_STEPS):
        last = model(torch.tensor([ids])).logits[0, -1]
        nxt = int(last.argmax())
        greedy.append(nxt)
        greedy_logits.append(last.tolist())
        ids.append(nxt)
    return model, {"prompt": prompt, "logits": logits.tolist(), "greedy": greedy, "greedy_logits": greedy_logits}


def write(directory, config, dtype, seed, shard=None):
    os.makedirs(directory, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, seed)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(directory, **kwargs)
    save_tokenizer(directory)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    summary = {"torch": torch.__version__}
    import transformers

    summary["transformers"] = transformers.__version__

    # Llama-3.2-3B: hidden 3072, 24 heads, 8 KV heads (head_dim 128), FFN 8192 -> 3 heads, 1 KV head.
    llama = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=384,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling=dict(LLAMA32_ROPE),
        bos_token_id=1,
        eos_token_id=2,
        architectures=["LlamaForCausalLM"],
    )
    new = os.path.join(args.out, "llama32")
    write(new, llama, torch.bfloat16, seed=1, shard="2MB")
    with open(os.path.join(new, "config.json")) as f:
        config = json.load(f)
    assert "rope_parameters" in config and "rope_scaling" not in config and "rope_theta" not in config, config
    prompt = prompt_ids(PROMPT_LEN, seed=7)
    _, ref = reference(new, prompt)
    with open(os.path.join(new, "reference.json"), "w") as f:
        json.dump(ref, f)
    summary["llama32"] = {"rope_parameters": config["rope_parameters"], "greedy": ref["greedy"],
                          "files": sorted(os.listdir(new))}

    # The same checkpoint in the older spelling, as the published Llama-3.2 config.json has it.
    old = os.path.join(args.out, "llama32-old")
    shutil.copytree(new, old)
    params = dict(config.pop("rope_parameters"))
    config["rope_theta"] = params.pop("rope_theta")
    config["rope_scaling"] = params
    with open(os.path.join(old, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    _, ref_old = reference(old, prompt)
    diff = max(abs(a - b) for ra, rb in zip(ref["logits"], ref_old["logits"]) for a, b in zip(ra, rb))
    assert diff == 0.0 and ref_old["greedy"] == ref["greedy"], f"transformers reads the old spelling differently: {diff}"
    with open(os.path.join(old, "reference.json"), "w") as f:
        json.dump(ref_old, f)
    summary["llama32-old"] = {"rope_theta": config["rope_theta"], "rope_scaling": config["rope_scaling"],
                              "max_logit_diff_vs_new_spelling_in_hf": diff}

    # Qwen2.5-0.5B: hidden 896, 14 heads, 2 KV heads (head_dim 64), FFN 4864 -> 7 heads, 1 KV head.
    qwen = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=448,
        intermediate_size=1216,
        num_hidden_layers=2,
        num_attention_heads=7,
        num_key_value_heads=1,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        bos_token_id=1,
        eos_token_id=2,
        architectures=["Qwen2ForCausalLM"],
    )
    qdir = os.path.join(args.out, "qwen25")
    write(qdir, qwen, torch.float32, seed=2)
    with open(os.path.join(qdir, "config.json")) as f:
        qconfig = json.load(f)
    qmodel, qref = reference(qdir, prompt_ids(PROMPT_LEN, seed=11))
    assert qmodel.model.layers[0].self_attn.q_proj.bias is not None
    with open(os.path.join(qdir, "reference.json"), "w") as f:
        json.dump(qref, f)
    summary["qwen25"] = {"rope_parameters": qconfig.get("rope_parameters"), "greedy": qref["greedy"],
                         "files": sorted(os.listdir(qdir))}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
