"""A controller for the libvirt kill tests: start one transient domain, say so, then hold it.

Run as a separate process so the test can SIGINT/SIGKILL it.
Usage: python hold_domain.py WORKDIR URI
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from lab.cli import _terminate
from lab.image.cache import resolve
from lab.paths import cache_dir
from lab.vm.boot import MachineShape, lab_spec
from lab.vm.libvirt_machine import LibvirtMachine
from lab.vm.media import create_sparse
from lab.vm.spec import Accel


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)  # as the CLI does
    workdir, uri = Path(sys.argv[1]), sys.argv[2]
    image = resolve(cache_dir())
    media = workdir / "nvdimm0.img"
    create_sparse(media, MachineShape().nvdimm_size)
    with LibvirtMachine(lab_spec(image, "hold", workdir, [media], Accel.TCG), workdir, uri, workdir.name) as machine:
        assert isinstance(machine, LibvirtMachine)  # Machine.__enter__ returns self, typed as the base class
        print(json.dumps({"domain": machine.domain_name, "sockets": str(machine._sockdir)}), flush=True)
        time.sleep(300)  # the test kills us long before this


if __name__ == "__main__":
    main()
