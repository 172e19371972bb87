"""Offline separation of audio files: read, adapt to the model, demix, write stems atomically."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio import AUDIO_EXTENSIONS, adapt_channels, check_finite, read_audio, resample
from ..outputs import AtomicFolder
from ..errors import AudioError
from ..msst.config import Config
from .demix import demix, demix_tta

log = logging.getLogger(__name__)


@dataclass
class SeparationOptions:
    chunk_size: int | None = None       # default: the config's
    num_overlap: int | None = None      # default: the config's
    batch_size: int | None = None       # default: the config's
    tta: bool = False
    instrumental: bool = False
    output_rate: str = "input"          # "input": write at the file's rate; "model": at the model's
    fmt: str = "wav"
    subtype: str | None = "FLOAT"
    device: str | None = None
    precision: str | None = None
    backend: str = "torch"              # torch | onnx | auto (streamer.make_runner)
    progress: bool = True


@dataclass
class SeparationResult:
    stems: dict[str, np.ndarray]        # name -> (channels, samples) at the model's rate
    sample_rate: int
    files: list[str] = field(default_factory=list)


def instrumental_source(config: Config) -> str:
    """The stem subtracted from the mix for ``--instrumental``: vocals if present, else the first."""
    return "vocals" if "vocals" in config.stems else config.stems[0]


def separate_array(model: torch.nn.Module, config: Config, mix: np.ndarray,
                   opts: SeparationOptions | None = None) -> dict[str, np.ndarray]:
    """Separate a (channels, samples) array already at the model's rate and channel count."""
    opts = opts or SeparationOptions()
    chunk = opts.chunk_size or config.chunk_size
    overlap = opts.num_overlap or config.num_overlap
    batch = opts.batch_size or config.batch_size
    x = mix
    mean = std = None
    if config.normalize:
        mono = mix.mean(axis=0)
        mean, std = float(mono.mean()), float(mono.std())
        if std > 0:
            x = (mix - mean) / std
        else:
            mean = std = None
    run = demix_tta if opts.tta else demix
    est = run(model, x, chunk, overlap, batch_size=batch, device=opts.device,
              precision=opts.precision, progress=opts.progress, backend=opts.backend)
    if mean is not None:
        est = est * std + mean
    stems = {name: est[i] for i, name in enumerate(config.stems)}
    if opts.instrumental:
        stems["instrumental"] = (mix - stems[instrumental_source(config)]).astype(np.float32)
    return stems


def separate_file(model: torch.nn.Module, config: Config, path: str, out_dir: str,
                  opts: SeparationOptions | None = None, folder: str | None = None) -> SeparationResult:
    """Separate one file into ``folder/<stem>.<fmt>``; ``folder`` defaults to ``out_dir/<file name>`` (see
    :func:`plan_outputs` for several inputs).

    The stems appear all together or not at all (:class:`~streamer.outputs.AtomicFolder`): they are written into
    a temporary folder next to ``folder`` and swapped into place when all are written, replacing an earlier
    run's folder whole (readers see the old stems or the new ones, never a mix). If anything fails or is
    interrupted, ``folder`` is untouched and nothing temporary is left; output folders this call created are
    removed again if empty. Refused before any work (AudioError): an existing ``folder`` holding anything but
    stem files, and an input inside its own stems folder.
    """
    opts = opts or SeparationOptions()
    name = _base_name(path)
    folder = os.path.join(out_dir, name) if folder is None else os.fspath(folder)
    audio, rate = read_audio(path)
    check_finite(audio, path)
    _check_outside(path, folder)
    stems_folder = AtomicFolder(folder, replaceable=[*config.stems, "instrumental"])
    stems_folder.check()  # before the long work, and again when swapping into place
    x = resample(audio, rate, config.sample_rate)
    x = adapt_channels(x, config.channels, path)
    stems = separate_array(model, config, x, opts)

    out_rate = rate if opts.output_rate == "input" else config.sample_rate
    result = SeparationResult(stems=stems, sample_rate=config.sample_rate)
    subtype = opts.subtype
    if opts.fmt == "flac" and subtype == "FLOAT":
        subtype = "PCM_24"
    with stems_folder as writer:  # all stems appear together, or none on failure
        for stem, data in stems.items():
            data = resample(data, config.sample_rate, out_rate)
            if out_rate == rate:  # exactly the input's length, whatever resampling rounding did
                data = _fit_length(data, audio.shape[1])
            if subtype and subtype.startswith("PCM") and np.abs(data).max(initial=0) > 1.0:
                log.warning("%s/%s clips above full scale; use --subtype FLOAT to keep the peaks", name, stem)
            target = os.path.join(folder, f"{stem}.{opts.fmt}")
            writer.write(target, data, out_rate, subtype)
            result.files.append(target)
    return result


def plan_outputs(inputs: list[str], out_dir: str) -> dict[str, str]:
    """The stems folder of each input, in input order: ``out_dir/<file name without extension>``.

    Checks only names (reads and creates nothing), so it can run before any work. Raises one AudioError
    listing every folder that two or more inputs would write (``a/song.wav b/song.wav``, ``song.wav
    song.flac``, the same file given twice; names compared ignoring case, as macOS and Windows file systems
    do), and an AudioError if an input lies inside a stems folder (a run replaces that folder).
    """
    plan: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for path in inputs:
        folder = os.path.join(out_dir, _base_name(path))
        groups.setdefault(os.path.abspath(folder).casefold(), []).append(path)
        plan.setdefault(path, folder)
    clashes = [paths for paths in groups.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(f"{os.path.join(out_dir, _base_name(paths[0]))} <- {', '.join(paths)}" for paths in clashes)
        raise AudioError(f"{sum(map(len, clashes))} inputs would write the same stems folder"
                         f"{'s' if len(clashes) > 1 else ''}: {listed}; rename them or separate them into "
                         f"different --out folders")
    folders = {os.path.realpath(f): f for f in plan.values()}
    for path in inputs:
        p = os.path.realpath(path)
        while os.path.dirname(p) != p:
            p = os.path.dirname(p)
            if p in folders:
                raise AudioError(f"{path} lies inside the stems folder {folders[p]}, which the run replaces; "
                                 f"move it or choose another --out")
    return plan


def _base_name(path: str) -> str:
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def _check_outside(path: str, folder: str) -> None:
    p, f = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([p, f]) == f:
        raise AudioError(f"{path} lies inside its stems folder {folder}, which the run replaces; "
                         f"move it or choose another --out")


def _fit_length(data: np.ndarray, length: int) -> np.ndarray:
    if data.shape[1] >= length:
        return data[:, :length]
    return np.pad(data, ((0, 0), (0, length - data.shape[1])))


def list_inputs(paths: list[str]) -> list[str]:
    """Files as given; folders expand to the audio files directly inside them (sorted)."""
    found = []
    for p in paths:
        if os.path.isdir(p):
            entries = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(AUDIO_EXTENSIONS))
            if not entries:
                raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in folder {p}")
            found.extend(entries)
        else:
            found.append(p)
    return found
