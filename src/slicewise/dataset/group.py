"""Groups (Deep Lake 3's): tensors named by "/" paths, and row views.

    ds.create_group("Control")                   -> Group "Control" (kept in the manifest's
                                                    "groups" list, so it exists while empty)
    ds.create_tensor("Control/Experiment 1")     -> a tensor whose name holds its groups
    ds["Control/Experiment 1"], ds.Control["Experiment 1"], ds.Control.tensors

A group is a name prefix, nothing more: its tensors are the dataset's tensors whose names
start with "<group>/", and chunk files stay under the tensor's id, so a name never becomes
a file path (FORMAT.md 2.1). A Group holds only its dataset and its path, so, like a
Tensor, it stays valid across commits.

Names inside a group are relative ("Experiment 1" in ds.Control); `ds.tensors` and
`ds.groups` list every tensor and group of the dataset by full name, `group.tensors` and
`group.groups` every one below the group, relative to it.

RowView (`ds[i]`, `ds[i:j]`, `group[i]`) is here too: a row view is restricted to a group's
tensors, the whole dataset's being the root group's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slicewise.dataset.tensor import Tensor
from slicewise.dataset.tensor_view import TensorView, normalize_index
from slicewise.format.errors import DatasetError
from slicewise.format.manifest import Version, ancestors, validate_name

if TYPE_CHECKING:
    from slicewise.dataset.dataset import Dataset


def all_groups(version: Version) -> list[str]:
    """Every group of a version, by full name: those create_group made and those a tensor
    or group name lies in ("a/b/x" -> "a", "a/b"), in first-seen order."""
    seen: dict[str, None] = {}
    for name in version.groups:
        for group in [*ancestors(name), name]:
            seen.setdefault(group, None)
    for name in version.tensors:
        for group in ancestors(name):
            seen.setdefault(group, None)
    return list(seen)


def join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def below(names, prefix: str) -> list[str]:
    """The names under `prefix` ("" is the root: all), relative to it."""
    if not prefix:
        return list(names)
    start = prefix + "/"
    return [name[len(start):] for name in names if name.startswith(start)]


def check_new_name(ds: Dataset, name: str, kind: str) -> None:
    """A new tensor's or group's name: valid (FORMAT.md 2.1), not taken by a tensor or
    group, inside no tensor, and reachable as an attribute (ds.<a>.<b>): the first
    component is no Dataset attribute, the others no Group attribute."""
    from slicewise.dataset.dataset import Dataset

    validate_name(name, kind)
    view = ds._view()
    if name in view.tensors:
        raise DatasetError(f"{name!r} is a tensor of {ds.path}; a {kind} needs another name")
    if name in all_groups(view):
        raise DatasetError(f"{name!r} is a group of {ds.path}; a {kind} needs another name")
    for outer in ancestors(name):
        if outer in view.tensors:
            raise DatasetError(
                f"cannot create {kind} {name!r}: {outer!r} is a tensor, not a group"
            )
    parts = name.split("/")
    if parts[0] in dir(Dataset):
        raise DatasetError(f"invalid {kind} name {name!r}: {parts[0]!r} is a Dataset attribute")
    for part in parts[1:]:
        if part in dir(Group) or part == "group_index":
            raise DatasetError(f"invalid {kind} name {name!r}: {part!r} is a Group attribute")


class Group:
    """A group of tensors (and groups), Deep Lake 3's `ds.create_group("Control")`:
    `group["Experiment 1"]` / `group.x` give its tensors and subgroups, `group.tensors`
    and `group.groups` list them (names relative to the group), `group.create_tensor` /
    `create_group` make new ones inside it, `len(group)` counts rows (its shortest
    tensor's length, as a dataset's), `group[i]` is a row of its tensors.

    Args:
        dataset: the Dataset it belongs to.
        path: the group's full name ("Control", "Control/Experiment 1").

    Example:
        >>> ds = sw.empty("memory://doc-group", overwrite=True)
        >>> g = ds.create_group("Control")
        >>> _ = g.create_tensor("x")
        >>> list(g.tensors), list(ds.tensors)
        (['x'], ['Control/x'])
    """

    def __init__(self, dataset: Dataset, path: str):
        self._dataset = dataset
        self.group_index = path  # Deep Lake 3's name for the group's path

    # -- names

    def _tensor_names(self) -> list[str]:
        """Full names of every tensor below this group."""
        start = self.group_index + "/"
        return [name for name in self._dataset._view().tensors if name.startswith(start)]

    def _exists(self) -> bool:
        return self.group_index in all_groups(self._dataset._view())

    def _child(self, rel: str) -> Tensor | Group | None:
        full = join(self.group_index, rel)
        view = self._dataset._view()
        if full in view.tensors:
            return Tensor(self._dataset, full)
        if full in all_groups(view):
            return Group(self._dataset, full)
        return None

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Every tensor below this group (in subgroups too), by name relative to it."""
        names = self._tensor_names()
        return {rel: Tensor(self._dataset, full)
                for rel, full in zip(below(names, self.group_index), names, strict=True)}

    @property
    def groups(self) -> dict[str, Group]:
        """Every group below this group, by name relative to it."""
        names = all_groups(self._dataset._view())
        return {rel: Group(self._dataset, join(self.group_index, rel))
                for rel in below(names, self.group_index)}

    def __getattr__(self, name: str) -> Any:  # a Tensor or a Group, found by name
        if name.startswith("_"):
            raise AttributeError(name)
        child = self._child(name)
        if child is None:
            raise AttributeError(
                f"group {self.group_index!r} has no tensor, group or attribute {name!r}; "
                f"tensors: {list(self.tensors)}"
            )
        return child

    def __getitem__(self, index):
        if isinstance(index, str):
            child = self._child(index)
            if child is None:
                raise KeyError(f"group {self.group_index!r} has no tensor or group {index!r}")
            return child
        single, rows = normalize_index(index, len(self))
        return RowView(self._dataset, single, rows, self.group_index)

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and self._child(name) is not None

    def __len__(self) -> int:
        lengths = [len(Tensor(self._dataset, name)) for name in self._tensor_names()]
        if not lengths:
            return 0
        return max(lengths) if self._dataset.pad_tensors else min(lengths)

    def __iter__(self):
        for i in range(len(self)):
            yield RowView(self._dataset, i, None, self.group_index)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Group) and other._dataset is self._dataset
                and other.group_index == self.group_index)

    def __hash__(self) -> int:
        return hash((id(self._dataset), self.group_index))

    def __repr__(self) -> str:
        return (f"Group(path={self._dataset.path!r}, group={self.group_index!r}, "
                f"tensors={list(self.tensors)})")

    def _repr_html_(self) -> str:
        """Jupyter's view: the group's tensors, as a dataset's."""
        from slicewise.integrations.html import group_html

        return group_html(self)

    # -- writing

    def create_tensor(self, name: str, htype: str = "generic", dtype: Any = None,
                      sample_compression: str | None = None,
                      chunk_compression: str | None = None, exist_ok: bool = False,
                      **kwargs: Any) -> Tensor:
        """`ds.create_tensor(f"{group}/{name}", ...)`: a tensor inside this group.

        Args:
            name: the tensor's name relative to the group.
            htype: as `Dataset.create_tensor`.
            dtype: as `Dataset.create_tensor`.
            sample_compression: as `Dataset.create_tensor`.
            chunk_compression: as `Dataset.create_tensor`.
            exist_ok: return an existing tensor instead of raising.
            **kwargs: htype options (e.g. class_names=[...]) and Deep Lake 3's flags, as
                `Dataset.create_tensor`.

        Returns:
            The Tensor (full name "group/name").

        Raises:
            DatasetError: as `Dataset.create_tensor`.

        Example:
            >>> ds.Control.create_tensor("y", dtype="float32")   # doctest: +SKIP
        """
        return self._dataset.create_tensor(join(self.group_index, name), htype, dtype,
                                           sample_compression, chunk_compression, exist_ok,
                                           **kwargs)

    def create_group(self, name: str, exist_ok: bool = False) -> Group:
        """`ds.create_group(f"{group}/{name}")`: a subgroup.

        Args:
            name: the subgroup's name relative to this group.
            exist_ok: return an existing group instead of raising.

        Returns:
            The Group.

        Raises:
            DatasetError: as `Dataset.create_group`.

        Example:
            >>> ds.Control.create_group("Experiment 1")          # doctest: +SKIP
        """
        return self._dataset.create_group(join(self.group_index, name), exist_ok=exist_ok)

    def _full_sample(self, sample: dict, skip_ok: bool) -> dict:
        if not isinstance(sample, dict):
            raise DatasetError(
                f"group.append/extend take a dict {{tensor: value}}, got {type(sample).__name__}"
            )
        full = {join(self.group_index, rel): value for rel, value in sample.items()}
        missing = set(self._tensor_names()) - set(full)
        if missing and not skip_ok:
            rel = sorted(below(missing, self.group_index))
            raise DatasetError(
                f"no value for tensor(s) {rel} of group {self.group_index!r}; pass "
                "skip_ok=True to leave them shorter"
            )
        return full

    def append(self, sample: dict, skip_ok: bool = False) -> None:
        """Append one row to the group's tensors: {name relative to the group: value}.

        Args:
            sample: {relative tensor name: value}.
            skip_ok: allow leaving the group's tensors out.

        Raises:
            DatasetError: not a dict, a missing tensor (without skip_ok), or what
                `Dataset.append` raises.

        Example:
            >>> ds.Control.append({"x": 1.0})                    # doctest: +SKIP
        """
        self._dataset.append(self._full_sample(sample, skip_ok), skip_ok=True)

    def extend(self, samples: dict, skip_ok: bool = False) -> None:
        """Append rows to the group's tensors: {relative name: sequence of values}.

        Args:
            samples: {relative tensor name: sequence of values}.
            skip_ok: allow leaving the group's tensors out.

        Raises:
            DatasetError: not a dict, a missing tensor (without skip_ok), or what
                `Dataset.extend` raises.

        Example:
            >>> ds.Control.extend({"x": [1.0, 2.0]})             # doctest: +SKIP
        """
        self._dataset.extend(self._full_sample(samples, skip_ok), skip_ok=True)

    # -- reading

    @property
    def max_len(self) -> int:
        """The longest tensor's length below this group (0 without tensors)."""
        return max((len(t) for t in self.tensors.values()), default=0)

    @property
    def min_len(self) -> int:
        """The shortest tensor's length below this group (0 without tensors)."""
        return min((len(t) for t in self.tensors.values()), default=0)

    def numpy(self, aslist: bool = False) -> dict:
        """Every tensor's rows: {relative name: `Tensor.numpy(aslist)`}.

        Args:
            aslist: lists of per-row arrays instead of stacked arrays.

        Returns:
            {relative tensor name: array or list of arrays}.

        Example:
            >>> ds.Control.numpy()["x"].shape                    # doctest: +SKIP
        """
        return {rel: t.numpy(aslist=aslist) for rel, t in self.tensors.items()}


class RowView:
    """`ds[i]` (one row) or `ds[i:j]`, and `group[i]`: the tensors of a group (the root
    group "" is the whole dataset) restricted to those rows."""

    def __init__(self, dataset: Dataset, single: int | None, rows, group: str = ""):
        self._dataset = dataset
        self._single = single
        self._rows = rows
        self._group = group

    def _index(self):
        return self._single if self._single is not None else self._rows

    @property
    def tensors(self) -> dict[str, TensorView]:
        names = list(self._dataset._view().tensors)
        if self._group:
            names = [n for n in names if n.startswith(self._group + "/")]
        index = self._index()
        return {rel: Tensor(self._dataset, full)[index]
                for rel, full in zip(below(names, self._group), names, strict=True)}

    def _child(self, rel: str) -> Any:
        full = join(self._group, rel)
        view = self._dataset._view()
        if full in view.tensors:
            return Tensor(self._dataset, full)[self._index()]
        if full in all_groups(view):
            return RowView(self._dataset, self._single, self._rows, full)
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        child = self._child(name)
        if child is None:
            raise AttributeError(f"no tensor or group {name!r}")
        return child

    def __getitem__(self, key):
        if isinstance(key, str):
            child = self._child(key)
            if child is None:
                raise KeyError(f"no tensor or group {key!r}")
            return child
        if self._single is not None:
            raise IndexError("a single row cannot be indexed further; pick a tensor")
        single, rows = normalize_index(key, len(self._rows))
        base = self._rows
        if single is not None:
            return RowView(self._dataset, int(base[single]), None, self._group)
        picked = np.asarray(base, dtype=np.int64)[np.asarray(rows)]
        return RowView(self._dataset, None, picked, self._group)

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and self._child(name) is not None

    def __len__(self) -> int:
        if self._single is not None:
            raise TypeError("a single row has no len()")
        return len(self._rows)

    def __iter__(self):
        if self._single is not None:
            raise TypeError("a single row is not iterable; use .tensors")
        for r in self._rows:
            yield RowView(self._dataset, int(r), None, self._group)

    def numpy(self, aslist: bool = False) -> dict:
        return {name: view.numpy(aslist=aslist) for name, view in self.tensors.items()}

    # Deep Lake 3: `ds[10:20]` is a view of the dataset: it can be filtered, queried,
    # saved, copied and exported like the view `ds.filter` returns (views.py)
    def as_view(self):
        """These rows as a DatasetView of the committed version (`ds[10:20].as_view()`);
        `filter`, `query`, `save_view`, `copy` and `to_hdf5` below go through it."""
        from slicewise.dataset.filtering import _read_handle
        from slicewise.dataset.views import DatasetView

        if self._single is not None or self._group:
            what = "one row" if self._single is not None else f"group {self._group!r}"
            raise TypeError(f"{what} is not a dataset view: index the dataset's rows, "
                            "e.g. ds[10:20]")
        return DatasetView(_read_handle(self._dataset), self._rows)

    def filter(self, function, *args, **kwargs):
        """Deep Lake 3's `ds[a:b].filter(...)`: as `Dataset.filter`, over these rows."""
        return self.as_view().filter(function, *args, **kwargs)

    def query(self, text: str):
        return self.as_view().query(text)

    def save_view(self, *args, **kwargs) -> str:
        """Deep Lake 3's `ds[a:b].save_view(...)` (see DatasetView.save_view)."""
        return self.as_view().save_view(*args, **kwargs)

    def copy(self, *args, **kwargs):
        return self.as_view().copy(*args, **kwargs)

    def to_hdf5(self, *args, **kwargs):
        return self.as_view().to_hdf5(*args, **kwargs)

    def __repr__(self) -> str:
        group = f", group={self._group!r}" if self._group else ""
        return f"RowView({self._dataset.path!r}, {self._index()}{group})"

    def _repr_html_(self) -> str:
        """Jupyter's view: the row's pictures and captions (a grid for several rows)."""
        from slicewise.integrations.html import rowview_html

        return rowview_html(self)
