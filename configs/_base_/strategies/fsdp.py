# Sharded training (PyTorch FSDP2 through mmengine's FlexibleRunner): each
# process keeps 1/N of the trainable networks' weights, gradients and AdamW
# states; frozen teachers, VAE and text encoders stay whole. Add it to any
# config with _base_ = [..., "../_base_/strategies/fsdp.py"] or on the command
# line: --cfg-options strategy.type=FullyShardStrategy
strategy = dict(type="FullyShardStrategy")
