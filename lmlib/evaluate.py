"""Evaluation and inference: loss, perplexity and accuracy; next-token distributions;
generation.

Inference differs from training in three ways you can see here: no gradients
(`torch.no_grad`), fixed weights (`model.eval()`, nothing is updated), and the
output is fed back in as input, one token at a time.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from lmlib import data as D
from lmlib.errors import LmlibError
from lmlib.model import KVCache
from lmlib.runtime import Runtime


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Switch off dropout for a while, then put the model back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    tokens: np.ndarray,
    batch_size: int,
    block_size: int,
    max_batches: int | None = None,
    device: torch.device | str | None = None,
    runtime: Runtime | None = None,
    mask: np.ndarray | None = None,
) -> dict:
    """Mean loss, perplexity and next-token accuracy over non-overlapping windows.

    With `max_batches=None` every window of the split is used (the "whole split"
    number); otherwise the first `max_batches` batches of an evenly spread,
    deterministic set, so successive validations are comparable. The batches go to
    `device`, by default the one the model's weights are on.

    With a `runtime` (`lmlib.runtime.Runtime`) the batches go to its device, under its
    autocast; under torchrun each process scores every K-th batch and the sums and
    counts are added over the processes, so K processes give one process's number
    (up to the order of the additions) in 1/K of the time. With a loss `mask` (parallel to `tokens`), only the targets it marks count.
    """
    dist = runtime.dist if runtime is not None else None
    if runtime is not None:
        device = runtime.device
    elif device is None:
        device = next(model.parameters()).device
    sharded = dist is not None and dist.enabled
    total_loss, correct, count = 0.0, 0, 0
    with eval_mode(model):
        for i, (x, y) in enumerate(D.iter_eval_batches(tokens, batch_size, block_size, max_batches, mask)):
            if sharded and i % dist.world_size != dist.rank:
                continue
            x, y = x.to(device), y.to(device)
            with runtime.precision.autocast() if runtime is not None else nullcontext():
                logits, _ = model(x)
            logits = logits.float()
            total_loss += F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
            counted = y != -100  # (masked targets are left out, as cross_entropy leaves them out)
            correct += ((logits.argmax(-1) == y) & counted).sum().item()
            count += counted.sum().item()
    if sharded:
        total_loss, correct, count = dist.all_reduce_sum([total_loss, float(correct), float(count)], device)
        correct, count = int(correct), int(count)
    if count == 0:
        raise LmlibError(f"the split has too few tokens ({len(tokens)}) for one window of {block_size + 1}")
    loss = total_loss / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / count, "tokens": count}


def _encode_prompt(tokenizer, prompt: str | list[int], block_size: int) -> torch.Tensor:
    ids = list(prompt) if not isinstance(prompt, str) else tokenizer.encode(prompt)
    if not ids:
        raise LmlibError("the prompt is empty: give at least one token")
    return torch.tensor(ids[-block_size:], dtype=torch.long)[None]


@torch.no_grad()
def next_token_probs(model: torch.nn.Module, tokenizer, prompt: str | list[int]) -> torch.Tensor:
    """Probability of every vocabulary entry as the token after `prompt`, shape (V,)."""
    device = next(model.parameters()).device
    idx = _encode_prompt(tokenizer, prompt, model.config.block_size).to(device)
    with eval_mode(model):
        logits, _ = model(idx)
    return F.softmax(logits[0, -1].float(), dim=-1).cpu()


def next_token_distribution(
    model: torch.nn.Module, tokenizer, prompt: str | list[int], k: int | None = 10
) -> list[tuple[str, float]]:
    """The `k` most likely next tokens after `prompt`, with probabilities (all if k is None)."""
    probs = next_token_probs(model, tokenizer, prompt)
    k = len(probs) if k is None else min(k, len(probs))
    top = torch.topk(probs, k)
    name = getattr(tokenizer, "token_text", tokenizer.vocab.__getitem__)  # bpe: the text, not "Ġthe"
    return [(name(i), p) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """One token id drawn from next-token `logits` (V,): greedy at temperature 0.

    top_k keeps the k likeliest tokens; top_p ("nucleus") keeps the fewest
    likeliest tokens whose probabilities add up to at least p; the rest get zero.
    """
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits[logits < kth] = -float("inf")
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < top_p  # the mass before a token is still short of p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    ids: list[int],
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    stop_ids: Collection[int] = (),
    cache: bool = True,
) -> list[int]:
    """The new token ids that continue `ids` (at most `max_new_tokens`; a token in
    `stop_ids`, e.g. an end-of-text token, ends the generation and is the last one returned).

    With `cache` (the default) each step runs the model on the new token only,
    reusing the earlier positions' keys and values (`lmlib.model.KVCache`). Once the
    text is longer than the context, every position shifts by one at each step
    (the position embeddings are absolute), so the cache is rebuilt from the last
    `block_size` tokens: from there on a step costs what it costs without a cache.
    Both ways compute the same logits up to float rounding.
    """
    if temperature < 0:
        raise LmlibError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise LmlibError(f"top_k must be positive, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise LmlibError(f"top_p must be in (0, 1], got {top_p}")
    if not ids:
        raise LmlibError("the prompt is empty: give at least one token")
    device = next(model.parameters()).device
    T = model.config.block_size
    ids, new, stop_ids = list(ids), [], set(stop_ids)
    kv, pending = None, ids[-T:]  # the tokens the cache does not hold yet
    with eval_mode(model):
        for _ in range(max_new_tokens):
            if not cache:
                logits = model(torch.tensor(ids[-T:], dtype=torch.long, device=device)[None])[0]
            else:
                if kv is None or kv.length + len(pending) > T:  # (re)start from the last T tokens
                    kv, pending = KVCache(model.config.n_layer), ids[-T:]
                logits = model.decode(torch.tensor(pending, dtype=torch.long, device=device)[None], kv)
            token = sample_next(logits[0, -1].float().cpu(), temperature, top_k, top_p, generator)
            ids.append(token)
            new.append(token)
            pending = [token]
            if token in stop_ids:
                break
    return new


def continuation_logprobs(model: torch.nn.Module, prompts: Sequence[list[int]],
                          answers: Sequence[list[int]]) -> torch.Tensor:
    """(N,) log p(answer | prompt) under the model, summed over the answer's tokens, for
    N (prompt, answer) pairs of token ids in one right-padded batch (the padding is masked
    out). It runs in the model's current mode, with gradients unless the caller turns them
    off: REINFORCE trains through it (`lmlib.rl`), multiple-choice tests score with it."""
    rows = [p + a for p, a in zip(prompts, answers, strict=True)]
    T = max(map(len, rows))
    device = next(model.parameters()).device
    idx = torch.tensor([r + [0] * (T - len(r)) for r in rows], device=device)
    mask = torch.zeros(len(rows), T - 1, device=device)
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        mask[i, len(p) - 1:len(p) - 1 + len(a)] = 1  # position t predicts token t + 1
    logits, _ = model(idx[:, :-1])
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, idx[:, 1:, None]).squeeze(-1)  # (N, T-1)
    return (logp * mask).sum(1)


def generate(
    model: torch.nn.Module,
    tokenizer,
    prompt: str | list[int],
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    *,
    top_p: float | None = None,
    stop_ids: Collection[int] = (),
    cache: bool = True,
) -> str:
    """Sample a continuation of `prompt` (returned with the prompt).

    temperature < 1 sharpens the distribution (safer, more repetitive), > 1 flattens
    it; top_k keeps only the k likeliest tokens at each step, top_p the likeliest
    whose probabilities add up to p; temperature 0 is greedy. Generation stops early
    after a token in `stop_ids` (e.g. the end-of-text token
    ``tokenizer.special_ids["<|endoftext|>"]``), which is kept in the text. See
    `generate_ids` for the key/value cache.

    With a `seed`, the text is the same on every call and torch's global random state
    is left as it was (the draws come from a generator of their own). With `seed=None`,
    each call draws from torch's global random generator: a fresh sample every time,
    reproducible as a whole with `torch.manual_seed`.
    """
    ids = list(prompt) if not isinstance(prompt, str) else tokenizer.encode(prompt)
    gen = None if seed is None else torch.Generator(device="cpu").manual_seed(seed)
    new = generate_ids(model, ids, max_new_tokens, temperature, top_k, top_p, gen, stop_ids, cache)
    return tokenizer.decode(ids + new)


def compare_with_truth(model: torch.nn.Module, tokenizer, corpus, context: str, k: int = 5) -> list[dict]:
    """For the synthetic corpus: the model's next-word probabilities against the true ones.

    Returns rows {token, model, true} for the union of the model's top-k and every
    word that truly can follow, sorted by true probability.
    """
    truth = corpus.next_token_distribution(context)
    # Sentences in the stream follow a "." so that is how the model saw them start.
    prompt = context if context.strip().startswith(".") else ". " + context
    probs = next_token_probs(model, tokenizer, prompt)
    words = set(truth) | {w for w, _ in next_token_distribution(model, tokenizer, prompt, k)}
    rows = [{"token": w, "model": float(probs[tokenizer.vocab.index(w)]), "true": truth.get(w, 0.0)} for w in words]
    return sorted(rows, key=lambda r: (-r["true"], -r["model"]))
