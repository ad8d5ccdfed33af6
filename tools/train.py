"""Train or distil: ``python tools/train.py CONFIG [--resume] [--work-dir DIR] ...``

``mim train diffengine_distill CONFIG`` runs this file; the logic lives in
``diffengine_distill.apis.train`` so editable and wheel installs agree.
"""
import sys

# diffusers, mmengine and peft import bitsandbytes whenever it is installed (a
# second of start-up and, on some CPUs, a warning about its kernels). Hide it
# from them; apis.train imports it only for a config with an 8-bit optimizer.
HIDE_BITSANDBYTES = "bitsandbytes" not in sys.modules
if HIDE_BITSANDBYTES:
    sys.modules["bitsandbytes"] = None


def _check_arguments() -> None:
    """Parse (``--help``, bad arguments) before torch, diffusers and mmengine
    load: apis/train.py's own parser, read by path without the package."""
    import importlib.util
    import os.path as osp
    package = importlib.util.find_spec("diffengine_distill")
    path = osp.join(osp.dirname(package.origin), "apis", "train.py")
    spec = importlib.util.spec_from_file_location("_train_arguments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # stdlib imports only at its top level
    module.parse_args()


if __name__ == "__main__":
    _check_arguments()

from diffengine_distill.apis import train  # noqa: E402

if __name__ == "__main__":
    train.BITSANDBYTES_HIDDEN = HIDE_BITSANDBYTES
    train.main()
