"""`pip install .` into a fresh virtual environment, then `stemstream demo` outside the repository.

The demo model and song are package data, so an installed stemstream finds them without the source
tree. To keep the test quick and offline, the fresh environment sees the already installed
dependencies (torch, numpy, ...) through a path file pointing at a view of them that leaves stemstream
itself out; stemstream is built from this repository and installed as a wheel, as pip does for users.
"""
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def run(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dependency_view(tmp: pathlib.Path) -> pathlib.Path:
    """A folder of links to this environment's site-packages entries, without stemstream's own."""
    import numpy

    site = pathlib.Path(numpy.__file__).resolve().parents[1]
    view = tmp / "deps"
    view.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("stemstream", "__editable__", "streamer", "bridge")) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    return view


def test_pip_install_then_demo_outside_the_repository(tmp_path):
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", "--without-pip", venv])  # pip and setuptools come from this environment
    py = venv / "bin" / "python"
    purelib = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    pathlib.Path(purelib, "deps.pth").write_text(str(dependency_view(tmp_path)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # nothing from the network: the build backend comes from the dependency view
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-build-isolation", "-q", REPO],
        env=env, cwd=tmp_path)

    away = tmp_path / "elsewhere"
    away.mkdir()
    where = run([py, "-c", "import streamer, bridge, streamer.assets as a; print(streamer.__file__); "
                           "print(bridge.__file__); print(a.DEMO_CONFIG)"], env=env, cwd=away).stdout.split()
    assert all(path.startswith(purelib) for path in where), where  # the installed copy, not the repository
    demo = run([venv / "bin" / "stemstream", "demo", "--out", "out"], env=env, cwd=away)
    assert "RANDOM" not in demo.stdout, demo.stdout  # the trained demo checkpoint was found
    assert "mean SDR improvement" in demo.stdout
    for name in ("mix", "vocals", "drums", "bass", "other", "karaoke"):
        assert (away / "out" / f"{name}.wav").stat().st_size > 100_000, name
