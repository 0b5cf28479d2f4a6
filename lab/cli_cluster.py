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
@click.option("--scheduler", required=True, metavar="tls://HOST:PORT", help="The Dask scheduler to join.")
@click.option("--vm", "slots", type=click.IntRange(1, 64), default=None,
              help="Machines at once on this host (default: from CPUs and free memory, as -j).")
@click.option("--name", default=None, help="Worker name, recorded with each attempt (default: HOSTNAME-PID).")
@click.option("--tls", "credentials", type=click.Path(path_type=Path), default=None,
              help="A tls:// scheduler's credentials, the tls.pem 'cluster up' wrote (default: $PMEMLAB_CLUSTER_TLS, "
                   "else the data directory's cluster/tls.pem).")
@lab_errors
def worker(scheduler: str, slots: int | None, name: str | None, credentials: Path | None) -> None:
    """Run cases for a cluster campaign on this host (its own PMEMLAB_DATA and PMEMLAB_CACHE)."""
    ui = UI()
    _need_dask(ui)
    from lab.cluster.worker import serve

    why = serve(scheduler, slots or _default_slots(), name, announce=lambda text: ui.info(text, literal=True),
                credentials=credentials)
    ui.info(f"worker stopped: {why}; no machine left running", literal=True)


@click.group()
def cluster() -> None:
    """A Dask scheduler and workers for cluster campaigns ('campaign run --cluster')."""


@cluster.command("up")
@click.option("--local", "local_workers", type=click.IntRange(0, 16), default=0,
              help="Start this many workers on this machine.")
@click.option("--host", "hosts", multiple=True, metavar="NAME|USER@ADDR",
              help="Start a worker on this host over SSH (repeatable): an inventory host ('pmemlab host add'), or "
                   "USER@ADDR[:PORT] with --key/--known-hosts.")
@click.option("--key", default="~/.ssh/id_ed25519", show_default=True, help="Private key file for USER@ADDR hosts.")
@click.option("--known-hosts", default="~/.ssh/known_hosts", show_default=True,
              help="known_hosts for USER@ADDR hosts (their host keys are verified; unknown keys are refused).")
@click.option("--workdir", default=None, help="The lab's directory on USER@ADDR hosts (default /var/tmp/pmemlab).")
@click.option("--pmemlab", "pmemlab_cmd", default=None,
              help="The pmemlab executable on USER@ADDR hosts (an absolute path, or a name on its PATH; "
                   "default: pmemlab).")
@click.option("--vm", "slots", type=click.IntRange(1, 64), default=None,
              help="VM slots per worker (default: local: this host's -j rule shared among the workers; "
                   "remote: the inventory's slots, 1 for USER@ADDR).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Scheduler port (0: any).")
@click.option("--listen", default=None, metavar="ADDR",
              help="Address the scheduler listens on (default: 127.0.0.1; with --host, this machine's address "
                   "on the route to the hosts).")
@json_option
@lab_errors
def cluster_up(local_workers: int, hosts: tuple[str, ...], key: str, known_hosts: str, workdir: str | None,
               pmemlab_cmd: str | None, slots: int | None, port: int, listen: str | None, as_json: bool) -> None:
    """Start a scheduler here, local workers and one worker per remote host; recorded under the data directory."""
    ui = UI(as_json)
    _need_dask(ui)
    from lab.cluster import local, remote
    from lab.hosts import inventory

    if not local_workers and not hosts:
        ui.abort("cluster up: give --local N and/or --host NAME|USER@ADDR", EXIT_LAB_ERROR)
    remote_hosts = [remote.adhoc_host(h, key, known_hosts, workdir, pmemlab_cmd) if "@" in h else inventory.get(h)
                    for h in hosts]
    names = [h.name for h in remote_hosts]
    if len(set(names)) != len(names):
        ui.abort(f"cluster up: a host is given twice ({', '.join(names)}): one worker per host", EXIT_LAB_ERROR)
    started = local.up(local_workers, slots or _default_slots(max(local_workers, 1)), port,
                       listen or local.listen_address(remote_hosts), remote_hosts=remote_hosts, remote_slots=slots)
    if as_json:
        ui.emit_json(started.to_dict())
        return
    where = ", ".join(([f"{local_workers} here"] if local_workers else []) + names)
    ui.info(f"cluster up at {started.address}: workers {where}; "
            f"run 'pmemlab campaign run SCENARIO --cluster {started.address}', then 'pmemlab cluster down'",
            literal=True)


@cluster.command("scheduler", hidden=True)
@click.option("--scheduler-file", type=click.Path(path_type=Path), required=True)
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=click.IntRange(0, 65535), default=0)
@click.option("--tls", "credentials", type=click.Path(path_type=Path), required=True)
@lab_errors
def cluster_scheduler(scheduler_file: Path, host: str, port: int, credentials: Path) -> None:
    """The scheduler process of 'cluster up' (allowed-failures 0: the lab retries lost attempts; TLS only)."""
    _need_dask(UI())
    from lab.cluster.local import serve_scheduler

    serve_scheduler(host, port, scheduler_file, credentials)


@cluster.command("status")
@json_option
@lab_errors
def cluster_status(as_json: bool) -> None:
    """The recorded cluster: its processes (remote workers by host), each worker's VM slots and running tasks."""
    ui = UI(as_json)
    _need_dask(ui)
    from lab.cluster import local
    from lab.cluster.client import connect, workers

    state = local.LocalCluster.load()
    if state is None:
        ui.abort(f"no cluster recorded in {local.state_path()} ('pmemlab cluster up --local N | --host NAME')",
                 EXIT_LAB_ERROR)
    rows: list[dict[str, str]] = []
    scheduler = next((m for m in state.members if m.role == "scheduler"), None)
    if scheduler is not None and scheduler.alive():
        client = connect(state.address, timeout=5)
        try:
            processing = client.processing()
            for address, info in sorted(workers(client).items(), key=lambda kv: str(kv[1].get("name"))):
                rows.append({"name": str(info.get("name")), "address": address,
                             "vm": str(int((info.get("resources") or {}).get("vm", 0))),
                             "running": str(len(processing.get(address, ())))})
        finally:
            client.close()
    joined = {r["name"] for r in rows}
    # A remote worker is not asked over SSH here: joined to the scheduler is what counts.
    members = [{"role": m.role, "host": m.name, "pid": str(m.pid),
                "alive": ("joined" if m.name in joined else "not joined") if m.host else
                         ("yes" if m.alive() else "no"), "log": m.log}
               for m in state.members]
    if as_json:
        ui.emit_json({"address": state.address, "members": members, "workers": rows})
        return
    ui.table(f"cluster {state.address}: processes", ["role", "host", "pid", "alive", "log"],
             [[m["role"], m["host"], m["pid"], m["alive"], m["log"]] for m in members], literal=True)
    ui.table("workers", ["name", "address", "VM slots", "running tasks"],
             [[r["name"], r["address"], r["vm"], r["running"]] for r in rows], literal=True)


@cluster.command("down")
@lab_errors
def cluster_down() -> None:
    """Stop the recorded cluster: remote workers over SSH, local workers, then the scheduler (by pid)."""
    from lab.cluster import local

    ui = UI()
    lines = local.down()
    for line in lines:
        ui.info(line, literal=True)
    if any("NOT stopped" in line for line in lines):
        ui.abort(f"some workers were not stopped; they stay in {local.state_path()}: "
                 "'pmemlab cluster down' again once their hosts answer", EXIT_LAB_ERROR)
