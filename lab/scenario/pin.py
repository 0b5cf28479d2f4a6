"""What an exported scenario pins: the exact image (id), its kernel and the QEMU it ran under.

A ref such as "debian12-pmem" can point at another kernel tomorrow. An export therefore records
the image id it ran on, and running it again checks that the ref still resolves to that image:
a different image is refused (it would be another experiment) unless the caller accepts it
(`--any-image`), and then it is a warning. A different QEMU is always a warning: the image is
what the kernel is, QEMU only emulates the platform, and the host may have been upgraded.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.errors import ConfigError


@dataclass(frozen=True)
class ImagePin:
    image_id: str
    kernel_version: str | None = None
    qemu_version: str | None = None


@dataclass(frozen=True)
class PinCheck:
    """The outcome of comparing a pin with what would run now: warnings to print (none: it matches)."""

    warnings: tuple[str, ...] = ()


def verify_pin(pin: ImagePin | None, ref: str, image_id: str, kernel_version: str, qemu_version: str | None,
               any_image: bool, where: str) -> PinCheck:
    """Refuse (ConfigError) when `ref` now resolves to an image other than the pinned one, unless
    `any_image`; `where` names the scenario in messages."""
    if pin is None:
        return PinCheck()
    warnings: list[str] = []
    if pin.image_id != image_id:
        pinned = f"image {pin.image_id}" + (f" (kernel {pin.kernel_version})" if pin.kernel_version else "")
        what = (f"{where} pins {pinned}, but image {ref!r} now resolves to {image_id} (kernel {kernel_version})")
        if not any_image:
            raise ConfigError(f"{what}: set image = \"{pin.image_id}\" there to run the pinned image if it is in "
                              "the cache, or pass --any-image to run on the other one")
        warnings.append(f"{what}; running on it anyway (--any-image): the verdict may differ for that reason alone")
    if pin.qemu_version and qemu_version and pin.qemu_version != qemu_version:
        warnings.append(f"{where} ran under QEMU {pin.qemu_version}; this host has QEMU {qemu_version}")
    return PinCheck(tuple(warnings))
