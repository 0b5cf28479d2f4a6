"""A controller for the kill tests: restore one ready machine (as every run does), say so, then hold it.

Run as a separate process so the test can SIGINT/SIGTERM/SIGKILL it.
Usage: python hold_machine.py WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.cli import _terminate
from lab.guest.pmem import Filesystem
from lab.image.cache import resolve
from lab.paths import cache_dir
from lab.runner.machines import BootMode, MachineMaker
from lab.vm.accel import choose
from lab.vm.boot import MachineShape, probe_kvm_boot


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)  # as the CLI does
    workdir = Path(sys.argv[1])
    image = resolve(cache_dir())
    accel = choose("auto", cache_dir(), lambda: probe_kvm_boot(image))
    maker = MachineMaker(image, accel.accel, MachineShape(), BootMode.SNAPSHOT)
    media = maker.fresh_media(workdir / "nvdimm0.img", Filesystem.EXT4)
    with maker.machine("hold", workdir, [media], Filesystem.EXT4) as machine:
        maker.bring_up(machine)
        assert machine.process is not None
        print(json.dumps({"qemu_pid": machine.process.pid, "media": str(media)}), flush=True)
        time.sleep(300)  # the test kills us long before this


if __name__ == "__main__":
    main()
