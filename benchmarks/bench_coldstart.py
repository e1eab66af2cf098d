"""Cold-start benchmarks (issue 10): seed 000 from a fresh process, beside its peers.

    run(quick) -> rows: {"benchmark", "tool", "value", "unit", "ratio"?, "target"?, "met"?,
                         "note"?}

Every run is a fresh `python` process (the main job is a command: it always starts cold),
the tools alternated round by round, best of the rounds reported (the machine is shared):

  slicewise seed   the seed's code (`import slicewise as deeplake`; @compute, empty,
                   create_tensor, eval(num_workers=2, scheduler="processed"))
  slicewise ingest `slicewise ingest SRC DST --workers 2 --no-progress` (the CLI)
  HF datasets      Dataset.from_dict(paths).map(read bytes, batched=True, num_proc=2)
                   into an Image() feature + ClassLabel, then save_to_disk
  litdata          litdata.optimize(fn -> {"image": bytes, "label": int}, files,
                   num_workers=2, chunk_bytes="64MB")

Each process reports the seconds of its imports and of everything after them; the parent
times the whole process (interpreter start included). After the rounds, every file's
stored bytes are read back from each tool's output and compared with the file.

The mixed folder: the same files with one in ten replaced by a grayscale JPEG, a CMYK
JPEG, a PNG or a truncated JPEG (a quarter each), ingested with --ignore-errors, its
throughput against the all-JPEG folder's (same count, alternated).

All processes run with bytecode caching on (PYTHONPYCACHEPREFIX under bench-data/, one
untimed warm-up round first): an installed package has its .pyc files, and this
environment otherwise sets PYTHONDONTWRITEBYTECODE, which would make slicewise (an
editable install) compile its sources in every process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_transform import CLASSES, DATA_ROOT, make_jpegs  # noqa: E402

WORKERS = 2
COLD_ROOT = (DATA_ROOT.parent / "coldstart").resolve()
PYTHON = sys.executable

SEED = """
import time
T0 = time.perf_counter()
import json, os, sys
import numpy as np
import slicewise as deeplake
T1 = time.perf_counter()
files, root, classes = json.load(open(sys.argv[1]))

@deeplake.compute
def file_to_deeplake(file_name, sample_out, class_names):
    label_text = os.path.basename(os.path.dirname(file_name))
    label_num = class_names.index(label_text)
    sample_out.append({"labels": np.uint32(label_num), "images": deeplake.read(file_name)})
    return sample_out

ds = deeplake.empty(root, overwrite=True)
with ds:
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    ds.create_tensor("labels", htype="class_label", class_names=classes)
    file_to_deeplake(class_names=classes).eval(files, ds, num_workers=2,
                                               scheduler="processed", progressbar=False)
T2 = time.perf_counter()
print(json.dumps({"imports": T1 - T0, "after": T2 - T1}))
"""

# the CLI, timed from inside: `slicewise ingest` is `slicewise.cli:main`
INGEST = """
import time
T0 = time.perf_counter()
import json, sys
from slicewise.cli import main
T1 = time.perf_counter()
code = main(sys.argv[1:])
T2 = time.perf_counter()
print(json.dumps({"imports": T1 - T0, "after": T2 - T1, "code": code}))
"""

HF = """
import time
T0 = time.perf_counter()
import json, os, sys
from datasets import ClassLabel, Dataset, Features, Image, disable_progress_bars
T1 = time.perf_counter()
disable_progress_bars()
files, root, classes = json.load(open(sys.argv[1]))

def read_files(batch):
    images, labels = [], []
    for path in batch["path"]:
        with open(path, "rb") as handle:
            images.append({"bytes": handle.read(), "path": None})
        labels.append(classes.index(os.path.basename(os.path.dirname(path))))
    return {"image": images, "label": labels}

if __name__ == "__main__":
    features = Features({"image": Image(), "label": ClassLabel(names=classes)})
    ds = Dataset.from_dict({"path": files})
    ds = ds.map(read_files, batched=True, num_proc=2, remove_columns=["path"],
                features=features)
    ds.save_to_disk(root)
    T2 = time.perf_counter()
    print(json.dumps({"imports": T1 - T0, "after": T2 - T1}))
"""

LITDATA = """
import time
T0 = time.perf_counter()
import json, os, sys
import litdata
T1 = time.perf_counter()
files, root, classes = json.load(open(sys.argv[1]))

def read_file(path):
    with open(path, "rb") as handle:
        data = handle.read()
    return {"image": data, "label": classes.index(os.path.basename(os.path.dirname(path)))}

if __name__ == "__main__":
    litdata.optimize(fn=read_file, inputs=files, output_dir=root, num_workers=2,
                     chunk_bytes="64MB", verbose=False)
    T2 = time.perf_counter()
    print(json.dumps({"imports": T1 - T0, "after": T2 - T1}))
"""


def child_env(scratch: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str((COLD_ROOT / "pycache").resolve())
    env["HF_HOME"] = os.path.join(scratch, "hf-home")
    env["HF_DATASETS_CACHE"] = os.path.join(scratch, "hf-cache")
    env["TQDM_DISABLE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def class_folder(files: list[str], name: str) -> tuple[Path, list[str]]:
    """`files` hard-linked into COLD_ROOT/name/<class>/ (what `ingest` lists), and the
    same files in the order `ingest` lists them (class, then path)."""
    root = COLD_ROOT / name
    wanted = {}
    for path in files:
        target = root / Path(path).parent.name / Path(path).name
        wanted[str(target)] = path
    if root.exists():
        present = {str(p) for p in root.glob("*/*") if p.is_file()}
        if present != set(wanted):
            shutil.rmtree(root)
    for target, source in wanted.items():
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    return root, sorted(wanted, key=lambda p: (Path(p).parent.name, p))


def mixed_folder(listed: list[str], name: str) -> tuple[Path, list[str], set[str]]:
    """The all-JPEG folder with one file in ten replaced, in turn, by a grayscale JPEG, a
    CMYK JPEG, a PNG and a truncated JPEG (its first half). Returns the folder, its files
    in ingest order and the truncated ones."""
    from PIL import Image

    root = COLD_ROOT / name
    stamp = root / ".made"
    kinds = ("gray", "cmyk", "png", "truncated")
    plan: dict[str, tuple[str, str]] = {}  # target -> (source, kind)
    for index, path in enumerate(listed):
        kind = kinds[(index // 10) % 4] if index % 10 == 5 else "jpeg"
        stem = Path(path).stem
        suffix = ".png" if kind == "png" else ".jpg"
        target = root / Path(path).parent.name / f"{stem}{suffix}"
        plan[str(target)] = (path, kind)
    if not (stamp.exists() and stamp.read_text() == str(len(plan))):
        shutil.rmtree(root, ignore_errors=True)
        for target, (source, kind) in plan.items():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if kind == "jpeg":
                os.link(source, target)
            elif kind == "truncated":
                data = Path(source).read_bytes()
                Path(target).write_bytes(data[: len(data) // 2])
            else:
                with Image.open(source) as opened:
                    image = opened.convert("RGB")
                if kind == "gray":
                    image.convert("L").save(target, quality=92)
                elif kind == "cmyk":
                    image.convert("CMYK").save(target, quality=92)
                else:
                    image.save(target)
        stamp.write_text(str(len(plan)))
    truncated = {t for t, (_, kind) in plan.items() if kind == "truncated"}
    ordered = sorted(plan, key=lambda p: (Path(p).parent.name, p))
    return root, ordered, truncated


def run_child(script: str, args: list[str], env: dict[str, str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run([PYTHON, script, *args], capture_output=True, text=True, env=env,
                          timeout=600)
    whole = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{script} {args[:1]} failed ({done.returncode}):\n"
                           f"{done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["whole"] = whole
    return figures


# -- reading each tool's output back ---------------------------------------------------
def check_slicewise(root: str, files: list[str], skipped: set[str] = frozenset()) -> int:
    import slicewise as sw

    kept = [path for path in files if path not in skipped]
    ds = sw.load(root, read_only=True)
    if len(ds) != len(kept):
        raise AssertionError(f"{root}: {len(ds)} rows for {len(kept)} files")
    names = list(ds.labels.info["class_names"]) if isinstance(ds.labels.info, dict) \
        else list(ds.labels.info.class_names)
    labels = ds.labels.numpy().reshape(-1)
    jpegs = 0
    for row, path in enumerate(kept):
        if names[int(labels[row])] != Path(path).parent.name:
            raise AssertionError(f"{root}: row {row} has the wrong label")
        if path.endswith(".jpg") and not _is_png(path):
            if ds.images[row].tobytes() != Path(path).read_bytes():
                raise AssertionError(f"{root}: row {row} is not the bytes of {path}")
            jpegs += 1
    return jpegs


def _is_png(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


def check_hf(root: str, files: list[str]) -> int:
    from datasets import Image, load_from_disk

    ds = load_from_disk(root).cast_column("image", Image(decode=False))
    if len(ds) != len(files):
        raise AssertionError(f"HF: {len(ds)} rows for {len(files)} files")
    names = ds.features["label"].names
    for row, (sample, path) in enumerate(zip(ds, files, strict=True)):
        if sample["image"]["bytes"] != Path(path).read_bytes():
            raise AssertionError(f"HF: row {row} is not the bytes of {path}")
        if names[sample["label"]] != Path(path).parent.name:
            raise AssertionError(f"HF: row {row} has the wrong label")
    return len(files)


def check_litdata(root: str, files: list[str]) -> int:
    from litdata import StreamingDataset

    ds = StreamingDataset(root)
    if len(ds) != len(files):
        raise AssertionError(f"litdata: {len(ds)} items for {len(files)} files")
    from collections import Counter

    # litdata reorders items by chunk: match (bytes, label) pairs as a multiset (two
    # random crops may be the same file)
    wanted = Counter((Path(path).read_bytes(), list(CLASSES).index(Path(path).parent.name))
                     for path in files)
    for index in range(len(ds)):
        item = ds[index]
        key = (bytes(item["image"]), int(item["label"]))
        if wanted[key] <= 0:
            raise AssertionError(f"litdata: item {index} is not one of the files, or its "
                                 "label is wrong")
        wanted[key] -= 1
    return len(files)


def _row(benchmark, tool, value, unit, **extra):
    return {"benchmark": benchmark, "tool": tool, "value": round(value, 4), "unit": unit,
            **extra}


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f} s over {len(values)} rounds"


def run(quick: bool) -> list[dict]:
    count = 600 if quick else 3_000
    rounds = 2 if quick else 5
    files = make_jpegs(count)
    COLD_ROOT.mkdir(parents=True, exist_ok=True)
    jpeg_root, listed = class_folder(files, f"jpeg{count}")
    mixed_root, mixed_listed, truncated = mixed_folder(listed, f"mixed{count}")
    mean_kb = sum(os.path.getsize(path) for path in listed) / len(listed) / 1024
    scratch = tempfile.mkdtemp(prefix="sw-bench-cold-", dir=str(COLD_ROOT.resolve()))
    env = child_env(scratch)
    try:
        scripts = {}
        for name, text in (("seed", SEED), ("ingest", INGEST), ("hf", HF),
                           ("litdata", LITDATA)):
            scripts[name] = os.path.join(scratch, f"cold_{name}.py")  # not litdata.py: it would shadow litdata
            Path(scripts[name]).write_text(text)
        arguments = os.path.join(scratch, "files.json")

        def out(tool: str, round_: int) -> str:
            return os.path.join(scratch, f"{tool}-{round_}")

        def launch(tool: str, round_: int) -> dict:
            target = out(tool, round_)
            Path(arguments).write_text(json.dumps([listed, target, list(CLASSES)]))
            if tool == "ingest":
                return run_child(scripts["ingest"], ["ingest", str(jpeg_root), target,
                                 "--workers", str(WORKERS), "--no-progress"], env)
            if tool == "mixed":
                return run_child(scripts["ingest"], ["ingest", str(mixed_root), target,
                                 "--workers", str(WORKERS), "--no-progress",
                                 "--ignore-errors"], env)
            return run_child(scripts[tool], [arguments], env)

        tools = ["seed", "ingest", "mixed", "hf", "litdata"]
        results: dict[str, list[dict]] = {tool: [] for tool in tools}
        for tool in tools:  # untimed: the page cache and every tool's .pyc files
            launch(tool, -1)
        for round_ in range(rounds):
            order = tools[round_ % len(tools):] + tools[: round_ % len(tools)]
            for tool in order:
                results[tool].append(launch(tool, round_))
                if round_ < rounds - 1:
                    shutil.rmtree(out(tool, round_), ignore_errors=True)
        last = rounds - 1
        checked = {
            "seed": check_slicewise(out("seed", last), listed),
            "ingest": check_slicewise(out("ingest", last), listed),
            "mixed": check_slicewise(out("mixed", last), mixed_listed, truncated),
            "hf": check_hf(out("hf", last), listed),
            "litdata": check_litdata(out("litdata", last), listed),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def best(tool: str, key: str) -> float:
        return min(result[key] for result in results[tool])

    rows: list[dict] = []
    bench = (f"seed 000 cold: {count} JPEGs ({mean_kb:.0f} KB) -> stored, {WORKERS} workers, "
             "whole process")
    hf_whole, ld_whole = best("hf", "whole"), best("litdata", "whole")
    labels = {"seed": "slicewise: the seed's code (eval, processed)",
              "ingest": "slicewise ingest (CLI)",
              "hf": "HF datasets map(num_proc=2) + save_to_disk",
              "litdata": "litdata.optimize(num_workers=2)"}
    for tool in ("seed", "ingest", "hf", "litdata"):
        whole = best(tool, "whole")
        extra: dict = {"ratio": round(hf_whole / whole, 3),
                       "note": f"{_spread([r['whole'] for r in results[tool]])}; "
                               f"{checked[tool]} stored files checked byte for byte"}
        if tool in ("seed", "ingest"):
            ratio_ld = ld_whole / whole
            extra.update(target=">= 3x HF datasets, >= 5x litdata",
                         met=bool(hf_whole / whole >= 3 and ratio_ld >= 5))
            extra["note"] += f"; {ratio_ld:.1f}x litdata"
        rows.append(_row(bench, labels[tool], whole, "s", **extra))
    bench = (f"seed 000 cold: {count} JPEGs -> stored, {WORKERS} workers, after imports "
             "(ratio: HF's time / this)")
    hf_after = best("hf", "after")
    for tool in ("seed", "ingest", "hf", "litdata"):
        after = best(tool, "after")
        extra = {"ratio": round(hf_after / after, 3),
                 "note": f"imports {best(tool, 'imports'):.2f} s (best); "
                         f"{_spread([r['after'] for r in results[tool]])}"}
        if tool in ("seed", "ingest"):
            extra.update(target=">= 2x HF datasets", met=bool(hf_after / after >= 2))
        rows.append(_row(bench, labels[tool], after, "s", **extra))
    jpeg_rate = count / best("ingest", "whole")
    mixed_rate = len(mixed_listed) / best("mixed", "whole")
    bench = (f"slicewise ingest --ignore-errors, {count} files, cold whole process: "
             "10% grayscale/CMYK/PNG/truncated mixed in")
    rows.append(_row(bench, "mixed folder", mixed_rate, "files/s",
                     ratio=round(mixed_rate / jpeg_rate, 3),
                     target=">= 0.8x the all-JPEG folder", met=bool(mixed_rate >= 0.8 * jpeg_rate),
                     note=f"{len(truncated)} truncated files skipped and named; "
                          f"{checked['mixed']} JPEG rows checked byte for byte; after "
                          f"imports {best('mixed', 'after'):.2f} s against "
                          f"{best('ingest', 'after'):.2f} s"))
    rows.append(_row(bench, "all-JPEG folder", jpeg_rate, "files/s", ratio=1.0))
    return rows


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result))
