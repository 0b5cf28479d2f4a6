"""Where the lab keeps things: repo assets, the image cache, run directories."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def images_dir() -> Path:
    """Recipes and guest sources (images/ of the checkout)."""
    return Path(os.environ.get("PMEMLAB_IMAGES_DIR", REPO_ROOT / "images"))


def cache_dir() -> Path:
    """Content-addressed images, downloads, accelerator verdicts."""
    env = os.environ.get("PMEMLAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pmemlab"


def data_dir() -> Path:
    """Run directories and the results database."""
    env = os.environ.get("PMEMLAB_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pmemlab"


def runs_dir() -> Path:
    return data_dir() / "runs"
