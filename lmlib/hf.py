"""Hugging Face interop: a trained run as a GPT-2 folder, and a GPT-2 folder as an lmlib model.

lmlib's model *is* GPT-2's architecture (pre-LayerNorm blocks, learned positions, fused
q/k/v, tied output layer), so a run exports without approximation:

- ``config.json``: a ``GPT2LMHeadModel`` config with ``activation_function`` "gelu" (lmlib's
  default, the exact erf-based GELU) or "gelu_new" (GPT-2's tanh approximation, lmlib's
  ``activation="gelu_tanh"``, which is how GPT-2's published weights load, see `load_gpt2`); and
  ``generation_config.json`` where the tokenizer has an end-of-text token, at which
  ``generate`` then stops.
- ``model.safetensors``: the weights under GPT-2's names. GPT-2 keeps its linear layers
  as ``Conv1D``, whose weight is the transpose of ``nn.Linear``'s; a model trained with
  ``bias=False`` gets zero biases, since GPT-2 always has them (same numbers).
- ``tokenizer.json`` (+ ``tokenizer_config.json``, ``special_tokens_map.json``), which
  ``tokenizers`` and ``AutoTokenizer`` load, and ``lmlib_tokenizer.json``, lmlib's own
  file, so that `load_gpt2` gives back exactly the tokenizer the run used.

Exporting needs ``safetensors`` (and ``tokenizers`` for a char or word tokenizer's
``tokenizer.json``), both in ``pip install lmlib[hf]``; ``transformers`` is needed only to
use the folder, never by this module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from lmlib.errors import LmlibError
from lmlib.fsutil import atomic_write, atomic_write_text
from lmlib.hf_tokenizer import EOT, tokenizer_files
from lmlib.model import GPT, GPTConfig
from lmlib.tokenizers import Tokenizer, load_tokenizer

__all__ = ["export_model", "export_run", "gpt2_config", "gpt2_state_dict", "load_gpt2"]

INSTALL = "pip install lmlib[hf]"
LMLIB_TOKENIZER = "lmlib_tokenizer.json"

# lmlib name (inside blocks.{i}) -> GPT-2 name (inside transformer.h.{i}), and whether the
# weight is stored transposed (GPT-2's Conv1D holds (in, out) where nn.Linear holds (out, in)).
_BLOCK = [
    ("ln1.weight", "ln_1.weight", False), ("ln1.bias", "ln_1.bias", False),
    ("attn.qkv.weight", "attn.c_attn.weight", True), ("attn.qkv.bias", "attn.c_attn.bias", False),
    ("attn.proj.weight", "attn.c_proj.weight", True), ("attn.proj.bias", "attn.c_proj.bias", False),
    ("ln2.weight", "ln_2.weight", False), ("ln2.bias", "ln_2.bias", False),
    ("mlp.fc.weight", "mlp.c_fc.weight", True), ("mlp.fc.bias", "mlp.c_fc.bias", False),
    ("mlp.proj.weight", "mlp.c_proj.weight", True), ("mlp.proj.bias", "mlp.c_proj.bias", False),
]
_TOP = [("tok_emb.weight", "wte.weight"), ("pos_emb.weight", "wpe.weight"),
        ("ln_f.weight", "ln_f.weight"), ("ln_f.bias", "ln_f.bias")]
# Buffers some GPT-2 files carry (the causal mask), which hold no learned numbers.
_IGNORED = re.compile(r"h\.\d+\.attn\.(masked_)?bias")


def _name_pairs(n_layer: int) -> list[tuple[str, str, bool]]:
    pairs = [(a, b, False) for a, b in _TOP]
    for i in range(n_layer):
        pairs += [(f"blocks.{i}.{a}", f"h.{i}.{b}", t) for a, b, t in _BLOCK]
    return pairs


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError:
        raise LmlibError(f"model.safetensors files need the safetensors package: {INSTALL}") from None
    return safetensors.torch


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under GPT-2's names (``transformer.h.0.attn.c_attn.weight``, ...), fp32.

    The output layer is left out: it is the token embedding (tied), as in GPT-2's own files.
    A missing bias (a ``bias=False`` model) becomes zeros, which computes the same thing.
    """
    own = model.state_dict()
    out = {}
    for ours, theirs, transpose in _name_pairs(model.config.n_layer):
        if ours in own:
            t = own[ours].detach().float().cpu()
            t = t.t() if transpose else t
        else:  # a bias the model was built without
            weight = own[ours.removesuffix("bias") + "weight"]
            t = torch.zeros(weight.shape[0])
        out["transformer." + theirs] = t.contiguous()
    return out


def gpt2_config(cfg: GPTConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """``config.json`` for ``GPT2LMHeadModel`` describing an lmlib model."""
    eot = _end_of_text_id(tokenizer)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
        "activation_function": HF_ACTIVATION[cfg.activation],
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default, which lmlib uses
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "initializer_range": 0.02,
        "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": None,
        "dtype": "float32",
    }


def _end_of_text_id(tokenizer: Tokenizer | None) -> int | None:
    return getattr(tokenizer, "special_ids", {}).get(EOT)  # (a bpe tokenizer's; char and word have none)


def export_model(model: GPT, tokenizer: Tokenizer | None, out_dir: str | Path) -> Path:
    """Write ``model`` (and ``tokenizer``) to ``out_dir`` as a Hugging Face GPT-2 folder."""
    st = _safetensors_torch()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LmlibError(f"{out} exists and is not a folder; choose another --out")
    if tokenizer is not None and tokenizer.vocab_size != model.config.vocab_size:
        raise LmlibError(f"the tokenizer has {tokenizer.vocab_size} symbols but the model {model.config.vocab_size}")
    # Everything is built before anything is written: a tokenizer that cannot be exported leaves no files.
    files: dict[str, Any] = {"config.json": gpt2_config(model.config, tokenizer)}
    eot = files["config.json"]["eos_token_id"]
    if eot is not None:  # generate() stops at the end of a document
        files["generation_config.json"] = {"bos_token_id": eot, "eos_token_id": eot}
    if tokenizer is not None:
        files.update(tokenizer_files(tokenizer, model.config.block_size))
        files[LMLIB_TOKENIZER] = tokenizer.to_dict()
    weights = st.save(gpt2_state_dict(model), metadata={"format": "pt"})
    atomic_write(out / "model.safetensors", lambda f: f.write(weights))
    for name, obj in files.items():
        atomic_write_text(out / name, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    return out


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export a trained run (best.pt, else last.pt) to ``out_dir`` as a Hugging Face GPT-2 folder."""
    from lmlib.checkpoint import load_model, run_checkpoint

    model, tokenizer, _ = load_model(run_checkpoint(run_dir))
    return export_model(model, tokenizer, out_dir)


#: lmlib's activation -> Hugging Face's name, and the names lmlib reads back.
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
LMLIB_ACTIVATION = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _check_gpt2(c: dict, path: Path) -> None:
    """Refuse, in one line, a config.json whose model lmlib's GPT cannot compute exactly."""
    def refuse(what: str) -> None:
        raise LmlibError(f"{path}: {what}, which lmlib's GPT cannot represent")

    if c.get("model_type") != "gpt2":
        refuse(f"model_type is {c.get('model_type')!r}, not 'gpt2'")
    if c.get("activation_function", "gelu_new") not in LMLIB_ACTIVATION:
        refuse(f"activation_function is {c.get('activation_function')!r} (lmlib computes {', '.join(LMLIB_ACTIVATION)})")
    if c.get("n_inner") not in (None, 4 * c["n_embd"]):
        refuse(f"n_inner is {c['n_inner']} (lmlib's MLP is 4 * n_embd wide)")
    if c.get("layer_norm_epsilon", 1e-5) != 1e-5:
        refuse(f"layer_norm_epsilon is {c['layer_norm_epsilon']} (lmlib uses 1e-5)")
    if not c.get("scale_attn_weights", True) or c.get("scale_attn_by_inverse_layer_idx", False):
        refuse("attention is scaled other than by 1/sqrt(head size)")
    if c.get("add_cross_attention", False):
        refuse("it has cross-attention")
    if not c.get("tie_word_embeddings", True):
        refuse("its output layer is not tied to the token embedding")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return _safetensors_torch().load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():  # older saves: a pickle, read without running code
        try:
            return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise LmlibError(f"{path / 'pytorch_model.bin'} cannot be read safely ({type(e).__name__})") from None
    raise LmlibError(f"{path} has no model.safetensors or pytorch_model.bin (a sharded model is not supported)")


def load_gpt2(path: str | Path) -> tuple[GPT, Tokenizer | None]:
    """Load a local Hugging Face GPT-2 folder (config.json + weights) into an lmlib `GPT`.

    Returns (model in eval mode, fp32, biases on; the tokenizer or None). The tokenizer is
    the run's own when the folder was written by `export_run`; else the folder's byte-level
    BPE ``tokenizer.json`` (`lmlib.bpe_formats.from_tokenizer_json`); else None. Any GPT-2
    setting lmlib's model does not compute (an untied output layer, another MLP width, ...)
    raises LmlibError. GPT-2's own tanh GELU ("gelu_new") becomes ``activation="gelu_tanh"``,
    so GPT-2's published weights load and fine-tune.
    """
    path = Path(path)
    try:
        c = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmlibError(f"{path} has no config.json; pass a Hugging Face model folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlibError(f"{path / 'config.json'} is not valid JSON ({e})") from None
    missing = [k for k in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd") if k not in c]
    if missing:
        raise LmlibError(f"{path / 'config.json'} lacks {', '.join(missing)}; is it a GPT-2 config?")
    _check_gpt2(c, path)
    cfg = GPTConfig(vocab_size=c["vocab_size"], block_size=c["n_positions"], n_layer=c["n_layer"],
                    n_head=c["n_head"], n_embd=c["n_embd"], dropout=float(c.get("resid_pdrop", 0.0)), bias=True,
                    activation=LMLIB_ACTIVATION[c.get("activation_function", "gelu_new")])
    theirs = {k.removeprefix("transformer."): v for k, v in _read_weights(path).items()}
    state = {}
    for ours, name, transpose in _name_pairs(cfg.n_layer):
        if name not in theirs:
            raise LmlibError(f"{path}: the weights have no {name!r}; is it a GPT-2 model of this config?")
        t = theirs.pop(name).float()
        state[ours] = t.t().contiguous() if transpose else t
    head = theirs.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head.float(), state["tok_emb.weight"]):
        raise LmlibError(f"{path}: lm_head.weight differs from the token embedding; lmlib's output layer is tied")
    extra = sorted(k for k in theirs if not _IGNORED.fullmatch(k))
    if extra:
        raise LmlibError(f"{path}: weights {extra[0]!r} (and {len(extra) - 1} more) have no place in lmlib's GPT")
    model = GPT(cfg)
    state["lm_head.weight"] = state["tok_emb.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise LmlibError(f"{path}: the weights do not match config.json: {' '.join(str(e).split())[:160]}") from None
    return model.eval(), _folder_tokenizer(path)


def _folder_tokenizer(path: Path) -> Tokenizer | None:
    if (path / LMLIB_TOKENIZER).is_file():  # written by export_model: exactly the run's tokenizer
        return load_tokenizer(path / LMLIB_TOKENIZER)
    if (path / "tokenizer.json").is_file():
        from lmlib.bpe_formats import from_tokenizer_json

        try:
            return from_tokenizer_json(path / "tokenizer.json")  # a byte-level BPE, like GPT-2's own
        except LmlibError:
            return None  # another kind of tokenizer: the model is still usable
    return None
