"""After pretraining: SFT, its loss mask, what pretraining buys, forgetting, and REINFORCE.

    python experiments/post_training.py      # writes experiments/post_training.json

One small base model (2 layers, width 64, context 48) pretrained on 200,000 synthetic
tokens (`base`), then, each scored with the exact answer key on 300 held-out test
questions (`lmlib.instruct`):

(The questions of a test split use words that no training question uses:
`lmlib.instruct.WORD_SPLIT`.)

1. `format`: the base model on the chat template, before any fine-tuning.
2. `mask`: SFT with the loss on the response only, and on the whole exchange.
3. `sizes`: SFT from the pretrained weights and from random weights, at equal
   fine-tuning steps (STEPS), on several numbers of training examples, SEEDS seeds.
4. `forgetting`: the loss on the pretraining validation split, before SFT and after
   SFT of 1x and LONG x the standard number of steps, against the corpus's floor;
   `language`: the same with the softmax over the base vocabulary only (first 200 windows).
5. `rl`: REINFORCE (`lmlib.rl`) from the standard SFT model, RL_SEEDS seeds:
   accuracy before and after.

One thread; the JSON records CPU and wall time. The file is rewritten after every
part, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmlib.checkpoint import load_model  # noqa: E402
from lmlib.evaluate import estimate_loss  # noqa: E402
from lmlib.finetune import extend_vocabulary, finetune, language_loss  # noqa: E402
from lmlib.instruct import answer_accuracy, chat_tokenizer, make_examples  # noqa: E402
from lmlib.rl import reinforce  # noqa: E402
from lmlib.run import load_data, train  # noqa: E402

OUT = ROOT / "experiments" / "post_training.json"
BASE = dict(max_steps=600, block_size=48, n_layer=2, n_head=4, n_embd=64, batch_size=32, lr=3e-3,
            warmup_steps=50, eval_interval=100, progress=False, plots=False)
N_TOKENS = 200_000
N_TRAIN, N_TEST, BATCH = 1500, 300, 16
STEPS = 8 * N_TRAIN // BATCH  # 8 epochs of the standard set: 744 steps
SFT = dict(lr=1e-3, batch_size=BATCH, eval_interval=100, progress=False, plots=False)
SIZES, SEEDS = (150, 500, 1500), (0, 1)
LONG = 3
RL = dict(steps=100, k=8, prompts_per_step=4, lr=1e-4)
RL_SEEDS = (0, 1)


def sft(base, n_train, out, seed=0, epochs=None, **kw):
    """Fine-tune `base` on n_train examples for STEPS steps (or `epochs`); (model, tokenizer, metrics)."""
    tr = make_examples(n_train, "train", seed=seed)
    va, te = make_examples(150, "val"), make_examples(N_TEST, "test")
    epochs = epochs or max(1, round(STEPS * BATCH / n_train))
    r = finetune(base, tr, va, test=te, out_dir=out, epochs=epochs, seed=seed, **SFT, **kw)
    model, tok, _ = load_model(Path(out) / "best.pt")
    return model, tok, {"accuracy": r.metrics["answer_key"]["accuracy"], "by_kind": r.metrics["answer_key"]["by_kind"],
                        "steps": r.steps, "epochs": epochs}


def main() -> None:
    torch.set_num_threads(1)
    t0, c0 = time.time(), time.process_time()
    res: dict = {"meta": {"base": {**BASE, "n_tokens": N_TOKENS}, "n_train": N_TRAIN, "n_test": N_TEST,
                          "steps": STEPS, "sft": SFT, "rl": RL, "machine": platform.processor() or platform.machine()}}

    def save():
        res["meta"].update(cpu_s=round(time.process_time() - c0, 1), wall_s=round(time.time() - t0, 1))
        OUT.write_text(json.dumps(res, indent=1) + "\n")

    tmp = Path(tempfile.mkdtemp())
    data = load_data("synthetic", n_tokens=N_TOKENS)
    base = tmp / "base"
    train(data, out_dir=str(base), **BASE)
    model, tok, _ = load_model(base / "best.pt")
    floor = data.corpus.expected_optimal_loss(BASE["block_size"])
    val_loss = lambda m: estimate_loss(m, data.val, 32, BASE["block_size"])["loss"]  # noqa: E731

    # 1. the base model on the chat template (new tokens at the mean embedding)
    chat = chat_tokenizer(tok)
    res["format"] = answer_accuracy(extend_vocabulary(model, chat.vocab_size), chat, make_examples(N_TEST, "test"))
    lang_loss = lambda m: language_loss(m, data.val, tok.vocab_size, BASE["block_size"])  # noqa: E731
    res["forgetting"] = {"floor": floor, "base": val_loss(model), "language": {"base": lang_loss(model)}}
    save()

    # 2. the loss mask; 4. forgetting after the standard SFT and a LONG one
    res["mask"] = {}
    std_model, tok, res["mask"]["response"] = sft(base, N_TRAIN, tmp / "sft")
    _, _, res["mask"]["all"] = sft(base, N_TRAIN, tmp / "all", loss_on="all")
    res["forgetting"]["sft"] = val_loss(std_model)
    res["forgetting"]["language"]["sft"] = lang_loss(std_model)
    long_model, _, long = sft(base, N_TRAIN, tmp / "long", epochs=LONG * STEPS * BATCH // N_TRAIN)
    res["forgetting"].update(long=val_loss(long_model), long_steps=long["steps"], long_accuracy=long["accuracy"])
    res["forgetting"]["language"]["long"] = lang_loss(long_model)
    save()

    # 5. REINFORCE from the standard SFT model
    test, rl_train = make_examples(N_TEST, "test"), make_examples(N_TRAIN, "train")
    res["rl"] = {"before": answer_accuracy(std_model, tok, test), "after": []}
    for seed in RL_SEEDS:
        model = load_model(tmp / "sft" / "best.pt")[0]
        history = reinforce(model, tok, rl_train, seed=seed, **RL)
        res["rl"]["after"].append({"seed": seed, **answer_accuracy(model, tok, test),
                                   "reward": [h["reward"] for h in history]})
        save()

    # 3. pretrained vs random weights, equal steps, several data sizes
    res["sizes"] = []
    for n in SIZES:
        for seed in SEEDS:
            for init in ("pretrained", "random"):
                if (n, seed, init) == (N_TRAIN, 0, "pretrained"):  # the standard run, done above
                    r = res["mask"]["response"]
                else:
                    _, _, r = sft(base, n, tmp / f"{init}{n}_{seed}", seed=seed, random_init=init == "random")
                res["sizes"].append({"n": n, "seed": seed, "init": init, **r})
                save()
                print(n, seed, init, r["accuracy"], flush=True)


if __name__ == "__main__":
    main()
