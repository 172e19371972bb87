"""The manifest of a library job: one JSON line per file finished (done or failed) in
``OUT/manifest.jsonl``, appended and flushed to disk as each file ends, so a job killed half-way loses
at most the files in flight. A rerun reads it and skips every file whose latest line says done with
the same content, model and settings, as long as its stems are still there.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from typing import Any, Iterable

from ..errors import AudioError

MANIFEST = "manifest.jsonl"
LOCK = ".manifest.lock"
_READ = 1 << 20


def hash_bytes(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_READ), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def model_key(config_text: bytes, checkpoint: bytes | None) -> str:
    """The model's identity: its config and its weights, byte for byte."""
    h = hashlib.sha256()
    h.update(len(config_text).to_bytes(8, "little"))
    h.update(config_text)
    if checkpoint is not None:
        h.update(checkpoint)
    return "sha256:" + h.hexdigest()[:32]


class Manifest:
    """``OUT/manifest.jsonl``: the latest line per input path. Holding it (``with Manifest(...)``) takes
    an exclusive lock on the output folder: a second job writing into the same folder is refused."""

    def __init__(self, out_dir: str):
        self.out_dir = os.path.abspath(out_dir)
        self.path = os.path.join(self.out_dir, MANIFEST)
        self.latest: dict[str, dict[str, Any]] = {}
        self.unreadable_lines = 0
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> "Manifest":
        import fcntl

        os.makedirs(self.out_dir, exist_ok=True)
        fd = os.open(os.path.join(self.out_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise AudioError(f"another job is writing into {self.out_dir} (its {LOCK} is held); "
                                 f"wait for it or choose another --out") from None
            raise
        self._lock_fd = fd
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # ------------------------------------------------------------------ records
    def load(self) -> None:
        """Read the file; lines that do not parse (the last line of a job killed while writing it) are
        counted and ignored."""
        self.latest = {}
        self.unreadable_lines = 0
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        rec = json.loads(line)
                        self.latest[rec["input"]] = rec
                    except (ValueError, KeyError, TypeError):
                        self.unreadable_lines += 1
        except FileNotFoundError:
            pass

    def is_done(self, input_path: str, content: str, model: str, settings: dict[str, Any],
                outputs: Iterable[str]) -> bool:
        rec = self.latest.get(os.path.abspath(input_path))
        return (rec is not None and rec.get("status") == "done" and rec.get("hash") == content
                and rec.get("model") == model and rec.get("settings") == settings
                and all(os.path.isfile(p) for p in outputs))

    def append(self, record: dict[str, Any]) -> None:
        """Add one line and flush it to disk before returning."""
        record = {"input": os.path.abspath(record["input"]), **{k: v for k, v in record.items() if k != "input"},
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        line = json.dumps(record, sort_keys=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.latest[record["input"]] = record
