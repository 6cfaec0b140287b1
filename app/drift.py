"""Feature drift counters: which reference bin each scored row's features fall in.

When a model version is fetched, :func:`reference` reads its reference profile
(:mod:`app.profile`); once a process has checked it, :func:`exported` exports its training shares
as ``churn_feature_bin_reference_share`` and creates every ``churn_feature_bin_rows_total`` series
of the version at 0 (so Prometheus sees each bin start from zero, and ``rate`` counts the first
rows too). Every scored batch then goes through
:meth:`DriftTally.rows` (:func:`app.service.score`): on the event loop it only keeps a reference
to the rows; at most every :data:`DRAIN_ROWS` rows, and before each flush, the kept rows are binned
all at once (one ``np.searchsorted`` per feature, one ``np.bincount``) into per-bin counts, which
:meth:`DriftTally.flush` adds to the Prometheus counters with the other metrics
(:meth:`app.metrics.Tally.flush`, once a second). The request path never writes a metrics file.

The population stability index is computed by Prometheus from these two series
(``deploy/prometheus/rules.yml``). ``DRIFT_METRICS=false`` turns all of it off.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from prometheus_client import Counter, Gauge
from prometheus_client.utils import floatToGoString

from app.profile import Profile, read
from app.schemas import FEATURES

DRAIN_ROWS: Final = 4096

ROWS: Final = Counter(
    "churn_feature_bin_rows_total",
    "Scored rows by the reference bin (app/profile.py) each feature's value fell in, by version.",
    ["feature", "bin", "version"],
)
REFERENCE_SHARE: Final = Gauge(
    "churn_feature_bin_reference_share",
    "Share of the version's training rows in each bin of each feature (its reference profile).",
    ["feature", "bin", "version"],
    multiprocess_mode="max",  # a constant of the version: the same in every process
)
PROBABILITY_REFERENCE: Final = Gauge(
    "churn_probability_reference_share",
    "Share of the version's holdout rows with P(churn) <= le (cumulative, like churn_probability).",
    ["le", "version"],
    multiprocess_mode="max",
)


def reference(
    tracking_uri: str, name: str, version: str, run_id: str, *, enabled: bool
) -> Profile | None:
    """The reference profile of a version being fetched (:func:`app.registry.fetch`), if any.

    None when it has none (logged once, see :func:`app.profile.read`) or when not ``enabled``
    (``DRIFT_METRICS=false``).
    """
    if not enabled:
        return None
    return read(tracking_uri, run_id, f"{name} version {version}")


def exported(profile: Profile | None, version: str) -> Profile | None:
    """``profile``, its series exported in this process (when there is one).

    :func:`app.checks.check` calls it for the version it checked (startup, each worker and the
    hot-swap alike) and keeps the profile on the champion.
    """
    if profile is not None:
        export(profile, version)
    return profile


def export(profile: Profile, version: str) -> None:
    """The version's reference shares, and its bin counters created at 0."""
    for bins in profile.features:
        for index, share in enumerate(bins.shares):
            REFERENCE_SHARE.labels(bins.name, str(index), version).set(share)
            ROWS.labels(bins.name, str(index), version)
    cumulative = np.cumsum(profile.probability.shares)
    for bound, share in zip(profile.probability.bounds, cumulative, strict=True):
        PROBABILITY_REFERENCE.labels(_le(bound), version).set(min(float(share), 1.0))


class _Binner:
    """A profile's edges laid out for counting all features of a block of rows at once."""

    def __init__(self, profile: Profile) -> None:
        self.edges = [bins.edges for bins in profile.features]
        sizes = [len(edges) + 1 for edges in self.edges]
        self.offsets = np.cumsum([0, *sizes[:-1]])
        self.sizes = sizes

    def count(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Rows per bin, all features end to end: the counts of :func:`app.profile.bin_index`.

        A value is in bin ``i`` when ``edges[i-1] <= value < edges[i]``, so the rows in bin ``i``
        are those reaching edge ``i-1`` less those reaching edge ``i``. Counted with one
        comparison per edge (at most ~10 per feature), that is ~2x faster than a binary search
        per value (~280 µs against ~590 for 4096 rows on a slow machine).
        """
        columns = np.ascontiguousarray(rows.T)  # one copy; comparing strided columns costs more
        total = len(rows)
        counts = [
            -np.diff([total, *(np.count_nonzero(values >= edge) for edge in edges), 0])
            for values, edges in zip(columns, self.edges, strict=True)
        ]
        return np.concatenate(counts)


class DriftTally:
    """Per-worker bin counts kept on the event loop, added to the Prometheus counters by flush()."""

    def __init__(self) -> None:
        self._profile: Profile | None = None
        self._version = ""
        self._pending: list[np.ndarray[Any, Any]] = []
        self._pending_rows = 0
        self._binners: dict[str, tuple[Profile, _Binner]] = {}
        self._counts: dict[str, tuple[_Binner, np.ndarray[Any, Any]]] = {}

    def rows(self, profile: Profile | None, version: str, rows: np.ndarray[Any, Any]) -> None:
        """Count one scored request's rows (float64, contract column order) for the version."""
        if profile is None:
            return
        if profile is not self._profile or version != self._version:
            self._drain()
            self._profile, self._version = profile, version
        self._pending.append(rows)
        self._pending_rows += len(rows)
        if self._pending_rows >= DRAIN_ROWS:
            self._drain()

    def _drain(self) -> None:
        """Bin the rows kept so far, all at once, into the counts of their version."""
        profile, version = self._profile, self._version
        if not self._pending or profile is None:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        block = pending[0] if len(pending) == 1 else np.concatenate(pending)
        cached = self._binners.get(version)
        if cached is None or cached[0] is not profile:
            cached = self._binners[version] = (profile, _Binner(profile))
        binner = cached[1]
        held = self._counts.get(version)
        if held is not None and held[0] is binner:
            held[1][:] += binner.count(block)
            return
        self._flush_version(version)  # counted with another profile of the same version
        self._counts[version] = (binner, binner.count(block))

    def flush(self) -> None:
        """Add everything counted since the last flush to the Prometheus counters."""
        self._drain()
        for version in list(self._counts):
            self._flush_version(version)

    def _flush_version(self, version: str) -> None:
        held = self._counts.pop(version, None)
        if held is None:
            return
        binner, counts = held
        for name, offset, size in zip(FEATURES, binner.offsets, binner.sizes, strict=True):
            for index in np.flatnonzero(counts[offset : offset + size]).tolist():
                ROWS.labels(name, str(index), version).inc(int(counts[offset + index]))


def _le(bound: float) -> str:
    """A bound written as prometheus_client writes a histogram's ``le`` (``0.05``, ``1.0``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


DRIFT: Final = DriftTally()
"""The worker's drift tally (flushed by :data:`app.metrics.TALLY`)."""
