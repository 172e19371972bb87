"""Writing output files and folders so that nothing is ever half-written.

Files are written under temporary names next to their target and renamed when complete, with the
permissions the umask gives (not ``mkstemp``'s 0600); :class:`AtomicWriter` makes several files in one
folder appear together (``stemstream demo``), :class:`AtomicFolder` swaps a whole folder of stems into
place at once (``stemstream separate``), and :func:`output_folder` removes an output folder a failed
run created. Every problem is an :class:`~streamer.errors.AudioError` naming the path. Also where the
project keeps what it can make again (:func:`cache_folder`).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import secrets
import shutil

import numpy as np
import soundfile as sf

from .audio import AUDIO_EXTENSIONS
from .errors import AudioError

log = logging.getLogger(__name__)


def cache_folder(name: str) -> pathlib.Path:
    """The project's cache folder ``name``: ``$STEMSTREAM_CACHE_DIR/NAME`` when set, else in the user
    cache folder (``platformdirs.user_cache_dir("stemstream")/NAME``, ``~/.cache/stemstream/NAME``
    without platformdirs). Not created here."""
    env = os.environ.get("STEMSTREAM_CACHE_DIR")
    if env:
        return pathlib.Path(env).expanduser() / name
    try:
        import platformdirs
    except ImportError:
        return pathlib.Path.home() / ".cache" / "stemstream" / name
    return pathlib.Path(platformdirs.user_cache_dir("stemstream")) / name


def make_dirs(path: str | os.PathLike) -> list[str]:
    """Creates folder ``path`` and its missing parents; returns the folders it created, outermost first.

    Raises AudioError (nothing created) if it cannot; see :func:`remove_empty_dirs` to undo.
    """
    path = os.fspath(path)
    missing = []
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    missing.reverse()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        remove_empty_dirs(missing)
        raise AudioError(f"cannot create output folder {path}: {exc.strerror or exc}") from None
    return missing


def remove_empty_dirs(dirs: list[str]) -> None:
    """Removes the given folders (as returned by :func:`make_dirs`), innermost first, where they are empty."""
    for d in reversed(dirs):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _check_writable(path: str, made: list[str] | tuple = ()) -> str:
    if not os.access(path, os.W_OK | os.X_OK):
        remove_empty_dirs(list(made))
        raise AudioError(f"output folder is not writable: {path}")
    return path


def check_writable_dir(path: str | os.PathLike) -> str:
    """Creates folder ``path`` (and missing parents) if needed and checks that files can be written into it."""
    path = os.fspath(path)
    return _check_writable(path, make_dirs(path))


@contextlib.contextmanager
def output_folder(path: str | os.PathLike):
    """``with output_folder(out) as out:`` like :func:`check_writable_dir`, and if the body fails (any exception,
    KeyboardInterrupt included) the folders created here are removed again where they are still empty: a
    failed run does not leave behind an output folder it made. A folder that existed before always stays."""
    path = os.fspath(path)
    made = make_dirs(path)
    _check_writable(path, made)
    try:
        yield path
    except BaseException:
        remove_empty_dirs(made)
        raise


def _create_file(folder: str, prefix: str, suffix: str) -> str:
    """A new empty file with a random name; ``open()``'s mode 0666 less the umask (mkstemp would give 0600)."""
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.path.join(folder, prefix))


def _create_dir(parent: str, prefix: str) -> str:
    """A new empty folder with a random name; mode 0777 less the umask (mkdtemp would give 0700)."""
    for _ in range(100):
        path = os.path.join(parent, f"{prefix}{secrets.token_hex(4)}")
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.path.join(parent, prefix))


def _free_name(parent: str, prefix: str, suffix: str = "") -> str:
    while True:
        path = os.path.join(parent, f"{prefix}{secrets.token_hex(4)}{suffix}")
        if not os.path.lexists(path):
            return path


def _write_audio(tmp: str, final: str, audio: np.ndarray, rate: int, subtype: str | None, fmt: str) -> None:
    try:
        sf.write(tmp, np.ascontiguousarray(audio.T), rate, subtype=subtype, format=fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        raise AudioError(f"cannot write {final}: {exc}") from None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _restore(backup: str, target: str) -> None:
    """Puts the earlier content of ``target`` back from ``backup`` (a hard link to it, or the file renamed aside)."""
    try:
        os.replace(backup, target)  # does nothing if both are links to one file: then the backup is removed
        if os.path.lexists(backup):
            os.remove(backup)
    except OSError as exc:
        log.warning("could not restore %s from %s: %s", target, backup, exc)


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        log.warning("could not remove the temporary folder %s: %s", path, exc)
    except BaseException:  # interrupted half-way: finish, then pass the interrupt on
        shutil.rmtree(path, ignore_errors=True)
        raise


class _AllOrNothing:
    """As a context manager: ``commit()`` when the body succeeds, ``abort()`` when it fails (any exception,
    KeyboardInterrupt included)."""

    def commit(self) -> list[str]:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.commit()


class AtomicWriter(_AllOrNothing):
    """Writes files under temporary names next to their targets and renames them all into place at the end
    (``commit``), or removes them all (``abort``): for several files in one existing folder (``stemstream demo``).

    As a context manager it commits when the body succeeds and aborts on any exception, KeyboardInterrupt
    included. Guarantee: when ``commit`` returns, every target holds its new content; if anything fails before
    or during ``commit``, every target holds what it held before (or stays absent: a target that existed is
    kept as a hard link, or renamed aside where links are not supported, and put back), no temporary file is
    left, and folders created for the files are removed again if empty. Other files in the folder are never
    touched. During ``commit`` (renames only, no data written) a reader may see some targets already new and
    others still old; files that must appear to readers all at once belong in a folder of their own: see
    :class:`AtomicFolder`. Files get the mode ``open()`` gives (0666 less the umask).
    """

    def __init__(self):
        self._pending: list[tuple[str, str]] = []
        self._made: list[str] = []

    def write(self, path: str, audio: np.ndarray, rate: int, subtype: str | None = None) -> None:
        base, ext = os.path.splitext(os.path.basename(path))
        fmt = _format_for(ext)
        folder = os.path.dirname(os.path.abspath(path))
        made = make_dirs(folder)
        self._made.extend(made)
        _check_writable(folder)
        try:
            tmp = _create_file(folder, f".{base}.", f".part{ext}")
        except OSError as exc:
            raise AudioError(f"cannot write {path}: {exc.strerror or exc}") from None
        self._pending.append((tmp, path))
        _write_audio(tmp, path, audio, rate, subtype, fmt)

    def commit(self) -> list[str]:
        placed: list[tuple[str, str | None]] = []   # (target, its earlier content's backup) renamed into place
        final = ""
        try:
            for tmp, final in self._pending:
                if os.path.isdir(final):
                    raise AudioError(f"cannot write {final}: a folder of that name is in the way")
                backup = None
                if os.path.lexists(final):
                    folder, name = os.path.split(final)
                    backup = _free_name(folder, f".{name}.old")
                    try:
                        os.link(final, backup, follow_symlinks=False)  # the target stays visible meanwhile
                    except (OSError, NotImplementedError):  # no hard links here: set it aside instead
                        os.rename(final, backup)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    if backup is not None:
                        _restore(backup, final)
                    raise
                placed.append((final, backup))
        except BaseException as exc:
            for target, backup in reversed(placed):
                if backup is None:
                    _remove(target)
                else:
                    _restore(backup, target)
            self.abort()
            if isinstance(exc, OSError):
                raise AudioError(f"cannot write {final}: {exc.strerror or exc}") from None
            raise
        for _, backup in placed:
            if backup is not None:
                _remove(backup)
        self._pending, self._made = [], []
        return [target for target, _ in placed]

    def abort(self) -> None:
        for tmp, _ in self._pending:
            _remove(tmp)
        remove_empty_dirs(self._made)
        self._pending, self._made = [], []



class AtomicFolder(_AllOrNothing):
    """Writes the files of one folder into a temporary folder next to it (``.NAME.partXXXXXXXX``) and swaps it
    into place whole at the end: the stems of one input, which appear all together or not at all.

    Used like :class:`AtomicWriter` (``write`` each file, then ``commit``; as a context manager it commits when
    the body succeeds and aborts on any exception, KeyboardInterrupt included). Guarantees (POSIX rename
    semantics; the temporary folder is a sibling, so on the same file system):

    * Readers of ``folder`` never see a partly written file nor a mix of old and new files: it is the complete
      earlier folder until the swap, then the complete new one. Replacing an earlier folder takes two renames
      (earlier folder aside to ``.NAME.oldXXXXXXXX``, new folder into place); between them ``folder`` is absent
      for a moment. The set aside copy is then deleted; if that fails a warning names it.
    * If anything fails or is interrupted before the swap, ``folder`` is untouched, the temporary folder is
      removed and so are the folders created on the way (missing parents) that are still empty.
    * An earlier ``folder`` is replaced only if it holds nothing but files this run could have written
      (``<name>.<audio extension>`` for a name in ``replaceable``) and leftovers of an interrupted run
      (hidden ``.*.part*`` files): anything else may be the user's, so :meth:`check` raises AudioError and
      nothing is touched. A file or link of that name is not replaced either.
    * Files get the mode ``open()`` gives (0666 less the umask), the folder 0777 less the umask.
    """

    def __init__(self, folder: str | os.PathLike, replaceable=()):
        self.folder = os.path.abspath(os.fspath(folder))
        self._shown = os.fspath(folder)
        self._replaceable = set(replaceable)
        self._staging: str | None = None
        self._made: list[str] = []
        self._files: list[str] = []

    def check(self) -> None:
        """Raises AudioError if ``folder`` exists and may not be replaced (see the class description)."""
        folder = self.folder
        if os.path.islink(folder):
            raise AudioError(f"{self._shown} is a link; it is not replaced: remove it or choose another --out")
        if not os.path.lexists(folder):
            return
        if not os.path.isdir(folder):
            raise AudioError(f"cannot write stems to {self._shown}: a file of that name is in the way")
        foreign = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not self._ours(entry):
                        foreign.append(entry.name + ("/" if entry.is_dir() else ""))
        except OSError as exc:
            raise AudioError(f"cannot read output folder {self._shown}: {exc.strerror or exc}") from None
        if foreign:
            foreign.sort()
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise AudioError(f"{self._shown} already exists and holds other things than stems ({shown}); it is "
                             f"not replaced: move them away or choose another --out")

    def _ours(self, entry: os.DirEntry) -> bool:
        if entry.is_dir():
            return False
        name = entry.name
        if name == ".DS_Store" or (name.startswith(".") and ".part" in name):
            return True
        stem, ext = os.path.splitext(name)
        return ext.lower() in AUDIO_EXTENSIONS and stem in self._replaceable

    def write(self, path: str, audio: np.ndarray, rate: int, subtype: str | None = None) -> None:
        """Writes ``path`` (a file directly inside ``folder``) into the temporary folder."""
        tmp, fmt = self._staged(path)
        _write_audio(tmp, path, audio, rate, subtype, fmt)
        if path not in self._files:
            self._files.append(path)

    def open(self, path: str, rate: int, channels: int, subtype: str | None = None) -> "StreamedFile":
        """Opens ``path`` (a file directly inside ``folder``) in the temporary folder to be written a block at
        a time (:class:`StreamedFile`): the same file as :meth:`write` of the blocks joined. Close it before
        the folder commits; an abort removes it with the rest."""
        tmp, fmt = self._staged(path)
        try:
            handle = sf.SoundFile(tmp, "w", samplerate=rate, channels=channels, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            raise AudioError(f"cannot write {path}: {exc}") from None
        if path not in self._files:
            self._files.append(path)
        return StreamedFile(handle, path)

    def _staged(self, path: str) -> tuple[str, str]:
        """The temporary file (created empty) that stands for ``path``, and its format."""
        if os.path.dirname(os.path.abspath(path)) != self.folder:
            raise ValueError(f"{path} is not directly inside {self.folder}")
        name = os.path.basename(path)
        fmt = _format_for(os.path.splitext(name)[1])
        if self._staging is None:
            parent, base = os.path.split(self.folder)
            self._made = make_dirs(parent)
            _check_writable(parent, self._made)
            try:
                self._staging = _create_dir(parent, f".{base}.part")
            except OSError as exc:
                remove_empty_dirs(self._made)
                raise AudioError(f"cannot write stems to {self._shown}: {exc.strerror or exc}") from None
        tmp = os.path.join(self._staging, name)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666))
        except OSError as exc:
            raise AudioError(f"cannot write {path}: {exc.strerror or exc}") from None
        return tmp, fmt

    def commit(self) -> list[str]:
        if self._staging is None:
            return []
        old = None
        try:
            self.check()  # again: the folder may have changed while the files were written
            if os.path.lexists(self.folder):
                parent, base = os.path.split(self.folder)
                old = _free_name(parent, f".{base}.old")
                os.rename(self.folder, old)
            os.rename(self._staging, self.folder)
            self._staging = None
        except BaseException as exc:
            if old is not None and os.path.lexists(old) and not os.path.lexists(self.folder):
                try:
                    os.rename(old, self.folder)
                except OSError as undo:
                    log.warning("could not put %s back from %s: %s", self._shown, old, undo)
            self.abort()
            if isinstance(exc, OSError):
                raise AudioError(f"cannot write stems to {self._shown}: {exc.strerror or exc}") from None
            raise
        files, self._files, self._made = self._files, [], []
        if old is not None:
            _remove_tree(old)
        return files

    def abort(self) -> None:
        if self._staging is not None and os.path.lexists(self._staging):
            _remove_tree(self._staging)
            self._staging = None
        remove_empty_dirs(self._made)
        self._files, self._made = [], []

    def remove_leftovers(self) -> None:
        """Remove what a process killed while writing this folder left next to it: its staging
        (``.NAME.part*``) and set-aside (``.NAME.old*``) entries. Only for a caller that knows no other
        writer is at work on this folder (a job holding its output folder's lock)."""
        parent, base = os.path.split(self.folder)
        try:
            entries = os.listdir(parent)
        except OSError:
            return
        for name in entries:
            if name.startswith((f".{base}.part", f".{base}.old")):
                target = os.path.join(parent, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    _remove_tree(target)
                else:
                    _remove(target)



class StreamedFile:
    """An audio file of an :class:`AtomicFolder` written a block at a time: ``write`` (channels, n) blocks,
    then ``close``. Every problem is an AudioError naming the file."""

    def __init__(self, handle: sf.SoundFile, path: str):
        self._handle = handle
        self.path = path

    def write(self, audio: np.ndarray) -> None:
        try:
            self._handle.write(np.ascontiguousarray(audio.T))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            raise AudioError(f"cannot write {self.path}: {exc}") from None

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            self._handle.close()
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
            raise AudioError(f"cannot write {self.path}: {exc}") from None


def _format_for(ext: str) -> str:
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".aiff": "AIFF", ".aif": "AIFF"}.get(ext.lower())
    if fmt is None:
        raise AudioError(f"unsupported output format '{ext}' (use wav, flac, ogg or aiff)")
    return fmt
