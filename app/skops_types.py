"""Importing ``skops.io`` without crawling all of scikit-learn at every start.

``skops.io`` builds its default trusted list when it is imported: ``sklearn.utils.all_estimators``
imports every scikit-learn module and inspects every class in it (~0.45 s here, the largest part
of loading a skops champion in ``churn-api serve``). That list depends only on the installed
scikit-learn and skops, so :func:`import_skops` keeps it in a JSON file (``SKOPS_TYPES_CACHE``)
under both versions and, on a later start, hands skops the same names without the crawl (skops
reads only each class's module and name). A missing, unreadable, stale or malformed file is
rebuilt the slow way; a file that cannot be written is left alone (the next start crawls again).

The file decides which scikit-learn types skops trusts, so it needs the protection the registry
has: only names of the form ``sklearn.module.Name`` are taken from it.
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
from typing import Any, Final

OFF: Final = "off"
_DEFAULT: Final = Path(".cache", "churn-api", "skops-sklearn-types.json")
_NAME: Final = re.compile(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


def cache_file(configured: str | None) -> Path | None:
    """The cache file ``SKOPS_TYPES_CACHE`` names (unset: under the home directory; ``off``:
    none)."""
    if configured == OFF:
        return None
    return Path(configured) if configured else Path.home() / _DEFAULT


def import_skops(cache: Path | None) -> ModuleType:
    """``skops.io``, imported with the trusted scikit-learn names from ``cache`` when it has them
    for the installed versions (and written there when it did not)."""
    if "skops.io" not in sys.modules and cache is not None:
        _import_with(cache)
    return importlib.import_module("skops.io")


def _import_with(cache: Path) -> None:
    key = _versions()
    names = _read(cache, key)
    if names is None:
        from skops.io import _trusted_types  # the crawl, once

        _write(cache, key, getattr(_trusted_types, "SKLEARN_ESTIMATOR_TYPE_NAMES", None))
        return
    import sklearn.utils

    crawl = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda type_filter=None: [_named(name) for name in names]
    try:
        import skops.io  # noqa: F401 - its default list made from the names kept
    finally:
        sklearn.utils.all_estimators = crawl


def _versions() -> str:
    return f"scikit-learn {metadata.version('scikit-learn')}, skops {metadata.version('skops')}"


def _named(name: str) -> tuple[str, type]:
    """A stand-in class with the module and name of ``name`` (all that skops reads of it)."""
    module, _, short = name.rpartition(".")
    return short, type(short, (), {"__module__": module})


def _read(cache: Path, key: str) -> list[str] | None:
    try:
        kept: Any = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    names = kept.get("names") if isinstance(kept, dict) and kept.get("versions") == key else None
    if not isinstance(names, list) or not names:
        return None
    if not all(isinstance(name, str) and _NAME.match(name) for name in names):
        return None
    return names


def _write(cache: Path, key: str, names: Any) -> None:
    if not isinstance(names, list) or (cache.exists() and not cache.is_file()):
        return
    scratch = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps({"versions": key, "names": names}))
        os.replace(scratch, cache)
    except OSError:
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)
