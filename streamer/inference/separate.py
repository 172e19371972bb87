"""Offline separation of audio files: read, adapt to the model, demix, write stems atomically."""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..audio import (AUDIO_EXTENSIONS, Resampler, adapt_channels, audio_rate, check_finite, fit_length, read_audio,
                     read_blocks, resample)
from ..outputs import AtomicFolder
from ..errors import AudioError, SettingsError
from ..msst.config import Config
from .demix import RunnerCache, demix, demix_pieces, demix_tta, plan_chunks
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
    stem: "StemFileOptions | None" = None   # fmt "stem": how the NI stem file is written


STEM_FORMAT = "stem"                    # fmt: one NI Stem file per input (streamer.formats.nistem)
STEM_SUFFIX = ".stem.mp4"


@dataclass
class StemFileOptions:
    """How ``--format stem`` writes a Native Instruments Stem file (see ``streamer.formats.nistem``):
    ``codec`` aac (``kbps``) or alac (``bits`` 16/24), ``order`` the model's stems for NI's drums, bass,
    other, vocals (None: matched by name), ``out_rate`` the file's rate (None: the input's)."""

    codec: str = "aac"
    bits: int = 16
    kbps: int = 256
    order: tuple[str, ...] | None = None
    out_rate: int | str | None = 44100      # a rate, None (the input's) or "model" (the model's)

    def settings(self) -> dict:
        """What the file depends on (the cluster manifest compares it)."""
        return {"codec": self.codec, "bits": self.bits if self.codec == "alac" else None,
                "kbps": self.kbps if self.codec == "aac" else None,
                "order": list(self.order) if self.order else None, "out_rate": self.out_rate}


def stem_target(folder: str) -> str:
    """The stem file written for an input whose stems folder would be ``folder``."""
    return os.fspath(folder).rstrip(os.sep) + STEM_SUFFIX


def stem_work_folder(folder: str) -> str:
    """The hidden folder the stems are separated into before they are encoded into the stem file."""
    head, name = os.path.split(os.fspath(folder).rstrip(os.sep))
    return os.path.join(head, f".{name}{STEM_SUFFIX}.stems")


def stem_wav_options(opts: SeparationOptions) -> SeparationOptions:
    """The options the stems of a stem file are separated with: float WAV at the input's or model's rate."""
    return replace(opts, fmt="wav", subtype="FLOAT", stem=None, instrumental=False)


def check_stem_file(config: Config, opts: SeparationOptions) -> list[str]:
    """Before any work: ffmpeg is there, the settings are good, and the model's stems fill NI's four
    slots (one SettingsError line naming what it has and how to map it). The four, in NI's order."""
    from ..formats import nistem

    stem = opts.stem or StemFileOptions()
    if opts.instrumental:
        raise SettingsError("--instrumental writes an extra file; a stem file holds exactly NI's four stems "
                            "(drop --instrumental, or use --format wav/flac)")
    nistem.find_ffmpeg()
    if stem.codec not in nistem.CODECS:
        raise SettingsError(f"--codec must be one of {', '.join(nistem.CODECS)}, got {stem.codec!r}")
    if stem.codec == "alac" and stem.bits not in nistem.ALAC_BITS:
        raise SettingsError(f"ALAC stem files are 16 or 24 bit, not {stem.bits}")
    return nistem.match_stems(output_stems(config, stem_wav_options(opts)), stem.order)


def encode_stem_file(input_path: str, work: str, target: str, config: Config, opts: SeparationOptions) -> str:
    """The stem file ``target`` from the separated stems in ``work`` and the input file itself (the
    master), with the input's tags; written under a temporary name and renamed (nistem)."""
    from ..formats import nistem

    stem = opts.stem or StemFileOptions()
    names = output_stems(config, stem_wav_options(opts))
    files = {name: os.path.join(work, f"{name}.wav") for name in names}
    return nistem.write_stem_file_from_files(target, input_path, files, order=stem.order, codec=stem.codec,
                                             bits=stem.bits, kbps=stem.kbps,
                                             out_rate=config.sample_rate if stem.out_rate == "model" else stem.out_rate,
                                             tags=nistem.read_tags(input_path))


PIECE_SECONDS = 30.0    # separate_file: audio read, separated and written per step (memory does not grow with the file)
READ_FRAMES = 1 << 16   # frames per read from the input file


@dataclass
class SeparationResult:
    stems: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (channels, samples) at the model's
    sample_rate: int = 0                                         # rate (separate_file_whole; empty: streamed)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0                # the input's length


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
                  runners: RunnerCache | None = None, piece_seconds: float = PIECE_SECONDS) -> SeparationResult:
    """Separate one file into ``folder/<stem>.<fmt>``; ``folder`` defaults to ``out_dir/<file name>`` (see
    :func:`plan_outputs` for several inputs).

    In bounded memory, whatever the file's length: the file is read, separated and written about
    ``piece_seconds`` at a time (the stems bit for bit those of :func:`separate_file_whole`, which holds
    the whole file). The file is read in sequence several times: once to check it (its length, NaN/inf
    samples) before any work, twice more for the mix's mean and deviation when the config normalises,
    and once to separate it. The result's ``stems`` stay empty (see ``files``).

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
    path = os.fspath(path)
    if opts.fmt == STEM_FORMAT:
        return _separate_to_stem_file(model, config, path, out_dir, opts, folder, runners, piece_seconds)
    source = FileSource(path, config)  # read through once: unreadable, NaN/inf or empty refused here
    _check_outside(path, folder)
    stems_folder = AtomicFolder(folder, replaceable=[*config.stems, "instrumental"])
    stems_folder.check()  # before the long work, and again when swapping into place
    source.check_channels()
    model_residual_index(config.stems, opts.residual)
    chunk = opts.chunk_size or config.chunk_size
    overlap = opts.num_overlap or config.num_overlap
    batch = opts.batch_size or config.batch_size
    plan = source.prepare(chunk, overlap)
    window = source.window()
    runner = runners.get(chunk, config.channels) if runners is not None else None
    piece_chunks = max(1, int(piece_seconds * config.sample_rate) // plan.step)
    with stems_folder as writer:  # all stems appear together, or none on failure
        with StemWriter(writer, source, folder, opts, name) as stems_out:
            for at, est in demix_pieces(model, lambda a, b: torch.from_numpy(source.span(window, a, b)), plan,
                                        config.channels, piece_chunks, tta=opts.tta, batch_size=batch,
                                        device=opts.device, precision=opts.precision, progress=opts.progress,
                                        backend=opts.backend, runner=runner):
                stems_out.write(window, at, est)
    return SeparationResult(sample_rate=config.sample_rate, files=stems_out.files, seconds=source.seconds)


class FileSource:
    """An input file read a piece at a time as the model's input (:func:`model_input` of it): made, it has
    been read through once (its length, refused if unreadable, empty or with NaN/inf samples);
    :meth:`prepare` takes the normalisation's mean and deviation (two more reads) and plans the chunks;
    :meth:`span` gives the padded, normalised samples the chunks are cut from, as :func:`normalize_mix` and
    :func:`~streamer.inference.demix.pad_for_chunks` make them of the whole file, from a :meth:`window`
    (a read of the file in sequence)."""

    def __init__(self, path: str, config: Config):
        self.path = os.fspath(path)
        self.config = config
        self.rate, self.channels = audio_rate(self.path)
        self.frames, self.length = scan_audio(self.path, self.rate, self.channels, config)
        self.seconds = self.frames / self.rate
        self.mean = self.std = None
        self.plan = None

    def check_channels(self) -> None:
        """AudioError if the model cannot take the file's channels (more than two for a stereo model)."""
        adapt_channels(np.zeros((self.channels, 0), np.float32), self.config.channels, self.path)

    def blocks(self):
        return model_blocks(self.path, self.rate, self.channels, self.config)

    def window(self) -> "_Window":
        return _Window(self.blocks(), self.path)

    def prepare(self, chunk: int, overlap: int):
        self.check_channels()
        if self.length == 0:
            raise AudioError("mix is empty")
        if self.config.normalize:
            self.mean, self.std = mix_stats(self.blocks, self.length)
        self.plan = plan_chunks(self.length, chunk, overlap)
        return self.plan

    def span(self, window: "_Window", start: int, end: int) -> np.ndarray:
        """Padded samples [start, end) of the normalised model input, (channels, n) float32."""
        plan, length = self.plan, self.length
        index = np.arange(start, end, dtype=np.int64) - plan.border
        if plan.border:  # the reflect padding at both ends, as pad_for_chunks makes it
            index = np.abs(index)
            index = np.where(index >= length, 2 * (length - 1) - index, index)
        lo = int(index.min())
        span = window.get(lo, int(index.max()) + 1)[:, index - lo]
        if self.mean is not None:
            span = (span - self.mean) / self.std
        if not np.isfinite(span).all():
            raise AudioError("mix contains NaN or infinite samples")
        return np.ascontiguousarray(span, dtype=np.float32)


class StemWriter:
    """The stem files of one input written a piece at a time into an open :class:`AtomicFolder`, as
    :func:`write_stems` writes them whole (the same files, sample for sample): ``write`` each finished
    piece of the estimate, in order; leaving the ``with`` block without an error finishes the files
    (resampler tails, the input's exact length), with one closes them (the folder's abort removes them)."""

    def __init__(self, writer: AtomicFolder, source: FileSource, folder: str, opts: SeparationOptions, name: str):
        config = source.config
        self.source = source
        self.opts = opts
        self.names = output_stems(config, opts)
        self.files = stem_files(self.names, folder, opts)
        out_rate = source.rate if opts.output_rate == "input" else config.sample_rate
        subtype = opts.subtype
        if opts.fmt == "flac" and subtype == "FLOAT":
            subtype = "PCM_24"
        self.sinks: list[_StemSink] = []
        try:
            for stem, target in zip(self.names, self.files):
                self.sinks.append(_StemSink(writer.open(target, out_rate, config.channels, subtype),
                                            config.sample_rate, out_rate, config.channels,
                                            source.frames if out_rate == source.rate else None,
                                            bool(subtype and subtype.startswith("PCM")), f"{name}/{stem}"))
        except BaseException:
            self.close()
            raise

    def write(self, window: "_Window", at: int, est: np.ndarray) -> None:
        """The estimate of input samples ``at`` onwards (the model's, :func:`stems_from_estimate` makes the
        stems with the mix from ``window``, which then forgets what no later piece needs)."""
        source, n = self.source, est.shape[-1]
        stems = stems_from_estimate(est, window.get(at, at + n), source.mean, source.std, source.config,
                                    self.opts.instrumental, self.opts.residual)
        for sink, stem in zip(self.sinks, self.names):
            sink.write(stems[stem])
        window.drop(max(0, min(at + n, source.length - 1 - source.plan.border)))

    def close(self) -> None:
        for sink in self.sinks:
            sink.discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.close()
            return
        try:
            for sink in self.sinks:
                sink.finish()
        except BaseException:
            self.close()
            raise


def model_blocks(path: str, rate: int, channels: int, config: Config):
    """The model's input (:func:`model_input` of the file), a block at a time: the blocks joined are
    :func:`model_input` of :func:`~streamer.audio.read_audio`, sample for sample."""
    resampler = Resampler(rate, config.sample_rate, channels)
    for block in read_blocks(path, READ_FRAMES):
        out = resampler(block)
        if out.shape[1]:
            yield adapt_channels(out, config.channels, path)
    tail = resampler.flush()
    if tail.shape[1]:
        yield adapt_channels(tail, config.channels, path)


def scan_audio(path: str, rate: int, channels: int, config: Config) -> tuple[int, int]:
    """Read the file once through: (its frames, the model input's length). AudioError as
    :func:`~streamer.audio.read_audio` and :func:`~streamer.audio.check_finite` give (for NaN/inf samples:
    how many, and the first)."""
    frames = length = bad = 0
    first = -1
    resampler = Resampler(rate, config.sample_rate, channels)
    for block in read_blocks(path, READ_FRAMES):
        wrong = ~np.isfinite(block)
        if wrong.any():
            if not bad:
                first = frames + int(np.argmax(wrong.any(axis=0)))
            bad += int(wrong.sum())
        elif not bad:
            length += resampler(block).shape[1]
        frames += block.shape[1]
    if bad:
        raise AudioError(f"{path}: {bad} NaN/inf samples (first at sample {first}); the audio is corrupt")
    return frames, length + resampler.flush().shape[1]


def mix_stats(blocks, length: int, leaf: int = 1 << 16) -> tuple[float | None, float | None]:
    """:func:`normalize_mix`'s (mean, std) of a mix of ``length`` samples read a block at a time
    (``blocks()``: a new iterator of its (channels, n) blocks, read twice), bit for bit: numpy's mean and
    std of the whole mono mix, its pairwise sums taken over the same halves (numpy sums ``leaf`` samples
    or fewer in one go; ``leaf`` >= 128, numpy's own block). (None, None) for a silent mix."""
    if leaf < 128:
        raise ValueError("leaf must be >= 128 (numpy sums up to 128 values in one block)")
    count = np.intp(length)
    total = _pairwise(_Taker(b.mean(axis=0) for b in blocks()).take, length, leaf)
    mean = total.dtype.type(total / count)
    centre = np.full(1, total, dtype=total.dtype)
    centre = np.true_divide(centre, count, out=centre, casting="unsafe", subok=False)

    def deviations():
        for b in blocks():
            x = np.subtract(b.mean(axis=0), centre)
            yield np.square(x, out=x)

    squares = _pairwise(_Taker(deviations()).take, length, leaf)
    var = squares.dtype.type(squares / np.maximum(count - 0, 0))
    std = var.dtype.type(np.sqrt(var))
    if float(std) > 0:
        return float(mean), float(std)
    return None, None


def _pairwise(take, n: int, leaf: int):
    """numpy's pairwise sum of the next ``n`` values ``take`` gives, halves split where numpy splits them."""
    if n <= leaf:
        return np.add.reduce(take(n))
    half = n // 2
    half -= half % 8
    return _pairwise(take, half, leaf) + _pairwise(take, n - half, leaf)


class _Taker:
    """The values of an iterator of 1-D arrays, ``take(n)`` at a time (a contiguous float array)."""

    def __init__(self, arrays):
        self.arrays = iter(arrays)
        self.rest = np.zeros(0, np.float32)

    def take(self, n: int) -> np.ndarray:
        parts, have = [self.rest], self.rest.shape[0]
        while have < n:
            nxt = next(self.arrays, None)
            if nxt is None:
                raise AudioError("the audio is shorter than when it was first read (changed meanwhile?)")
            parts.append(nxt)
            have += nxt.shape[0]
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.rest = joined[n:]
        return np.ascontiguousarray(joined[:n])


class _Window:
    """The model's input from sample ``start`` to as far as read, of an iterator of (channels, n) blocks."""

    def __init__(self, blocks, where: str):
        self.blocks = iter(blocks)
        self.where = where
        self.parts: list[np.ndarray] = []
        self.start = self.end = 0

    def get(self, a: int, b: int) -> np.ndarray:
        while self.end < b:
            block = next(self.blocks, None)
            if block is None:
                raise AudioError(f"{self.where}: shorter than when it was first read (changed meanwhile?)")
            self.parts.append(block)
            self.end += block.shape[1]
        if a < self.start:
            raise ValueError(f"samples from {a} asked for, but only those from {self.start} are kept")
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts, axis=1)]
        return self.parts[0][:, a - self.start : b - self.start]

    def drop(self, before: int) -> None:
        """Forget the samples before ``before``."""
        if before <= self.start or not self.parts:
            return
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts, axis=1)]
        keep = min(before, self.end) - self.start
        self.parts = [self.parts[0][:, keep:].copy()]
        self.start += keep


class _StemSink:
    """One stem's file, written a piece at a time as :func:`write_stems` writes it whole: resampled to the
    output rate (soxr's stream), cut or zero-padded to ``length`` samples (None: as many as come)."""

    def __init__(self, file, rate_in: int, rate_out: int, channels: int, length: int | None, pcm: bool, label: str):
        self.file = file
        self.resampler = Resampler(rate_in, rate_out, channels)
        self.channels = channels
        self.length = length
        self.pcm = pcm
        self.label = label
        self.written = 0
        self.clips = False
        self.finished = False

    def write(self, data: np.ndarray) -> None:
        self._put(self.resampler(np.ascontiguousarray(data, dtype=np.float32)))

    def _put(self, data: np.ndarray) -> None:
        if self.length is not None:
            data = data[:, : max(0, self.length - self.written)]
        if data.shape[1] == 0:
            return
        if self.pcm and np.abs(data).max(initial=0) > 1.0:
            self.clips = True
        self.file.write(data)
        self.written += data.shape[1]

    def finish(self) -> None:
        self._put(self.resampler.flush())
        if self.length is not None and self.written < self.length:
            self._put(np.zeros((self.channels, self.length - self.written), np.float32))
        if self.clips:
            log.warning("%s clips above full scale; use --subtype FLOAT to keep the peaks", self.label)
        self.file.close()
        self.finished = True

    def discard(self) -> None:
        try:
            self.file.close()
        except (AudioError, RuntimeError):
            pass


def separate_file_whole(model: torch.nn.Module, config: Config, path: str, out_dir: str,
                  opts: SeparationOptions | None = None, folder: str | None = None,
                  runners: RunnerCache | None = None) -> SeparationResult:
    """:func:`separate_file` with the whole file in memory (the stems are returned too): the same files, bit
    for bit; memory grows with the file's length (about seven times the file as float32).

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
    result = SeparationResult(stems=stems, sample_rate=config.sample_rate, seconds=audio.shape[1] / rate)
    result.files = write_stems(stems, config, folder, rate, audio.shape[1], opts, stems_folder, name)
    return result


def _separate_to_stem_file(model, config: Config, path: str, out_dir: str, opts: SeparationOptions, folder: str,
                           runners, piece_seconds: float) -> SeparationResult:
    """``--format stem``: the stems separated (in bounded memory) into a hidden folder next to the
    target, then encoded with the input as the master into ``folder.stem.mp4``; the folder removed."""
    check_stem_file(config, opts)
    target = stem_target(folder)
    work = stem_work_folder(folder)
    _check_outside(path, work)
    shutil.rmtree(work, ignore_errors=True)   # what an interrupted run left
    try:
        result = separate_file(model, config, path, out_dir, stem_wav_options(opts), folder=work, runners=runners,
                               piece_seconds=piece_seconds)
        encode_stem_file(path, work, target, config, opts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.files = [target]
    return result


def stem_files(stems: list[str], folder: str, opts: SeparationOptions) -> list[str]:
    """The files :func:`write_stems` writes for these stem names (``--format stem``: the one stem file)."""
    if opts.fmt == STEM_FORMAT:
        return [stem_target(folder)]
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
