"""Importing ``skops.io`` without crawling all of scikit-learn at every start.

``skops.io`` builds its default trusted lists when it is imported:

* scikit-learn's estimator types: ``sklearn.utils.all_estimators`` imports every scikit-learn
  module and inspects every class in it (~0.45 s here);
* NumPy's and SciPy's ufuncs: for each one (they have no ``__module__``) skops searches every
  loaded module for it (~0.6 s here in ``churn-api serve``, with ~1,800 modules loaded).

Those lists depend only on the installed scikit-learn, skops, NumPy and SciPy, so
:func:`import_skops` keeps them in a JSON file (``SKOPS_TYPES_CACHE``) under those versions and,
on a later start, hands skops the same names without the searches (skops reads only each
estimator class's module and name). A missing, unreadable, stale or malformed file is rebuilt the
slow way; a file that cannot be written is left alone (the next start searches again).

The file decides which types skops trusts, so it needs the protection the registry has: only
names of the form ``sklearn.module.Name`` are taken as estimator types, and a kept ufunc name is
taken only if it names an object of that type in an already imported NumPy or SciPy module (else
that list is searched for again).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Final, NamedTuple

OFF: Final = "off"
_DEFAULT: Final = Path(".cache", "churn-api", "skops-sklearn-types.json")
_NAME: Final = re.compile(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
_UFUNC: Final = re.compile(r"(numpy|scipy)(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


class Kept(NamedTuple):
    """What the file keeps: scikit-learn's estimator type names, and the public ufunc names
    per ``"module oftype"`` that skops asked for."""

    estimators: list[str]
    ufuncs: dict[str, list[str]]


def cache_file(configured: str | None) -> Path | None:
    """The cache file ``SKOPS_TYPES_CACHE`` names (unset: under the home directory; ``off``:
    none)."""
    if configured == OFF:
        return None
    return Path(configured) if configured else Path.home() / _DEFAULT


def import_skops(cache: Path | None) -> ModuleType:
    """``skops.io``, imported with the trusted names from ``cache`` when it has them for the
    installed versions (and written there when it did not)."""
    if "skops.io" not in sys.modules and cache is not None:
        _import_with(cache)
    return importlib.import_module("skops.io")


def _import_with(cache: Path) -> None:
    key = _versions()
    kept = _read(cache, key)
    public = PublicTypeNames({} if kept is None else kept.ufuncs)
    import sklearn.utils

    crawl = sklearn.utils.all_estimators
    if kept is not None:
        names = kept.estimators
        sklearn.utils.all_estimators = lambda type_filter=None: [_named(name) for name in names]
    sys.meta_path.insert(0, public)
    try:
        from skops.io import _trusted_types  # its default lists, made from what is kept
    finally:
        sys.meta_path.remove(public)
        public.restore()
        sklearn.utils.all_estimators = crawl
    estimators = getattr(_trusted_types, "SKLEARN_ESTIMATOR_TYPE_NAMES", None)
    if (kept is None or public.searched) and isinstance(estimators, list):
        _write(cache, key, Kept(estimators, public.kept))


class PublicTypeNames(importlib.abc.MetaPathFinder):
    """Hands ``skops.io._trusted_types`` (as it is imported) a ``get_public_type_names`` that
    answers from the kept lists and searches, as skops does, only for a list not kept or not
    genuine (:func:`genuine`); the original goes back with :meth:`restore`."""

    def __init__(self, kept: dict[str, list[str]]) -> None:
        self.kept = dict(kept)
        self.searched = False
        self._utils: Any = None
        self._search: Any = None

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        utils: Any = sys.modules.get("skops.io._utils")  # imported by skops.io before the lists
        if name == "skops.io._trusted_types" and utils is not None and self._utils is None:
            self._utils, self._search = utils, utils.get_public_type_names
            utils.get_public_type_names = self.names

    def names(self, module: ModuleType, oftype: type) -> list[str]:
        key = f"{module.__name__} {oftype.__module__}.{oftype.__qualname__}"
        kept = self.kept.get(key)
        if kept is not None and genuine(kept, oftype):
            return list(kept)
        found: list[str] = self._search(module=module, oftype=oftype)
        self.kept[key], self.searched = found, True
        return found

    def restore(self) -> None:
        if self._utils is not None:
            self._utils.get_public_type_names = self._search


def genuine(names: list[str], oftype: type) -> bool:
    """Every name is a string ``numpy.…`` or ``scipy.…`` naming an object of ``oftype`` in a
    module already imported (a kept name never makes anything be imported)."""
    for name in names:
        if not isinstance(name, str) or not _UFUNC.match(name):
            return False
        module, _, attribute = name.rpartition(".")
        if module not in sys.modules:
            return False
        if not isinstance(getattr(sys.modules[module], attribute, None), oftype):
            return False
    return True


def _versions() -> str:
    installed = ("scikit-learn", "skops", "numpy", "scipy")
    return ", ".join(f"{name} {metadata.version(name)}" for name in installed)


def _named(name: str) -> tuple[str, type]:
    """A stand-in class with the module and name of ``name`` (all that skops reads of it)."""
    module, _, short = name.rpartition(".")
    return short, type(short, (), {"__module__": module})


def _read(cache: Path, key: str) -> Kept | None:
    try:
        kept: Any = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("versions") != key:
        return None
    names, ufuncs = kept.get("names"), kept.get("ufuncs")
    if not isinstance(names, list) or not names or not isinstance(ufuncs, dict):
        return None
    if not all(isinstance(name, str) and _NAME.match(name) for name in names):
        return None
    return Kept(names, {key: value for key, value in ufuncs.items() if isinstance(value, list)})


def _write(cache: Path, key: str, kept: Kept) -> None:
    if cache.exists() and not cache.is_file():
        return
    scratch = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"versions": key, "names": kept.estimators, "ufuncs": kept.ufuncs})
        scratch.write_text(text)
        os.replace(scratch, cache)
    except OSError:
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)
