"""Settings declared as the fields of a msgspec Struct: what each field says, read and checked.

:mod:`app.settings` declares the fields; this reads them (with :mod:`msgspec.inspect`): the
variable (the field's encoded name), the default, the type with its ``msgspec.Meta`` bounds, and
the phrase an error and the docs' tables use for what is allowed. A string from the environment is
converted with ``msgspec.convert(..., strict=False)``; a value given in Python is checked strictly.
Either way a value outside its declaration is a :class:`~app.errors.StartupError` naming the
variable, and a :data:`Secret`'s value is never part of it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final

import msgspec
import msgspec.inspect as mi
from msgspec import Meta

from app.errors import StartupError

Text = Annotated[str, Meta(min_length=1)]
"""A non-empty string (surrounding whitespace is dropped when read from the environment)."""
Secret = Annotated[str, Meta(min_length=16, pattern=r"^[!-~]+$", extra={"secret": True})]
"""A token: printable ASCII without whitespace, taken as given, never shown in a repr or error."""
Exported: Final = {"exported": True}
"""``Meta(extra=Exported)``: a library's own variable, written back for it at startup."""

# Read as false/true besides msgspec's own 0/1/false/true (any case).
_FLAG_WORDS: Final = {"no": "false", "off": "false", "yes": "true", "on": "true"}


@dataclass(frozen=True)
class Declared:
    """One setting as its field declares it, for checks, messages and the docs' tables."""

    name: str
    env: str
    type: Any
    default: Any
    kind: str
    allowed: str
    secret: bool
    exported: bool

    def problem(self, value: object) -> str:
        if self.secret:  # never echo the value
            return f"setting {self.env} must be {self.allowed}"
        return f"setting {self.env} must be {self.allowed}, got {value!r}"


@functools.cache
def fields(cls: type[msgspec.Struct]) -> tuple[Declared, ...]:
    """``cls``'s fields in declaration order."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    pairs = zip(msgspec.structs.fields(cls), info.fields, strict=True)
    return tuple(_declared(field, shape.type) for field, shape in pairs)


def check(instance: msgspec.Struct) -> None:
    """Every field of ``instance`` within its declaration (strictly: no strings for numbers)."""
    for field in fields(type(instance)):
        value = getattr(instance, field.name)
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError:
            raise StartupError(field.problem(value)) from None


def read(cls: type[msgspec.Struct], environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields of ``cls`` set in ``environ``, converted from their strings; unset or empty
    variables are left out (the field's default applies)."""
    values: dict[str, Any] = {}
    for field in fields(cls):
        raw = environ.get(field.env)
        text = (raw if field.secret else raw.strip()) if raw is not None else ""
        if not text:
            continue
        if field.kind == "bool":
            text = _FLAG_WORDS.get(text.lower(), text)
        try:
            values[field.name] = msgspec.convert(text, field.type, strict=False)
        except msgspec.ValidationError:
            raise StartupError(field.problem(raw)) from None
    return values


def shown(instance: msgspec.Struct) -> Iterator[tuple[str, str]]:
    """``(field, repr)`` pairs for a repr, a secret's value masked."""
    for field in fields(type(instance)):
        value = getattr(instance, field.name)
        yield field.name, "'***'" if field.secret and value is not None else repr(value)


def _declared(field: msgspec.structs.FieldInfo, shape: mi.Type) -> Declared:
    if isinstance(shape, mi.UnionType):  # ``X | None``: None means unset
        shape = next(t for t in shape.types if not isinstance(t, mi.NoneType))
    extra: dict[str, Any] = {}
    if isinstance(shape, mi.Metadata):
        extra, shape = shape.extra or {}, shape.type
    secret = bool(extra.get("secret"))
    if isinstance(shape, mi.BoolType):
        kind, allowed = "bool", "one of true/false/1/0/yes/no/on/off"
    elif isinstance(shape, mi.IntType | mi.FloatType):
        kind = "int" if isinstance(shape, mi.IntType) else "float"
        allowed = ("an integer" if kind == "int" else "a number") + _range(shape.ge, shape.le)
    elif isinstance(shape, mi.StrType) and secret:
        kind = "str"
        allowed = f"at least {shape.min_length} printable ASCII characters without whitespace"
    elif isinstance(shape, mi.StrType):
        kind, allowed = "str", "a non-empty string" if shape.min_length else "a string"
    else:
        raise TypeError(f"setting {field.encode_name}: no reader for {shape}")
    exported = bool(extra.get("exported"))
    return Declared(
        field.name, field.encode_name, field.type, field.default, kind, allowed, secret, exported
    )


def _range(low: float | None, high: float | None) -> str:
    def text(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if low is not None and high is not None:
        return f" in [{text(low)}, {text(high)}]"
    if low is not None:
        return f" >= {text(low)}"
    return f" <= {text(high)}" if high is not None else ""
