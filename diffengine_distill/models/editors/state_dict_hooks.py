"""State-dict hooks: checkpoints keep the same keys with or without a DDP
wrapper around a sub-network, and a LoRA student's checkpoints keep only its
adapters (the frozen base reloads from the base model)."""
from mmengine.model import is_model_wrapper


def _wrapped_children(module, prefix):
    return [f"{prefix}{name}." for name, child in module._modules.items()
            if is_model_wrapper(child)]


def drop_wrapper_keys(module, state_dict, prefix, local_metadata):
    for head in _wrapped_children(module, prefix):
        for key in [k for k in state_dict if k.startswith(head + "module.")]:
            state_dict[head + key[len(head) + 7:]] = state_dict.pop(key)


def add_wrapper_keys(module, state_dict, prefix, *args):
    for head in _wrapped_children(module, prefix):
        for key in [k for k in state_dict if k.startswith(head)
                    and not k.startswith(head + "module.")]:
            state_dict[head + "module." + key[len(head):]] = state_dict.pop(key)


def drop_frozen_unet(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + "unet.") and "lora_" not in k]:
        del state_dict[key]


def ignore_missing_frozen_unet(module, incompatible):
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not (k.startswith("unet.") and "lora_" not in k)]
