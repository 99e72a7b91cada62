"""The statistical rules the claim checks share (claims/rules.py), on made-up numbers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from claims.rules import (
    MC_NOISE_STDERRS,
    connected_threshold,
    contrast_noise,
    decreasing_steps,
    error_barrier_se,
    first_time_within,
    mean_noise,
    mean_std,
    outside_band,
    seed_halfwidths,
    seed_means,
)


def test_connected_threshold_is_two_standard_errors_of_the_error_estimate() -> None:
    # 10% error on 10k examples: sd of the estimate 0.003, two of them 0.006
    assert connected_threshold(0.1, 10_000) == pytest.approx(MC_NOISE_STDERRS * 0.003)
    assert connected_threshold(0.1, 2_500) == pytest.approx(2 * connected_threshold(0.1, 10_000))


def test_mean_std() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([5.0]) == (5.0, 0.0)


@pytest.mark.parametrize(("value", "a", "b", "tol", "outside"), [
    (0.5, 0.4, 0.6, 0.0, False),
    (0.5, 0.6, 0.4, 0.0, False),   # either order of the two bounds
    (0.39, 0.4, 0.6, 0.0, True),
    (0.39, 0.4, 0.6, 0.02, False),  # widened by the tolerance on both sides
    (0.63, 0.4, 0.6, 0.02, True),
    (0.4, 0.4, 0.4, 0.0, False),   # a degenerate band holds its one value
])
def test_outside_band(value: float, a: float, b: float, tol: float, outside: bool) -> None:
    assert outside_band(value, a, b, tol) is outside


def test_decreasing_steps_flags_only_drops_beyond_the_tolerance() -> None:
    assert decreasing_steps([0.1, 0.3, 0.5], 0.01) == []
    assert decreasing_steps([0.1, 0.1, 0.1], 0.0) == []  # flat is not a decrease
    assert decreasing_steps([0.3, 0.1, 0.5, 0.49], 0.02) == [0]  # 0.5 -> 0.49 is within the tolerance
    assert decreasing_steps([0.3, 0.1, 0.5, 0.40], 0.02) == [0, 2]


def test_first_time_within_needs_every_later_time_within() -> None:
    times = [0.5, 1.0, 2.0, 5.0]
    assert first_time_within(times, [0.5, 0.1, 0.3, 0.1], 0.2) == 5.0  # 1.0 dips in, then out again
    assert first_time_within(times, [0.5, 0.1, 0.1, 0.1], 0.2) == 1.0
    assert first_time_within(times, [0.1, 0.1, 0.1, 0.1], 0.2) == 0.5
    assert first_time_within(times, [0.5, 0.5, 0.5, 0.5], 0.2) is None


def test_seed_means_average_each_point_over_the_seeds() -> None:
    assert seed_means([[0.1, 0.4], [0.3, 0.2]]) == pytest.approx([0.2, 0.3])
    assert seed_means([[0.5, 0.25, 0.0]]) == [0.5, 0.25, 0.0]
    assert seed_means([]) == []


def test_a_known_finding_is_an_lmc_finding_mark_with_its_reason() -> None:
    """A finding is the lmc_finding mark: the plugin turns only a significant FAIL there into a known finding
    (a crash or a measurement bug still fails the run; tests/test_plugin_runs.py runs them), never an xfail."""
    from claims.rules import MeasurementBug
    from claims.settings import params

    [param, other] = params(["mlp512-fmnist", "mlp128-fmnist"], [], findings={"mlp512-fmnist": "measured numbers"})
    [mark] = [m for m in param.marks if m.name == "lmc_finding"]
    assert mark.kwargs == {"reason": "measured numbers"} and mark.args == ()
    assert not any(m.name == "xfail" for m in param.marks)
    assert not any(m.name in ("lmc_finding", "xfail") for m in other.marks)  # only the setting named
    assert issubclass(MeasurementBug, RuntimeError) and not issubclass(MeasurementBug, AssertionError)
    with pytest.raises(ValueError, match="does not use"):
        params(["mlp512-fmnist"], [], findings={"mlp128-fmnist": "x"})


def test_a_check_can_take_an_xdist_group_of_its_own_that_node_ids_still_strip() -> None:
    from claims.settings import params
    from lmccheck.nodeids import base_nodeid

    def group_of(param: object) -> str:
        return next(m.args[0] for m in param.marks if m.name == "xdist_group")  # type: ignore[attr-defined]

    [plain] = params(["mlp512-fmnist"], [])
    own, gpu, *reduced = params(["mlp512-fmnist"], ["vgg16-ln-cifar10"], group="children")
    assert [p.id for p in reduced] == ["vgg16-ln-cifar10-smoke", "vgg16-ln-cifar10-dryrun"]
    assert group_of(plain) == "mlp512-fmnist"
    # S4's children run on mlp512-fmnist's worker after its other checks (WORKER_GROUPS); a GPU setting's
    # children keep a group of their own
    assert (group_of(own), group_of(gpu)) == ("mlp512-fmnist", "vgg16-ln-cifar10.children")
    # a CPU-only group leaves the GPU settings in their setting's group
    cpu_own, gpu_plain, *_ = params(["mlp512-fmnist"], ["vgg16-ln-cifar10"], cpu_group="early")
    assert (group_of(cpu_own), group_of(gpu_plain)) == ("mlp128-fmnist", "vgg16-ln-cifar10")
    node = "claims/test_s4_children.py::test_s4[mlp512-fmnist]"
    assert base_nodeid(f"{node}@{group_of(own)}") == node


def test_merged_settings_run_after_their_hosts_checks_in_the_worker_groups_order() -> None:
    from claims.settings import WORKER_GROUPS, params
    from lmccheck.pytest_plugin.claims import RUN_ORDER_MARK

    def order_of(param: object) -> int:
        return next(m.args[0] for m in param.marks if m.name == RUN_ORDER_MARK)  # type: ignore[attr-defined]

    [host] = params(["mlp128-fmnist"], [])
    [widths] = params(["mlp-fmnist-widths"], [], cpu_table={"mlp-fmnist-widths": object()})
    [x6] = params(["mlp256x6-fmnist"], [])
    [children] = params(["mlp512-fmnist"], [], group="children")
    early, x6_early = params(["mlp512-fmnist", "mlp256x6-fmnist"], [], cpu_group="early")
    # mlp128-fmnist's worker: its checks, the width family, then S8/S12 on mlp512-fmnist's checkpoints;
    # mlp512-fmnist's: its checks, S4's children, the 6-layer MLP (S10), then S12 on S10's pairs
    assert order_of(host) == 0 and 0 < order_of(widths) < order_of(early)
    assert 0 < order_of(children) < order_of(x6) < order_of(x6_early) == len(WORKER_GROUPS)
    assert {WORKER_GROUPS[k] for k in WORKER_GROUPS} == {"mlp512-fmnist", "mlp128-fmnist"}


def test_seed_halfwidths_are_student_t_half_widths_of_each_column_mean() -> None:
    # two seeds: t(0.975, 1) = 12.706; column 0 (1, 3) has sd sqrt(2), se 1; column 1 (10, 14) sd 2 sqrt(2), se 2
    assert seed_halfwidths([[1.0, 10.0], [3.0, 14.0]]) == pytest.approx([12.7062, 2 * 12.7062], rel=1e-5)
    assert seed_halfwidths([[1.0], [3.0]], level=0.90) == pytest.approx([6.3138], rel=1e-4)  # t(0.95, 1)
    # three seeds 0, 1, 2: sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    assert seed_halfwidths([[0.0], [1.0], [2.0]]) == pytest.approx([4.3027 / math.sqrt(3)], rel=1e-4)
    assert seed_halfwidths([[0.5, 0.25]]) == [0.0, 0.0]  # one seed: no spread to draw
    assert seed_halfwidths([]) == []


def test_mean_noise_is_the_root_mean_square_of_the_seeds_standard_errors() -> None:
    # the seeds share the test set: the noise of their mean does not shrink with more seeds
    assert mean_noise([0.003, 0.004]) == pytest.approx(math.sqrt((0.003**2 + 0.004**2) / 2))  # 0.0035355
    assert mean_noise([0.003, 0.004]) == pytest.approx(0.0035355, rel=1e-4)
    assert mean_noise([0.01] * 5) == pytest.approx(0.01)
    assert mean_noise([]) == 0.0


def test_contrast_noise_adds_the_measurements_noises_in_quadrature() -> None:
    assert contrast_noise([0.03], [0.04]) == pytest.approx(0.05)  # 3-4-5
    assert contrast_noise([0.003, 0.004], [0.003, 0.004]) == pytest.approx(0.005)  # 2 x 12.5e-6 = 25e-6
    assert contrast_noise([0.02, 0.02]) == pytest.approx(0.02)
    assert contrast_noise() == 0.0


def _barrier(alpha: float, endpoints: tuple[float, float], barrier: float, n: int = 10_000) -> SimpleNamespace:
    """The fields of a BarrierResult that error_barrier_se reads."""
    return SimpleNamespace(error_argmax_alpha=alpha, error_endpoints=endpoints, error_barrier=barrier, n_examples=n)


def test_error_barrier_se_is_the_binomial_noise_of_the_peak_and_of_the_line_under_it() -> None:
    # midpoint, both endpoints at 10%, barrier 10%: the peak is 20%. On 10k examples the binomial standard
    # errors are sqrt(.2 * .8 / 1e4) = 0.004 at the peak and sqrt(.1 * .9 / 1e4) = 0.003 at each endpoint,
    # the line weighs each endpoint by 1/2: sqrt(0.004^2 + 2 * 0.0015^2) = sqrt(20.5e-6)
    assert error_barrier_se(_barrier(0.5, (0.1, 0.1), 0.1)) == pytest.approx(math.sqrt(20.5e-6))
    # alpha 1/4 between 10% and 30% with a 15% barrier: the line is at 15%, the peak at 30%:
    # se(30%) = sqrt(.21e-4) = 0.0045826, weighted 0.75 x 0.003 and 0.25 x 0.0045826:
    # 21e-6 + 5.0625e-6 + 1.3125e-6 = 27.375e-6
    assert error_barrier_se(_barrier(0.25, (0.1, 0.3), 0.15)) == pytest.approx(math.sqrt(27.375e-6))
    # at an endpoint (alpha 0, no barrier) the peak is that endpoint: two independent 10% errors
    assert error_barrier_se(_barrier(0.0, (0.1, 0.5), 0.0)) == pytest.approx(0.003 * math.sqrt(2))
    # a quarter of the examples doubles the noise
    assert error_barrier_se(_barrier(0.5, (0.1, 0.1), 0.1, n=2_500)) == pytest.approx(2 * math.sqrt(20.5e-6))


def test_s7_direct_over_indirect_is_defined_where_the_indirect_barrier_is_zero() -> None:
    """Found by the dry run: a 128-example indirect error barrier of 0 divided S7's ratio by zero."""
    from claims.test_s7_s12_strong_connectivity import _direct_over_indirect

    assert _direct_over_indirect(0.1, 0.4) == pytest.approx(0.25)
    assert _direct_over_indirect(0.0, 0.0) == 1.0 and _direct_over_indirect(0.2, 0.0) == 1.0
    from claims.test_s7_s12_strong_connectivity import _ratio_noise

    assert _ratio_noise([0.2, 0.1], [0.0, 0.4], [0.01, 0.01], [0.01, 0.01]) > 0  # no division by zero


def test_replicate_caps_and_child_seeds_are_declared_once() -> None:
    """Issue 26: a claim runs ``setting.replicates(n_seeds, cap)`` replicates, with its cap from claims.settings,
    and takes its children's SGD seeds from fixtures.recipes: no claim module declares a cap or a seed base of
    its own (a name it holds is the very object of those modules)."""
    import importlib
    from pathlib import Path

    import claims.settings
    import fixtures.recipes

    for path in sorted((Path(claims.settings.__file__).parent).glob("test_*.py")):
        module = importlib.import_module(f"claims.{path.stem}")
        for name, value in vars(module).items():
            if name.endswith(("CPU_SEEDS", "SEED_BASE")):
                shared = getattr(claims.settings, name, getattr(fixtures.recipes, name, None))
                assert value is shared, f"{path.name} declares its own {name}"
