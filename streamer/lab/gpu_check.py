"""The GPU check: one prepared, self-checking run that measures the GPU path and says what it found.

    python3 -m streamer.lab.gpu_run OUT               # the whole device command (see gpu_run)
    python3 -m streamer.lab.gpu_check OUT             # the check alone, on a CUDA machine
    python3 -m streamer.lab.gpu_check OUT --dry-run   # the same code on CPU with tiny models (seconds)
    stemstream bench-gpu OUT [--dry-run]              # the same through the CLI

It writes ``OUT/gpu_check.json`` (every number) and ``OUT/gpu_check.md`` (the tables for
BENCHMARKS.md), rewritten after every section and every long step, and prints progress as it goes.
Sections, in this order (the headline numbers first), each guarded so that a failure in one is
recorded and the others still run:

0. preflight (``streamer.lab.gpu_preflight``): versions, GPU, ``/dev/shm``; ``OUT/preflight.json``;
1. environment: GPU, driver, torch, CUDA, and a measured dense bf16 matmul rate (the floor's yardstick);
2. correctness on the device: the engine's offline-exact setting against ``demix`` (max difference),
   the stems' sum against the delayed input (a residual stem, and the residual spread), and
   bf16/fp16 against fp32 (error energy in dB, with the limit each precision allows:
   ``streamer.inference.precision.agreement_db``) for the demo model and random-weight models of
   the viperx BS-RoFormer 512x12 and Kim Mel-RoFormer 384x6 architectures;
3. time per window for those two at 2, 4 and 8 s, fp32/bf16/fp16, eager and as a CUDA graph (with
   the graph's error against eager), FLOPs per window (``torch.utils.flop_counter``) and the
   arithmetic floor (FLOPs / measured bf16 rate); and the CUDA-graph decision per model and
   precision (:func:`graph_decision`), of which the live one (hop model, hop precision) and the
   offline one decide how the next two sections run;
4. the smallest hop the real-time engine sustains with zero misses over real-time-paced input, at
   8 s and 4 s windows, viperx size in bf16 (hops largest first, stopping at the first failure);
5. offline ``demix`` of 3 minutes at overlap 2: real-time factor of our path (bf16, the CUDA graph
   captured once outside the timer when the decision says so) and the ratio to a plain eager
   fp16-autocast run of the same model and settings (the reference implementation's way),
   interleaved in one process;
6. serving (``stemstream serve``): how many live streams one GPU holds with batching. The replica's
   own batch call (``streamer.inference.runner.run_batch``: host to device, the forward pass in the
   hop precision, device to host) is timed for the viperx size at 1 s and 2 s windows and batches of
   1, 2, 4, ... 64 (stopping when a batch takes over half the hop, or memory runs out); a batch size
   serves ``floor(hop / t) * batch`` streams when ``2 * t <= hop`` (a window that arrives just after a
   batch started waits for it, then runs in the next one) (:func:`serving_capacity`); and the
   ingress's numpy work per stream and hop (the frame decoded, the window slid, the overlap-add, the
   region encoded), measured on this machine's CPU;
7. ``torch.compile`` in a child process of its own session (ended with its compile workers at its
   time limit), only if the budget has room for it.

A time budget (``--budget``) keeps the whole run inside its limit: it is checked before every
section and every long step (a trial, a timed row, a run), and what would start too late is
recorded as skipped.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..assets import DEMO_CHECKPOINT, DEMO_CONFIG
from ..inference.demix import demix
from ..inference.graphs import MATCH_DB, capture, error_db
from ..inference.residual import SPREAD, default_residual
from ..inference.loader import load_model
from ..inference.precision import agreement_db, autocast_context
from ..inference.runner import run_batch
from ..remote.protocol import Kind, ModelInfo, pack, unpack
from ..remote.state import StreamState
from ..stream.engine import StreamEngine
from ..stream.settings import preset_settings
from .benchmarks import run_realtime
from .gpu_preflight import preflight, shared_memory_enough, summary
from .testsignals import generated_clip

_TEST_CONFIGS = Path(__file__).resolve().parents[2] / "tests" / "data" / "msst-configs"
VIPERX = _TEST_CONFIGS / "viperx" / "model_bs_roformer_ep_317_sdr_12.9755.yaml"
KIM = _TEST_CONFIGS / "KimberleyJensen" / "config_vocals_mel_band_roformer_kj.yaml"

TINY_BS = {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "stereo": True, "num_stems": 1,
           "time_transformer_depth": 1, "freq_transformer_depth": 1, "stft_hop_length": 441}
TINY_MEL = {**TINY_BS, "num_bands": 8}

# A CUDA graph is used for a model and precision when every measured window replays within the
# precision's tolerance of eager execution (MATCH_DB) and it is not slower: the median speed-up
# over the windows is at least 1.0 and no window is more than GRAPH_SLOWER_TOLERANCE slower (a
# compute-bound fp32 window gains nothing measurable from a graph, and timing noise is a few %).
GRAPH_SLOWER_TOLERANCE = 0.05


@dataclass
class Plan:
    """What to measure. The defaults are the full check for one H100 (about 5 minutes of the
    7 that ``gpu_run`` gives the whole command)."""

    device: str = "cuda"
    models: dict[str, str] = field(default_factory=lambda: {"viperx_bs_512x12": str(VIPERX),
                                                            "kim_mel_384x6": str(KIM)})
    windows: tuple[float, ...] = (2.0, 4.0, 8.0)
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    reps: int = 15
    graphs: bool = True
    compile_timeout: float = 60.0            # 0: do not try torch.compile
    hop_model: str = "viperx_bs_512x12"
    hop_precision: str = "bf16"
    hop_windows: tuple[float, ...] = (8.0, 4.0)
    hops: tuple[float, ...] = (0.2, 0.1, 0.05)
    hop_seconds: float = 20.0
    hop_trial_overhead: float = 20.0         # a trial's start-up (worker, copy of the weights, warm-up)
    offline_reserve: float = 40.0            # kept for the offline section when the hop search plans a trial
    offline_model: str = "viperx_bs_512x12"
    offline_seconds: float = 180.0
    offline_overlap: int = 2
    offline_runs: int = 2
    correctness_seconds: float = 10.0
    serve_model: str = "viperx_bs_512x12"
    serve_precision: str = "bf16"
    serve_windows: tuple[float, ...] = (1.0, 2.0)
    serve_hop: float = 0.5
    serve_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    serve_reps: int = 5
    serve_reserve: float = 30.0              # kept for the serving section when the hop search plans a trial
    budget_seconds: float = 330.0

    @classmethod
    def dry_run(cls, folder: str) -> "Plan":
        """Tiny BS and Mel configs on the CPU, short settings: every code path, in seconds."""
        import yaml

        models = {}
        for name, model, kind in (("tiny_bs", TINY_BS, "bs_roformer"), ("tiny_mel", TINY_MEL, "mel_band_roformer")):
            path = Path(folder) / f"{name}.yaml"
            path.write_text(yaml.safe_dump({
                "audio": {"chunk_size": 22050, "sample_rate": 44100, "num_channels": 2},
                "model": model,
                "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals", "model_type": kind},
                "inference": {"batch_size": 2, "num_overlap": 2},
            }))
            models[name] = str(path)
        return cls(device="cpu", models=models, windows=(0.25, 0.5), precisions=("fp32", "bf16"), reps=2,
                   compile_timeout=0.0, hop_model="tiny_bs", hop_precision="fp32", hop_windows=(0.5,),
                   hops=(0.25, 0.1), hop_seconds=1.5, offline_model="tiny_bs", offline_seconds=3.0,
                   hop_trial_overhead=5.0, offline_reserve=5.0, offline_runs=1, correctness_seconds=4.0, budget_seconds=300.0,
                   serve_model="tiny_bs", serve_precision="fp32", serve_windows=(0.25, 0.5), serve_hop=0.25,
                   serve_batches=(1, 2, 4), serve_reps=2, serve_reserve=5.0)


class Check:
    """Runs the plan's sections and keeps every result (and every error) for the report."""

    def __init__(self, plan: Plan, out: str):
        self.plan = plan
        self.out = out
        self.device = torch.device(plan.device)
        self.t0 = time.monotonic()
        self.results: dict = {"plan": asdict(self.plan), "sections": {}}
        self.partial: dict = {}  # the running section's results so far
        self._models: dict = {}

    # ------------------------------------------------------------------ helpers
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {text}", flush=True)

    def left(self) -> float:
        return self.plan.budget_seconds - (time.monotonic() - self.t0)

    def over_budget(self, need: float = 0.0) -> bool:
        """Whether a step expected to take ``need`` seconds would end after the budget."""
        return self.left() < need

    def section(self, name: str, fn, need: float = 0.0) -> None:
        if self.over_budget(need):
            self.results["sections"][name] = {"skipped": f"time budget ({self.left():.0f} s left, needs about {need:.0f} s)"}
            self.say(f"{name}: skipped (time budget)")
            self.save()
            return
        self.say(f"{name} ...")
        start = time.monotonic()
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - a failed section is a result too
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            self.say(f"{name}: FAILED {type(exc).__name__}: {exc}")
        result["seconds"] = round(time.monotonic() - start, 1)
        self.results["sections"][name] = result
        self.partial = {}
        self.save()

    def model(self, name: str):
        if name not in self._models:
            path = DEMO_CONFIG if name == "demo" else self.plan.models[name]
            ckpt = DEMO_CHECKPOINT if name == "demo" else None
            self._models[name] = load_model(path, ckpt, device=self.plan.device, seed=0)
        return self._models[name]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_call(self, fn, reps: int) -> list[float]:
        """Seconds per call (after two warm-up calls)."""
        for _ in range(2):
            fn()
        self.sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return times

    def clip(self, seconds: float, rate: int, channels: int) -> np.ndarray:
        mix, _ = generated_clip(min(seconds, 10.0), rate, seed=1, channels=channels)
        n = int(round(seconds * rate))
        return np.ascontiguousarray(np.tile(mix, (1, -(-n // mix.shape[1])))[:, :n])

    def save(self, section: str | None = None, progress: dict | None = None) -> None:
        """Write the report now (atomically); ``section``/``progress``: what a running section has so
        far, kept as that section's result until it finishes (a run cut short still shows it)."""
        if section is not None:
            self.partial = {section: {**progress, "unfinished": True}}
        results = {**self.results, "sections": {**self.results["sections"], **getattr(self, "partial", {})}}
        os.makedirs(self.out, exist_ok=True)
        for name, text in (("gpu_check.json", json.dumps(results, indent=1, default=str)),
                           ("gpu_check.md", markdown(results))):
            path = os.path.join(self.out, name)
            with open(path + ".partial", "w") as fh:
                fh.write(text)
            os.replace(path + ".partial", path)

    # ------------------------------------------------------------------ sections
    def environment(self) -> dict:
        env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(self.device),
               "cuda": torch.version.cuda, "host": platform.node(), "cpu_count": os.cpu_count()}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            env.update(gpu=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1),
                       multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
            try:
                env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=20).stdout.strip()
            except (OSError, subprocess.SubprocessError) as exc:
                env["driver"] = f"unknown ({exc})"
            n = 8192
            a = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
            b = torch.randn(n, n, device=self.device, dtype=torch.bfloat16)
            times = self.time_call(lambda: a @ b, 10)
            env["bf16_tflops_measured"] = round(2 * n ** 3 / float(np.median(times)) / 1e12, 1)
        else:
            n = 1024
            a, b = torch.randn(n, n), torch.randn(n, n)
            env["gpu"] = "none (CPU dry run)"
            env["fp32_tflops_measured"] = round(2 * n ** 3 / float(np.median(self.time_call(lambda: a @ b, 5))) / 1e12, 3)
        self.rate = env.get("bf16_tflops_measured") or env.get("fp32_tflops_measured")
        self.say(f"environment: {env.get('gpu')}, torch {env['torch']}, rate {self.rate} TFLOP/s")
        return env

    def correctness(self) -> dict:
        out: dict = {}
        demo = self.model("demo")
        config = demo.config
        mix = self.clip(self.plan.correctness_seconds, config.sample_rate, config.channels)
        ref = demix(demo.model, mix, config.chunk_size, config.num_overlap, device=self.device, precision="fp32")
        engine = StreamEngine.from_config(config, demo.model, preset="offline-exact", device=self.device,
                                          precision="fp32", cuda_graph=False)
        got = engine.separate(mix, 4096)
        inner = slice(config.chunk_size, mix.shape[1] - config.chunk_size)  # one window away from both ends
        if inner.stop <= inner.start:
            raise ValueError(f"correctness_seconds must exceed two chunks ({2 * config.chunk_size} samples)")
        out["offline_exact_max_diff"] = float(np.abs(got[..., inner] - ref[..., inner]).max())
        residual = StreamEngine.from_config(config, demo.model, preset="balanced", residual="other",
                                            device=self.device, precision="fp32")
        stems = residual.separate(mix, 256)
        out["residual_sum_max_error"] = float(np.abs(stems.sum(axis=0) - mix).max())
        spread = StreamEngine.from_config(config, demo.model, preset="balanced", residual=SPREAD,
                                          device=self.device, precision="fp32")  # the live default
        out["spread_sum_max_error"] = float(np.abs(spread.separate(mix, 256).sum(axis=0) - mix).max())
        self.say(f"offline-exact vs demix: {out['offline_exact_max_diff']:.2e}; "
                 f"stems sum error {out['residual_sum_max_error']:.2e} (residual other), "
                 f"{out['spread_sum_max_error']:.2e} (spread)")
        errors = {}
        for name in ["demo", *self.plan.models]:
            loaded = self.model(name)
            cfg = loaded.config
            window = min(cfg.chunk_size, int(max(self.plan.windows) * cfg.sample_rate))
            x = torch.from_numpy(self.clip(window / cfg.sample_rate, cfg.sample_rate, cfg.channels))[None]
            x = x.to(self.device)
            with torch.inference_mode():
                fp32 = loaded.model(x).float()
                row = {}
                for precision in self.plan.precisions:
                    if precision == "fp32":
                        continue
                    if self.device.type != "cuda":
                        row[precision] = "n/a on CPU"
                        continue
                    with autocast_context(self.device, precision):
                        half = loaded.model(x).float()
                    db = round(error_db(half, fp32), 1)
                    row[precision] = db
                    row[f"{precision}_within_limit"] = db <= agreement_db(precision)
            errors[name] = row
            self.say(f"precision error vs fp32, {name}: {row}")
        out["precision_error_db"] = errors
        out["precision_limit_db"] = {p: round(agreement_db(p), 1) for p in self.plan.precisions if p != "fp32"}
        return out

    def timings(self) -> dict:
        from torch.utils.flop_counter import FlopCounterMode

        rows = []
        for name in self.plan.models:
            loaded = self.model(name)
            cfg = loaded.config
            for seconds in self.plan.windows:
                if self.over_budget(10.0):
                    rows.append({"model": name, "window_s": seconds, "skipped": "time budget"})
                    continue
                n = int(round(seconds * cfg.sample_rate))
                x = torch.from_numpy(self.clip(seconds, cfg.sample_rate, cfg.channels))[None].to(self.device)
                with torch.inference_mode():
                    counter = FlopCounterMode(display=False)
                    with counter:
                        loaded.model(x)
                flops = counter.get_total_flops()
                floor_ms = flops / (self.rate * 1e12) * 1e3 if self.rate else None
                for precision in self.plan.precisions:
                    row = {"model": name, "window_s": seconds, "samples": n, "precision": precision,
                           "gflop": round(flops / 1e9, 1), "floor_ms": round(floor_ms, 2) if floor_ms else None}
                    if self.device.type != "cuda" and precision != "fp32":
                        row["note"] = "half precision applies on CUDA only"
                        rows.append(row)
                        continue
                    with torch.inference_mode():
                        def eager(model=loaded.model, x=x, precision=precision):
                            with autocast_context(self.device, precision):
                                return model(x)
                        t = self.time_call(eager, self.plan.reps)
                        row.update(eager_ms_median=round(1e3 * float(np.median(t)), 2),
                                   eager_ms_min=round(1e3 * min(t), 2))
                        if self.plan.graphs and self.device.type == "cuda":
                            start = time.perf_counter()
                            graph = capture(loaded.model, tuple(x.shape), self.device, precision, check=False)
                            row["graph_capture_s"] = round(time.perf_counter() - start, 2)
                            if graph is None:
                                row["graph"] = "capture failed (see the log)"
                            else:
                                row["graph_error_db_vs_eager"] = round(error_db(graph(x).float(), eager().float()), 1)
                                t = self.time_call(lambda g=graph, x=x: g(x), self.plan.reps)
                                row.update(graph_ms_median=round(1e3 * float(np.median(t)), 2),
                                           graph_ms_min=round(1e3 * min(t), 2))
                                row["graph_speedup"] = round(row["eager_ms_median"] / row["graph_ms_median"], 2)
                            del graph
                    best = min(v for k, v in row.items() if k in ("eager_ms_median", "graph_ms_median"))
                    if floor_ms:
                        row["x_floor"] = round(best / floor_ms, 2)
                    rows.append(row)
                    self.save("timings", {"rows": rows})
                    self.say(f"{name} {seconds:g} s {precision}: eager {row.get('eager_ms_median')} ms, "
                             f"graph {row.get('graph_ms_median', row.get('graph', '-'))} ms, floor {row['floor_ms']} ms")
        decisions = {name: {p: graph_decision(rows, name, p) for p in self.plan.precisions} for name in self.plan.models}
        for name, by_precision in decisions.items():
            self.say(f"CUDA graph decision, {name}: " + ", ".join(f"{p} {d['use']}" for p, d in by_precision.items()))
        return {"rows": rows, "graph_decisions": decisions}

    def graph_for(self, model: str, precision: str) -> bool:
        """The timings section's decision for ``model`` in ``precision`` (False if it has none)."""
        decisions = self.results["sections"].get("timings", {}).get("graph_decisions", {})
        return bool(decisions.get(model, {}).get(precision, {}).get("use", False))

    def compile_probe(self) -> dict:
        """``torch.compile`` of the hop model for the longest window, in a child process of its own
        session: at the time limit the whole group (compile workers included) is ended."""
        name = self.plan.hop_model
        seconds = max(self.plan.windows)
        limit = min(self.plan.compile_timeout, self.left() - 15.0)
        cmd = [sys.executable, "-m", "streamer.lab.gpu_check", "--compile-probe", self.plan.models[name],
               str(seconds), self.plan.hop_precision, str(limit)]
        base = {"model": name, "window_s": seconds, "precision": self.plan.hop_precision}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=limit + 10.0)
        except subprocess.TimeoutExpired:
            end_process_group(proc)
            return {**base, "result": f"did not compile within {limit:.0f} s (ended with its workers)"}
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {**base, "result": "failed", "stderr": stderr[-2000:]}
        info = json.loads(lines[-1])
        self.say(f"torch.compile: {info}")
        return {**base, **info}

    def hop_search(self) -> dict:
        loaded = self.model(self.plan.hop_model)
        cfg = loaded.config
        cpu_model = copy.deepcopy(loaded.model).cpu()  # handed to the worker process through shared memory
        graph = self.graph_for(self.plan.hop_model, self.plan.hop_precision)
        weights = sum(p.numel() * p.element_size() for p in cpu_model.parameters())
        fits, why = shared_memory_enough(weights)
        worker = "process" if fits else "thread"
        self.say(f"hop search: worker {worker} ({why}); CUDA graph {graph}")
        found = {}
        result = {"model": self.plan.hop_model, "precision": self.plan.hop_precision, "cuda_graph": graph,
                  "worker": worker, "worker_reason": why, "windows": found}
        need = self.plan.hop_seconds + self.plan.hop_trial_overhead + self.plan.offline_reserve + self.plan.serve_reserve
        for window_s in self.plan.hop_windows:
            trials = []
            found[f"{window_s:g}"] = {"trials": trials, "smallest_hop_s": None}
            for hop_s in self.plan.hops:
                if self.over_budget(need):
                    trials.append({"hop_s": hop_s, "skipped": "time budget"})
                    break
                window = int(round(window_s * cfg.sample_rate))
                hop = int(round(hop_s * cfg.sample_rate))
                engine = StreamEngine(cpu_model, cfg.stems, cfg.sample_rate, window=window, hop=hop, lookahead=hop,
                                      residual=default_residual(cfg.stems), device=self.device, precision=self.plan.hop_precision,
                                      realtime=True, worker=worker, channels=cfg.channels, cuda_graph=graph)
                with engine:
                    r = run_realtime(engine, self.plan.hop_seconds, 256)
                st = r.stats
                trial = {"hop_s": hop_s, "latency_ms": round(st["latency_ms"], 1), "misses": st["deadline_misses"],
                         "infer_ms_median": round(st["infer_ms_median"], 2), "infer_ms_p99": round(st["infer_ms_p99"], 2),
                         "realtime_factor": round(st["realtime_factor"], 3), "cuda_graph": st["cuda_graph"],
                         "error": st["error"]}
                trials.append(trial)
                ok = [t["hop_s"] for t in trials if t.get("misses") == 0 and not t.get("error")]
                found[f"{window_s:g}"]["smallest_hop_s"] = min(ok) if ok else None
                self.save("hop_search", result)
                self.say(f"window {window_s:g} s, hop {hop_s * 1000:.0f} ms: {trial}")
                if st["deadline_misses"] or st["error"]:
                    break
        return result

    def serving(self) -> dict:
        """Streams per GPU with batching (see the module docstring, section 6)."""
        name, precision, hop = self.plan.serve_model, self.plan.serve_precision, self.plan.serve_hop
        if self.device.type != "cuda":
            precision = "fp32"
        loaded = self.model(name)
        cfg = loaded.config
        result: dict = {"model": name, "precision": precision, "hop_s": hop, "windows": {}}
        for window_s in self.plan.serve_windows:
            one = self.clip(window_s, cfg.sample_rate, cfg.channels)
            rows: list[dict] = []
            entry = result["windows"][f"{window_s:g}"] = {"rows": rows, **serving_capacity(rows, hop)}
            last_s = 0.0
            for batch in self.plan.serve_batches:
                guess = (self.plan.serve_reps + 2) * last_s * 2.2 + 2.0   # the next batch about doubles
                if self.over_budget(guess + 5.0):
                    rows.append({"batch": batch, "skipped": "time budget"})
                    break
                x = np.ascontiguousarray(np.broadcast_to(one, (batch, *one.shape)))
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
                try:
                    t = self.time_call(lambda x=x: run_batch(loaded.model, x, self.device, precision), self.plan.serve_reps)
                except torch.cuda.OutOfMemoryError:
                    rows.append({"batch": batch, "error": "out of GPU memory"})
                    torch.cuda.empty_cache()
                    break
                last_s = float(np.median(t))
                row = {"batch": batch, "ms_median": round(1e3 * last_s, 2), "ms_min": round(1e3 * min(t), 2),
                       "windows_per_s": round(batch / last_s, 1)}
                if self.device.type == "cuda":
                    row["peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 2)
                rows.append(row)
                entry.update(serving_capacity(rows, hop))
                self.save("serving", result)
                self.say(f"serving {name} {window_s:g} s window, batch {batch}: {row}")
                if streams_per_batch(batch, 1e3 * last_s, hop) is None:
                    break              # larger batches only take longer
        result["ingress"] = ingress_cost(cfg, self.plan.serve_windows[-1], hop)
        for w, info in result["windows"].items():
            self.say(f"serving: {w} s windows at a {hop * 1000:.0f} ms hop: {info.get('streams')} streams per device "
                     f"(batch {info.get('batch')})")
        return result

    def offline(self) -> dict:
        loaded = self.model(self.plan.offline_model)
        cfg = loaded.config
        mix = self.clip(self.plan.offline_seconds, cfg.sample_rate, cfg.channels)
        ours_precision = "bf16" if self.device.type == "cuda" else "fp32"
        graph = self.graph_for(self.plan.offline_model, ours_precision)
        captured = None
        if graph:  # once, outside the timer: each demix call would otherwise capture again
            start = time.perf_counter()
            captured = capture(loaded.model, (cfg.batch_size, cfg.channels, cfg.chunk_size), self.device, ours_precision)
            self.say(f"offline: CUDA graph captured in {time.perf_counter() - start:.1f} s "
                     f"({'ok' if captured is not None else 'failed: eager'})")
        runs = {"reference_eager_fp16": [], "ours": []}
        outputs = {}
        for i in range(self.plan.offline_runs):
            if i and self.over_budget(sum(min(v) for v in runs.values()) + 5.0):
                break
            for key in runs:
                if key == "ours":
                    kw = dict(precision=ours_precision, cuda_graph=False, graph=captured, batch_size=cfg.batch_size)
                else:
                    kw = dict(precision="fp16" if self.device.type == "cuda" else "fp32", cuda_graph=False,
                              batch_size=cfg.batch_size)
                self.sync()
                start = time.perf_counter()
                outputs[key] = demix(loaded.model, mix, cfg.chunk_size, self.plan.offline_overlap, device=self.device, **kw)
                self.sync()
                runs[key].append(time.perf_counter() - start)
        seconds = mix.shape[1] / cfg.sample_rate
        best = {k: min(v) for k, v in runs.items()}
        result = {"model": self.plan.offline_model, "audio_s": seconds, "overlap": self.plan.offline_overlap,
                  "batch_size": cfg.batch_size, "ours_precision": ours_precision, "ours_cuda_graph": captured is not None,
                  "runs_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
                  "rtf_ours": round(best["ours"] / seconds, 4),
                  "rtf_reference": round(best["reference_eager_fp16"] / seconds, 4),
                  "speedup_vs_reference": round(best["reference_eager_fp16"] / best["ours"], 2),
                  "ours_vs_reference_error_db": round(error_db(torch.from_numpy(outputs["ours"]),
                                                               torch.from_numpy(outputs["reference_eager_fp16"])), 1)}
        self.say(f"offline: {result}")
        return result

    def run(self) -> dict:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536,) * 2)
        self.section("environment", self.environment)
        self.section("correctness", self.correctness)
        self.section("timings", self.timings)
        self.section("hop_search", self.hop_search, need=self.plan.hop_seconds + self.plan.hop_trial_overhead)
        self.section("offline", self.offline, need=self.plan.offline_reserve / 2)
        self.section("serving", self.serving, need=self.plan.serve_reserve / 2)
        if self.plan.compile_timeout > 0 and self.device.type == "cuda":
            self.section("torch_compile", self.compile_probe, need=30.0)
        self.results["total_seconds"] = round(time.monotonic() - self.t0, 1)
        self.results["goals"] = goals(self.results)
        self.save()
        self.say(f"done in {self.results['total_seconds']} s: {self.out}/gpu_check.md")
        return self.results


def graph_decision(rows: list[dict], model: str, precision: str) -> dict:
    """Whether ``model`` runs as a CUDA graph in ``precision``, from the timing rows: every window
    measured with a graph replays within ``MATCH_DB[precision]`` of eager, the median speed-up is at
    least 1.0, and no window is more than ``GRAPH_SLOWER_TOLERANCE`` slower. ``use`` and the reason."""
    mine = [r for r in rows if r.get("model") == model and r.get("precision") == precision and "skipped" not in r]
    measured = [r for r in mine if "graph_ms_median" in r]
    out: dict = {"use": False, "windows": len(measured)}
    if not measured:
        failed = [r for r in mine if "graph" in r]
        out["reason"] = "capture failed" if failed else "no window was measured with a graph"
        return out
    speedups = [r["graph_speedup"] for r in measured]
    worst_db = max(r["graph_error_db_vs_eager"] for r in measured)
    out.update(speedup_median=round(float(np.median(speedups)), 3), speedup_min=min(speedups),
               worst_error_db=worst_db, limit_db=MATCH_DB[precision])
    if len(measured) < len(mine):
        out["reason"] = f"capture failed for {len(mine) - len(measured)} of {len(mine)} windows"
    elif worst_db > MATCH_DB[precision]:
        out["reason"] = f"a replay differs from eager by {worst_db} dB (limit {MATCH_DB[precision]} dB)"
    elif out["speedup_median"] < 1.0:
        out["reason"] = f"not faster (median speed-up {out['speedup_median']})"
    elif min(speedups) < 1.0 - GRAPH_SLOWER_TOLERANCE:
        out["reason"] = f"one window is slower (speed-up {min(speedups)})"
    else:
        out.update(use=True, reason=f"exact, median speed-up {out['speedup_median']}")
    return out


def ingress_cost(cfg, window_s: float, hop_s: float, hops: int = 200) -> dict:
    """The ingress's numpy work per stream and hop, on this machine's CPU: the hop's frame decoded, the
    window slid (:class:`StreamState`), the stems overlap-added and the region encoded (fp32 wire)."""
    window, hop = int(round(window_s * cfg.sample_rate)), int(round(hop_s * cfg.sample_rate))
    info = ModelInfo(name="check", sample_rate=cfg.sample_rate, channels=cfg.channels, stems=list(cfg.stems),
                     window=window, hop=hop, lookahead=hop, crossfade=None, chunk_size=cfg.chunk_size,
                     num_overlap=cfg.num_overlap, config={})
    state = StreamState(info)
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((cfg.channels, hop)).astype(np.float32)
    stems = rng.standard_normal((len(cfg.stems), cfg.channels, window)).astype(np.float32)
    times = []
    for k in range(hops):
        frame = pack(Kind.HOP, 0, k, samples)       # what the client sends (its cost is the client's)
        start = time.perf_counter()
        _, _, index, data = unpack(frame, lambda kd, c: state.shape_of(kd.name))
        win = state.push(index, data)
        region = state.finish(stems, win)
        pack(Kind.REGION, 0, index, region)
        times.append(time.perf_counter() - start)
    per = float(np.median(times))
    return {"window_s": window_s, "hop_s": hop_s, "us_per_stream_hop_median": round(1e6 * per, 1),
            "us_per_stream_hop_p99": round(1e6 * float(np.percentile(times, 99)), 1),
            "streams_per_ingress_core": int(hop_s / per)}


def streams_per_batch(batch: int, ms: float, hop_s: float) -> int | None:
    """Streams one replica serves at ``hop_s`` with batches of ``batch`` windows taking ``ms`` each:
    ``floor(hop / t) * batch`` (that many batches fit in a hop), or None when ``2 * t > hop`` (a window
    arriving just after a batch started waits for it, then runs in the next one: too late)."""
    t = ms / 1e3
    return None if 2 * t > hop_s else int(hop_s / t + 1e-9) * int(batch)


def serving_capacity(rows: list[dict], hop_s: float) -> dict:
    """The best of the measured batch sizes (rows with ``batch`` and ``ms_median``) by
    :func:`streams_per_batch`, or 0 streams when even one window per batch is too slow."""
    best = {"streams": 0, "batch": None, "ms_per_batch": None}
    for row in rows:
        if "ms_median" not in row:
            continue
        streams = streams_per_batch(row["batch"], row["ms_median"], hop_s)
        if streams is not None and streams > best["streams"]:
            best = {"streams": streams, "batch": row["batch"], "ms_per_batch": row["ms_median"]}
    return best


def end_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group ``proc`` leads (started with start_new_session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=5.0)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        proc.communicate(timeout=5.0)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def goals(results: dict) -> dict:
    """The goals the issue holds the numbers against (8 s window, viperx size, bf16)."""
    sec = results["sections"]
    out: dict = {}
    hop = sec.get("hop_search", {}).get("windows", {}).get("8", {}).get("smallest_hop_s")
    out["hop_8s_le_50ms"] = None if hop is None else hop <= 0.05
    rows = [r for r in sec.get("timings", {}).get("rows", []) if r.get("window_s") == 8.0
            and r.get("precision") == "bf16" and r.get("model", "").startswith("viperx")]
    if rows and rows[0].get("x_floor") is not None:
        out["window_8s_within_3x_floor"] = rows[0]["x_floor"] <= 3.0
    speed = sec.get("offline", {}).get("speedup_vs_reference")
    out["offline_2x_reference"] = None if speed is None else speed >= 2.0
    return out


def markdown(results: dict) -> str:
    """The report as Markdown tables (what goes into BENCHMARKS.md)."""
    sec = results.get("sections", {})
    lines = ["# GPU check", ""]
    pre = results.get("preflight", {})
    if pre:
        pk = pre.get("packages", {})
        lines += [f"Preflight: Python {pre.get('python')}, " + ", ".join(f"{k} {pk.get(k)}" for k in (
            "torch", "numpy", "numba", "einops", "rotary_embedding_torch")) +
            f"; /dev/shm {pre.get('shm', {}).get('free_mib')} MiB free; {pre.get('cpu_count')} CPUs.", ""]
        lines += [f"- problem: {p}" for p in pre.get("problems", [])] + ([""] if pre.get("problems") else [])
    env = sec.get("environment", {})
    if env:
        rate = (f"dense bf16 matmul {env['bf16_tflops_measured']}" if "bf16_tflops_measured" in env
                else f"dense fp32 matmul {env.get('fp32_tflops_measured')}")
        lines += [f"Device: {env.get('gpu')} ({env.get('memory_gib', '-')} GiB, driver {env.get('driver', '-')}), "
                  f"torch {env.get('torch')}, CUDA {env.get('cuda')}; measured {rate} TFLOP/s (the floor's yardstick).",
                  ""]
    cor = sec.get("correctness", {})
    if "offline_exact_max_diff" in cor:
        lines += ["## Correctness on the device", "",
                  f"- offline-exact engine vs `demix`: max difference {cor['offline_exact_max_diff']:.3g}",
                  f"- residual stems' sum vs the input: max error {cor['residual_sum_max_error']:.3g} (residual "
                  f"`other`), {cor.get('spread_sum_max_error', float('nan')):.3g} (spread)", ""]
        limits = cor.get("precision_limit_db", {})
        lines += ["| model | " + " | ".join(f"{p} vs fp32 (dB, limit {limits.get(p, '-')})" for p in ("bf16", "fp16"))
                  + " |", "|---|---|---|"]
        for name, row in cor.get("precision_error_db", {}).items():
            cells = [f"{row.get(p, '-')}{'' if row.get(p + '_within_limit', True) else ' OVER LIMIT'}" for p in ("bf16", "fp16")]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        lines.append("")
    tim = sec.get("timings", {})
    if tim.get("rows"):
        lines += ["## Time per window", "",
                  "| model | window | precision | eager ms (median, min) | CUDA graph ms (median, min) | graph vs eager "
                  "(dB) | speed-up | GFLOP | floor ms | best / floor |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in tim["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['model']} | {r['window_s']:g} s | | skipped ({r['skipped']}) | | | | | | |")
                continue
            eager = f"{r.get('eager_ms_median', '-')}, {r.get('eager_ms_min', '-')}" if "eager_ms_median" in r \
                else r.get("note", "-")
            graph = f"{r['graph_ms_median']}, {r['graph_ms_min']}" if "graph_ms_median" in r else r.get("graph", "-")
            lines.append(f"| {r['model']} | {r['window_s']:g} s | {r['precision']} | {eager} | {graph} | "
                         f"{r.get('graph_error_db_vs_eager', '-')} | {r.get('graph_speedup', '-')} | {r['gflop']} | "
                         f"{r.get('floor_ms', '-')} | {r.get('x_floor', '-')} |")
        lines.append("")
        if tim.get("graph_decisions"):
            lines += [f"CUDA graph decision per model and precision (exact within the precision's tolerance, median "
                      f"speed-up >= 1.0, no window more than {GRAPH_SLOWER_TOLERANCE:.0%} slower):", ""]
            for name, by_precision in tim["graph_decisions"].items():
                lines.append(f"- {name}: " + "; ".join(f"{p} **{d['use']}** ({d.get('reason', '')})"
                                                       for p, d in by_precision.items()))
            lines.append("")
    comp = sec.get("torch_compile", {})
    if comp and "skipped" not in comp and "error" not in comp:
        lines += [f"torch.compile ({comp.get('model')}, {comp.get('window_s')} s, {comp.get('precision')}): "
                  f"{ {k: v for k, v in comp.items() if k not in ('model', 'window_s', 'precision')} }", ""]
    hop = sec.get("hop_search", {})
    if hop.get("windows"):
        lines += [f"## Smallest sustainable hop ({hop['model']}, {hop['precision']}, real-time pace, zero misses)", "",
                  f"Worker: {hop.get('worker', '-')} ({hop.get('worker_reason', '-')}); CUDA graph: {hop.get('cuda_graph', '-')}.",
                  "",
                  "| window | hop | latency ms | misses | inference ms (median, p99) | RTF | CUDA graph |",
                  "|---|---|---|---|---|---|---|"]
        for w, info in hop["windows"].items():
            for t in info["trials"]:
                if "skipped" in t:
                    lines.append(f"| {w} s | {t['hop_s'] * 1000:.0f} ms | skipped | | | | |")
                    continue
                lines.append(f"| {w} s | {t['hop_s'] * 1000:.0f} ms | {t['latency_ms']} | {t['misses']} | "
                             f"{t['infer_ms_median']}, {t['infer_ms_p99']} | {t['realtime_factor']} | {t['cuda_graph']} |")
            lines.append(f"| {w} s | **smallest: {info['smallest_hop_s']}** | | | | | |")
        lines.append("")
    srv = sec.get("serving", {})
    if srv.get("windows"):
        lines += [f"## Serving: streams per device with batching ({srv['model']}, {srv['precision']}, "
                  f"{srv['hop_s'] * 1000:.0f} ms hop)", "",
                  "The replica's batch call (host to device, forward, device to host) timed per batch size; a batch "
                  "of b taking t serves floor(hop / t) * b streams when 2 t <= hop.", "",
                  "| window | batch | ms per batch (median, min) | windows/s | peak GiB | streams |",
                  "|---|---|---|---|---|---|"]
        for w, info in srv["windows"].items():
            for r in info["rows"]:
                if "ms_median" not in r:
                    lines.append(f"| {w} s | {r['batch']} | {r.get('skipped') or r.get('error')} | | | |")
                    continue
                streams = streams_per_batch(r["batch"], r["ms_median"], srv["hop_s"])
                streams = "over half the hop" if streams is None else streams
                lines.append(f"| {w} s | {r['batch']} | {r['ms_median']}, {r['ms_min']} | {r['windows_per_s']} | "
                             f"{r.get('peak_gib', '-')} | {streams} |")
            lines.append(f"| {w} s | **best: {info.get('streams', 0)} streams** (batch {info.get('batch')}) | | | | |")
        lines.append("")
        ing = srv.get("ingress", {})
        if ing:
            lines += [f"Ingress numpy work per stream and hop ({ing['window_s']:g} s window, {ing['hop_s'] * 1000:.0f} "
                      f"ms hop, this machine's CPU): median {ing['us_per_stream_hop_median']} us, p99 "
                      f"{ing['us_per_stream_hop_p99']} us: about {ing['streams_per_ingress_core']} streams per ingress "
                      f"core. N devices with one replica each hold N times the streams above.", ""]
    off = sec.get("offline", {})
    if "rtf_ours" in off:
        lines += ["## Offline demix", "",
                  f"{off['model']}, {off['audio_s']:.0f} s of audio, overlap {off['overlap']}, batch {off['batch_size']}: "
                  f"ours ({off['ours_precision']}, CUDA graph {off['ours_cuda_graph']}) real-time factor {off['rtf_ours']}; "
                  f"plain eager fp16 autocast {off['rtf_reference']}; speed-up {off['speedup_vs_reference']}x; "
                  f"difference {off['ours_vs_reference_error_db']} dB.", ""]
    failed = {k: v["error"] for k, v in sec.items() if isinstance(v, dict) and "error" in v}
    skipped = {k: v["skipped"] for k, v in sec.items() if isinstance(v, dict) and "skipped" in v}
    unfinished = {k: "unfinished (the run was cut short here)" for k, v in sec.items()
                  if isinstance(v, dict) and v.get("unfinished")}
    if failed or skipped or unfinished:
        lines += ["## Failed, skipped or unfinished sections", ""] + [
            f"- {k}: {v}" for k, v in {**failed, **skipped, **unfinished}.items()] + [""]
    if results.get("goals"):
        lines += ["## Goals", ""] + [f"- {k}: {v}" for k, v in results["goals"].items()] + [""]
    if "total_seconds" in results:
        lines.append(f"Total: {results['total_seconds']} s.")
    return "\n".join(lines) + "\n"


def _compile_probe(config: str, seconds: float, precision: str, limit: float) -> None:
    """Child process: torch.compile the model for one window and time it; prints one JSON line."""
    loaded = load_model(config, device="cuda", seed=0)
    cfg = loaded.config
    x = torch.randn(1, cfg.channels, int(round(seconds * cfg.sample_rate)), device="cuda") * 0.1
    compiled = torch.compile(loaded.model)
    start = time.perf_counter()
    with torch.inference_mode(), autocast_context("cuda", precision):
        compiled(x)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        if compile_s > limit:
            print(json.dumps({"result": f"compiled in {compile_s:.0f} s, over the {limit:.0f} s limit",
                              "compile_s": round(compile_s, 1)}), flush=True)
            return
        times = []
        for _ in range(10):
            torch.cuda.synchronize()
            t = time.perf_counter()
            compiled(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    print(json.dumps({"result": "compiled", "compile_s": round(compile_s, 1),
                      "ms_median": round(1e3 * float(np.median(times)), 2), "precision": precision}), flush=True)


def _preflight(out: str) -> dict:
    """The preflight ``gpu_run`` wrote before any heavy import, or a fresh one (the check run alone)."""
    try:
        with open(os.path.join(out, "preflight.json")) as fh:
            facts = json.load(fh)
        if "problems" in facts:
            return facts
    except (OSError, ValueError):
        pass
    return preflight(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamer.lab.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, short settings")
    parser.add_argument("--budget", type=float, help="seconds after which remaining sections are skipped")
    parser.add_argument("--compile-probe", nargs=4, metavar=("CONFIG", "SECONDS", "PRECISION", "LIMIT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_probe:
        config, seconds, precision, limit = args.compile_probe
        _compile_probe(config, float(seconds), precision, float(limit))
        return 0
    if not args.out:
        parser.error("the output folder is required")
    os.makedirs(args.out, exist_ok=True)
    facts = _preflight(args.out)
    print(summary(facts), flush=True)
    if args.dry_run:
        plan = Plan.dry_run(tempfile.mkdtemp(prefix="gpu_check_", dir=args.out))
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device here; use --dry-run for the CPU rehearsal", file=sys.stderr)
            return 1
        plan = Plan()
    if args.budget:
        plan.budget_seconds = args.budget
    check = Check(plan, args.out)
    check.results["preflight"] = facts
    results = check.run()
    failed = [k for k, v in results["sections"].items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
