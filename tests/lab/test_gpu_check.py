"""The prepared GPU check never rots: the whole device command runs here as a CPU dry run (tiny
models, short settings), and the parts a CPU cannot exercise (graph decisions, time limits) are
tested on their own."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from bridge.cli import main
from streamer.lab import gpu_run
from streamer.lab.gpu_check import (Check, Plan, end_process_group, goals, graph_decision, markdown,
                                   serving_capacity)
from streamer.lab.gpu_preflight import shared_memory_enough

from conftest import REPO


def test_device_command_dry_run_writes_everything_in_order_within_its_time(tmp_path):
    out = tmp_path / "out"
    limit = 400
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streamer.lab.gpu_run", str(out), "--dry-run", "--seconds", str(limit),
                           "--wheels", str(tmp_path / "no-wheels")],
                          cwd=REPO, capture_output=True, text=True, timeout=limit + 60)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert took < limit
    run = json.loads((out / "run.json").read_text())
    assert [s["step"] for s in run["steps"]] == ["preflight", "pytest", "gpu_check"]
    assert all(s["rc"] == 0 and not s["timed_out"] for s in run["steps"]), run
    # the preflight is written first, the tests' whole log next, the report last
    order = [os.stat(out / name).st_mtime for name in ("preflight.json", "pytest.txt", "gpu_check.json")]
    assert order == sorted(order)
    pre = json.loads((out / "preflight.json").read_text())
    for name in ("torch", "numpy", "numba", "einops", "rotary_embedding_torch"):
        assert not pre["packages"][name].startswith("error"), pre["packages"]
    assert pre["shm"]["total_mib"] and pre["check_imports"] == "ok"
    pytest_log = (out / "pytest.txt").read_text()
    assert "passed" in pytest_log and "skipped" in pytest_log  # the whole log: CPU tests pass, CUDA ones skip
    results = json.loads((out / "gpu_check.json").read_text())
    sections = results["sections"]
    assert list(sections) == ["environment", "correctness", "timings", "hop_search", "offline", "serving"]
    assert not [k for k, v in sections.items() if "error" in v or "skipped" in v or v.get("unfinished")], sections
    assert sections["correctness"]["offline_exact_max_diff"] == 0.0
    assert sections["correctness"]["residual_sum_max_error"] < 1e-5
    assert sections["correctness"]["spread_sum_max_error"] < 1e-5
    rows = [r for r in sections["timings"]["rows"] if "eager_ms_median" in r]
    assert len(rows) == 4 and all(r["eager_ms_median"] > 0 and r["gflop"] > 0 and r["x_floor"] > 0 for r in rows)
    assert set(sections["timings"]["graph_decisions"]) == {"tiny_bs", "tiny_mel"}
    hop = sections["hop_search"]
    assert hop["worker"] == "process" and hop["cuda_graph"] is False
    trials = hop["windows"]["0.5"]["trials"]
    assert trials and all(t["misses"] == 0 for t in trials), trials
    assert sections["offline"]["rtf_ours"] > 0 and sections["offline"]["speedup_vs_reference"] > 0
    serving = sections["serving"]
    assert serving["model"] == "tiny_bs" and set(serving["windows"]) == {"0.25", "0.5"}
    for info in serving["windows"].values():
        measured = [r for r in info["rows"] if "ms_median" in r]
        assert measured and all(r["ms_median"] > 0 and r["windows_per_s"] > 0 for r in measured), info
        assert {k: info[k] for k in ("streams", "batch", "ms_per_batch")} == serving_capacity(info["rows"], 0.25)
    ingress = serving["ingress"]
    assert ingress["us_per_stream_hop_median"] > 0 and ingress["streams_per_ingress_core"] > 0
    assert results["preflight"]["python"]
    report = (out / "gpu_check.md").read_text()
    for heading in ("Preflight:", "## Correctness on the device", "## Time per window", "CUDA graph decision",
                    "## Offline demix", "## Smallest sustainable hop", "## Serving: streams per device", "## Goals"):
        assert heading in report
    log = (out / "log.txt").read_text()
    assert "done in" in log and log in done.stdout


def test_serving_capacity_takes_the_batch_that_serves_most_streams_within_half_a_hop():
    rows = [{"batch": 1, "ms_median": 40.0}, {"batch": 4, "ms_median": 60.0}, {"batch": 16, "ms_median": 200.0},
            {"batch": 32, "ms_median": 260.0}, {"batch": 64, "skipped": "time budget"}]
    # 0.5 s hop: batch 1 runs 12 times a hop (12 streams), 4 -> 8 x 4 = 32, 16 -> 2 x 16 = 32 (not more: the
    # first wins), 32 takes over half the hop (a window could wait 520 ms)
    assert serving_capacity(rows, 0.5) == {"streams": 32, "batch": 4, "ms_per_batch": 60.0}
    assert serving_capacity(rows, 0.6) == {"streams": 64, "batch": 32, "ms_per_batch": 260.0}
    assert serving_capacity([{"batch": 1, "ms_median": 300.0}], 0.5) == {"streams": 0, "batch": None,
                                                                          "ms_per_batch": None}


def _row(precision, seconds, speedup, db=-120.0, model="m"):
    return {"model": model, "window_s": seconds, "precision": precision, "eager_ms_median": 10.0 * speedup,
            "graph_ms_median": 10.0, "graph_speedup": speedup, "graph_error_db_vs_eager": db}


def test_graph_decision_per_precision_with_a_tolerance():
    rows = [_row("fp32", 2, 1.30), _row("fp32", 4, 0.99), _row("fp32", 8, 0.98),     # compute-bound: no gain
            _row("bf16", 2, 2.10), _row("bf16", 4, 1.40), _row("bf16", 8, 0.97, -60.0)]
    bf16 = graph_decision(rows, "m", "bf16")
    assert bf16["use"] is True and bf16["speedup_median"] == 1.4, bf16
    fp32 = graph_decision(rows, "m", "fp32")
    assert fp32["use"] is False and "not faster" in fp32["reason"], fp32
    slow = graph_decision(rows + [_row("fp16", 2, 1.5), _row("fp16", 4, 1.2), _row("fp16", 8, 0.90)], "m", "fp16")
    assert slow["use"] is False and "slower" in slow["reason"]
    inexact = graph_decision([_row("bf16", 2, 3.0, -20.0)], "m", "bf16")
    assert inexact["use"] is False and "differs" in inexact["reason"]
    failed = graph_decision([{"model": "m", "window_s": 2, "precision": "bf16", "graph": "capture failed"}], "m", "bf16")
    assert failed["use"] is False and failed["reason"] == "capture failed"
    assert graph_decision(rows, "other", "bf16")["use"] is False


def test_a_step_past_its_time_is_ended_with_its_children(tmp_path, capsys):
    marker = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
            f"open({str(marker)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)")
    run = gpu_run.Run(str(tmp_path), seconds=30)
    start = time.monotonic()
    rc = run.step("sleeper", [sys.executable, "-c", code], "sleeper.txt", 3)
    assert time.monotonic() - start < 15 and rc != 0
    assert run.steps[-1]["timed_out"] is True
    assert "started" in (tmp_path / "sleeper.txt").read_text()
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the step's child outlived it"
    assert json.loads((tmp_path / "run.json").read_text())["steps"][-1]["step"] == "sleeper"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_end_process_group_ends_grandchildren():
    proc = subprocess.Popen([sys.executable, "-c", "import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
                             "print(p.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    grandchild = int(proc.stdout.readline())
    end_process_group(proc)
    assert proc.returncode is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.1)
    assert not _alive(grandchild)


def test_budget_is_checked_before_each_section_and_a_cut_run_keeps_what_it_measured(tmp_path):
    check = Check(Plan(device="cpu", budget_seconds=0.0), str(tmp_path))
    check.section("hop_search", lambda: pytest.fail("must not start"), need=25.0)
    assert "time budget" in check.results["sections"]["hop_search"]["skipped"]
    check.save("timings", {"rows": [{"model": "m", "window_s": 2.0, "precision": "fp32", "gflop": 1.0,
                                     "floor_ms": 1.0, "eager_ms_median": 3.0, "eager_ms_min": 2.5}]})
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["sections"]["timings"]["unfinished"] is True and saved["sections"]["timings"]["rows"]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "timings: unfinished" in report and "| m | 2 s | fp32 | 3.0, 2.5 |" in report
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def test_shared_memory_check_falls_back_when_weights_do_not_fit(tmp_path):
    ok, why = shared_memory_enough(1, path=str(tmp_path))
    assert ok and "MiB free" in why
    too_big, why = shared_memory_enough(2 ** 60, path=str(tmp_path))
    assert not too_big and "need about" in why
    missing, why = shared_memory_enough(1, path=str(tmp_path / "absent"))
    assert not missing and "missing" in why


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
