"""The model measured against the synthetic corpus's true next-token distribution.

Real text has no known truth, so a model's loss can only be compared with other
models. The synthetic corpus (`lmlib.synthetic`) knows its exact next-token
distribution after every sentence prefix, so here we can measure what no loss
curve shows:

- ``excess_by_rule``: the excess loss KL(true ‖ model) of each kind of
  prediction ("sentence start", "agreement", "sentence end", ...), i.e. how far
  above the best possible loss the model is, and where;
- ``calibration``: whether the model's probabilities mean what they say (among
  the words it gives about 0.8, do 80 % of them come?), bin by bin against the
  true probabilities of the same events.

Every sentence is independent of the ones before it, so the truth after a prefix
does not depend on earlier sentences; the model is asked right after a sentence
boundary (its context is "." followed by the prefix). A context's weight is the
share of stream positions that predict from it, so weighted sums are averages
over the token stream, like a loss.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from lmlib.evaluate import eval_mode
from lmlib.synthetic import FILLERS, SyntheticCorpus

__all__ = ["RULES", "CalibrationBin", "Context", "calibration", "calibration_error", "contexts", "excess_by_rule",
           "kl_divergence", "model_probs", "rule_of", "rule_shares", "true_probs"]

#: The kinds of prediction, in the order of a sentence.
RULES: tuple[str, ...] = ("sentence start", "after 'the'", "agreement", "word choice", "fixed phrase",
                          "story opening", "sentence end")

_SUBJECTS = {w for slot in ("animal", "animals") for w, _ in FILLERS[slot]}


@dataclass(frozen=True)
class Context:
    """One sentence prefix: what comes next, how often it is asked, and its rule."""

    prefix: tuple[str, ...]
    weight: float  # share of the stream's positions that predict from this prefix
    truth: dict[str, float]  # the true next-word distribution
    rule: str


@dataclass(frozen=True)
class CalibrationBin:
    """Events (context, word) whose predicted probability fell in [lo, hi)."""

    lo: float
    hi: float
    weight: float  # expected number of such events per stream position
    predicted: float  # mean predicted probability of the events
    true: float  # mean true probability: how often they really happen


def rule_of(prefix: tuple[str, ...], truth: dict[str, float]) -> str:
    """The kind of prediction made after ``prefix`` (one of `RULES`)."""
    if not prefix:
        return "sentence start"  # which kind of sentence
    if truth == {".": 1.0}:
        return "sentence end"
    if prefix[0] == "once":
        return "story opening"  # "once upon a time there was a {animal} ."
    if len(prefix) == 2 and prefix[0] == "the" and prefix[1] in _SUBJECTS:
        return "agreement"  # the verb must agree with "cat" / "cats"
    if prefix[-1] == "the":
        return "after 'the'"  # a noun: animal, place, outing, or "end"
    if len(truth) == 1:
        return "fixed phrase"  # "sat" -> "on", "went" -> "to", ...
    return "word choice"  # adjective, food, person, greeting, time, an animal after "a"


def contexts(corpus: SyntheticCorpus) -> list[Context]:
    """Every sentence prefix of the corpus with its weight, truth and rule."""
    mass: dict[tuple[str, ...], float] = defaultdict(float)
    total = 0.0
    for sentence, p in corpus.sentences():
        words = tuple(sentence.split())
        for j in range(len(words)):  # the prefix words[:j] predicts words[j]
            mass[words[:j]] += p
        total += p * len(words)
    out = []
    for prefix, m in mass.items():
        truth = corpus.next_token_distribution(list(prefix))
        out.append(Context(prefix, m / total, truth, rule_of(prefix, truth)))
    return out


def true_probs(ctxs: list[Context], vocab: list[str]) -> np.ndarray:
    """The true next-word distributions as an array (contexts, vocab)."""
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(ctxs), len(vocab)))
    for row, c in enumerate(ctxs):
        for w, p in c.truth.items():
            out[row, index[w]] = p
    return out


@torch.no_grad()
def model_probs(model: torch.nn.Module, tokenizer, ctxs: list[Context]) -> np.ndarray:
    """The model's next-word distributions (contexts, vocab), each asked after ". " + prefix.

    One forward pass per distinct length: the prefixes of one length form one batch.
    """
    device = next(model.parameters()).device
    out = np.zeros((len(ctxs), tokenizer.vocab_size))
    by_length: dict[int, list[int]] = defaultdict(list)
    for row, c in enumerate(ctxs):
        by_length[len(c.prefix)].append(row)
    with eval_mode(model):
        for rows in by_length.values():
            ids = torch.tensor([tokenizer.encode(" ".join((".", *ctxs[r].prefix))) for r in rows], device=device)
            logits, _ = model(ids)
            out[rows] = torch.softmax(logits[:, -1].double(), dim=-1).cpu().numpy()
    return out


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) in nats for each row: the extra loss of predicting q where p is true."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = np.broadcast_arrays(p, q)
    terms = np.zeros(p.shape)
    pos = p > 0  # 0 * ln 0 counts as 0
    with np.errstate(divide="ignore"):
        terms[pos] = p[pos] * (np.log(p[pos]) - np.log(q[pos]))
    return terms.sum(axis=-1)


def excess_by_rule(ctxs: list[Context], predicted: np.ndarray, vocab: list[str]) -> dict[str, float]:
    """Mean KL(true ‖ predicted) per prediction of each rule, and over all positions ("all").

    "all" is the model's expected loss minus the corpus's entropy per token (for
    contexts that start at a sentence boundary): the whole excess loss.
    """
    kl = kl_divergence(true_probs(ctxs, vocab), predicted)
    weight = np.array([c.weight for c in ctxs])
    out = {}
    for rule in RULES:
        here = np.array([c.rule == rule for c in ctxs])
        if here.any():
            out[rule] = float((weight[here] * kl[here]).sum() / weight[here].sum())
    out["all"] = float((weight * kl).sum() / weight.sum())
    return out


def rule_shares(ctxs: list[Context]) -> dict[str, float]:
    """The share of stream positions that each rule predicts."""
    shares: dict[str, float] = defaultdict(float)
    for c in ctxs:
        shares[c.rule] += c.weight
    return {rule: shares[rule] for rule in RULES if rule in shares}


def calibration(ctxs: list[Context], predicted: np.ndarray, vocab: list[str], bins: int = 10) -> list[CalibrationBin]:
    """Calibration against the truth: bin every (context, word) event by its predicted probability.

    In each non-empty bin, the mean predicted probability is compared with the
    mean true probability of the same events (each weighted by how often its
    context occurs). Equal: calibrated; true below predicted: overconfident.
    """
    p = true_probs(ctxs, vocab).ravel()
    q = np.asarray(predicted, dtype=float).ravel()
    w = np.repeat([c.weight for c in ctxs], len(vocab))
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, q, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        here = which == b
        if here.any() and w[here].sum() > 0:
            ws = w[here].sum()
            out.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), float(ws),
                                      float((w[here] * q[here]).sum() / ws), float((w[here] * p[here]).sum() / ws)))
    return out


def calibration_error(table: list[CalibrationBin]) -> float:
    """The weighted mean |predicted − true| over the bins (0 for a calibrated model)."""
    total = sum(b.weight for b in table)
    return sum(b.weight * abs(b.predicted - b.true) for b in table) / total
