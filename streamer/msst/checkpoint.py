"""Loading community checkpoints (MSST ``.ckpt`` files, wrapped training checkpoints, safetensors).

By default ``torch.load(weights_only=True)`` is used: a pickle that needs arbitrary code is refused
unless the caller opts in with ``trust=True`` (CLI: ``--trust-checkpoint``).
"""
from __future__ import annotations

import os
import pickle
import re
from collections import Counter
from typing import Any, Mapping

import torch

from ..errors import CheckpointError

WRAPPER_KEYS = ("state", "state_dict", "model_state_dict", "model")
TRUST_HINT = "pass trust=True (CLI: --trust-checkpoint) only if you trust where the file came from"


def read_state_dict(path: str | os.PathLike, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return a plain ``{key: tensor}`` dict (unwrapped, prefix-stripped)."""
    if not isinstance(trust, bool):  # a string such as "false" read from a file must never mean trust
        raise CheckpointError(f"trust must be True or False, got {trust!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint path is a folder, expected a .ckpt/.pth/.safetensors file: {path}")
    if path.endswith(".safetensors"):
        obj = _load_safetensors(path)
    else:
        obj = _load_torch(path, trust)
    return unwrap_state_dict(obj, path)


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def _load_torch(path: str, trust: bool) -> Any:
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint (the file is empty)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # "Unsupported global" = a well-formed pickle holding objects beyond tensors and containers
        if "Unsupported global" in text or "can still be loaded" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" (it contains {found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path}: refused to unpickle objects other than tensors{what}: unpickling them can run arbitrary "
                f"code on this machine; {TRUST_HINT}"
            ) from exc
        raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({_short(exc)})") from exc
    except MemoryError as exc:
        raise CheckpointError(f"{path}: not enough memory to load this checkpoint") from exc
    except Exception as exc:  # noqa: BLE001
        # garbage makes the unpickler fail in many ways (IndexError "pop from empty list", KeyError from its
        # memo, struct errors, UnicodeDecodeError, ...): whatever torch.load raises, the file is not a
        # checkpoint we can read; the exception stays the cause (--verbose shows it)
        raise CheckpointError(f"{path}: corrupt or not a PyTorch checkpoint ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    """What went wrong in one line (at most 200 characters): the message's first line, with the exception's
    type when that says more; for torch's weights-only unpickler the reason it gives, not its advice."""
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        reason = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
        if reason:
            return reason[0][:200]
    line = text.splitlines()[0][:200] if text else ""
    if isinstance(exc, (pickle.UnpicklingError, RuntimeError)) and line:
        return line
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Accept a plain state_dict or one wrapped under state/state_dict/model_state_dict/model."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    seen = 0
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj) and seen < 3:
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, obj.keys()))[:8])
        raise CheckpointError(f"{where}: no tensors found (top-level keys: {keys or 'none'})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture facts a Roformer state_dict reveals, for error hints."""
    info: dict[str, Any] = {}
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))}
    if layers:
        info["depth"] = max(layers) + 1
    subs = {int(m.group(1)) for k in sd if (m := re.match(r"layers\.0\.(\d+)\.", k))}
    if subs:
        info["blocks_per_layer"] = max(subs) + 1
    info["mel"] = any(re.match(r"layers\.\d+\.\d+\.norm\.gamma$", k) for k in sd)
    info["bs"] = "final_norm.gamma" in sd
    if "final_norm.gamma" in sd:
        info["dim"] = sd["final_norm.gamma"].shape[0]
    feats = [k for k in sd if re.match(r"band_split\.to_features\.\d+\.1\.weight$", k)]
    if feats:
        info["num_bands"] = len(feats)
        info["dim"] = sd["band_split.to_features.0.1.weight"].shape[0]
        info["first_band_width"] = sd["band_split.to_features.0.1.weight"].shape[1]
    stems = {int(m.group(1)) for k in sd if (m := re.match(r"mask_estimators\.(\d+)\.", k))}
    if stems:
        info["num_stems"] = max(stems) + 1
    lins = {int(m.group(1)) for k in sd if (m := re.match(r"mask_estimators\.0\.to_freqs\.0\.0\.(\d+)\.weight$", k))}
    if lins:
        info["mask_linears"] = max(lins) // 2 + 1
        first = sd["mask_estimators.0.to_freqs.0.0.0.weight"]
        if len(lins) > 1 and "dim" in info:
            info["mlp_expansion_factor"] = first.shape[0] // info["dim"]
    qkv = next((k for k in sd if re.match(r"layers\.0\.\d+\.layers\.0\.0\.to_gates\.weight$", k)), None)
    if qkv:
        info["heads"] = sd[qkv].shape[0]
        qkv_w = sd[qkv.replace("to_gates", "to_qkv")]
        info["dim_head"] = qkv_w.shape[0] // (3 * info["heads"])
    per = Counter(m.group(1) for k in sd if (m := re.match(r"layers\.0\.(\d+)\.layers\.(\d+)\.0\.norm\.gamma$", k)))
    info["sub_layer_depths"] = [per[str(i)] for i in sorted(int(x) for x in per)]
    info["linear"] = any(k.endswith(".temperature") for k in sd)
    return info


def _hints(model: torch.nn.Module, sd: Mapping[str, torch.Tensor]) -> list[str]:
    have, want = describe_state_dict(sd), describe_state_dict(model.state_dict())
    hints = []
    if have.get("mel") != want.get("mel") and (have.get("mel") or have.get("bs")):
        kind = "mel_band_roformer" if have.get("mel") else "bs_roformer"
        hints.append(f"the checkpoint is a {kind} (set training.model_type: {kind})")
    if have.get("depth") is not None and want.get("depth") is not None and have["depth"] != want["depth"]:
        hints.append(f"checkpoint has {have['depth']} layers, config says depth {want['depth']}")
    for key, cfg_key in (("dim", "dim"), ("heads", "heads"), ("dim_head", "dim_head"),
                         ("num_stems", "num_stems"), ("num_bands", "num_bands / freqs_per_bands"),
                         ("mlp_expansion_factor", "mlp_expansion_factor")):
        a, b = have.get(key), want.get(key)
        if a is not None and b is not None and a != b:
            hints.append(f"checkpoint has {key} {a}, config says {cfg_key} {b}")
    if have.get("mask_linears") and want.get("mask_linears") and have["mask_linears"] != want["mask_linears"]:
        # Mel MLPs have mask_estimator_depth + 1 Linear layers, BS MLPs mask_estimator_depth
        have_depth = have["mask_linears"] - (1 if have.get("mel") else 0)
        want_depth = want["mask_linears"] - (1 if want.get("mel") else 0)
        hints.append(f"checkpoint has mask_estimator_depth {have_depth}, config says {want_depth}")
    if have.get("linear") != want.get("linear"):
        hints.append(
            "checkpoint " + ("has" if have.get("linear") else "has no")
            + " linear-attention transformers, config says linear_transformer_depth "
            + ("0" if have.get("linear") else "> 0")
        )
    elif have.get("sub_layer_depths") and have.get("sub_layer_depths") != want.get("sub_layer_depths"):
        hints.append(
            f"checkpoint has {have['sub_layer_depths']} sub-layers per transformer, config gives "
            f"{want.get('sub_layer_depths')} (time/freq/linear_transformer_depth)"
        )
    fb_have, fb_want = have.get("first_band_width"), want.get("first_band_width")
    if fb_have and fb_want and fb_have != fb_want and fb_have * 2 == fb_want:
        hints.append("checkpoint is mono, config says stereo: true")
    elif fb_have and fb_want and fb_have != fb_want and fb_have == fb_want * 2:
        hints.append("checkpoint is stereo, config says stereo: false")
    return hints


def _summarise(keys: list[str], limit: int = 6) -> str:
    """Keys folded at their first index, e.g. ``layers.{6..11}.* (132 keys)``, so hundreds stay readable."""
    groups: dict[str, tuple[set[int], int]] = {}
    for key in keys:
        parts = key.split(".")
        i = next((j for j, part in enumerate(parts) if part.isdigit()), None)
        if i is None:
            groups.setdefault(key, (set(), 0))
            groups[key] = (groups[key][0], groups[key][1] + 1)
            continue
        prefix = ".".join(parts[:i])
        nums, count = groups.get(prefix, (set(), 0))
        nums.add(int(parts[i]))
        groups[prefix] = (nums, count + 1)
    items = []
    for prefix, (nums, count) in groups.items():
        if not nums:
            items.append(prefix)
            continue
        lo, hi = min(nums), max(nums)
        if len(nums) == 1:
            idx = str(lo)
        elif len(nums) == hi - lo + 1:
            idx = f"{{{lo}..{hi}}}"
        else:
            idx = "{" + ",".join(map(str, sorted(nums)[:6])) + (",..." if len(nums) > 6 else "") + "}"
        items.append(f"{prefix}.{idx}.* ({count} keys)")
    more = f", ... and {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def fill_shared_keys(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add keys of tensors the model shares (rotary ``freqs``) that a de-duplicating saver left out.

    safetensors' ``save_model`` stores one copy of tensors that share memory; the Roformers share one
    rotary-frequency tensor between all time (and all freq) attentions.
    """
    expected = model.state_dict()
    by_storage: dict[tuple, list[str]] = {}
    for key, tensor in expected.items():
        by_storage.setdefault((id(tensor.untyped_storage()), tensor.storage_offset()), []).append(key)
    filled = dict(sd)
    for keys in by_storage.values():
        present = [k for k in keys if k in sd]
        if present and len(present) < len(keys):
            for k in keys:
                # only where the owning attention is otherwise in the checkpoint: a layer the
                # checkpoint lacks entirely must still be reported as missing
                owner = k.rsplit(".", 2)[0] + "."
                if k not in filled and any(o.startswith(owner) for o in sd):
                    filled[k] = sd[present[0]]
    return filled


def check_compatible(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Raise one readable CheckpointError if ``sd`` does not fit ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"{where} does not match the config:"]
    if missing:
        lines.append(f"  missing {len(missing)} keys: {_summarise(missing)}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} keys: {_summarise(unexpected)}")
    if shapes:
        more = f" ... ({len(shapes) - 4} more)" if len(shapes) > 4 else ""
        lines.append(f"  {len(shapes)} shape mismatches: " + "; ".join(shapes[:4]) + more)
    hints = _hints(model, sd)
    if hints:
        lines.append("  hint: " + "; ".join(hints))
    raise CheckpointError("\n".join(lines))


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, trust: bool = False) -> torch.nn.Module:
    """Load a checkpoint into ``model`` strictly (fp16/bf16 values are converted to the model's dtype)."""
    return load_state(model, fill_shared_keys(model, read_state_dict(path, trust=trust)), os.fspath(path))


def load_state(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], where: str) -> torch.nn.Module:
    """Load the full state ``sd`` into ``model`` strictly, after :func:`check_compatible` and a check
    for NaN/inf values (errors name ``where``)."""
    check_compatible(model, sd, where=where)
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} tensors hold NaN/inf values: {_summarise(bad)}")
    model.load_state_dict(sd, strict=True)
    # rotary-embedding-torch caches angles computed from `freqs` at first use; the checkpoint's
    # (possibly fp16-rounded) frequencies must replace any cached ones.
    for module in model.modules():
        if hasattr(module, "cached_freqs_seq_len"):
            module.cached_freqs_seq_len = 0
    return model
