"""Where the lab keeps things: shipped assets (recipes, guest sources, scenarios), the image cache, run directories."""

from __future__ import annotations

import os
from pathlib import Path

from lab.errors import LabError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# An installed wheel carries images/ and scenarios/ here (pyproject's force-include); a checkout or an
# editable install has them at the top of the repository.
PACKAGED_ASSETS = PACKAGE_DIR / "_assets"


def asset_dir(name: str, root: Path | None = None, packaged: Path | None = None) -> Path:
    """The shipped directory `name` (images, scenarios): inside the installed package, else in the checkout."""
    candidates = [(packaged or PACKAGED_ASSETS) / name, (root or REPO_ROOT) / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise LabError(f"{name}/ not found at {candidates[0]} (installed package) or {candidates[1]} (checkout): "
                   "reinstall pmemlab")


def images_dir() -> Path:
    """Recipes and guest sources (images/); PMEMLAB_IMAGES_DIR overrides."""
    env = os.environ.get("PMEMLAB_IMAGES_DIR")
    return Path(env) if env else asset_dir("images")


def scenarios_dir() -> Path:
    """The shipped scenario files (scenarios/*.toml); PMEMLAB_SCENARIOS_DIR overrides."""
    env = os.environ.get("PMEMLAB_SCENARIOS_DIR")
    return Path(env) if env else asset_dir("scenarios")


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


DB_ENV = "PMEMLAB_DB"  # the results database URL for child processes: never on a command line (ps shows it)


def env_with_db(url: str | None) -> dict[str, str]:
    """This process's environment with the results database URL for a child pmemlab."""
    env = dict(os.environ)
    if url:
        env[DB_ENV] = url
    return env
