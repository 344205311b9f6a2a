"""One-call training: the functions that the CLI and the book's notebooks share.

    data = load_data("synthetic", n_tokens=200_000)
    result = train(data, out_dir="checkpoints", max_steps=500)

`train` builds the model, runs the Trainer and leaves the three artifacts in
`out_dir`: training_metrics.json, training_curve.png and loss_by_epoch.png.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from lmlib import data as D
from lmlib.errors import LmlibError
from lmlib.model import GPTConfig
from lmlib.trainer import Callback, TrainConfig, Trainer, TrainResult

# What the Tiny Shakespeare presets share: nanoGPT's split (the last 10% validates),
# context, optimizer settings and bias-free layers.
_SHAKESPEARE_CHAR = dict(block_size=64, bias=False, beta2=0.99, weight_decay=0.1, grad_clip=1.0,
                         eval_batches=20, val_fraction=0.1)

# Named recipes: model settings plus training settings (and `val_fraction`, the share
# of the data that `lmlib train` holds out when the preset is used from the CLI).
PRESETS: dict[str, dict] = {
    # A few seconds on a laptop CPU: for tests and first experiments.
    "tiny": dict(block_size=32, n_layer=2, n_head=2, n_embd=32, batch_size=16, max_steps=200,
                 lr=3e-3, eval_interval=50, eval_batches=4),
    # The synthetic corpus: about half a minute on 2 CPU cores to get near its entropy.
    "synthetic-cpu": dict(block_size=64, n_layer=2, n_head=4, n_embd=64, batch_size=32,
                          max_steps=1500, lr=3e-3, warmup_steps=100, eval_interval=250, eval_batches=20),
    # nanoGPT's documented CPU recipe for character-level Tiny Shakespeare, to compare with.
    "shakespeare-char-nanogpt": dict(**_SHAKESPEARE_CHAR, n_layer=4, n_head=4, n_embd=128, batch_size=12,
                                     max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                                     eval_interval=250),
    # Tuned for a small CPU budget (bench/time_to_quality.py): nanoGPT's validation loss
    # in a fraction of its time. With little compute, a shallow model making many
    # quick updates at a high learning rate beats a deeper one making fewer.
    "shakespeare-char-cpu": dict(**_SHAKESPEARE_CHAR, n_layer=1, n_head=4, n_embd=128, batch_size=16,
                                 max_steps=1000, lr=6e-3, min_lr=6e-4, warmup_steps=50, eval_interval=250),
    # The same idea with a wider layer and four times the steps: about 100 s on 2 cores.
    "shakespeare-char-cpu-long": dict(**_SHAKESPEARE_CHAR, n_layer=1, n_head=6, n_embd=192, batch_size=16,
                                      max_steps=3900, lr=5e-3, min_lr=5e-4, warmup_steps=50,
                                      eval_interval=500),
    # nanoGPT's GPU recipe for character-level Tiny Shakespeare (6 layers, width 384,
    # context 256, dropout 0.2), shortened to 2,500 steps: for one GPU (bench/gpu_check.sh).
    "shakespeare-char-gpu": dict(**{**_SHAKESPEARE_CHAR, "block_size": 256}, n_layer=6, n_head=6, n_embd=384,
                                 dropout=0.2, batch_size=64, max_steps=2500, lr=1e-3, min_lr=1e-4,
                                 warmup_steps=100, eval_interval=250),
}
DATA_KEYS = {"val_fraction"}

MODEL_KEYS = {f.name for f in fields(GPTConfig)} - {"vocab_size"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def load_data(
    source: str = "synthetic",
    *,
    tokenizer: str = "char",
    n_tokens: int | None = None,
    seed: int = 0,
    val_fraction: float = D.DEFAULT_VAL_FRACTION,
    holdout: Sequence[str] = (),
    cache_dir: str | Path | None = None,
) -> D.TokenData:
    """`synthetic` (the built-in corpus, word level), `shakespeare` (downloaded once and
    cached), a token file (`.bin` with its `.json` sidecar), any UTF-8 text file, or
    documents: a folder of text files or a `.jsonl` file, with `<|endoftext|>` after each
    document (`lmlib.data.prepare_text`).
    """
    if source == "synthetic":
        return D.synthetic_data(n_tokens=n_tokens or 200_000, seed=seed,
                                val_fraction=val_fraction, holdout=holdout)
    if source == "shakespeare":
        from lmlib.download import download_tiny_shakespeare

        source = str(download_tiny_shakespeare())
    path = Path(source)
    if path.suffix == ".bin" or (path.suffix == ".json" and path.with_suffix(".bin").exists()):
        tf = D.load_token_file(path.with_suffix(".bin"))
        train, val = D.split_tokens(tf.tokens, val_fraction)
        return D.TokenData(train=train, val=val, tokenizer=tf.tokenizer, name=path.stem, meta=tf.meta)
    return D.prepare_text(path, kind=tokenizer, cache_dir=cache_dir, val_fraction=val_fraction)


def text_data(text: str, kind: str = "char", val_fraction: float = D.DEFAULT_VAL_FRACTION, name: str = "text") -> D.TokenData:
    """A dataset from a string already in memory (fits the tokenizer on it)."""
    from lmlib.tokenizers import tokenizer_class

    if not text:
        raise LmlibError("the text is empty: give some text to train on")
    tokenizer = tokenizer_class(kind).fit(text)
    train, val = D.split_tokens(tokenizer.encode_array(text), val_fraction)
    return D.TokenData(train=train, val=val, tokenizer=tokenizer, name=name, meta={"chars": len(text)})


def split_overrides(overrides: dict) -> tuple[dict, dict]:
    """Split keyword settings into model ones and training ones; reject unknown names."""
    unknown = set(overrides) - MODEL_KEYS - TRAIN_KEYS - DATA_KEYS  # data keys act before training
    if unknown:
        raise LmlibError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return ({k: v for k, v in overrides.items() if k in MODEL_KEYS},
            {k: v for k, v in overrides.items() if k in TRAIN_KEYS})


def train(
    data: D.TokenData,
    *,
    preset: str | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool | str | Path = False,
    extend: bool = False,
    plots: bool = True,
    **settings,
) -> TrainResult:
    """Train a GPT on `data`; any GPTConfig or TrainConfig field can be given by name.

    Settings come from the `preset` first, then from the keywords. With `plots`, the
    PNGs are (re)drawn from the metrics file when the run ends, however it ends (by
    rank 0 only, under torchrun). `resume` continues `out_dir/last.pt` (or the given
    checkpoint) with the same settings; `extend=True` with it lets a run grow longer
    (a larger `max_steps` or `epochs`): the learning rate keeps the original run's
    schedule and then holds at its floor.
    """
    if DATA_KEYS & set(settings):
        raise LmlibError("val_fraction is a data setting: pass it to load_data(), which splits the data")
    merged: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise LmlibError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        merged.update(PRESETS[preset])
    merged.update(settings)
    model_kw, train_kw = split_overrides(merged)
    model_cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, **model_kw)
    trainer = Trainer(model_cfg, data, TrainConfig(**train_kw), callbacks=callbacks)
    out = Path(trainer.config.out_dir)
    try:
        result = trainer.fit(resume=resume, extend=extend)
    finally:
        if plots and trainer.dist.is_main and (out / "training_metrics.json").exists():
            from lmlib.plots import write_plots  # matplotlib only when drawing

            write_plots(out)
        trainer.dist.close()
    return result


def config_summary(result: TrainResult) -> dict:
    """The run's model and training settings, as plain dicts."""
    cfg = result.metrics["config"]
    return {"model": cfg["model"], "train": cfg["train"], "data": cfg["data"]}

