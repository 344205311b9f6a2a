"""Multiple-choice evaluation: the synthetic items' exact key and the ending scores."""

import math

import pytest
import torch

from lmlib.errors import LmlibError
from lmlib.model import GPT, GPTConfig
from lmlib.multiple_choice import Item, ending_logprobs, multiple_choice_accuracy, synthetic_items
from lmlib.synthetic import SyntheticCorpus
from lmlib.tokenizers import WordTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


class BigramTable(torch.nn.Module):
    """A 'language model' whose next-token log-probabilities depend on the last token only,
    read from a fixed table: every score can be worked out by hand."""

    def __init__(self, logp: torch.Tensor, block_size: int = 8):
        super().__init__()
        self.logp = torch.nn.Parameter(logp, requires_grad=False)
        self.config = GPTConfig(vocab_size=logp.shape[0], block_size=block_size)

    def forward(self, idx):
        return self.logp[idx], None


def test_items_have_exactly_one_grammatical_ending_at_the_label():
    corpus = SyntheticCorpus()
    items = synthetic_items(corpus, 200, n_endings=4, seed=3)
    assert len(items) == 200 and {len(i.endings) for i in items} == {4}
    labels = set()
    for item in items:
        prefix = item.context.split(" . ", 1)[1]  # the context's first sentence is a whole one
        assert corpus.prob(item.context.split(" . ")[0]) > 0
        ok = [corpus.prob(f"{prefix} {e}") > 0 for e in item.endings]
        assert ok == [i == item.label for i in range(4)]  # the key is exact
        assert len(set(item.endings)) == 4
        labels.add(item.label)
    assert labels == {0, 1, 2, 3}  # the right ending is not always in the same place
    assert synthetic_items(corpus, 200, seed=3) == items  # deterministic
    assert synthetic_items(corpus, 200, seed=4) != items


def test_the_module_docstrings_example_has_the_key_it_states():
    corpus = SyntheticCorpus()
    endings = ["is small .", "are hungry .", "likes milk .", "park today ."]
    assert corpus.prob("the fox sleeps .") > 0
    assert [corpus.prob(f"the cats {e}") > 0 for e in endings] == [False, True, False, False]
    assert len({len(e.split()) for e in endings}) == 1


def test_items_respect_the_corpus_holdout():
    held = "the dog sat on the rug ."
    corpus = SyntheticCorpus(holdout=[held])
    for item in synthetic_items(corpus, 300, seed=0):
        prefix = item.context.split(" . ", 1)[1]
        assert f"{prefix} {item.endings[item.label]}" != held


def test_items_refuse_more_endings_than_exist():
    with pytest.raises(LmlibError, match="fewer n_endings"):
        synthetic_items(SyntheticCorpus(), 50, n_endings=200)


def test_ending_logprobs_match_a_hand_computation_and_left_truncation():
    tok = WordTokenizer(["a", "b", "c", "."])
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(4, 4), dim=-1)
    model = BigramTable(logp, block_size=4)
    a, b, c, dot = range(4)
    scores = ending_logprobs(model, tok, "a b", ["c .", "a b c ."])
    assert scores[0][1] == 2 and scores[1][1] == 4
    assert math.isclose(scores[0][0], float(logp[b, c] + logp[c, dot]), rel_tol=1e-6)
    # the 4-token ending after a 2-token context is 6 tokens, more than block_size + 1: the
    # context is cut from the left, and a bigram model gives the same score either way
    assert math.isclose(scores[1][0], float(logp[b, a] + logp[a, b] + logp[b, c] + logp[c, dot]), rel_tol=1e-6)
    with pytest.raises(LmlibError, match="longer than the model's context"):
        ending_logprobs(model, tok, "a", ["a b c a ."])


def test_accuracy_norm_divides_by_the_number_of_tokens():
    # P(b | a or b) = 1/2, P(. | a or b) = 1/4: the short wrong ending "." (1/4) beats the
    # long right one "b b b ." (1/2 * 1/2 * 1/2 * 1/4 = 1/32) by sum, but loses per token
    tok = WordTokenizer(["a", "b", "."])
    probs = torch.tensor([[0.25, 0.5, 0.25], [0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    model = BigramTable(probs.log())
    items = [Item("a", ("b b b .", "."), 0), Item("a", (".", "b b b ."), 1)]
    scores = ending_logprobs(model, tok, "a", ["b b b .", "."])
    assert math.isclose(scores[0][0], math.log(1 / 32), rel_tol=1e-6) and scores[0][1] == 4
    assert math.isclose(scores[1][0], math.log(1 / 4), rel_tol=1e-6) and scores[1][1] == 1
    result = multiple_choice_accuracy(model, tok, items)
    assert result == {"accuracy": 0.0, "accuracy_norm": 1.0, "items": 2, "chance": 0.5}


def test_an_untrained_model_scores_near_chance():
    corpus = SyntheticCorpus()
    tok = corpus.tokenizer()
    items = synthetic_items(corpus, 200, seed=1)
    torch.manual_seed(0)
    untrained = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    result = multiple_choice_accuracy(untrained, tok, items)
    assert result["chance"] == 0.25 and result["items"] == 200
    assert 0.1 < result["accuracy"] < 0.4
    assert result["accuracy_norm"] == result["accuracy"]  # one token per word, and endings of one length


def test_counting_words_does_not_give_the_answer_away():
    items = synthetic_items(SyntheticCorpus(), 400, seed=2)
    same_length = [len({len(e.split()) for e in item.endings}) == 1 for item in items]
    assert sum(same_length) > 0.95 * len(items)
