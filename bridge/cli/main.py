"""The ``stemstream`` command line: the parser and the one error funnel.

Every error a user can cause reaches :func:`main` as a ``StemstreamError`` (or an ``OSError``) and
leaves as one ``error:`` line with exit status 1; ``--verbose`` prints the traceback with its causes.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

from . import bench, demo, lab, live, midi, separate, serve

COMMAND_GROUPS = (separate, live, midi, serve, demo, lab, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemstream",
        description="Real-time and offline music stem separation with BS-RoFormer / Mel-Band RoFormer models "
                    "(MSST-format .ckpt + YAML).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def error_message(exc: BaseException) -> str:
    """The one line a user sees for an error they caused."""
    from streamer.errors import StemstreamError

    if isinstance(exc, StemstreamError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    from streamer.errors import StemstreamError

    try:
        return args.func(args)
    except (StemstreamError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
