"""Factor plugins (issue 23 §2, docs/factors.md): a user's Python file of factor functions.

`[features] plugins = ["factors.py"]` (relative to the recipe file) names files whose top-level
functions are features: every function defined in the file (not imported) whose name does not start
with `_` takes one symbol's bars — a polars DataFrame sorted by ts with `symbol`, `ts` and the input
columns the function declares (`@factor(inputs=...)`, default `close`) — and returns a Series or a 1-D
numpy array with one value per bar. The feature is named after the function; `@factor(window=N)`
declares its lookback.

A plugin is user code. It runs only when a recipe the user runs names it, or from a run or bundle
that carries its source (a bundle only with `--trust-plugins`, serve/documents.py). Each source is
identified by its SHA-256, which joins the feature-store fingerprint, and is executed once per
process. A plugin family is a kernel family whose compute (`PluginFactor`) cuts the panel into
symbols and calls the function on each: it pickles as its source, so worker processes rebuild it.
Before a plugin feature is built, features/plugin_check.py proves it causal on the dataset's bars.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quant_cli.errors import RecipeError, RunError, clipped
from quant_cli.features.registry import REGISTRY, Family
from quant_cli.plugin_api import ATTRIBUTE, FactorSpec

SECTION_KEY = "plugins"
_RESERVED = ("symbol", "ts")


@dataclass(frozen=True)
class PluginSource:
    """One plugin file's text, as a recipe read it or a run/bundle carries it."""

    file: str  # the file's name, for messages
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"plugin {self.file}"

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256, "source": self.source}

    @classmethod
    def from_json(cls, data: Any, where: str) -> PluginSource:
        """A carried source; its text must hash to the SHA-256 recorded beside it."""
        if not (isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("file", "sha256", "source"))):
            raise RunError(f"{where}: plugins entries must be objects with file, sha256 and source strings")
        loaded = cls(data["file"], data["source"])
        if loaded.sha256 != data["sha256"]:
            raise RunError(f"{where}: the source of plugin {clipped(data['file'], 80)} does not match its sha256")
        return loaded


@dataclass(frozen=True)
class PluginFactor:
    """A plugin function as a kernel family's compute: `fn(panel)` → float64 array over every symbol."""

    plugin: PluginSource
    name: str
    inputs: tuple[str, ...]

    def __call__(self, panel: Any) -> np.ndarray:
        fn = _loaded(self.plugin).functions[self.name][0]
        columns = ["symbol", "ts", *self.inputs]
        out = np.full(panel.rows, np.nan)
        offsets = panel.offsets
        for start, stop in zip(offsets[:-1], offsets[1:]):
            bars = panel.frame.slice(int(start), int(stop - start)).select(columns)
            out[start:stop] = self._values(fn, bars)
        return out

    def _values(self, fn: Callable[..., Any], bars: pl.DataFrame) -> np.ndarray:
        where = f"{self.plugin.label}: factor {self.name!r}"
        symbol = bars["symbol"][0]
        try:
            result = fn(bars)
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is one line naming it
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RecipeError(
                clipped(
                    f"{where} raised {type(exc).__name__} on the bars of {symbol} ({reason}); fix the function "
                    f"(it receives one symbol's bars with columns {', '.join(bars.columns)}; declare other "
                    "columns with @factor(inputs=...))",
                    600,
                )
            ) from None
        return _as_array(result, bars.height, f"{where} returned", symbol)


def _as_array(result: Any, rows: int, where: str, symbol: str) -> np.ndarray:
    fix = "return a polars Series or a 1-D numpy array of numbers, one per bar"
    if isinstance(result, pl.Series):
        if not (result.dtype.is_numeric() or result.dtype == pl.Boolean or result.dtype == pl.Null):
            raise RecipeError(f"{where} a Series of {result.dtype} for the bars of {symbol}; {fix}")
        values = result.cast(pl.Float64).to_numpy()
    elif isinstance(result, np.ndarray) and result.ndim == 1 and result.dtype.kind in "biuf":
        values = result.astype(np.float64)
    else:
        kind = (
            f"a {result.ndim}-D {result.dtype} array"
            if isinstance(result, np.ndarray)
            else f"a {type(result).__name__}"
        )
        raise RecipeError(f"{where} {kind} for the bars of {symbol}; {fix}")
    if len(values) != rows:
        raise RecipeError(f"{where} {len(values)} values for {rows} bars of {symbol}; {fix}")
    return values


@dataclass
class _Module:
    families: list[Family]
    functions: dict[str, tuple[Callable[..., Any], FactorSpec]]


_LOADED: dict[str, _Module] = {}  # by source SHA-256: each source runs once per process


def _loaded(plugin: PluginSource) -> _Module:
    if plugin.sha256 not in _LOADED:
        functions = _factors(plugin, _execute(plugin))
        families = [_family(plugin, name, spec) for name, (_, spec) in functions.items()]
        _LOADED[plugin.sha256] = _Module(families, functions)
    return _LOADED[plugin.sha256]


def _execute(plugin: PluginSource) -> types.ModuleType:
    """The plugin's module, from its text (never imported by path: the carried text is what runs)."""
    name = f"qfactory_plugin_{plugin.sha256[:16]}"
    try:
        code = compile(plugin.source, plugin.file, "exec")
    except SyntaxError as exc:
        raise RecipeError(f"{plugin.label}: syntax error at line {exc.lineno}: {exc.msg}; fix the file") from None
    module = types.ModuleType(name)
    module.__file__ = plugin.file
    sys.modules[name] = module  # dataclasses and pickling inside the plugin look themselves up here
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the user's own plugin is the point
    except Exception as exc:  # noqa: BLE001 - any failure at import is one line naming the file
        del sys.modules[name]
        line = _line_of(exc, plugin.file)
        raise RecipeError(
            clipped(f"{plugin.label}: running it raised {type(exc).__name__}: {exc}{line}; fix the file", 600)
        ) from None
    return module


def _line_of(exc: BaseException, file: str) -> str:
    frames = [f for f in inspect.getinnerframes(exc.__traceback__, context=0) if f.filename == file]
    return f" (line {frames[-1].lineno})" if frames else ""


def _factors(plugin: PluginSource, module: types.ModuleType) -> dict[str, tuple[Callable[..., Any], FactorSpec]]:
    """The module's factor functions in definition order, each with its declared spec (checked)."""
    found = {
        name: value
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
    }
    if not found:
        raise RecipeError(
            f"{plugin.label} defines no factor: add a top-level function (name not starting with '_') "
            "that takes one symbol's bars and returns a Series"
        )
    out = {}
    for name, fn in found.items():
        _check_signature(plugin, name, fn)
        out[name] = (fn, _spec(plugin, name, getattr(fn, ATTRIBUTE, FactorSpec())))
    return out


def _check_signature(plugin: PluginSource, name: str, fn: Callable[..., Any]) -> None:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in kinds]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    required = [p for p in params if p.default is inspect.Parameter.empty and p.kind not in variadic]
    if not positional or len(required) > 1:
        raise RecipeError(
            f"{plugin.label}: factor {name!r} takes {len(required)} required argument(s); a factor takes "
            "exactly one, the symbol's bars (give any other argument a default, or start the name with '_')"
        )


def _spec(plugin: PluginSource, name: str, spec: Any) -> FactorSpec:
    where = f"{plugin.label}: factor {name!r}: @factor"
    window = getattr(spec, "window", None)
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 100_000:
        raise RecipeError(f"{where}(window={window!r}): window is the bars of history it reads, 1 to 100000")
    inputs = getattr(spec, "inputs", ())
    if not inputs or not all(isinstance(c, str) and c and c not in _RESERVED for c in inputs):
        raise RecipeError(f"{where}(inputs={inputs!r}): inputs are the bar columns it reads, e.g. ('close', 'volume')")
    return FactorSpec(window, tuple(dict.fromkeys(inputs)))


def _family(plugin: PluginSource, name: str, spec: FactorSpec) -> Family:
    return Family(
        pattern=name,
        inputs=spec.inputs,
        tags=(),  # no tag: `include = ["<tag>"]` must not pick up factors another recipe activated
        description=f"factor plugin {plugin.file}",
        build=None,
        compute=PluginFactor(plugin, name, spec.inputs),
        lookback=spec.window,
        plugin=f"{plugin.file}:{plugin.sha256}",
    )


# ---- activation ------------------------------------------------------------------------------------


def activate(plugins: Sequence[PluginSource]) -> list[str]:
    """Register the plugins' factors (in file order) in the registry; returns their feature names.

    A factor may replace another plugin's factor of the same name (a newer file, another bundle),
    never a built-in feature, and two plugins activated together may not share a name."""
    families: list[Family] = []
    owners: dict[str, str] = {}
    for plugin in plugins:
        for family in _loaded(plugin).families:
            if family.pattern in owners and owners[family.pattern] != plugin.file:
                raise RecipeError(
                    f"{plugin.label}: factor {family.pattern!r} is also defined in {owners[family.pattern]}; "
                    "rename one of them"
                )
            owners[family.pattern] = plugin.file
            _check_clash(plugin, family.pattern)
            families.append(family)
    for family in families:  # re-inserted, so columns follow the plugins' order in any process
        REGISTRY.families.pop(family.pattern, None)
        REGISTRY.families[family.pattern] = family
    return [f.pattern for f in families]


def _check_clash(plugin: PluginSource, name: str) -> None:
    builtin = next(
        (
            f
            for f in REGISTRY.families.values()
            if f.plugin is None
            and (
                f.pattern == name
                or f.match_window(name) is not None
                or f.match_timeframe(name) is not None
                or (f.generic and name.startswith(f.pattern.partition("{feature}")[0]))
            )
        ),
        None,
    )
    if builtin is not None or name in _RESERVED:
        what = f"the built-in feature {builtin.pattern!r}" if builtin is not None else f"the key column {name!r}"
        raise RecipeError(f"{plugin.label}: factor {name!r} clashes with {what}; rename the function")


def read_plugins(section: Mapping[str, Any]) -> list[PluginSource]:
    """The files `features.plugins` names (absolute by now: recipe/load.py resolves them)."""
    out = []
    for path in section.get(SECTION_KEY) or []:
        file = Path(path).expanduser()
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError(
                f"features.plugins: {file.name} not found at {file}; plugin paths are relative to the recipe file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(
                f"features.plugins: {file} cannot be read as UTF-8 text ({type(exc).__name__}); pass a .py file"
            ) from None
        out.append(PluginSource(file.name, text))
    return out


def recipe_selection(section: Mapping[str, Any]) -> tuple[Any, list[PluginSource]]:
    """The section's resolved selection with every plugin factor included, and the plugins read."""
    plugins = read_plugins(section)
    names = activate(plugins)
    include = [*section.get("include", []), *(n for n in names if n not in section.get("include", []))]
    return REGISTRY.resolve({**section, "include": include}), plugins


def carried(names: Sequence[str]) -> list[PluginSource]:
    """The plugin sources the features `names` need, in order, for a pipeline (and so a bundle) to carry."""
    found: dict[str, PluginSource] = {}
    for name in names:
        family = REGISTRY.families.get(name)
        compute = family.compute if family is not None else None
        if isinstance(compute, PluginFactor):
            found.setdefault(compute.plugin.sha256, compute.plugin)
    return list(found.values())


def fingerprint_part(plugins: Sequence[PluginSource]) -> dict[str, Any]:
    """What the feature-store fingerprint adds for plugins (nothing without any)."""
    return {"plugins": [[p.file, p.sha256] for p in plugins]} if plugins else {}
