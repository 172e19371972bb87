"""The console entry point and its help."""
import subprocess
import sys

from conftest import REPO


def test_console_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "separate", "--help"], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0
    for flag in ("--config", "--checkpoint", "--out", "--instrumental", "--tta", "--trust-checkpoint"):
        assert flag in result.stdout
