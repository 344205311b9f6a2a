"""Small shared builders for the library tests."""

import numpy as np
import torch

from lmlib.data import TokenData
from lmlib.tokenizers import CharTokenizer

TEXT = "the cat sat on the mat. the dog sat on the rug. hello world. " * 40


def char_data(text: str = TEXT, val_fraction: float = 0.2) -> TokenData:
    tok = CharTokenizer.fit(text)
    ids = np.asarray(tok.encode(text), dtype=np.uint16)
    n = int(len(ids) * (1 - val_fraction))
    return TokenData(train=ids[:n], val=ids[n:], tokenizer=tok, name="test", meta={})


TINY = dict(block_size=16, n_layer=1, n_head=2, n_embd=16, batch_size=8, eval_batches=2,
            log_interval=2, eval_interval=4, progress=False)


class InterruptAt:
    """A callback: a Ctrl-C right after the metrics entry of `step` (which need not be an evaluation)."""

    def __init__(self, step):
        self.step, self.fired = step, False

    def __call__(self, m):
        if m["steps"][-1] == self.step and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def same_weights(a, b):
    """Two state dicts hold bit-identical tensors."""
    return all(torch.equal(a[k], b[k]) for k in a)
