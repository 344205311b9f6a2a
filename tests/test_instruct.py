"""The instruction layer: exact answer keys, held-out combinations, the chat template and its loss mask."""

import itertools

import numpy as np
import pytest
import torch

from lmlib.bpe import BPETokenizer
from lmlib.data import windows_to_batch
from lmlib.errors import LmlibError
from lmlib.evaluate import estimate_loss
from lmlib.instruct import (
    ASSISTANT,
    END,
    KINDS,
    SPLITS,
    USER,
    WORD_SPLIT,
    chat_tokenizer,
    encode_chat,
    make_examples,
    score,
    split_of,
)
from lmlib.model import GPT, GPTConfig
from lmlib.synthetic import FILLERS, SyntheticCorpus
from lmlib.tokenizers import CharTokenizer


def asked(ex):
    """(kind, animal, answer) of an example's question."""
    if ex.kind == "complete":  # "complete : the cats"
        return ex.kind, ex.prompt.split()[-1], ""
    if ex.kind == "what":  # "what is the horse ?"
        return ex.kind, ex.prompt.split()[-2], ""
    return ex.kind, ex.prompt.split()[-3], ex.response.split()[-2]  # "... the dog sit ?" / "on the mat ."


def test_every_question_has_its_answer_in_the_context_and_held_out_words_stay_out_of_training():
    seen = {}
    for split in SPLITS:
        examples = make_examples(300, split, seed=1)
        assert {e.kind for e in examples} == set(KINDS)
        for e in examples:
            kind, animal, answer = asked(e)
            assert split_of(animal, answer) == split
            words = (e.prompt + " " + e.response).split()
            assert split_of(*words) == split  # no word of another held-out split, anywhere
            if kind == "complete":  # every ending makes a sentence of the grammar, and the key has them all
                assert e.response in e.answers and len(e.answers) in (10, 16)
                continue
            if kind == "what":  # the word's slot in the grammar names its kind
                category = e.response.split()[1]
                assert animal in dict(FILLERS[category]) and e.answers == (e.response,)
                continue
            fact = f"the {animal} sat on the {answer} ." if kind == "where" else f"the {animal} likes {answer} ."
            assert fact in e.prompt and e.prompt.count(f"the {animal} ") == 2  # stated once, asked once
        seen[split] = {asked(e) for e in examples}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not seen[a] & seen[b]  # memorising training answers cannot score on the test split
    held_out = {w for w, s in WORD_SPLIT.items() if s != "train"}
    assert len(held_out) == 10 and split_of("cat", *held_out) is None
    assert make_examples(5, "test", seed=3) == make_examples(5, "test", seed=3)
    for e in make_examples(40, "val", sentences=(2, 3)):  # longer contexts: distinct animals, one of them asked
        if e.kind in ("where", "likes"):
            kind, animal, answer = asked(e)
            assert 3 <= e.prompt.count(" . ") + 1 <= 4 and e.prompt.count(f"the {animal} ") == 2
    with pytest.raises(LmlibError, match="split"):
        make_examples(3, "dev")


@pytest.mark.parametrize("kind", ["word", "char", "bpe"])
def test_the_chat_tokenizer_keeps_every_old_id_and_masks_only_the_response(kind):
    corpus = SyntheticCorpus()
    text = corpus.text(50)
    base = {"word": corpus.tokenizer(), "char": CharTokenizer.fit(text),
            "bpe": BPETokenizer.fit(text, vocab_size=300)}[kind]
    tok = chat_tokenizer(base)
    assert tok.vocab[:base.vocab_size] == base.vocab and tok.encode(text) == base.encode(text)
    ex = make_examples(1, "train")[0]
    ids, mask = encode_chat(tok, ex.prompt, ex.response)
    assert [i for i in ids if i in tok.special_ids.values()] == [tok.special_ids[t] for t in (USER, END, ASSISTANT, END)]
    answer = [i for i, m in zip(ids, mask) if m]
    assert answer == tok.encode(ex.response) + [tok.special_ids[END]]
    assert ids[:len(ids) - len(answer)] == tok.encode(f"<|user|>{ex.prompt}<|end|><|assistant|>", allowed_special="all")


def test_masked_targets_leave_the_loss_and_the_accuracy():
    tokens = np.arange(20) % 7
    mask = np.zeros(20, np.uint8)
    mask[[3, 4, 12]] = 1
    x, y = windows_to_batch(tokens, [0, 8], 8, mask)
    assert (y != -100).sum() == 3 and y[0, 2] == tokens[3] and y[1, 3] == tokens[12]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=8))
    r = estimate_loss(model, tokens, 2, 8, mask=mask)
    assert r["tokens"] == 3  # only the masked-in targets of the two windows 0..8, 8..16


def test_score_is_exact_match_per_kind():
    tok = chat_tokenizer(SyntheticCorpus().tokenizer())
    ex = make_examples(4, "test")
    right = [tok.encode(e.response) for e in ex]
    wrong = [r[:-1] for r in right]
    assert score(right, ex, tok) == {"accuracy": 1.0, "n": 4,
                                     "by_kind": {"complete": 1.0, "likes": 1.0, "what": 1.0, "where": 1.0}}
    assert score([right[0], wrong[1], wrong[2], right[3]], ex, tok)["by_kind"] == {
        "complete": 1.0, "what": 0.0, "where": 0.0, "likes": 1.0}
    other = next(a for a in ex[0].answers if a != ex[0].response)  # any correct ending scores
    assert score([tok.encode(other)], ex[:1], tok)["accuracy"] == 1.0
