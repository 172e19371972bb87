"""Training a small Roformer on stems in MUSDB18-HQ layout (``stemstream train``).

Data: folders with one sub-folder per song holding ``vocals``, ``drums``, ``bass`` and ``other`` as
.wav or .flac (a mixture is not needed: mixtures are made by random remixing). Each training
example takes every stem from a random song at a random offset and augments it on the fly
(``streamer.lab.augment``: speed, gain, polarity, channel swap, effects, missing stems, mix-bus
compression and limiting), so the model sees far more mixtures than there are songs.

Loss: waveform L1 plus L1 between STFT magnitudes at two resolutions (cheap on CPU).
Weights averaged over steps (``ema``, on by default in ``stemstream train``): an exponential moving
average of the weights is kept beside the trained ones, and it is what validation scores and
``model.ckpt`` holds. With small batches the weights of single steps swing (the validation SDR of the
demo candidate moved up to 0.74 dB between checkpoints 300 steps apart, its average at most 0.13 dB).
Output: ``OUT/model.ckpt`` (a plain state_dict, the best validation score so far) and
``OUT/config.yaml`` (the MSST-format config), which ``separate``, ``eval`` and the streaming engine
load like any community checkpoint; ``OUT/last.ckpt`` holds the training state for ``--resume``.
Every output file is written under a temporary name (``NAME.part``), flushed to the disk (fsync) and
renamed: a run killed or out of disk space while saving leaves the previous complete file.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..audio import load_stems, song_folders
from ..inference.demix import demix
from ..msst.config import Config
from .augment import Augment
from .metrics import sdr_median_per_second

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    steps: int = 2000
    batch_size: int = 4
    segment_seconds: float = 1.0
    lr: float = 1e-3
    warmup_steps: int = 100
    val_every: int = 200
    val_seconds: float = 12.0       # validate on the first seconds of each validation song
    seed: int = 0
    device: str = "cpu"
    grad_clip: float = 5.0
    augment: bool = True            # streamer.lab.augment's defaults; False: remix, gain and swap only
    max_minutes: float | None = None  # stop (resumably) after this much training time in this run
    ema: float = 0.0                # decay of the weights' moving average (0: off; see the module docstring)


class RemixDataset:
    """All songs in memory, in float16 (half of float32's memory: 400 songs of 20 s take 6.8 GB instead of
    13.5 GB, so two runs or a run and the tests fit a 24 GB machine; float16 keeps 11 bits of mantissa,
    a relative rounding error under -66 dB, far below what separation training resolves). ``batch``
    draws randomly remixed examples in float32: every stem from a random song at a random offset,
    augmented (``streamer.lab.augment``: speed, gain, polarity, channels, effects, missing stems, the
    mix bus); the mixture is always the exact sum of the stems."""

    def __init__(self, folders: list[str], stems: list[str], rate: int, channels: int,
                 augment: Augment | None = None):
        self.stems = stems
        self.rate = rate
        self.augment = augment if augment is not None else Augment.off()
        self.folders = list(folders)
        self.songs = [load_stems(f, stems, rate, channels).astype(np.float16)
                      for f in tqdm(folders, desc="loading songs", leave=False)]

    def batch(self, rng: np.random.Generator, size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixture (B, C, L), stems (B, S, C, L))."""
        aug = self.augment
        out = np.zeros((size, len(self.stems), self.songs[0].shape[1], length), np.float32)
        for b in range(size):
            for s in range(len(self.stems)):
                song = self.songs[rng.integers(len(self.songs))]
                need, speed = aug.read_length(rng, length)
                start = rng.integers(0, max(1, song.shape[-1] - need))
                out[b, s] = aug.stem(song[s, :, start:start + need].astype(np.float32), speed, length, self.rate, rng)
            out[b] = aug.mix_bus(out[b], self.rate, rng)
        stems = torch.from_numpy(out)
        return stems.sum(dim=1), stems


def separation_loss(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Waveform L1 + STFT-magnitude L1 at 2048/512 and 512/128 (n_fft/hop)."""
    loss = F.l1_loss(est, ref)
    e = est.reshape(-1, est.shape[-1])
    r = ref.reshape(-1, ref.shape[-1])
    for n_fft, hop in ((2048, 512), (512, 128)):
        window = torch.hann_window(n_fft, device=est.device)
        se = torch.stft(e, n_fft, hop, window=window, return_complex=True).abs()
        sr = torch.stft(r, n_fft, hop, window=window, return_complex=True).abs()
        loss = loss + F.l1_loss(se, sr)
    return loss


def evaluate_songs(model, songs: list[np.ndarray], stems: list[str], rate: int, chunk: int, overlap: int,
                   seconds: float | None = None) -> dict[str, float]:
    """Mean over songs of the per-second-median SDR per stem, and of its improvement over the mixture."""
    scores = {s: [] for s in stems}
    gains = {s: [] for s in stems}
    model.eval()
    for song in songs:
        if seconds:
            song = song[..., : int(seconds * rate)]
        mix = song.sum(axis=0)
        est = demix(model, mix, chunk, overlap, batch_size=4)
        for i, s in enumerate(stems):
            sdr = sdr_median_per_second(song[i], est[i], rate)
            base = sdr_median_per_second(song[i], mix, rate)
            if np.isfinite(sdr) and np.isfinite(base):
                scores[s].append(sdr)
                gains[s].append(sdr - base)
    out = {f"sdr_{s}": float(np.mean(v)) if v else float("nan") for s, v in scores.items()}
    out.update({f"gain_{s}": float(np.mean(v)) if v else float("nan") for s, v in gains.items()})
    out["sdr_mean"] = float(np.nanmean([out[f"sdr_{s}"] for s in stems]))
    out["gain_mean"] = float(np.nanmean([out[f"gain_{s}"] for s in stems]))
    return out


def lr_at(step: int, opts: TrainOptions) -> float:
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    frac = (step - opts.warmup_steps) / max(1, opts.steps - opts.warmup_steps)
    return opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class WeightAverage:
    """An exponential moving average of a model's weights, in a copy of the model: after each optimiser
    step ``update`` moves the copy's parameters towards the model's by ``1 - decay_t``, where ``decay_t =
    min(decay, (1 + n) / (10 + n))`` after ``n`` updates (so that the average follows the first steps
    closely instead of remembering the starting weights). Buffers (constants in these models: the STFT
    window, band indices, rotary frequencies) stay as copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be between 0 and 1, got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._mine = list(self.model.parameters())
        self._theirs = list(model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._mine, [p.detach() for p in self._theirs], 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def train(model: torch.nn.Module, config: Config, config_path: str, train_dirs: list[str], val_dirs: list[str],
          out_dir: str, opts: TrainOptions, resume: bool = False, progress: bool = True) -> dict:
    """Train ``model`` in place; returns the best validation scores. See the module docstring."""
    os.makedirs(out_dir, exist_ok=True)
    stems = list(config.stems)
    rate, channels = config.sample_rate, config.channels
    train_set = RemixDataset(song_folders(train_dirs, stems), stems, rate, channels,
                             augment=Augment() if opts.augment else Augment.off())
    val_songs = [load_stems(f, stems, rate, channels) for f in song_folders(val_dirs, stems)] if val_dirs else []
    device = torch.device(opts.device)
    model.to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=1e-4)
    rng = np.random.default_rng(opts.seed)
    torch.manual_seed(opts.seed)
    step, best, history = 0, None, []
    last_path = os.path.join(out_dir, "last.ckpt")
    state = None
    if resume and os.path.exists(last_path):
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state.get("best"), json.loads(state.get("history", "[]"))
        rng = np.random.default_rng([opts.seed, step])
        log.info("resumed from %s at step %d", last_path, step)
    average = WeightAverage(model, opts.ema) if opts.ema else None
    if average is not None and state is not None:
        if "ema" in state:
            average.load_state_dict(state["ema"])
        else:  # a run that trained without the average so far: it starts from the weights now
            log.info("the weights' average starts at step %d", step)
    scored = average.model if average is not None else model  # what validation scores and model.ckpt holds
    with open(config_path, "rb") as fh:
        _write_atomic(os.path.join(out_dir, "config.yaml"), lambda out: shutil.copyfileobj(fh, out))
    length = int(opts.segment_seconds * rate)
    bar = tqdm(total=opts.steps, initial=step, desc="training", unit="step", disable=not progress)
    t0, losses = time.perf_counter(), []
    stopped_early = False
    while step < opts.steps:
        if opts.max_minutes is not None and time.perf_counter() - t0 > 60 * opts.max_minutes:
            stopped_early = True  # the time budget of this run: keep the state for --resume
            _save_state(last_path, model, optim, step, best, history, opts, average)
            tqdm.write(f"stopped at step {step} after {opts.max_minutes:g} minutes; continue with --resume")
            break
        model.train()
        mix, ref = train_set.batch(rng, opts.batch_size, length)
        mix, ref = mix.to(device), ref.to(device)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, opts)
        est = model(mix)
        loss = separation_loss(est, ref)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
        optim.step()
        if average is not None:
            average.update()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % opts.val_every == 0 or step == opts.steps:
            entry = {"step": step, "loss": float(np.mean(losses[-opts.val_every:])),
                     "minutes": (time.perf_counter() - t0) / 60}
            if val_songs:
                entry.update(evaluate_songs(scored, val_songs, stems, rate, config.chunk_size, config.num_overlap,
                                            opts.val_seconds))
            history.append(entry)
            score = entry.get("gain_mean", -entry["loss"])
            if best is None or score > best:
                best = score
                save_checkpoint(scored.state_dict(), os.path.join(out_dir, "model.ckpt"))
            tqdm.write(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()))
            _save_state(last_path, model, optim, step, best, history, opts, average)
            text = json.dumps(history, indent=1).encode()
            _write_atomic(os.path.join(out_dir, "history.json"), lambda out: out.write(text))
    bar.close()
    return {"best": best, "history": history, "step": step, "stopped_early": stopped_early}


def _save_state(path: str, model, optim, step: int, best, history: list, opts: TrainOptions,
                average: WeightAverage | None = None) -> None:
    """last.ckpt for --resume, written as :func:`save_checkpoint` writes: a run killed while saving keeps
    the previous state."""
    state = {"model": model.state_dict(), "optimizer": optim.state_dict(), "step": step, "best": best,
             "history": json.dumps(history), "options": json.dumps(asdict(opts))}
    if average is not None:
        state["ema"] = average.state_dict()
    save_checkpoint(state, path)


def _write_atomic(path: str, write) -> None:
    """``write(file)`` into ``path + ".part"``, flushed to the disk (fsync), then renamed over ``path`` and the
    folder synced: ``path`` is always either the old file or the complete new one, even after a crash, a
    kill or a full disk. A failed write removes the partial file and raises."""
    tmp = path + ".part"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = exc
        while cause is not None and not isinstance(cause, OSError):   # torch wraps a failed write
            cause = cause.__cause__ or cause.__context__
        if cause is not None and cause is not exc:
            raise OSError(cause.errno, cause.strerror or str(cause), path) from exc
        raise
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(obj, path: str) -> None:
    """``torch.save(obj, path)`` under a temporary name, fsynced and renamed (see :func:`_write_atomic`)."""
    _write_atomic(path, lambda fh: torch.save(obj, fh))
