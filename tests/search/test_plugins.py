"""A third-party plug-in distribution, installed by pip with real entry points, is listed and used."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import re
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

PLUGIN = '''
"""A demo plug-in: a nasq-ray strategy, a raw Ray Tune searcher and a scheduler."""
import numpy as np

from nasq_ray.search.strategies import BaseStrategy


class CheapFirst(BaseStrategy):
    """Random configs, but each time the cheaper of two (by how many edges hold a conv)."""

    def __init__(self, space, objective, seed=0, draws=2):
        super().__init__(space, objective, seed)
        self.rng, self.draws = np.random.default_rng(seed), draws

    def suggest(self, trial_id):
        cands = [self.space.sample(self.rng) for _ in range(self.draws)]
        return min(cands, key=lambda c: sum("conv" in str(v) for v in c.values()))

    def on_trial_complete(self, trial_id, config, result):
        pass


def optuna_searcher(space, objective, seed=0):
    from ray.tune.search.optuna import OptunaSearch
    from nasq_ray.search.strategies import define_by_run
    return OptunaSearch(space=define_by_run(space), metric="score", mode="max", seed=seed)


def scheduler(metric, mode, max_t):
    from ray.tune.schedulers import MedianStoppingRule
    return MedianStoppingRule(time_attr="training_iteration", metric=metric, mode=mode, grace_period=1)
'''

def _readme_block(lang: str, first_line: str) -> str:
    """A code block of the README, as a user would copy it."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return re.search(rf"```{lang}\n({re.escape(first_line)}\n.*?)```", text, re.S).group(1)


PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "nasq-demo-plugin"
version = "0.1.0"

[project.entry-points."nasq_ray.searchers"]
cheapfirst = "nasq_demo:CheapFirst"
optuna_raw = "nasq_demo:optuna_searcher"

[project.entry-points."nasq_ray.schedulers"]
demo_median = "nasq_demo:scheduler"

[tool.setuptools]
py-modules = ["nasq_demo"]
'''

DRIVER = '''
import sys
from nasq_ray.run import main
out = sys.argv[1]
codes = [main(["--list-strategies"])]
codes.append(main(["--space", "nb201", "--searcher", "cheapfirst", "--scheduler", "demo_median",
                   "--num-samples", "6", "--out", out, "--name", "a", "--quiet"]))
codes.append(main(["--space", "nb201", "--searcher", "optuna_raw", "--num-samples", "4", "--out", out,
                   "--name", "b", "--quiet"]))
codes.append(main(["--space", "nb201", "--trial", "function", "--cost", "macs", "--num-samples", "5", "--out", out,
                   "--name", "c", "--quiet"]))
codes.append(main(["--space", "nb201", "--searcher", "mutate_best", "--scheduler", "quick_asha", "--scheduler-arg",
                   "grace_period=2", "--num-samples", "6", "--out", out, "--name", "d", "--quiet"]))
sys.exit(max(codes))
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """Three plug-in distributions installed: a demo, the README's package (its files as the README shows
    them) and a broken one."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "nasq_demo.py").write_text(PLUGIN)
    pkg = root / "my_nas"
    (pkg / "my_nas").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(_readme_block("toml", "# my_nas/pyproject.toml"))
    (pkg / "my_nas" / "__init__.py").write_text("")
    for module in ("strategy", "scheduler", "kind"):
        (pkg / "my_nas" / f"{module}.py").write_text(_readme_block("python", f"# my_nas/my_nas/{module}.py"))
    bad = root / "bad"
    bad.mkdir()
    (bad / "pyproject.toml").write_text(textwrap.dedent(BAD_PYPROJECT))
    (bad / "nasq_bad.py").write_text(BAD_PLUGIN)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src), str(pkg), str(bad)], check=True, timeout=300)
    assert any(p.name.startswith("nasq_demo_plugin") and p.suffix == ".dist-info" for p in site.iterdir())
    return site


def _site_env(site):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_installed_plugins_are_listed_and_used(plugin_site, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # no plug-in's source folder: each is imported as installed
    elsewhere.mkdir()
    (elsewhere / "driver.py").write_text(DRIVER)
    p = subprocess.run([sys.executable, "driver.py", str(tmp_path / "out")], cwd=elsewhere, env=_site_env(plugin_site),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cheapfirst" in p.stdout and "plug-in (nasq_demo:CheapFirst)" in p.stdout
    assert "optuna_raw" in p.stdout and "demo_median" in p.stdout and "quick_asha" in p.stdout
    assert re.search(r"function\s+plug-in", p.stdout) and "plug-in (my_nas.strategy:MutateBest)" in p.stdout
    for name, n in (("a", 6), ("b", 4), ("c", 5), ("d", 6)):
        with open(tmp_path / "out" / name / "trials.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n and all(r["status"] == "complete" for r in rows)
    # the plug-in's strategy shaped the search: its picks hold fewer convs than random draws do
    with open(tmp_path / "out" / "a" / "trials.csv") as f:
        convs = [sum("conv" in r[f"edge_{k}"] for k in range(6)) for r in csv.DictReader(f)]
    assert sum(convs) / len(convs) < 6 * 2 / 5


BAD_PLUGIN = '''
from nasq_ray.search.strategies import BaseStrategy
from nasq_ray.trials import BaseTrialKind


class Raises(BaseStrategy):
    def __init__(self, space, objective, seed=0):
        raise ValueError("no GPU here")

    def suggest(self, trial_id):
        return None

    def on_trial_complete(self, trial_id, config, result):
        pass


class NoSuggest(BaseStrategy):
    def on_trial_complete(self, trial_id, config, result):
        pass


class NoRun(BaseTrialKind):
    name = "norun"

    def prepare(self, cfg, raw_space, space_path, objective):
        raise AssertionError("not reached: a kind without run is refused first")


class Misnamed(BaseTrialKind):
    name = "something_else"

    def prepare(self, cfg, raw_space, space_path, objective):
        raise AssertionError("not reached")

    def run(self, config, context, report, state=None):
        return {}


class PrepareFails(BaseTrialKind):
    name = "prepare_fails"

    def prepare(self, cfg, raw_space, space_path, objective):
        return {}["stages"]

    def run(self, config, context, report, state=None):
        return {}
'''

BAD_PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "nasq-bad-plugin"
version = "0.1.0"

[project.entry-points."nasq_ray.searchers"]
missing_module = "nasq_nowhere:Strategy"
missing_object = "nasq_bad:DoesNotExist"
raises = "nasq_bad:Raises"
no_suggest = "nasq_bad:NoSuggest"

[project.entry-points."nasq_ray.schedulers"]
missing_scheduler = "nasq_bad:nothing"

[project.entry-points."nasq_ray.trials"]
norun = "nasq_bad:NoRun"
misnamed = "nasq_bad:Misnamed"
prepare_fails = "nasq_bad:PrepareFails"

[tool.setuptools]
py-modules = ["nasq_bad"]
'''

BAD_DRIVER = '''
import contextlib, io, json, sys
from nasq_ray.run import main
cases = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        quiet = [] if "--verbose" in argv else ["--quiet"]
        rc = main(argv + ["--space", "nb201", "--num-samples", "2", "--out", sys.argv[2], "--name", name, *quiet])
    cases[name] = [rc, err.getvalue()]
print(json.dumps(cases))
'''


def test_the_readme_conformance_check_of_its_trial_kind_runs_as_written(plugin_site, tmp_path):
    check = _readme_block("python", "import nasq_ray as nq\nfrom nasq_ray.testing import check_trial_kind")
    p = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=_site_env(plugin_site),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


def test_a_broken_plugin_is_one_line_and_exit_2_before_ray_starts(plugin_site, tmp_path):
    cases = {
        "missing_module": (["--searcher", "missing_module"], "search.searcher: the plug-in 'missing_module' (entry "
                           "point nasq_nowhere:Strategy of nasq_ray.searchers, from nasq-bad-plugin) cannot be loaded: "
                           "ModuleNotFoundError"),
        "missing_object": (["--searcher", "missing_object"], "cannot be loaded: AttributeError"),
        "raises": (["--searcher", "raises"], "search.searcher: the plug-in searcher 'raises' failed: ValueError: no GPU here"),
        "no_suggest": (["--searcher", "no_suggest"], "the plug-in searcher 'no_suggest' failed: TypeError: Can't "
                       "instantiate abstract class NoSuggest"),
        "missing_scheduler": (["--scheduler", "missing_scheduler"], "search.scheduler: the plug-in 'missing_scheduler'"),
        "norun": (["--trial", "norun", "--cost", "macs"], "trial 'norun': the plug-in's kind NoRun does not define run"),
        "misnamed": (["--trial", "misnamed", "--cost", "macs"], "is named 'something_else'; allowed: its entry point's "
                     "name, 'misnamed'"),
        "prepare_fails": (["--trial", "prepare_fails", "--cost", "macs"], "trial: the plug-in trial kind "
                          "'prepare_fails' failed: KeyError: 'stages'"),
        "verbose": (["--searcher", "raises", "--verbose"], "Traceback"),
    }
    import json

    argv = {name: a for name, (a, _) in cases.items()}
    p = subprocess.run([sys.executable, "-c", BAD_DRIVER, json.dumps(argv), str(tmp_path / "out")],
                       env=_site_env(plugin_site), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    for name, (_, needle) in cases.items():
        rc, err = got[name]
        assert rc == 2 and needle in err, (name, rc, err)
        if name != "verbose":  # --verbose adds the plug-in's traceback above the line
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert not (tmp_path / "out").exists()  # refused before anything was written
