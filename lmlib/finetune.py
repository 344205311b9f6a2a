"""Supervised fine-tuning (SFT): from a pretrained run to a model that answers.

    result = finetune("runs/base", make_examples(2000, "train"), make_examples(200, "val"), out_dir="runs/sft")

The pretrained weights (`best.pt`, else `last.pt`) are loaded, the vocabulary is
extended by the chat tokens (`lmlib.instruct.chat_tokenizer`; a new token's
embedding starts at the mean of the existing ones, so it begins as an "average
word" instead of noise), and every exchange becomes one row of `block_size`
tokens: the prompt, the response, then padding. A loss mask keeps the prompt and
the padding out of the loss, so the model is trained to answer, not to predict
questions. The rows go to the same `Trainer` as pretraining, in epoch mode (each
row once per epoch, windows aligned to rows), with everything it does: warm-up and
cosine, clipping, validation, early stopping, checkpoints, exact resume, torchrun.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lmlib.checkpoint import load_model, run_checkpoint
from lmlib.data import TokenData
from lmlib.errors import LmlibError
from lmlib.evaluate import eval_mode
from lmlib.instruct import END, Example, answer_accuracy, chat_tokenizer, encode_chat
from lmlib.metrics import write_metrics
from lmlib.model import GPT, GPTConfig
from lmlib.tokenizers import Tokenizer


def extend_vocabulary(model: GPT, vocab_size: int) -> GPT:
    """A copy of `model` with `vocab_size` tokens: the old rows kept, new rows at their mean."""
    old = model.config.vocab_size
    if vocab_size < old:
        raise LmlibError(f"cannot shrink a vocabulary of {old} tokens to {vocab_size}")
    cfg = GPTConfig(**{**model.config.to_dict(), "vocab_size": vocab_size})
    new = GPT(cfg).to(next(model.parameters()).device)
    state = model.state_dict()
    emb = state["tok_emb.weight"]
    state["tok_emb.weight"] = torch.cat([emb, emb.mean(0, keepdim=True).expand(vocab_size - old, -1)])
    state["lm_head.weight"] = state["tok_emb.weight"]  # tied
    new.load_state_dict(state)
    return new


def language_loss(model: GPT, tokens: np.ndarray, vocab_size: int, block_size: int, n_windows: int = 200) -> float:
    """Mean loss on the first `n_windows` windows of pretraining text `tokens`, with the
    softmax over the first `vocab_size` tokens (the base vocabulary) only: does a fine-tuned
    model still know the language? (With the chat tokens in the softmax, it would also pay
    for expecting <|end|> after every ".", a habit, not forgotten knowledge.)"""
    n = min(n_windows, (len(tokens) - 1) // block_size)
    x = torch.from_numpy(tokens[:n * block_size + 1].astype("int64")).to(next(model.parameters()).device)
    inputs, targets = x[:-1].view(n, block_size), x[1:].view(n, block_size)
    with torch.no_grad(), eval_mode(model):
        logits = model(inputs)[0][..., :vocab_size].float()
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1)))


LOSS_ON = ("response", "all")


def chat_rows(tokenizer: Tokenizer, examples: Sequence[Example], block_size: int,
              loss_on: str = "response") -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask): one row of `block_size` tokens per exchange (padded with <|end|>,
    mask 0), plus one padding token at the end so the last row's window is whole.
    `loss_on="response"` puts the response (and its <|end|>) in the loss;
    `"all"` the whole exchange, prompt included; the padding never."""
    if loss_on not in LOSS_ON:
        raise LmlibError(f"unknown loss_on {loss_on!r}: choose one of {', '.join(LOSS_ON)}")
    pad = tokenizer.special_ids[END]
    rows, masks = [], []
    for i, ex in enumerate(examples):
        ids, mask = encode_chat(tokenizer, ex.prompt, ex.response)
        if len(ids) > block_size:
            raise LmlibError(f"example {i} takes {len(ids)} tokens, more than the model's context of {block_size}:"
                             " shorten it or fine-tune a model with a longer context")
        if loss_on == "all":
            mask = [1] * len(ids)
        rows.append(ids + [pad] * (block_size - len(ids)))
        masks.append(mask + [0] * (block_size - len(ids)))
    tokens = np.array([t for r in rows for t in r] + [pad], dtype=np.int32)
    mask = np.array([m for r in masks for m in r] + [0], dtype=np.uint8)
    return tokens, mask


def chat_data(tokenizer: Tokenizer, train: Sequence[Example], val: Sequence[Example], block_size: int,
              name: str = "chat", loss_on: str = "response") -> TokenData:
    """A `TokenData` of chat rows with loss masks, for `Trainer` in epoch mode. The
    validation rows are masked to the response whatever `loss_on` says, so that the
    validation loss of both choices measures the same thing: how well the model answers."""
    if not train:
        raise LmlibError("no training examples: give at least one prompt/response pair")
    tr, trm = chat_rows(tokenizer, train, block_size, loss_on)
    va, vam = chat_rows(tokenizer, val, block_size) if val else (np.zeros(0, np.int32), np.zeros(0, np.uint8))
    return TokenData(train=tr, val=va, tokenizer=tokenizer, name=name, train_mask=trm, val_mask=vam,
                     meta={"examples": {"train": len(train), "val": len(val)}})


def load_chat_jsonl(path: str | Path) -> list[Example]:
    """Records {"prompt": ..., "response": ...} or {"messages": [{"role": "user", ...},
    {"role": "assistant", ...}]}, one per line. Every broken line is reported, one line
    each, in a single LmlibError; nothing is returned then."""
    path = Path(path)
    if not path.is_file():
        raise LmlibError(f"{path} does not exist: give a JSONL file of prompt/response records")
    examples, problems = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                examples.append(_record(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError, KeyError) as e:
                problems.append(f"{path}:{n}: {e}")
    if problems:
        raise LmlibError("\n".join(problems))
    if not examples:
        raise LmlibError(f"{path} holds no records")
    return examples


def _record(r: object) -> Example:
    if not isinstance(r, dict):
        raise ValueError("a record must be a JSON object")
    if "messages" in r:
        roles = [(m["role"], m["content"]) for m in r["messages"]]
        if [x for x, _ in roles] != ["user", "assistant"]:
            raise ValueError("messages must be one user turn then one assistant turn")
        prompt, response = roles[0][1], roles[1][1]
    else:
        prompt, response = r["prompt"], r["response"]
    if not (isinstance(prompt, str) and isinstance(response, str) and prompt and response):
        raise ValueError("prompt and response must be non-empty strings")
    return Example("custom", prompt, response)


def finetune(base_run: str | Path, train: Sequence[Example], val: Sequence[Example], *,
             test: Sequence[Example] = (), out_dir: str | Path = "sft", epochs: int = 3, lr: float = 1e-3,
             batch_size: int = 16, callbacks: Sequence = (), resume: bool = False, plots: bool = True,
             random_init: bool = False, loss_on: str = "response", **settings):
    """Fine-tune the run `base_run` on prompt/response `train` examples (validated on `val`).

    Returns the Trainer's `TrainResult`; `out_dir` gets the usual artifacts
    (training_metrics.json, whose data section counts the tokens the loss sees,
    the two PNGs, best.pt and last.pt). With `test` examples, the best model's
    exact-match accuracy on them (`lmlib.instruct.answer_accuracy`) is added to the
    metrics as "answer_key". `settings` are other TrainConfig fields; `resume=True`
    continues an interrupted fine-tuning exactly. `random_init=True` trains the same
    architecture and tokenizer from fresh weights instead: what pretraining is worth.
    `loss_on="all"` trains on the whole exchange, prompt included (the padding
    never), instead of on the response only; validation still scores the response.
    """
    from lmlib.trainer import TrainConfig, Trainer  # the trainer is one layer below

    model, base_tok, _ = load_model(run_checkpoint(base_run))
    tok = chat_tokenizer(base_tok)
    model = extend_vocabulary(model, tok.vocab_size)
    if random_init:
        torch.manual_seed(settings.get("seed", 1337))
        model = GPT(model.config)
    data = chat_data(tok, train, val, model.config.block_size, loss_on=loss_on)
    config = TrainConfig(out_dir=str(out_dir), epochs=epochs, lr=lr, batch_size=batch_size, **settings)
    trainer = Trainer(model.config, data, config, callbacks=callbacks, model=model)
    try:
        result = trainer.fit(resume=resume)
        if test and trainer.dist.is_main and result.status != "diverged":
            best = Path(out_dir) / "best.pt"
            scored = load_model(best)[0] if best.exists() else result.model
            result.metrics["answer_key"] = {"split": "test", **answer_accuracy(scored, tok, test)}
            write_metrics(Path(out_dir) / "training_metrics.json", result.metrics)
    finally:
        if plots and trainer.dist.is_main and (Path(out_dir) / "training_metrics.json").exists():
            from lmlib.plots import write_plots

            write_plots(out_dir)
    return result
