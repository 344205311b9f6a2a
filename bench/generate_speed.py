"""Generation with and without the key/value cache, side by side in one run.

    python bench/generate_speed.py [--n-layer 4 --n-embd 256 --block-size 256 --new-tokens 200]

A randomly initialised GPT (speed does not depend on what it learned) continues a
16-token prompt; each way is timed alternately (`--repeats` pairs, CPU time of this
process, so another job on the machine does not count), and both must produce the
same greedy tokens. A second case generates past the context length, where every
position shifts at each step and the cache must be rebuilt (`lmlib.evaluate.generate_ids`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import append_result, table  # noqa: E402
from lmlib.evaluate import generate_ids  # noqa: E402
from lmlib.model import GPT, GPTConfig  # noqa: E402


def timed(model: GPT, prompt: list[int], n: int, cache: bool) -> tuple[float, list[int]]:
    start = time.process_time()
    ids = generate_ids(model, prompt, n, temperature=0, cache=cache)
    return time.process_time() - start, ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true", help="do not append a row to bench/RESULTS.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=a.vocab_size, block_size=a.block_size, n_layer=a.n_layer, n_head=4, n_embd=a.n_embd)
    model = GPT(cfg).eval()
    prompt = torch.randint(a.vocab_size, (16,)).tolist()
    cases = {"within the context": min(a.new_tokens, a.block_size - len(prompt)),
             "past the context": a.block_size + a.new_tokens // 2}
    rows, figures = [], []
    for name, n in cases.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        for _ in range(a.repeats):
            for cache in (True, False):
                seconds, outputs[cache] = timed(model, prompt, n, cache)
                times[cache].append(seconds)
        same = outputs[True] == outputs[False]
        with_cache, without = statistics.median(times[True]), statistics.median(times[False])
        rows.append((name, n, f"{n / with_cache:,.0f}", f"{n / without:,.0f}", f"{without / with_cache:.2f}x", same))
        figures.append(f"{name} ({n} tokens): {n / with_cache:,.0f} vs {n / without:,.0f} tok/CPU-s, "
                       f"{without / with_cache:.2f}x, same greedy tokens: {same}")
    print(table(rows, ("case", "new tokens", "cache tok/s", "no cache tok/s", "speed-up", "same tokens")))
    if not all(r[-1] for r in rows):
        sys.exit("the cache changed the greedy tokens")
    if not a.no_record:
        append_result("generate", f"{a.n_layer}x{a.n_embd}, context {a.block_size}, {a.threads} thread(s), median of "
                      f"{a.repeats}: " + "; ".join(figures))


if __name__ == "__main__":
    main()
