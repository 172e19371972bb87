"""The job manifest (no Ray needed): lines survive a job killed while writing one, a second job
writing into the same folder is refused, and a file counts as done only with the same content, model,
settings and all its outputs."""
import json

import pytest

from streamer.cluster.manifest import Manifest, hash_bytes, hash_file, model_key
from streamer.errors import AudioError


def record(path, **kw):
    return {"input": str(path), "hash": "sha256:x", "model": "m", "settings": {"a": 1}, "status": "done",
            "duration": 1.0, "seconds": 0.5, "error": None, **kw}


def test_done_needs_the_same_content_model_settings_and_outputs(tmp_path):
    outputs = [tmp_path / "o" / "vocals.wav"]
    outputs[0].parent.mkdir()
    outputs[0].write_bytes(b"x")
    with Manifest(tmp_path) as m:
        m.append(record(tmp_path / "song.wav"))
        assert m.is_done(tmp_path / "song.wav", "sha256:x", "m", {"a": 1}, outputs)
        assert not m.is_done(tmp_path / "song.wav", "sha256:y", "m", {"a": 1}, outputs)
        assert not m.is_done(tmp_path / "song.wav", "sha256:x", "other", {"a": 1}, outputs)
        assert not m.is_done(tmp_path / "song.wav", "sha256:x", "m", {"a": 2}, outputs)
        assert not m.is_done(tmp_path / "song.wav", "sha256:x", "m", {"a": 1}, outputs + [tmp_path / "missing.wav"])
        m.append(record(tmp_path / "song.wav", status="failed", error="boom"))
        assert not m.is_done(tmp_path / "song.wav", "sha256:x", "m", {"a": 1}, outputs)  # the latest line counts
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(l)["status"] for l in lines] == ["done", "failed"]
    assert all("finished" in json.loads(l) for l in lines)


def test_a_half_written_last_line_is_ignored(tmp_path):
    with Manifest(tmp_path) as m:
        m.append(record(tmp_path / "a.wav"))
    with open(tmp_path / "manifest.jsonl", "a") as fh:
        fh.write('{"input": "/x/b.wav", "hash": "sha2')  # killed mid-line
    with Manifest(tmp_path) as m:
        assert m.unreadable_lines == 1
        assert list(m.latest) == [str(tmp_path / "a.wav")]


def test_a_second_job_in_the_same_folder_is_refused(tmp_path):
    with Manifest(tmp_path):
        with pytest.raises(AudioError, match="another job is writing"):
            with Manifest(tmp_path):
                pass
    with Manifest(tmp_path):  # released when the first one ends
        pass


def test_hashes(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1_000_000)
    assert hash_file(p) == hash_bytes(b"abc" * 1_000_000)
    assert model_key(b"cfg", b"w1") != model_key(b"cfg", b"w2") != model_key(b"cfg2", b"w1")
    assert model_key(b"ab", b"c") != model_key(b"a", b"bc")
