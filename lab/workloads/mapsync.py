"""The `mapsync` guest helper's parameters and command line (source: images/guest/mapsync.c).

One params model serves scenarios ([workload] / [matrix]), the command line
(`pmemlab run mapsync`) and stored cases: every rule is checked here, once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, ValidationInfo,
                      field_validator, model_serializer)

from lab.errors import ConfigError
from lab.oracles.records import MIN_RECORD_SIZE, PAGE_SIZE as PAGE, RecordLayout

WORKLOAD_FILE = "mapsync.dat"

Records = Annotated[int, Field(ge=1)]
RecordSize = Annotated[int, Field(ge=MIN_RECORD_SIZE, le=PAGE, multiple_of=8)]
PerPage = Annotated[int, Field(ge=1, le=PAGE // MIN_RECORD_SIZE)]
DelayUs = Annotated[int, Field(ge=0)]
# How each record is made persistent: a cache-line flush (auto: the best the CPU has), non-temporal
# stores (nt), or nothing (none: persistent only where the caches are: eADR).
Flush = Literal["auto", "clwb", "clflushopt", "clflush", "nt", "none"]


class MapsyncParams(BaseModel):
    """What the mapsync workload writes. Per-field constraints sit in the annotations, so every
    [matrix] value is checked against them too; cross-field rules are checked per cell."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    records: Records = 100
    record_size: RecordSize = 64
    records_per_page: PerPage = 1
    prealloc: bool = False  # fallocate (blocks exist, unwritten) vs ftruncate (every first store allocates)
    map_sync: bool = True  # MAP_SHARED_VALIDATE|MAP_SYNC vs plain MAP_SHARED (the negative control)
    delay_us: DelayUs = 0
    file_size: int | None = Field(default=None, ge=1)  # default: just big enough for the records
    flush: Flush = "auto"
    fence: bool = True  # false: no fence after the flush (an ADR negative control)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """flush and fence only when they are not the defaults: stored cases (and their ids) from
        before they existed stay the same."""
        data: dict[str, Any] = handler(self)
        if data.get("flush") == "auto":
            data.pop("flush")
        if data.get("fence") is True:
            data.pop("fence")
        return data

    @field_validator("records_per_page")
    @classmethod
    def _records_fit_a_page(cls, per_page: int, info: ValidationInfo) -> int:
        size = info.data.get("record_size")  # absent when record_size itself was invalid
        if size is not None and per_page * size > PAGE:
            raise ValueError(f"records_per_page = {per_page} x record_size = {size} is {per_page * size} bytes, "
                             f"more than a {PAGE}-byte page")
        return per_page

    @field_validator("file_size")
    @classmethod
    def _file_holds_records(cls, file_size: int | None, info: ValidationInfo) -> int | None:
        records, per_page = info.data.get("records"), info.data.get("records_per_page")
        if file_size is not None and records is not None and per_page is not None:
            needed = -(-records // per_page) * PAGE
            if file_size < needed:
                raise ValueError(f"file_size = {file_size} is too small for {records} records (needs {needed})")
        return file_size

    @classmethod
    def from_options(cls, **values: Any) -> MapsyncParams:
        """From command-line options: a ConfigError naming the option instead of a ValidationError."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problem = exc.errors()[0]
            name = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else "options"
            raise ConfigError(f"{name}: {problem['msg']}") from None

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
        if self.flush != "auto":
            argv += ["--flush", self.flush]
        if not self.fence:
            argv.append("--no-fence")
        return argv
