from .fully_shard import FullyShardStrategy

__all__ = ["FullyShardStrategy"]
