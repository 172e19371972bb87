"""Separating a library of files on a Ray cluster (``stemstream separate --ray``).

What runs where:

* the driver (this process) lists and hashes the inputs, keeps the manifest, reads each file a range
  at a time (decoded, resampled to the model's rate, channels adapted, normalised and padded, as plain
  ``separate`` reads it: :class:`~streamer.inference.separate.FileSource`), merges the ranges' sums in
  order and writes every stem file a piece at a time (atomically, as ``separate`` does): the inputs and
  the outputs live on the driver's disks, nothing is assumed shared with the cluster;
* separator actors, one per worker (a GPU each when ``gpus_per_worker`` asks), load the model once from
  the config and the checkpoint's bytes shipped through Ray's object store, then separate ranges of
  chunks (:func:`streamer.inference.demix.demix_range`) of at most ``split_seconds``: the ranges of a
  long file run on different workers and are merged bit for bit as one pass over the file
  (:class:`~streamer.inference.demix.RangeMerger`): the stems are plain ``separate``'s.

At most ``workers + 2`` files are in flight, and a file's ranges are read only as workers take them:
memory stays bounded whatever the library's size and whatever a file's length (a range's audio and
sums, not the file's). A worker or a node that dies loses only its range in progress, which goes to
another worker; its actor is replaced.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable

import numpy as np
import ray
import soundfile as sf
import torch
from tqdm.auto import tqdm

from ..errors import SettingsError
from ..inference.demix import RangeMerger, RunnerCache, demix_range, range_head_end, split_ranges
from ..inference.separate import (STEM_FORMAT, FileSource, SeparationOptions, StemWriter, check_stem_file,
                                  encode_stem_file, output_stems, stem_files, stem_target, stem_wav_options,
                                  stem_work_folder)
from ..msst.config import Config
from ..outputs import AtomicFolder
from .manifest import Manifest, hash_file, model_key

log = logging.getLogger(__name__)

ATTEMPTS = 3          # tries of one range against lost workers and nodes
IN_FLIGHT_EXTRA = 2   # files in flight beyond one per worker
STALL_SECONDS = 600   # no worker able to run for this long: the job stops


@dataclasses.dataclass
class ModelSource:
    """What the workers build the model from: the config and the checkpoint's bytes (shipped through
    Ray, not read from the workers' disks), and how to load it."""

    config: Config
    config_text: bytes
    checkpoint: bytes
    checkpoint_name: str
    device: str = "auto"
    precision: str = "auto"
    trust: bool = False

    @classmethod
    def from_files(cls, config: Config, config_path: str, checkpoint_path: str, device: str = "auto",
                   precision: str = "auto", trust: bool = False) -> "ModelSource":
        with open(config_path, "rb") as fh:
            text = fh.read()
        with open(checkpoint_path, "rb") as fh:
            weights = fh.read()
        return cls(config, text, weights, os.path.basename(checkpoint_path), device, precision, trust)

    @property
    def key(self) -> str:
        return model_key(self.config_text + f"\n#model_type={self.config.model_type}".encode(), self.checkpoint)


@dataclasses.dataclass
class JobOptions:
    address: str | None = None          # None: start a local Ray instance on this machine
    workers: int | None = None          # default: as many as the cluster's CPUs (or GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    split_seconds: float = 60.0         # ranges of at most this much audio (0: a file in one range)
    num_cpus: int | None = None         # CPUs of a local instance (default: all)
    progress: bool = True


@dataclasses.dataclass
class JobSummary:
    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    workers: list[tuple[str, float]] = dataclasses.field(default_factory=list)   # (label, utilisation)
    startup_seconds: float = 0.0        # from the job's start to its first worker ready (Ray, model load)
    retried: int = 0                    # ranges run again after a worker or node was lost
    replaced: int = 0                   # actors replaced

    @property
    def rtf(self) -> float:
        """Audio seconds separated per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"{len(self.done)} separated, {len(self.skipped)} already done (skipped), {len(self.failed)} failed; "
               f"{_duration(self.audio_seconds)} of audio in {_duration(self.wall_seconds)}: "
               f"{self.rtf:.2f}x real time (audio seconds per second)"
               + (f" ({self.retried} retried after a lost worker, {self.replaced} workers replaced)"
                  if self.retried or self.replaced else "")]
        if self.workers:
            out.append(f"first worker ready after {self.startup_seconds:.1f} s; workers busy: "
                       + ", ".join(f"{label} {100 * u:.0f}%" for label, u in self.workers))
        for path, reason in self.failed:
            out.append(f"failed: {path}: {reason}")
        return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def job_settings(config: Config, opts: SeparationOptions, precision: str) -> dict[str, Any]:
    """What a file's stems depend on besides the model and the input (the manifest compares it)."""
    return {
        "chunk_size": int(opts.chunk_size or config.chunk_size),
        "num_overlap": int(opts.num_overlap or config.num_overlap),
        "tta": bool(opts.tta), "instrumental": bool(opts.instrumental), "output_rate": opts.output_rate,
        "format": opts.fmt, "subtype": opts.subtype, "precision": precision,
        **({"residual": opts.residual} if opts.residual else {}),  # absent when unused: earlier manifests still match
        **({"stem_file": (opts.stem.settings() if opts.stem else None)} if opts.fmt == STEM_FORMAT else {}),
    }


# ---------------------------------------------------------------------------------------------- remote
class _Separator:
    """One worker: the model, loaded once, separating ranges of chunks."""

    def __init__(self, source: ModelSource, checkpoint: bytes, opts: SeparationOptions, threads: int):
        from ..inference.loader import load_model

        torch.set_num_threads(max(1, threads))
        with tempfile.TemporaryDirectory(prefix="stemstream-model-") as folder:
            path = os.path.join(folder, source.checkpoint_name)
            with open(path, "wb") as fh:
                fh.write(checkpoint)
            loaded = load_model(source.config, path, device=source.device, precision=source.precision,
                                trust=source.trust)
        self.model = loaded.model.eval()
        self.device = loaded.device
        self.precision = loaded.precision
        self.opts = opts
        self.batch = int(opts.batch_size or source.config.batch_size)
        self.runners = RunnerCache(self.model, self.device, self.precision, opts.backend)  # made once per chunk size
        self.label = f"{ray.util.get_node_ip_address()}:{os.getpid()}" + (f" {self.device}" if self.device.type != "cpu" else "")

    def ready(self) -> str:
        return self.label

    def separate(self, span: np.ndarray, plan, first: int, last: int, tta: bool):
        """Chunks ``first`` to ``last - 1`` of ``span`` (their span of the padded input): per pass, their sums
        and the weighted stems of the chunks that overlap earlier ranges (for :class:`RangeMerger`)."""
        t0 = time.perf_counter()
        start, _ = plan.span(first, last)
        x = torch.from_numpy(np.array(span, dtype=np.float32))
        passes = [x, x.flip(0), -x] if tta else [x]
        runner = self.runners.get(plan.chunk_size, x.shape[0])
        head_end = range_head_end(plan, first)
        sums = []
        for audio in passes:
            records: list = []
            numerator, weights = demix_range(self.model, audio, plan, first, last, batch_size=self.batch,
                                             device=self.device, precision=self.precision,
                                             backend=self.opts.backend, runner=runner, records=records,
                                             record_before=head_end)
            sums.append((numerator.numpy(), weights.numpy(),
                         [(at, weighted.numpy(), w.numpy()) for at, weighted, w in records]))
        return start, sums, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- driver
@dataclasses.dataclass
class _File:
    path: str
    folder: str
    content: str
    seconds: float                      # from the header, for the progress bar (0 if unreadable)
    source: FileSource | None = None    # the file, read a range at a time
    spans: Any = None                   # its read for the ranges' audio (ahead) ...
    mixes: Any = None                   # ... and for the mix the stems are made with (behind)
    merger: RangeMerger | None = None
    folder_out: AtomicFolder | None = None
    stems_out: StemWriter | None = None
    units: list = dataclasses.field(default_factory=list)    # (first, last), in order
    span_refs: dict = dataclasses.field(default_factory=dict)  # unit -> its audio in the object store
    parts: dict = dataclasses.field(default_factory=dict)    # unit -> sums, until merged
    merged: int = 0                     # units merged and written
    started: float = 0.0
    failed: str | None = None
    target: str | None = None           # --format stem: the stem file made from the stems in ``folder``


@dataclasses.dataclass
class _Slot:
    index: int
    actor: Any = None
    ready_ref: Any = None
    ready: bool = False
    label: str = ""
    running: int = 0
    busy: float = 0.0
    since: float = 0.0
    failures: int = 0                   # starts in a row that did not get ready


def _header_seconds(path: str) -> float:
    try:
        info = sf.info(path)
        return info.frames / info.samplerate if info.samplerate else 0.0
    except Exception:  # noqa: BLE001 - unreadable files fail later, with their reason
        return 0.0


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(exc, ray.exceptions.RayActorError):
        exc = cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_lost_worker(exc: BaseException) -> bool:
    """A failure of the machinery (a worker, an actor or a node gone, an object lost), not of the file."""
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


def _record(path: str, folder: str, content: str | None, model: str, settings: dict[str, Any], status: str,
            duration: float | None = None, seconds: float = 0.0, error: str | None = None) -> dict[str, Any]:
    """One manifest line (see ``streamer.cluster.manifest``)."""
    return {"input": path, "hash": content, "model": model, "settings": settings, "status": status,
            "duration": duration, "seconds": seconds, "error": error, "output": folder}


def run_job(plan: dict[str, str], out_dir: str, source: ModelSource, opts: SeparationOptions,
            job: JobOptions, say: Callable[[str], Any] = print) -> JobSummary:
    """Separate the files of ``plan`` (input path -> stems folder, see ``plan_outputs``) on Ray and
    return what happened. Files already done with the same content, model and settings (the manifest
    in ``out_dir``) are skipped; a file that fails is recorded with its reason and the job goes on."""
    summary = JobSummary()
    t_start = time.perf_counter()
    settings = job_settings(source.config, opts, source.precision)
    model = source.key
    with Manifest(out_dir) as manifest:
        if manifest.unreadable_lines:
            say(f"manifest: {manifest.unreadable_lines} unreadable line(s) ignored (a job interrupted while writing)")
        todo: list[_File] = []
        names = output_stems(source.config, opts)
        if opts.fmt == STEM_FORMAT:
            check_stem_file(source.config, opts)   # ffmpeg, settings, the model's stems: before any work
        for path, folder in plan.items():
            try:
                content = hash_file(path)
            except OSError as exc:
                reason = f"cannot read {path}: {exc.strerror or exc}"
                manifest.append(_record(path, folder, None, model, settings, "failed", error=reason))
                summary.failed.append((path, reason))
                continue
            if manifest.is_done(path, content, model, settings, stem_files(names, folder, opts)):
                summary.skipped.append(path)
                continue
            if opts.fmt == STEM_FORMAT:   # the stems go to a hidden folder, then into the stem file
                todo.append(_File(path, stem_work_folder(folder), content, _header_seconds(path),
                                  target=stem_target(folder)))
            else:
                todo.append(_File(path, folder, content, _header_seconds(path)))
        for f in todo:  # what a killed earlier job left (the manifest's lock is held)
            if f.target is not None:
                shutil.rmtree(f.folder, ignore_errors=True)
            AtomicFolder(f.folder).remove_leftovers()
        if todo:
            _Runner(todo, manifest, source, opts, job, settings, model, summary, say).run()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


class _Runner:
    def __init__(self, todo, manifest, source, opts, job, settings, model, summary, say):
        self.todo = collections.deque(todo)
        self.manifest = manifest
        self.source = source
        self.opts = opts
        self.job = job
        self.settings = settings
        self.model = model
        self.summary = summary
        self.say = say
        self.chunk = int(opts.chunk_size or source.config.chunk_size)
        self.overlap = int(opts.num_overlap or source.config.num_overlap)
        self.waiting: dict[Any, tuple] = {}      # object ref -> what it is
        self.units: collections.deque = collections.deque()   # (file, unit, tries)
        self.active: list[_File] = []
        self.slots: list[_Slot] = []
        self.started_ray = False

    # -------------------------------------------------------------- cluster
    def _start_ray(self) -> None:
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.ERROR, "configure_logging": True}
            if self.job.address:
                ray.init(address=self.job.address, **kwargs)
            else:
                ray.init(address="local", num_cpus=self.job.num_cpus, **kwargs)  # always a new instance
            self.started_ray = True
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        if self.job.gpus_per_worker > 0:
            if gpus < self.job.gpus_per_worker:
                raise SettingsError(f"--gpus-per-worker {self.job.gpus_per_worker:g}: the cluster has "
                                    f"{gpus:g} GPUs; drop the flag to run on CPUs")
            possible = int(gpus // self.job.gpus_per_worker)
        else:
            possible = max(1, int(cpus // max(self.job.cpus_per_worker, 1e-9)))
        n = min(self.job.workers or possible, possible)
        if self.job.workers and self.job.workers > possible:
            self.say(f"the cluster has room for {possible} workers ({cpus:g} CPUs, {gpus:g} GPUs); running {n}")
        self.checkpoint_ref = ray.put(self.source.checkpoint)
        self.actor_class = ray.remote(_Separator).options(
            num_cpus=self.job.cpus_per_worker, num_gpus=self.job.gpus_per_worker, max_restarts=0,
            max_task_retries=0)
        self.slots = [_Slot(i) for i in range(n)]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        threads = max(1, int(round(self.job.cpus_per_worker)))
        slot.actor = self.actor_class.remote(self.source, self.checkpoint_ref, self.opts, threads)
        slot.ready_ref = slot.actor.ready.remote()
        slot.ready, slot.running = False, 0
        self.waiting[slot.ready_ref] = ("ready", slot)

    def _replace(self, slot: _Slot) -> None:
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.summary.replaced += 1
        self._spawn(slot)

    # -------------------------------------------------------------- files
    def _admit(self) -> None:
        limit = len(self.slots) + IN_FLIGHT_EXTRA
        while self.todo and len(self.active) < limit:
            f = self.todo.popleft()
            f.started = time.perf_counter()
            try:
                self._open(f)
            except Exception as exc:  # noqa: BLE001 - a file that cannot be read fails alone
                self._fail(f, _reason(exc))
                continue
            self.active.append(f)
            for unit in f.units:
                self.units.append((f, unit, 0))

    def _open(self, f: _File) -> None:
        """Read the file through (checked, its length; the normalisation's statistics), plan its ranges and
        open its stem files (temporary until all are written)."""
        config = self.source.config
        f.source = source = FileSource(f.path, config)
        plan = source.prepare(self.chunk, self.overlap)
        split = self.job.split_seconds
        per_range = max(1, int(split * config.sample_rate // plan.step)) if split and split > 0 else len(plan.starts)
        f.units = split_ranges(plan, per_range, int(self.opts.batch_size or config.batch_size))
        f.merger = RangeMerger(plan, config.channels, 3 if self.opts.tta else 1)
        f.spans, f.mixes = source.window(), source.window()
        f.folder_out = AtomicFolder(f.folder, replaceable=[*config.stems, "instrumental"])
        f.folder_out.check()
        opts = stem_wav_options(self.opts) if f.target is not None else self.opts
        f.stems_out = StemWriter(f.folder_out, source, f.folder, opts, os.path.basename(f.folder))

    def _span_ref(self, f: _File, unit, again: bool = False):
        """The unit's audio in the object store: read on from the file (units are taken in order), or read
        again from the start (``again``: the stored copy was lost with a node)."""
        ref = None if again else f.span_refs.get(unit)
        if ref is None:
            source = f.source
            start, end = source.plan.span(*unit)
            if again:
                span = source.span(source.window(), start, end)
            else:
                span = source.span(f.spans, start, end)
                plan = source.plan
                after = plan.starts[unit[1]] if unit[1] < len(plan.starts) else plan.padded
                f.spans.drop(max(0, min(after - plan.border, source.length - 1 - plan.border)))
            ref = f.span_refs[unit] = ray.put(span)
        return ref

    def _dispatch(self) -> None:
        free = [s for s in self.slots if s.ready and s.running < 2]
        while self.units and free:
            f, unit, tries = self.units.popleft()
            if f.failed is not None:
                continue
            try:
                span = self._span_ref(f, unit)
            except Exception as exc:  # noqa: BLE001
                self._fail(f, _reason(exc))
                continue
            slot = min(free, key=lambda s: s.running)
            ref = slot.actor.separate.remote(span, f.source.plan, unit[0], unit[1], self.opts.tta)
            slot.running += 1
            self.waiting[ref] = ("unit", f, unit, tries, slot, slot.actor)
            free = [s for s in self.slots if s.ready and s.running < 2]

    def _separated(self, ref, f: _File, unit, tries: int, slot: _Slot, actor) -> None:
        current = slot.actor is actor
        if current:
            slot.running = max(0, slot.running - 1)
        try:
            start, sums, seconds = ray.get(ref)
        except Exception as exc:  # noqa: BLE001
            lost_audio = isinstance(exc, ray.exceptions.ObjectLostError) or isinstance(
                getattr(exc, "cause", None), ray.exceptions.ObjectLostError)
            if lost_audio and f.failed is None and tries + 1 < ATTEMPTS:
                # the range's audio went with a node and could not be rebuilt: read it again
                self.summary.retried += 1
                try:
                    self._span_ref(f, unit, again=True)
                except Exception as again:  # noqa: BLE001
                    self._fail(f, _reason(again))
                    return
                self.units.appendleft((f, unit, tries + 1))
                return
            if _is_lost_worker(exc):
                if isinstance(exc, ray.exceptions.RayActorError) and current:
                    self._replace(slot)  # once per lost actor: its other ranges find a new one here
                if tries + 1 < ATTEMPTS and f.failed is None:
                    self.summary.retried += 1
                    self.units.appendleft((f, unit, tries + 1))
                    return
            self._fail(f, _reason(exc))
            return
        slot.busy += seconds
        if f.failed is not None:
            return
        f.parts[unit] = sums
        try:
            while f.merged < len(f.units) and f.units[f.merged] in f.parts:  # in order, as they are done
                first, last = f.units[f.merged]
                parts = f.parts.pop((first, last))
                f.span_refs.pop((first, last), None)
                piece = f.merger.add(first, last, parts)
                if piece is not None:
                    f.stems_out.write(f.mixes, *piece)
                f.merged += 1
        except Exception as exc:  # noqa: BLE001 - a file that cannot be written fails alone
            self._fail(f, _reason(exc))
            return
        if f.merged == len(f.units):
            self._finish(f)

    def _finish(self, f: _File) -> None:
        try:
            f.stems_out.__exit__(None, None, None)  # the files' ends (resampler tails, exact length)
            f.stems_out = None
            f.folder_out.commit()
            if f.target is not None:   # --format stem: encode, then the separated stems go
                try:
                    encode_stem_file(f.path, f.folder, f.target, self.source.config, self.opts)
                finally:
                    shutil.rmtree(f.folder, ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be written fails alone
            self._fail(f, _reason(exc))
            return
        took = time.perf_counter() - f.started
        seconds = f.source.seconds
        self.manifest.append(_record(f.path, f.target or f.folder, f.content, self.model, self.settings, "done",
                                     duration=round(seconds, 3), seconds=round(took, 3)))
        self.summary.done.append(f.path)
        self.summary.audio_seconds += seconds
        self._release(f)
        self.bar.update(1)
        self._postfix()

    def _fail(self, f: _File, reason: str) -> None:
        if f.failed is not None:
            return
        f.failed = reason
        if f.stems_out is not None:
            f.stems_out.close()
        if f.folder_out is not None:
            f.folder_out.abort()
        if f.target is not None:
            shutil.rmtree(f.folder, ignore_errors=True)
        took = round(time.perf_counter() - f.started, 3) if f.started else 0.0
        self.manifest.append(_record(f.path, f.folder, f.content, self.model, self.settings, "failed",
                                     seconds=took, error=reason))
        self.summary.failed.append((f.path, reason))
        self._release(f)
        self.bar.update(1)
        self._postfix()

    def _release(self, f: _File) -> None:
        if f in self.active:
            self.active.remove(f)
        f.source = f.spans = f.mixes = f.merger = f.stems_out = f.folder_out = None
        f.span_refs, f.parts = {}, {}

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"{self.summary.audio_seconds / 3600:.2f}/{self.total_hours:.2f} h audio, "
                                 f"{len(self.summary.failed)} failed", refresh=False)

    # -------------------------------------------------------------- loop
    def run(self) -> None:
        self.total_hours = sum(f.seconds for f in self.todo) / 3600
        self.t_run = time.perf_counter()
        # the driver's own torch work (merging ranges) on one thread: two OpenMP pools spinning on the
        # same cores (here and in a worker on this machine) slowed the workers by a third
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.bar = tqdm(total=len(self.todo), unit="file", desc="separating", disable=not self.job.progress)
        try:
            self._start_ray()
            t_ready = time.perf_counter()
            last_progress = time.perf_counter()
            while self.todo or self.active:
                self._admit()
                self._dispatch()
                if not self.waiting:
                    continue
                done, _ = ray.wait(list(self.waiting), num_returns=1, timeout=0.5)
                for ref in done:
                    what = self.waiting.pop(ref)
                    last_progress = time.perf_counter()
                    if what[0] == "unit":
                        self._separated(ref, *what[1:])
                    else:
                        self._ready(ref, what[1])
                if not any(s.ready for s in self.slots) and time.perf_counter() - last_progress > STALL_SECONDS:
                    raise SettingsError(f"no worker could run for {STALL_SECONDS} s (the cluster lost the "
                                        f"resources its workers need?); the files done so far are kept")
            now = time.perf_counter()
            self.summary.workers = [(s.label or f"worker {s.index}", s.busy / max(now - (s.since or t_ready), 1e-9))
                                    for s in self.slots]
        finally:
            torch.set_num_threads(threads)
            self.bar.close()
            for f in list(self.active):  # interrupted: the files in flight leave no temporary stems behind
                if f.stems_out is not None:
                    f.stems_out.close()
                if f.folder_out is not None:
                    f.folder_out.abort()
            for slot in self.slots:
                try:
                    ray.kill(slot.actor, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
            if self.started_ray:
                ray.shutdown()

    def _ready(self, ref, slot: _Slot) -> None:
        if ref != slot.ready_ref:
            return  # a replaced actor's
        try:
            slot.label = ray.get(ref)
        except Exception as exc:  # noqa: BLE001
            slot.failures += 1
            if slot.failures >= ATTEMPTS:
                raise SettingsError(f"a worker could not start {ATTEMPTS} times in a row: {_reason(exc)}") from None
            self._replace(slot)
            return
        slot.ready, slot.failures = True, 0
        if not self.summary.startup_seconds:
            self.summary.startup_seconds = time.perf_counter() - self.t_run
        if not slot.since:
            slot.since = time.perf_counter()
