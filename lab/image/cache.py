"""The image cache: images/<id>/ (complete entries only) and refs/<name> -> id."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import ImageError

DEFAULT_REF = "debian12-pmem"


@dataclass(frozen=True)
class Image:
    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.path / str(self.manifest["initramfs"])

    @property
    def config(self) -> Path | None:
        config = self.path / "config"
        return config if config.is_file() else None

    @property
    def kernel_version(self) -> str:
        return str(self.manifest["kernel_version"])


def find_by_id(cache: Path, image_id: str) -> Image | None:
    path = cache / "images" / image_id
    manifest = path / "manifest.json"  # written last: its presence marks a complete entry
    if not manifest.is_file():
        return None
    return Image(image_id, path, json.loads(manifest.read_text()))


def set_ref(cache: Path, ref: str, image_id: str) -> None:
    refs = cache / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    tmp = refs / f".{ref}.{os.getpid()}"
    tmp.write_text(image_id + "\n")
    tmp.rename(refs / ref)


def list_images(cache: Path) -> list[Image]:
    images = cache / "images"
    if not images.is_dir():
        return []
    found = [find_by_id(cache, p.name) for p in sorted(images.iterdir()) if not p.name.startswith(".")]
    return [i for i in found if i is not None]


def list_refs(cache: Path) -> dict[str, str]:
    refs = cache / "refs"
    if not refs.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in sorted(refs.iterdir()) if not p.name.startswith(".")}


def resolve(cache: Path, name: str = DEFAULT_REF) -> Image:
    """An image by ref name, full id or unique id prefix; a clear error otherwise."""
    ref = cache / "refs" / name
    if ref.is_file():
        image = find_by_id(cache, ref.read_text().strip())
        if image is not None:
            return image
    matches = [i for i in list_images(cache) if i.id.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ImageError(f"image {name!r} is ambiguous: {', '.join(i.id for i in matches)}")
    raise ImageError(f"no guest image {name!r} in {cache}: build it with 'pmemlab image build'")
