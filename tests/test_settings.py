"""Settings come from the environment once; a bad value stops startup naming the variable."""

from __future__ import annotations

import pytest

from app.cli import main
from app.errors import StartupError
from app.settings import Settings


def test_defaults_are_the_contract_defaults() -> None:
    settings = Settings.from_environ({})

    assert settings.tracking_uri == "sqlite:///mlflow.db"
    assert settings.model_name == "churn-classifier"
    assert settings.model_alias == "champion"
    assert settings.decision_threshold == 0.5
    assert settings.max_body_bytes == 1_048_576
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
    )


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
