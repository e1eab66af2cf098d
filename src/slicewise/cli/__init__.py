"""The `slicewise` command: thin wrappers over the library.

    slicewise ingest SRC DATASET [--workers N] [--resize WxH]   transform.ingest.ingest_folder
        progress bar, the run's report and the dataset summary; an interrupted ingest
        resumes from its last checkpoint when run again
    slicewise summary DATASET                                   Dataset.summary()
    slicewise log DATASET                                       Dataset.log(): the versions
    slicewise verify DATASET                                    sw.verify: every checksum
    slicewise gc DATASET [--keep-last N]                        sw.gc: unreferenced files

Exit status: 0 on success, 1 when the work failed (the error is printed, without a Python
traceback unless --traceback), 2 for bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slicewise",
        description="Process large datasets in parallel into chunked, versioned datasets.",
    )
    parser.add_argument("--traceback", action="store_true",
                        help="print the full Python traceback when a command fails")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest",
        help="a class-per-subfolder image tree into images + class labels",
        description="Ingest SRC_FOLDER/<class>/<image files> into DATASET (tensors 'images' "
        "and 'labels'), in parallel. Running it again after an interruption resumes.",
    )
    ingest.add_argument("src", metavar="SRC_FOLDER")
    ingest.add_argument("dataset", metavar="DATASET", help="a path or fsspec URL")
    ingest.add_argument("--workers", type=_positive_int, default=None,
                        help="worker processes (default: the usable CPUs)")
    ingest.add_argument("--resize", metavar="WxH", default=None,
                        help="decode and resize every image to WxH (default: store as is)")
    ingest.add_argument("--scheduler", choices=["processed", "threaded", "serial"],
                        default="processed")
    ingest.add_argument("--checkpoint-interval", type=_positive_int, default=None,
                        metavar="N", help="commit progress every N files")
    ingest.add_argument("--ignore-errors", action="store_true",
                        help="skip unreadable files (they are listed) instead of stopping")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, text in (("summary", "tensors, lengths, shapes"), ("log", "the versions"),
                       ("verify", "check every file's checksum")):
        command = commands.add_parser(name, help=text)
        command.add_argument("dataset", metavar="DATASET")
    gc = commands.add_parser("gc", help="delete unreferenced files (and old versions)")
    gc.add_argument("dataset", metavar="DATASET")
    gc.add_argument("--keep-last", type=_positive_int, default=None, metavar="N",
                    help="keep only the newest N versions (default: keep all versions)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("slicewise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `slicewise log DS | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:  # noqa: BLE001 - a command line reports, it does not crash
        if args.traceback:
            traceback.print_exc()
        else:
            print(f"slicewise {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def _ingest(args: argparse.Namespace) -> int:
    import slicewise as sw
    from slicewise.transform.ingest import ingest_folder

    report = ingest_folder(
        args.src,
        args.dataset,
        workers=args.workers,
        resize=args.resize,
        scheduler=args.scheduler,
        progressbar=not args.no_progress,
        checkpoint_interval=args.checkpoint_interval,
        ignore_errors=args.ignore_errors,
    )
    if report.inputs_total and report.resumed_from >= report.inputs_total \
            and not report.inputs_processed:
        print(f"{args.dataset}: already holds the {report.inputs_total} files of "
              f"{args.src}; nothing to do")
    else:
        print(report.summary())
    _print_summary(sw.load(args.dataset, read_only=True))
    return 0


def _summary(args: argparse.Namespace) -> int:
    import slicewise as sw

    _print_summary(sw.load(args.dataset, read_only=True))
    return 0


def _log(args: argparse.Namespace) -> int:
    import slicewise as sw

    for entry in sw.load(args.dataset, read_only=True).log():
        print(_format_log_entry(entry))
    return 0


def _verify(args: argparse.Namespace) -> int:
    import slicewise as sw

    result = sw.verify(args.dataset)
    print(result)
    problems = getattr(result, "problems", None)
    ok = getattr(result, "ok", None)
    if ok is None:
        ok = not problems
    return 0 if ok else 1


def _gc(args: argparse.Namespace) -> int:
    import slicewise as sw

    result = sw.gc(args.dataset, keep_last=args.keep_last)
    print(result)
    return 0


def _print_summary(ds: Any) -> None:
    text = ds.summary()
    if text is not None:  # Deep Lake 3's summary() prints and returns None
        print(text)


def _format_log_entry(entry: Any) -> str:
    if isinstance(entry, dict):
        fields = entry
    else:
        fields = {key: getattr(entry, key, None) for key in ("id", "time", "message")}
    import datetime

    when = fields.get("time")
    if isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    return f"{fields.get('id')}  {when}  {fields.get('message') or ''}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


COMMANDS = {"ingest": _ingest, "summary": _summary, "log": _log, "verify": _verify, "gc": _gc}
