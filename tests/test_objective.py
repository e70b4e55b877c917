"""Objectives: the scalar score, the Pareto mask and the hypervolume, against brute-force references."""

from __future__ import annotations

import dataclasses

import itertools
import math

import numpy as np
import pytest

from nasq_ray.errors import ConfigError, UnknownNameError
from nasq_ray.objective import ObjectiveConfig, budget_violation, hypervolume, pareto_mask, score, within_budget

# -------------------------------------------------------------------------------------------- score


@pytest.mark.parametrize("acc,cost", [(0.9, 1.0), (0.5, 0.25), (0.8, 2.0), (0.7, 3.0), (0.95, 10.0)])
def test_mnas_form(acc, cost):
    cfg = ObjectiveConfig(form="mnas", target=2.0, alpha=-0.1, beta=-0.5)
    w = -0.1 if cost <= 2.0 else -0.5
    assert score(acc, cost, cfg) == pytest.approx(acc * (cost / 2.0) ** w, rel=1e-12)


def test_mnas_alpha_below_beta_above():
    cfg = ObjectiveConfig(form="mnas", target=4.0, alpha=-0.2, beta=-1.5)
    below = score(0.8, 2.0, cfg)
    above = score(0.8, 8.0, cfg)
    assert below == pytest.approx(0.8 * 0.5 ** -0.2)
    assert above == pytest.approx(0.8 * 2.0 ** -1.5)
    assert below > 0.8 > above
    assert score(0.8, 4.0, cfg) == pytest.approx(0.8)  # at the target: unchanged
    # just above the target uses beta, just below uses alpha
    eps = 1e-3
    assert score(0.8, 4.0 + eps, cfg) == pytest.approx(0.8 * (1 + eps / 4) ** -1.5, rel=1e-12)
    assert score(0.8, 4.0 - eps, cfg) == pytest.approx(0.8 * (1 - eps / 4) ** -0.2, rel=1e-12)


def test_mnas_default_is_soft():
    cfg = ObjectiveConfig()
    assert cfg.form == "mnas" and cfg.alpha == cfg.beta == -0.07
    a, b = score(0.9, 1.0, cfg), score(0.9, 4.0, cfg)
    assert a > b  # cheaper wins at equal accuracy
    assert a == pytest.approx(0.9 * 0.5 ** -0.07)


def test_hard_form():
    cfg = ObjectiveConfig(form="mnas", target=2.0, alpha=0.0, beta=-1.0)
    for cost in (0.1, 1.0, 2.0):
        assert score(0.75, cost, cfg) == pytest.approx(0.75)
    assert score(0.75, 4.0, cfg) == pytest.approx(0.375)
    assert score(0.75, 6.0, cfg) == pytest.approx(0.25)


def test_zero_cost_is_finite():
    cfg = ObjectiveConfig(form="mnas", target=2.0, alpha=-0.07)
    assert math.isfinite(score(0.6, 0.0, cfg))


@pytest.mark.parametrize("acc,cost", [(0.9, 1.0), (0.5, 4.0), (0.1, 0.0)])
def test_linear_form(acc, cost):
    cfg = ObjectiveConfig(form="linear", target=2.0, penalty=0.3)
    assert score(acc, cost, cfg) == pytest.approx(acc - 0.3 * cost / 2.0, rel=1e-12)


def test_acc_form():
    cfg = ObjectiveConfig(form="acc", target=2.0)
    assert score(0.42, 100.0, cfg) == 0.42
    assert score(0.42, 0.01, cfg) == 0.42


def test_score_returns_float():
    for form in ("mnas", "linear", "acc"):
        assert type(score(np.float32(0.5), np.float64(1.5), ObjectiveConfig(form=form))) is float


@pytest.mark.parametrize("field,value", [("form", "mnasnet"), ("acc", "val_accuracy")])
def test_unknown_names(field, value):
    with pytest.raises(UnknownNameError) as e:
        ObjectiveConfig(**{field: value})
    msg = str(e.value)
    assert "\n" not in msg
    assert f"objective.{field}" in msg and f"'{value}'" in msg and "allowed" in msg


@pytest.mark.parametrize("value", ["", "size kb", "1macs", None])
def test_cost_must_be_a_metric_name(value):
    # any metric name is allowed here (a table's cost column); which names a training run reports is
    # checked when the run starts (tests/test_cli.py: --cost latency)
    with pytest.raises(ConfigError, match="objective.cost"):
        ObjectiveConfig(cost=value)
    assert ObjectiveConfig(cost="latency_ms").cost == "latency_ms"


def test_known_training_cost_metrics():
    from nasq_ray.objective import check_training_cost

    for name in ("size_kb", "size_bits", "bitops", "macs", "latency_ms"):
        check_training_cost(ObjectiveConfig(cost=name))
    with pytest.raises(UnknownNameError, match="objective.cost: unknown name 'flops'.*allowed: bitops, latency_ms, macs"):
        check_training_cost(ObjectiveConfig(cost="flops"))


def test_latency_without_onnxruntime_is_refused_with_the_metrics_that_remain(monkeypatch):
    import sys

    from nasq_ray.errors import ConfigError
    from nasq_ray.objective import check_training_cost

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(ConfigError, match="latency_ms is measured with onnxruntime.*allowed without it: size_kb"):
        check_training_cost(ObjectiveConfig(cost="latency_ms"))


@pytest.mark.parametrize("target", [0, 0.0, -1.0, float("nan"), float("inf"), True])
def test_bad_target(target):
    with pytest.raises(ConfigError) as e:
        ObjectiveConfig(target=target)
    assert "objective.target" in str(e.value)


@pytest.mark.parametrize("field", ["alpha", "beta", "penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "x"])
def test_score_parameters_must_be_finite_numbers(field, value):
    with pytest.raises(ConfigError, match=rf"objective\.{field}: .* allowed: a finite number"):
        ObjectiveConfig(**{field: value})


def test_the_default_target_is_2_kb_and_another_cost_needs_one_where_it_ranks():
    assert ObjectiveConfig().target_value == 2.0 and ObjectiveConfig().target is None
    import numpy as np

    assert ObjectiveConfig(target=np.float32(4), alpha=np.float32(-0.1), beta=np.float64(-0.1)).target_value == 4.0
    assert ObjectiveConfig(cost="bitops").target_value == 2.0  # mnas with one exponent: the target only scales
    assert ObjectiveConfig(cost="bitops", form="acc").target_value == 2.0
    assert ObjectiveConfig(cost="bitops", form="linear", target=1e6).target_value == 1e6
    with pytest.raises(ConfigError, match="objective.target: needed with objective.cost macs"):  # a table's column
        dataclasses.replace(ObjectiveConfig(form="linear"), cost="macs")
    with pytest.raises(ConfigError, match=r"objective\.target: needed with objective\.cost bitops \(it sets the "
                                          r"linear form's penalty.*allowed: a number > 0 in bitops"):
        ObjectiveConfig(cost="bitops", form="linear")
    with pytest.raises(ConfigError, match="where mnas switches from alpha to beta"):
        ObjectiveConfig(cost="macs", alpha=0.0, beta=-1.0)
    # ranking by the score under mnas with one exponent does not depend on the target
    one, other = ObjectiveConfig(cost="macs"), ObjectiveConfig(cost="macs", target=3e5)
    trials = [(0.9, 4e5), (0.8, 1e5), (0.95, 9e5)]
    assert (sorted(trials, key=lambda t: score(*t, one)) == sorted(trials, key=lambda t: score(*t, other)))


@pytest.mark.parametrize("max_cost", [0, -1.0, float("nan"), float("inf"), "5"])
def test_bad_max_cost(max_cost):
    with pytest.raises(ConfigError, match=r"objective\.max_cost: .* allowed: a number > 0"):
        ObjectiveConfig(max_cost=max_cost)


@pytest.mark.parametrize("form", ["mnas", "linear", "acc"])
def test_a_trial_over_the_cost_budget_scores_minus_infinity(form):
    cfg = ObjectiveConfig(form=form, max_cost=4.0)
    assert score(0.9, 4.0, cfg) == score(0.9, 4.0, ObjectiveConfig(form=form)) > -math.inf
    assert score(0.9, 4.01, cfg) == -math.inf
    assert within_budget(4.0, cfg) and not within_budget(4.01, cfg) and within_budget(1e9, ObjectiveConfig())
    assert budget_violation(5.0, cfg) == 1.0 and budget_violation(3.0, cfg) == -1.0


def test_metrics_and_modes():
    single = ObjectiveConfig(cost="bitops")
    assert single.metrics == ("score",) and single.modes == ("max",)
    multi = ObjectiveConfig(acc="val_f1", cost="macs", multi=True)
    assert multi.metrics == ("val_f1", "macs") and multi.modes == ("max", "min")


# -------------------------------------------------------------------------------------- pareto_mask


def brute_pareto(points, modes) -> np.ndarray:
    """Point i is on the front unless some j is at least as good everywhere and better somewhere."""
    def better_eq(a, b, m):
        return a >= b if m == "max" else a <= b

    def strictly(a, b, m):
        return a > b if m == "max" else a < b

    n = len(points)
    out = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if all(better_eq(points[j][k], points[i][k], m) for k, m in enumerate(modes)) and \
                    any(strictly(points[j][k], points[i][k], m) for k, m in enumerate(modes)):
                out[i] = False
                break
    return out


def random_points(rng, n, d, grid):
    """Points on a coarse grid (many ties and duplicates) or continuous."""
    if grid:
        pts = rng.integers(0, 4, size=(n, d)).astype(float)
    else:
        pts = rng.normal(size=(n, d))
    if n > 3:
        pts[1] = pts[0]  # a guaranteed duplicate
    return pts


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("grid", [True, False])
def test_pareto_mask_matches_brute_force(d, grid):
    rng = np.random.default_rng(100 * d + grid)
    n_front_sizes = set()
    for trial in range(60):
        n = int(rng.integers(1, 25))
        modes = [("max", "min")[int(b)] for b in rng.integers(0, 2, size=d)]
        pts = random_points(rng, n, d, grid)
        got = pareto_mask(pts, modes)
        want = brute_pareto(pts.tolist(), modes)
        assert got.dtype == bool and got.shape == (n,)
        np.testing.assert_array_equal(got, want, err_msg=f"modes={modes} points={pts.tolist()}")
        n_front_sizes.add(int(want.sum()))
    assert len(n_front_sizes) > 2  # the reference produced varied fronts


def test_pareto_mask_small_cases():
    pts = [(0.9, 10.0), (0.9, 10.0), (0.8, 5.0), (0.7, 6.0), (0.95, 20.0), (0.9, 12.0)]
    # (acc max, cost min): duplicates both kept; (0.7, 6) dominated by (0.8, 5); (0.9, 12) by (0.9, 10)
    assert pareto_mask(pts, ["max", "min"]).tolist() == [True, True, True, False, True, False]
    # (max, max): only the extremes survive
    assert pareto_mask(pts, ["max", "max"]).tolist() == [False, False, False, False, True, False]
    # (min, min)
    assert pareto_mask(pts, ["min", "min"]).tolist() == [False, False, True, True, False, False]
    # ties in one objective: equal on one, worse on the other is dominated
    assert pareto_mask([(1.0, 1.0), (1.0, 2.0)], ["min", "min"]).tolist() == [True, False]


def test_pareto_mask_empty_and_single():
    assert pareto_mask([], ["max", "min"]).shape == (0,)
    assert pareto_mask([(1.0, 2.0)], ["max", "min"]).tolist() == [True]


def test_pareto_mask_all_duplicates():
    assert pareto_mask([(3.0, 3.0)] * 5, ["max", "min"]).all()


# -------------------------------------------------------------------------------------- hypervolume


def sweep_hv_2d(points, reference, modes) -> float:
    """Exact 2-D hypervolume by a sweep over the first objective (all objectives turned into minimization)."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    ref = np.asarray(reference, float) * signs
    pts = [tuple(np.asarray(p, float) * signs) for p in points]
    pts = sorted(p for p in pts if p[0] < ref[0] and p[1] < ref[1])
    hv, best_y = 0.0, ref[1]
    for k, (x, y) in enumerate(pts):
        best_y = min(best_y, y)
        next_x = pts[k + 1][0] if k + 1 < len(pts) else ref[0]
        hv += (next_x - x) * (ref[1] - best_y)
    return hv


def grid_hv(points, reference, modes) -> float:
    """Exact hypervolume in any dimension: volume of the union of boxes on the compressed grid."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    ref = np.asarray(reference, float) * signs
    pts = np.asarray(points, float).reshape(-1, len(modes)) * signs
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    axes = [np.unique(np.append(pts[:, k], ref[k])) for k in range(len(modes))]
    hv = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        lo = np.array([axes[k][c] for k, c in enumerate(cell)])
        if np.any(np.all(pts <= lo, axis=1)):
            hv += float(np.prod([axes[k][c + 1] - axes[k][c] for k, c in enumerate(cell)]))
    return hv


def test_hypervolume_hand_computed():
    # minimize both; reference (4, 4); boxes [1,4]x[3,4], [2,4]x[2,4], [3,4]x[1,4]: 3 + 4 + 3 - overlaps
    pts = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert hypervolume(pts, (4.0, 4.0), ["min", "min"]) == pytest.approx(6.0)
    assert sweep_hv_2d(pts, (4.0, 4.0), ["min", "min"]) == pytest.approx(6.0)
    # (acc max, cost min) with reference (acc 0, cost 10): one point (0.5, 2) -> 0.5 * 8
    assert hypervolume([(0.5, 2.0)], (0.0, 10.0), ["max", "min"]) == pytest.approx(4.0)
    # adding a dominated point changes nothing
    assert hypervolume([(0.5, 2.0), (0.4, 3.0)], (0.0, 10.0), ["max", "min"]) == pytest.approx(4.0)
    # a second non-dominated point (0.8, 6) adds its exclusive box: acc 0.5..0.8 x cost 6..10 = 0.3 * 4
    assert hypervolume([(0.5, 2.0), (0.8, 6.0)], (0.0, 10.0), ["max", "min"]) == pytest.approx(4.0 + 1.2)


@pytest.mark.parametrize("modes", [("min", "min"), ("max", "min"), ("min", "max"), ("max", "max")])
def test_hypervolume_2d_random(modes):
    rng = np.random.default_rng(sum((k + 1) * (m == "max") for k, m in enumerate(modes)))
    positives = 0
    for _ in range(40):
        n = int(rng.integers(1, 15))
        pts = rng.uniform(0, 10, size=(n, 2))
        if rng.random() < 0.5:
            pts = np.round(pts)  # ties and duplicates
        ref = rng.uniform(2, 9, size=2)
        want = sweep_hv_2d(pts, ref, modes)
        got = hypervolume(pts, ref, modes)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (pts.tolist(), ref.tolist(), modes)
        assert got == pytest.approx(grid_hv(pts, ref, modes), rel=1e-9, abs=1e-9)
        positives += want > 0
    assert positives > 10


@pytest.mark.parametrize("modes", [("max", "min", "min"), ("min", "max", "max")])
def test_hypervolume_3d_random(modes):
    rng = np.random.default_rng(7)
    for _ in range(15):
        n = int(rng.integers(1, 8))
        pts = np.round(rng.uniform(0, 6, size=(n, 3)), 1)
        ref = np.full(3, 3.0)
        assert hypervolume(pts, ref, modes) == pytest.approx(grid_hv(pts, ref, modes), rel=1e-9, abs=1e-9)


def test_hypervolume_points_beyond_reference_contribute_nothing():
    modes = ("max", "min")
    ref = (0.5, 10.0)
    good = [(0.9, 2.0)]
    base = hypervolume(good, ref, modes)
    assert base == pytest.approx(0.4 * 8.0)
    worse = [(0.4, 1.0), (0.99, 11.0), (0.5, 1.0), (0.95, 10.0), (0.1, 20.0)]  # each fails the reference
    assert hypervolume(good + worse, ref, modes) == pytest.approx(base)
    assert hypervolume(worse, ref, modes) == 0.0


def test_hypervolume_empty():
    assert hypervolume([], (0.0, 1.0), ["max", "min"]) == 0.0
    assert hypervolume(np.zeros((0, 2)), (0.0, 1.0), ["max", "min"]) == 0.0


def test_hypervolume_monotone():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 1, size=(20, 2))
    ref = (0.0, 1.0)
    hvs = [hypervolume(pts[:k], ref, ("max", "min")) for k in range(1, 21)]
    assert all(b >= a - 1e-12 for a, b in zip(hvs, hvs[1:]))
    assert hvs[-1] > hvs[0]
