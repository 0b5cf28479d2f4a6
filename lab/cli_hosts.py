"""`pmemlab host add|list|check|remove` and `pmemlab image push HOST [IMAGE]`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from lab.cli_common import EXIT_LAB_ERROR, image_option, json_option, lab_errors
from lab.errors import ConfigError
from lab.hosts import inventory
from lab.hosts.link import HEARTBEAT_S, LINK_TIMEOUT_S
from lab.ui import UI


@click.group()
def host() -> None:
    """Remote lab hosts reached over SSH (~/.config/pmemlab/hosts.toml)."""


@host.command("add")
@click.argument("name")
@click.option("--target", required=True, help="USER@HOST or USER@HOST:PORT.")
@click.option("--key", required=True, help="Private key file SSH authenticates with (a path; never stored inline).")
@click.option("--known-hosts", default="~/.ssh/known_hosts", show_default=True,
              help="known_hosts file the host key is verified against (unknown keys are refused).")
@click.option("--backend", type=click.Choice(["qemu", "libvirt"]), default="qemu", show_default=True)
@click.option("--libvirt-uri", default=None)
@click.option("--slots", type=int, default=1, show_default=True, help="Machines at once there.")
@click.option("--workdir", default=inventory.DEFAULT_WORKDIR, show_default=True, help="The lab's directory there.")
@click.option("--pmemlab", "pmemlab_there", default=inventory.DEFAULT_PMEMLAB, show_default=True,
              help="The pmemlab executable there (an absolute path, or a name on its PATH) that --host runs.")
@lab_errors
def host_add(name: str, target: str, key: str, known_hosts: str, backend: str, libvirt_uri: str | None, slots: int,
             workdir: str, pmemlab_there: str) -> None:
    """Add (or replace) a host in the inventory."""
    hosts = inventory.load()
    data = {"target": target, "key": key, "known_hosts": known_hosts, "backend": backend, "slots": slots,
            "workdir": workdir, "pmemlab": pmemlab_there, **({"libvirt_uri": libvirt_uri} if libvirt_uri else {})}
    hosts[name] = inventory.validate(name, data, "pmemlab host add")
    path = inventory.save(hosts)
    UI().info(f"host {name} ({target}, {backend}) saved in {path}")


@host.command("list")
@json_option
@lab_errors
def host_list(as_json: bool) -> None:
    """The inventory."""
    ui = UI(as_json)
    hosts = inventory.load()
    if as_json:
        ui.emit_json({"hosts": [dataclasses.asdict(h) for h in hosts.values()]})
        return
    ui.table(f"hosts ({inventory.inventory_path()})", ["name", "target", "backend", "slots", "workdir", "pmemlab"],
             [[h.name, h.target, h.backend, str(h.slots), h.workdir, h.pmemlab] for h in hosts.values()])


@host.command("remove")
@click.argument("name")
@lab_errors
def host_remove(name: str) -> None:
    hosts = inventory.load()
    if name not in hosts:
        raise ConfigError(f"{inventory.inventory_path()}: no host {name!r}")
    del hosts[name]
    inventory.save(hosts)
    UI().info(f"host {name} removed")


@host.command("check")
@click.argument("name")
@json_option
@lab_errors
def host_check(name: str, as_json: bool) -> None:
    """QEMU and NVDIMM support, accelerator, free disk, images present, libvirtd: asked over SSH."""
    from lab.hosts.check import check_host
    from lab.hosts.ssh import HostConnection

    ui = UI(as_json)
    with HostConnection(inventory.get(name)) as conn:
        facts = check_host(conn)
    ok = all(f.ok for f in facts)
    if as_json:
        ui.emit_json({"host": name, "ok": ok, "checks": [dataclasses.asdict(f) for f in facts]})
    else:
        for fact in facts:
            ui.info(f"{'ok ' if fact.ok else 'BAD'}  {fact.name}: {fact.detail}")
    if not ok:
        raise SystemExit(EXIT_LAB_ERROR)


@click.command("push")
@click.argument("host_name", metavar="HOST")
@image_option
@json_option
@lab_errors
def image_push(host_name: str, image_name: str, as_json: bool) -> None:
    """Copy an image to HOST by content id (skipped when it is there), verified by sha256."""
    from lab.hosts.push import push_image
    from lab.hosts.ssh import HostConnection
    from lab.image import cache as image_cache
    from lab.paths import cache_dir

    ui = UI(as_json)
    img = image_cache.resolve(cache_dir(), image_name)
    with HostConnection(inventory.get(host_name)) as conn:
        result = push_image(conn, img)
    if as_json:
        ui.emit_json(dataclasses.asdict(result))
    else:
        what = "sent" if result.sent else "already there (verified), nothing sent"
        ui.info(f"image {result.image_id} on {result.host}: {what}; {result.files} files, "
                f"{result.bytes / (1 << 20):.1f} MiB at {result.remote_dir}, {result.seconds:.2f} s")


@click.command("attempt", hidden=True)
@click.option("--spec", "spec_path", type=click.Path(path_type=Path), required=True, help="The task spec (JSON).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True, help="Where the outcome goes.")
@click.option("--link", is_flag=True, help="Watch the controller's heartbeats on stdin; hang up when they stop.")
@click.option("--link-timeout", "link_timeout", type=click.FloatRange(min=3 * HEARTBEAT_S), default=LINK_TIMEOUT_S,
              help="Seconds without a heartbeat before hanging up (the controller's link timeout).")
@lab_errors
def attempt_cmd(spec_path: Path, out_path: Path, link: bool, link_timeout: float) -> None:
    """One campaign task on this host, as a controller started it over SSH (lab.hostrun.remote_side)."""
    from lab.hostrun.remote_side import serve

    serve(spec_path, out_path, link, link_timeout)
