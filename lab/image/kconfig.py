"""Kernel configuration: parse a .config and check what the lab needs."""

from __future__ import annotations

from pathlib import Path

from lab.errors import KernelConfigError

# What a pmem lab cannot work without, and why (shown when refused).
REQUIRED_OPTIONS: dict[str, str] = {
    "FS_DAX": "DAX mounts (dax=always) and MAP_SYNC",
    "LIBNVDIMM": "NVDIMM bus and namespaces",
    "BLK_DEV_PMEM": "the /dev/pmemN block device",
    "ACPI_NFIT": "discovering QEMU's emulated NVDIMMs through the ACPI NFIT",
}

# Shown by doctor: useful, not required.
INTERESTING_OPTIONS = (
    "ZONE_DEVICE", "NVDIMM_PFN", "DEV_DAX_PMEM", "EXT4_FS", "XFS_FS",
    "VIRTIO_CONSOLE", "NET_9P_VIRTIO", "9P_FS", "KASAN", "LOCKDEP", "PROVE_LOCKING",
)


def parse_config(text: str) -> dict[str, str]:
    """CONFIG_X=value lines to {X: value}; '# CONFIG_X is not set' to 'n'."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            options[key[len("CONFIG_"):]] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[len("# CONFIG_"):-len(" is not set")]] = "n"
    return options


def missing_options(options: dict[str, str], required: dict[str, str] = REQUIRED_OPTIONS) -> list[str]:
    """Required options that are neither built in (y) nor modules (m)."""
    return [name for name in required if options.get(name, "n") not in ("y", "m")]


def check_config(path: Path, required: dict[str, str] = REQUIRED_OPTIONS) -> dict[str, str]:
    """Parse `path` and refuse a kernel lacking a required option."""
    options = parse_config(path.read_text(errors="replace"))
    missing = missing_options(options, required)
    if missing:
        why = "; ".join(f"CONFIG_{m} ({required[m]})" for m in missing)
        raise KernelConfigError(f"kernel config {path} lacks {why}: rebuild the kernel with them (=y or =m)")
    return options
