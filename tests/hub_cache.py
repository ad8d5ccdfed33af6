"""A local Hugging Face cache holding tiny models under real hub ids.

``save_to_hub_cache(folder, "org/name", cache)`` copies a saved diffusers
folder into ``cache/models--org--name/snapshots/<rev>/`` with
``refs/main`` pointing at it, the layout ``huggingface_hub`` reads with
``HF_HUB_CACHE=cache HF_HUB_OFFLINE=1``. Tests then load the real ids
without any network.
"""
from __future__ import annotations

import hashlib
import os
import shutil


def save_to_hub_cache(folder: str, repo_id: str, cache: str) -> str:
    """Copy ``folder`` into ``cache`` as the snapshot of ``repo_id``; returns
    the snapshot folder."""
    repo = os.path.join(str(cache), "models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = os.path.join(repo, "snapshots", revision)
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(folder, snapshot)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    return snapshot
