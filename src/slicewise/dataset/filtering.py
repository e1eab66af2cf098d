"""ds.filter and ds.query (Deep Lake 3's names): the rows for which a predicate holds, as a
DatasetView.

    ds.filter(fn, num_workers=N, scheduler="threaded"|"processed"|"serial"|"dask"|"ray")
      rows cut into batches ──► engine Pool.map(_Batch(fn), batches)  (workers open the
      dataset's version themselves: a Dataset pickles as url + version)
      each worker: [row for row in batch if fn(ds[row])] ──► parent concatenates in order

`fn` is a plain function of one row (`fn(sample) -> bool`) or an `@sw.compute` function
with bound arguments (`fn(sample, *args, **kwargs)`, Deep Lake 3's filter functions have no
sample_out). `ds.query` takes a small expression language (see `parse_query`): what
Deep Lake 3's TQL `select * where ...` of simple conditions does, not the whole TQL.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np

from slicewise.dataset.views import DatasetView

# rows per task sent to a worker: big enough to amortise the round trip
_BATCH_ROWS = 256


class _Batch:
    """A picklable task: the rows of one batch for which the predicate holds."""

    def __init__(self, dataset, function):
        self.dataset = dataset
        self.function = function

    def __call__(self, rows) -> list[int]:
        predicate = _predicate(self.function)
        dataset = self.dataset
        return [int(r) for r in rows if predicate(dataset[int(r)])]


def _predicate(function):
    from slicewise.transform.pipeline import ComputeFunction, Pipeline

    if isinstance(function, Pipeline):
        if len(function.functions) != 1:
            raise ValueError("filter takes one compute function, not a pipeline")
        function = function.functions[0]
    if isinstance(function, ComputeFunction):
        bound = function

        def call(sample):
            return bool(bound.func(sample, *bound.args, **bound.kwargs))

        return call
    if not callable(function):
        raise TypeError(f"filter needs a function or a query string, got {type(function)}")
    return lambda sample: bool(function(sample))


def _read_handle(ds):
    """A read-only handle of the version `ds` reads (uncommitted changes are refused:
    workers could not see them)."""
    from slicewise.dataset.dataset import Dataset
    from slicewise.format.errors import DatasetError

    if not isinstance(ds, Dataset):
        return ds
    if ds.has_pending:
        raise DatasetError("commit pending changes before filter(): workers read versions")
    handle = Dataset(ds._storage, ds._base, read_only=True, url=ds.path,
                     storage_options=ds._storage_options,
                     chunk_target_bytes=ds.chunk_target_bytes, pad_tensors=ds._pad_tensors)
    handle._reader = ds._reader
    handle.__dict__["_branch"] = ds.__dict__.get("_branch")
    return handle


def filter_rows(ds, function, num_workers: int = 0, scheduler: str = "threaded",
                progressbar: bool = True, save_result: bool = False, result_path=None,
                result_ds_args: dict | None = None, rows=None) -> DatasetView:
    """See Dataset.filter."""
    if isinstance(function, str):
        view = query_rows(ds, function, rows=rows)
    else:
        from slicewise.engine import Pool
        from slicewise.transform.prepare import choose_backend

        handle = _read_handle(ds)
        all_rows = np.arange(len(handle), dtype=np.int64) if rows is None else np.asarray(rows)
        backend, workers = choose_backend(scheduler, num_workers)
        if backend != "serial" and backend != "threads" and handle.path.startswith("memory://"):
            backend = "threads"  # other processes cannot see this process's memory
        batches = [all_rows[i:i + _BATCH_ROWS].tolist()
                   for i in range(0, len(all_rows), _BATCH_ROWS)]
        task = _Batch(handle, function)
        if backend == "serial":
            kept = [task(batch) for batch in batches]
        else:
            with Pool(workers, backend=backend) as pool:
                kept = pool.map(task, batches, progress=bool(progressbar) and len(batches) > 1)
        picked = [r for part in kept for r in part]
        view = DatasetView(handle, picked)
    if save_result:
        view.save_view(path=result_path, **(result_ds_args or {}))
    return view


# ---- query: a small, documented subset of Deep Lake 3's TQL conditions

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}


class QueryError(ValueError):
    """A query outside the supported subset (the message says what is supported)."""


_SUPPORTED = (
    "supported: comparisons of a scalar tensor (or a class label's name) with a number or "
    "string (==, !=, <, <=, >, >=), `in`/`not in` a list, combined with and/or/not and "
    "parentheses; e.g. \"labels == 'cat'\", \"size > 3 and labels != 'dog'\""
)


def parse_query(text: str):
    """Parse `text` (Python-like syntax; `=` is also equality, `AND`/`OR`/`NOT` in any
    case, an optional leading `select * where`) into an AST. QueryError otherwise."""
    if not isinstance(text, str):
        raise QueryError(f"a query is a string; {_SUPPORTED}")
    source = text.strip()
    lowered = source.lower()
    if lowered.startswith("select"):
        where = lowered.find(" where ")
        if not lowered.startswith("select *") or where < 0:
            raise QueryError(f"only 'select * where <condition>' is supported; {_SUPPORTED}")
        source = source[where + len(" where "):]
    tokens = []
    for word in _split_words(source):
        low = word.lower()
        tokens.append(low if low in ("and", "or", "not", "in") else word)
    source = " ".join(tokens)
    source = _fix_equals(source)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise QueryError(f"cannot parse query {text!r}: {exc.msg}; {_SUPPORTED}") from None
    _check(tree.body, text)
    return tree.body


def _split_words(source: str) -> list[str]:
    """Words and quoted strings, keeping quoted text intact."""
    out, i, word = [], 0, ""
    while i < len(source):
        ch = source[i]
        if ch in "'\"":
            end = source.find(ch, i + 1)
            if end < 0:
                raise QueryError(f"unclosed quote in query {source!r}")
            word += source[i:end + 1]
            i = end + 1
            continue
        if ch.isspace():
            if word:
                out.append(word)
            word = ""
        else:
            word += ch
        i += 1
    if word:
        out.append(word)
    return out


def _fix_equals(source: str) -> str:
    """A lone `=` (TQL's equality) becomes `==`, outside quotes."""
    out, quote = [], None
    for i, ch in enumerate(source):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "=" and source[i - 1:i] not in ("=", "!", "<", ">") and \
                source[i + 1:i + 2] != "=":
            out.append("==")
            continue
        out.append(ch)
    return "".join(out)


def _check(node, text: str) -> None:
    ok = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Name,
          ast.Constant, ast.List, ast.Tuple, ast.Load, ast.In, ast.NotIn, ast.Attribute,
          *_COMPARE)
    for sub in ast.walk(node):
        if not isinstance(sub, ok):
            raise QueryError(
                f"query {text!r}: {type(sub).__name__} is not supported; {_SUPPORTED}"
            )


def _names(node) -> list[str]:
    """Tensor names a query refers to (a.b is tensor 'a/b')."""
    out = []
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Name, ast.Attribute)):
            name = _dotted(sub)
            if name is not None and name not in out:
                out.append(name)
    return out


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}/{node.attr}"
    return None


def query_rows(ds, text: str, rows=None) -> DatasetView:
    """See Dataset.query: evaluated column-wise (numpy) over the scalar tensors it names."""
    from slicewise.format.errors import DatasetError

    tree = parse_query(text)
    handle = _read_handle(ds)
    names = [n for n in _names(tree) if n in handle._view().tensors]
    unknown = [n for n in _names(tree) if n not in names and not any(
        m.startswith(n + "/") for m in names)]
    if unknown:
        raise QueryError(f"query {text!r}: no tensor {unknown[0]!r} in {handle.path}")
    all_rows = np.arange(len(handle), dtype=np.int64) if rows is None else np.asarray(
        rows, dtype=np.int64)
    columns = {}
    for name in names:
        tensor = handle.tensors[name]
        values = tensor[all_rows.tolist()] if len(all_rows) else None
        columns[name] = _column(tensor, values, len(all_rows), text)
    try:
        mask = np.asarray(_eval(tree, columns, len(all_rows)), dtype=bool)
    except DatasetError:
        raise
    except (TypeError, ValueError) as exc:
        raise QueryError(f"query {text!r}: {exc}; {_SUPPORTED}") from None
    if mask.shape == ():
        mask = np.full(len(all_rows), bool(mask))
    return DatasetView(handle, all_rows[mask], query=text)


def _column(tensor, values, n: int, text: str) -> np.ndarray:
    """One value per row: numbers for scalar tensors, names for class labels, str for text."""
    if n == 0:
        return np.zeros(0)
    htype = tensor.htype
    if htype == "class_label":
        names = tensor.meta.class_names or []
        out = np.empty(n, dtype=object)
        for i, ids in enumerate(values.numpy(aslist=True)):
            ids = np.asarray(ids).reshape(-1)
            if len(ids) != 1:
                raise QueryError(f"query {text!r}: tensor {tensor.name!r} row has "
                                 f"{len(ids)} labels; only single labels are supported")
            label = int(ids[0])
            out[i] = names[label] if label < len(names) else label
        return out
    if htype == "text":
        out = np.empty(n, dtype=object)
        out[:] = values.data()["value"]
        return out
    data = values.numpy(aslist=True)
    out = np.empty(n, dtype=object)
    for i, value in enumerate(data):
        array = np.asarray(value)
        if array.size != 1:
            raise QueryError(f"query {text!r}: tensor {tensor.name!r} is not scalar "
                             f"(a row of shape {array.shape}); {_SUPPORTED}")
        out[i] = array.reshape(()).item()
    return out


def _eval(node, columns: dict, n: int) -> Any:
    if isinstance(node, ast.BoolOp):
        parts = [np.asarray(_eval(v, columns, n), dtype=bool) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = parts[0]
        for part in parts[1:]:
            result = combine(result, part)
        return result
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, columns, n)
        if isinstance(node.op, ast.Not):
            return np.logical_not(np.asarray(value, dtype=bool))
        return -value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, columns, n)
        result = np.ones(n, dtype=bool)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, columns, n)
            if isinstance(op, (ast.In, ast.NotIn)):
                allowed = set(right if isinstance(right, (list, tuple)) else [right])
                hit = np.array([v in allowed for v in np.asarray(left, dtype=object)],
                               dtype=bool)
                step = hit if isinstance(op, ast.In) else ~hit
            else:
                step = np.array(
                    [_safe(_COMPARE[type(op)], a, right) for a in np.asarray(left, dtype=object)],
                    dtype=bool,
                )
            result &= step
            left = right
        return result
    if isinstance(node, (ast.Name, ast.Attribute)):
        return columns[_dotted(node)]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, columns, n) for e in node.elts]
    raise QueryError(f"{type(node).__name__} is not supported; {_SUPPORTED}")


def _safe(compare, a, b) -> bool:
    try:
        return bool(compare(a, b))
    except TypeError:  # a name compared with a number, say: not equal, not ordered
        return compare is operator.ne
