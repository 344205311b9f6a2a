"""What each `lmlib` command does (`lmlib.cli` builds the parser and calls these).

Each `cmd_*` takes the parsed arguments and returns the exit code; an LmlibError
becomes one line on stderr and exit code 2 (`lmlib.cli.main`). Torch and the
heavier modules are imported inside the commands that need them, so `report` and
`plot` stay fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import fields
from pathlib import Path

from lmlib.errors import LmlibError


def resolve_device(name: str = "auto"):
    """The torch device for a --device name; LmlibError if that device is not available here."""
    from lmlib.runtime import pick_device  # imports torch: only the commands that train or load a model

    return pick_device(name)


def _unescape(text: str) -> str:
    """Read \\n, \\t, \\r and \\\\ in a prompt typed on the command line; leave all else as typed."""
    return re.sub(r"\\([\\ntr])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _default_prompt(tokenizer) -> str:
    """A prompt every model of this tokenizer can start from: a line break, else a sentence end."""
    for symbol in ("\n", "."):
        if symbol in tokenizer.stoi or getattr(tokenizer, "byte_level", False):  # bpe: any text
            return symbol
    return tokenizer.vocab[0]


def _prepare_data(a: argparse.Namespace):
    """The dataset the flags name: downloaded, tokenized (and the tokenizer trained) as needed."""
    from lmlib import data as D
    from lmlib.run import PRESETS, load_data

    val_fraction = a.val_fraction
    if val_fraction is None:
        val_fraction = PRESETS.get(a.preset or "", {}).get("val_fraction", D.DEFAULT_VAL_FRACTION)
    if a.tokenizer == "bpe" and a.data != "synthetic" and Path(a.data).suffix not in (".bin", ".json"):
        source = a.data
        if source == "shakespeare":
            from lmlib.download import download_tiny_shakespeare

            source = str(download_tiny_shakespeare())
        return D.prepare_text(source, kind="bpe", vocab_size=a.vocab_size, val_fraction=val_fraction)
    if a.vocab_size is not None:
        raise LmlibError("--vocab-size sets a bpe tokenizer's size: use it with --tokenizer bpe and a text file")
    return load_data(a.data, tokenizer=a.tokenizer, n_tokens=a.n_tokens, seed=a.data_seed,
                     val_fraction=val_fraction, holdout=a.holdout)


def _prepare_data_once(a: argparse.Namespace, dist):
    """Under torchrun, rank 0 downloads, tokenizes and trains the tokenizer while the
    others wait; they then read its cached files (same folder: one machine, or a shared
    filesystem). A failure on rank 0 ends every rank with its message."""
    if not dist.enabled:
        return _prepare_data(a)
    error, data = None, None
    if dist.is_main:
        try:
            data = _prepare_data(a)
        except LmlibError as e:
            error = str(e)
    errors = dist.gather(error)  # doubles as the barrier
    if errors[0] is not None:
        raise LmlibError(errors[0] if dist.is_main else "rank 0 could not prepare the data (see its message)")
    return data if dist.is_main else _prepare_data(a)


def cmd_train(a: argparse.Namespace) -> int:
    from lmlib.model import GPTConfig
    from lmlib.run import train
    from lmlib.runtime import init_distributed
    from lmlib.trainer import TrainConfig

    if a.extend and not a.resume:
        raise LmlibError("--extend continues a finished run: use it together with --resume")
    if resolve_device(a.device or "auto").type == "cpu":  # (and refuse an unavailable device before any work)
        from lmlib.runtime import keep_freed_memory

        keep_freed_memory()  # faster CPU steps; the library leaves the process's allocator alone, the CLI tunes it
    dist = init_distributed(a.device or "auto")  # join the torchrun job (if any) before preparing data
    try:
        data = _prepare_data_once(a, dist)
        keys = ({f.name for f in fields(GPTConfig)} - {"vocab_size"}) | {f.name for f in fields(TrainConfig)}
        settings = {k: v for k, v in vars(a).items() if k in keys and v is not None}
        if a.extend:
            settings["extend"] = True
        result = train(data, preset=a.preset, resume=a.resume, **settings)
    finally:
        dist.close()
    if not dist.is_main:  # under torchrun only rank 0 reports (and writes)
        return 1 if result.status == "diverged" else 0
    out = result.out_dir
    print(f"{result.status} after {result.steps} steps; artifacts in {out}/:"
          " training_metrics.json, training_curve.png, loss_by_epoch.png")
    if result.best_val_loss is not None:
        print(f"best validation loss {result.best_val_loss:.4f}")
    if result.message:
        print(result.message, file=sys.stderr)
    return 1 if result.status == "diverged" else 0


def cmd_generate(a: argparse.Namespace) -> int:
    from lmlib.checkpoint import load_model, run_checkpoint
    from lmlib.evaluate import generate, next_token_distribution

    model, tok, _ = load_model(run_checkpoint(a.checkpoint), device=resolve_device(a.device))
    prompt = _default_prompt(tok) if a.prompt is None else _unescape(a.prompt)
    if a.chat:
        from lmlib.evaluate import generate_ids
        from lmlib.instruct import END, prompt_ids

        if END not in tok.special_ids:
            raise LmlibError(f"{a.checkpoint} is not a chat model (no {END} token): fine-tune it with lmlib finetune")
        ids = generate_ids(model, prompt_ids(tok, prompt), a.max_new_tokens, a.temperature, a.top_k, a.top_p,
                           None if a.seed is None else torch_generator(a.seed), stop_ids=[tok.special_ids[END]])
        print(tok.decode(ids[:-1] if ids[-1:] == [tok.special_ids[END]] else ids))
    elif a.top:
        for token, p in next_token_distribution(model, tok, prompt, a.top):
            print(f"{token!r:>16}  {p:.4f}")
    else:
        eot = getattr(tok, "special_ids", {}).get("<|endoftext|>")
        stop = () if a.no_stop_at_eot or eot is None else (eot,)
        print(generate(model, tok, prompt, a.max_new_tokens, a.temperature, a.top_k, seed=a.seed,
                       top_p=a.top_p, stop_ids=stop))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    import numpy as np

    from lmlib import data as D
    from lmlib.checkpoint import load_model, run_checkpoint
    from lmlib.evaluate import estimate_loss
    from lmlib.tokenfile import load_token_file, tokenize_file

    model, tok, state = load_model(run_checkpoint(a.checkpoint), device=resolve_device(a.device))
    if a.data == "synthetic-chat":  # a fine-tuned model against the answer key
        from lmlib.finetune import chat_rows
        from lmlib.instruct import answer_accuracy, make_examples

        test = make_examples(300, "test")
        tokens, mask = chat_rows(tok, test, model.config.block_size)
        r = estimate_loss(model, tokens, a.batch_size, model.config.block_size, mask=mask)
        key = answer_accuracy(model, tok, test)
        print(f"test: loss {r['loss']:.4f} on {r['tokens']:,} response tokens  exact-match accuracy "
              f"{key['accuracy']:.3f} ({key['n']} questions; " + ", ".join(f"{k} {v:.3f}" for k, v in key["by_kind"].items())
              + ")")
        return 0
    if a.data:
        path = Path(a.data)
        if path.suffix in (".bin", ".json"):
            tf = load_token_file(path)
            if tf.tokenizer.to_dict() != tok.to_dict():
                raise LmlibError(f"{path} was tokenized with a {tf.tokenizer.kind} tokenizer of {tf.tokenizer.vocab_size} "
                                 f"tokens, not the model's ({tok.kind}, {tok.vocab_size} tokens): pass the text file "
                                 "instead, it is then encoded with the model's own tokenizer")
            tokens, meta = tf.tokens, tf.meta
        else:  # encode with the model's own tokenizer, in a scratch folder
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                tf = tokenize_file(path, Path(tmp) / "eval", tokenizer=tok)
                tokens, meta = np.array(tf.tokens), tf.meta
    elif state.get("data_name", "").startswith("synthetic"):
        raise LmlibError("pass --data: the synthetic corpus settings are not stored in the checkpoint")
    else:
        raise LmlibError("pass --data with the text or token file to evaluate on")
    tokens = np.asarray(tokens)
    n_train, n_val = state.get("data_train_tokens", -1), state.get("data_val_tokens", -1)
    if n_train >= 0 and n_train + n_val == len(tokens):  # the run's own data: its own split
        if a.val_fraction is not None and len(D.split_tokens(tokens, a.val_fraction)[0]) != n_train:
            raise LmlibError(
                f"--val-fraction {a.val_fraction} is not this run's split (it held out the last {n_val:,} of "
                f"{len(tokens):,} tokens, {n_val / len(tokens):.3g}; it trained on the rest): leave --val-fraction out")
        train, val = tokens[:n_train], tokens[n_train:]
    else:
        train, val = D.split_tokens(tokens, D.DEFAULT_VAL_FRACTION if a.val_fraction is None else a.val_fraction)
    split = val if a.split == "val" else train
    r = estimate_loss(model, split, a.batch_size, model.config.block_size, max_batches=None)
    from lmlib.metrics import bits_per_byte

    bpb = bits_per_byte(r["loss"], D.split_tokens_per_byte(split, tok, meta))
    print(f"{a.split}: loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}"
          f"  accuracy {r['accuracy']:.3f}  ({r['tokens']:,} tokens)"
          + ("" if bpb is None else f"  bits per byte {bpb:.4f}"))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from lmlib.metrics import format_report, load_metrics

    print(format_report(load_metrics(a.run_dir)))
    return 0


def cmd_plot(a: argparse.Namespace) -> int:
    from lmlib.plots import write_plots

    for p in write_plots(a.run_dir):
        print(p)
    return 0


def torch_generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def cmd_finetune(a: argparse.Namespace) -> int:
    from lmlib.finetune import finetune, load_chat_jsonl
    from lmlib.instruct import make_examples

    if a.data == "synthetic-chat":
        train, val, test = (make_examples(n, s, seed=a.seed) for n, s in
                            ((a.n_examples, "train"), (max(1, a.n_examples // 10), "val"), (300, "test")))
    else:
        records = load_chat_jsonl(a.data)  # every broken line reported before anything is written
        cut = len(records) - max(1, len(records) // 10) if len(records) > 1 else 1
        train, val, test = records[:cut], records[cut:], ()
    result = finetune(a.base_run, train, val, test=test, out_dir=a.out_dir, epochs=a.epochs, lr=a.lr,
                      batch_size=a.batch_size, seed=a.seed, resume=a.resume, progress=a.progress, loss_on=a.loss_on)
    print(f"{result.status} after {result.steps} steps; artifacts in {a.out_dir}/")
    if "answer_key" in result.metrics:
        key = result.metrics["answer_key"]
        print(f"exact-match accuracy on {key['n']} held-out questions: {key['accuracy']:.3f} "
              + " ".join(f"{k} {v:.3f}" for k, v in key["by_kind"].items()))
    return 1 if result.status == "diverged" else 0


def cmd_tokenize(a: argparse.Namespace) -> int:
    from lmlib import tokenfile
    from lmlib.documents import is_documents

    if is_documents(a.text_file):  # a folder or a .jsonl file: documents, <|endoftext|> after each
        src = Path(a.text_file)
        out = a.out or src.with_name(f"{src.stem}.{a.tokenizer}")
        tf = tokenfile.tokenize_documents(src, out, kind=a.tokenizer, vocab_size=a.vocab_size)
    else:
        tf = tokenfile.tokenize_file(a.text_file, a.out, kind=a.tokenizer, vocab_size=a.vocab_size)
    print(f"{tf.meta['n_tokens']:,} tokens, vocabulary {tf.meta['vocab_size']} -> {tf.bin_path}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from lmlib.hf import export_run

    out = export_run(a.run_dir, a.out)
    print(f"Hugging Face GPT-2 folder written to {out}/ (load it with from_pretrained({str(out)!r}))")
    return 0


COMMANDS = {"finetune": cmd_finetune, "train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "report": cmd_report, "plot": cmd_plot, "tokenize": cmd_tokenize, "export": cmd_export}
