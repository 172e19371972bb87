"""Average the weights of checkpoints of one model (a "model soup"), as the demo model version 3 was made.

    python examples/average_checkpoints.py A.ckpt B.ckpt --out soup.ckpt [--weights 0.5,0.5] [--fp16]

Every input must hold the same tensors (plain state_dicts, as `stemstream train` writes `model.ckpt`
and the bundled demo model is stored); floating-point tensors are averaged in fp32 with the given
weights (default: equal), others are taken from the first input. Checkpoints are read with
``weights_only=True``. The output is written under a temporary name and renamed when complete;
``--fp16`` stores it in half precision (the bundled demo model's format; loading converts it back).
Version 3 of the demo model is version 2 averaged equally with version 2 fine-tuned on the mended
songs (model card): averaging kept what each was better at.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch


def average(paths: list[str], weights: list[float]) -> dict[str, torch.Tensor]:
    states = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    keys = list(states[0])
    for path, state in zip(paths[1:], states[1:]):
        if set(state) != set(keys):
            missing, extra = sorted(set(keys) - set(state)), sorted(set(state) - set(keys))
            raise ValueError(f"{path} does not hold the same tensors as {paths[0]}: missing {missing[:5]}, "
                             f"extra {extra[:5]}")
        for k in keys:
            if state[k].shape != states[0][k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(state[k].shape)}, {paths[0]} "
                                 f"{tuple(states[0][k].shape)}")
    out = {}
    for k in keys:
        if states[0][k].is_floating_point():
            out[k] = sum(w * s[k].float() for w, s in zip(weights, states))
        else:
            out[k] = states[0][k]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="two or more plain state_dict checkpoints of the same model")
    ap.add_argument("--out", required=True, help="the averaged checkpoint to write")
    ap.add_argument("--weights", help="comma-separated weights, one per checkpoint, summing to 1 (default: equal)")
    ap.add_argument("--fp16", action="store_true", help="store the result in half precision")
    args = ap.parse_args()
    n = len(args.checkpoints)
    try:
        if n < 2:
            raise ValueError("give at least two checkpoints to average")
        weights = [1.0 / n] * n if args.weights is None else [float(w) for w in args.weights.split(",")]
        if len(weights) != n or any(w < 0 for w in weights) or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"--weights needs {n} non-negative numbers summing to 1, got {args.weights}")
        state = average(args.checkpoints, weights)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    tmp = args.out + ".part"
    torch.save(state, tmp)
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(state)} tensors, weights {', '.join(f'{w:g}' for w in weights)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
