"""The README as a newcomer reads it: its experiment-file reference is the config's every field with
its default, the Python names it points to exist, and its Python API lines run as written."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_experiment_file_reference_lists_every_field_with_its_default():
    from nasq_ray.config import ExperimentConfig

    block = re.search(r"```yaml\n(.*?)```", _section("Experiment file reference"), re.S).group(1)
    documented = _flatten(yaml.safe_load(block))
    actual = _flatten(ExperimentConfig().to_dict())
    assert sorted(set(actual) - set(documented)) == [], "fields the README's reference leaves out"
    assert sorted(set(documented) - set(actual)) == [], "fields the README lists that the config does not have"
    wrong = {k: (documented[k], actual[k]) for k in actual if documented[k] != actual[k]}
    assert wrong == {}, "README default != config default"


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_python_name_the_readme_points_to_exists():
    from nasq_ray.search.schedulers import ENTRY_POINT_GROUP as SCHEDULERS
    from nasq_ray.search.strategies import ENTRY_POINT_GROUP as SEARCHERS

    names = set(re.findall(r"`(nasq_ray(?:\.[A-Za-z_]\w*)+)", README)) - {SEARCHERS, SCHEDULERS}
    assert len(names) >= 8  # the pattern still finds what it is meant to
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert missing == []


def test_the_python_api_example_runs_as_written_up_to_the_search(capsys):
    block = re.search(r"```python\n(import nasq_ray as nq\n.*?)```", _section("Python API"), re.S).group(1)
    before_search = block.split("\nresult = nq.run_search(")[0]
    assert "nq.measure_cost" in before_search
    exec(compile(before_search, "README.md (Python API)", "exec"), {})
    macs, bitops, size_bits, avg_w_bits = capsys.readouterr().out.split()
    assert int(macs) > 0 and int(bitops) > 0 and float(size_bits) > 0 and 1 <= float(avg_w_bits) <= 32


def _run_commands() -> tuple[list[list[str]], list[list[str]]]:
    """The arguments of every ``python -m nasq_ray.run`` the README shows: in its bash blocks, and
    inline (in backticks, where a placeholder such as ``NAME`` may stand for a value)."""
    import shlex

    blocks, inline = [], []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            m = re.search(r"python -m nasq_ray\.run\b(.*)", line.split(" # ")[0])
            if m:
                blocks.append(shlex.split(m.group(1)))
    for m in re.finditer(r"`python -m nasq_ray\.run\b([^`]*)`", README):
        inline.append(shlex.split(m.group(1)))
    return blocks, inline


def test_every_run_command_the_readme_shows_parses_and_its_bash_blocks_make_a_valid_config():
    from nasq_ray.run import build_parser, config_from_args

    blocks, inline = _run_commands()
    assert len(blocks) >= 10 and len(inline) >= 3
    for args in blocks:
        config_from_args(build_parser().parse_args(args))  # a bad flag or value exits 2 / raises here
    for args in inline:
        build_parser().parse_args(args)
