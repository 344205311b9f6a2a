"""Multiple-choice evaluation, HellaSwag style, on the synthetic language with an exact key.

HellaSwag gives a model a context and four candidate endings, the real
continuation and three machine-made ones that read well but do not follow; the model
"answers" with the ending it finds likeliest, with no training on the task.
The same recipe on the synthetic corpus:

    context : the fox sleeps . the cats
    endings : is small .  |  are hungry .  |  likes milk .  |  park today .    (key: 1)

Every ending is the end of some sentence of the grammar, so each reads well on
its own, but only one of them completes the context into a sentence the corpus
produces; the others break a rule (here subject-verb agreement, or a word the
grammar never puts after "the cats"). The wrong endings are as long as the
right one where possible, so that counting words cannot find it. The key is
exact: `corpus.prob` of the completed sentence is positive for the right ending
and zero for every other.

A model scores an ending by log P(ending | context), summed over the ending's
tokens ("acc"), or divided by their number ("acc_norm", the per-token average
Karpathy's HellaSwag evaluation uses), which stops long endings from losing
merely for having more tokens to pay for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmlib.errors import LmlibError
from lmlib.evaluate import continuation_logprobs, eval_mode
from lmlib.synthetic import SyntheticCorpus


@dataclass(frozen=True)
class Item:
    """One question: a `context`, candidate `endings`, and `label`, the index of the right one."""

    context: str
    endings: tuple[str, ...]
    label: int


def synthetic_items(corpus: SyntheticCorpus, n: int, n_endings: int = 4, seed: int = 0) -> list[Item]:
    """`n` questions whose key is exact: one ending completes the context into a sentence of
    `corpus`, the other `n_endings - 1` do not. Those are drawn from the endings of the
    corpus's sentences, with as many words as the right one where there are enough (a
    test where the right ending tends to be the shortest can be passed by counting words).

    The context is one sentence of the corpus followed by the first k words of another
    (k at least 1, leaving at least one word before its "."): the right ending is the rest.
    """
    if n < 1 or n_endings < 2:
        raise LmlibError(f"need n >= 1 questions and n_endings >= 2, got n={n}, n_endings={n_endings}")
    produced = {s for s, _ in corpus.sentences()}  # held-out sentences are not in it
    endings = sorted({" ".join(s.split()[k:]) for s in produced for k in range(1, len(s.split()))})
    rng = np.random.default_rng(seed)
    lead, targets = corpus.sample_sentences(n, seed), corpus.sample_sentences(n, seed + 1)
    items = []
    for first, target in zip(lead, targets):
        words = target.split()
        k = int(rng.integers(1, len(words) - 1))  # context keeps words[:k]; the ending has >= 2 tokens
        prefix, right = " ".join(words[:k]), " ".join(words[k:])
        wrong = [e for e in endings if f"{prefix} {e}" not in produced]
        if len(wrong) < n_endings - 1:
            raise LmlibError(f"only {len(wrong)} wrong endings exist after {prefix!r}; ask for fewer n_endings")
        # as long as the right ending where possible: length must not give the answer away
        rng.shuffle(wrong)
        wrong.sort(key=lambda e: abs(len(e.split()) - len(words[k:])))  # (a stable sort)
        picked = wrong[:n_endings - 1]
        label = int(rng.integers(n_endings))
        picked.insert(label, right)
        items.append(Item(f"{first} {prefix}", tuple(picked), label))
    return items


@torch.no_grad()
def ending_logprobs(model: torch.nn.Module, tokenizer, context: str, endings: Sequence[str]) -> list[tuple[float, int]]:
    """(log P(ending | context) in nats, number of tokens) for each ending, in one batch.

    Each ending is encoded with a leading space, as it follows the context in running
    text. Sequences longer than the model's context lose tokens from the left.
    """
    ctx = tokenizer.encode(context)
    ends = [tokenizer.encode(" " + e) for e in endings]
    if not ctx or not all(ends):
        raise LmlibError("the context and every ending need at least one token")
    T = model.config.block_size
    if max(map(len, ends)) > T:
        raise LmlibError(f"an ending is longer than the model's context ({T} tokens)")
    prompts = [ctx[max(0, len(ctx) + len(e) - (T + 1)):] for e in ends]  # (the last token is only a target)
    with eval_mode(model):
        scores = continuation_logprobs(model, prompts, ends)
    return [(float(s), len(e)) for s, e in zip(scores.tolist(), ends)]


def multiple_choice_accuracy(model: torch.nn.Module, tokenizer, items: Sequence[Item]) -> dict:
    """The share of `items` where the right ending scores highest: by summed log-probability
    ("accuracy") and by log-probability per token ("accuracy_norm"), with "chance", the
    accuracy of guessing (the mean of 1 / number of endings)."""
    if not items:
        raise LmlibError("no items to evaluate")
    right = right_norm = 0
    for item in items:
        scores = ending_logprobs(model, tokenizer, item.context, item.endings)
        right += max(range(len(scores)), key=lambda i: scores[i][0]) == item.label
        right_norm += max(range(len(scores)), key=lambda i: scores[i][0] / scores[i][1]) == item.label
    n = len(items)
    return {"accuracy": right / n, "accuracy_norm": right_norm / n, "items": n,
            "chance": sum(1 / len(item.endings) for item in items) / n}
