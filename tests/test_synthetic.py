import math
from collections import Counter

import numpy as np
import pytest

from lmlib.errors import LmlibError
from lmlib.synthetic import SyntheticCorpus, default_corpus

HELD = "the dog sat on the rug ."


@pytest.fixture(scope="module")
def corpus():
    return default_corpus()


@pytest.fixture(scope="module")
def stream(corpus):
    return corpus.sample_tokens(300_000, seed=1)


def test_distribution_is_normalised_and_well_formed(corpus):
    sents = corpus.sentences()
    assert 100 <= len(sents) <= 50_000
    assert math.isclose(sum(p for _, p in sents), 1.0, abs_tol=1e-12)
    assert all(s.endswith(" .") and s.count(".") == 1 and p > 0 for s, p in sents)
    assert 40 <= len(corpus.vocab) <= 80 and corpus.vocab == sorted(corpus.vocab)
    assert corpus.tokenizer().vocab == corpus.vocab
    assert corpus.prob("hello world") == corpus.prob("hello world .") == pytest.approx(0.05)
    assert corpus.prob("the unicorn flew .") == 0.0


def test_next_token_distribution_is_exact(corpus):
    assert corpus.next_token_distribution("hello") == {"world": 0.5, "there": 0.3, "friend": 0.2}
    start = corpus.next_token_distribution("")
    assert start == corpus.next_token_distribution("hello world .") == corpus.next_token_distribution([])
    assert start["the"] == pytest.approx(0.71) and sum(start.values()) == pytest.approx(1.0)
    # Only the words after the last "." matter.
    assert corpus.next_token_distribution("the end . hello") == corpus.next_token_distribution(["hello"])
    assert corpus.next_token_distribution("the cat sat on the") == pytest.approx(
        {"mat": 0.4, "rug": 0.25, "sofa": 0.15, "bed": 0.1, "chair": 0.06, "floor": 0.04})
    with pytest.raises(LmlibError, match="no sentence of the synthetic corpus starts with 'hello cat'"):
        corpus.next_token_distribution("hello cat")


def test_subject_verb_agreement(corpus):
    singular = corpus.next_token_distribution("the cat")
    plural = corpus.next_token_distribution("the cats")
    assert set(singular) == {"sat", "is", "sleeps", "likes"}
    assert set(plural) == {"are", "sleep", "like"}
    assert plural["are"] == pytest.approx(0.08 / 0.18)


def test_empirical_next_token_frequencies_match(corpus):
    sents = [s.split() for s in corpus.sample_sentences(60_000, seed=3)]
    for context in (["hello"], ["the", "cat"], [], ["we", "went", "to", "the", "park"]):
        n = len(context)
        nxt = Counter(s[n] for s in sents if s[:n] == context)
        total = sum(nxt.values())
        assert total > 300
        for w, p in corpus.next_token_distribution(context).items():
            assert abs(nxt[w] / total - p) < 4 * math.sqrt(p * (1 - p) / total) + 1e-3, (context, w)


def test_unigram_and_bigram_match_the_stream(corpus, stream):
    vocab = corpus.vocab
    counts = np.bincount(stream, minlength=len(vocab)) / len(stream)
    uni = corpus.unigram()
    assert sum(uni.values()) == pytest.approx(1.0)
    for w, p in uni.items():
        assert abs(counts[vocab.index(w)] - p) < 0.004, w
    dot, the = vocab.index("."), vocab.index("the")
    after_dot = stream[1:][stream[:-1] == dot]
    assert np.mean(after_dot == the) == pytest.approx(corpus.bigram(".")["the"], abs=0.01)
    after_the = stream[1:][stream[:-1] == the]
    for w, p in corpus.bigram("the").items():
        assert np.mean(after_the == vocab.index(w)) == pytest.approx(p, abs=0.006), w
    with pytest.raises(LmlibError):
        corpus.bigram("unicorn")


def test_entropy_matches_monte_carlo(corpus):
    h = corpus.entropy_per_token()
    sents = corpus.sample_sentences(50_000, seed=4)
    nll = sum(-math.log(corpus.prob(s)) * n for s, n in Counter(sents).items())
    mc = nll / sum(len(s.split()) for s in sents)
    assert mc == pytest.approx(h, rel=0.01)
    assert 0.5 < h < 1.5  # and far below the unigram entropy
    uni_h = -sum(p * math.log(p) for p in corpus.unigram().values())
    assert h < uni_h - 1


def test_holdout_is_removed_and_renormalised(corpus):
    held = SyntheticCorpus(holdout=[HELD, "hello there"])
    assert held.holdout == (HELD, "hello there .")
    assert held.prob(HELD) == 0.0 and held.prob("hello there") == 0.0
    removed = corpus.prob(HELD) + corpus.prob("hello there")
    assert held.prob("the cat sat on the mat") == pytest.approx(corpus.prob("the cat sat on the mat") / (1 - removed))
    assert sum(p for _, p in held.sentences()) == pytest.approx(1.0)
    assert held.next_token_distribution("hello") == pytest.approx({"world": 0.5 / 0.7, "friend": 0.2 / 0.7})
    assert HELD not in held.sample_sentences(20_000, seed=0)
    # The tokenizer still covers the full vocabulary, so the held-out sentence can be encoded.
    assert held.vocab == corpus.vocab
    assert held.tokenizer().decode(held.tokenizer().encode(HELD)) == "the dog sat on the rug."
    assert SyntheticCorpus(holdout="the dog sat on the rug").holdout == (HELD,)
    with pytest.raises(LmlibError, match="not a sentence of the synthetic grammar"):
        SyntheticCorpus(holdout=["the unicorn sat on the rug ."])


def test_sampling_is_deterministic_and_consistent(corpus):
    a = corpus.sample_tokens(10_001, seed=7)
    assert len(a) == 10_001 and np.array_equal(a, corpus.sample_tokens(10_001, seed=7))
    assert not np.array_equal(a, corpus.sample_tokens(10_001, seed=8))
    assert corpus.vocab[a[0]] in corpus.next_token_distribution("")
    text = corpus.text(50, seed=5)
    ids = corpus.sample_sentence_tokens(50, seed=5)
    assert corpus.tokenizer().encode(text) == ids.tolist()
    assert " ".join(corpus.sample_sentences(50, seed=5)) == " ".join(corpus.vocab[i] for i in ids)
    assert (ids == corpus.vocab.index(".")).sum() == 50
    with pytest.raises(LmlibError, match="positive integer"):
        corpus.sample_tokens(0)


def test_expected_optimal_loss_bounds_and_limit(corpus):
    h = corpus.entropy_per_token()
    uni = corpus.unigram()
    losses = [corpus.expected_optimal_loss(t) for t in (1, 2, 4, 16, 64, 512)]
    assert all(a > b for a, b in zip(losses, losses[1:]))  # more context, lower loss
    assert losses[0] < -sum(p * math.log(p) for p in uni.values())
    assert all(x >= h for x in losses)
    assert losses[-1] - h < 0.002
    # block_size 1 sees one token: the optimum is the stream's bigram conditional entropy.
    h_bigram = sum(pu * -sum(p * math.log(p) for p in corpus.bigram(w).values()) for w, pu in uni.items())
    assert losses[0] == pytest.approx(h_bigram, rel=1e-9)


@pytest.mark.parametrize("block_size", [1, 3, 8, 32])
def test_optimal_loss_on_samples_matches_expectation(corpus, stream, block_size):
    got = corpus.optimal_loss(stream[:120_000], block_size)
    assert got == pytest.approx(corpus.expected_optimal_loss(block_size), abs=0.012)


def test_optimal_loss_rejects_tokens_from_another_distribution(corpus):
    held = SyntheticCorpus(holdout=[HELD])
    tokens = np.array(corpus.tokenizer().encode(HELD + " hello world . the cat is happy ."))
    assert corpus.optimal_loss(tokens, 8) > 0
    # With 5 tokens of context the window shows "the dog sat on the": "rug" is impossible there.
    with pytest.raises(LmlibError, match="token 5 cannot follow its context"):
        held.optimal_loss(tokens, 8)
    # With 2 tokens of context it is possible ("on the rug" also ends "the cat sat on the rug").
    assert held.optimal_loss(tokens, 2) > 0
    sub = corpus.optimal_loss(tokens, 2, max_windows=1)
    assert sub > 0 and sub != corpus.optimal_loss(tokens, 2)
