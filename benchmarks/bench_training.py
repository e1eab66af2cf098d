"""Training input benchmarks (issue 12): JPEGs -> decoded, randomly cropped uint8 tensors,
the way a training loop reads them, slicewise beside its peers.

    run(quick) -> rows: {"benchmark", "tool", "value", "unit", "ratio"?, "target"?, "met"?,
                         "note"?}

Workload: N JPEGs (400x400, ~40 KB, 3 classes; the transform benchmark's files) ->
decode (Pillow) -> random 224x224 crop -> uint8 tensor + label, batches of 64, two epochs,
shuffled, 2 DataLoader workers (torch's defaults otherwise: fork, not persistent):

  slicewise      ds.pytorch(transform=crop, shuffle=True, num_workers=2, batch_size=64)
                 over the dataset `slicewise ingest` made of the files
  litdata        StreamingDataset(shuffle=True) over `litdata.optimize`'s output (the
                 file's bytes + label; decoded with Pillow in a subclass's __getitem__:
                 litdata's own JPEG decoding needs torchvision, which has no build for
                 this CPU torch) + StreamingDataLoader
  HF datasets    load_from_disk(...).with_format("torch") (an Image() feature: decoded by
                 datasets) + DataLoader(shuffle=True), cropped in collate_fn
  plain          a map-style Dataset over the file paths, Pillow + crop in __getitem__,
                 DataLoader(shuffle=True)

slicewise decodes the JPEGs with libjpeg-turbo through simplejpeg (its `[torch]` extra;
Pillow's pixels, see integrations/torch.py), the others with Pillow as shown.

Each loader runs in its own fresh process (its workers then hold only what its own
library imports), the tools alternated round by round, best of the rounds. A thread in
that process samples the RSS (and, less often, the USS: pages no other process shares) of
each loader worker; the row reports the largest worker's peak. Mixing: for every full
batch, the largest class's share of it (the files are sorted by class; a uniform shuffle
gives the `uniform_mix` reference, ~0.39 for 3 classes and batches of 64).

Flat memory (not with --quick): slicewise alone, one epoch, over 50,000 samples (the
5,000 files x10, hard-linked and ingested once), its largest worker's peak RSS beside the
5,000-sample row's.

Interop rows (`run_interop`; alone: `python benchmarks/bench_training.py --interop`, or
SW_BENCH_TRAINING=interop for `dev.py bench --only training`), the same N files, in one
fresh process, the two sides alternated, best of the rounds after an untimed warm-up
(page cache; slicewise's shared worker pool started):

  to_parquet     ds.to_parquet(folder) of the ingested dataset (images + labels; 2 engine
                 workers) vs pyarrow: pa.table({image: binary, label: dictionary}) built
                 from the N files' bytes already in memory -> pq.write_table (one
                 process); both pyarrow's defaults (snappy); read back and compared
  from_hf        sw.from_hf(load_from_disk(hf copy), num_workers=2) vs the same
                 datasets.Dataset's save_to_disk(num_proc=2); every image read back from
                 slicewise's copy and compared byte for byte with the file, labels too
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_coldstart import child_env, class_folder  # noqa: E402
from bench_transform import CLASSES, DATA_ROOT, make_jpegs  # noqa: E402

WORKERS = 2
BATCH = 64
EPOCHS = 2
TRAIN_ROOT = (DATA_ROOT.parent / "training").resolve()

LOADER = r'''
import json, os, random, sys, threading, time
import numpy as np
import psutil
import torch
tool, data, files_json, epochs, batch, workers = sys.argv[1:7]
epochs, batch, workers = int(epochs), int(batch), int(workers)
SIDE = 224


def crop(array):
    h, w = array.shape[:2]
    top, left = random.randint(0, h - SIDE), random.randint(0, w - SIDE)
    return torch.from_numpy(np.ascontiguousarray(array[top:top + SIDE, left:left + SIDE]))


def pil_array(data):
    from PIL import Image
    import io
    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(opened.convert("RGB"))


if tool == "slicewise":
    import slicewise as sw

    def transform(sample):
        return {"images": crop(sample["images"]), "labels": sample["labels"]}

    ds = sw.load(data, read_only=True)
    loader = ds.pytorch(transform=transform, tensors=["images", "labels"],
                        num_workers=workers, batch_size=batch, shuffle=True,
                        return_index=False)
    key, label = "images", "labels"
elif tool == "litdata":
    from litdata import StreamingDataLoader, StreamingDataset

    class Cropped(StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return {"image": crop(pil_array(item["image"])), "label": item["label"]}

    dataset = Cropped(data, shuffle=True)
    loader = StreamingDataLoader(dataset, batch_size=batch, num_workers=workers)
    key, label = "image", "label"
elif tool == "hf":
    from datasets import load_from_disk
    from torch.utils.data import DataLoader

    def collate(samples):
        # datasets' torch format hands images out as CHW
        return {"image": torch.stack([crop(s["image"].permute(1, 2, 0).numpy())
                                      for s in samples]),
                "label": torch.tensor([int(s["label"]) for s in samples])}

    dataset = load_from_disk(data).with_format("torch")
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=collate)
    key, label = "image", "label"
else:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    files = json.load(open(files_json))
    classes = sorted({os.path.basename(os.path.dirname(p)) for p in files})

    class Files(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, index):
            path = files[index]
            with Image.open(path) as opened:
                array = np.asarray(opened.convert("RGB"))
            return {"image": crop(array),
                    "label": classes.index(os.path.basename(os.path.dirname(path)))}

    loader = DataLoader(Files(), batch_size=batch, shuffle=True, num_workers=workers)
    key, label = "image", "label"

me = psutil.Process()
rss, uss = {}, {}
stop = threading.Event()


def sample():
    ticks = 0
    while not stop.is_set():
        for child in me.children(recursive=True):
            try:
                rss[child.pid] = max(rss.get(child.pid, 0), child.memory_info().rss)
                if ticks % 10 == 0:
                    uss[child.pid] = max(uss.get(child.pid, 0), child.memory_full_info().uss)
            except psutil.Error:
                pass
        ticks += 1
        stop.wait(0.01)


threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
images = 0
shares = []  # per full batch: the largest class's share (how well the shuffle mixes)
for epoch in range(epochs):
    for batch_ in loader:
        tensor = batch_[key]
        assert tensor.dtype == torch.uint8 and tuple(tensor.shape[1:]) == (SIDE, SIDE, 3)
        images += len(tensor)
        if len(tensor) == batch:
            shares.append(int(torch.bincount(batch_[label].reshape(-1)).max()) / batch)
seconds = time.perf_counter() - started
stop.set()
print(json.dumps({"seconds": seconds, "images": images, "mix": sum(shares) / len(shares),
                  "rss_mb": max(rss.values(), default=0) / 2**20,
                  "uss_mb": max(uss.values(), default=0) / 2**20,
                  "parent_rss_mb": me.memory_info().rss / 2**20}))
'''

HF_BUILD = r'''
import json, os, sys
from datasets import ClassLabel, Dataset, Features, Image
files, root, classes = json.load(open(sys.argv[1]))
def read(batch):
    return {"image": [{"bytes": open(p, "rb").read(), "path": None} for p in batch["path"]],
            "label": [classes.index(os.path.basename(os.path.dirname(p))) for p in batch["path"]]}
if __name__ == "__main__":
    ds = Dataset.from_dict({"path": files}).map(
        read, batched=True, remove_columns=["path"],
        features=Features({"image": Image(), "label": ClassLabel(names=classes)}))
    ds.save_to_disk(root)
'''

LITDATA_BUILD = r'''
import json, os, sys
import litdata
files, root, classes = json.load(open(sys.argv[1]))
def read(path):
    with open(path, "rb") as handle:
        data = handle.read()
    return {"image": data, "label": classes.index(os.path.basename(os.path.dirname(path)))}
if __name__ == "__main__":
    litdata.optimize(fn=read, inputs=files, output_dir=root, num_workers=2,
                     chunk_bytes="64MB", verbose=False)
'''


INTEROP = r'''
import json, os, shutil, sys, time
import pyarrow as pa
import pyarrow.parquet as pq
import slicewise as sw
from datasets import load_from_disk

def main():
    sw_path, hf_path, files_json, out_root, rounds, workers = sys.argv[1:7]
    rounds, workers = int(rounds), int(workers)
    files = json.load(open(files_json))
    classes = sorted({os.path.basename(os.path.dirname(p)) for p in files})
    payloads = [open(p, "rb").read() for p in files]
    labels = [classes.index(os.path.basename(os.path.dirname(p))) for p in files]
    ds = sw.load(sw_path, read_only=True)
    hf = load_from_disk(hf_path)
    n = len(files)
    assert len(ds) == n == len(hf), (len(ds), n, len(hf))


    def fresh(name):
        path = os.path.join(out_root, name)
        shutil.rmtree(path, ignore_errors=True)
        return path


    def sw_parquet():
        return ds.to_parquet(fresh("sw_parquet"), tensors=["images", "labels"],
                             num_workers=workers)


    def pa_parquet():
        table = pa.table({"images": pa.array(payloads, pa.binary()),
                          "labels": pa.DictionaryArray.from_arrays(
                              pa.array(labels, pa.int32()), pa.array(classes))})
        os.makedirs(fresh("pa_parquet"))
        pq.write_table(table, os.path.join(out_root, "pa_parquet", "part-00000.parquet"))


    def sw_from_hf():
        return sw.from_hf(hf, fresh("sw_from_hf"), num_workers=workers)


    def hf_save():
        hf.save_to_disk(fresh("hf_save"), num_proc=workers)


    pairs = {"to_parquet": [("slicewise", sw_parquet), ("pyarrow", pa_parquet)],
             "from_hf": [("slicewise", sw_from_hf), ("datasets", hf_save)]}
    times = {(k, t): [] for k, sides in pairs.items() for t, _ in sides}
    for round_ in range(rounds + 1):  # round 0: untimed warm-up
        for key, sides in pairs.items():
            for tool, fn in (sides if round_ % 2 == 0 else sides[::-1]):
                started = time.perf_counter()
                fn()
                if round_:
                    times[(key, tool)].append(time.perf_counter() - started)

    # read back: Parquet from both writers; slicewise's from_hf copy byte for byte
    names = [os.path.basename(os.path.dirname(p)) for p in files]
    checks = {}
    for name in ("sw_parquet", "pa_parquet"):
        table = pq.read_table(os.path.join(out_root, name))
        checks[name] = (table.column("images").to_pylist() == payloads
                        and [str(x) for x in table.column("labels").to_pylist()] == names)
    copy = sw.load(os.path.join(out_root, "sw_from_hf"), read_only=True)
    plain = hf.cast_column("image", __import__("datasets").Image(decode=False))
    hf_names = hf.features["label"].names
    checks["sw_from_hf"] = (
        len(copy) == n
        and [row["bytes"] for row in plain["image"]] == payloads
        and all(copy["image"][i].tobytes() == payloads[i] for i in range(n))
        and [int(x) for x in copy["label"].numpy().reshape(-1)] == list(hf["label"])
        and list(copy["label"].meta.class_names) == list(hf_names))
    print(json.dumps({"times": {f"{k}|{t}": v for (k, t), v in times.items()},
                      "checks": checks,
                      "bytes": sum(len(p) for p in payloads)}))


if __name__ == "__main__":  # datasets' num_proc may start its processes by spawn
    main()
'''


def build(count: int, env: dict, scratch: str) -> tuple[dict[str, str], str]:
    """Each tool's copy of the N files (made once, kept under bench-data/training/), and
    the file list (JSON) the plain loader reads."""
    files = make_jpegs(count)
    folder, listed = class_folder(files, f"jpeg{count}")
    TRAIN_ROOT.mkdir(parents=True, exist_ok=True)
    files_json = str(TRAIN_ROOT / f"files{count}.json")
    Path(files_json).write_text(json.dumps(listed))
    paths = {"slicewise": str(TRAIN_ROOT / f"sw{count}"), "hf": str(TRAIN_ROOT / f"hf{count}"),
             "litdata": str(TRAIN_ROOT / f"litdata{count}"), "plain": str(folder)}
    arguments = os.path.join(scratch, "build.json")
    for tool, script in (("slicewise", None), ("hf", HF_BUILD), ("litdata", LITDATA_BUILD)):
        stamp = Path(paths[tool] + ".made")
        if stamp.exists():
            continue
        shutil.rmtree(paths[tool], ignore_errors=True)
        if tool == "slicewise":
            command = [sys.executable, "-m", "slicewise.cli", "ingest", str(folder),
                       paths[tool], "--workers", str(WORKERS), "--no-progress"]
        else:
            Path(arguments).write_text(json.dumps([listed, paths[tool], list(CLASSES)]))
            path = os.path.join(scratch, f"build_{tool}.py")
            Path(path).write_text(script)
            command = [sys.executable, path, arguments]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"building the {tool} copy failed:\n{done.stderr[-3000:]}")
        stamp.write_text("ok")
    return paths, files_json


def build_replicated(listed: list[str], copies: int, env: dict) -> str:
    """slicewise's copy of `copies` x the files (hard links under TRAIN_ROOT, each file's
    copies side by side, so the classes stay sorted as `ingest` lists them), made once:
    the flat-memory row's 50,000 samples without making 45,000 more JPEGs."""
    count = copies * len(listed)
    path = str(TRAIN_ROOT / f"sw{count}")
    stamp = Path(path + ".made")
    if stamp.exists():
        return path
    folder = TRAIN_ROOT / f"jpeg{count}"
    for source in listed:
        for k in range(copies):
            target = folder / Path(source).parent.name / f"{Path(source).stem}_{k}.jpg"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
    shutil.rmtree(path, ignore_errors=True)
    done = subprocess.run([sys.executable, "-m", "slicewise.cli", "ingest", str(folder), path,
                           "--workers", str(WORKERS), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"building the {count}-sample slicewise copy failed:\n"
                           f"{done.stderr[-3000:]}")
    stamp.write_text("ok")
    return path


def uniform_mix(files_json: str, rounds: int = 200) -> float:
    """The mean largest-class share of a full batch under a uniform shuffle of the files'
    labels (what a perfect shuffle would give: the reference for the `mix` measure)."""
    import numpy as np

    files = json.loads(Path(files_json).read_text())
    names = sorted({Path(p).parent.name for p in files})
    labels = np.array([names.index(Path(p).parent.name) for p in files])
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(rounds):
        order = labels[rng.permutation(len(labels))]
        for start in range(0, len(order) - BATCH + 1, BATCH):
            shares.append(np.bincount(order[start : start + BATCH]).max() / BATCH)
    return float(np.mean(shares))


def run_loader(script: str, tool: str, data: str, files_json: str, env: dict,
               epochs: int = EPOCHS) -> dict:
    done = subprocess.run([sys.executable, script, tool, data, files_json, str(epochs),
                           str(BATCH), str(WORKERS)], capture_output=True, text=True,
                          env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the {tool} loader failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(benchmark, tool, value, unit, **extra):
    return {"benchmark": benchmark, "tool": tool, "value": round(value, 4), "unit": unit,
            **extra}


def run_interop(quick: bool) -> list[dict]:
    """to_parquet and from_hf beside pyarrow and datasets (see the module docstring)."""
    count = 1_000 if quick else 5_000
    rounds = 2 if quick else 5
    TRAIN_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="sw-bench-interop-", dir=str(TRAIN_ROOT))
    env = child_env(scratch)
    try:
        paths, files_json = build(count, env, scratch)
        script = os.path.join(scratch, "interop.py")
        Path(script).write_text(INTEROP)
        out_root = os.path.join(scratch, "out")
        os.makedirs(out_root)
        done = subprocess.run([sys.executable, script, paths["slicewise"], paths["hf"],
                               files_json, out_root, str(rounds), str(WORKERS)],
                              capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"the interop benchmark failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    times = {tuple(k.split("|")): v for k, v in result["times"].items()}
    checks = result["checks"]
    if not all(checks.values()):
        raise AssertionError(f"read-back check failed: {checks}")
    mb = result["bytes"] / 1e6
    rows = []
    specs = [
        ("to_parquet", f"to_parquet: {count} JPEGs ({mb:.0f} MB) + labels -> Parquet "
                       f"(ratio: pyarrow's time / slicewise's)",
         [("slicewise", f"slicewise ds.to_parquet(num_workers={WORKERS})"),
          ("pyarrow", "pyarrow pq.write_table of the bytes in memory")],
         "slicewise >= 0.8x pyarrow", "both outputs read back: bytes and labels equal"),
        ("from_hf", f"from_hf: a {count}-image datasets.Dataset (Image + ClassLabel, "
                    f"{mb:.0f} MB) -> stored (ratio: datasets' time / slicewise's)",
         [("slicewise", f"slicewise sw.from_hf(num_workers={WORKERS})"),
          ("datasets", f"datasets save_to_disk(num_proc={WORKERS})")],
         "slicewise >= 0.8x datasets", f"slicewise's copy read back: {count} images byte "
                                       "for byte, labels and class names equal"),
    ]
    for key, bench, sides, target, check in specs:
        ours = min(times[(key, "slicewise")])
        theirs = min(times[(key, sides[1][0])])
        for tool, label in sides:
            seconds = times[(key, tool)]
            extra: dict = {"note": f"{min(seconds):.2f}-{max(seconds):.2f} s over "
                                   f"{len(seconds)} rounds; {mb / min(seconds):,.0f} MB/s"}
            if tool == "slicewise":
                extra.update(ratio=round(theirs / ours, 3), target=target,
                             met=bool(theirs / ours >= 0.8))
                extra["note"] += "; " + check
            else:
                extra["ratio"] = 1.0
            rows.append(_row(bench, label, min(seconds), "s", **extra))
    return rows


def run(quick: bool) -> list[dict]:
    """The loader rows, then the interop rows; SW_BENCH_TRAINING=loaders or =interop
    (the script's --loaders / --interop) runs one group alone."""
    if os.environ.get("SW_BENCH_TRAINING") == "interop":
        return run_interop(quick)
    rows = run_loaders(quick)
    if os.environ.get("SW_BENCH_TRAINING") != "loaders":
        rows += run_interop(quick)
    return rows


def run_loaders(quick: bool) -> list[dict]:
    count = 1_000 if quick else 5_000
    rounds = 2 if quick else 3
    TRAIN_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="sw-bench-train-", dir=str(TRAIN_ROOT))
    env = child_env(scratch)
    env.pop("TQDM_DISABLE", None)
    try:
        paths, files_json = build(count, env, scratch)
        script = os.path.join(scratch, "loader.py")
        Path(script).write_text(LOADER)
        tools = ["slicewise", "litdata", "hf", "plain"]
        results: dict[str, list[dict]] = {tool: [] for tool in tools}
        for tool in tools:  # untimed: page cache and .pyc files
            run_loader(script, tool, paths[tool], files_json, env)
        for round_ in range(rounds):
            order = tools[round_ % len(tools):] + tools[: round_ % len(tools)]
            for tool in order:
                result = run_loader(script, tool, paths[tool], files_json, env)
                if result["images"] != EPOCHS * count:
                    raise AssertionError(f"{tool}: {result['images']} images in {EPOCHS} "
                                         f"epochs of {count}")
                results[tool].append(result)
        big = None
        if not quick:  # flat memory: 10x the samples, slicewise alone, one epoch
            listed = json.loads(Path(files_json).read_text())
            big_path = build_replicated(listed, 10, env)
            big = run_loader(script, "slicewise", big_path, files_json, env, epochs=1)
            if big["images"] != 10 * count:
                raise AssertionError(f"slicewise: {big['images']} images in one epoch of "
                                     f"{10 * count}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    uniform = uniform_mix(files_json)

    def rate(tool: str) -> float:
        return max(r["images"] / r["seconds"] for r in results[tool])

    ours = rate("slicewise")
    labels = {"slicewise": "slicewise ds.pytorch(shuffle=True)",
              "litdata": "litdata StreamingDataset + StreamingDataLoader",
              "hf": 'HF datasets with_format("torch") + DataLoader',
              "plain": "plain DataLoader, Pillow from the files"}
    bench = (f"training input: {count} JPEGs -> decode, random 224x224 crop, uint8 tensor; "
             f"batch {BATCH}, {EPOCHS} epochs, shuffled, {WORKERS} loader workers")
    rows = []
    for tool in ("slicewise", "litdata", "hf", "plain"):
        rates = [r["images"] / r["seconds"] for r in results[tool]]
        mix = sum(r["mix"] for r in results[tool]) / len(results[tool])
        extra: dict = {"ratio": round(ours / rate(tool), 3) if tool != "slicewise" else 1.0,
                       "note": f"{min(rates):,.0f}-{max(rates):,.0f} images/s over "
                               f"{len(rates)} rounds; mixing: a full batch's largest class "
                               f"is {mix:.2f} of it on average (a uniform shuffle: "
                               f"{uniform:.2f})"}
        if tool in ("litdata", "hf"):
            extra.update(target="slicewise >= 1.2x", met=bool(ours >= 1.2 * rate(tool)))
        elif tool == "plain":
            extra.update(target="slicewise >= 0.95x", met=bool(ours >= 0.95 * rate(tool)))
        rows.append(_row(bench, labels[tool], rate(tool), "images/s", **extra))
    bench = f"peak RSS per loader worker, {count} JPEGs, {EPOCHS} epochs (largest worker)"
    for tool in ("slicewise", "litdata", "hf", "plain"):
        peak = max(r["rss_mb"] for r in results[tool])
        extra = {"note": f"USS (pages it alone holds) {max(r['uss_mb'] for r in results[tool]):.0f}"
                         f" MB; the loop's own process {max(r['parent_rss_mb'] for r in results[tool]):.0f} MB RSS"}
        if tool == "slicewise":
            extra.update(target="<= 200 MB", met=bool(peak <= 200))
        rows.append(_row(bench, labels[tool], peak, "MB", **extra))
    if big is not None:
        small = max(r["rss_mb"] for r in results["slicewise"])
        peak = big["rss_mb"]
        rows.append(_row(
            f"peak RSS per loader worker, {10 * count} JPEGs (the {count} x10), 1 epoch "
            f"(largest worker): flat from {count}", labels["slicewise"], peak, "MB",
            target=f"<= 200 MB and within 5% of the {count}-sample row",
            met=bool(peak <= 200 and peak <= 1.05 * small),
            note=f"{count} samples: {small:.0f} MB; USS {big['uss_mb']:.0f} MB; "
                 f"{big['images'] / big['seconds']:,.0f} images/s; mixing "
                 f"{big['mix']:.2f}"))
    return rows


if __name__ == "__main__":
    if "--interop" in sys.argv:
        os.environ["SW_BENCH_TRAINING"] = "interop"
    elif "--loaders" in sys.argv:
        os.environ["SW_BENCH_TRAINING"] = "loaders"
    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result))
