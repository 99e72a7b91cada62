"""The statistical rules the claim checks share (claims/rules.py), on made-up numbers."""

from __future__ import annotations

import math

import pytest

from claims.rules import (
    MC_NOISE_STDERRS,
    connected_threshold,
    decreasing_steps,
    first_time_within,
    mean_std,
    outside_band,
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


def test_a_known_finding_covers_failed_assertions_only() -> None:
    """A strict xfail for a finding must not hide a crash or a measurement bug at that setting."""
    from claims.rules import MeasurementBug
    from claims.settings import params

    [param] = params(["mlp512-fmnist"], [], findings={"mlp512-fmnist": "measured numbers"})
    mark = next(m for m in param.marks if m.name == "xfail")
    assert mark.kwargs["raises"] is AssertionError and mark.kwargs["strict"] is True
    assert issubclass(MeasurementBug, RuntimeError) and not issubclass(MeasurementBug, AssertionError)
    with pytest.raises(ValueError, match="does not use"):
        params(["mlp512-fmnist"], [], findings={"mlp128-fmnist": "x"})


def test_a_check_can_take_an_xdist_group_of_its_own_that_node_ids_still_strip() -> None:
    from claims.settings import params
    from lmccheck.nodeids import base_nodeid

    def group_of(param: object) -> str:
        return next(m.args[0] for m in param.marks if m.name == "xdist_group")  # type: ignore[attr-defined]

    [plain] = params(["mlp512-fmnist"], [])
    [own, gpu] = params(["mlp512-fmnist"], ["vgg16-ln-cifar10"], group="children")
    assert group_of(plain) == "mlp512-fmnist"
    assert (group_of(own), group_of(gpu)) == ("mlp512-fmnist.children", "vgg16-ln-cifar10.children")
    node = "claims/test_s4_children.py::test_s4[mlp512-fmnist]"
    assert base_nodeid(f"{node}@{group_of(own)}") == node
