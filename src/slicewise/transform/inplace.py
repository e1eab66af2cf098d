"""Deep Lake 3's in-place eval: `fn().eval(ds)` / `fn().eval(ds, None)`.

    base = ds's version when the eval starts           the workers read every input row
                                                       from it (a pinned read handle, run.py)
    workers write new chunk files for the tensors      unreferenced until the end
    every checkpoint_interval inputs: stage them       format/staged.py: durable, named in
                                                       staged/<base id>/<n>.json, never a
                                                       version (readers see the base)
    the end: one commit on base, in which every tensor the pipeline wrote at least one row
             to has only the new rows (Transaction.cleared + the receipts, in input order);
             the staged checkpoints are removed

Deep Lake 3 does the same (`transform.py`, `overwrite = ds_out is None`): it replaces the
chunks of the tensors with generated samples and leaves the tensors the pipeline wrote
nothing to as they were (`skip_ok=True` lets a pipeline leave tensors out). Unlike Deep
Lake 3, the replacement is one atomic version (Deep Lake 3 deleted the old chunks as it
went, so a failure lost the dataset) and the old version stays in the log, and
checkpoints work (Deep Lake 3 refused `checkpoint_interval` in place).

A re-run of the same eval while the dataset is still at `base` resumes from the last
staged checkpoint; any other commit on the dataset makes the staged checkpoints stale
(gc removes them).
"""

from __future__ import annotations

import warnings
from typing import Any

from slicewise.format.commit import Transaction, prepare_chunks
from slicewise.format.manifest import find_version
from slicewise.format.staged import clear_staged, read_staged, write_staged
from slicewise.transform.checkpoint import CHECKPOINT_KEY


class InPlaceSink:
    """ds_out=None: results replace the written tensors' contents, in one version."""

    in_place = True
    not_resuming = "its staged rows are dropped; this eval starts from the first input"

    def __init__(self, target: Any):
        self.target = target
        self.storage = target.storage
        self.base_id = target.version
        self.base = find_version(self.storage, self.base_id)
        self.staged_receipts: list[dict] = []  # the last staged checkpoint's, in order
        self._found = None

    def progress(self) -> dict | None:
        self._found = read_staged(self.storage, self.base_id)
        return self._found.progress if self._found is not None else None

    def resume(self) -> None:
        self.staged_receipts = list(self._found.receipts) if self._found else []

    def checkpoint(self, receipts: list[dict], message: str, meta: dict) -> str | None:
        """Stage: make the chunk files durable, then name them in a staged checkpoint.
        The dataset does not change (its version stays `base`)."""
        del message
        every = self.staged_receipts + list(receipts)
        txn = Transaction()
        known = set(self.base.tensors)
        for receipt in every:
            txn.add_receipt(receipt, known)
        # refreshes every staged chunk's mtime too, so gc's grace period counts from now
        prepare_chunks(self.storage, self.base, txn, getattr(self.target, "_syncs", None))
        progress = {**meta[CHECKPOINT_KEY], "in_place": True}
        write_staged(self.storage, self.base_id, progress, every)
        self.staged_receipts = every
        return None

    def finish(self, receipts: list[dict], message: str, meta: dict) -> str | None:
        every = self.staged_receipts + list(receipts)
        written = sorted({
            name
            for receipt in every
            for name, tensor in receipt.get("tensors", {}).items()
            if tensor.get("chunks")
        })
        meta[CHECKPOINT_KEY].update(in_place=True, replaced=written)
        target = self.target
        if target.version != self.base_id:
            raise RuntimeError(
                f"internal error: the dataset moved from {self.base_id} to {target.version} "
                "during an in-place eval"
            )
        try:
            target.add_receipts(every)
            # the one place this module reaches into the Dataset: its pending
            # Transaction, to say the written tensors start empty in the new version
            target._pending().cleared.update(written)
            target._touch()
            version = target.commit(message, meta=meta)
        except BaseException:
            target.discard()  # nothing of this eval stays pending on the handle
            raise
        try:
            clear_staged(self.storage, self.base_id)
        except OSError as error:  # published already: a leftover is gc's to remove
            warnings.warn(f"could not remove the staged checkpoints of {self.base_id}: "
                          f"{error}", stacklevel=2)
        return version


def staged_progress(ds: Any) -> dict | None:
    """The progress of an unfinished in-place eval staged on `ds`'s current version (the
    checkpoint meta a re-run resumes from), or None."""
    staged = read_staged(ds.storage, ds.version)
    return staged.progress if staged is not None else None
