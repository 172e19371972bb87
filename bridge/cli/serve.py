"""``stemstream serve``: separation as a service on Ray Serve (``bridge.serve``)."""
from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import sys
import threading

from streamer.errors import SettingsError

from .common import add_preset_arg, number, whole_number

TOKEN_ENV = "STEMSTREAM_TOKEN"


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="separation as a service: a Ray Serve deployment behind a WebSocket",
        description="Serve one or more models on Ray Serve: windows from every stream are batched on the model "
                    "replicas; clients stream audio over a WebSocket (binary frames) with a token. Ctrl-C or "
                    "SIGTERM stops the service and the Ray processes it started.",
        epilog="examples:\n"
               "  stemstream serve --config C.yaml --checkpoint K.ckpt --port 8765 --token \"$TOKEN\"\n"
               "  stemstream serve --rig configs/rigs/karaoke.yaml --port 8765 --token \"$TOKEN\" --max-batch 16\n"
               "  stemstream serve --model vocals=v.yaml,v.ckpt --model drums=d.yaml,d.ckpt --ray HEAD:6379 "
               "--gpus-per-replica 0.5 --host 0.0.0.0 --allow 10.0.0.0/8 --token \"$TOKEN\"\n"
               "  stemstream serve --rig R.yaml --host 0.0.0.0 --allow 192.168.0.0/16 --tls-cert cert.pem "
               "--tls-key key.pem --token \"$TOKEN\"   # wss://",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (one of)")
    m.add_argument("--config", help="MSST-format YAML config of the model (with --checkpoint)")
    m.add_argument("--checkpoint", help="the model's weights")
    m.add_argument("--name", help="the model's name for clients (default: the config's file name)")
    m.add_argument("--rig", help="a rig YAML: its model is served")
    m.add_argument("--model", action="append", default=[], metavar="NAME=CONFIG,CHECKPOINT",
                   help="a model under a name (repeat for several)")
    m.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="on the replicas (auto: bf16 on CUDA when the config trained with it, else fp32)")
    add_preset_arg(m, "the hop and look-ahead a stream gets unless it asks for others")
    n = p.add_argument_group("network")
    n.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                        "only; any other needs --allow)")
    n.add_argument("--port", type=whole_number(1, 65535), default=8765, help="port (default 8765)")
    n.add_argument("--token", help=f"the token clients must present (at least 8 characters; default: ${TOKEN_ENV})")
    n.add_argument("--allow", action="append", default=[], metavar="CIDR",
                   help="networks that may connect besides this machine (repeatable)")
    n.add_argument("--tls-cert", metavar="FILE", help="serve wss:// and https:// with this PEM certificate "
                                                      "(chain); with --tls-key")
    n.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    n.add_argument("--tls-key-password-env", metavar="VAR",
                   help="an encrypted --tls-key's passphrase is in this environment variable (never on the "
                        "command line, where other users' `ps` would show it)")
    n.add_argument("--max-streams-per-client", type=whole_number(1, 1024), default=8,
                   help="open streams per client address (default 8)")
    r = p.add_argument_group("Ray")
    r.add_argument("--ray", metavar="ADDRESS", help="deploy onto the running cluster at ADDRESS (default: a new "
                                                    "local Ray instance, stopped with the service)")
    r.add_argument("--replicas", type=whole_number(1, 1024), default=1, help="model replicas (default 1)")
    r.add_argument("--gpus-per-replica", type=float, choices=[0.5, 1.0], default=0.0,
                   help="a GPU (1) or half a GPU (0.5) per replica (default: CPUs)")
    r.add_argument("--cpus-per-replica", type=whole_number(1, 256), default=1,
                   help="CPUs (and torch threads) per CPU replica (default 1)")
    r.add_argument("--local-cpus", type=whole_number(1, 4096), help="CPUs of a local Ray instance (default: all)")
    r.add_argument("--max-batch", type=whole_number(1, 256), default=8,
                   help="windows per model call, from all streams (default 8)")
    r.add_argument("--batch-wait-ms", type=number(0, 1000, zero=True, unit=" ms"), default=5.0,
                   help="how long a window waits for others to fill a batch (default 5 ms)")
    r.add_argument("--log-every", type=number(1, 3600), default=60.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _models(args) -> list:
    from bridge.serve.app import ModelSpec

    given = sum(bool(x) for x in (args.config or args.checkpoint, args.rig, args.model))
    if given != 1:
        raise SettingsError("give the model as --config C --checkpoint K, as --rig R, or as --model NAME=C,K "
                            "(one of the three)")
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint):
            raise SettingsError("--config and --checkpoint go together")
        return [ModelSpec(args.name or pathlib.Path(args.config).stem, args.config, args.checkpoint)]
    if args.rig:
        from bridge.plugin.rig import load_rig, remote_url

        if remote_url(args.rig) is not None:
            raise SettingsError(f"--rig {args.rig}: its model is on a service already (model.remote); serve needs "
                                "a rig with model.config and model.checkpoint")
        rig = load_rig(args.rig)
        return [ModelSpec(args.name or pathlib.Path(args.rig).stem, rig.config.path, rig.checkpoint)]
    models = []
    for text in args.model:
        name, _, paths = text.partition("=")
        config, _, checkpoint = paths.partition(",")
        if not name or not config or not checkpoint:
            raise SettingsError(f"--model {text!r}: expected NAME=CONFIG,CHECKPOINT")
        models.append(ModelSpec(name, config, checkpoint))
    return models


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SettingsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run(args) -> int:
    from streamer.inference.loader import load_model

    from bridge.serve.app import ServeSpec, check_spec, start, stop

    token = args.token or os.environ.get(TOKEN_ENV, "")
    password = None
    if args.tls_key_password_env:
        if not args.tls_key:
            raise SettingsError("--tls-key-password-env goes with --tls-key (the encrypted key it opens)")
        password = os.environ.get(args.tls_key_password_env)
        if password is None:
            raise SettingsError(f"--tls-key-password-env {args.tls_key_password_env}: no such environment variable")
    spec = ServeSpec(models=_models(args), token=token, preset=args.preset, replicas=args.replicas,
                     gpus_per_replica=args.gpus_per_replica, cpus_per_replica=args.cpus_per_replica,
                     max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                     precision=args.precision, host=args.host, port=args.port, allow=args.allow,
                     max_streams_per_client=args.max_streams_per_client, log_every_s=args.log_every,
                     tls_cert=args.tls_cert, tls_key=args.tls_key, tls_key_password=password,
                     tls_key_password_env=args.tls_key_password_env)
    check_spec(spec)
    for m in spec.models:  # a wrong config or checkpoint is one error line before Ray starts
        load_model(m.config, m.checkpoint, device="cpu", precision="fp32")
    if not args.ray:
        _check_port(args.host, args.port)

    done = threading.Event()

    def ask_stop(signum, frame):
        done.set()

    old = {s: signal.signal(s, ask_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = start(spec, address=args.ray, num_cpus=args.local_cpus)
        for s in old:  # Ray's core installs its own SIGTERM handler (it aborts) when it starts: ours again
            signal.signal(s, ask_stop)
        names = ", ".join(m.name for m in spec.models)
        web = "https" if spec.tls_cert else "http"
        print(f"serving {names} at {url} (status: {web}://{args.host}:{args.port}/status); Ctrl-C stops",
              flush=True)
        while not done.wait(0.5):
            pass
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        stop(local=not args.ray)
        print("stopped", file=sys.stderr, flush=True)
    return 0
