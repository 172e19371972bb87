"""Separation quality against latency: offline ``demix`` and the streaming engine at several settings.

``stemstream eval`` runs every song of a MUSDB18-HQ-layout folder through offline separation and
through the streaming engine (inline mode, so the numbers do not depend on the machine's speed)
at each latency preset and any explicit settings, and reports per stem and on average the median
per-second SDR (MUSDB convention) and the whole-track uSDR (SDX23 convention). ``residual`` scores
the stems as a live separator makes them sum to the input (``streamer.inference.residual``), offline
and streaming alike; by default the model's stems are scored as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import load_stems, song_folders, stem_path
from ..inference.demix import demix
from ..inference.residual import apply_residual, model_residual_index
from ..msst.config import Config
from ..stream.engine import StreamEngine
from ..stream.settings import StreamSettings, preset_settings
from .metrics import sdr_median_per_second, usdr


@dataclass
class Setting:
    """One row of the evaluation: offline, or the engine with given settings."""

    name: str
    stream: StreamSettings | None = None       # None: offline demix
    realtime_latency: int = 0                   # samples a live run adds up to (incl. one hop allowance)


@dataclass
class Scores:
    setting: Setting
    sdr: dict[str, list[float]] = field(default_factory=dict)
    usdr: dict[str, list[float]] = field(default_factory=dict)

    def stem(self, stem: str, kind: str = "sdr") -> float:
        """Mean over songs for one stem."""
        vals = (self.sdr if kind == "sdr" else self.usdr)[stem]
        return float(np.nanmean(vals)) if vals else float("nan")

    def mean(self, kind: str = "sdr") -> float:
        """Mean over stems of the per-stem means."""
        return float(np.mean([self.stem(s, kind) for s in self.sdr]))


def settings_list(config: Config, presets: list[str], explicit: list[tuple[float, float, float]]) -> list[Setting]:
    rate = config.sample_rate
    out = [Setting("offline")]
    for name in presets:
        s = preset_settings(name, config)
        out.append(Setting(name, s, s.live_latency))
    for window, hop, lookahead in explicit:
        w, h, a = (int(round(v * rate)) for v in (window, hop, lookahead))
        s = StreamSettings.make(w, h, a, None, rate)
        out.append(Setting(f"w{window:g}/h{hop:g}/a{lookahead:g}", s, s.live_latency))
    return out


def separate_with(model, config: Config, setting: Setting, mix: np.ndarray, block: int = 4096,
                  precision: str | None = None, backend: str = "torch", residual: str | None = None) -> np.ndarray:
    """(stems, channels, samples) for ``mix`` by offline demix or the engine (aligned, same length), in
    ``precision`` with ``backend`` (see ``streamer.make_runner``), made to sum to ``mix`` as ``residual``
    asks (None: as the model made them; "spread"; or one of the model's stems)."""
    index = model_residual_index(config.stems, residual)  # an extra stem would have no reference to score against
    if setting.stream is None:
        est = demix(model, mix, config.chunk_size, config.num_overlap, batch_size=max(1, config.batch_size),
                    precision=precision, backend=backend)
        return apply_residual(est, mix, index)
    s = setting.stream
    engine = StreamEngine(model, config.stems, config.sample_rate, window=s.window, hop=s.hop, lookahead=s.lookahead,
                          crossfade=s.crossfade, channels=config.channels, precision=precision, backend=backend,
                          residual=residual)
    return engine.separate(mix, block)


def evaluate(model: torch.nn.Module, config: Config, data: list[str], settings: list[Setting],
             seconds: float | None = None, progress: bool = True, precision: str | None = None,
             backend: str = "torch", residual: str | None = None) -> list[Scores]:
    stems = list(config.stems)
    folders = song_folders(data, stems)
    results = [Scores(s, {k: [] for k in stems}, {k: [] for k in stems}) for s in settings]
    # the unprocessed mixture as every stem's estimate: the baseline improvements are measured from
    baseline = Scores(Setting("mixture (no separation)"), {k: [] for k in stems}, {k: [] for k in stems})
    rate = config.sample_rate
    model.eval()
    bar = tqdm(total=len(folders) * len(settings), desc="evaluating", disable=not progress, leave=False)
    for folder in folders:
        truth = load_stems(folder, stems, rate, config.channels)
        if seconds:
            truth = truth[..., : int(seconds * rate)]
        if stem_path(folder, "mixture"):
            mix = load_stems(folder, ["mixture"], rate, config.channels)[0][..., : truth.shape[-1]]
        else:
            mix = truth.sum(axis=0)
        for res in results:
            est = separate_with(model, config, res.setting, mix, precision=precision, backend=backend,
                                residual=residual)
            for i, stem in enumerate(stems):
                res.sdr[stem].append(sdr_median_per_second(truth[i], est[i], rate))
                res.usdr[stem].append(usdr(truth[i], est[i]))
            bar.update(1)
        for i, stem in enumerate(stems):
            baseline.sdr[stem].append(sdr_median_per_second(truth[i], mix, rate))
            baseline.usdr[stem].append(usdr(truth[i], mix))
    bar.close()
    return [baseline] + results


def format_table(results: list[Scores], rate: int) -> str:
    """Per-stem SDR, mean SDR, mean uSDR and the mean improvement over the mixture (first row)."""
    stems = list(results[0].sdr)
    head = (f"{'setting':<24} {'latency':>9} " + " ".join(f"{s:>8}" for s in stems)
            + f" {'mean':>7} {'uSDR':>7} {'SDRi':>6}")
    lines = [head, "-" * len(head)]
    base = results[0].mean()
    for r in results:
        lat = "" if r.setting.stream is None else f"{1000 * r.setting.realtime_latency / rate:.0f} ms"
        if r.setting.name == "offline":
            lat = "offline"
        lines.append(f"{r.setting.name:<24} {lat:>9} " + " ".join(f"{r.stem(s):>8.2f}" for s in stems)
                     + f" {r.mean():>7.2f} {r.mean('usdr'):>7.2f} {r.mean() - base:>6.2f}")
    return "\n".join(lines)


def plot(results: list[Scores], rate: int, path: str, title: str = "") -> None:
    """SDR against live latency, per stem and on average; offline as a dashed line."""
    stems = list(results[0].sdr)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stream = sorted((r for r in results if r.setting.stream is not None), key=lambda r: r.setting.realtime_latency)
    offline = next((r for r in results if r.setting.name == "offline"), None)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, stem in enumerate(stems + ["mean"]):
        if stem == "mean":
            ys = [r.mean() for r in stream]
            off = offline.mean() if offline else None
        else:
            ys = [r.stem(stem) for r in stream]
            off = offline.stem(stem) if offline else None
        xs = [1000 * r.setting.realtime_latency / rate for r in stream]
        style = dict(color="black", linewidth=2.5) if stem == "mean" else dict(color=colors[i % len(colors)])
        ax.plot(xs, ys, marker="o", label=stem, **style)
        if off is not None:
            ax.axhline(off, linestyle="--", linewidth=1, **{k: v for k, v in style.items() if k == "color"})
        for x, y, r in zip(xs, ys, stream):
            if stem == "mean":
                ax.annotate(r.setting.name, (x, y), textcoords="offset points", xytext=(0, -14), fontsize=8,
                            ha="center")
    ax.set_xlabel("live latency (ms): look-ahead + hop + one-hop compute allowance")
    ax.set_ylabel("SDR (dB, median per second)")
    ax.set_title(title or "Separation quality against latency (dashed: offline)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def spectrogram_png(signals: dict[str, np.ndarray], rate: int, path: str) -> None:
    """One log-magnitude spectrogram panel per signal (channel average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(signals), 1, figsize=(9, 1.8 * len(signals)), dpi=100, sharex=True)
    axes = np.atleast_1d(axes)
    for ax, (name, x) in zip(axes, signals.items()):
        mono = np.asarray(x).mean(axis=0)
        spec = torch.stft(torch.from_numpy(mono.astype(np.float32)), 2048, 512, window=torch.hann_window(2048),
                          return_complex=True).abs().numpy()
        db = 20 * np.log10(spec + 1e-6)
        ax.imshow(db, origin="lower", aspect="auto", vmin=db.max() - 80, vmax=db.max(), cmap="magma",
                  extent=(0, len(mono) / rate, 0, rate / 2000))
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
