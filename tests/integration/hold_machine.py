"""A controller for the kill tests: boot one machine, say so, then hold it.

Run as a separate process so the test can SIGINT/SIGTERM/SIGKILL it.
Usage: python hold_machine.py WORKDIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab.cli import _terminate
from lab.image.cache import resolve
from lab.paths import cache_dir
from lab.vm.accel import choose
from lab.vm.boot import MachineShape, lab_spec, probe_kvm_boot, ready_timeout
from lab.vm.machine import Machine
from lab.vm.media import create_sparse


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)  # as the CLI does
    workdir = Path(sys.argv[1])
    image = resolve(cache_dir())
    accel = choose("auto", cache_dir(), lambda: probe_kvm_boot(image))
    media = workdir / "nvdimm0.img"
    create_sparse(media, MachineShape().nvdimm_size)
    with Machine(lab_spec(image, "hold", workdir, [media], accel.accel), workdir) as machine:
        machine.wait_ready(ready_timeout(accel.accel))
        assert machine.process is not None
        print(json.dumps({"qemu_pid": machine.process.pid, "media": str(media)}), flush=True)
        time.sleep(300)  # the test kills us long before this


if __name__ == "__main__":
    main()
