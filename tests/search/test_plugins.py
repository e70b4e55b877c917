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

def _readme_kind() -> str:
    """The README's trial-kind plug-in, as a user would copy it."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return re.search(r"```python\n(# my_nas/kind.py.*?)```", text, re.S).group(1)


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

[project.entry-points."nasq_ray.trials"]
function = "nasq_demo_kind:FunctionTrial"

[tool.setuptools]
py-modules = ["nasq_demo", "nasq_demo_kind"]
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
sys.exit(max(codes))
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "nasq_demo.py").write_text(PLUGIN)
    (src / "nasq_demo_kind.py").write_text(_readme_kind())
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, timeout=300)
    assert any(p.name.startswith("nasq_demo_plugin") and p.suffix == ".dist-info" for p in site.iterdir())
    return site


def test_installed_plugins_are_listed_and_used(plugin_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "driver.py").write_text(DRIVER)
    p = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cheapfirst" in p.stdout and "plug-in (nasq_demo:CheapFirst)" in p.stdout
    assert "optuna_raw" in p.stdout and "demo_median" in p.stdout
    assert re.search(r"function\s+plug-in", p.stdout)
    for name, n in (("a", 6), ("b", 4), ("c", 5)):
        with open(tmp_path / "out" / name / "trials.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n and all(r["status"] == "complete" for r in rows)
    # the plug-in's strategy shaped the search: its picks hold fewer convs than random draws do
    with open(tmp_path / "out" / "a" / "trials.csv") as f:
        convs = [sum("conv" in r[f"edge_{k}"] for k in range(6)) for r in csv.DictReader(f)]
    assert sum(convs) / len(convs) < 6 * 2 / 5
