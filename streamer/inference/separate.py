"""Offline separation of audio files: read, adapt to the model, demix, write stems atomically."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio import AUDIO_EXTENSIONS, adapt_channels, check_finite, fit_length, read_audio, resample
from ..outputs import AtomicFolder
from ..errors import AudioError
from ..msst.config import Config
from .demix import RunnerCache, demix, demix_tta
from .residual import apply_residual, model_residual_index

log = logging.getLogger(__name__)


@dataclass
class SeparationOptions:
    chunk_size: int | None = None       # default: the config's
    num_overlap: int | None = None      # default: the config's
    batch_size: int | None = None       # default: the config's
    tta: bool = False
    instrumental: bool = False
    residual: str | None = None         # None | "spread" | a model stem: the stems sum to the mix (residual.py)
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


def normalize_mix(mix: np.ndarray, config: Config) -> tuple[np.ndarray, float | None, float | None]:
    """The model's input and the (mean, std) to undo on its output: the mix standardised when the
    config asks for it (``inference.normalize``) and it is not silent, else the mix and (None, None)."""
    if config.normalize:
        mono = mix.mean(axis=0)
        mean, std = float(mono.mean()), float(mono.std())
        if std > 0:
            return (mix - mean) / std, mean, std
    return mix, None, None


def stems_from_estimate(est: np.ndarray, mix: np.ndarray, mean: float | None, std: float | None, config: Config,
                        instrumental: bool, residual: str | None = None) -> dict[str, np.ndarray]:
    """The named stems from the model's estimate (stems, channels, samples), normalisation undone, made
    to sum to ``mix`` as ``residual`` asks (None: as the model made them; "spread"; a model stem), plus
    the instrumental (mix minus :func:`instrumental_source`) when asked."""
    if mean is not None:
        est = est * std + mean
    if residual is not None:
        est = apply_residual(np.array(est, np.float32), mix, model_residual_index(config.stems, residual))
    stems = {name: est[i] for i, name in enumerate(config.stems)}
    if instrumental:
        stems["instrumental"] = (mix - stems[instrumental_source(config)]).astype(np.float32)
    return stems


def separate_array(model: torch.nn.Module, config: Config, mix: np.ndarray,
                   opts: SeparationOptions | None = None, runners: RunnerCache | None = None) -> dict[str, np.ndarray]:
    """Separate a (channels, samples) array already at the model's rate and channel count. ``runners``:
    a :class:`~streamer.inference.demix.RunnerCache` kept across calls (many files, one model)."""
    opts = opts or SeparationOptions()
    model_residual_index(config.stems, opts.residual)  # refused before the long work
    chunk = opts.chunk_size or config.chunk_size
    overlap = opts.num_overlap or config.num_overlap
    batch = opts.batch_size or config.batch_size
    x, mean, std = normalize_mix(mix, config)
    run = demix_tta if opts.tta else demix
    est = run(model, x, chunk, overlap, batch_size=batch, device=opts.device,
              precision=opts.precision, progress=opts.progress, backend=opts.backend, runners=runners)
    return stems_from_estimate(est, mix, mean, std, config, opts.instrumental, opts.residual)


def model_input(audio: np.ndarray, rate: int, config: Config, where: str) -> np.ndarray:
    """A file's audio at the model's rate and channel count."""
    return adapt_channels(resample(audio, rate, config.sample_rate), config.channels, where)


def separate_file(model: torch.nn.Module, config: Config, path: str, out_dir: str,
                  opts: SeparationOptions | None = None, folder: str | None = None,
                  runners: RunnerCache | None = None) -> SeparationResult:
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
    x = model_input(audio, rate, config, path)
    stems = separate_array(model, config, x, opts, runners)
    result = SeparationResult(stems=stems, sample_rate=config.sample_rate)
    result.files = write_stems(stems, config, folder, rate, audio.shape[1], opts, stems_folder, name)
    return result


def stem_files(stems: list[str], folder: str, opts: SeparationOptions) -> list[str]:
    """The files :func:`write_stems` writes for these stem names."""
    return [os.path.join(folder, f"{stem}.{opts.fmt}") for stem in stems]


def output_stems(config: Config, opts: SeparationOptions) -> list[str]:
    """The stem names a separation with ``opts`` writes."""
    return [*config.stems, *(["instrumental"] if opts.instrumental else [])]


def write_stems(stems: dict[str, np.ndarray], config: Config, folder: str, rate: int, length: int,
                opts: SeparationOptions, stems_folder: AtomicFolder | None = None, name: str = "") -> list[str]:
    """Write the stems (at the model's rate) into ``folder``, all together or none (AtomicFolder): at
    the input's ``rate`` and exact ``length`` (or the model's rate with ``output_rate="model"``), in
    ``opts.fmt``/``opts.subtype``. Returns the files written."""
    if stems_folder is None:
        stems_folder = AtomicFolder(folder, replaceable=[*config.stems, "instrumental"])
    out_rate = rate if opts.output_rate == "input" else config.sample_rate
    subtype = opts.subtype
    if opts.fmt == "flac" and subtype == "FLOAT":
        subtype = "PCM_24"
    files = []
    with stems_folder as writer:  # all stems appear together, or none on failure
        for (stem, data), target in zip(stems.items(), stem_files(list(stems), folder, opts)):
            data = resample(data, config.sample_rate, out_rate)
            if out_rate == rate:  # exactly the input's length, whatever resampling rounding did
                data = fit_length(data, length)
            if subtype and subtype.startswith("PCM") and np.abs(data).max(initial=0) > 1.0:
                log.warning("%s/%s clips above full scale; use --subtype FLOAT to keep the peaks", name, stem)
            writer.write(target, data, out_rate, subtype)
            files.append(target)
    return files


def plan_outputs(inputs: list, out_dir: str) -> dict[str, str]:
    """The stems folder of each input, in input order: ``out_dir/<file name without extension>``, or
    ``out_dir/<name>`` for an input given as a ``(path, name)`` pair (:func:`list_inputs` with
    ``recursive=True`` names files by their path inside the folder given, so a library's layout is
    kept).

    Checks only names (reads and creates nothing), so it can run before any work. Raises one AudioError
    listing every folder that two or more inputs would write (``a/song.wav b/song.wav``, ``song.wav
    song.flac``, the same file given twice; names compared ignoring case, as macOS and Windows file systems
    do), and an AudioError if an input lies inside a stems folder (a run replaces that folder).
    """
    plan: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    pairs = [item if isinstance(item, tuple) else (item, _base_name(item)) for item in inputs]
    for path, name in pairs:
        folder = os.path.join(out_dir, name)
        groups.setdefault(os.path.abspath(folder).casefold(), []).append(path)
        plan.setdefault(path, folder)
    clashes = [paths for paths in groups.values() if len(paths) > 1]
    if clashes:
        listed = "; ".join(f"{plan[paths[0]]} <- {', '.join(paths)}" for paths in clashes)
        raise AudioError(f"{sum(map(len, clashes))} inputs would write the same stems folder"
                         f"{'s' if len(clashes) > 1 else ''}: {listed}; rename them or separate them into "
                         f"different --out folders")
    folders = {os.path.realpath(f): f for f in plan.values()}
    for path, _ in pairs:
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



def list_inputs(paths: list[str], recursive: bool = False) -> list:
    """Files as given; folders expand to the audio files directly inside them (sorted). With
    ``recursive``, folders expand to the audio files anywhere below them, and every input comes as a
    ``(path, name)`` pair for :func:`plan_outputs`: its path inside the folder given, without the
    extension (``library/live/set.flac`` -> ``live/set``), so the stems keep the library's layout."""
    found: list = []
    for p in paths:
        if os.path.isdir(p):
            if recursive:
                entries = []
                for root, dirs, files in os.walk(p):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    entries.extend(os.path.join(root, f) for f in sorted(files)
                                   if f.lower().endswith(AUDIO_EXTENSIONS) and not f.startswith("."))
                entries = [(e, os.path.splitext(os.path.relpath(e, p))[0]) for e in entries]
            else:
                entries = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(AUDIO_EXTENSIONS))
            if not entries:
                raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in folder {p}"
                                 f"{' or below it' if recursive else ''}")
            found.extend(entries)
        else:
            found.append((p, _base_name(p)) if recursive else p)
    return found
