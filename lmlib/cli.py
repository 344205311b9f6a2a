"""The `lmlib` command: train, generate, evaluate, report, plot, tokenize.

Every TrainConfig and GPTConfig field is a flag (`--max-steps`, `--n-embd`, ...),
generated from the dataclasses so the CLI can never drift from the library.
Bad input exits with code 2 and one line saying what to fix.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from lmlib.errors import LmlibError

_TYPES = {"int": int, "float": float, "str": str}


def _add_dataclass_flags(p: argparse.ArgumentParser, cls, skip: set[str]) -> None:
    group = p.add_argument_group(f"{cls.__name__} settings (default: the preset's or the library's)")
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        base = str(f.type).replace(" | None", "")
        default = None if f.default is MISSING else f.default
        if base == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"(default {default})")
        else:
            group.add_argument(flag, dest=f.name, type=_TYPES[base], default=None, metavar=base.upper(),
                               help=f"(default {default})")


def _run_dir_checkpoint(path: str) -> Path:
    p = Path(path)
    return p / "best.pt" if p.is_dir() and (p / "best.pt").exists() else (p / "last.pt" if p.is_dir() else p)


def build_parser() -> argparse.ArgumentParser:
    from lmlib.model import GPTConfig
    from lmlib.run import PRESETS
    from lmlib.trainer import TrainConfig

    parser = argparse.ArgumentParser(prog="lmlib", description="Train and inspect small GPT language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on the synthetic corpus, Tiny Shakespeare or a text file")
    t.add_argument("data", help="'synthetic', 'shakespeare', a UTF-8 text file, or a token file (.bin)")
    t.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe; other flags override it")
    t.add_argument("--tokenizer", choices=["char", "word"], default="char", help="for text files (default char)")
    t.add_argument("--n-tokens", type=int, help="synthetic corpus size in tokens (default 200000)")
    t.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic corpus")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="share of tokens held out for validation (default: the preset's, else 0.2)")
    t.add_argument("--holdout", action="append", default=[], help="synthetic sentence kept out of training")
    t.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    _add_dataclass_flags(t, GPTConfig, skip={"vocab_size"})
    _add_dataclass_flags(t, TrainConfig, skip=set())

    g = sub.add_parser("generate", help="sample text from a trained model")
    g.add_argument("checkpoint", help="a .pt file or a run directory (uses best.pt)")
    g.add_argument("--prompt", default="\n")
    g.add_argument("--max-new-tokens", type=int, default=300)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--top", type=int, default=0, help="instead of sampling, show the N likeliest next tokens")

    e = sub.add_parser("evaluate", help="loss, perplexity and accuracy of a checkpoint on a split")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="text or token file (default: the data the model was trained on, if synthetic)")
    e.add_argument("--split", choices=["train", "val"], default="val")
    e.add_argument("--val-fraction", type=float, default=None,
                   help="default: the training run's own split if --data is its data, else 0.2")
    e.add_argument("--batch-size", type=int, default=32)

    r = sub.add_parser("report", help="summarise a run's training_metrics.json")
    r.add_argument("run_dir", nargs="?", default="checkpoints")
    pl = sub.add_parser("plot", help="redraw training_curve.png and loss_by_epoch.png from the metrics file")
    pl.add_argument("run_dir", nargs="?", default="checkpoints")
    tk = sub.add_parser("tokenize", help="tokenize a text file once into a token file (.bin + .json)")
    tk.add_argument("text_file")
    tk.add_argument("--out", help="output path without suffix (default: next to the text file)")
    tk.add_argument("--tokenizer", choices=["char", "word"], default="char")
    return parser


def cmd_train(a: argparse.Namespace) -> int:
    from lmlib.model import GPTConfig
    from lmlib.run import PRESETS, load_data, train
    from lmlib.trainer import TrainConfig

    val_fraction = a.val_fraction
    if val_fraction is None:
        val_fraction = PRESETS.get(a.preset or "", {}).get("val_fraction", 0.2)
    data = load_data(a.data, tokenizer=a.tokenizer, n_tokens=a.n_tokens, seed=a.data_seed,
                     val_fraction=val_fraction, holdout=a.holdout)
    keys = {f.name for f in fields(GPTConfig)} | {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in vars(a).items() if k in keys and v is not None}
    result = train(data, preset=a.preset, resume=a.resume, **settings)
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

    model, tok, _ = load_model(_run_dir_checkpoint(a.checkpoint))
    prompt = a.prompt.encode().decode("unicode_escape") if "\\" in a.prompt else a.prompt
    if a.top:
        for token, p in next_token_distribution(model, tok, prompt, a.top):
            print(f"{token!r:>16}  {p:.4f}")
    else:
        print(generate(model, tok, prompt, a.max_new_tokens, a.temperature, a.top_k, seed=a.seed))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    import numpy as np

    from lmlib import data as D
    from lmlib.checkpoint import load_model
    from lmlib.evaluate import estimate_loss

    model, tok, state = load_model(_run_dir_checkpoint(a.checkpoint))
    if a.data:
        path = Path(a.data)
        if path.suffix in (".bin", ".json"):
            tf = D.load_token_file(path)
            if tf.tokenizer.to_dict() != tok.to_dict():
                raise LmlibError(f"{path} was tokenized with another vocabulary than the model's")
            tokens = tf.tokens
        else:  # encode with the model's own tokenizer, in a scratch folder
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                tokens = np.array(D.tokenize_file(path, Path(tmp) / "eval", tokenizer=tok).tokens)
    elif state.get("data_name", "").startswith("synthetic"):
        raise LmlibError("pass --data: the synthetic corpus settings are not stored in the checkpoint")
    else:
        raise LmlibError("pass --data with the text or token file to evaluate on")
    n_train = state.get("data_train_tokens", -1)
    if a.val_fraction is None and n_train + state.get("data_val_tokens", -1) == len(tokens):
        train, val = tokens[:n_train], tokens[n_train:]  # the same data: the run's own split
    else:
        train, val = D.split_tokens(np.asarray(tokens), 0.2 if a.val_fraction is None else a.val_fraction)
    split = val if a.split == "val" else train
    r = estimate_loss(model, split, a.batch_size, model.config.block_size, max_batches=None)
    print(f"{a.split}: loss {r['loss']:.4f}  perplexity {r['perplexity']:.2f}"
          f"  accuracy {r['accuracy']:.3f}  ({r['tokens']:,} tokens)")
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


def cmd_tokenize(a: argparse.Namespace) -> int:
    from lmlib import data as D

    tf = D.tokenize_file(a.text_file, a.out, kind=a.tokenizer)
    print(f"{tf.meta['n_tokens']:,} tokens, vocabulary {tf.meta['vocab_size']} -> {tf.bin_path}")
    return 0


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "evaluate": cmd_evaluate,
            "report": cmd_report, "plot": cmd_plot, "tokenize": cmd_tokenize}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LmlibError as e:
        print(f"lmlib {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
