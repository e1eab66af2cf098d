"""The write path of eval with large chunks: a worker hands back each batch's receipt while
its helper thread still writes the batch's last chunk files (storage.PendingPut, under
a file lock; FORMAT.md 3.1), and goes on with its next batch. If that worker dies before
the writes are done, the chunk files are short: the eval must notice, run that batch
again, and end with every row, byte-identical, in order."""

from __future__ import annotations

import os

import numpy as np
import pytest

import slicewise as sw
from slicewise.format import storage as storage_mod

needs_o_direct = pytest.mark.skipif(
    not storage_mod._O_DIRECT, reason="the platform has no O_DIRECT: writes are waited for"
)


def big_sample(item: int) -> np.ndarray:
    return np.full(150_000 + item, item % 251, np.uint8)


@sw.compute
def write_big(item, sample_out, marker_dir):
    if item == 7 and not os.path.exists(os.path.join(marker_dir, "held")):
        # The first process to get here keeps its helper thread busy (at most 30 s), so
        # the chunk files of this batch are still unwritten when its receipt goes back.
        import threading

        open(os.path.join(marker_dir, "held"), "w").close()
        os.environ["SW_TEST_HELPER_HELD"] = "1"
        storage_mod._sync_pool(1).submit(threading.Event().wait, 30)
    if item == 10 and os.environ.get("SW_TEST_HELPER_HELD"):
        os._exit(7)  # the next batch kills that same process: its writes never happen
    sample_out.x.append(big_sample(item))


@needs_o_direct
@pytest.mark.timeout(90)
@pytest.mark.parametrize("checkpoint_interval", [0, 10])
def test_a_worker_dying_before_its_handed_over_writes_are_done_loses_nothing(
    tmp_path, checkpoint_interval
):
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    ds = sw.empty(str(tmp_path / "ds"), chunk_target_bytes=300_000)
    ds.create_tensor("x", dtype="uint8")
    ds.commit("tensors")
    # one worker: batch 0 (inputs 0..9) and the batch after it run in the same process.
    # With checkpoints every 10 inputs, the first one finds batch 0's files short (once
    # the worker died) and is skipped: no version ever names a short file (verify).
    report = write_big(marker_dir=str(marker_dir)).eval(
        list(range(40)), ds, num_workers=1, scheduler="processed", progressbar=False,
        ignore_errors=True, checkpoint_interval=checkpoint_interval,
    )
    assert os.path.exists(marker_dir / "held")
    stored = sw.load(str(tmp_path / "ds")).x.numpy(aslist=True)
    assert [a.tobytes() for a in stored] == [big_sample(i).tobytes() for i in range(40)]
    # input 10 only kills the process whose helper was held: elsewhere it is fine, so the
    # eval reruns its batch (a transient loss) and skips nothing
    assert not report.skipped and report.rows_written == 40
    assert sw.verify(str(tmp_path / "ds")).ok


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scheduler,workers", [("threaded", 2), ("processed", 2)])
def test_large_chunks_round_trip_through_eval(tmp_path, scheduler, workers):
    @sw.compute
    def write(item, sample_out):
        sample_out.x.append(big_sample(item))

    ds = sw.empty(str(tmp_path / "ds"), chunk_target_bytes=400_000)
    ds.create_tensor("x", dtype="uint8")
    ds.commit("tensors")
    write().eval(list(range(60)), ds, num_workers=workers, scheduler=scheduler,
                 progressbar=False, checkpoint_interval=25)
    stored = sw.load(str(tmp_path / "ds")).x.numpy(aslist=True)
    assert [a.tobytes() for a in stored] == [big_sample(i).tobytes() for i in range(60)]
    assert sw.verify(str(tmp_path / "ds")).ok
