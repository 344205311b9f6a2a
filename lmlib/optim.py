"""Optimisation: parameter groups, a from-scratch AdamW, Muon, and the learning-rate schedule.

The trainer uses `torch.optim.AdamW` for speed; `AdamW` below is the same algorithm
written out to be read, and the tests check that the two agree step for step.
`MuonWithAdamW` pairs `torch.optim.Muon` (for the blocks' weight matrices) with
AdamW (for everything else) behind one optimizer's interface.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

from lmlib.config import SCHEDULES
from lmlib.errors import LmlibError


def lr_at(
    step: int,
    max_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    schedule: str = "cosine",
) -> float:
    """Learning rate for the update at `step` (0-based) of a `total_steps` run.

    Linear warm-up from max_lr/warmup_steps to max_lr over the first `warmup_steps`
    updates, then a decay to `min_lr` that reaches the floor exactly on the last step:
    cosine (half a cosine wave), linear, or constant (no decay).
    """
    if schedule not in SCHEDULES:
        raise LmlibError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        # Early gradients are large and Adam's variance estimate is still poor:
        # small first steps keep them from throwing the weights far off.
        return max_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return max_lr
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)  # 0 -> 1
    if schedule == "linear":
        return max_lr + (min_lr - max_lr) * progress
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed group (matrices of Linear layers) and the rest.

    Weight decay pulls weights towards zero; that regularises the big matrices that
    mix features, but on biases, LayerNorm gains and embeddings it only hurts (a
    norm's gain of 1 is not "large", and rare tokens' embeddings would shrink away).
    """
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay = {
        id(m.weight) for m in model.modules()
        if isinstance(m, nn.Linear) and id(m.weight) not in no_decay
    }
    seen: set[int] = set()
    groups: dict[bool, list[nn.Parameter]] = {True: [], False: []}
    for p in model.parameters():  # parameters() yields a tied weight only once
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        groups[id(p) in decay].append(p)
    return [
        {"params": groups[True], "weight_decay": weight_decay},
        {"params": groups[False], "weight_decay": 0.0},
    ]


class AdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter, 2019), one readable line per idea.

    For every parameter w with gradient g, at step t:
        m = b1*m + (1-b1)*g              momentum: a running mean of gradients
        v = b2*v + (1-b2)*g*g            a running mean of squared gradients
        m_hat = m / (1 - b1**t)          bias correction: m and v start at 0
        v_hat = v / (1 - b2**t)
        w = w - lr*wd*w                  decoupled weight decay (not via g)
        w = w - lr * m_hat / (sqrt(v_hat) + eps)
    Dividing by sqrt(v_hat) gives every parameter its own step size: ones with
    consistently large gradients move no faster than ones with small gradients.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                state = self.state[w]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(w)
                    state["exp_avg_sq"] = torch.zeros_like(w)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - b1)                       # m = b1*m + (1-b1)*g
                v.mul_(b2).addcmul_(g, g, value=1 - b2)  # v = b2*v + (1-b2)*g^2
                w.mul_(1 - lr * wd)                      # decoupled weight decay
                step_size = lr / (1 - b1**t)
                denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                w.addcdiv_(m, denom, value=-step_size)
        return loss


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(matrices for Muon, everything else): the 2-D weights inside the transformer blocks.

    Muon orthogonalises a matrix's update, which only means something for a matrix that
    maps one hidden space to another. Embeddings (a lookup table, here tied to the output
    head), LayerNorm gains and biases stay with AdamW, as in Muon's reference recipe.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise LmlibError("the muon optimizer needs a GPT-style model with `blocks`")
    in_blocks = {id(p) for p in blocks.parameters() if p.ndim == 2 and p.requires_grad}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matrices = [p for p in model.parameters() if id(p) in in_blocks and id(p) not in embeddings]
    chosen = {id(p) for p in matrices}
    return matrices, [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]


class MuonWithAdamW:
    """Two optimizers behind one: `torch.optim.Muon` for the matrices, AdamW for the rest.

    It exposes what the trainer uses (`param_groups`, `step`, `zero_grad`, `state_dict`,
    `load_state_dict`): setting a group's "lr" reaches both optimizers, so one schedule
    drives both, and a checkpoint holds both states. Muon runs with
    adjust_lr_fn="match_rms_adamw" (Moonshot's scaling, 0.2*sqrt(max(rows, cols))), which
    gives its updates about the RMS of AdamW's, so the same learning rate suits both.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw

    @property
    def optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return self.muon, self.adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise LmlibError("this optimizer state is not a muon run's (it lacks the muon and adamw parts)")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def build_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.1,
    eps: float = 1e-8,
    momentum: float = 0.0,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """`adamw` (torch's, fastest), `adamw-scratch` (the class above), `sgd` or `muon`.

    `muon`: `torch.optim.Muon` (momentum 0.95, Nesterov, weight decay `weight_decay`)
    for the weight matrices of the blocks, AdamW for the rest, as one `MuonWithAdamW`.

    `fused` (default: when every parameter is on a CPU or CUDA device) makes torch's
    AdamW update all parameters in one kernel instead of a dozen small operations per
    tensor. It is the same update, rounded in a slightly different order.
    """
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    if name == "muon":
        if not hasattr(torch.optim, "Muon"):  # pyproject's floor says 2.9; an older torch installed anyway
            raise LmlibError(f"optimizer muon needs torch 2.9 or later (torch.optim.Muon), this is {torch.__version__}:"
                             " upgrade torch or use optimizer adamw")
        matrices, rest = muon_split(model)
        decay = {id(p) for p in param_groups(model, weight_decay)[0]["params"]}
        adamw_groups = [
            {"params": [p for p in rest if id(p) in decay], "weight_decay": weight_decay},
            {"params": [p for p in rest if id(p) not in decay], "weight_decay": 0.0},
        ]
        adamw_groups = [g for g in adamw_groups if g["params"]]
        muon = torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, fused=fused)
        return MuonWithAdamW(muon, adamw)
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
    if name == "adamw-scratch":
        return AdamW(groups, lr=lr, betas=betas, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise LmlibError(f"unknown optimizer {name!r}: choose adamw, adamw-scratch, sgd or muon")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
