"""The pure state machine against the worked trace of docs/adaptive-lr.md, and its edge cases."""
import math

import pytest

from hf_medtl.training.schedule import AdaptiveSchedule

# epoch, A, L, monitor, improved, saved, reduced, lr_scale, c, s, stop
TRACE = [
    (1, 0.6333, 1.1306, "train_accuracy", True, True, False, 1.0, 0, 0, False),
    (2, 0.6533, 1.2306, "train_accuracy", True, False, False, 1.0, 0, 0, False),
    (3, 0.7333, 1.2606, "train_accuracy", True, False, False, 1.0, 0, 0, False),
    (4, 0.7533, 1.2906, "train_accuracy", True, False, False, 1.0, 0, 0, False),
    (5, 0.7733, 1.3906, "train_accuracy", True, False, False, 1.0, 0, 0, False),
    (6, 0.7733, 1.4906, "train_accuracy", False, False, False, 1.0, 1, 0, False),
    (7, 0.7733, 1.4906, "train_accuracy", False, False, True, 0.5, 0, 1, False),
    (8, 0.7733, 1.2906, "train_accuracy", False, False, False, 0.5, 1, 1, False),
    (9, 0.9233, 1.2906, "val_loss", True, True, False, 0.5, 0, 1, False),
    (10, 1.0, 1.3906, "val_loss", False, False, False, 0.5, 1, 1, False),
    (11, 1.0, 1.3906, "val_loss", False, False, True, 0.25, 0, 2, True),
]


def test_worked_trace_row_by_row():
    sched = AdaptiveSchedule(threshold=0.9, patience=2, stop_patience=2, factor=0.5)
    for epoch, a, loss, monitor, improved, saved, reduced, scale, c, s, stop in TRACE:
        d = sched.step(a, loss)
        got = (d.monitor, d.improved, d.save_best, d.reduced, d.lr_scale, d.wait, d.reductions, d.stop)
        assert got == (monitor, improved, saved, reduced, scale, c, s, stop), f"epoch {epoch}"


def test_accuracy_phase_improvement_is_strict_and_compared_before_update():
    # The paper's pseudocode typo (A_best = max(A_best, A) before the test) would make every epoch "no".
    sched = AdaptiveSchedule()
    assert sched.step(0.5, 1.0).improved
    assert not sched.step(0.5, 0.5).improved  # equal accuracy is no improvement, even with lower loss
    assert sched.step(0.6, 2.0).improved and not sched.state.best_val_loss_in_acc_phase == 2.0


def test_first_val_loss_epoch_always_saves_and_best_acc_tracks_max():
    sched = AdaptiveSchedule(threshold=0.9)
    sched.step(0.5, 0.1)
    d = sched.step(0.95, 9.0)  # far worse loss than in the accuracy phase, but a separate best
    assert d.monitor == "val_loss" and d.save_best and sched.state.best_train_acc == 0.95
    assert sched.step(0.97, 9.0).improved is False  # equal loss is no improvement


def test_threshold_is_inclusive_and_counter_shared_across_phases():
    sched = AdaptiveSchedule(threshold=0.9, patience=2)
    sched.step(0.8, 1.0)
    assert sched.step(0.8, 1.0).wait == 1  # no improvement in the accuracy phase
    d = sched.step(0.9, math.inf)  # A == T monitors val loss; inf is not < inf: no improvement
    assert d.monitor == "val_loss" and d.reduced and d.wait == 0


def test_stop_after_stop_patience_reductions_and_custom_factor():
    sched = AdaptiveSchedule(threshold=0.5, patience=1, stop_patience=3, factor=0.1)
    sched.step(0.9, 1.0)
    decisions = [sched.step(0.9, 1.0) for _ in range(3)]
    assert [d.reductions for d in decisions] == [1, 2, 3]
    assert [d.stop for d in decisions] == [False, False, True]
    assert decisions[-1].lr_scale == pytest.approx(1e-3)


def test_state_round_trip():
    a = AdaptiveSchedule()
    for _, acc, loss, *_ in TRACE[:8]:
        a.step(acc, loss)
    b = AdaptiveSchedule()
    b.load_state_dict(a.state_dict())
    for _, acc, loss, *_ in TRACE[8:]:
        assert a.step(acc, loss) == b.step(acc, loss)


@pytest.mark.parametrize("kwargs", [dict(threshold=1.5), dict(patience=0), dict(stop_patience=0),
                                    dict(factor=1.0), dict(factor=0.0)])
def test_invalid_parameters_refused(kwargs):
    with pytest.raises(ValueError):
        AdaptiveSchedule(**kwargs)


def test_schedule_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, hf_medtl.training.schedule; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
