"""``model.compile``: the UNets are compiled in place and train as in eager mode."""
import copy

import pytest
import torch

from diffengine_distill.registry import MODELS

UNET = dict(type="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
            layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)


def pd_model(**kwargs):
    import diffengine_distill.models  # noqa: F401
    torch.manual_seed(0)
    return MODELS.build(dict(
        type="ProgressiveDistillation", unet=UNET, teacher_steps=8,
        scheduler=dict(type="DDPMScheduler", num_train_timesteps=1000),
        prediction_type="epsilon", **kwargs))


def test_compile_option_compiles_every_unet_and_keeps_the_names():
    model = pd_model(compile=dict(backend="eager"))
    eager = pd_model()
    unets = [m for m in model.modules() if type(m).__name__ == "UNet2DModel"]
    assert len(unets) == 2  # the student and PD's teacher
    assert all(m._compiled_call_impl is None for m in unets)  # nothing before the Runner
    assert model.compile_networks() == 2
    assert all(m._compiled_call_impl is not None for m in unets)
    assert model.compile_networks() == 0  # once
    assert list(model.state_dict()) == list(eager.state_dict())
    assert eager.compile_networks() == 0  # off by default


@pytest.mark.parametrize("option", ["fast", 1])
def test_compile_option_rejects_nonsense(option):
    with pytest.raises(TypeError, match="model.compile"):
        pd_model(compile=option)


def test_compiled_training_step_matches_eager():
    """Loss and updated weights of a PD step through AOTAutograd (the joint
    forward/backward graph inductor compiles; its C++ code generation takes
    minutes on a CPU) equal eager's."""
    from mmengine.optim import build_optim_wrapper
    model = pd_model(compile=dict(backend="aot_eager"))
    eager = copy.deepcopy(model)
    model.compile_networks()
    data = dict(inputs=torch.randn(4, 1, 8, 8).clamp(-1, 1),
                data_samples=dict(label=[None] * 4))
    losses = []
    for m in (eager, model):
        wrapper = build_optim_wrapper(m, dict(optimizer=dict(type="SGD", lr=0.1)))
        torch.manual_seed(1)
        losses.append(m.train_step(copy.deepcopy(data), wrapper)["loss"].item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, a), b in zip(eager.unet.state_dict().items(), model.unet.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
