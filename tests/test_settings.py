"""Settings come from the environment once; a bad value stops startup naming the variable."""

from __future__ import annotations

import ast
import inspect
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import app.settings as settings_module
from app.cli import main
from app.declared import Declared
from app.errors import StartupError
from app.settings import RETIRED, Settings, declared, load

SECRET = "s3cr3t-t0ken-abcdef"


def test_defaults_are_the_contract_defaults() -> None:
    settings = Settings.from_environ({})

    assert settings.tracking_uri == "sqlite:///mlflow.db"
    assert settings.model_name == "churn-classifier"
    assert settings.model_alias == "champion"
    assert settings.decision_threshold == 0.5
    assert settings.max_body_bytes == 1_048_576
    assert settings.access_log is True
    assert settings.model_poll_seconds == 30
    assert settings.admin_token is None
    assert settings.max_queued_rows == 4096
    assert settings.request_timeout_seconds == 10
    assert settings == Settings()


def test_values_are_read_from_the_given_environ() -> None:
    settings = Settings.from_environ(
        {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
            "MODEL_NAME": "other-model",
            "MODEL_ALIAS": "challenger",
            "DECISION_THRESHOLD": "0.3",
            "MAX_BODY_BYTES": "2048",
            "MICRO_BATCHING": "off",
            "WORKERS": "4",
            "ACCESS_LOG": "off",
            "MODEL_POLL_SECONDS": "0",
            "ADMIN_TOKEN": SECRET,
            "MAX_QUEUED_ROWS": "1024",
            "REQUEST_TIMEOUT_SECONDS": "2.5",
        }
    )

    assert settings == Settings(
        tracking_uri="http://127.0.0.1:5000",
        model_name="other-model",
        model_alias="challenger",
        decision_threshold=0.3,
        max_body_bytes=2048,
        micro_batching=False,
        workers=4,
        access_log=False,
        model_poll_seconds=0,
        admin_token=SECRET,
        max_queued_rows=1024,
        request_timeout_seconds=2.5,
    )
    assert (settings.access_log, settings.model_poll_seconds) == (False, 0)
    assert (settings.admin_token, settings.max_queued_rows) == (SECRET, 1024)
    assert settings.request_timeout_seconds == 2.5


@pytest.mark.parametrize("value", ["0", "1", "0.0", "1.0", " 0.25 "])
def test_threshold_bounds_are_inclusive(value: str) -> None:
    assert Settings.from_environ({"DECISION_THRESHOLD": value}).decision_threshold == float(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DECISION_THRESHOLD", "abc"),
        ("DECISION_THRESHOLD", "1.5"),
        ("DECISION_THRESHOLD", "-0.1"),
        ("DECISION_THRESHOLD", "nan"),
        ("DECISION_THRESHOLD", "inf"),
        ("DECISION_THRESHOLD", "50%"),
        ("MAX_BODY_BYTES", "abc"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "-1"),
        ("MAX_BODY_BYTES", "1.5"),
        ("MAX_BODY_BYTES", "1MiB"),
        ("MICRO_BATCHING", "maybe"),
        ("WORKERS", "0"),
        ("WORKERS", "two"),
        ("MAX_BATCH_ROWS", "0"),
        ("ACCESS_LOG", "maybe"),
        ("MODEL_POLL_SECONDS", "-1"),
        ("MODEL_POLL_SECONDS", "soon"),
        ("MAX_QUEUED_ROWS", "1023"),
        ("MAX_QUEUED_ROWS", "1e3"),
        ("REQUEST_TIMEOUT_SECONDS", "nan"),
        ("REQUEST_TIMEOUT_SECONDS", "4000"),
    ],
)
def test_malformed_or_out_of_range_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(StartupError, match=name) as raised:
        Settings.from_environ({name: value})

    assert value.strip() in str(raised.value)


@pytest.mark.parametrize("command", [["check"], ["serve", "--port", "1"]])
def test_cli_stops_with_one_line_naming_a_bad_setting(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DECISION_THRESHOLD", "2")

    assert main(command) != 0

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "DECISION_THRESHOLD" in err[0]


# --- however a Settings is made -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("DECISION_THRESHOLD", {"decision_threshold": 1.5}),
        ("MAX_BODY_BYTES", {"max_body_bytes": 0}),
        ("WORKERS", {"workers": "4"}),
        ("MAX_QUEUED_ROWS", {"max_queued_rows": 1023}),
        ("MODEL_NAME", {"model_name": ""}),
        ("PORT", {"port": 70_000}),
        ("MICRO_BATCHING", {"micro_batching": "off"}),
        ("REQUEST_TIMEOUT_SECONDS", {"request_timeout_seconds": math.nan}),
    ],
)
def test_a_settings_made_directly_is_checked_too(name: str, changes: dict[str, Any]) -> None:
    with pytest.raises(StartupError, match=f"^setting {name} must be ") as raised:
        Settings(**changes)

    assert repr(next(iter(changes.values()))) in str(raised.value)


def test_a_changed_copy_is_checked_too() -> None:
    with pytest.raises(StartupError, match=r"^setting WORKERS must be an integer in \[1, 256\]"):
        msgspec.structs.replace(Settings(), workers=0)


@pytest.mark.parametrize("bad", ["short", "has a space in the middle", "tab\tinside-a-long-token"])
def test_a_bad_admin_token_is_never_echoed(bad: str) -> None:
    attempts: list[Callable[[], Settings]] = [
        lambda: Settings(admin_token=bad),
        lambda: Settings.from_environ({"ADMIN_TOKEN": bad}),
    ]
    for attempt in attempts:
        with pytest.raises(
            StartupError, match=r"^setting ADMIN_TOKEN must be at least 16"
        ) as raised:
            attempt()
        assert bad not in str(raised.value)
        assert bad not in repr(raised.value)


def test_the_admin_token_is_not_in_a_repr() -> None:
    settings = Settings.from_environ({"ADMIN_TOKEN": SECRET})

    assert settings.admin_token == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in repr([settings])
    assert "admin_token='***'" in repr(settings)
    assert "admin_token=None" in repr(Settings())


@pytest.mark.parametrize(("old", "new"), sorted(RETIRED.items()))
def test_a_retired_variable_stops_startup_naming_its_replacement(old: str, new: str) -> None:
    with pytest.raises(StartupError, match=f"^setting {old} is no longer read: set {new} instead"):
        Settings.from_environ({old: "1"})


def test_mlflow_http_variables_are_handed_to_mlflow_once_at_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "9")  # an operator's value wins
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    settings = load()

    assert settings.mlflow_http_request_timeout == 9
    # what MLflow itself now reads
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2  # type: ignore[no-untyped-call]
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1  # type: ignore[no-untyped-call]
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 9  # type: ignore[no-untyped-call]


def test_a_bad_mlflow_http_variable_stops_startup_like_any_setting() -> None:
    with pytest.raises(StartupError, match="MLFLOW_HTTP_REQUEST_TIMEOUT must be an integer"):
        Settings.from_environ({"MLFLOW_HTTP_REQUEST_TIMEOUT": "5s"})


# --- the documentation's settings tables are the declaration ------------------------------------

ROOT = Path(__file__).resolve().parents[1]
TABLES = (ROOT / "README.md", ROOT / "docs" / "operations.md")
HEADER = "| variable | default | allowed | meaning |"


def docstrings() -> dict[str, str]:
    """Each Settings field's docstring (the string right after the field), whitespace collapsed."""
    tree = ast.parse(inspect.getsource(settings_module))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings").body
    found = {}
    for field, after in itertools.pairwise(body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
        ):
            found[field.target.id] = " ".join(str(after.value.value).split())
    return found


def expected_row(setting: Declared, meaning: str) -> str:
    default = setting.default
    if default is None:
        shown = "unset"
    elif isinstance(default, bool):
        shown = f"`{str(default).lower()}`"
    elif isinstance(default, float):
        shown = f"`{default:g}`"
    else:
        shown = f"`{default}`"
    return f"| `{setting.env}` | {shown} | {setting.allowed} | {meaning} |"


def documented_rows(path: Path) -> dict[str, str]:
    """The rows of the table under ``## Settings`` in ``path``, by variable."""
    section = path.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = lines.index(HEADER) + 2  # the header and the |---| line
    rows = {}
    for line in lines[start:]:
        if not line.startswith("| `"):
            break
        rows[line.split("`")[1]] = line
    return rows


def test_every_setting_is_documented_once_in_a_settings_table() -> None:
    rows = [documented_rows(path) for path in TABLES]
    names = [name for table in rows for name in table]

    assert len(names) == len(set(names)), "a setting is in both tables"
    assert set(names) == {setting.env for setting in declared()}


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name)
def test_settings_table_rows_are_the_declared_fields(path: Path) -> None:
    meanings = docstrings()
    expected = {s.env: expected_row(s, meanings[s.name]) for s in declared()}

    for name, row in documented_rows(path).items():
        assert row == expected[name], f"{path.name}: the row of {name} should be\n{expected[name]}"


def test_every_setting_has_a_docstring() -> None:
    assert set(docstrings()) == {setting.name for setting in declared()}
