"""The attention kernels of a UNet (``model.attention``)."""


ATTENTION_BACKENDS = ("sdpa", "xformers", "eager")


def set_attention(unet, backend: str) -> None:
    """Attention kernels of every Attention layer: torch SDPA (diffusers'
    default, flash / memory-efficient on GPU), xformers, or the plain
    softmax(QK^T)V of ``AttnProcessor`` (a reference, most memory)."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"model.attention={backend!r} is not one of {ATTENTION_BACKENDS}.")
    if backend == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError as err:
            raise ImportError("model.attention='xformers' needs the xformers package (pip "
                              "install xformers, CUDA builds); 'sdpa' (the default) uses "
                              "torch's own memory-efficient kernels.") from err
        unet.enable_xformers_memory_efficient_attention()
    elif backend == "eager":
        from diffusers.models.attention_processor import Attention, AttnProcessor
        for module in unet.modules():
            if isinstance(module, Attention):
                module.set_processor(AttnProcessor())
