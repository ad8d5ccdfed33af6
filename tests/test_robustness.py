"""Faults: non-finite losses are skipped on every rank and stop a diverged run."""
import pytest
import torch
from mmengine.logging import MessageHub

from diffengine_distill.engine.optimizers import GuardedOptimWrapper


def guarded(max_bad=3):
    MessageHub.get_instance("test_robustness")
    net = torch.nn.Linear(2, 1)
    return net, GuardedOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                    max_consecutive_nonfinite=max_bad)


def loss_of(net, bad=False):
    loss = net(torch.ones(1, 2)).sum()
    return loss * float("nan") if bad else loss


def test_nonfinite_loss_skips_the_update_and_counts():
    net, wrapper = guarded()
    before = [p.clone() for p in net.parameters()]
    wrapper.update_params(loss_of(net, bad=True))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert wrapper.skipped_steps == 1 and wrapper.last_update_skipped
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())
    wrapper.update_params(loss_of(net))  # a good loss updates and resets the streak
    assert not wrapper.last_update_skipped and wrapper.nonfinite_in_a_row == 0
    assert not torch.equal(before[0], net.weight)
    assert MessageHub.get_current_instance().get_scalar("train/skipped_steps").current() == 1


def test_too_many_in_a_row_stop_with_the_fix():
    net, wrapper = guarded(max_bad=3)
    wrapper.update_params(loss_of(net, bad=True))
    wrapper.update_params(loss_of(net, bad=True))
    with pytest.raises(FloatingPointError, match="3 times in a row.*--resume"):
        wrapper.update_params(loss_of(net, bad=True))
    with pytest.raises(ValueError, match="max_consecutive_nonfinite must be >= 1"):
        guarded(max_bad=0)


def test_diverging_run_stops_and_keeps_finite_checkpoints(tmp_path):
    from conftest import mim_train
    proc = mim_train("tests/configs/teacher_tiny.py", tmp_path, "--cfg-options",
                     "optim_wrapper.optimizer.lr=1e30", "train_cfg.max_iters=12",
                     "optim_wrapper.max_consecutive_nonfinite=2", check=False)
    assert proc.returncode != 0
    assert "FloatingPointError" in proc.stderr and "NaN/Inf" in proc.stderr
    for ckpt in tmp_path.glob("iter_*.pth"):
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()), ckpt
