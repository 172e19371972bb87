"""Train the demo model (issue 18's v2) end to end, resumably, on songs of the generator.

Run it again to continue: it generates only the songs still missing, then resumes training from
``WORK/run/last.ckpt`` (or starts from ``--init``, by default the bundled demo model, when there is
none). ``--minutes`` bounds one run, so a training can proceed over several working sessions:

    python examples/train_demo_model.py --minutes 45            # data, then 45 minutes of training
    python examples/train_demo_model.py --minutes 45            # 45 more, from where it stopped
    python examples/train_demo_model.py --heldout               # then score the bundled model and the run on the held-out
                                                                # songs and the real-music excerpt

A new machine has no ``runs/`` folder: it starts from the committed progress checkpoint of the
config (``configs/training/<config name>.progress.ckpt``, written by ``--save-progress``: the best
weights so far, fp16) with a fresh optimiser and schedule, so the training carries on across machines
too.

A deeper model (``--config configs/models/bs_roformer_64x3_4stem.yaml``, real time at the balanced
preset on a 2-core CPU) starts, when it has no progress checkpoint of its own, by growing the bundled
64x2 model (``stemstream train --grow``: its layers seed the first ones, the new layer starts as the
identity), so it begins at the bundled model's quality instead of from scratch.

Seeds (never shared between the sets): training 100000-, validation 910000-, held-out 520000-.
Songs are written by ``stemstream synth`` in ``--jobs`` processes at once.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parents[1]
STEMSTREAM = [sys.executable, "-m", "bridge.cli"]
CONFIG = REPO / "configs" / "models" / "bs_roformer_64x2_4stem.yaml"
SHIPPED = REPO / "streamer" / "assets" / "demo" / "demo_bs_roformer_64x2.ckpt"


def progress_path(config: pathlib.Path) -> pathlib.Path:
    """The committed continuation point of ``config``'s model: a new machine (no runs/ folder) starts
    from here instead of the bundled model."""
    return REPO / "configs" / "training" / f"{config.stem}.progress.ckpt"


def config_depth(config: pathlib.Path) -> int:
    from streamer.msst.config import load_config

    return int(load_config(config).model["depth"])


def checkpoint_depth(path: pathlib.Path) -> int:
    from streamer.lab.grow import depth_of
    from streamer.msst.checkpoint import read_state_dict

    return depth_of(read_state_dict(path))


SETS = {"train": 100000, "val": 910000, "heldout": 520000}
FILES = ("mixture.wav", "vocals.wav", "drums.wav", "bass.wav", "other.wav")


def missing_seeds(folder: pathlib.Path, first: int, count: int) -> list[int]:
    return [s for s in range(first, first + count)
            if not all((folder / f"synth_{s:06d}" / f).is_file() for f in FILES)]


def generate(folder: pathlib.Path, first: int, count: int, seconds: float, jobs: int) -> None:
    seeds = missing_seeds(folder, first, count)
    if not seeds:
        return
    print(f"generating {len(seeds)} songs of {seconds:g} s into {folder} ({jobs} at a time)", flush=True)

    def one(seed: int) -> None:
        run = subprocess.run([*STEMSTREAM, "synth", "--seed", str(seed), "--count", "1", "--seconds", str(seconds),
                              "--out", str(folder)], cwd=REPO, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"synth --seed {seed} failed: {run.stderr.strip()[-500:]}")

    with ThreadPoolExecutor(jobs) as pool:
        for i, _ in enumerate(pool.map(one, seeds), 1):
            if i % 10 == 0 or i == len(seeds):
                print(f"  {i}/{len(seeds)}", flush=True)


def save_progress(run: pathlib.Path, config: pathlib.Path) -> None:
    """The run's best weights in fp16 (half the size; loading converts back to fp32) and its validation
    history beside them, written under temporary names and renamed."""
    import json

    import torch

    state = torch.load(run / "model.ckpt", map_location="cpu", weights_only=True)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    progress = progress_path(config)
    progress.parent.mkdir(parents=True, exist_ok=True)
    tmp = progress.with_suffix(".ckpt.part")
    torch.save(half, tmp)
    os.replace(tmp, progress)
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    note = progress.with_suffix(".json")
    tmp = note.with_suffix(".json.part")
    tmp.write_text(json.dumps({"from_run": str(run.relative_to(REPO)) if run.is_relative_to(REPO) else str(run),
                               "history": history}, indent=1))
    os.replace(tmp, note)
    print(f"progress saved: {progress.relative_to(REPO)} ({progress.stat().st_size / 1e6:.1f} MB)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(REPO / "runs" / "demo_v2"), help="data and run folder (default runs/demo_v2)")
    ap.add_argument("--train-songs", type=int, default=160)
    ap.add_argument("--val-songs", type=int, default=12)
    ap.add_argument("--val-seconds", type=float, default=20.0, help="seconds of each validation song scored (default: whole songs)")
    ap.add_argument("--heldout-songs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--minutes", type=float, help="training time of this run (default: until --steps)")
    ap.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4: fine-tuning from --init)")
    ap.add_argument("--no-augment", action="store_true", help="train on plain remixes (see stemstream train --help)")
    ap.add_argument("--threads", type=int, help="torch threads of the training process")
    ap.add_argument("--run", default="run", help="run folder under WORK (default run), to compare settings side by side")
    ap.add_argument("--config", default=str(CONFIG),
                    help="the model to train (default: the demo model's, 64x2; a deeper BS-RoFormer of the same "
                         "width starts grown from --init)")
    ap.add_argument("--init", help="weights to start from when there is no run yet (default: the committed progress "
                                   "checkpoint configs/training/<config name>.progress.ckpt if there is one, else "
                                   "the bundled demo model)")
    ap.add_argument("--save-progress", action="store_true",
                    help="after training, store the run's best weights (fp16) as the committed progress checkpoint")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="songs generated at once")
    ap.add_argument("--heldout", action="store_true", help="also generate the held-out songs and score the best model")
    args = ap.parse_args()

    work = pathlib.Path(args.work)
    config = pathlib.Path(args.config).resolve()
    if args.init is None:
        args.init = str(progress_path(config) if progress_path(config).is_file() else SHIPPED)
    data = {name: work / "data" / name for name in SETS}
    generate(data["train"], SETS["train"], args.train_songs, args.seconds, args.jobs)
    generate(data["val"], SETS["val"], args.val_songs, args.seconds, args.jobs)
    run = work / args.run
    cmd = [*STEMSTREAM, "train", str(data["train"]), "--val", str(data["val"]), "--config", str(config),
           "--out", str(run), "--steps", str(args.steps), "--val-every", "300", "--val-seconds", f"{args.val_seconds:g}",
           "--batch-size", "4", "--segment", "1", "--lr", f"{args.lr:g}"]
    if args.no_augment:
        cmd.append("--no-augment")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if (run / "last.ckpt").is_file():
        cmd += ["--resume"]
    else:
        cmd += ["--init", args.init]
        if checkpoint_depth(pathlib.Path(args.init)) < config_depth(config):
            cmd += ["--grow"]
    if args.minutes:
        cmd += ["--max-minutes", str(args.minutes)]
    print(" ".join(cmd[2:]), flush=True)
    code = subprocess.run(cmd, cwd=REPO).returncode
    if code != 0:
        return code
    if args.save_progress:
        save_progress(run, config)
    if args.heldout:
        generate(data["heldout"], SETS["heldout"], args.heldout_songs, args.seconds, args.jobs)
        real = work / "data" / "real"
        fetched = subprocess.run([*STEMSTREAM, "fetch-real", "--out", str(real)], cwd=REPO).returncode == 0
        for name, ckpt in (("the bundled model", SHIPPED), ("this run's best", run / "model.ckpt")):
            for label, folder in (("held-out generated songs", data["heldout"]), ("real music", real)):
                if folder == real and not fetched:
                    continue
                print(f"== {name}, {label}", flush=True)
                subprocess.run([*STEMSTREAM, "eval", str(folder), "--config", str(run / "config.yaml"),
                                "--checkpoint", str(ckpt), "--presets", "balanced", "--backend", "onnx"], cwd=REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
