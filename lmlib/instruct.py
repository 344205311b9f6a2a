"""Instructions on the synthetic language: questions whose correct answers are known exactly.

A pretrained model continues text; a chat model answers. To teach the second with
an exact answer key, the questions here are about the synthetic language, in a
small question vocabulary, of four kinds:

    complete : the cats                                 ->  are happy .
    what is the horse ?                                 ->  an animal .
    the dog sat on the mat . where did the dog sit ?    ->  on the mat .
    the fox likes milk . what does the fox like ?       ->  milk .

"complete" asks for any ending that makes a sentence of the grammar (the key is
the set of all of them, known exactly), "what" for the kind of thing a word names
(animal, place, food or person): both are knowledge of the language, which
pretraining gives. "where" and "likes" must be read back from the context (places
and foods are drawn uniformly, so the grammar's own preferences do not give them
away): a skill pretraining on i.i.d. sentences never needed. What a question asks
about (the subject to complete; the word to name; the (animal, answer) pair) is
split three ways (train, validation, test, `split_of`), so no test question is a
training question: memorising the training answers cannot score on the test split,
and a test word of "complete" or "what" is one that fine-tuning never asked about.

The chat template wraps a prompt and its response in special tokens,

    <|user|>PROMPT<|end|><|assistant|>RESPONSE<|end|>

for the character, word and BPE tokenizers alike (`chat_tokenizer` adds them,
and for a word tokenizer the question words). `encode_chat` gives the ids and a
loss mask that is 1 on the response and its closing <|end|> only: fine-tuning
learns to answer (and to stop), not to predict the question.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from lmlib.errors import LmlibError
from lmlib.synthetic import FILLERS, grammar_sentences
from lmlib.tokenizers import Tokenizer, WordTokenizer

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (USER, ASSISTANT, END)
#: Words the questions use that the synthetic language lacks.
QUESTION_WORDS = ("complete", ":", "where", "did", "sit", "what", "does", "?", "an", "animal", "place", "food", "person")
KINDS = ("complete", "what", "where", "likes")
SPLITS = ("train", "val", "test")

_ANIMALS = [w for w, _ in FILLERS["animal"]]
_SUBJECTS = _ANIMALS + [w for w, _ in FILLERS["animals"]]
_ANSWERS = {"where": [w for w, _ in FILLERS["place"]], "likes": [w for w, _ in FILLERS["food"]], "complete": [""],
            "what": [""]}
#: "what": each word of these slots, and the kind of thing it names.
_CATEGORY = {w: c for c in ("animal", "place", "food", "person") for w, _ in FILLERS[c]}


@dataclass(frozen=True)
class Example:
    """One question: `prompt` (context and question), the `response` to train on, and
    every correct response (`answers`; one for "where" and "likes")."""

    kind: str  # complete | where | likes | custom
    prompt: str
    response: str
    answers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.answers:
            object.__setattr__(self, "answers", (self.response,))


def _word_splits() -> dict[str, str]:
    """Each animal, place, food and person word's split: a fixed shuffle per kind of word,
    one word for validation, one for test, the rest (two to four) for training. A plural
    animal shares its singular's split."""
    out = {}
    for k, kind in enumerate(("animal", "place", "food", "person")):
        words = [w for w, _ in FILLERS[kind]]
        order = np.random.default_rng(k).permutation(len(words))
        for rank, i in enumerate(order):
            out[words[i]] = SPLITS[2] if rank == 0 else SPLITS[1] if rank == 1 else SPLITS[0]
    for (one, _), (many, _) in zip(FILLERS["animal"], FILLERS["animals"], strict=True):
        out[many] = out[one]
    return out


WORD_SPLIT = MappingProxyType(_word_splits())


def split_of(*words: str) -> str | None:
    """The split of a question that uses these words: "test" if one of them is a test word,
    "val" if one is a validation word, else "train"; None if it mixes the two held-out
    splits (no such question is asked). Words outside the four kinds are in every split."""
    held = {WORD_SPLIT.get(w, SPLITS[0]) for w in words} - {SPLITS[0]}
    return None if len(held) > 1 else held.pop() if held else SPLITS[0]


def _asked_about(kind: str) -> list[str]:
    return _SUBJECTS if kind == "complete" else list(_CATEGORY) if kind == "what" else _ANIMALS


def _sentence(kind: str, animal: str, answer: str) -> str:
    return f"the {animal} sat on the {answer} ." if kind == "where" else f"the {animal} likes {answer} ."


def _question(kind: str, animal: str) -> str:
    return f"where did the {animal} sit ?" if kind == "where" else f"what does the {animal} like ?"


def _response(kind: str, answer: str) -> str:
    return f"on the {answer} ." if kind == "where" else f"{answer} ."


def _endings() -> dict[str, tuple[list[str], np.ndarray]]:
    """For each subject, the endings of the grammar's sentences "the SUBJECT ..." and their probabilities."""
    out: dict[str, tuple[list[str], list[float]]] = {s: ([], []) for s in _SUBJECTS}
    for sentence, p in grammar_sentences():
        if len(sentence) > 2 and sentence[0] == "the" and sentence[1] in out:
            out[sentence[1]][0].append(" ".join(sentence[2:]))
            out[sentence[1]][1].append(float(p))
    return {s: (e, np.array(p) / sum(p)) for s, (e, p) in out.items()}


def make_examples(n: int, split: str, seed: int = 0, sentences: tuple[int, int] = (1, 1)) -> list[Example]:
    """`n` examples of `split`, a quarter of each kind, using no word of another held-out
    split (`split_of`). "complete": a subject of `split`, trained on an ending drawn from
    the grammar. "what": a word of `split`. "where"/"likes": `sentences` (from, to) context
    sentences about distinct animals; the question asks about one of them, drawn so that
    its (animal, answer) pair belongs to `split`. (With more than one sentence the model
    must also find the right one: the book's small model did not learn that in its
    fine-tuning budget.)"""
    if split not in SPLITS:
        raise LmlibError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if n < 0:
        raise LmlibError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    allowed = lambda *words: split_of(*words) in (split, SPLITS[0])  # noqa: E731  (train words go everywhere)
    asked = {k: [p for p in itertools.product(_asked_about(k), _ANSWERS[k]) if split_of(*p) == split] for k in KINDS}
    endings = {s: (ends, probs * [allowed(*e.split()) for e in ends]) for s, (ends, probs) in _endings().items()}
    examples = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        animal, answer = asked[kind][rng.integers(len(asked[kind]))]
        if kind == "complete":  # trained on an ending without another split's words; scored on all of them
            ends, probs = endings[animal]
            pick = rng.choice(len(ends), p=probs / probs.sum())
            examples.append(Example(kind, f"complete : the {animal}", ends[pick], tuple(ends)))
            continue
        if kind == "what":
            category = _CATEGORY[animal]
            article = "an" if category[0] in "aeiou" else "a"
            examples.append(Example(kind, f"what is the {animal} ?", f"{article} {category} ."))
            continue
        others = [a for a in _ANIMALS if a != animal and allowed(a)]
        fillers = [w for w in _ANSWERS[kind] if allowed(w)]
        k = int(rng.integers(sentences[0], sentences[1] + 1))
        animals = [animal, *rng.choice(others, k - 1, replace=False)]
        rng.shuffle(animals)
        facts = [_sentence(kind, a, answer if a == animal else fillers[rng.integers(len(fillers))]) for a in animals]
        examples.append(Example(kind, " ".join([*facts, _question(kind, animal)]), _response(kind, answer)))
    return examples


def chat_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` with the chat tokens (and, for a word or character tokenizer, the
    question's words or characters) added after its vocabulary: every existing id keeps
    its meaning, so a pretrained model only needs rows for the new ones (`lmlib.finetune`)."""
    new = [t for t in CHAT_TOKENS if t not in tokenizer.special_tokens]
    specials = [*tokenizer.special_tokens, *new]
    ordinary = tokenizer.ordinary_vocab
    if tokenizer.kind == "word":
        missing = [w for w in QUESTION_WORDS if w not in tokenizer.stoi]
        return WordTokenizer([*ordinary, *missing], tokenizer.lowercase, tokenizer.unk, specials)
    if tokenizer.kind == "char":
        missing = sorted({c for w in QUESTION_WORDS for c in w + " "} - set(ordinary))
        return type(tokenizer)([*ordinary, *missing], specials)
    return tokenizer.with_special_tokens(specials)  # bpe: bytes cover any text


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids a chat model is given: the user turn, then the assistant's opening."""
    return tokenizer.encode(f"{USER}{prompt}{END}{ASSISTANT}", allowed_special=CHAT_TOKENS)


def encode_chat(tokenizer: Tokenizer, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(ids, mask) of one exchange; the mask is 1 on the response and its closing <|end|>."""
    head = prompt_ids(tokenizer, prompt)
    tail = tokenizer.encode(f"{response}{END}", allowed_special=CHAT_TOKENS)
    return head + tail, [0] * len(head) + [1] * len(tail)


def answer_ids(tokenizer: Tokenizer, response: str) -> list[int]:
    """The ids of a correct answer, as greedy decoding must produce them (before <|end|>)."""
    return tokenizer.encode(response)


def score(answers: Sequence[list[int]], examples: Sequence[Example], tokenizer: Tokenizer) -> dict:
    """Exact-match accuracy of generated answers (ids, without the closing <|end|>)
    against each example's correct responses, overall and per kind of question:
    {"accuracy": ..., "by_kind": {...}, "n": ...}."""
    right, total = Counter(), Counter()
    for ids, ex in zip(answers, examples, strict=True):
        total[ex.kind] += 1
        right[ex.kind] += any(list(ids) == answer_ids(tokenizer, a) for a in ex.answers)
    n = sum(total.values())
    return {"accuracy": sum(right.values()) / n if n else 0.0, "n": n,
            "by_kind": {k: right[k] / total[k] for k in sorted(total)}}


def generate_answers(model, tokenizer: Tokenizer, examples: Sequence[Example], max_new_tokens: int = 12) -> list[list[int]]:
    """Greedy answers (ids, without the closing <|end|>) of a chat model to `examples`."""
    from lmlib.evaluate import generate_ids  # torch: only when a model answers

    end = tokenizer.special_ids[END]
    out = []
    for ex in examples:
        ids = generate_ids(model, prompt_ids(tokenizer, ex.prompt), max_new_tokens, temperature=0, stop_ids=[end])
        out.append(ids[:-1] if ids[-1:] == [end] else ids)
    return out


def answer_accuracy(model, tokenizer: Tokenizer, examples: Sequence[Example]) -> dict:
    """Exact-match accuracy of greedy answers against the answer key (see `score`)."""
    return score(generate_answers(model, tokenizer, examples), examples, tokenizer)
