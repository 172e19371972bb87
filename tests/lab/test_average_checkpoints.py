"""examples/average_checkpoints.py: the weights' average of checkpoints (how demo model v3 was made)."""
import subprocess
import sys

import torch

from conftest import REPO

SCRIPT = REPO / "examples" / "average_checkpoints.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_average_is_weighted_in_fp32_keeps_integers_and_writes_fp16(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([7])}
    torch.save(a, tmp_path / "a.ckpt")
    torch.save(b, tmp_path / "b.ckpt")
    r = run(tmp_path / "a.ckpt", tmp_path / "b.ckpt", "--out", tmp_path / "s.ckpt")
    assert r.returncode == 0, r.stderr
    s = torch.load(tmp_path / "s.ckpt", weights_only=True)
    assert torch.equal(s["w"], torch.tensor([2.0, 4.0])) and torch.equal(s["n"], torch.tensor([3]))
    r = run(tmp_path / "a.ckpt", tmp_path / "b.ckpt", "--out", tmp_path / "h.ckpt", "--weights", "0.25,0.75", "--fp16")
    assert r.returncode == 0, r.stderr
    h = torch.load(tmp_path / "h.ckpt", weights_only=True)
    assert h["w"].dtype == torch.float16 and torch.equal(h["w"].float(), torch.tensor([2.5, 5.0]))
    assert not list(tmp_path.glob("*.part"))


def test_mismatched_checkpoints_and_bad_weights_are_one_error_line(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "a.ckpt")
    torch.save({"w": torch.zeros(3)}, tmp_path / "b.ckpt")
    torch.save({"v": torch.zeros(2)}, tmp_path / "c.ckpt")
    for args, message in (((tmp_path / "a.ckpt", tmp_path / "b.ckpt"), "has shape (3,)"),
                          ((tmp_path / "a.ckpt", tmp_path / "c.ckpt"), "does not hold the same tensors"),
                          ((tmp_path / "a.ckpt", tmp_path / "a.ckpt", "--weights", "0.7,0.7"), "summing to 1")):
        r = run(*args, "--out", tmp_path / "out.ckpt")
        assert r.returncode == 1 and r.stderr.startswith("error:") and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "out.ckpt").exists()
