"""CLI commands for campaigns across hosts: `pmemlab worker` and `pmemlab cluster up|status|down`
(added to lab.cli's group). Dask loads only inside these commands (the `pmemlab[cluster]` extra)."""

from __future__ import annotations

from pathlib import Path

import click

from lab.cli_common import EXIT_LAB_ERROR, json_option, lab_errors
from lab.ui import UI


def _need_dask(ui: UI) -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        ui.abort("this command needs Dask distributed: pip install 'pmemlab[cluster]'", EXIT_LAB_ERROR)


def _default_slots(per_host_share: int = 1) -> int:
    """VM slots by the rule of -j (CPUs and free memory, default machine shape), shared out."""
    from lab.campaign import default_jobs
    from lab.vm.boot import MachineShape

    return max(1, default_jobs(MachineShape()) // per_host_share)


@click.command()
@click.option("--scheduler", required=True, metavar="tcp://HOST:PORT", help="The Dask scheduler to join.")
@click.option("--vm", "slots", type=click.IntRange(1, 64), default=None,
              help="Machines at once on this host (default: from CPUs and free memory, as -j).")
@click.option("--name", default=None, help="Worker name, recorded with each attempt (default: HOSTNAME-PID).")
@lab_errors
def worker(scheduler: str, slots: int | None, name: str | None) -> None:
    """Run cases for a cluster campaign on this host (its own PMEMLAB_DATA and PMEMLAB_CACHE)."""
    ui = UI()
    _need_dask(ui)
    from lab.cluster.worker import serve

    why = serve(scheduler, slots or _default_slots(), name, announce=lambda text: ui.info(text, literal=True))
    ui.info(f"worker stopped: {why}; no machine left running", literal=True)


@click.group()
def cluster() -> None:
    """A Dask scheduler and workers for cluster campaigns ('campaign run --cluster')."""


@cluster.command("up")
@click.option("--local", "local_workers", type=click.IntRange(1, 16), required=True,
              help="Start this many workers on this machine (remote hosts: run 'pmemlab worker' there).")
@click.option("--vm", "slots", type=click.IntRange(1, 64), default=None,
              help="VM slots per worker (default: this host's -j rule shared among the workers).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Scheduler port (0: any).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the scheduler listens on.")
@json_option
@lab_errors
def cluster_up(local_workers: int, slots: int | None, port: int, host: str, as_json: bool) -> None:
    """Start a scheduler and local workers, recorded under the data directory."""
    ui = UI(as_json)
    _need_dask(ui)
    from lab.cluster import local

    started = local.up(local_workers, slots or _default_slots(local_workers), port, host)
    if as_json:
        ui.emit_json(started.to_dict())
        return
    ui.info(f"cluster up at {started.address}: {local_workers} worker(s); "
            f"run 'pmemlab campaign run SCENARIO --cluster {started.address}', then 'pmemlab cluster down'",
            literal=True)


@cluster.command("scheduler", hidden=True)
@click.option("--scheduler-file", type=click.Path(path_type=Path), required=True)
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=click.IntRange(0, 65535), default=0)
@lab_errors
def cluster_scheduler(scheduler_file: Path, host: str, port: int) -> None:
    """The scheduler process of 'cluster up' (allowed-failures 0: the lab retries lost attempts)."""
    _need_dask(UI())
    from lab.cluster.local import serve_scheduler

    serve_scheduler(host, port, scheduler_file)


@cluster.command("status")
@json_option
@lab_errors
def cluster_status(as_json: bool) -> None:
    """The recorded local cluster: its processes, and each worker's VM slots and running tasks."""
    ui = UI(as_json)
    _need_dask(ui)
    from lab.cluster import local
    from lab.cluster.client import connect, workers

    state = local.LocalCluster.load()
    if state is None:
        ui.abort(f"no local cluster recorded in {local.state_path()} ('pmemlab cluster up --local N')",
                 EXIT_LAB_ERROR)
    rows: list[dict[str, str]] = []
    if state.members and state.members[0].alive():
        client = connect(state.address, timeout=5)
        try:
            processing = client.processing()
            for address, info in sorted(workers(client).items(), key=lambda kv: str(kv[1].get("name"))):
                rows.append({"name": str(info.get("name")), "address": address,
                             "vm": str(int((info.get("resources") or {}).get("vm", 0))),
                             "running": str(len(processing.get(address, ())))})
        finally:
            client.close()
    members = [{"role": m.role, "pid": str(m.pid), "alive": "yes" if m.alive() else "no", "log": m.log}
               for m in state.members]
    if as_json:
        ui.emit_json({"address": state.address, "members": members, "workers": rows})
        return
    ui.table(f"cluster {state.address}: processes", ["role", "pid", "alive", "log"],
             [[m["role"], m["pid"], m["alive"], m["log"]] for m in members], literal=True)
    ui.table("workers", ["name", "address", "VM slots", "running tasks"],
             [[r["name"], r["address"], r["vm"], r["running"]] for r in rows], literal=True)


@cluster.command("down")
@lab_errors
def cluster_down() -> None:
    """Stop the recorded local cluster's workers, then its scheduler (by pid)."""
    from lab.cluster import local

    for line in local.down():
        UI().info(line, literal=True)
