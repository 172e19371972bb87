"""Native Instruments Stem files (``.stem.mp4``): writing and reading.

A stem file is an MP4 with five stereo audio tracks: the master (the whole mix) first, then four stems
in NI's order (drums, bass, other, vocals). Only the master track is enabled, so plain players play the
mix; DJ software (Traktor, Mixxx) finds the stems through a ``stem`` box under ``moov/udta`` holding JSON
(``version`` 1, the stems' names and colours, and a ``mastering_dsp`` section, here with compressor and
limiter disabled). The file carries iTunes tags (title, artist, album) and ``TAUT`` = ``STEM``.

Audio is encoded and decoded by ffmpeg (Debian package ``ffmpeg``), AAC at 256 kbps by default (the
codec Traktor reads everywhere) or ALAC (lossless, 16 or 24 bit); the ``stem`` box and the track flags
are written by :mod:`streamer.formats.mp4box`, the tags by mutagen. Files are written under a temporary
name in the target's folder and renamed when complete; a failure leaves no file behind.

Audio arrays are ``(channels, samples)`` float32, as everywhere in the project.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..audio import adapt_channels, check_finite, fit_length, resample
from ..errors import AudioError, SettingsError
from . import mp4box

#: NI's stem slots, in file order
NI_STEMS = ("drums", "bass", "other", "vocals")
#: NI's colours per slot
NI_COLORS = {"drums": "#009E73", "bass": "#D55E00", "other": "#CC79A7", "vocals": "#56B4E9"}
#: other names a model may give a slot's stem (compared case-insensitively)
ALIASES = {"drums": ("drums", "drum"), "bass": ("bass",), "other": ("other", "others"),
           "vocals": ("vocals", "vocal", "vox", "voice")}
CODECS = ("aac", "alac")
DEFAULT_RATE = 44100          # NI's rate
DEFAULT_AAC_KBPS = 256        # NI's AAC rate
ALAC_BITS = (16, 24)
SUFFIXES = (".stem.mp4", ".stem.m4a")
STEM_BOX = "udta/stem"
TAGS = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb"}   # our name -> iTunes atom
STEM_TAG = ("TAUT", "STEM")   # the iTunes tag NI's own tool sets on stem files

#: the mastering section: NI's defaults, both parts disabled so that players apply nothing
MASTERING_DSP = {
    "compressor": {"enabled": False, "ratio": 3, "threshold": 0, "attack": 0.003, "release": 0.3,
                   "input_gain": 0.5, "output_gain": 0.5, "hp_cutoff": 300, "dry_wet": 50},
    "limiter": {"enabled": False, "threshold": 0, "release": 0.05, "ceiling": -0.35},
}

_CHUNK = 1 << 16


# --- stems ----------------------------------------------------------------------------------------------

def parse_stem_order(text: str | Sequence[str] | None) -> list[str] | None:
    """``--stem-order`` as given (``"a,b,c,d"`` or a list) as a list of names; None stays None."""
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    return [n for n in names if n]


def match_stems(model_stems: Sequence[str], order: str | Sequence[str] | None = None) -> list[str]:
    """The four of ``model_stems`` that fill NI's slots (drums, bass, other, vocals), in that order.

    Without ``order`` the model must have exactly four stems named for the slots (``vocals``/``vocal``/
    ``vox``/``voice``, ``drums``/``drum``, ``bass``, ``other``/``others``; any case). ``order`` (four
    model stem names, a list or ``"a,b,c,d"``) maps any four of them, in NI's order. Anything else is
    one SettingsError naming the model's stems and how to map them.
    """
    stems = [str(s) for s in model_stems]
    have = ", ".join(stems) if stems else "none"
    how = (f"map four of them to NI's slots with --stem-order NAME,NAME,NAME,NAME "
           f"(in NI's order: {', '.join(NI_STEMS)})")
    wanted = parse_stem_order(order)
    if wanted is not None:
        if len(wanted) != len(NI_STEMS):
            raise SettingsError(f"--stem-order needs {len(NI_STEMS)} stem names (for {', '.join(NI_STEMS)}), "
                                f"got {len(wanted)}: {', '.join(wanted) or 'none'}; the model's stems: {have}")
        unknown = [n for n in wanted if n not in stems]
        if unknown:
            raise SettingsError(f"--stem-order names {', '.join(unknown)}, which the model does not have; "
                                f"its stems: {have}")
        twice = sorted({n for n in wanted if wanted.count(n) > 1})
        if twice:
            raise SettingsError(f"--stem-order names {', '.join(twice)} more than once; each slot needs its own stem")
        return wanted
    if len(stems) != len(NI_STEMS):
        raise SettingsError(f"a stem file holds {len(NI_STEMS)} stems ({', '.join(NI_STEMS)}); the model has "
                            f"{len(stems)}: {have}; {how}")
    found = []
    for slot in NI_STEMS:
        match = [s for s in stems if s.lower() in ALIASES[slot]]
        if len(match) != 1:
            missing = [slot for slot in NI_STEMS if not any(s.lower() in ALIASES[slot] for s in stems)]
            raise SettingsError(f"the model's stems ({have}) are not NI's {', '.join(NI_STEMS)} "
                                f"(no {', '.join(missing) or slot + ' that is unique'}); {how}")
        found.append(match[0])
    return found


def stem_metadata(names: Sequence[str]) -> dict:
    """The NI JSON for a file whose stems (in NI's slot order) have display ``names``."""
    if len(names) != len(NI_STEMS):
        raise ValueError(f"{len(NI_STEMS)} stem names needed, got {len(names)}")
    stems = [{"name": str(name), "color": NI_COLORS[slot]} for slot, name in zip(NI_STEMS, names)]
    return {"version": 1, "stems": stems, "mastering_dsp": json.loads(json.dumps(MASTERING_DSP))}


def display_name(stem: str) -> str:
    """How a model's stem name is shown in the file (``vocals`` -> ``Vocals``)."""
    return stem[:1].upper() + stem[1:]


# --- tools ----------------------------------------------------------------------------------------------

def find_ffmpeg(ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe") -> tuple[str, str]:
    """Full paths of ffmpeg and ffprobe; a SettingsError naming the Debian package when one is missing."""
    found = []
    for tool in (ffmpeg, ffprobe):
        path = shutil.which(tool)
        if path is None:
            raise SettingsError(f"{tool} not found: stem files need ffmpeg and ffprobe "
                                f"(Debian/Ubuntu: apt-get install ffmpeg)")
        found.append(path)
    return found[0], found[1]


def _reason(err: bytes | str, rc: int) -> str:
    """What ffmpeg said first (its first error line, without the ``[aac @ 0x...]`` prefix), or how it ended."""
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    lines = [re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*", "", ln.strip()) for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if lines:
        return lines[0]
    return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"


# --- tags -----------------------------------------------------------------------------------------------

def read_tags(path: str | os.PathLike) -> dict[str, str]:
    """Title, artist and album of an audio file (any format mutagen reads), where it has them; {} for
    a file without tags or one mutagen cannot read."""
    import mutagen

    try:
        tagged = mutagen.File(os.fspath(path), easy=True)
    except Exception:   # mutagen raises many types for files it cannot parse; tags are optional
        return {}
    if tagged is None or not tagged.tags:
        return {}
    out = {}
    id3 = {"title": "TIT2", "artist": "TPE1", "album": "TALB"}   # WAV/AIFF carry plain ID3 even with easy=True
    for key in TAGS:
        try:
            values = tagged.tags.get(key)
            if values is None and hasattr(tagged.tags, "getall"):
                values = [str(v) for frame in tagged.tags.getall(id3[key]) for v in frame.text]
        except (KeyError, ValueError, AttributeError):
            values = None
        if values:
            text = values[0] if isinstance(values, list) else values
            if str(text).strip():
                out[key] = str(text)
    return out


def _write_tags(path: str, tags: Mapping[str, str]) -> None:
    from mutagen.mp4 import MP4, MP4StreamInfoError, error as MP4Error

    try:
        mp4 = MP4(path)
        if mp4.tags is None:
            mp4.add_tags()
        for key, atom in TAGS.items():
            if tags.get(key):
                mp4.tags[atom] = [str(tags[key])]
        mp4.tags[STEM_TAG[0]] = [STEM_TAG[1]]
        mp4.save()
    except (MP4Error, MP4StreamInfoError, OSError) as exc:
        raise AudioError(f"cannot tag {path}: {exc}") from None


def _file_tags(path: str) -> dict[str, str]:
    from mutagen.mp4 import MP4

    try:
        tags = MP4(path).tags
    except Exception:   # tags are optional when reading
        return {}
    if not tags:
        return {}
    out = {key: str(tags[atom][0]) for key, atom in TAGS.items() if tags.get(atom)}
    if tags.get(STEM_TAG[0]):
        out["stem"] = str(tags[STEM_TAG[0]][0])
    return out


# --- writing --------------------------------------------------------------------------------------------

def _feed(fd: int, audio: np.ndarray, errors: list) -> None:
    """Writes ``audio`` (channels, n) interleaved as float32 to the pipe ``fd`` and closes it."""
    try:
        with os.fdopen(fd, "wb", buffering=0) as pipe:
            for start in range(0, audio.shape[1], _CHUNK):
                block = np.ascontiguousarray(audio[:, start:start + _CHUNK].T, dtype="<f4")
                view = memoryview(block).cast("B")
                while view:
                    view = view[pipe.write(view):]
    except (BrokenPipeError, OSError) as exc:   # ffmpeg went away; its exit status tells why
        errors.append(exc)


def _prepare(audio, rate: int, out_rate: int, frames: int | None, where: str) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2 or audio.shape[-1] == 0:
        raise AudioError(f"{where}: expected (channels, samples) audio, got shape {audio.shape}")
    if audio.shape[0] > 8 and audio.shape[1] <= 2:   # (samples, channels) given
        raise AudioError(f"{where}: expected (channels, samples) audio, got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"{where}: expected float audio, got {audio.dtype}")
    check_finite(audio, where)
    audio = adapt_channels(audio.astype(np.float32, copy=False), 2, where)
    audio = resample(audio, rate, out_rate)
    if frames is not None:
        audio = fit_length(audio, frames)
    return audio


def _temp_name(target: str) -> str:
    folder, name = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{name}.{secrets.token_hex(4)}.part")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _ni_edit(metadata: dict, tracks: int):
    payload = json.dumps(metadata, separators=(",", ":")).encode("utf-8")

    def edit(moov: mp4box.Box) -> None:
        audio = mp4box.audio_tracks(moov)
        if len(audio) != tracks:
            raise AudioError(f"ffmpeg wrote {len(audio)} audio tracks, expected {tracks}")
        for i, trak in enumerate(audio):
            flags = mp4box.track_flags(trak)
            # the master plays; the stems are off (as NI's tool writes them: no flag set)
            mp4box.set_track_flags(trak, (flags | mp4box.TKHD_ENABLED) if i == 0 else 0)
            mp4box.set_alternate_group(trak, 0)
        moov.container("udta").set_child("stem", payload)
    return edit


def write_stem_file(path: str | os.PathLike, mix, stems: Mapping[str, np.ndarray], rate: int, *,
                    order: str | Sequence[str] | None = None, codec: str = "aac", bits: int = 16,
                    kbps: int = DEFAULT_AAC_KBPS, out_rate: int | None = DEFAULT_RATE,
                    tags: Mapping[str, str] | None = None, names: Sequence[str] | None = None,
                    ffmpeg: str = "ffmpeg") -> str:
    """Writes a NI stem file to ``path`` and returns its path.

    ``mix`` is the input mix and ``stems`` the model's stems by name, each ``(channels, samples)`` float
    audio at ``rate`` (mono is doubled to stereo; stems are cut or zero-padded to the mix's length).
    The four stems are chosen and ordered with :func:`match_stems` (``order`` = ``--stem-order``); the
    file shows them as ``names`` (default: the chosen stems' names, capitalized). ``codec`` is ``"aac"``
    (at ``kbps``) or ``"alac"`` (``bits`` 16 or 24); everything is written at ``out_rate`` (None: keep
    ``rate``). ``tags`` (``title``, ``artist``, ``album``; see :func:`read_tags`) go into the file.

    Errors: SettingsError for stems that cannot be mapped, a bad codec setting or a missing ffmpeg;
    AudioError for bad audio or a failed encode or write. The file appears complete or not at all
    (written under a temporary name in the same folder, renamed at the end); an existing file at
    ``path`` is replaced.
    """
    path = os.fspath(path)
    chosen = match_stems(list(stems), order)
    codec, bits, kbps, rate, out_rate = _check_settings(codec, bits, kbps, rate, out_rate, names)
    _check_folder(path)
    ffmpeg_path, _ = find_ffmpeg(ffmpeg, "ffprobe")
    master = _prepare(mix, rate, out_rate, None, "mix")
    frames = master.shape[1]
    tracks = [master] + [_prepare(stems[s], rate, out_rate, frames, f"stem {s}") for s in chosen]
    metadata = stem_metadata(list(names) if names is not None else [display_name(s) for s in chosen])
    return _encode(path, ffmpeg_path, tracks, out_rate, codec, bits, kbps, metadata, tags)


def write_stem_file_from_files(path: str | os.PathLike, mix: str | os.PathLike, stems: Mapping[str, str], *,
                               order: str | Sequence[str] | None = None, codec: str = "aac", bits: int = 16,
                               kbps: int = DEFAULT_AAC_KBPS, out_rate: int | None = DEFAULT_RATE,
                               tags: Mapping[str, str] | None = None, names: Sequence[str] | None = None,
                               ffmpeg: str = "ffmpeg") -> str:
    """As :func:`write_stem_file`, with the mix and the stems given as audio files (any format ffmpeg
    reads) that ffmpeg reads itself: memory stays small whatever the length (a three-hour DJ set). Each
    track is made stereo (mono doubled, more channels mixed down by ffmpeg) at ``out_rate`` (None: the
    mix file's rate); the stems are cut or padded with silence to the mix's length."""
    path = os.fspath(path)
    chosen = match_stems(list(stems), order)
    for where, file in [("mix", mix)] + [(f"stem {s}", stems[s]) for s in chosen]:
        if not os.path.isfile(os.fspath(file)):
            raise AudioError(f"{where}: audio file not found: {os.fspath(file)}")
    ffmpeg_path, ffprobe_path = find_ffmpeg(ffmpeg, "ffprobe")
    if out_rate is None:
        streams = probe_audio_streams(mix, ffprobe_path)
        if not streams or not int(streams[0].get("sample_rate") or 0):
            raise AudioError(f"{os.fspath(mix)}: no audio stream with a sample rate")
        out_rate = int(streams[0]["sample_rate"])
    codec, bits, kbps, _, out_rate = _check_settings(codec, bits, kbps, out_rate, out_rate, names)
    _check_folder(path)
    tracks = [os.fspath(mix)] + [os.fspath(stems[s]) for s in chosen]
    metadata = stem_metadata(list(names) if names is not None else [display_name(s) for s in chosen])
    return _encode(path, ffmpeg_path, tracks, out_rate, codec, bits, kbps, metadata, tags)


def _check_settings(codec, bits, kbps, rate, out_rate, names) -> tuple[str, int, int, int, int]:
    codec = str(codec).lower()
    if codec not in CODECS:
        raise SettingsError(f"stem file codec must be one of {', '.join(CODECS)}, not {codec!r}")
    try:
        kbps = int(kbps)
        bits = int(bits)
    except (TypeError, ValueError):
        raise SettingsError(f"stem file bit rate and bit depth are whole numbers, not {kbps!r} and {bits!r}") from None
    if codec == "aac" and not (32 <= kbps <= 512):
        raise SettingsError(f"AAC bit rate must be 32 to 512 kbps, not {kbps}")
    if codec == "alac" and bits not in ALAC_BITS:
        raise SettingsError(f"ALAC stem files are 16 or 24 bit, not {bits}")
    if names is not None and len(names) != len(NI_STEMS):
        raise SettingsError(f"{len(NI_STEMS)} display names needed, got {len(names)}")
    rate = int(rate)
    out_rate = rate if out_rate is None else int(out_rate)
    if rate <= 0 or out_rate <= 0:
        raise SettingsError(f"bad sample rate {rate if rate <= 0 else out_rate}")
    return codec, bits, kbps, rate, out_rate


def _check_folder(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise AudioError(f"cannot write {path}: folder {folder} does not exist")


def _codec_args(codec: str, bits: int, kbps: int) -> list[str]:
    if codec == "aac":
        return ["-c:a", "aac", "-b:a", f"{int(kbps)}k"]
    args = ["-c:a", "alac", "-sample_fmt", "s16p" if bits == 16 else "s32p"]
    return args + (["-bits_per_raw_sample", "24"] if bits == 24 else [])


def _run_ffmpeg(ffmpeg_path: str, tracks: list, out_rate: int, out_args: list[str], out_path: str, where: str,
                pad_after_first: float | None) -> None:
    """One ffmpeg process: ``tracks`` (arrays (2, n) at ``out_rate``, fed through pipes, or file paths
    it reads itself) into ``out_path`` with ``out_args``; the tracks after the first padded with silence
    and all cut to ``pad_after_first`` seconds when given. AudioError naming ``where`` on failure."""
    cmd = [ffmpeg_path, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    arrays = [t for t in tracks if not isinstance(t, str)]
    pipes = [os.pipe() for _ in arrays]
    feeds = iter(pipes)
    for track in tracks:
        if isinstance(track, str):
            cmd += ["-i", track]
        else:
            cmd += ["-f", "f32le", "-ar", str(out_rate), "-ac", "2", "-i", f"pipe:{next(feeds)[0]}"]
    for i in range(len(tracks)):
        cmd += ["-map", f"{i}:a:0"]
    if any(isinstance(t, str) for t in tracks):
        cmd += ["-ac", "2"]
        if pad_after_first is not None:
            for i in range(1, len(tracks)):
                cmd += [f"-filter:a:{i}", "apad"]
            cmd += ["-t", f"{pad_after_first:.9f}"]
    # the rate is given for the output too, so that ffmpeg refuses one the encoder cannot take instead of
    # quietly writing another
    cmd += out_args + ["-ar", str(out_rate), "-map_metadata", "-1", "-f", "mp4", out_path]
    errors: list = []
    threads = []
    writers: list = []
    proc = None
    try:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, pass_fds=[r for r, _ in pipes])
        except OSError as exc:
            raise AudioError(f"cannot run {ffmpeg_path}: {exc.strerror or exc}") from None
        finally:
            for r, _ in pipes:
                os.close(r)
        writers = [w for _, w in pipes]
        pipes = []
        for audio in arrays:
            w = writers.pop(0)
            t = threading.Thread(target=_feed, args=(w, audio, errors), daemon=True, name="stem-feed")
            try:
                t.start()
            except BaseException:
                writers.insert(0, w)
                raise
            threads.append(t)   # the thread owns (and closes) its write end now
        _, err = proc.communicate()
        for t in threads:
            t.join()
        if proc.returncode != 0:
            raise AudioError(f"cannot write {where}: ffmpeg failed ({_reason(err, proc.returncode)})")
        if errors or not os.path.isfile(out_path):
            raise AudioError(f"cannot write {where}: ffmpeg stopped reading the audio")
    except BaseException:
        for w in [w for _, w in pipes] + writers:
            os.close(w)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in threads:
            t.join(timeout=5)
        raise


def _encode(path: str, ffmpeg_path: str, tracks: list, out_rate: int, codec: str, bits: int, kbps: int,
            metadata: dict, tags: Mapping[str, str] | None) -> str:
    """ffmpeg encodes ``tracks`` (arrays (2, n) at ``out_rate``, fed through pipes; or file paths it
    reads itself) into a temporary file; then the tags, the NI box and the track flags; then the rename.

    AAC (ffmpeg's encoder runs on one thread, about 6 s of CPU per 3-minute stereo track) is encoded
    track by track in parallel processes (on a machine with more than one CPU), then muxed without
    re-encoding (the decoded audio is the same to the bit); ALAC, which is fast, in one process."""
    mix_seconds = _seconds_of(tracks[0]) if isinstance(tracks[0], str) else None
    dispositions = []
    for i in range(len(tracks)):
        dispositions += [f"-disposition:a:{i}", "default" if i == 0 else "0"]
    tmp = _temp_name(path)
    parts: list[str] = []
    try:
        # all tracks at once (five small processes): on 2 cores 15 s of wall for 30 s of CPU, where a pool
        # of 2 would take three rounds
        workers = len(tracks) if (os.cpu_count() or 1) > 1 else 1
        if codec == "aac" and workers > 1:
            parts = [f"{tmp}.{i}.m4a" for i in range(len(tracks))]
            failures: list = []

            def encode(i: int) -> None:
                # a stem read from a file is padded with silence or cut to the mix's length
                fit = (["-af", "apad", "-t", f"{mix_seconds:.9f}"]
                       if i > 0 and mix_seconds is not None and isinstance(tracks[i], str) else [])
                try:
                    _run_ffmpeg(ffmpeg_path, [tracks[i]], out_rate, fit + _codec_args(codec, bits, kbps), parts[i],
                                path, None)
                except BaseException as exc:  # noqa: BLE001 - raised by the caller
                    failures.append(exc)

            pending = list(range(len(tracks)))
            while pending:
                batch, pending = pending[:workers], pending[workers:]
                threads = [threading.Thread(target=encode, args=(i,), daemon=True, name="stem-encode") for i in batch]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if failures:
                    raise failures[0]
            _run_ffmpeg(ffmpeg_path, parts, out_rate, ["-c", "copy"] + dispositions + ["-brand", "M4A "], tmp, path,
                        None)
        else:
            _run_ffmpeg(ffmpeg_path, tracks, out_rate, _codec_args(codec, bits, kbps) + dispositions
                        + ["-brand", "M4A "], tmp, path, mix_seconds)
        _write_tags(tmp, dict(tags or {}))
        mp4box.rewrite_moov(tmp, _ni_edit(metadata, len(tracks)))
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        for part in parts:
            _remove(part)
    return path


# --- reading --------------------------------------------------------------------------------------------

@dataclass
class StemFile:
    """A stem file in memory: ``master`` (2, n) and ``stems`` (k, 2, n) float32 at ``rate``, the stems'
    ``names`` and ``colors`` in file order, the NI JSON (``metadata``), the iTunes ``tags`` (title,
    artist, album; ``stem`` = the TAUT tag) and the ``codec`` of the master track."""
    master: np.ndarray
    stems: np.ndarray
    rate: int
    names: list[str]
    colors: list[str]
    metadata: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    codec: str = ""

    @property
    def frames(self) -> int:
        return int(self.master.shape[-1])

    def stem(self, name: str) -> np.ndarray:
        """The stem called ``name`` (case-insensitive)."""
        for i, n in enumerate(self.names):
            if n.lower() == name.lower():
                return self.stems[i]
        raise KeyError(name)


def is_stem_path(path: str | os.PathLike) -> bool:
    """Whether a file name says stem file (``.stem.mp4`` / ``.stem.m4a``, as Mixxx detects them)."""
    return os.fspath(path).lower().endswith(SUFFIXES)


def read_stem_metadata(path: str | os.PathLike) -> dict:
    """The NI JSON of a stem file, checked as Mixxx checks it (the ``stem`` box under ``moov/udta``,
    trailing NULs ignored, ``version`` >= 1, a list of stems with names). AudioError otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(f"stem file not found: {path}")
    raw = mp4box.read_box(path, STEM_BOX)
    if raw is None:
        raise AudioError(f"{path} is not a stem file: it has no NI stem box (moov/udta/stem)")
    try:
        metadata = json.loads(raw.rstrip(b"\0").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AudioError(f"{path}: the NI stem box does not hold JSON ({exc})") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("version"), (int, float)) \
            or metadata["version"] < 1:
        raise AudioError(f"{path}: the NI stem box has no version >= 1")
    stems = metadata.get("stems")
    if not isinstance(stems, list) or not stems or not all(isinstance(s, dict) and "name" in s for s in stems):
        raise AudioError(f"{path}: the NI stem box lists no named stems")
    return metadata


def probe_audio_streams(path: str | os.PathLike, ffprobe: str = "ffprobe") -> list[dict]:
    """ffprobe's view of the audio streams (codec_name, sample_rate, channels, disposition ...)."""
    path = os.fspath(path)
    _, ffprobe_path = find_ffmpeg("ffmpeg", ffprobe)
    run = subprocess.run([ffprobe_path, "-v", "error", "-select_streams", "a", "-show_streams",
                          "-of", "json", path], capture_output=True, stdin=subprocess.DEVNULL)
    if run.returncode != 0:
        raise AudioError(f"cannot read {path}: {_reason(run.stderr, run.returncode)}")
    try:
        return json.loads(run.stdout or b"{}").get("streams", [])
    except ValueError:
        raise AudioError(f"cannot read {path}: ffprobe gave no stream list") from None


def _duration(stream: dict, rate: int) -> int | None:
    """A stream's duration in samples at ``rate`` from ffprobe's duration_ts and time_base, or None."""
    try:
        num, den = (int(x) for x in str(stream["time_base"]).split("/"))
        ticks = int(stream["duration_ts"])
    except (KeyError, ValueError, TypeError):
        return None
    if num <= 0 or den <= 0 or ticks <= 0:
        return None
    return round(ticks * num * rate / den)


def _seconds_of(path: str) -> float | None:
    """The duration of a file's first audio stream in seconds (exact where ffprobe gives its sample
    count), or None when unknown."""
    streams = probe_audio_streams(path)
    if not streams:
        return None
    rate = int(streams[0].get("sample_rate") or 0)
    samples = _duration(streams[0], rate) if rate > 0 else None
    if samples:
        return samples / rate
    try:
        return float(streams[0]["duration"])
    except (KeyError, ValueError, TypeError):
        return None


def _drain(fd: int, out: list, index: int) -> None:
    chunks = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            block = pipe.read(1 << 20)
            if not block:
                break
            chunks.append(block)
    out[index] = b"".join(chunks)


def read_stem_file(path: str | os.PathLike, rate: int | None = None, ffmpeg: str = "ffmpeg") -> StemFile:
    """Reads a stem file (or any MP4 with a NI stem box and an audio track per stem after the master):
    the master and the stems as float32 stereo, at the file's rate or at ``rate`` (resampled), all cut
    to the shortest track. AudioError for a file that is not one or cannot be decoded; SettingsError
    for a missing ffmpeg."""
    path = os.fspath(path)
    metadata = read_stem_metadata(path)
    ffmpeg_path, _ = find_ffmpeg(ffmpeg, "ffprobe")
    streams = probe_audio_streams(path)
    count = 1 + len(metadata["stems"])
    if len(streams) < count:
        raise AudioError(f"{path}: the NI stem box lists {count - 1} stems, so {count} audio tracks are "
                         f"needed (the master first); the file has {len(streams)}")
    file_rate = int(streams[0].get("sample_rate") or 0)
    if file_rate <= 0:
        raise AudioError(f"{path}: the master track has no sample rate")

    pipes = [os.pipe() for _ in range(count)]
    cmd = [ffmpeg_path, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", path]
    for i, (_, w) in enumerate(pipes):
        cmd += ["-map", f"0:a:{i}", "-f", "f32le", "-c:a", "pcm_f32le", "-ac", "2", "-ar", str(file_rate),
                f"pipe:{w}"]
    outputs: list = [b""] * count
    threads = []
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, pass_fds=[w for _, w in pipes])
    except OSError as exc:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        raise AudioError(f"cannot run {ffmpeg_path}: {exc.strerror or exc}") from None
    for _, w in pipes:
        os.close(w)
    for i, (r, _) in enumerate(pipes):
        t = threading.Thread(target=_drain, args=(r, outputs, i), daemon=True, name="stem-read")
        t.start()
        threads.append(t)
    try:
        _, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in threads:
            t.join()
    if proc.returncode != 0:
        raise AudioError(f"cannot decode {path}: {_reason(err, proc.returncode)}")
    arrays = [np.frombuffer(b, dtype="<f4") for b in outputs]
    # ffmpeg drops the encoder's leading padding (edit list) but not the trailing one of the last AAC
    # frame: the track's duration says where the audio ends
    frames = min([a.size // 2 for a in arrays] + [n for n in (_duration(s, file_rate) for s in streams[:count]) if n])
    if frames == 0:
        raise AudioError(f"{path}: a track decodes to no audio")
    tracks = [np.ascontiguousarray(a[:frames * 2].reshape(frames, 2).T) for a in arrays]
    if rate is not None and int(rate) != file_rate:
        tracks = [resample(t, file_rate, int(rate)) for t in tracks]
        frames = min(t.shape[1] for t in tracks)
        tracks = [t[:, :frames] for t in tracks]
    stems_meta = metadata["stems"]
    return StemFile(master=tracks[0], stems=np.stack(tracks[1:]).astype(np.float32, copy=False),
                    rate=int(rate) if rate is not None else file_rate,
                    names=[str(s.get("name", "")) for s in stems_meta],
                    colors=[str(s.get("color", "")) for s in stems_meta],
                    metadata=metadata, tags=_file_tags(path), codec=str(streams[0].get("codec_name", "")))
