"""The Optuna study every trial lands in: how its database is opened."""

from __future__ import annotations

import optuna
import pytest

from nasq_ray.objective import ObjectiveConfig
from nasq_ray.results import optuna_store
from nasq_ray.results.optuna_store import CONNECT_TIMEOUT_S, engine_kwargs, open_study


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u@db.example/nas", {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}),
    ("postgresql+psycopg2://u@db/nas", {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}),
    ("mysql+pymysql://u@db/nas", {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}),
    ("postgresql://u@db/nas?connect_timeout=3", {}),  # the user's own
    ("postgresql+pg8000://u@db/nas", {}),  # a driver that calls it something else
    ("sqlite:///x/optuna.db", {}),
])
def test_a_database_server_connects_with_a_timeout(url, expected):
    assert engine_kwargs(url) == expected


def test_open_study_hands_the_timeout_to_the_engine(monkeypatch, tmp_path):
    seen = {}

    class Storage(optuna.storages.RDBStorage):
        def __init__(self, url, engine_kwargs=None, **kw):
            seen[url] = engine_kwargs
            super().__init__(f"sqlite:///{tmp_path}/o.db")

    monkeypatch.setattr(optuna_store.optuna.storages, "RDBStorage", Storage)
    open_study("postgresql://u@db.example/nas", "run", ObjectiveConfig())
    assert seen == {"postgresql://u@db.example/nas": {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}}


def test_a_url_no_driver_can_open_is_one_line(tmp_path):
    with pytest.raises(optuna_store.ConfigError, match=r"^storage_db: cannot open 'nosuch://x'"):
        open_study("nosuch://x", "run", ObjectiveConfig())
