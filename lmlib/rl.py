"""Beyond SFT: reinforcement learning with the exact reward of the answer key.

    history = reinforce(model, tokenizer, make_examples(300, "train"), steps=200)

After supervised fine-tuning the model answers in the right format, but it was only
ever shown one correct answer per question; it was never told which of *its own*
answers are right. Here it is. For each question the model samples `k` answers at
temperature 1; each gets the reward 1 if the answer key (`lmlib.instruct.score`)
accepts it, else 0. The loss pushes up the log-probability of the answers that
did better than the group's mean and pushes down the others:

    advantage_i = reward_i - mean(rewards of the same question)
    loss        = - mean_i( advantage_i * log p(answer_i | prompt) )

This is REINFORCE with a per-question baseline, the simplification of GRPO that
nanochat uses: no value network, no KL penalty against a reference model, no
ratio clipping (each batch of samples is used for exactly one update, so the
policy that sampled them is the one being updated). A question the model always
(or never) gets right has zero advantage everywhere and teaches nothing: the
signal comes from the questions it sometimes gets right.

The reward is exact because the synthetic language has an answer key; there is no
reward model to fool. `reinforce` is not resumable: it is a short loop over an
in-memory model (save the model yourself with `lmlib.checkpoint` if you need to).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmlib.evaluate import continuation_logprobs, generate_ids
from lmlib.instruct import END, Example, prompt_ids, score
from lmlib.tokenizers import Tokenizer


def reward(answer: list[int], example: Example, tokenizer: Tokenizer) -> float:
    """1.0 if `answer` (ids, with or without the closing <|end|>) is a correct,
    finished answer to `example`, else 0.0. An answer cut off before <|end|> earns nothing."""
    end = tokenizer.special_ids[END]
    if answer[-1:] != [end]:
        return 0.0
    return score([answer[:-1]], [example], tokenizer)["accuracy"]


def sample_answers(model, tokenizer: Tokenizer, example: Example, k: int, generator: torch.Generator,
                   temperature: float = 1.0, max_new_tokens: int = 12) -> list[list[int]]:
    """`k` answers (ids, ending with <|end|> when the model stopped) sampled from the model."""
    end = tokenizer.special_ids[END]
    prompt = prompt_ids(tokenizer, example.prompt)
    return [generate_ids(model, prompt, max_new_tokens, temperature=temperature, generator=generator,
                         stop_ids=[end]) for _ in range(k)]


def reinforce_step(model, optimizer: torch.optim.Optimizer, tokenizer: Tokenizer, examples: Sequence[Example],
                   k: int, generator: torch.Generator, max_new_tokens: int = 12) -> dict:
    """One update on `examples` (k samples each). Returns {"reward": mean reward, "loss": ...}."""
    prompts, answers, advantages, rewards = [], [], [], []
    model.eval()  # sampling: no dropout
    for ex in examples:
        group = sample_answers(model, tokenizer, ex, k, generator, max_new_tokens=max_new_tokens)
        r = np.array([reward(a, ex, tokenizer) for a in group])
        rewards.extend(r)
        for a, adv in zip(group, r - r.mean(), strict=True):
            if adv != 0:  # zero advantage, zero gradient: skip the forward pass
                prompts.append(prompt_ids(tokenizer, ex.prompt))
                answers.append(a)
                advantages.append(adv)
    loss = torch.zeros(())
    if answers:
        model.train()
        adv = torch.tensor(advantages, dtype=torch.float32, device=next(model.parameters()).device)
        loss = -(adv * continuation_logprobs(model, prompts, answers)).sum() / (len(examples) * k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.eval()
    return {"reward": float(np.mean(rewards)), "loss": float(loss.detach())}


def reinforce(model, tokenizer: Tokenizer, train: Sequence[Example], *, steps: int = 200, k: int = 8,
              prompts_per_step: int = 4, lr: float = 1e-4, seed: int = 0, max_new_tokens: int = 12) -> list[dict]:
    """Train `model` in place with REINFORCE on `train` questions: each step draws
    `prompts_per_step` questions at random and samples `k` answers to each. AdamW
    without weight decay at a constant `lr`. Returns one {"reward", "loss"} per step."""
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    for _ in range(steps):
        batch = [train[i] for i in rng.choice(len(train), prompts_per_step, replace=False)]
        history.append(reinforce_step(model, optimizer, tokenizer, batch, k, generator, max_new_tokens))
    model.eval()
    return history
