"""Wall time of `run mapsync` on a lab host over SSH beside the same run here (median of N, printed).

    sudo PYTHONPATH=. python -m tests.integration.remote_bench [N]

The host is the test suite's namespaced sshd (sshhost); its first run builds its ready snapshot and is
not counted. Not a test: a measurement for the README (root only, like the remote-host tests)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import sshhost

REPO_ROOT = Path(__file__).resolve().parents[2]
ARGS = ["run", "mapsync", "--records", "50", "--json"]


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lab.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)
    wall = time.monotonic() - started
    verdict = json.loads(done.stdout)["verdict"] if done.stdout.strip() else f"exit {done.returncode}"
    return wall, verdict


def main(runs: int) -> None:
    ssh = sshhost.start(client_alive_s=3)
    try:
        there = ssh.conf / "pmemlab"
        there.write_text(f"#!/bin/sh\nexport PYTHONPATH={REPO_ROOT}\nexec {sys.executable} -m lab.cli \"$@\"\n")
        there.chmod(0o755)
        env = {**os.environ, "PMEMLAB_HOSTS": str(ssh.conf / "hosts.toml"), "PMEMLAB_DATA": str(ssh.conf / "data"),
               "PYTHONPATH": str(REPO_ROOT)}
        subprocess.run([sys.executable, "-m", "lab.cli", "host", "add", "lab2", "--target", ssh.target, "--key",
                        str(ssh.key), "--known-hosts", str(ssh.known_hosts), "--workdir", str(ssh.workdir),
                        "--pmemlab", str(there)], env=env, check=True, capture_output=True)
        first = _timed([*ARGS, "--host", "lab2"], env)  # pushes the image, builds the host's ready snapshot
        local, remote = [], []
        for _ in range(runs):  # interleaved: the same load on both
            local.append(_timed(ARGS, env))
            remote.append(_timed([*ARGS, "--host", "lab2"], env))
        print(json.dumps({"first_remote_s": round(first[0], 2), "local_s": [round(w, 2) for w, _ in local],
                          "remote_s": [round(w, 2) for w, _ in remote],
                          "local_median_s": round(statistics.median(w for w, _ in local), 2),
                          "remote_median_s": round(statistics.median(w for w, _ in remote), 2),
                          "verdicts": sorted({v for _, v in local + remote + [first]})}))
    finally:
        sshhost.stop(ssh)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
