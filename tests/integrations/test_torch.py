"""PyTorch input with real torch (CPU): ds.pytorch(), TorchDataset, TorchIterableDataset,
TorchLoader. Every row exactly once per epoch with 0, 1 and 2 loader workers and across
two simulated ranks; resume mid-epoch; writable samples; light pickles; S3 (moto)."""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import slicewise as sw  # noqa: E402
from slicewise.integrations.torch import TorchIterableDataset, TorchLoader  # noqa: E402

N = 101
CLASSES = ["cat", "dog", "bird"]


def _jpeg(value: int, height: int = 16) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, 20, 3), value, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _fill(ds, n: int = N) -> list[bytes]:
    files = [_jpeg((i * 2) % 256) for i in range(n)]
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=CLASSES)
        ds.create_tensor("x", dtype="float32")
        for i, data in enumerate(files):
            sample = sw.read(f"row{i}.jpg")
            sample.keep(data)
            ds.append({"images": sample, "labels": CLASSES[i % 3], "x": np.float32(i)})
    return files


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "ds"
    ds = sw.empty(str(path), chunk_target_bytes=4000)  # many small chunks
    files = _fill(ds)
    assert len(ds.images.chunk_row_ranges()) > 10
    return sw.load(str(path)), files


def _check_batch(batch: dict) -> list[int]:
    index = batch["index"].tolist()
    assert batch["x"].dtype == torch.float32
    assert batch["x"].reshape(-1).tolist() == [float(i) for i in index]
    assert batch["labels"].dtype == torch.int64 and batch["labels"].shape == (len(index),)
    assert batch["labels"].tolist() == [i % 3 for i in index]
    images = batch["images"]
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (16, 20, 3)
    means = images.float().mean(dim=(1, 2, 3)).tolist()
    assert all(abs(m - (i * 2) % 256) < 4 for m, i in zip(means, index, strict=True))
    return index


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_every_row_once_per_epoch(stored, workers):
    ds, _ = stored
    loader = ds.pytorch(batch_size=8, num_workers=workers, shuffle=True, buffer_size=0.01)
    orders = []
    for _epoch in range(2):
        seen = []
        for batch in loader:
            seen += _check_batch(batch)
        assert sorted(seen) == list(range(N))
        orders.append(seen)
    assert orders[0] != orders[1]  # the epoch advanced: another shuffle
    assert orders[0] != sorted(orders[0])


@pytest.mark.timeout(120)
def test_streamed_bytes_exact_after_pages_are_released(stored):
    # a streaming pass gives back the mapped pages of each span it has copied; the
    # samples, a second epoch and later reads through the same handle are unaffected
    ds, files = stored
    data = TorchIterableDataset(ds, ["images"], decode_method={"images": "tobytes"},
                                return_index=True, shuffle=True, seed=3, buffer_size=0.01)
    for epoch in range(2):
        data.set_epoch(epoch)
        seen = {sample["index"]: sample["images"] for sample in data}
        assert seen == dict(enumerate(files))
    assert ds.images[5].tobytes() == files[5]
    assert ds.images[N - 1].numpy().shape == (16, 20, 3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_unshuffled_in_order_and_len(stored, workers):
    ds, _ = stored
    loader = ds.pytorch(batch_size=10, num_workers=workers, drop_last=False)
    seen = [i for batch in loader for i in _check_batch(batch)]
    assert sorted(seen) == list(range(N))
    if workers == 0:
        assert seen == list(range(N))
    assert len(loader) == sum(1 for _ in loader)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_split_every_row_once(stored, workers):
    ds, _ = stored
    per_rank = []
    for rank in range(2):
        data = TorchIterableDataset(ds, shuffle=True, seed=5, rank=rank, world_size=2,
                                    return_index=True, buffer_size=0.01)
        loader = TorchLoader(data, batch_size=4, num_workers=workers)
        seen = [i for batch in loader for i in _check_batch(batch)]
        assert len(seen) == len(data)
        per_rank.append(seen)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N))
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_exactly_the_rest(stored, workers):
    ds, _ = stored
    loader = ds.pytorch(batch_size=4, num_workers=workers, shuffle=True, seed=11,
                        buffer_size=0.01)
    for _ in loader:  # a whole first epoch: the state must carry the epoch too
        pass
    first = []
    for k, batch in enumerate(loader):
        first += batch["index"].tolist()
        if k == 6:
            state = loader.state_dict()
            break
    state = json.loads(json.dumps(state))  # JSON-able, as a checkpoint file holds it
    assert state["epoch"] == 1

    again = ds.pytorch(batch_size=4, num_workers=workers, shuffle=True, buffer_size=0.01)
    again.load_state_dict(state)
    rest = [i for batch in again for i in _check_batch(batch)]
    assert sorted(first + rest) == list(range(N))
    # the uninterrupted epoch 1 of the same seed yields the same rows per worker
    reference = ds.pytorch(batch_size=4, num_workers=workers, shuffle=True, seed=11,
                           buffer_size=0.01)
    reference.set_epoch(1)
    full = [i for batch in reference for i in batch["index"].tolist()]
    assert sorted(full) == list(range(N))
    if workers == 0:
        assert first + rest == full
    # after the resumed epoch, the next one is whole again
    assert sorted(i for batch in again for i in batch["index"].tolist()) == list(range(N))


@pytest.mark.timeout(60)
def test_dataset_state_dict_without_workers(stored):
    ds, _ = stored
    data = TorchIterableDataset(ds, tensors=["x"], shuffle=True, seed=3, return_index=True)
    data.set_epoch(2)
    iterator = iter(data)
    first = [next(iterator)["index"] for _ in range(30)]
    state = data.state_dict()
    other = TorchIterableDataset(ds, tensors=["x"], return_index=True)
    other.load_state_dict(state)
    rest = [sample["index"] for sample in other]
    data.set_epoch(2)
    assert first + rest == [sample["index"] for sample in data]


@pytest.mark.timeout(60)
def test_samples_are_writable(stored):
    ds, _ = stored
    array = ds.images[3].numpy()
    assert array.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(array)
        sample = sw.TorchDataset(ds)[3]
        assert sample["images"].flags.writeable and sample["labels"] == 0
        torch.from_numpy(sample["images"])
        streamed = next(iter(TorchIterableDataset(ds)))
        torch.from_numpy(streamed["images"])
        torch.from_numpy(streamed["x"])


@pytest.mark.timeout(120)
def test_map_style_with_a_plain_dataloader(stored):
    ds, _ = stored
    data = sw.TorchDataset(ds, tensors=["images", "labels"], return_index=True,
                           transform={"images": lambda image, size: image[:size, :size]},
                           transform_kwargs={"size": 8})
    assert isinstance(data, torch.utils.data.Dataset) and len(data) == N
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True, num_workers=2)
    seen = []
    for batch in loader:
        assert tuple(batch["images"].shape[1:]) == (8, 8, 3)
        assert batch["labels"].tolist() == [i % 3 for i in batch["index"].tolist()]
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(N))


def test_pickles_handles_not_data(stored):
    ds, _ = stored
    for data in (sw.TorchDataset(ds), TorchIterableDataset(ds, shuffle=True)):
        blob = pickle.dumps(data)
        assert len(blob) < 4096  # the dataset is a URL and a version, not its rows
        back = pickle.loads(blob)
        assert type(back) is type(data) and len(back) == N
    assert pickle.loads(pickle.dumps(sw.TorchDataset(ds)))[5]["x"].tolist() == [5.0]


def test_decode_methods(stored):
    ds, files = stored
    data = sw.TorchDataset(ds, decode_method={"images": "tobytes"})
    assert data[7]["images"] == files[7]
    pil = sw.TorchDataset(ds, decode_method={"images": "pil"})[7]["images"]
    assert pil.size == (20, 16)
    with pytest.raises(ValueError, match="image tensor"):
        sw.TorchDataset(ds, decode_method={"x": "pil"})
    whole = sw.TorchDataset(ds, transform=lambda s: {"y": s["x"] * 2})[4]
    assert whole == {"y": np.array([8.0], np.float32)}


def test_uncommitted_changes_are_refused(tmp_path):
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("x", dtype="int32")
        ds.x.append(1)
        with pytest.raises(sw.DatasetError, match="uncommitted"):
            sw.TorchDataset(ds)


@pytest.mark.timeout(120)
def test_streaming_from_s3(s3_options, s3_url):
    url = s3_url
    files = _fill(sw.empty(url, storage_options=s3_options, chunk_target_bytes=4000), n=40)
    ds = sw.load(url, storage_options=s3_options)
    for workers in (0, 2):
        loader = ds.pytorch(batch_size=5, num_workers=workers, shuffle=True,
                            decode_method={"images": "tobytes"},
                            collate_fn=lambda batch: batch)
        seen = {}
        for batch in loader:
            for sample in batch:
                seen[sample["index"]] = sample["images"]
        assert sorted(seen) == list(range(40))
        assert all(seen[i] == files[i] for i in range(40))


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "training.md"


@pytest.mark.timeout(170)
def test_training_guide_runs_as_one_script(run_script):
    pytest.importorskip("pyarrow")
    pytest.importorskip("datasets")
    pytest.importorskip("sklearn")
    examples = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(examples) >= 6
    stdout = run_script("\n".join(examples), "training_guide.py", timeout=160)
    assert "cat" in stdout  # the value counts of the labels
