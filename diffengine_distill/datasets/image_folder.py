"""A user's own images: a flat folder, or one sub-folder per class."""
from __future__ import annotations

import os
import os.path as osp

from mmengine.dataset import BaseDataset

from diffengine_distill.registry import DATASETS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def _looks_complete(path: str) -> bool:
    """Cheap check of one file (two small reads): PNG ends with IEND, JPEG
    starts with SOI and ends with EOI, other formats have a header PIL reads."""
    with open(path, "rb") as f:
        head = f.read(16)
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - len(PNG_END)))
        tail = f.read()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail == PNG_END
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    from PIL import Image
    with Image.open(path):
        return True


def _decodes(path: str) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001  (any decoder error means unreadable)
        return False


def find_unreadable_images(paths) -> list[str]:
    """Files that are not complete images, found before training starts rather
    than when a worker first loads them. A file failing the cheap check is
    decoded in full before it is reported (JPEGs may carry data after EOI)."""
    bad = []
    for path in paths:
        try:
            ok = _looks_complete(path)
        except Exception:  # noqa: BLE001  (unreadable header, I/O error)
            ok = False
        if not ok and not _decodes(path):
            bad.append(path)
    return bad


def check_image_files(paths, where: str) -> None:
    bad = find_unreadable_images(paths)
    if bad:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more"
                                         if len(bad) > 20 else "")
        raise ValueError(f"{where}: {len(bad)} of {len(paths)} image files are truncated or "
                         f"not images; remove or replace them:\n  {shown}")


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """Images under ``data_root``; class labels from sorted sub-folder names.

    Files directly in ``data_root`` get no label. Use the ``LoadImage``
    transform first in ``pipeline``. ``check_images`` scans every file once
    before training (end-of-file markers, ~0.1 ms per file) and names the
    truncated or non-image ones.
    """

    def __init__(self, data_root: str, pipeline=(), check_images: bool = True, **kwargs):
        self.check_images = check_images
        if not osp.isdir(osp.expanduser(data_root)):
            raise FileNotFoundError(
                f"ImageFolderDataset: data_root {data_root!r} is not a directory. "
                "Set train_dataloader.dataset.data_root to a folder of images "
                "(flat, or one sub-folder per class).")
        super().__init__(data_root=osp.expanduser(data_root), pipeline=list(pipeline),
                         **kwargs)

    def load_data_list(self) -> list[dict]:
        root = self.data_root
        classes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
        self._metainfo["classes"] = tuple(classes)
        data = []
        for label, folder in [(None, root)] + list(enumerate(osp.join(root, c) for c in classes)):
            walk = [(folder, [], os.listdir(folder))] if label is None else os.walk(folder)
            for dirpath, _, files in walk:
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        data.append(dict(img_path=osp.join(dirpath, name), gt_label=label))
        if not data:
            raise FileNotFoundError(
                f"ImageFolderDataset: no images ({', '.join(IMAGE_EXTENSIONS)}) "
                f"under {root!r}.")
        if self.check_images:
            check_image_files([d["img_path"] for d in data], f"ImageFolderDataset({root!r})")
        return data
