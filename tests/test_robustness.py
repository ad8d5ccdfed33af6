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


def finite_loss_inf_grads(net):
    """sqrt at 0: the loss is 0, its gradient +inf (an overflow in backward)."""
    return torch.sqrt(net.weight - net.weight.detach()).sum() + loss_of(net)


@pytest.mark.parametrize("clip", [None, dict(max_norm=1.0)])
def test_nonfinite_gradients_with_a_finite_loss_skip_the_step(clip):
    MessageHub.get_instance("test_robustness_grads")
    net = torch.nn.Linear(2, 1)
    wrapper = GuardedOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                  max_consecutive_nonfinite=3, clip_grad=clip)
    before = [p.clone() for p in net.parameters()]
    loss = finite_loss_inf_grads(net)
    assert torch.isfinite(loss)
    wrapper.update_params(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # not NaN-poisoned
    assert wrapper.last_update_skipped and wrapper.skipped_steps == 1
    assert wrapper.nonfinite_in_a_row == 1
    wrapper.update_params(loss_of(net))  # a good step applies and resets the streak
    # d loss / d (weight, bias) = (1, 1, 1): norm sqrt(3), clipped to 1 if asked.
    scale = min(1.0, clip["max_norm"] / 3 ** 0.5) if clip else 1.0
    torch.testing.assert_close(net.weight, before[0] - 0.1 * scale * torch.ones(1, 2))
    assert wrapper.nonfinite_in_a_row == 0 and not wrapper.last_update_skipped
    # Bad gradients and bad losses share the limit on consecutive skips.
    wrapper.update_params(finite_loss_inf_grads(net))
    wrapper.update_params(loss_of(net, bad=True))
    with pytest.raises(FloatingPointError, match="3 times in a row"):
        wrapper.update_params(finite_loss_inf_grads(net))
    assert wrapper.skipped_steps == 4


def test_diverging_run_stops_and_keeps_finite_checkpoints(tmp_path):
    from conftest import ROOT, mim_train
    cfg = tmp_path / "diverge.py"  # trains normally for 4 iterations, then the LR explodes
    cfg.write_text(f"_base_ = [{ROOT + '/tests/configs/teacher_tiny.py'!r}]\n"
                   "param_scheduler = [dict(type='MultiStepLR', by_epoch=False, "
                   "milestones=[4], gamma=1e30)]\n")
    proc = mim_train(str(cfg), tmp_path, "--cfg-options", "train_cfg.max_iters=12",
                     "optim_wrapper.max_consecutive_nonfinite=2", check=False)
    assert proc.returncode != 0
    assert "FloatingPointError" in proc.stderr and "NaN/Inf" in proc.stderr
    ckpts = sorted(tmp_path.glob("iter_*.pth"))
    assert {"iter_2.pth", "iter_4.pth"} <= {p.name for p in ckpts}
    for ckpt in ckpts:
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()), ckpt


def test_amp_overflow_is_left_to_the_grad_scaler(monkeypatch):
    """fp16 --amp: gradients that overflow once scaled are the GradScaler's
    signal. It must see them (unscaled, not nan_to_num'ed or skipped by the
    guard): it skips that step itself and halves its scale; the guard counts
    nothing and the next step, at the lower scale, applies."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    from diffengine_distill.engine.optimizers import GuardedAmpOptimWrapper
    monkeypatch.setattr(amp_optimizer_wrapper, "is_cuda_available", lambda: True)  # CPU test
    MessageHub.get_instance("test_robustness_amp")
    net = torch.nn.Linear(2, 1)
    wrapper = GuardedAmpOptimWrapper(optimizer=torch.optim.SGD(net.parameters(), lr=1e-36),
                                     dtype="float16", max_consecutive_nonfinite=1)
    wrapper.loss_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    before = [p.clone() for p in net.parameters()]
    # d loss / d w = 1e34: finite, but 1e34 * 2^16 overflows fp32 (3.4e38); at 2^15 it does not.
    wrapper.update_params(loss_of(net) * 1e34)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert wrapper.loss_scaler.get_scale() == 2.0 ** 15  # backed off
    assert wrapper.skipped_steps == 0 and not wrapper.last_update_skipped
    wrapper.update_params(loss_of(net) * 1e34)
    torch.testing.assert_close(net.weight, before[0] - 1e-36 * 1e34 * torch.ones(1, 2))
