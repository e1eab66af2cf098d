"""The `slicewise` command: thin wrappers over the library.

    slicewise ingest SRC DATASET [--workers N] [--resize WxH]   transform.ingest.ingest_folder
            [--scheduler processed|threaded|serial] [--checkpoint-interval N]
            [--ignore-errors] [--verify-decode] [--no-progress] [--report FILE]
        progress bar, the run's report and the dataset summary; an interrupted ingest
        resumes from its last checkpoint when run again; --report FILE (.html or .png)
        writes the run's timeline (batches per worker, throughput, idle gaps, failures)
    slicewise show DATASET [--rows 0:16 | --random N [--seed S]] [--tensors a,b] [--out FILE]
                                                                Dataset.show()
        (integrations/pictures.py): a grid of samples (thumbnails, class names, boxes,
        masks, plots, text) as .png or .html, reading only the rows shown
    slicewise summary DATASET                                   Dataset.summary()
    slicewise log DATASET                                       Dataset.log(): the versions
    slicewise verify DATASET                                    sw.verify: every checksum;
        exit 1 when anything is wrong, including no dataset at DATASET, no versions/, or
        a missing or invalid marker (slicewise.json)
    slicewise gc DATASET [--keep-last N] [--grace-seconds S] [--dry-run]
                                                                sw.gc: unreferenced files
    slicewise --version;  python -m slicewise ...  is the same command

Every command parses its arguments here (build_parser), opens the dataset read-only where
it only reads, and calls the library; COMMANDS maps each name to its function. This file
is the whole package (plus __main__.py: `python -m slicewise.cli`).

Exit status: 0 on success, 1 when the work failed (the error is printed, without a Python
traceback, the workers' included, unless --traceback), 2 for bad arguments (argparse).
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
    parser.add_argument("--version", action="version", version=f"slicewise {_version()}")
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
    ingest.add_argument("--verify-decode", action="store_true",
                        help="decode every image fully to find corrupt ones (slower; "
                        "by default files are checked by their structure only)")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("--report", metavar="FILE", default=None,
                        help="write the run's timeline to FILE (.html: a self-contained "
                        "page; .png: a picture)")

    show = commands.add_parser(
        "show", help="a grid of samples as a PNG or HTML file",
        description="Draw rows of DATASET as a grid: images as thumbnails with row numbers "
        "and class names, boxes and masks overlaid, arrays as images or plots, text and JSON "
        "as captions. Reads only the rows shown.")
    show.add_argument("dataset", metavar="DATASET", help="a path or fsspec URL")
    picked = show.add_mutually_exclusive_group()
    picked.add_argument("--rows", default=None, metavar="A:B",
                        help="rows to show: A:B, or N for the first N (default 0:16)")
    picked.add_argument("--random", type=_positive_int, default=None, metavar="N",
                        help="show N rows picked at random")
    show.add_argument("--seed", type=int, default=None, help="seed for --random")
    show.add_argument("--tensors", default=None, metavar="A,B",
                      help="comma-separated tensor names (default: all)")
    show.add_argument("--out", default=None, metavar="FILE",
                      help="output .png or .html (default: <dataset name>-grid.png)")

    for name, text in (("summary", "tensors, lengths, shapes"), ("log", "the versions"),
                       ("verify", "check every file's checksum")):
        command = commands.add_parser(name, help=text)
        command.add_argument("dataset", metavar="DATASET")
    gc = commands.add_parser("gc", help="delete unreferenced files (and old versions)")
    gc.add_argument("dataset", metavar="DATASET")
    gc.add_argument("--keep-last", type=_positive_int, default=None, metavar="N",
                    help="keep only the newest N versions (default: keep all versions)")
    gc.add_argument("--grace-seconds", type=_seconds, default=600.0, metavar="S",
                    help="spare files and versions younger than S seconds: a writer or "
                    "reader may still use them (default 600; 0 when nothing else uses "
                    "the dataset)")
    gc.add_argument("--dry-run", action="store_true",
                    help="say what would be removed, remove nothing")
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
            print(f"slicewise {args.command}: {type(error).__name__}: {_message(error)}"
                  f"\n(run with --traceback for the Python traceback)", file=sys.stderr)
        return 1


def _message(error: BaseException) -> str:
    """The error's message without the worker's traceback (errors from workers carry it
    after this line; --traceback prints it)."""
    return str(error).split("\n\nworker traceback:", 1)[0].rstrip()


def _version() -> str:
    from slicewise import __version__

    return __version__


def _ingest(args: argparse.Namespace) -> int:
    import slicewise as sw
    from slicewise.transform.ingest import ingest_folder

    if args.report is not None:
        _check_picture_path(args.report, "--report")
    report = ingest_folder(
        args.src,
        args.dataset,
        workers=args.workers,
        resize=args.resize,
        scheduler=args.scheduler,
        progressbar=not args.no_progress,
        checkpoint_interval=args.checkpoint_interval,
        ignore_errors=args.ignore_errors,
        verify=args.verify_decode,
    )
    if report.inputs_total and report.resumed_from >= report.inputs_total \
            and not report.inputs_processed:
        print(f"{args.dataset}: already holds the {report.inputs_total} files of "
              f"{args.src}; nothing to do")
    else:
        print(report.summary())
    if args.report is not None and report.timeline is not None:
        print(f"timeline written to {report.save_timeline(args.report)}")
    _print_summary(sw.load(args.dataset, read_only=True))
    return 0


def _show(args: argparse.Namespace) -> int:
    import slicewise as sw

    out = args.out
    if out is None:
        name = os.path.basename(str(args.dataset).rstrip("/")) or "dataset"
        out = f"{name}-grid.png"
    _check_picture_path(out, "--out")
    tensors = [t for t in args.tensors.split(",") if t] if args.tensors else None
    ds = sw.load(args.dataset, read_only=True)
    grid = ds.show(rows=args.rows, tensors=tensors, out=out, random=args.random,
                   seed=args.seed)
    print(f"{out}: rows {_rows_text(grid.rows)} of {len(ds)}")
    return 0


def _rows_text(rows: list[int]) -> str:
    if rows and rows == list(range(rows[0], rows[-1] + 1)):
        return f"{rows[0]}..{rows[-1]}"
    return ", ".join(map(str, rows)) or "(none)"


def _check_picture_path(path: str, option: str) -> None:
    if not str(path).lower().endswith((".png", ".html", ".htm")):
        raise ValueError(f"{option} {path!r}: write a .png or .html file")


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
    if result.ok:
        return 0
    # the report went to stdout; stderr says in one line that it failed, and why first
    first = result.problems[0]
    more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
    print(f"slicewise verify: {args.dataset} FAILED: {first['file']}: {first['error']}{more}",
          file=sys.stderr)
    return 1


def _gc(args: argparse.Namespace) -> int:
    import slicewise as sw

    result = sw.gc(args.dataset, keep_last=args.keep_last, grace_seconds=args.grace_seconds,
                   dry_run=args.dry_run)
    print(result)
    if args.grace_seconds > 0:
        # what the grace period spared: the files a gc without it would remove besides
        every = sw.gc(args.dataset, grace_seconds=0, dry_run=True)
        young = set(every.removed_files) - set(result.removed_files)
        print(f"kept {len(young)} leftover file(s) younger than {args.grace_seconds:g} s "
              "(a writer may still need them; --grace-seconds 0 removes them when nothing "
              "else uses the dataset)")
    return 0


def _print_summary(ds: Any) -> None:
    text = ds.summary()
    if text is not None:  # Deep Lake 3's summary() prints and returns None
        print(text)
    for name, tensor in ds.tensors.items():
        names = getattr(getattr(tensor, "meta", None), "class_names", None)
        if tensor.htype == "class_label" and names:
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)"
                                             if len(names) > 20 else "")
            print(f"{name}: class names {shown}")


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


COMMANDS = {"ingest": _ingest, "show": _show, "summary": _summary, "log": _log, "verify": _verify, "gc": _gc}
