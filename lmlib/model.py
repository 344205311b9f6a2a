"""A GPT-style decoder-only transformer.

The model maps a batch of token ids (B, T) to next-token logits (B, T, V). It knows
nothing about data, tokenizers or training: those live in other modules.

Shapes in comments: B batch, T time (context length), C channels (n_embd),
H heads, D = C // H head size, V vocabulary size, P positions already in a
`KVCache`.

`forward` is what training and evaluation run. `decode` is the same computation
for generation, token by token, reusing the keys and values of earlier positions
from a `KVCache` instead of recomputing them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmlib.errors import LmlibError

#: The MLP's nonlinearity: F.gelu exactly, or its tanh approximation (what GPT-2 was trained with).
ACTIVATIONS = ("gelu", "gelu_tanh")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 64  # the longest context the model can see
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms
    activation: str = "gelu"  # gelu (exact, erf) | gelu_tanh (its tanh approximation: GPT-2's "gelu_new")

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) <= 0:
                raise LmlibError(f"model {name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise LmlibError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.activation not in ACTIVATIONS:
            raise LmlibError(f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise LmlibError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


#: The GPTConfig fields a user sets by name (the vocabulary size comes from the tokenizer).
MODEL_KEYS = frozenset(f.name for f in fields(GPTConfig)) - {"vocab_size"}


class KVCache:
    """The keys and values of the positions seen so far, one (B, H, P, D) pair per layer.

    When generating, each new token attends to every earlier one, but the earlier
    tokens' keys and values never change (a position never looks ahead). Keeping them
    turns each step's pass over the whole context into a pass over the new token.
    """

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    @property
    def length(self) -> int:
        """P: the number of positions cached."""
        k = self.keys[0]
        return 0 if k is None else k.size(2)

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's (B, H, T, D) keys and values; return all of them, (B, H, P + T, D)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, H, T, D): each head attends independently
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        # is_causal masks the future: position t may only look at positions <= t,
        # which is what makes next-token prediction an honest task.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads
        return self.resid_drop(self.proj(y))

    def decode(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """`forward` for T new positions after the P in `cache` (inference only, no dropout)."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        k, v = cache.extend(layer, k, v)  # (B, H, P + T, D)
        P = k.size(2) - T
        # New position i may look at keys 0 .. P + i; a single new token sees them all.
        mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P) if T > 1 else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = "tanh" if cfg.activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln(x)), then x + mlp(ln(x)).

    Normalising *before* each sub-layer keeps the residual stream an untouched sum,
    which is what lets deep stacks train without careful warm-up tricks.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, trace: dict | None = None) -> torch.Tensor:
        a = self.attn(self.ln1(x))
        x = x + a
        m = self.mlp(self.ln2(x))
        x = x + m
        if trace is not None:
            trace["attention"].append(a.detach())
            trace["ffn"].append(m.detach())
            trace["residual"].append(x.detach())
        return x

    def decode(self, x: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        x = x + self.attn.decode(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Weight tying: the same matrix embeds a token and scores it as an output.
        # It saves V*C parameters and makes "similar input" mean "similar output".
        self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by
        # 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small weights give near-equal logits, so an untrained model spreads its
        # probability evenly: its loss starts close to ln(vocab_size).
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (tied weights counted once)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.pos_emb.weight.numel() + self.tok_emb.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        trace: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits (B, T, V), mean cross-entropy loss or None).

        Pass an empty dict as `trace` to collect intermediate values
        (see `GPT.trace`).
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise LmlibError(
                f"input has {T} tokens but the model's context is {self.config.block_size}"
            )
        pos = torch.arange(T, device=idx.device)
        tok = self.tok_emb(idx)  # (B, T, C) what each token is
        x = self.drop(tok + self.pos_emb(pos))  # (B, T, C) plus where it is
        if trace is not None:
            trace.update(token_embedding=tok.detach(), position_embedding=self.pos_emb(pos).detach(),
                         input=x.detach(), attention=[], ffn=[], residual=[])
        for block in self.blocks:
            x = block(x, trace)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V) a score for every possible next token
        if trace is not None:
            trace["logits"] = logits.detach()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def decode(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, T, V) for tokens `idx` that follow the `cache.length` positions in `cache`.

        The same numbers as `forward` on the whole sequence (up to rounding), for the
        cost of the new tokens only; the cache grows by T positions.
        """
        P, T = cache.length, idx.size(1)
        if P + T > self.config.block_size:
            raise LmlibError(f"input has {P + T} tokens but the model's context is {self.config.block_size}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(P, P + T, device=idx.device))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block.decode(x, cache, i)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def trace(self, idx: torch.Tensor) -> dict:
        """Intermediate values for one forward pass, for looking inside the model.

        Keys: token_embedding, position_embedding, input (B, T, C); attention, ffn,
        residual (lists with one (B, T, C) tensor per block: what attention and the
        feed-forward network added, and the residual stream after the block);
        logits (B, T, V); probs (B, T, V).
        """
        trace: dict = {}
        logits, _ = self(idx, trace=trace)
        trace["probs"] = F.softmax(logits.float(), dim=-1)
        return trace


def check_compatible(cfg: GPTConfig, vocab_size: int, block_size: int | None = None) -> None:
    """Raise a clear error when a model config does not fit a tokenizer / context."""
    if cfg.vocab_size != vocab_size:
        raise LmlibError(
            f"model vocabulary is {cfg.vocab_size} but the tokenizer has {vocab_size} symbols:"
            " use the checkpoint's own tokenizer or train a new model"
        )
    if block_size is not None and block_size > cfg.block_size:
        raise LmlibError(f"context {block_size} exceeds the model's block_size {cfg.block_size}")
