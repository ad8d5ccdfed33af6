"""Let ``--resume`` load mmengine checkpoints under torch's weights_only load.

torch >= 2.6 loads with ``weights_only=True``; mmengine 0.10.7 checkpoints
hold its ``HistoryBuffer`` (message hub) and numpy arrays/scalars. Exactly
those types are allow-listed; weights_only stays on.
"""
import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _history_buffer_state(self) -> dict:
    # mmengine also pickles its class-level statistics functions, which go
    # through builtins.getattr (never allow-listed: it would admit anything);
    # they are re-registered at import, so the state needs only the data.
    return {k: v for k, v in self.__dict__.items() if k != "statistics_methods"}


def allow_mmengine_checkpoints() -> None:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32,
                                          np.uint32, np.bool_)]
    HistoryBuffer.__getstate__ = _history_buffer_state
    torch.serialization.add_safe_globals(
        [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
         multiarray.scalar, *dtypes])
