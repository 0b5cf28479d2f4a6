"""The `mapsync` guest helper's parameters and command line (source: images/guest/mapsync.c)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lab.errors import ConfigError
from lab.oracles.records import RecordLayout

PAGE = 4096
WORKLOAD_FILE = "mapsync.dat"


@dataclass(frozen=True)
class MapsyncParams:
    records: int = 100
    record_size: int = 64
    records_per_page: int = 1
    prealloc: bool = False  # fallocate (blocks exist) vs ftruncate (every first store allocates)
    map_sync: bool = True  # MAP_SHARED_VALIDATE|MAP_SYNC vs plain MAP_SHARED (the negative control)
    file_size: int | None = None
    delay_us: int = 0

    def __post_init__(self) -> None:
        if self.records <= 0:
            raise ConfigError(f"--records must be at least 1, got {self.records}")
        if self.record_size < 64 or self.record_size % 8 or self.record_size > PAGE:
            raise ConfigError(f"--record-size must be a multiple of 8 in 64..{PAGE}, got {self.record_size}")
        if self.records_per_page < 1 or self.records_per_page * self.record_size > PAGE:
            raise ConfigError(f"--records-per-page {self.records_per_page} x --record-size {self.record_size} "
                              f"must fit in a {PAGE}-byte page")
        if self.file_size is not None and self.file_size < self.needed_size:
            raise ConfigError(f"--file-size {self.file_size} is too small for {self.records} records "
                              f"(needs {self.needed_size})")

    @property
    def layout(self) -> RecordLayout:
        return RecordLayout(self.record_size, self.records_per_page)

    @property
    def needed_size(self) -> int:
        return -(-self.records // self.records_per_page) * PAGE

    def argv(self, path: str) -> list[str]:
        argv = ["mapsync", "--file", path, "--records", str(self.records),
                "--record-size", str(self.record_size), "--records-per-page", str(self.records_per_page)]
        if self.file_size is not None:
            argv += ["--file-size", str(self.file_size)]
        if self.prealloc:
            argv.append("--prealloc")
        if not self.map_sync:
            argv.append("--no-map-sync")
        if self.delay_us:
            argv += ["--delay-us", str(self.delay_us)]
        return argv

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
