"""On paper: how many live streams of a model one GPU (and N GPUs) of the separation service holds.

    .venv/bin/python examples/serve_capacity.py \
        --config tests/data/msst-configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml --window 8 2 --hop 0.5 \
        [--peak-tflops 989] [--utilization 0.3 0.5] [--gpus 1 2 4 8]

Counts the FLOPs of one forward call per window length with ``torch.utils.flop_counter`` (random
weights, on this machine's CPU: it runs the model once per window, so a 512x12 model at 8 s takes a few
minutes on 2 cores), then: a stream at hop H needs 1/H windows per second, so one GPU holds
``peak * utilization / (flops_per_window / H)`` streams. ``--peak-tflops``: the GPU's dense bf16 peak
(H100 SXM: 989; H100 PCIe: 756); ``--utilization``: the share of it the batched model reaches (an
assumption: measure it with the GPU check's serving section when a GPU is lent). With ``serve.batch``
the windows of many streams fill one call, which is what lets a model of this size approach its FLOP
bound; without batching each stream's window runs alone and a GPU holds far fewer. N GPUs: one
replica per GPU (``--replicas N --gpus-per-replica 1``), N times one GPU. It also measures the ingress's
numpy work per stream and hop on this CPU (``streamer.lab.gpu_check.ingress_cost``: the hop's frame
decoded, the window slid, the overlap-add, the region encoded), to show where the ingress's CPU becomes
the limit (``--ingress-only`` skips the FLOP count).
"""
from __future__ import annotations

import argparse
import math
import time

import torch


def window_flops(config_path: str, seconds: float) -> float:
    """FLOPs of one forward call of the config's model on a (1, channels, seconds) window."""
    import streamer
    from torch.utils.flop_counter import FlopCounterMode

    config = streamer.load_config(config_path)
    model = streamer.build_model(config).eval()
    x = torch.zeros(1, config.channels, int(round(seconds * config.sample_rate)))
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--window", type=float, nargs="+", default=[8.0, 2.0], help="window lengths, seconds")
    p.add_argument("--hop", type=float, default=0.5, help="hop, seconds (a stream sends 1/hop windows a second)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--utilization", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ingress-only", action="store_true", help="only the ingress's CPU work per stream and hop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import streamer
    from streamer.lab.gpu_check import ingress_cost

    config = streamer.load_config(args.config)
    for seconds in args.window:
        runs = [ingress_cost(config, seconds, args.hop, hops=200) for _ in range(3)]
        med = sorted(r["us_per_stream_hop_median"] for r in runs)
        print(f"window {seconds:g} s, hop {args.hop:g} s: the ingress's numpy work per stream and hop: median "
              f"{med[1]:.0f} us (3 runs: {', '.join(f'{m:.0f}' for m in med)}), p99 "
              f"{min(r['us_per_stream_hop_p99'] for r in runs):.0f} us at best: about "
              f"{int(args.hop / (med[1] / 1e6))} streams per ingress CPU core", flush=True)
    if args.ingress_only:
        return
    for seconds in args.window:
        t = time.perf_counter()
        flops = window_flops(args.config, seconds)
        per_stream = flops / args.hop   # FLOP/s one stream needs
        print(f"window {seconds:g} s: {flops / 1e12:.2f} TFLOP per window (counted in {time.perf_counter() - t:.0f} s "
              f"on the CPU); at a {args.hop:g} s hop a stream needs {per_stream / 1e12:.2f} TFLOP/s", flush=True)
        for u in args.utilization:
            one = args.peak_tflops * 1e12 * u / per_stream
            counts = ", ".join(f"{n} GPU{'s' if n > 1 else ''}: {math.floor(one * n)}" for n in args.gpus)
            print(f"  at {u:.0%} of {args.peak_tflops:g} TFLOP/s: {one:.1f} streams per GPU ({counts})", flush=True)


if __name__ == "__main__":
    main()
