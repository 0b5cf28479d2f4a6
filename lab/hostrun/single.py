"""`pmemlab run mapsync --host NAME`: one check as a one-case task on a lab host (lab.hosts.remote_attempt).

The check becomes a Case of its own (scenario "cli", id from the check's content) so the host runs
it through the same `pmemlab attempt` a campaign uses; its run directory comes back here under
the same name. A lost link or a failure there with no result is an INFRA-ERROR naming the host.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, Callable

from lab import attempt
from lab.campaign import task_spec
from lab.cases import Case, case_id
from lab.hosts.inventory import Host
from lab.hosts.push import push_image
from lab.hosts.remote_attempt import HostLost, lost_message, run_attempt
from lab.hosts.ssh import HostConnection, HostError
from lab.image.cache import Image
from lab.runner.guest_run import WorkloadResult
from lab.runner.machines import BootMode
from lab.runs import write_json
from lab.verdict import Verdict
from lab.vm.backend import BackendChoice


def check_case(workload: str, check: Any, image: Image) -> Case:
    """A single run's check as a case: the id is its content's, so the host rebuilds exactly this check."""
    digest = hashlib.sha256(json.dumps({"workload": workload, "check": check.to_dict()}, sort_keys=True,
                                       default=str).encode()).hexdigest()
    return Case(id=case_id(digest, {}, 0, 0), scenario="cli", scenario_hash=digest, workload=workload, cell={},
                cell_key="", repeat=0, crash_index=0, seed=int(getattr(check, "seed", 0)), expect=Verdict.PASS,
                image=image.id, params=check.params, check=check, oracles={})


def run_on_host(host: Host, case: Case, image: Image, accel: str, boot: BootMode, backend: BackendChoice,
                run_dir: Path, progress: Callable[[str], None]) -> WorkloadResult:
    """Push the image, run the case there, fetch its run directory into `run_dir` (same name there)."""
    spec = task_spec(f"{case.id}-{secrets.token_hex(3)}", "alone", [case], [run_dir.name], "", image.id, accel, boot,
                     backend)
    keep = bool(getattr(case.check, "keep_capture", False))
    try:
        with HostConnection(host) as conn:
            pushed = push_image(conn, image)
            progress(f"image {image.id} on {host.name}: {'sent' if pushed.sent else 'already there'} "
                     f"({pushed.seconds:.1f} s)")
            outcome = run_attempt(conn, spec, run_dir.parent, keep, lambda phase: progress(f"{host.name}: {phase}"))
        return attempt.result_from_dict(outcome["results"][0])
    except HostLost:
        return _no_result(case, image, accel, boot, run_dir, lost_message(host))
    except HostError as exc:
        return _no_result(case, image, accel, boot, run_dir, str(exc))
    except Exception as exc:  # tar here timing out, a full disk, a malformed outcome: an INFRA-ERROR, not a traceback
        return _no_result(case, image, accel, boot, run_dir,
                          f"host {host.name!r}: the run failed here: {type(exc).__name__}: {exc}")


def _no_result(case: Case, image: Image, accel: str, boot: BootMode, run_dir: Path, why: str) -> WorkloadResult:
    result = attempt.lost_result(case, image.id, accel, boot.value, run_dir, why)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "result.json", result.to_dict())
    return result
