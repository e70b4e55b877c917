"""Experiment config: a run without a name is named once, so every folder it writes is the same one."""

from __future__ import annotations

import itertools
import re
import time

import yaml

from nasq_ray.config import from_dict


def test_a_run_without_a_name_is_named_once(monkeypatch):
    ticks = itertools.count()
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: f"20261202-0000{next(ticks):02d}")
    cfg = from_dict({"space": "digits_small"})
    first = cfg.run_name
    # the clock moves on between accesses; the name does not
    assert cfg.run_name == first and cfg.out_dir.name == first and cfg.experiment_path.endswith("/" + first)
    assert cfg.name is None  # the experiment (run_search) fixes it and saves it in experiment.yaml
    assert from_dict({"space": "digits_small"}).run_name != first  # another run, another name


def test_a_config_built_from_the_dataclasses_gets_the_types_from_dict_gives():
    import pytest

    from nasq_ray.config import ExperimentConfig, SearchConfig
    from nasq_ray.errors import ConfigError

    assert ExperimentConfig(search={"num_samples": 3}).search.num_samples == 3  # a section as a dict
    assert ExperimentConfig(search=SearchConfig(num_samples="8")).search.num_samples == 8  # as YAML's "8"
    for kwargs, needle in ((dict(search=SearchConfig(num_samples=1.5)), "search.num_samples: 1.5 is not allowed"),
                           (dict(search=5), "search: expected a mapping or a SearchConfig, got int"),
                           (dict(search={"num_sample": 3}), "search.num_sample: unknown key"),
                           (dict(verbose="maybe"), "verbose: 'maybe' is not allowed")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            ExperimentConfig(**kwargs)


def test_run_search_takes_the_path_of_an_experiment_file_and_refuses_other_things(tmp_path, monkeypatch):
    import pytest

    import nasq_ray
    from nasq_ray.errors import ConfigError
    from nasq_ray.search import driver

    seen = []
    monkeypatch.setattr(driver, "run_search", seen.append)
    path = tmp_path / "exp.yaml"
    path.write_text("search:\n  num_samples: 3\nspace: mlp\n")
    nasq_ray.run_search(path)
    nasq_ray.run_search(str(path))
    assert [(c.search.num_samples, c.space) for c in seen] == [(3, "mlp")] * 2
    path.write_text("search:\n  num_sample: 3\n")
    with pytest.raises(ConfigError, match="search.num_sample: unknown key"):
        nasq_ray.run_search(path)
    with pytest.raises(ConfigError, match="config: expected an ExperimentConfig, a dict of its sections, or the path of an experiment YAML file, got list"):
        nasq_ray.run_search([1, 2])


def test_experiment_yaml_holds_absolute_paths_so_resume_works_from_any_folder(tmp_path, monkeypatch):
    from nasq_ray.search.searchers import experiment_yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("")
    (tmp_path / "t.csv").write_text("")
    (tmp_path / "data").mkdir()
    cfg = from_dict({"space": "s.yaml", "table": {"path": "t.csv"}, "data": {"name": "mnist", "dir": "data"},
                     "storage": "ray_store", "storage_db": "sqlite:///study.db"})
    saved = yaml.safe_load(experiment_yaml(cfg))
    assert saved["space"] == str(tmp_path / "s.yaml") and saved["table"]["path"] == str(tmp_path / "t.csv")
    assert saved["data"]["dir"] == str(tmp_path / "data") and saved["storage"] == str(tmp_path / "ray_store")
    assert saved["storage_db"] == f"sqlite:///{tmp_path}/study.db"
    names = yaml.safe_load(experiment_yaml(from_dict({"space": "mlp", "storage": "s3://b/x", "data": {"name": "m:f"}})))
    assert (names["space"], names["storage"], names["data"]["name"]) == ("mlp", "s3://b/x", "m:f")  # names stay


def test_a_flag_wins_over_the_files_quiet_or_verbose_and_both_together_are_refused(tmp_path):
    import pytest

    from nasq_ray.errors import ConfigError
    from nasq_ray.run import build_parser, config_from_args

    path = tmp_path / "q.yaml"
    path.write_text("quiet: true\n")
    cfg = config_from_args(build_parser().parse_args(["--config", str(path), "--verbose"]))
    assert cfg.verbose and not cfg.quiet
    path.write_text("quiet: true\nverbose: true\n")
    with pytest.raises(ConfigError, match="quiet: true with verbose true"):
        config_from_args(build_parser().parse_args(["--config", str(path)]))


def test_a_ray_this_process_started_stays_private_for_the_next_run(monkeypatch):
    import ray

    from nasq_ray.search import session

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(session, "_STARTED_LOCAL", True)
    assert session.init_ray(from_dict({})) is True  # a notebook's second run: still refused, not left waiting
    monkeypatch.setattr(session, "_STARTED_LOCAL", False)
    assert session.init_ray(from_dict({})) is False  # a Ray the caller started: maybe a cluster


def test_resume_refuses_an_edited_experiment_but_not_moved_paths(tmp_path):
    import pytest

    from nasq_ray.config import CHECKSUM_LINE, saved_config
    from nasq_ray.errors import ConfigError
    from nasq_ray.search.searchers import experiment_yaml

    folder = tmp_path / "run"
    folder.mkdir()
    text = experiment_yaml(from_dict({"name": "run", "out": str(tmp_path), "search": {"max_epochs": 8}}))
    assert text.startswith(CHECKSUM_LINE)
    saved = folder / "experiment.yaml"
    saved.write_text(text)
    assert saved_config(folder, "resume").search.max_epochs == 8

    # where things are and how loudly the run speaks may change (a moved folder, data set or database)
    saved.write_text(text.replace(f"out: {tmp_path}", "out: /elsewhere").replace("quiet: false", "quiet: true")
                     .replace("dir: null", "dir: /moved/data").replace("storage_db: null", "storage_db: sqlite:///x.db"))
    assert saved_config(folder, "resume").data.dir == "/moved/data"

    saved.write_text(text.replace("max_epochs: 8", "max_epochs: 10"))  # what the run is may not
    with pytest.raises(ConfigError, match=r"^resume: .*experiment.yaml was edited after the run started; .*--config"):
        saved_config(folder, "resume")
    assert saved_config(folder, "export").search.max_epochs == 10  # report and export read it as it is
    saved.write_text(text.split("\n", 1)[1].replace("max_epochs: 8", "max_epochs: 10"))  # its checksum line deleted
    with pytest.raises(ConfigError, match=r"^resume: .*experiment.yaml was edited after the run started"):
        saved_config(folder, "resume")
