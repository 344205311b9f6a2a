"""The `lmlib` command: train, generate, evaluate, report, plot, tokenize, export.

Every TrainConfig and GPTConfig field is a flag (`--max-steps`, `--n-embd`, ...),
generated from the dataclasses so the CLI can never drift from the library; a
field's help is the comment next to it in the dataclass.
Bad input exits with code 2 and one line saying what to fix.

`lmlib report` and `lmlib plot` read only the metrics file: they do not import
torch, so they answer quickly (torch-dependent modules are imported inside the
commands that need them, and only the parsed command's flags are built).
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from lmlib.errors import LmlibError

_TYPES = {"int": int, "float": float, "str": str}
DEVICES = ("auto", "cpu", "cuda", "mps")
# Dataclass fields whose values form a closed set: their flags take as `choices` the
# tuple of that name in the dataclass's module (where the library checks them too).
_FIELD_CHOICES = {"schedule": "SCHEDULES", "optimizer": "OPTIMIZERS", "dtype": "DTYPES"}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (like lmlib's own), exit code 2."""

    subcommands: dict[str, argparse.ArgumentParser]

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _device_name(name: str) -> str:
    """argparse type of --device: auto, cpu, cuda, cuda:N or mps."""
    if name in DEVICES or re.fullmatch(r"cuda:\d+", name):
        return name
    raise argparse.ArgumentTypeError(f"unknown device {name!r}: choose auto, cpu, cuda (or cuda:N) or mps")


def resolve_device(name: str = "auto"):
    """The torch device for a --device name; LmlibError if that device is not available here."""
    from lmlib.runtime import pick_device  # imports torch: only the commands that train or load a model

    return pick_device(name)


def _field_comments(cls) -> dict[str, str]:
    """`name: type = default  # comment` lines of a dataclass: {name: comment}."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return dict(re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+?)\s*$", source, flags=re.M))


def _add_dataclass_flags(p: argparse.ArgumentParser, cls, skip: set[str]) -> None:
    group = p.add_argument_group(f"{cls.__name__} settings (default: the preset's or the library's)")
    comments = _field_comments(cls)
    module = sys.modules[cls.__module__]
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        base = str(f.type).replace(" | None", "")
        default = None if f.default is MISSING else f.default
        about = comments.get(f.name, "")
        choices = getattr(module, _FIELD_CHOICES.get(f.name, ""), None)
        help = f"{about} (default {default})" if "default" not in about else about
        help = help.strip().replace("%", "%%")
        if base == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif f.name == "device":
            group.add_argument(flag, dest=f.name, type=_device_name, default=None, metavar="{auto,cpu,cuda,mps}",
                               help=help)
        elif choices:
            group.add_argument(flag, dest=f.name, choices=choices, default=None, help=help)
        else:
            group.add_argument(flag, dest=f.name, type=_TYPES[base], default=None, metavar=base.upper(), help=help)


def _run_dir_checkpoint(path: str) -> Path:
    p = Path(path)
    return p / "best.pt" if p.is_dir() and (p / "best.pt").exists() else (p / "last.pt" if p.is_dir() else p)


def _unescape(text: str) -> str:
    """Read \\n, \\t, \\r and \\\\ in a prompt typed on the command line; leave all else as typed."""
    return re.sub(r"\\([\\ntr])", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _default_prompt(tokenizer) -> str:
    """A prompt every model of this tokenizer can start from: a line break, else a sentence end."""
    for symbol in ("\n", "."):
        if symbol in tokenizer.stoi or getattr(tokenizer, "byte_level", False):  # bpe: any text
            return symbol
    return tokenizer.vocab[0]


COMMAND_NAMES = ("train", "generate", "evaluate", "report", "plot", "tokenize", "finetune", "export")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `lmlib` parser; with `command`, only that subcommand gets its arguments (the
    others are listed, not built), so `report` and `plot` need not import torch."""
    parser = _Parser(prog="lmlib", description="Train and inspect small GPT language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "train": "train a model on the synthetic corpus, Tiny Shakespeare or a text file",
        "generate": "sample text from a trained model",
        "evaluate": "loss, perplexity and accuracy of a checkpoint on a split",
        "report": "summarise a run's training_metrics.json",
        "plot": "redraw training_curve.png and loss_by_epoch.png from the metrics file",
        "tokenize": "tokenize a text file, folder or JSONL file once into a token file (.bin + .json)",
        "finetune": "fine-tune a trained run to answer prompts (synthetic-chat, or a JSONL file of prompt/response)",
        "export": "write a run as a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json)",
    }
    subs = parser.subcommands = {name: sub.add_parser(name, help=helps[name]) for name in COMMAND_NAMES}
    if command in (None, "train"):
        _train_arguments(subs["train"])
    if command in (None, "generate"):
        _generate_arguments(subs["generate"])
    if command in (None, "finetune"):
        _finetune_arguments(subs["finetune"])
    if command in (None, "evaluate"):
        _evaluate_arguments(subs["evaluate"])
    subs["report"].add_argument("run_dir", nargs="?", default="checkpoints")
    subs["plot"].add_argument("run_dir", nargs="?", default="checkpoints")
    tk = subs["tokenize"]
    tk.add_argument("text_file", help="a UTF-8 text file, a folder of text files or a .jsonl file (a \"text\" "
                    "field per line); documents get <|endoftext|> after each")
    tk.add_argument("--out", help="output path without suffix (default: next to the text file)")
    tk.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char")
    tk.add_argument("--vocab-size", type=int, help="bpe: vocabulary size, 256 bytes + merges + 1 special (default 512)")
    ex = subs["export"]
    ex.add_argument("run_dir", help="a run directory (uses best.pt, else last.pt) or a .pt file")
    ex.add_argument("--out", required=True, help="the folder to write; transformers' from_pretrained(OUT) loads it")
    return parser


def _train_arguments(t: argparse.ArgumentParser) -> None:
    from lmlib.model import GPTConfig
    from lmlib.run import PRESETS
    from lmlib.trainer import TrainConfig

    t.add_argument("data", help="'synthetic', 'shakespeare', a UTF-8 text file, a folder of text files or a .jsonl "
                   "file (documents, <|endoftext|> after each), or a token file (.bin)")
    t.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe; other flags override it")
    t.add_argument("--tokenizer", choices=["char", "word", "bpe"], default="char",
                   help="for text files (default char; bpe: byte-level BPE trained on the file)")
    t.add_argument("--vocab-size", type=int, help="bpe: vocabulary size, 256 bytes + merges + 1 special (default 512)")
    t.add_argument("--n-tokens", type=int, help="synthetic corpus size in tokens (default 200000)")
    t.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic corpus")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="share of tokens held out for validation (default: the preset's, else lmlib.data.DEFAULT_VAL_FRACTION, 0.2)")
    t.add_argument("--holdout", action="append", default=[], help="synthetic sentence kept out of training")
    t.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    t.add_argument("--extend", action="store_true",
                   help="with --resume: continue a finished run for more steps (--max-steps) or epochs; the "
                        "original run's learning-rate schedule is kept and the rate then holds at its floor")
    _add_dataclass_flags(t, GPTConfig, skip={"vocab_size"})
    _add_dataclass_flags(t, TrainConfig, skip=set())


def _device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device_name, default="auto", metavar="{auto,cpu,cuda,mps}",
                   help="where the model runs (default auto: CUDA if present, then MPS, then the CPU)")


def _finetune_arguments(f: argparse.ArgumentParser) -> None:
    f.add_argument("base_run", help="the pretrained run's folder (uses best.pt, else last.pt)")
    f.add_argument("data", help="'synthetic-chat' (questions with an exact answer key) or a JSONL file of "
                                "{\"prompt\": ..., \"response\": ...} or {\"messages\": [...]} records")
    f.add_argument("--out-dir", required=True)
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--n-examples", type=int, default=2000, help="synthetic-chat: training examples")
    f.add_argument("--seed", type=int, default=1337)
    f.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning from OUT_DIR/last.pt")
    f.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)


def _generate_arguments(g: argparse.ArgumentParser) -> None:
    g.add_argument("checkpoint", help="a .pt file or a run directory (uses best.pt)")
    g.add_argument("--prompt", default=None,
                   help="text to continue; \\n, \\t, \\r and \\\\ in it are read as newline, tab, carriage "
                        "return and backslash (default: a newline, or '.' for a model whose vocabulary has "
                        "no newline, such as the synthetic corpus's)")
    g.add_argument("--max-new-tokens", type=int, default=300)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=None, help="sample only among the k likeliest tokens")
    g.add_argument("--top-p", type=float, default=None,
                   help="sample only among the likeliest tokens whose probabilities add up to p (nucleus sampling)")
    g.add_argument("--seed", type=int, default=None,
                   help="the same seed gives the same text (default: a fresh sample each time)")
    g.add_argument("--top", type=int, default=0, help="instead of sampling, show the N likeliest next tokens")
    g.add_argument("--chat", action="store_true",
                   help="a fine-tuned chat model: wrap the prompt in the chat template and print the answer")
    g.add_argument("--no-stop-at-eot", action="store_true",
                   help="keep generating after the end-of-text token <|endoftext|> (default: stop there)")
    _device_argument(g)


def _evaluate_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("checkpoint")
    e.add_argument("--data", help="text or token file (synthetic runs: not stored, so this is needed too), or "
                                  "'synthetic-chat': a fine-tuned model's loss and exact-match accuracy on held-out questions")
    e.add_argument("--split", choices=["train", "val"], default="val")
    e.add_argument("--val-fraction", type=float, default=None,
                   help="share of --data at its end that is the validation split. When --data is the run's own "
                        "data (the same number of tokens), the run's split is used and any other value is "
                        "refused: it would score tokens the model was trained on. Other data: default 0.2")
    e.add_argument("--batch-size", type=int, default=32)
    _device_argument(e)


def cmd_train(a: argparse.Namespace) -> int:
    from lmlib import data as D
    from lmlib.model import GPTConfig
    from lmlib.run import PRESETS, load_data, train
    from lmlib.trainer import TrainConfig

    if a.extend and not a.resume:
        raise LmlibError("--extend continues a finished run: use it together with --resume")
    if resolve_device(a.device or "auto").type == "cpu":  # (and refuse an unavailable device before any work)
        from lmlib.runtime import keep_freed_memory

        keep_freed_memory()  # faster CPU steps; the library leaves the process's allocator alone, the CLI tunes it
    val_fraction = a.val_fraction
    if val_fraction is None:
        val_fraction = PRESETS.get(a.preset or "", {}).get("val_fraction", D.DEFAULT_VAL_FRACTION)
    if a.tokenizer == "bpe" and a.data != "synthetic" and Path(a.data).suffix not in (".bin", ".json"):
        source = a.data
        if source == "shakespeare":
            from lmlib.download import download_tiny_shakespeare

            source = str(download_tiny_shakespeare())
        data = D.prepare_text(source, kind="bpe", vocab_size=a.vocab_size, val_fraction=val_fraction)
    else:
        if a.vocab_size is not None:
            raise LmlibError("--vocab-size sets a bpe tokenizer's size: use it with --tokenizer bpe and a text file")
        data = load_data(a.data, tokenizer=a.tokenizer, n_tokens=a.n_tokens, seed=a.data_seed,
                         val_fraction=val_fraction, holdout=a.holdout)
    keys = ({f.name for f in fields(GPTConfig)} - {"vocab_size"}) | {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in vars(a).items() if k in keys and v is not None}
    if a.extend:
        settings["extend"] = True
    result = train(data, preset=a.preset, resume=a.resume, **settings)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports (and writes)
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
    from lmlib.checkpoint import load_model
    from lmlib.evaluate import generate, next_token_distribution

    model, tok, _ = load_model(_run_dir_checkpoint(a.checkpoint), device=resolve_device(a.device))
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
    from lmlib.checkpoint import load_model
    from lmlib.evaluate import estimate_loss

    model, tok, state = load_model(_run_dir_checkpoint(a.checkpoint), device=resolve_device(a.device))
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
            tf = D.load_token_file(path)
            if tf.tokenizer.to_dict() != tok.to_dict():
                raise LmlibError(f"{path} was tokenized with a {tf.tokenizer.kind} tokenizer of {tf.tokenizer.vocab_size} "
                                 f"tokens, not the model's ({tok.kind}, {tok.vocab_size} tokens): pass the text file "
                                 "instead, it is then encoded with the model's own tokenizer")
            tokens, meta = tf.tokens, tf.meta
        else:  # encode with the model's own tokenizer, in a scratch folder
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                tf = D.tokenize_file(path, Path(tmp) / "eval", tokenizer=tok)
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
                      batch_size=a.batch_size, seed=a.seed, resume=a.resume, progress=a.progress)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((x for x in argv if not x.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the subcommand, like its other errors
            parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return COMMANDS[args.command](args)
    except LmlibError as e:
        print(f"lmlib {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
