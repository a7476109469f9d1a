"""Recipe loading: TOML + `extends` + `--set` overrides, strict validation, defaults, fingerprint."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from quant_cli.data.frequency import parse_frequency
from quant_cli.errors import DataError, RecipeError, clipped, one_of, shown, suggest
from quant_cli.recipe.checks import check_recipe
from quant_cli.schema import INT_MAXIMUM, SCHEMA, TOP_LEVEL_KEYS, Key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Recipe = dict[str, Any]

_KIND_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "int|str": "an integer or a string",
    "list[str]": "a list of strings",
    "list[int]": "a list of integers",
    "table": "a table",
}


# A check run on the loaded recipe with its origin ("recipe r.toml"); raises a QFactoryError. The
# model registry's capability check (quant_cli.models.registry.check_capabilities) is one: the
# callers that load a recipe to train pass it, since this package sits below the models.
RecipeCheck = Callable[[dict[str, Any], str], None]


def load_recipe(
    path: str | Path | None, overrides: list[str] | None = None, *, check: RecipeCheck | None = None
) -> Recipe:
    """Read a recipe (or start from defaults when `path` is None), apply overrides, validate.

    Every layer is validated on its own first, so an error names the layer that holds the bad
    key: the file itself, a parent reached through `extends`, or the `--set` item. Bare TOML
    dates become ISO strings. Relative path keys (`data.source`, `data.data_dir`,
    `run.runs_dir`) written in a file are read from that file's folder, like `extends`; those
    given with `--set` are read from the current directory. Either way they are stored absolute,
    so a run's `recipe.toml` means the same from anywhere. `check`, when given, runs last (e.g. the
    [model] section against the model's capability flags).
    """
    raw: dict[str, Any] = {}
    origin = "recipe defaults"
    if path is not None:
        origin = f"recipe {path}"
        raw = _read_with_extends(Path(path), seen=())
    for item in overrides or []:
        layer = _absolute_paths(_apply_override({}, item), SCHEMA, Path.cwd())
        _validate(layer, SCHEMA, f"--set {clipped(item)}", prefix="")
        _absolute_paths(_apply_override(raw, item), SCHEMA, Path.cwd())  # file paths are absolute already
    _validate(raw, SCHEMA, origin, prefix="")  # the merged recipe, as a final check
    recipe = with_defaults(raw)
    check_recipe(recipe, origin)
    if check is not None:
        check(recipe, origin)
    return recipe


def _read_toml(path: Path, extended_by: Path | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(_not_found(path, extended_by))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a leading BOM is not TOML
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path}: not UTF-8 text; save the recipe as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise RecipeError(
            f"recipe {path}: cannot be read ({exc.strerror or exc}); pass a readable .toml file"
        ) from None
    return _iso_dates(data)


def _iso_dates(obj: Any) -> Any:
    """Bare TOML dates and datetimes as ISO strings: the rest of the code sees one form."""
    if isinstance(obj, dict):
        return {k: _iso_dates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_iso_dates(v) for v in obj]
    if isinstance(obj, (dt.date, dt.time)):
        return obj.isoformat()
    return obj


def _absolute_paths(layer: dict[str, Any], schema: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Path keys of one layer made absolute against `folder` ('synthetic' and '~' paths kept)."""
    for key, value in layer.items():
        spec = schema.get(key)
        if isinstance(spec, dict) and isinstance(value, dict):
            _absolute_paths(value, spec, folder)
        elif isinstance(spec, Key) and spec.path and _is_relative_path(value):
            layer[key] = os.path.normpath(os.path.join(os.path.abspath(folder), value))
        elif isinstance(spec, Key) and spec.path and isinstance(value, list):  # a list of paths (features.plugins)
            layer[key] = [
                os.path.normpath(os.path.join(os.path.abspath(folder), v)) if _is_relative_path(v) else v for v in value
            ]
    return layer


def _is_relative_path(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value not in ("", "synthetic")
        and not value.startswith("~")
        and not os.path.isabs(value)
    )


def _not_found(path: Path, extended_by: Path | None) -> str:
    if extended_by is None:
        return f"recipe {path}: file not found; pass an existing .toml file to --recipe"
    return (
        f"recipe {extended_by}: 'extends' points to {path}, which is not a file; "
        f"fix the 'extends' path (it is relative to the folder of {extended_by.name})"
    )


def _read_with_extends(path: Path, seen: tuple[Path, ...], extended_by: Path | None = None) -> dict[str, Any]:
    """The file merged over its `extends` chain; each file's own keys are validated with its name."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        raise RecipeError(
            f"recipe {path}: a symlink loop (the link points back to itself); point the link at a real .toml file"
        ) from None
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise RecipeError(f"recipe {path}: 'extends' forms a cycle ({chain}); remove one of the links")
    data = _absolute_paths(_read_toml(path, extended_by), SCHEMA, path.parent)
    parent = data.pop("extends", None)
    _validate(data, SCHEMA, f"recipe {path}", prefix="")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"recipe {path}: 'extends' must be a string path, got {_type_name(parent)}")
    base = _read_with_extends(path.parent / parent, seen=(*seen, resolved), extended_by=path)
    return deep_merge(base, data)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value in `top` replaces the one in `base`."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override_value(text: str) -> Any:
    """TOML value syntax (`63`, `0.1`, `true`, `[5, 10]`, `"x"`); anything else is a string."""
    try:
        return _iso_dates(tomllib.loads(f"v = {text}")["v"])
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """Set the `--set KEY.PATH=VALUE` item in `raw` (in place) and return `raw`."""
    if "=" not in item:
        raise RecipeError(f"--set {shown(item)}: expected KEY.PATH=VALUE, e.g. --set model.params.num_leaves=63")
    dotted, _, text = item.partition("=")
    parts = [p.strip() for p in dotted.strip().split(".")]
    if not all(parts):
        raise RecipeError(
            f"--set {shown(item)}: empty key segment in {shown(dotted)}; write e.g. model.params.num_leaves=63"
        )
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {shown(item)}: {shown(part)} is a value, not a table")
    node[parts[-1]] = parse_override_value(text.strip())
    return raw


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _validate(raw: dict[str, Any], schema: dict[str, Any], origin: str, prefix: str) -> None:
    allowed = [*schema, *TOP_LEVEL_KEYS] if not prefix else list(schema)
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in allowed:
            where = f"[{prefix[:-1]}]" if prefix else "the top level"
            raise RecipeError(
                f"{origin}: unknown key '{clipped(dotted)}' in "
                f"{where}{suggest(clipped(key), allowed)}; allowed: {one_of(allowed)}"
            )
        _check_finite(value, origin, dotted)
        spec = schema.get(key)
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise RecipeError(f"{origin}: '{dotted}' must be a table ([{dotted}]), got {_type_name(value)}")
            _validate(value, spec, origin, prefix=f"{dotted}.")
        elif isinstance(spec, Key):
            _check_value(value, spec, origin, dotted)


def _check_value(value: Any, spec: Key, origin: str, dotted: str) -> None:
    def fail(what: str) -> RecipeError:
        return RecipeError(f"{origin}: '{dotted}' must be {what}, got {shown(value)}")

    if not _kind_matches(value, spec.kind):
        raise fail(_KIND_NAMES[spec.kind])
    for item in value if isinstance(value, list) else [value]:  # a list key with choices: each item is one of them
        if spec.choices is not None and item not in spec.choices:
            raise RecipeError(
                f"{origin}: '{dotted}' must be one of {one_of(spec.choices)}, got {shown(item)}"
                f"{suggest(clipped(item), spec.choices)}"
            )
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise fail(f"{spec.pattern_doc} (regex {spec.pattern})")
    if spec.duration:
        _check_durations(value, origin, dotted)
    if spec.timestamp and not _is_timestamp(value):
        raise fail("an ISO date or datetime such as 2016-01-01 or '2016-01-01T09:30:00'")
    for number in value if isinstance(value, list) else [value]:
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            _check_range(number, spec, fail)


def _check_range(number: float, spec: Key, fail: Any) -> None:
    maximum = spec.maximum if spec.maximum is not None else INT_MAXIMUM if isinstance(number, int) else None
    if spec.minimum is not None and number < spec.minimum:
        raise fail(f"at least {spec.minimum:g}")
    if maximum is not None and number > maximum:
        raise fail(f"at most {maximum}" if isinstance(maximum, int) else f"at most {maximum:g}")


def _check_finite(value: Any, origin: str, dotted: str) -> None:
    """NaN and infinity are refused everywhere, model.params included: they only make nonsense."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, origin, f"{dotted}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_finite(item, origin, dotted)
    elif isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{origin}: '{dotted}' must be a finite number, got {value!r}; nan and inf are not allowed")


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _check_durations(value: Any, origin: str, dotted: str) -> None:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and not _is_duration(item):
            raise RecipeError(
                f"{origin}: '{dotted}' must be a duration, a count and a unit s/m/h/d/w "
                f"such as '5d' or '12h', got {shown(item)}"
            )


def _is_duration(text: str) -> bool:
    try:
        parse_frequency(text)
    except DataError:
        return False
    return True


def _kind_matches(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "table":
        return isinstance(value, dict)
    if kind == "int|str":
        return _kind_matches(value, "int") or isinstance(value, str)
    item_kind = kind[5:-1]
    return isinstance(value, list) and all(_kind_matches(v, item_kind) for v in value)


def defaults(schema: dict[str, Any] = SCHEMA) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        out[key] = defaults(spec) if isinstance(spec, dict) else copy.deepcopy(spec.default)
    return out


def with_defaults(raw: dict[str, Any]) -> Recipe:
    merged = deep_merge(defaults(), raw)
    for key, value in merged.items():  # ints given where floats are expected become floats
        _coerce_floats(value, SCHEMA.get(key, {}))
    return merged


def _coerce_floats(section: Any, schema: dict[str, Any]) -> None:
    if not isinstance(section, dict):
        return
    for key, value in section.items():
        spec = schema.get(key)
        if isinstance(spec, dict):
            _coerce_floats(value, spec)
        elif isinstance(spec, Key) and spec.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            section[key] = float(value)


def to_toml(recipe: Recipe) -> str:
    """Resolved recipe as TOML; keys whose value is None are omitted (TOML has no null)."""
    return tomli_w.dumps(_drop_none(recipe))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj


def fingerprint(obj: Any, length: int = 16) -> str:
    """Stable short hash of any JSON-able object (key order does not matter)."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def defaults_toml() -> str:
    """The defaults as commented TOML, for `qfactory recipe defaults` (which adds each model's parameters)."""
    lines: list[str] = []
    _emit_section(lines, SCHEMA, prefix="")
    return "\n".join(lines) + "\n"


def _emit_section(lines: list[str], schema: dict[str, Any], prefix: str) -> None:
    for key, spec in schema.items():
        if isinstance(spec, dict):
            continue
        doc = spec.doc + (f" One of: {one_of(spec.choices)}." if spec.choices else "")
        lines.append(f"# {doc}")
        if spec.default is None:
            lines.append(f"# {key} =")
        elif spec.kind == "table":  # tomli_w would turn an empty dict into a [table] header
            lines.append(f"{key} = {{}}")
        else:
            lines.append(tomli_w.dumps({key: spec.default}).strip())
    for key, spec in schema.items():
        if isinstance(spec, dict):
            lines.append("")
            lines.append(f"[{prefix}{key}]")
            _emit_section(lines, spec, prefix=f"{prefix}{key}.")
