"""The prepared GPU check never rots: its CPU dry run (tiny models, short settings) runs every section."""
import json

import pytest
import torch

from bridge.cli import main
from streamer.lab.gpu_check import goals, markdown


def test_dry_run_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "gpu"
    assert main(["bench-gpu", str(out), "--dry-run"]) == 0
    results = json.loads((out / "gpu_check.json").read_text())
    sections = results["sections"]
    assert set(sections) == {"environment", "correctness", "timings", "offline", "hop_search"}
    assert not [k for k, v in sections.items() if "error" in v or "skipped" in v], sections
    assert sections["correctness"]["offline_exact_max_diff"] == 0.0
    assert sections["correctness"]["residual_sum_max_error"] < 1e-5
    assert sections["correctness"]["spread_sum_max_error"] < 1e-5
    rows = [r for r in sections["timings"]["rows"] if "eager_ms_median" in r]
    assert len(rows) == 4 and all(r["eager_ms_median"] > 0 and r["gflop"] > 0 and r["x_floor"] > 0 for r in rows)
    trials = sections["hop_search"]["windows"]["0.5"]["trials"]
    assert trials and all(t["misses"] == 0 for t in trials), trials
    assert sections["offline"]["rtf_ours"] > 0 and sections["offline"]["speedup_vs_reference"] > 0
    report = (out / "gpu_check.md").read_text()
    for heading in ("## Correctness on the device", "## Time per window", "## Offline demix",
                    "## Smallest sustainable hop", "## Goals"):
        assert heading in report
    assert "done in" in capsys.readouterr().out


def test_report_of_failed_and_skipped_sections():
    results = {"sections": {"environment": {"gpu": "x", "torch": "2", "bf16_tflops_measured": 800.0},
                            "timings": {"error": "RuntimeError: boom"}, "offline": {"skipped": "time budget spent"}}}
    results["goals"] = goals(results)
    text = markdown(results)
    assert "timings: RuntimeError: boom" in text and "offline: time budget spent" in text
    assert results["goals"] == {"hop_8s_le_50ms": None, "offline_2x_reference": None}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_full_check_needs_cuda(tmp_path, capsys):
    assert main(["bench-gpu", str(tmp_path / "gpu")]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err
