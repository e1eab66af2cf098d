"""Small pieces in isolation: batch sizing, errors, the progress slot protocol."""

from __future__ import annotations

import pytest

from slicewise.engine.batching import MAX_BATCH, TARGET_SECONDS, BatchSizer
from slicewise.engine.errors import Failure, short_repr, signal_name
from slicewise.engine.worker import (
    IDLE,
    MODE_CALL,
    MODE_ONE,
    MODE_STAR,
    NATIVE_THREAD_VARIABLES,
    PHASE,
    PICKLING,
    POS,
    RUNNING,
    SEQ,
    SLOT_WIDTH,
    STARTED,
    limit_native_threads,
    read_progress,
    run_batch,
)


def test_batches_start_with_one_item_then_follow_the_measured_time():
    sizer = BatchSizer(workers=2)
    assert sizer.next_size(remaining=None) == 1
    sizer.observe(1, 0.001)  # 1 ms per item
    assert sizer.next_size(remaining=None) == int(TARGET_SECONDS / 0.001)
    sizer.observe(10, 1.0)  # the work got slower: 100 ms per item
    assert sizer.next_size(remaining=None) == 1


def test_batches_shrink_toward_the_end_but_not_below_a_couple_of_ms():
    sizer = BatchSizer(workers=2)
    sizer.observe(100, 0.1)  # 1 ms per item
    assert sizer.next_size(remaining=1000) == 25  # time target
    assert sizer.next_size(remaining=40) == 10  # 40 / (2 * workers)
    assert sizer.next_size(remaining=3) == 2  # never below TAIL_SECONDS of work
    fast = BatchSizer(workers=2)
    fast.observe(100_000, 0.01)  # 0.1 us per item
    assert fast.next_size(remaining=10**9) == MAX_BATCH


def test_fixed_chunksize_and_validation():
    assert BatchSizer(2, 7).next_size(remaining=3) == 7
    with pytest.raises(ValueError):
        BatchSizer(2, 0)
    with pytest.raises(ValueError):
        BatchSizer(2, "big")


def test_run_batch_keeps_going_past_failures_and_tracks_positions():
    slot = [0, 0, 0, 0]

    def fn(x):
        if x % 3 == 0:
            raise ValueError(x)
        return -x

    for stride in (1, 4):
        values, failures, _ = run_batch(fn, MODE_ONE, list(range(10)), slot, False, stride)
        assert values == [None, -1, -2, None, -4, -5, None, -7, -8, None]
        assert [f[0] for f in failures] == [0, 3, 6, 9]
        assert failures[0][4] == "ValueError" and "raise ValueError" in failures[0][3]
        assert slot[POS] == (9 if stride == 1 else 7)  # the last item, or its window's start
    assert run_batch(pow, MODE_STAR, [(2, 3)], slot, True)[0] == [8]
    assert run_batch(divmod, MODE_CALL, [((7, 2), {})], slot, False)[0] == [(3, 1)]


def test_run_batch_lets_ctrl_c_through():
    def interrupted(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(interrupted, MODE_ONE, [1], [0, 0, 0, 0], False)


def test_error_texts():
    assert signal_name(-9) == "SIGKILL" and signal_name(3) is None
    assert len(short_repr("x" * 10_000)) <= 80

    class BrokenRepr:
        def __repr__(self):
            raise RuntimeError("no")

    assert "BrokenRepr" in short_repr(BrokenRepr())  # never raises
    failure = Failure(index=4, item_repr="'a.jpg'", kind="timeout", timeout=2.0)
    assert "item 4 ('a.jpg')" in failure.describe() and "2.0 s" in failure.describe()


class _RecordingSlot(list):
    """A worker's progress slot that records what a reader would see at each write."""

    def __init__(self):
        super().__init__([0] * SLOT_WIDTH)
        self.snapshots = []

    def __setitem__(self, index, value):
        super().__setitem__(index, value)
        self.snapshots.append(read_progress(self))


@pytest.mark.parametrize("timed", [True, False])
def test_a_running_batch_never_shows_the_previous_batch_stamp(timed):
    # the worker idled long ago with an old stamp: the parent must never see RUNNING
    # paired with it, or it kills the worker for a timeout the new item never had
    slot = _RecordingSlot()
    slot[SEQ], slot[PHASE], slot[POS], slot[STARTED] = 7, PICKLING, 4, 1
    slot.snapshots.clear()
    slot[SEQ] = 8
    run_batch(lambda x: x, MODE_ONE, [10, 11], slot, timed)
    running = [snap for snap in slot.snapshots if snap[1] == RUNNING]
    assert running and all(started > 1 for _seq, _phase, _pos, started in running)
    assert all(pos in (0, 1) for _seq, _phase, pos, _started in running)


def test_read_progress_discards_a_snapshot_torn_across_batches():
    class MovesOn(list):
        reads = 0

        def __getitem__(self, index):
            self.reads += 1
            if self.reads == 2:  # the worker starts the next batch during the read
                super().__setitem__(SEQ, 9)
            return super().__getitem__(index)

    slot = MovesOn([8, RUNNING, 3, 12345])
    assert read_progress(slot) == (8, IDLE, 0, 0)


def test_native_thread_limits_leave_the_users_settings_alone():
    environ = {"OMP_NUM_THREADS": "3"}
    limit_native_threads(4, environ)
    assert environ["OMP_NUM_THREADS"] == "3"  # set by the user: kept
    assert all(environ[name] == "4" for name in NATIVE_THREAD_VARIABLES[1:])
    untouched: dict = {}
    limit_native_threads(None, untouched)
    assert untouched == {}
