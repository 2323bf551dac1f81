import pytest

from framework.schedule import Schedule, ScheduleError


def test_constant_linear_and_step():
    assert Schedule.parse(3.0)(12345) == 3.0
    s = Schedule.parse([[0, 10.0], [5000, 1000.0]])
    assert s(0) == 10.0 and s(5000) == 1000.0 and s(10000) == 1000.0
    assert s(2500) == pytest.approx(505.0)
    st = Schedule.parse({"mode": "step", "points": [[0, 1.0], [2000, 0.0]]})
    assert st(1999) == 1.0 and st(2000) == 0.0
    assert Schedule.parse(0.0).is_zero and not s.is_zero


@pytest.mark.parametrize("bad", ["abc", [[0, 1], [1]], {"mode": "cubic", "points": [[0, 1]]}, {"pts": []}, [[5, 1], [0, 2]], True])
def test_bad_schedules_name_the_key(bad):
    with pytest.raises(ScheduleError, match="system.loss.lambda_x"):
        Schedule.parse(bad, name="system.loss.lambda_x")
