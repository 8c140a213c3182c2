"""Config dataclasses <-> JSON: strict parsing with errors that name the field, and JSON Schema.

The dataclasses are the single source of truth: `from_dict` checks a JSON value against their
type hints (so a typo or a wrong type fails with "stages[2].lr: expected a number"), and
`json_schema` generates the schema the VS Code extension validates `*.moelab.json` files with.
A field's help text comes from `field(metadata={"help": ...})`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from moelab.errors import ConfigError
from moelab.io.json_file import read_json

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from parsed JSON, or raise ConfigError naming the field at fault."""
    return _convert(cls, data, where)


def load_file(cls: type[T], path: Path) -> T:
    """A config dataclass from a JSON file, validated (its `validate()`); errors name the file."""
    raw = read_json(path, ConfigError)
    try:
        obj = from_dict(cls, raw)
        obj.validate()  # type: ignore[attr-defined]
    except ConfigError as e:
        raise ConfigError(f"{path.name}: {e}") from None
    return obj


def beside(base: Path, p: str) -> str:
    """`p` as written in a config file: relative paths are relative to the file, as users of VS Code
    expect; `~` is expanded."""
    if not p:
        return p
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else base / q)


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _name(where: str) -> str:
    return where or "(top level)"


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) < 40 else "a string"
    if isinstance(v, list):
        return "a list"
    return "an object"


def _convert(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return v
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, v, where)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _convert(a, v, where)
            except ConfigError as e:
                errors.append(e)
        if len(non_none) == 1:
            raise errors[0]
        raise ConfigError(
            f"{_name(where)}: expected {' or '.join(_expected(a) for a in non_none)}, got {_describe(v)}"
        )
    if origin is Literal:
        allowed = typing.get_args(tp)
        if v not in allowed:
            raise ConfigError(
                f"{_name(where)}: expected one of {', '.join(repr(a) for a in allowed)}, got {_describe(v)}"
            )
        return v
    if origin is list:
        if not isinstance(v, list):
            raise ConfigError(f"{_name(where)}: expected a list, got {_describe(v)}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{_name(where)}: expected an object, got {_describe(v)}")
        _, val = typing.get_args(tp) or (str, Any)
        return {k: _convert(val, x, f"{where}.{k}" if where else k) for k, x in v.items()}
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{_name(where)}: expected true or false, got {_describe(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            raise ConfigError(f"{_name(where)}: expected an integer, got {_describe(v)}")
        return int(v)
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{_name(where)}: expected a number, got {_describe(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{_name(where)}: expected a string, got {_describe(v)}")
        return v
    raise TypeError(f"jsoncfg: unsupported type {tp!r} at {where}")


def _expected(tp: Any) -> str:
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "an object"
    if typing.get_origin(tp) is list:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _dataclass(cls: Any, v: Any, where: str) -> Any:
    if not isinstance(v, dict):
        raise ConfigError(f"{_name(where)}: expected an object, got {_describe(v)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    for k in v:
        if k not in fields and k != "$schema":
            close = difflib.get_close_matches(k, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{prefix}{k}: unknown field{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in v:
            kwargs[name] = _convert(hints[name], v[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{name}: missing (required)")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{_name(where)}: {e}") from None


# ---- JSON Schema ----------------------------------------------------------------------------------


def json_schema(cls: type, title: str, description: str = "") -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _schema_of_dataclass(cls, defs)
    root = {"$schema": "http://json-schema.org/draft-07/schema#", "title": title, **root}
    if description:
        root["description"] = description
    # "$schema" may appear in a config file so editors find the schema.
    root["properties"] = {"$schema": {"type": "string"}, **root["properties"]}
    if defs:
        root["definitions"] = defs
    return root


def _schema_of_dataclass(cls: Any, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        s = _schema(hints[f.name], defs)
        help_text = f.metadata.get("help")
        if help_text:
            s = {**s, "description": help_text}
        default = _default(f)
        if default is not dataclasses.MISSING:
            s = {**s, "default": default}
        else:
            required.append(f.name)
        props[f.name] = s
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    doc = (cls.__doc__ or "").strip()
    if doc and not doc.startswith(f"{cls.__name__}("):
        out["description"] = " ".join(doc.split())
    if required:
        out["required"] = required
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return dataclasses.MISSING
    return to_dict(value)


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder first: breaks recursion
            defs[name] = _schema_of_dataclass(tp, defs)
        return {"$ref": f"#/definitions/{name}"}
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        options = [_schema(a, defs) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return {"type": "array", "items": _schema(item, defs)}
    if origin is dict:
        _, val = typing.get_args(tp) or (str, Any)
        return {"type": "object", "additionalProperties": _schema(val, defs)}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"jsoncfg: unsupported type {tp!r}")
