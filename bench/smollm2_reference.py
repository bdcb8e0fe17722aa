#!/usr/bin/env python3
"""Independent numpy reference of the SmolLM2-135M-Instruct forward pass.

Reads the GGUF file with llama.cpp's own `gguf` Python package, dequantizes every
tensor with `gguf.quants.dequantize`, and runs a plain llama forward pass in numpy:

  * RMSNorm (eps from `llama.attention.layer_norm_rms_epsilon`)
  * RoPE in llama.cpp's "normal" form: ADJACENT pairs (x[2i], x[2i+1]) are rotated,
    which is the form matching the Q/K rows as the GGUF converter permuted them
    (theta from `llama.rope.freq_base`)
  * grouped-query causal attention (9 query heads, 3 KV heads, head dim 64)
  * SwiGLU FFN: down(silu(gate(x)) * up(x))
  * final RMSNorm, tied embeddings: logits = h @ token_embd^T

It deliberately shares nothing with the Rust implementation (which un-permutes Q/K and
uses rotate-half): it is meant to check the Rust model's next-token logits.

Usage:
  python bench/smollm2_reference.py --gguf PATH --ids "504 3575 282 4649 314"
  python bench/smollm2_reference.py --gguf PATH --prompt "The capital of France is" --greedy 10

Prints one JSON object on stdout: {"ids": [...], "top5": [[id, logit], ...]} and, with
--greedy N, "greedy": [N ids] (+ "greedy_text", decoded with the GGUF vocab).
"""

import argparse
import json
import os
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
except ImportError:  # pragma: no cover
    sys.exit("the `gguf` package is required: pip install -r bench/requirements.txt")

DEFAULT_GGUF = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
)


# --------------------------------------------------------------------------- loading

def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


class Model:
    def __init__(self, path, dtype=np.float64):
        r = gguf.GGUFReader(path)
        arch = field(r, "general.architecture")
        if arch != "llama":
            raise SystemExit(f"expected a llama GGUF, got {arch!r}")
        self.dtype = dtype
        self.n_layer = int(field(r, "llama.block_count"))
        self.n_embd = int(field(r, "llama.embedding_length"))
        self.n_head = int(field(r, "llama.attention.head_count"))
        self.n_head_kv = int(field(r, "llama.attention.head_count_kv"))
        self.head_dim = self.n_embd // self.n_head
        self.eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
        self.rope_base = float(field(r, "llama.rope.freq_base") or 10000.0)
        self.tokens = field(r, "tokenizer.ggml.tokens")
        self.token_type = field(r, "tokenizer.ggml.token_type")
        self.merges = field(r, "tokenizer.ggml.merges")
        self.eos = field(r, "tokenizer.ggml.eos_token_id")

        self.t = {}
        for t in r.tensors:
            # dequantize returns the numpy shape: GGUF dims reversed (outermost first),
            # so a GGUF [in, out] linear weight becomes an (out, in) matrix.
            w = dequantize(t.data, t.tensor_type)
            expect = tuple(int(d) for d in reversed(list(t.shape)))
            w = np.asarray(w).reshape(expect).astype(dtype)
            self.t[t.name] = w
        self.embd = self.t["token_embd.weight"]  # (vocab, n_embd)
        self.out = self.t.get("output.weight", self.embd)  # tied when absent
        assert self.embd.shape[1] == self.n_embd, self.embd.shape
        q = self.t["blk.0.attn_q.weight"]
        k = self.t["blk.0.attn_k.weight"]
        assert q.shape == (self.n_head * self.head_dim, self.n_embd), q.shape
        assert k.shape == (self.n_head_kv * self.head_dim, self.n_embd), k.shape

    # ----------------------------------------------------------------------- math

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope_adjacent(self, x, pos):
        """llama.cpp "normal" RoPE: rotate (x[..., 2i], x[..., 2i+1]) by pos * base^(-2i/d).

        x: (T, H, D); pos: (T,)
        """
        d = x.shape[-1]
        inv = self.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # (D/2,)
        ang = pos[:, None].astype(np.float64) * inv[None, :]  # (T, D/2)
        cos = np.cos(ang)[:, None, :].astype(self.dtype)
        sin = np.sin(ang)[:, None, :].astype(self.dtype)
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * cos - x1 * sin
        y[..., 1::2] = x0 * sin + x1 * cos
        return y

    def forward(self, ids):
        """Logits (T, vocab) for every position of `ids` (full causal pass, no cache)."""
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        H, KV, D = self.n_head, self.n_head_kv, self.head_dim
        group = H // KV
        pos = np.arange(T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dtype), k=1)
        x = self.embd[ids]  # (T, n_embd)
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rmsnorm(x, self.t[p + "attn_norm.weight"])
            q = (h @ self.t[p + "attn_q.weight"].T).reshape(T, H, D)
            k = (h @ self.t[p + "attn_k.weight"].T).reshape(T, KV, D)
            v = (h @ self.t[p + "attn_v.weight"].T).reshape(T, KV, D)
            q = self.rope_adjacent(q, pos)
            k = self.rope_adjacent(k, pos)
            attn = np.empty((T, H, D), dtype=self.dtype)
            for hh in range(H):
                kv = hh // group  # query head hh uses KV head hh // (H/KV)
                s = (q[:, hh, :] @ k[:, kv, :].T) / np.sqrt(D) + mask
                s = s - s.max(axis=-1, keepdims=True)
                e = np.exp(s)
                a = e / e.sum(axis=-1, keepdims=True)
                attn[:, hh, :] = a @ v[:, kv, :]
            x = x + attn.reshape(T, H * D) @ self.t[p + "attn_output.weight"].T
            h = self.rmsnorm(x, self.t[p + "ffn_norm.weight"])
            g = h @ self.t[p + "ffn_gate.weight"].T
            u = h @ self.t[p + "ffn_up.weight"].T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ self.t[p + "ffn_down.weight"].T
        x = self.rmsnorm(x, self.t["output_norm.weight"])
        return x @ self.out.T

    # -------------------------------------------------------------------- decoding

    def decode(self, ids):
        b2u = bytes_to_unicode()
        u2b = {u: b for b, u in b2u.items()}
        out = bytearray()
        for i in ids:
            tok = self.tokens[i]
            if self.token_type is not None and self.token_type[i] == 3:  # control token
                out += tok.encode("utf-8")
                continue
            for ch in tok:
                out.append(u2b[ch]) if ch in u2b else out.extend(ch.encode("utf-8"))
        return out.decode("utf-8", errors="replace")


def bytes_to_unicode():
    """GPT-2's byte <-> printable-unicode table used by byte-level BPE vocabularies."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenize(model, text):
    """Byte-level BPE from the GGUF vocab/merges with the `smollm` pre-tokenizer
    (digits split one by one, then GPT-2 byte-level regex), via the `tokenizers` package."""
    try:
        from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders
    except ImportError:
        raise SystemExit("--prompt needs `pip install tokenizers`; or pass --ids")
    vocab = {t: i for i, t in enumerate(model.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in model.merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    special = [t for i, t in enumerate(model.tokens)
               if model.token_type is not None and model.token_type[i] == 3]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return tok.encode(text, add_special_tokens=False).ids  # add_bos_token = false


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="path to SmolLM2-135M-Instruct GGUF")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--ids", help='space separated token ids, e.g. "504 3575 282 4649 314"')
    g.add_argument("--prompt", help="text, tokenized with the GGUF vocab (needs `tokenizers`)")
    ap.add_argument("--greedy", type=int, default=0, help="also generate N ids greedily")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                    help="compute precision over the dequantized weights (default float64)")
    ap.add_argument("--topk", type=int, default=5)
    args = ap.parse_args()

    if not os.path.exists(args.gguf):
        raise SystemExit(f"GGUF not found: {args.gguf}")
    model = Model(args.gguf, dtype=np.dtype(args.dtype).type)
    ids = [int(s) for s in args.ids.split()] if args.ids is not None else tokenize(model, args.prompt)
    if not ids:
        raise SystemExit("no token ids")

    logits = model.forward(ids)[-1]
    top = np.argsort(-logits, kind="stable")[: args.topk]
    res = {"ids": ids, "top5" if args.topk == 5 else f"top{args.topk}":
           [[int(i), round(float(logits[i]), 6)] for i in top]}
    res["top_tokens"] = [model.decode([int(i)]) for i in top]

    if args.greedy > 0:
        seq = list(ids)
        gen = []
        nxt = int(top[0])
        for step in range(args.greedy):
            gen.append(nxt)
            seq.append(nxt)
            if step + 1 == args.greedy:
                break
            nxt = int(np.argmax(model.forward(seq)[-1]))
        res["greedy"] = gen
        res["greedy_text"] = model.decode(gen)
    print(json.dumps(res, ensure_ascii=False))


if __name__ == "__main__":
    main()
