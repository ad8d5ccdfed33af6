"""Sharded data parallelism (PyTorch FSDP2, ``fully_shard``) for mmengine's
``FlexibleRunner``: ``strategy=dict(type="FullyShardStrategy")`` in a config.

Each process keeps 1/N of every trainable sub-network (its weights, gradients
and optimizer states); frozen teachers, the VAE and the text encoders stay
whole on every process. Checkpoints hold the full, unsharded state dicts in
the same format as unsharded runs (model keys and optimizer states), written
by rank 0; exports and sample grids see an ordinary, unsharded UNet.

mmengine's own ``FSDPStrategy`` wraps with FSDP1, whose full state dict
crashes on CPU with gloo in current torch; FSDP2 runs on CPU (gloo) and GPU
(NCCL) alike.
"""
from __future__ import annotations

import copy
import os
import time

import torch
import torch.distributed as dist
from mmengine.dist import is_main_process
from mmengine.optim import OptimWrapperDict
from torch import nn

from diffengine_distill.registry import STRATEGIES

try:
    from mmengine._strategy import DDPStrategy
except ImportError:  # mmengine builds without the strategies
    DDPStrategy = object

DTYPES = dict(float32=torch.float32, bfloat16=torch.bfloat16, float16=torch.float16)


def _unet_blocks(module: nn.Module) -> list[nn.Module]:
    """The down, mid and up blocks of every diffusers UNet inside ``module``:
    each becomes its own shard group, so only one block is gathered at a time."""
    blocks = []
    for m in module.modules():
        if hasattr(m, "down_blocks") and hasattr(m, "up_blocks"):
            mid = [m.mid_block] if getattr(m, "mid_block", None) is not None else []
            blocks += [*m.down_blocks, *mid, *m.up_blocks]
    return blocks


def _meta_skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose tensors live on the meta device (no memory):
    the shape of the unsharded module that exports are gathered into."""
    memo = {}
    for t in module.parameters():
        memo[id(t)] = nn.Parameter(torch.empty_like(t, device="meta"),
                                   requires_grad=t.requires_grad)
    for t in module.buffers():
        memo[id(t)] = torch.empty_like(t, device="meta")
    return copy.deepcopy(module, memo)


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(full_state_dict=True, **kw)


@STRATEGIES.register_module()
class FullyShardStrategy(DDPStrategy):
    """FSDP2 for the trainable sub-networks of a model.

    Args:
        modules: names of the model's sub-networks to shard; default every
            direct child with a trainable parameter (PD / SFD: ``unet``; DMD:
            ``unet`` and ``critic``), except the data preprocessor.
        reshard_after_forward: free the gathered weights after each forward
            (less memory, one more all-gather in backward).
        param_dtype: e.g. ``"bfloat16"``: FSDP2's mixed precision (weights
            gathered and computed in bf16, gradients reduced and kept in
            fp32, fp32 master weights in the optimizer). Default: as stored.
        export_modules: the sharded sub-networks that exports and sample
            grids use, gathered whole on rank 0 when a hook asks for them.
        **kwargs: mmengine's ``DDPStrategy`` arguments.
    """

    def __init__(self, *, modules: list[str] | None = None,
                 reshard_after_forward: bool = True, param_dtype: str | None = None,
                 export_modules: tuple = ("unet",), **kwargs):
        if DDPStrategy is object:
            raise ImportError("FullyShardStrategy needs mmengine's strategies "
                              "(mmengine >= 0.8 with torch >= 2.0).")
        if param_dtype is not None and param_dtype not in DTYPES:
            raise ValueError(f"FullyShardStrategy: param_dtype must be one of "
                             f"{sorted(DTYPES)}, got {param_dtype!r}.")
        super().__init__(**kwargs)
        self.shard_names = None if modules is None else list(modules)
        self.reshard_after_forward = reshard_after_forward
        self.param_dtype = param_dtype
        self.export_modules = tuple(export_modules)
        # Sharded sub-networks: name -> meta skeleton of the whole module (export
        # modules), or None.
        self.sharded: dict[str, nn.Module | None] = {}

    # -- wrapping ------------------------------------------------------------
    def _wrap_model(self, model: nn.Module) -> nn.Module:
        """Shard in place: the model keeps its class, attributes and state-dict
        keys; only the trainable sub-networks' parameters become DTensors."""
        from mmengine.device import get_device
        model = self.convert_model(model.to(get_device()))
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            self.logger.info("FullyShardStrategy: one process, nothing to shard.")
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        device = torch.device(get_device())
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        options = dict(mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        if self.param_dtype is not None:
            options["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=DTYPES[self.param_dtype], reduce_dtype=torch.float32)
        names = self.shard_names
        if names is None:
            names = [name for name, child in model.named_children()
                     if name != "data_preprocessor"
                     and any(p.requires_grad for p in child.parameters())]
        for name in names:
            module = getattr(model, name, None)
            if not isinstance(module, nn.Module):
                children = [n for n, _ in model.named_children()]
                raise ValueError(f"FullyShardStrategy: the model has no sub-network {name!r} "
                                 f"to shard (it has {children}).")
            self.sharded[name] = _meta_skeleton(module) if name in self.export_modules else None
            # Randomly initialised parts (DMD2's GAN head) differ between ranks
            # (diff_rank_seed): start every shard from rank 0's weights, as DDP does.
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
            for block in _unet_blocks(module):
                fully_shard(block, **options)
            fully_shard(module, **options)
        self.logger.info(f"FullyShardStrategy: sharded {names} over "
                         f"{dist.get_world_size()} processes.")
        return model

    def unsharded_model(self) -> nn.Module:
        """Call on EVERY rank (it gathers). Rank 0 gets a view of the model
        whose sharded export modules (the UNet) are whole, ordinary modules
        on the training device (one extra copy while a hook runs): what
        exports and sample grids use. Other ranks get the live model back."""
        from mmengine.device import get_device
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        gathered = {}
        for name, skeleton in self.sharded.items():
            if skeleton is None:
                continue
            module = getattr(self.model, name)
            full = get_model_state_dict(module, options=_full_options(cpu_offload=True))
            if is_main_process():
                whole = copy.deepcopy(skeleton).to_empty(device=get_device())
                whole.load_state_dict(full)
                gathered[name] = whole.train(module.training)
        if not gathered:
            return self.model
        view = copy.copy(self.model)  # shares everything but the gathered modules
        view._modules = dict(self.model._modules, **gathered)
        view.gathered_from_shards = True  # the live weights, not an EMA copy
        return view

    def _build_param_scheduler(self, scheduler, optim_wrapper, default_args: dict):
        # mmengine pops max_iters from the dict it shares between the
        # optimizers of an OptimWrapperDict (DMD): give each its own copy.
        return super()._build_param_scheduler(scheduler, optim_wrapper, dict(default_args))

    # -- checkpoints: full state dicts in the format of unsharded runs ---------
    def model_state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        return get_model_state_dict(self.model, options=_full_options(cpu_offload=True))

    def _wrappers(self, optim_wrapper=None) -> dict:
        optim_wrapper = self.optim_wrapper if optim_wrapper is None else optim_wrapper
        if isinstance(optim_wrapper, OptimWrapperDict):
            return dict(optim_wrapper.items())
        return {None: optim_wrapper}

    def _param_names(self, optimizer) -> list[str]:
        """The model's name of each optimizer parameter, in the optimizer's
        order (the integer ids of a torch optimizer state dict)."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]

    def optim_state_dict(self) -> dict:
        """Every optimizer's full state, keyed by parameter index as
        ``optimizer.state_dict()`` is (a collective; complete on rank 0)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        out = {}
        for key, wrapper in self._wrappers().items():
            state = wrapper.state_dict()  # + the loss scaler of AMP wrappers
            names = self._param_names(wrapper.optimizer)
            full = get_optimizer_state_dict(self.model, wrapper.optimizer,
                                            options=_full_options(cpu_offload=True))
            state["state"] = {i: full["state"][n] for i, n in enumerate(names)
                              if n in full.get("state", {})}
            out[key] = state
        return out[None] if None in out else out

    def load_optim_state_dict(self, state_dict: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        for key, wrapper in self._wrappers().items():
            saved = dict(state_dict if key is None else state_dict[key])
            scaler = saved.pop("loss_scaler", None)
            names = self._param_names(wrapper.optimizer)
            by_name = dict(
                state={names[int(i)]: v for i, v in saved["state"].items()},
                param_groups=[dict(g, params=[names[int(i)] for i in g["params"]])
                              for g in saved["param_groups"]])
            # strict=False: parameters that never had a gradient (DMD2's GAN
            # head before the GAN term starts) have no state, as in torch's format.
            set_optimizer_state_dict(self.model, wrapper.optimizer, by_name,
                                     options=_full_options(strict=False))
            # torch initialises every state with a zero-gradient step first:
            # drop those the checkpoint did not have, so resumed runs match.
            params = [p for g in wrapper.optimizer.param_groups for p in g["params"]]
            for param, name in zip(params, names):
                if name not in by_name["state"]:
                    wrapper.optimizer.state.pop(param, None)
            if scaler is not None and hasattr(wrapper, "loss_scaler"):
                wrapper.loss_scaler.load_state_dict(scaler)

    def load_checkpoint(self, filename: str, *, map_location="cpu", strict: bool = False,
                        revise_keys: list = [(r"^module.", "")],  # noqa: B006 (mmengine's)
                        callback=None) -> dict:
        """Every process maps the checkpoint file (``mmap``: the pages are
        shared, not copied) and keeps its own shard of each tensor."""
        self.logger.info(f"Load checkpoint from {filename}")
        checkpoint = torch.load(filename, map_location="cpu", mmap=True, weights_only=True)
        if callback is not None:
            callback(checkpoint)
        self.load_model_state_dict(checkpoint.pop("state_dict"), strict=strict)
        return checkpoint

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list = [(r"^module.", "")]) -> None:  # noqa: B006
        from torch.distributed.checkpoint.state_dict import set_model_state_dict
        set_model_state_dict(self.model, state_dict, options=_full_options(strict=strict))

    def resume(self, filename: str, **kwargs) -> dict:
        from diffengine_distill.apis.train import check_model_matches
        check_model_matches(self.model, filename)  # another model would load partially
        return super().resume(filename, **kwargs)

    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, extra_ckpt: dict | None = None,
                        callback=None) -> None:
        """Every rank gathers; rank 0 writes ``<name>.tmp`` then renames it, so
        a run killed mid-save never leaves a half-written checkpoint."""
        import mmengine
        from mmengine.runner.checkpoint import save_checkpoint
        checkpoint = dict(state_dict=self.model_state_dict())
        if save_optimizer and hasattr(self, "optim_wrapper"):
            checkpoint["optimizer"] = self.optim_state_dict()
        if save_param_scheduler and hasattr(self, "param_schedulers"):
            checkpoint["param_schedulers"] = self.scheduler_state_dict()
        extra_ckpt = dict(extra_ckpt or {})
        extra_ckpt.setdefault("meta", {}).update(
            seed=self.seed, time=time.strftime("%Y%m%d_%H%M%S", time.localtime()),
            mmengine=mmengine.__version__)
        checkpoint.update(extra_ckpt)
        if callback is not None:
            callback(checkpoint)
        if is_main_process():
            tmp = filename + ".tmp"
            save_checkpoint(checkpoint, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())  # on disk before the rename makes it visible
            os.replace(tmp, filename)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # no rank runs ahead of a checkpoint being written
