"""A synthetic English corpus whose next-token probabilities are known exactly.

The corpus is a small probabilistic grammar of simple lowercase sentences, each
ending with the token ".". Sentences are drawn i.i.d. and concatenated into one
word-level token stream. The grammar has only a few hundred distinct sentences,
so we enumerate them all with their probabilities (as exact fractions) and every
quantity below is computed exactly rather than estimated:

- ``next_token_distribution(context)``: the true P(next word | context);
- ``entropy_per_token()``: the entropy rate of the stream, the lowest loss any
  model can reach (given enough context);
- ``unigram()`` / ``bigram(prev)``: the stream's true frequency statistics;
- ``optimal_loss`` / ``expected_optimal_loss``: the best loss reachable when a
  model only sees ``block_size`` tokens of context.

``synthetic_data(...)`` samples the corpus into a train/validation dataset
(`lmlib.data.TokenData`): this module builds on the data layer, never the reverse.

Sentence shapes (see ``SHAPES``): greetings ("hello world ."), a compositional
"the {animal} sat on the {place} ." (so a held-out combination such as
"the dog sat on the rug ." can be predicted from the others), subject-verb
number agreement ("the cat is happy ." / "the cats are happy .",
"the cat sleeps ." / "the cats sleep ."), and a few rarer shapes that spread
the word frequencies out.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from types import MappingProxyType

import numpy as np

from lmlib.data import DEFAULT_VAL_FRACTION, TokenData, eval_window_starts, split_tokens
from lmlib.errors import LmlibError
from lmlib.tokenizers import WordTokenizer, split_words

DEFAULT_SYNTHETIC_TOKENS = 1_000_000

# (probability, template). {name} is a slot filled from FILLERS; probabilities sum to 1.
SHAPES: tuple[tuple[float, str], ...] = (
    (0.10, "hello {greet} ."),
    (0.25, "the {animal} sat on the {place} ."),
    (0.12, "the {animal} is {adj} ."),  # agreement: singular subject -> is / sleeps / likes
    (0.08, "the {animals} are {adj} ."),  # plural subject -> are / sleep / like
    (0.06, "the {animal} sleeps ."),
    (0.04, "the {animals} sleep ."),
    (0.09, "the {animal} likes {food} ."),
    (0.06, "the {animals} like {food} ."),
    (0.08, "my {person} has a {animal} ."),
    (0.08, "we went to the {where} {when} ."),
    (0.03, "once upon a time there was a {animal} ."),
    (0.01, "the end ."),
)

_ANIMAL_P = (0.35, 0.25, 0.15, 0.12, 0.08, 0.05)
# Slot name -> (word, probability) pairs; each slot's probabilities sum to 1.
FILLERS = MappingProxyType({
    "greet": (("world", 0.5), ("there", 0.3), ("friend", 0.2)),
    "animal": tuple(zip(("cat", "dog", "bird", "fox", "horse", "mouse"), _ANIMAL_P)),
    "animals": tuple(zip(("cats", "dogs", "birds", "foxes", "horses", "mice"), _ANIMAL_P)),
    "place": (("mat", 0.4), ("rug", 0.25), ("sofa", 0.15), ("bed", 0.1), ("chair", 0.06), ("floor", 0.04)),
    "adj": (("happy", 0.3), ("hungry", 0.25), ("sleepy", 0.2), ("small", 0.15), ("big", 0.1)),
    "food": (("fish", 0.4), ("milk", 0.3), ("bread", 0.2), ("cheese", 0.1)),
    "person": (("friend", 0.3), ("mother", 0.25), ("father", 0.2), ("sister", 0.15), ("teacher", 0.1)),
    "where": (("park", 0.4), ("market", 0.3), ("river", 0.2), ("forest", 0.1)),
    "when": (("today", 0.5), ("yesterday", 0.3), ("again", 0.2)),
})

Sentence = tuple[str, ...]


def _exact(p: float) -> Fraction:
    # Fraction(str(0.35)) == 7/20 exactly (Fraction(0.35) would be the binary float's value).
    return Fraction(str(p))


def grammar_sentences() -> list[tuple[Sentence, Fraction]]:
    """Every sentence of the full grammar with its exact probability."""
    assert sum(_exact(p) for p, _ in SHAPES) == 1
    probs: dict[Sentence, Fraction] = defaultdict(Fraction)
    for shape_p, template in SHAPES:
        words = template.split()
        slots = [w[1:-1] for w in words if w.startswith("{")]
        assert all(sum(_exact(p) for _, p in FILLERS[s]) == 1 for s in slots)
        for combo in itertools.product(*(FILLERS[s] for s in slots)):
            fill = iter(combo)
            sentence = tuple(next(fill)[0] if w.startswith("{") else w for w in words)
            probs[sentence] += _exact(shape_p) * math.prod((_exact(p) for _, p in combo), start=Fraction(1))
    return list(probs.items())


def _as_words(text: str | Sequence[str]) -> list[str]:
    return split_words(text) if isinstance(text, str) else list(text)


def _sentence_key(sentence: str | Sequence[str]) -> Sentence:
    words = _as_words(sentence)
    return tuple(words if words[-1:] == ["."] else [*words, "."])


class SyntheticCorpus:
    """The grammar's sentence distribution, optionally with some sentences held out.

    ``holdout``: whole sentences ("the dog sat on the rug ." or without the
    final ".") removed from the distribution; the rest is renormalised. The
    vocabulary and tokenizer always cover the full grammar, so held-out
    sentences can still be encoded. Instances are not meant to be modified.
    """

    def __init__(self, holdout: Sequence[str] = ()) -> None:
        full = grammar_sentences()
        full_probs = dict(full)
        self.vocab: list[str] = sorted({w for s, _ in full for w in s})
        if isinstance(holdout, str):  # a single sentence, not a sequence of characters
            holdout = (holdout,)
        held: list[Sentence] = []
        for h in holdout:
            key = _sentence_key(h)
            if key not in full_probs:
                raise LmlibError(f"holdout sentence {h!r} is not a sentence of the synthetic grammar; "
                                 "pick one from SyntheticCorpus().sentences()")
            if key not in held:
                held.append(key)
        kept = [(s, p) for s, p in full if s not in held]
        if not kept:
            raise LmlibError("holdout removes every sentence of the synthetic grammar; hold out fewer sentences")
        total = sum(p for _, p in kept)
        self.holdout: tuple[str, ...] = tuple(" ".join(s) for s in held)
        self._sents: list[Sentence] = [s for s, _ in kept]
        self._fprobs: list[Fraction] = [p / total for _, p in kept]  # exact
        self._probs = np.array([float(p) for p in self._fprobs])
        self._cdf = np.cumsum(self._probs)
        self._cdf[-1] = 1.0  # so a uniform draw in [0, 1) always lands on a sentence
        # Every sentence as token ids, flattened, for vectorised sampling.
        stoi = {w: i for i, w in enumerate(self.vocab)}
        self._id_sents = [tuple(stoi[w] for w in s) for s in self._sents]
        self._lens = np.array([len(s) for s in self._sents], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._lens)[:-1]])
        self._flat = np.array([i for s in self._id_sents for i in s], dtype=np.int32)
        self._mean_len = sum(p * len(s) for s, p in zip(self._sents, self._fprobs))  # exact E[tokens/sentence]

    def __repr__(self) -> str:
        return (f"SyntheticCorpus({len(self._sents)} sentences, vocab_size={len(self.vocab)}, "
                f"holdout={list(self.holdout)})")

    # --- the distribution -------------------------------------------------------------------

    def sentences(self) -> list[tuple[str, float]]:
        """All sentences (words joined by spaces, ending in " .") with their probabilities."""
        return [(" ".join(s), float(p)) for s, p in zip(self._sents, self._fprobs)]

    def prob(self, sentence: str | Sequence[str]) -> float:
        """Probability of a whole sentence (0.0 if the corpus never produces it)."""
        key = _sentence_key(sentence)
        for s, p in zip(self._sents, self._fprobs):
            if s == key:
                return float(p)
        return 0.0

    def tokenizer(self) -> WordTokenizer:
        """Word tokenizer over the full vocabulary (independent of holdout)."""
        return WordTokenizer(self.vocab)

    def mean_sentence_length(self) -> float:
        """Expected tokens per sentence, counting the final "."."""
        return float(self._mean_len)

    def entropy_per_token(self) -> float:
        """Entropy rate of the token stream in nats: E[-ln P(sentence)] / E[tokens per sentence].

        The "." that ends every sentence makes sentence boundaries visible, so
        the stream's entropy is exactly the sentences' entropy spread over their tokens.
        """
        h = -sum(float(p) * math.log(p) for p in self._fprobs)
        return h / float(self._mean_len)

    def next_token_distribution(self, context: str | Sequence[str]) -> dict[str, float]:
        """True distribution of the next word given the context, most likely first.

        Sentences are independent, so only the words after the last "." matter;
        an empty context (or one ending in ".") means the start of a sentence.
        """
        words = _as_words(context)
        if "." in words:
            words = words[len(words) - words[::-1].index("."):]
        prefix, n = tuple(words), len(words)
        weights: dict[str, Fraction] = defaultdict(Fraction)
        for s, p in zip(self._sents, self._fprobs):
            if len(s) > n and s[:n] == prefix:
                weights[s[n]] += p
        if not weights:
            raise LmlibError(f"no sentence of the synthetic corpus starts with {' '.join(prefix)!r}; "
                             "check the context (the corpus is lowercase, words separated by spaces)")
        total = sum(weights.values())
        return {w: float(p / total) for w, p in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))}

    def unigram(self) -> dict[str, float]:
        """Expected frequency of each word in the stream (words the corpus never uses are left out)."""
        counts: dict[str, Fraction] = defaultdict(Fraction)
        for s, p in zip(self._sents, self._fprobs):
            for w in s:
                counts[w] += p
        return {w: float(c / self._mean_len) for w, c in sorted(counts.items())}

    def bigram(self, prev: str) -> dict[str, float]:
        """Stream-level P(next | prev), counting pairs across sentence boundaries too."""
        first: dict[str, Fraction] = defaultdict(Fraction)
        for s, p in zip(self._sents, self._fprobs):
            first[s[0]] += p
        pairs: dict[str, Fraction] = defaultdict(Fraction)
        for s, p in zip(self._sents, self._fprobs):
            for a, b in zip(s, s[1:]):
                if a == prev:
                    pairs[b] += p
            if s[-1] == prev:  # the next sentence's first word follows the last word of this one
                for w, q in first.items():
                    pairs[w] += p * q
        if not pairs:
            raise LmlibError(f"the word {prev!r} never occurs in the synthetic corpus; pick one from its vocab")
        total = sum(pairs.values())
        return {w: float(c / total) for w, c in sorted(pairs.items())}

    # --- sampling ------------------------------------------------------------------------------

    def _draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.searchsorted(self._cdf, rng.random(n), side="right")

    def _concat(self, idx: np.ndarray) -> np.ndarray:
        # Gather the chosen sentences' ids from the flat array without a Python loop.
        lens = self._lens[idx]
        out_starts = np.cumsum(lens) - lens
        pos = np.arange(int(lens.sum())) + np.repeat(self._offsets[idx] - out_starts, lens)
        return self._flat[pos]

    def sample_sentences(self, n: int, seed: int = 0) -> list[str]:
        """n i.i.d. sentences as strings like "the cat sat on the mat ."."""
        idx = self._draw(_count(n, "n"), np.random.default_rng(seed))
        return [" ".join(self._sents[i]) for i in idx]

    def sample_sentence_tokens(self, n_sentences: int, seed: int = 0) -> np.ndarray:
        """Token ids (int32, under tokenizer()) of n i.i.d. sentences; same sentences as sample_sentences."""
        return self._concat(self._draw(_count(n_sentences, "n_sentences"), np.random.default_rng(seed)))

    def sample_tokens(self, n_tokens: int, seed: int = 0) -> np.ndarray:
        """Exactly n_tokens token ids (int32): whole i.i.d. sentences, the last one cut off."""
        n_tokens = _count(n_tokens, "n_tokens")
        rng = np.random.default_rng(seed)
        parts, have = [], 0
        while have < n_tokens:  # draw ~5% more sentences than needed; rarely loops twice
            k = int((n_tokens - have) / float(self._mean_len) * 1.05) + 16
            parts.append(self._concat(self._draw(k, rng)))
            have += len(parts[-1])
        return np.concatenate(parts)[:n_tokens]

    def text(self, n_sentences: int, seed: int = 0) -> str:
        """n i.i.d. sentences as readable text ("the cat sat on the mat. hello world.")."""
        return self.tokenizer().decode(self.sample_sentence_tokens(n_sentences, seed))

    # --- best achievable loss with a limited context ---------------------------------------------

    def _context_table(self) -> dict[tuple, dict[int, float]]:
        """Context -> {next id: weight}, for the two kinds of context a window can show.

        ("^", ids...): the words after the last "." in the window, i.e. a known sentence prefix.
        ("~", ids...): a window with no "." at all: it started somewhere inside a sentence.
        A window start lands on each token of the stream equally often, so sentence s at
        offset k has weight P(s) for every k < len(s): we sum over all those (s, k).
        """
        table: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for s, p in zip(self._id_sents, self._probs):
            for j in range(len(s)):
                table[("^", *s[:j])][s[j]] += p
            for k in range(len(s) - 1):
                for j in range(k, len(s) - 1):  # context s[k..j] holds no "."
                    table[("~", *s[k:j + 1])][s[j + 1]] += p
        return table

    def optimal_loss(self, tokens: np.ndarray, block_size: int, max_windows: int | None = None) -> float:
        """Bayes-optimal mean loss (nats) on ``tokens``' evaluation windows of length block_size.

        Uses the non-overlapping windows of ``lmlib.data.iter_eval_batches`` (all of them,
        or max_windows evenly spaced ones). Position t of a window predicts token t+1
        from tokens 0..t of the same window only, with the exact predictive
        distribution; the average over windows is a sample estimate of
        ``expected_optimal_loss(block_size)``. tokens must come from this corpus.
        """
        dot = self.vocab.index(".")
        table = self._context_table()
        nll_cache: dict[tuple, dict[int, float]] = {}
        total, count = 0.0, 0
        for start in eval_window_starts(len(tokens), block_size, max_windows):
            window = np.asarray(tokens[start:start + block_size + 1]).tolist()
            last_dot = -1
            for t in range(block_size):
                if window[t] == dot:
                    last_dot = t
                key = ("^", *window[last_dot + 1:t + 1]) if last_dot >= 0 else ("~", *window[:t + 1])
                if key not in nll_cache:
                    weights = table.get(key, {})
                    z = sum(weights.values())
                    nll_cache[key] = {i: -math.log(w / z) for i, w in weights.items()}
                nll = nll_cache[key].get(window[t + 1])
                if nll is None:
                    raise LmlibError(f"token {start + t + 1} cannot follow its context in this synthetic corpus; "
                                     "pass tokens sampled from this corpus (same holdout)")
                total += nll
                count += 1
        return total / count

    def expected_optimal_loss(self, block_size: int) -> float:
        """Exact expected Bayes-optimal loss over a random window of length block_size.

        Decreases towards entropy_per_token() as block_size grows. Position t of a
        window starting at offset k of sentence s (weight P(s) / E[len]) either sees
        only part of s (exact in-sentence prediction) or has passed the "." of s
        at index r = len(s)-1-k, after which it predicts token t-r of a fresh stream
        whose expected loss g(j) we get from a renewal recursion.
        """
        block_size = _count(block_size, "block_size")
        table = self._context_table()
        mean_len = float(self._mean_len)
        # g[j]: expected loss on token j of a stream that starts at a sentence start.
        start_nll = np.zeros(block_size)  # part of g[j] from the first sentence
        p_len = np.zeros(block_size + 1)  # P(first sentence has length L)
        reach = np.zeros(block_size)  # weight of window starts whose first "." is at index r
        in_sentence = np.zeros(block_size)  # loss at position t while the window is inside one sentence
        for s, p in zip(self._id_sents, self._probs):
            n = len(s)
            for j in range(min(n, block_size)):
                w = table[("^", *s[:j])]
                start_nll[j] += p * -math.log(w[s[j]] / sum(w.values()))
            if n <= block_size:
                p_len[n] += p
            for k in range(n):
                r = n - 1 - k
                if r < block_size:
                    reach[r] += p / mean_len
                for t in range(min(r, block_size)):
                    w = table[("~", *s[k:k + t + 1])]
                    in_sentence[t] += p / mean_len * -math.log(w[s[k + t + 1]] / sum(w.values()))
        lengths = [(n, float(p_len[n])) for n in np.flatnonzero(p_len)]
        g = np.zeros(block_size)
        for j in range(block_size):  # the first sentence ended at n <= j: the rest is a fresh stream
            g[j] = start_nll[j] + sum(q * g[j - n] for n, q in lengths if n <= j)
        after_dot = np.convolve(reach, g)[:block_size]  # sum over r <= t of reach[r] * g[t - r]
        return float((in_sentence + after_dot).mean())


def _count(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise LmlibError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def default_corpus() -> SyntheticCorpus:
    """The book's default corpus: the full grammar, nothing held out."""
    return SyntheticCorpus()


def synthetic_data(n_tokens: int | None = None, n_sentences: int | None = None, seed: int = 0,
                   val_fraction: float = DEFAULT_VAL_FRACTION, holdout: Sequence[str] = (),
                   corpus: SyntheticCorpus | None = None) -> TokenData:
    """Sample the synthetic corpus and split it into train/val: the book's synthetic dataset.

    Give n_tokens or n_sentences (default: 1,000,000 tokens). The validation
    split is the contiguous tail of the same i.i.d. stream. Held-out sentences
    are removed from the distribution itself, so they appear in neither split.
    """
    if corpus is None:
        corpus = SyntheticCorpus(holdout)
    elif holdout:
        raise LmlibError("pass holdout to SyntheticCorpus or to synthetic_data, not both")
    if n_tokens is not None and n_sentences is not None:
        raise LmlibError("give n_tokens or n_sentences, not both")
    if n_sentences is not None:
        tokens = corpus.sample_sentence_tokens(n_sentences, seed)
    else:
        tokens = corpus.sample_tokens(DEFAULT_SYNTHETIC_TOKENS if n_tokens is None else n_tokens, seed)
    train, val = split_tokens(tokens, val_fraction)
    meta = {"source": "synthetic", "seed": seed, "n_tokens": len(tokens), "val_fraction": val_fraction,
            "holdout": list(corpus.holdout), "entropy_per_token": corpus.entropy_per_token()}
    return TokenData(train=train, val=val, tokenizer=corpus.tokenizer(), name="synthetic", meta=meta,
                     corpus=corpus)
