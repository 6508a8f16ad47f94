"""Configuration from the environment, and the package logger."""

from __future__ import annotations

import importlib
import logging

import pytest

import mininn
from mininn import config


def test_data_dir_is_read_at_each_call(monkeypatch, tmp_path):
    monkeypatch.delenv("MININN_DATA_DIR", raising=False)
    assert config.data_dir() is None
    monkeypatch.setenv("MININN_DATA_DIR", str(tmp_path))
    assert config.data_dir() == str(tmp_path)
    assert mininn.data.default_sources("mnist")[0] == tmp_path


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("MININN_INIT_MAP", "Uniform", "INIT_MAP", "uniform"),
        ("MININN_LOG_LEVEL", "debug", "LOG_LEVEL", "DEBUG"),
    ],
    ids=["init-map", "log-level"],
)
def test_environment_choices_are_case_insensitive(
    monkeypatch, variable, value, attribute, expected
):
    monkeypatch.setenv(variable, value)
    try:
        assert getattr(importlib.reload(config), attribute) == expected
    finally:
        monkeypatch.delenv(variable)
        importlib.reload(config)


def test_a_bad_environment_value_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("MININN_INIT_MAP", "gaussian")
    try:
        with pytest.raises(
            ValueError, match=r"MININN_INIT_MAP='gaussian' is not one of normal, uniform"
        ):
            importlib.reload(config)
    finally:
        monkeypatch.delenv("MININN_INIT_MAP")
        importlib.reload(config)


def test_init_map_configuration_selects_the_variant(monkeypatch):
    monkeypatch.setattr(config, "INIT_MAP", "uniform")
    mininn.manual_seed(0)
    model = mininn.Sequential(mininn.Linear(50, 40), mininn.ReLU())
    bound = (6 / 50) ** 0.5  # kaiming_uniform_ with the ReLU gain: sqrt(3) * sqrt(2 / fan_in)
    weight = model[0].weight.data
    assert abs(weight).max() <= bound and abs(weight).max() > 0.9 * bound


def test_fetch_logs_a_rejected_source(caplog, tmp_path):
    bad = tmp_path / "mnist"
    bad.mkdir()
    (bad / "train-labels-idx1-ubyte").write_bytes(b"not the real file")
    with (
        caplog.at_level(logging.INFO, logger="mininn"),
        pytest.raises(mininn.data.DatasetNotFoundError),
    ):
        mininn.data.fetch("mnist", tmp_path / "out", sources=[tmp_path], progress=False)
    assert any("train-labels-idx1-ubyte" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)  # fmt: skip


def test_get_logger_is_under_the_mininn_logger():
    assert config.get_logger("mininn.training").name == "mininn.training"
    assert config.get_logger("custom").name == "mininn.custom"
    assert logging.getLogger("mininn").handlers
