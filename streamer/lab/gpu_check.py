"""The GPU check: one prepared, self-checking run that measures the GPU path and says what it found.

    python -m streamer.lab.gpu_check OUT            # on a CUDA machine (about 7 minutes on one H200)
    python -m streamer.lab.gpu_check OUT --dry-run  # the same code on CPU with tiny models (seconds)
    stemstream bench-gpu OUT [--dry-run]             # the same through the CLI

It writes ``OUT/gpu_check.json`` (every number) and ``OUT/gpu_check.md`` (the tables for
BENCHMARKS.md) and prints progress as it goes. Sections, each guarded so that a failure in one is
recorded and the others still run:

1. environment: GPU, driver, torch, CUDA, and a measured dense bf16 matmul rate (the floor's yardstick);
2. correctness on the device: the engine's offline-exact setting against ``demix`` (max difference),
   the stems' sum against the delayed input (a residual stem, and the residual spread), and
   bf16/fp16 against fp32 (error energy in dB) for the demo model and random-weight models of the
   viperx BS-RoFormer 512x12 and Kim Mel-RoFormer 384x6 architectures;
3. time per window for those two at 2, 4 and 8 s, fp32/bf16/fp16, eager and as a CUDA graph (with
   the graph's error against eager), FLOPs per window (``torch.utils.flop_counter``) and the
   arithmetic floor (FLOPs / measured bf16 rate); ``torch.compile`` in a child process, only if it
   compiles within its time limit (the compile time is recorded either way);
4. offline ``demix`` of 3 minutes at overlap 2: real-time factor of our path (bf16, CUDA graph when
   it works) and the ratio to a plain eager fp16-autocast run of the same model and settings (the
   reference implementation's way), interleaved in one process;
5. the smallest hop the real-time engine sustains with zero misses over real-time-paced input, at
   8 s and 4 s windows, viperx size in bf16 (hops largest first, stopping at the first failure).

A time budget keeps the whole run inside its limit: sections that would start after it are
recorded as skipped.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
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
from ..inference.precision import autocast_context
from ..stream.engine import StreamEngine
from ..stream.settings import preset_settings
from .benchmarks import run_realtime
from .testsignals import generated_clip

_TEST_CONFIGS = Path(__file__).resolve().parents[2] / "tests" / "data" / "msst-configs"
VIPERX = _TEST_CONFIGS / "viperx" / "model_bs_roformer_ep_317_sdr_12.9755.yaml"
KIM = _TEST_CONFIGS / "KimberleyJensen" / "config_vocals_mel_band_roformer_kj.yaml"

TINY_BS = {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "stereo": True, "num_stems": 1,
           "time_transformer_depth": 1, "freq_transformer_depth": 1, "stft_hop_length": 441}
TINY_MEL = {**TINY_BS, "num_bands": 8}


@dataclass
class Plan:
    """What to measure. The defaults are the full check for one H200 (about 7 minutes)."""

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
    hop_seconds: float = 30.0
    offline_model: str = "viperx_bs_512x12"
    offline_seconds: float = 180.0
    offline_overlap: int = 2
    offline_runs: int = 2
    correctness_seconds: float = 10.0
    budget_seconds: float = 420.0

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
                   offline_runs=1, correctness_seconds=4.0, budget_seconds=300.0)


class Check:
    """Runs the plan's sections and keeps every result (and every error) for the report."""

    def __init__(self, plan: Plan, out: str):
        self.plan = plan
        self.out = out
        self.device = torch.device(plan.device)
        self.t0 = time.monotonic()
        self.results: dict = {"plan": asdict(self.plan), "sections": {}}
        self._models: dict = {}

    # ------------------------------------------------------------------ helpers
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {text}", flush=True)

    def over_budget(self) -> bool:
        return time.monotonic() - self.t0 > self.plan.budget_seconds

    def section(self, name: str, fn) -> None:
        if self.over_budget():
            self.results["sections"][name] = {"skipped": "time budget spent"}
            self.say(f"{name}: skipped (time budget)")
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

    def save(self) -> None:
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "gpu_check.json"), "w") as fh:
            json.dump(self.results, fh, indent=1, default=str)
        with open(os.path.join(self.out, "gpu_check.md"), "w") as fh:
            fh.write(markdown(self.results))

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
                    with autocast_context(self.device, precision):
                        half = loaded.model(x).float()
                    row[precision] = round(error_db(half, fp32), 1) if self.device.type == "cuda" else "n/a on CPU"
            errors[name] = row
            self.say(f"precision error vs fp32, {name}: {row}")
        out["precision_error_db"] = errors
        return out

    def timings(self) -> dict:
        from torch.utils.flop_counter import FlopCounterMode

        rows = []
        for name in self.plan.models:
            loaded = self.model(name)
            cfg = loaded.config
            for seconds in self.plan.windows:
                if self.over_budget():
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
                    self.say(f"{name} {seconds:g} s {precision}: eager {row.get('eager_ms_median')} ms, "
                             f"graph {row.get('graph_ms_median', row.get('graph', '-'))} ms, floor {row['floor_ms']} ms")
        result: dict = {"rows": rows}
        graphed = [r for r in rows if "graph_ms_median" in r]
        result["graph_exact_and_faster"] = bool(graphed) and all(
            r["graph_error_db_vs_eager"] <= MATCH_DB[r["precision"]] and r["graph_speedup"] > 1.0 for r in graphed)
        if self.plan.compile_timeout > 0 and self.device.type == "cuda":
            result["torch_compile"] = self.compile_probe()
        return result

    def compile_probe(self) -> dict:
        name = self.plan.hop_model
        seconds = max(self.plan.windows)
        cmd = [sys.executable, "-m", "streamer.lab.gpu_check", "--compile-probe", self.plan.models[name],
               str(seconds), self.plan.hop_precision, str(self.plan.compile_timeout)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.plan.compile_timeout + 45)
        except subprocess.TimeoutExpired:
            return {"model": name, "window_s": seconds, "result": f"did not compile within {self.plan.compile_timeout:.0f} s"}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"model": name, "window_s": seconds, "result": "failed", "stderr": done.stderr[-2000:]}
        info = json.loads(lines[-1])
        self.say(f"torch.compile: {info}")
        return {"model": name, "window_s": seconds, **info}

    def hop_search(self) -> dict:
        loaded = self.model(self.plan.hop_model)
        cfg = loaded.config
        cpu_model = copy.deepcopy(loaded.model).cpu()  # handed to the worker process through shared memory
        graph = self.results["sections"].get("timings", {}).get("graph_exact_and_faster", False)
        found = {}
        for window_s in self.plan.hop_windows:
            trials = []
            for hop_s in self.plan.hops:
                if self.over_budget():
                    trials.append({"hop_s": hop_s, "skipped": "time budget"})
                    break
                window = int(round(window_s * cfg.sample_rate))
                hop = int(round(hop_s * cfg.sample_rate))
                engine = StreamEngine(cpu_model, cfg.stems, cfg.sample_rate, window=window, hop=hop, lookahead=hop,
                                      residual=default_residual(cfg.stems), device=self.device, precision=self.plan.hop_precision,
                                      realtime=True, worker="process", channels=cfg.channels, cuda_graph=graph)
                with engine:
                    r = run_realtime(engine, self.plan.hop_seconds, 256)
                st = r.stats
                trial = {"hop_s": hop_s, "latency_ms": round(st["latency_ms"], 1), "misses": st["deadline_misses"],
                         "infer_ms_median": round(st["infer_ms_median"], 2), "infer_ms_p99": round(st["infer_ms_p99"], 2),
                         "realtime_factor": round(st["realtime_factor"], 3), "cuda_graph": st["cuda_graph"],
                         "error": st["error"]}
                trials.append(trial)
                self.say(f"window {window_s:g} s, hop {hop_s * 1000:.0f} ms: {trial}")
                if st["deadline_misses"] or st["error"]:
                    break
            ok = [t["hop_s"] for t in trials if t.get("misses") == 0 and not t.get("error")]
            found[f"{window_s:g}"] = {"trials": trials, "smallest_hop_s": min(ok) if ok else None}
        return {"model": self.plan.hop_model, "precision": self.plan.hop_precision, "windows": found}

    def offline(self) -> dict:
        loaded = self.model(self.plan.offline_model)
        cfg = loaded.config
        mix = self.clip(self.plan.offline_seconds, cfg.sample_rate, cfg.channels)
        graph = self.results["sections"].get("timings", {}).get("graph_exact_and_faster", False)
        ours_precision = "bf16" if self.device.type == "cuda" else "fp32"
        runs = {"reference_eager_fp16": [], "ours": []}
        outputs = {}
        for _ in range(self.plan.offline_runs):
            for key in runs:
                if key == "ours":
                    kw = dict(precision=ours_precision, cuda_graph=graph, batch_size=cfg.batch_size)
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
                  "batch_size": cfg.batch_size, "ours_precision": ours_precision, "ours_cuda_graph": graph,
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
        self.section("offline", self.offline)
        self.section("hop_search", self.hop_search)
        self.results["total_seconds"] = round(time.monotonic() - self.t0, 1)
        self.results["goals"] = goals(self.results)
        self.save()
        self.say(f"done in {self.results['total_seconds']} s: {self.out}/gpu_check.md")
        return self.results


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
        lines += ["| model | " + " | ".join(f"{p} vs fp32 (dB)" for p in ("bf16", "fp16")) + " |", "|---|---|---|"]
        for name, row in cor.get("precision_error_db", {}).items():
            lines.append(f"| {name} | {row.get('bf16', '-')} | {row.get('fp16', '-')} |")
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
        lines += ["", f"CUDA graphs exact (within the precision's tolerance) and faster in every measured row: "
                      f"{tim.get('graph_exact_and_faster')}", ""]
        if "torch_compile" in tim:
            lines += [f"torch.compile: {tim['torch_compile']}", ""]
    hop = sec.get("hop_search", {})
    if hop.get("windows"):
        lines += [f"## Smallest sustainable hop ({hop['model']}, {hop['precision']}, real-time pace, zero misses)", "",
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
    off = sec.get("offline", {})
    if "rtf_ours" in off:
        lines += ["## Offline demix", "",
                  f"{off['model']}, {off['audio_s']:.0f} s of audio, overlap {off['overlap']}, batch {off['batch_size']}: "
                  f"ours ({off['ours_precision']}, CUDA graph {off['ours_cuda_graph']}) real-time factor {off['rtf_ours']}; "
                  f"plain eager fp16 autocast {off['rtf_reference']}; speed-up {off['speedup_vs_reference']}x; "
                  f"difference {off['ours_vs_reference_error_db']} dB.", ""]
    failed = {k: v["error"] for k, v in sec.items() if isinstance(v, dict) and "error" in v}
    skipped = {k: v["skipped"] for k, v in sec.items() if isinstance(v, dict) and "skipped" in v}
    if failed or skipped:
        lines += ["## Failed or skipped sections", ""] + [f"- {k}: {v}" for k, v in {**failed, **skipped}.items()] + [""]
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
    if args.dry_run:
        plan = Plan.dry_run(tempfile.mkdtemp(prefix="gpu_check_", dir=args.out))
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device here; use --dry-run for the CPU rehearsal", file=sys.stderr)
            return 1
        plan = Plan()
    if args.budget:
        plan.budget_seconds = args.budget
    results = Check(plan, args.out).run()
    failed = [k for k, v in results["sections"].items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
