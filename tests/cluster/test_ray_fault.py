"""A node lost mid-job: a multi-node cluster on this machine with Ray's own test utilities (a head and
two worker nodes, one CPU each); a worker node is removed while the job runs, and every file is still
separated, exactly as plain `separate` does it."""
from __future__ import annotations

import os
import threading
import time

import pytest
import soundfile as sf

from bridge.cli.main import main
from cluster_helpers import RATE, latest, leftovers, manifest, plain_separate, separate_args, song, stem_files, tiny_model

ray = pytest.importorskip("ray", reason="the cluster extra is not installed (pip install 'stemstream[cluster]')")
cluster_utils = pytest.importorskip("ray.cluster_utils")


def test_removing_a_worker_node_mid_job_still_completes_every_file(tmp_path, capsys):
    cfg, ckpt = tiny_model(tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir()
    count = 12
    for i in range(count):
        sf.write(lib / f"track{i:02d}.wav", song(6.0, i), RATE, subtype="FLOAT")
    out = tmp_path / "stems"
    if ray.is_initialized():
        ray.shutdown()
    cluster = cluster_utils.Cluster(initialize_head=True,
                                    head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    removed = {}

    def remove_when_started():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if any(r["status"] == "done" for r in manifest(out)):
                removed["done_before"] = len(manifest(out))
                cluster.remove_node(workers[1])
                removed["at"] = time.monotonic()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=remove_when_started, daemon=True)
    killer.start()
    try:
        rc = main(separate_args([lib], cfg, ckpt, out, "--ray", cluster.address, "--workers", 3))
        printed = capsys.readouterr().out
        killer.join(timeout=5)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert "at" in removed, "the node was not removed while the job ran"
    assert removed["done_before"] < count
    assert rc == 0, printed
    assert f"{count} separated, 0 already done (skipped), 0 failed" in printed
    assert "workers replaced" in printed  # the lost node's worker was noticed and replaced
    assert all(r["status"] == "done" for r in latest(out).values()) and len(latest(out)) == count
    assert not leftovers(out)

    reference = tmp_path / "plain"
    assert plain_separate(sorted(lib.iterdir()), cfg, ckpt, reference) == 0
    assert stem_files(out) == stem_files(reference)
