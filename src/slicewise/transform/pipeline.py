"""`compute` and `compose`: Deep Lake 3's decorator and pipeline, bound arguments and all.

    @sw.compute
    def resize(item, sample_out, size):            # item, sample_out, then bound arguments
        sample_out.images.append(...)

    step = resize(size=(250, 250))                 # binds arguments, runs nothing
    step.eval(files, ds, num_workers=2)            # runs it (see transform/run.py)
    sw.compose([load(), resize(size=(250, 250))]).eval(files, ds)

A stage is plain data (function, args, kwargs, name), so a pipeline travels to process
workers with cloudpickle: lambdas, closures and functions from `__main__` work.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from slicewise.transform.errors import ComposeError
from slicewise.transform.sample_out import SampleOut

if TYPE_CHECKING:
    from slicewise.transform.report import EvalReport


class ComputeFunction:
    """A compute function with its extra arguments bound: `fn(item, sample_out, *args,
    **kwargs)`. Its return value is ignored (Deep Lake 3's functions return sample_out)."""

    def __init__(self, func: Callable[..., Any], args: tuple, kwargs: dict, name: str | None):
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.name = name or getattr(func, "__qualname__", None) or repr(func)

    def run(self, sample_in: Any, sample_out: SampleOut) -> None:
        self.func(sample_in, sample_out, *self.args, **self.kwargs)

    def eval(
        self,
        data_in: Any,
        ds_out: Any = None,
        num_workers: int = 0,
        scheduler: str = "threaded",
        progressbar: bool = True,
        skip_ok: bool = False,
        check_lengths: bool = True,
        pad_data_in: bool = False,
        read_only_ok: bool = False,
        cache_size: int = 16,
        checkpoint_interval: int = 0,
        ignore_errors: bool = False,
        *,
        resume: bool = True,
        report: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> EvalReport:
        """Run this function over `data_in` into `ds_out` and commit one new version;
        the parameters (positional too, in Deep Lake 3's order) are `Pipeline.eval`'s.

        >>> @sw.compute
        ... def double(x, sample_out):
        ...     sample_out.append({"values": np.float32(2 * x)})
        >>> double().eval([1, 2, 3], ds, num_workers=2)   # doctest: +SKIP
        """
        return Pipeline([self]).eval(
            data_in, ds_out, num_workers, scheduler, progressbar, skip_ok, check_lengths,
            pad_data_in, read_only_ok, cache_size, checkpoint_interval, ignore_errors,
            resume=resume, report=report, **kwargs,
        )

    def __repr__(self) -> str:
        return f"<compute function {self.name}>"


class Pipeline:
    """Compute functions run one after the other: stage k+1 runs once per row that stage
    k produced, and the last stage's rows go to the dataset."""

    def __init__(self, functions: Sequence[ComputeFunction]):
        self.functions = list(functions)

    def __len__(self) -> int:
        return len(self.functions)

    @property
    def names(self) -> list[str]:
        return [function.name for function in self.functions]

    def run_one(self, item: Any, output_tensors: frozenset[str] | None) -> SampleOut:
        """All stages on one input; returns the last stage's buffer."""
        functions = self.functions
        if len(functions) == 1:  # the common case: no intermediate buffers
            sample_out = SampleOut(output_tensors)
            functions[0].run(item, sample_out)
            return sample_out
        inputs: Any = (item,)
        last = len(functions) - 1
        sample_out = SampleOut(output_tensors)
        for position, function in enumerate(functions):
            sample_out = SampleOut(output_tensors if position == last else None)
            for sample_in in inputs:
                function.run(sample_in, sample_out)
            inputs = sample_out
        return sample_out

    def eval(
        self,
        data_in: Any,
        ds_out: Any = None,
        num_workers: int = 0,
        scheduler: str = "threaded",
        progressbar: bool = True,
        skip_ok: bool = False,
        check_lengths: bool = True,
        pad_data_in: bool = False,
        read_only_ok: bool = False,
        cache_size: int = 16,
        checkpoint_interval: int = 0,
        ignore_errors: bool = False,
        *,
        resume: bool = True,
        report: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> EvalReport:
        """Run the pipeline over every item of `data_in`, appending the rows to `ds_out`,
        and commit one new version. `ds_out=None`: in place, as in Deep Lake 3 (`data_in`
        must then be a Dataset): each tensor the pipeline writes holds only the new rows
        afterwards (inplace.py). Returns an `EvalReport`. Deep Lake 3's parameters and meaning;
        see docs/guides/transform.md for what slicewise adds (resume, reports).

        Args:
            data_in: a sequence, iterable, Dataset or Tensor of inputs.
            ds_out: the output Dataset (None: transform `data_in` in place).
            num_workers: workers (0: run in this thread).
            scheduler: "threaded", "processed", "serial", "dask" or "ray".
            progressbar: show a progress bar.
            skip_ok: let the function leave tensors out of a row.
            check_lengths: refuse an output whose tensors have different lengths.
            pad_data_in: read a Dataset input padded to its longest tensor.
            read_only_ok: allow a read-only output (nothing is written to it then).
            cache_size: Deep Lake 3's cache (MB); unused.
            checkpoint_interval: commit progress every N inputs (resumable).
            ignore_errors: skip inputs that fail (listed in the report).
            resume: resume an interrupted run of the same eval (False: start over).
            report: a path ending in .html or .png: also write the run's timeline there
                (every eval records it: `EvalReport.timeline`).

        Raises:
            TransformError: an input failed (its index and the worker's traceback
                attached); subclasses for bad inputs, outputs, schedulers.
            AllSamplesSkippedError: every input failed under ignore_errors=True.
            EvalStorageError: the dataset's storage refused a write (a full disk).

        >>> fn().eval(files, ds, num_workers=2)         # doctest: +SKIP
        """
        from slicewise.transform.run import run_eval

        return run_eval(
            self,
            data_in,
            ds_out,
            num_workers=num_workers,
            scheduler=scheduler,
            progressbar=progressbar,
            skip_ok=skip_ok,
            check_lengths=check_lengths,
            pad_data_in=pad_data_in,
            read_only_ok=read_only_ok,
            cache_size=cache_size,
            checkpoint_interval=checkpoint_interval,
            ignore_errors=ignore_errors,
            resume=resume,
            report=report,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"<pipeline {' -> '.join(self.names)}>"


def compute(fn: Callable[..., Any] | None = None,
            name: str | None = None) -> Callable[..., Any]:
    """Decorator: turn `fn(item, sample_out, *args, **kwargs)` into a compute function.

    `@sw.compute` (or `@sw.compute(name="...")`) makes a factory; calling it binds the
    extra arguments, runs nothing, and returns a `ComputeFunction` with `.eval(...)`.

    Args:
        fn: the function; None when used as `@sw.compute(name=...)`.
        name: the stage's name in reports and checkpoints (default: the qualname).

    Returns:
        The factory (`fn`'s parameters after item and sample_out), or, with `fn=None`,
        a decorator that makes one.

    Raises:
        TypeError: what is decorated is not callable.

    Example:
        >>> @sw.compute
        ... def scale(x, sample_out, factor):
        ...     sample_out.append({"values": np.float32(x * factor)})
        >>> scale(factor=2)
        <compute function scale>
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., ComputeFunction]:
        if not callable(function):
            raise TypeError(f"sw.compute decorates a function, got {function!r}")

        def bind(*args: Any, **kwargs: Any) -> ComputeFunction:
            return ComputeFunction(function, args, kwargs, name)

        bind.__name__ = getattr(function, "__name__", "compute_function")
        bind.__qualname__ = getattr(function, "__qualname__", bind.__name__)
        bind.__doc__ = function.__doc__
        bind.__wrapped__ = function  # type: ignore[attr-defined]
        bind.__signature__ = _bound_signature(function)  # type: ignore[attr-defined]
        return bind

    if fn is None:
        return decorate
    return decorate(fn)


def _bound_signature(function: Callable[..., Any]) -> inspect.Signature:
    """help(f) of a compute factory: the user's parameters after (item, sample_out)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return inspect.Signature(
            [inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
             inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)],
            return_annotation=ComputeFunction)
    params = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    skip = 0
    while skip < 2 and skip < len(params) and params[skip].kind in positional:
        skip += 1
    return signature.replace(parameters=params[skip:], return_annotation=ComputeFunction)


def compose(functions: Sequence[ComputeFunction]) -> Pipeline:
    """One pipeline of bound compute functions; g runs once per row that f produced.

    Args:
        functions: bound compute functions (`f()`, not `f`), run in this order.

    Returns:
        A `Pipeline` with `.eval(data_in, ds_out, ...)`.

    Raises:
        TransformError: an empty list, a pipeline, or something that is not a bound
            compute function (a ComposeError).

    Example:
        >>> sw.compose([load(), resize(size=(250, 250))]).eval(files, ds)  # doctest: +SKIP
    """
    functions = list(functions)
    if not functions:
        raise ComposeError("compose() needs at least one compute function")
    for position, function in enumerate(functions):
        if isinstance(function, Pipeline):
            raise ComposeError(
                f"compose() item {position} is a pipeline; pass its functions instead"
            )
        if not isinstance(function, ComputeFunction):
            hint = (
                " (did you forget the parentheses? compose([f()]) not compose([f]))"
                if callable(function)
                else ""
            )
            raise ComposeError(
                f"compose() item {position} is {function!r}, not a bound compute function"
                + hint
            )
    return Pipeline(functions)
