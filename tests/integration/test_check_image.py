"""`pmemlab check`: a given crash image judged with a power cut's oracles, on a copy of it.

A real MAP_SYNC run keeps its capture; checked as it is, every acknowledged record is intact;
with bytes flipped inside one acknowledged record, exactly that record is reported corrupt
(on the restored machine, which must re-read the capture's namespace, and on a cold one).
A raw ext4 image made on the host mounts from a raw-mode namespace.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import subprocess
from pathlib import Path

from lab.crash.given_image import ImageCheck, ImageFormat, RecordSpec, check_image, inspect_image
from lab.crash.point import CrashPoint
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import Image
from lab.oracles.records import MAGIC
from lab.runner.guest_run import RunHooks, WorkloadResult
from lab.runner.machines import BootMode
from lab.verdict import Verdict
from lab.vm.accel import AccelVerdict
from lab.workloads.mapsync import WORKLOAD_FILE, MapsyncParams
from lab.workloads.mapsync_kind import MapsyncCheck, run

RECORDS, CUT = 20, 12


def verdicts(result: WorkloadResult) -> dict[str, Verdict]:
    return {f.oracle: f.verdict for f in result.findings}


def record_offset(path: Path, index: int) -> int:
    """Where record `index` sits in the capture: its header is unique (magic + sequence number)."""
    data = path.read_bytes()
    found = [m.start() for m in re.finditer(re.escape(MAGIC + struct.pack("<Q", index)), data)]
    assert len(found) == 1, found
    return found[0]


def test_a_flipped_record_in_a_kept_capture_is_exactly_the_corrupt_one(image: Image, accel: AccelVerdict,
                                                                       tmp_path: Path) -> None:
    cut = MapsyncCheck(Filesystem.EXT4, DaxMode.ALWAYS, MapsyncParams(records=RECORDS), CrashPoint(after_ack=CUT),
                       keep_capture=True)
    made = run(cut, image, accel, tmp_path / "cut", RunHooks())
    assert made.verdict is Verdict.PASS, made.to_dict()
    durable = tuple(range(made.metrics["cut"]["durable"]))
    capture = Path(made.metrics["cut"]["captures"][0]["path"])
    assert inspect_image(capture, Filesystem.EXT4).format is ImageFormat.CAPTURE
    spec = RecordSpec(WORKLOAD_FILE, RECORDS, MapsyncParams(records=RECORDS).layout, durable)

    intact = check_image(ImageCheck(inspect_image(capture, Filesystem.EXT4), Filesystem.EXT4, spec), image, accel,
                         tmp_path / "intact", RunHooks())
    assert intact.verdict is Verdict.PASS, intact.to_dict()
    assert intact.metrics["persistence"]["corrupt"] == [] and intact.metrics["recovery"]["fsck_clean"] is True

    flipped = tmp_path / "flipped.img"
    shutil.copyfile(capture, flipped)
    with flipped.open("r+b") as f:  # 4 fill bytes of record 7, an acknowledged one
        f.seek(record_offset(flipped, 7) + 40)
        f.write(b"\xff\xff\xff\xff")
    before = hashlib.sha256(flipped.read_bytes()).hexdigest()
    for boot in (BootMode.SNAPSHOT, BootMode.COLD):
        result = check_image(ImageCheck(inspect_image(flipped, Filesystem.EXT4), Filesystem.EXT4, spec), image,
                             accel, tmp_path / f"flipped-{boot.value}", RunHooks(boot=boot))
        assert result.verdict is Verdict.VIOLATION, result.to_dict()
        assert [c["index"] for c in result.metrics["persistence"]["corrupt"]] == [7]
        assert result.metrics["persistence"]["lost"] == []
        others = verdicts(result)
        assert others.pop("persistence") is Verdict.VIOLATION
        assert {"recovery-mount", "fsck", "kernel-log"} <= set(others) and set(others.values()) == {Verdict.PASS}
    assert hashlib.sha256(flipped.read_bytes()).hexdigest() == before, "check wrote the given file"


def test_a_raw_ext4_image_mounts_from_a_raw_namespace(image: Image, accel: AccelVerdict, tmp_path: Path) -> None:
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    raw = tmp_path / "raw.img"
    with raw.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run([mkfs, "-F", "-q", str(raw)], check=True, timeout=60)
    given = inspect_image(raw, Filesystem.EXT4)
    assert given.format is ImageFormat.RAW_FS
    result = check_image(ImageCheck(given, Filesystem.EXT4), image, accel, tmp_path / "raw", RunHooks())
    assert result.verdict is Verdict.PASS, result.to_dict()
    assert result.check["dax"] == "never" and verdicts(result)["fsck"] is Verdict.PASS

    with raw.open("r+b") as f:  # wipe metadata after the superblock: the mount or fsck must catch it
        f.seek(4096)
        f.write(b"\0" * 65536)
    broken = check_image(ImageCheck(inspect_image(raw, Filesystem.EXT4), Filesystem.EXT4), image, accel,
                         tmp_path / "broken", RunHooks())
    assert broken.verdict is Verdict.VIOLATION, broken.to_dict()
    assert Verdict.VIOLATION in (verdicts(broken)["recovery-mount"], verdicts(broken).get("fsck"))

