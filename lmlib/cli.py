"""The `lmlib` command: train, generate, evaluate, report, plot, tokenize, export.

Every TrainConfig and GPTConfig field is a flag (`--max-steps`, `--n-embd`, ...),
generated from the dataclasses so the CLI can never drift from the library; a
field's help is the comment next to it in the dataclass.
Bad input exits with code 2 and one line saying what to fix.

This module builds the parser; what each command does is in `lmlib.commands`.
`lmlib report` and `lmlib plot` read only the metrics file: they do not import
torch, so they answer quickly (torch-dependent modules are imported inside the
commands that need them, and only the parsed command's flags are built).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from dataclasses import MISSING, fields

from lmlib.commands import COMMANDS
from lmlib.errors import LmlibError

_TYPES = {"int": int, "float": float, "str": str}
DEVICES = ("auto", "cpu", "cuda", "mps")
# Dataclass fields whose values form a closed set: their flags take as `choices` the
# tuple of that name in the dataclass's module (where the library checks them too).
_FIELD_CHOICES = {"schedule": "SCHEDULES", "optimizer": "OPTIMIZERS", "dtype": "DTYPES", "finite_check": "FINITE_CHECKS",
                  "activation": "ACTIVATIONS"}


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
    f.add_argument("--loss-on", choices=["response", "all"], default="response",
                   help="the tokens in the loss: the response only (default), or the whole exchange")
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
