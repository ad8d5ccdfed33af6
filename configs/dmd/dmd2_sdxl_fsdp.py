# DMD2 of SDXL (dmd2_sdxl.py) with sharded training: each process keeps 1/N of
# the generator's and the fake score's weights, gradients and AdamW states
# (PyTorch FSDP2); the frozen real score, VAE and text encoders stay whole.
# Checkpoints hold full state dicts (resume with --resume, on any number of
# processes) and exports are ordinary diffusers folders, as without sharding.
#   mim train diffengine_distill dmd2_sdxl_fsdp.py --gpus 8 --launcher pytorch --amp
# Any other config shards the same way: add "../_base_/strategies/fsdp.py" to
# its _base_, or --cfg-options strategy.type=FullyShardStrategy.
_base_ = ["./dmd2_sdxl.py", "../_base_/strategies/fsdp.py"]
