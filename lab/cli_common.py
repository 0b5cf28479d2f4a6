"""What every command shares: exit codes, the lab-error decorator, image, accelerator and boot
mode resolution, the common options and the results store.

``lab.cli`` and ``lab.cli_campaign`` both import this module and never each other's
internals, so the command modules form no cycle.
"""

from __future__ import annotations

import errno
import functools
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from lab import space
from lab.errors import LabError
from lab.image import cache as image_cache
from lab.paths import cache_dir
from lab.runner.machines import BootMode
from lab.verdict import Verdict
from lab.ui import UI
from lab.vm.accel import AccelVerdict, choose
from lab.vm.boot import probe_kvm_boot

if TYPE_CHECKING:
    from lab.store.db import ResultsStore

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1  # the lab worked and a verdict or expectation did not hold
EXIT_LAB_ERROR = 2  # bad input or the lab itself failed: no verdict can be claimed
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def verdict_exit(verdict: Verdict) -> int:
    """A single run's exit status: 0 PASS, 1 any other verdict, 2 INFRA-ERROR (no verdict claimed)."""
    if verdict is Verdict.INFRA_ERROR:
        return EXIT_LAB_ERROR
    return EXIT_OK if verdict.passed else EXIT_FAILED


def lab_errors(func: F) -> F:
    """Turn the lab's own errors, and a full disk, into a one-line message on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (LabError, OSError) as exc:
            if getattr(exc, "errno", None) == errno.ENOSPC:
                path = space.full_path(exc)
                UI().abort(space.describe_full(path) if path else f"disk full: {exc}: free space, then run it again",
                           EXIT_LAB_ERROR)
            if isinstance(exc, OSError):
                raise
            UI().abort(str(exc), EXIT_LAB_ERROR)

    return wrapper  # type: ignore[return-value]


def resolve_accel(requested: str, image: image_cache.Image) -> AccelVerdict:
    return choose(requested, cache_dir(), lambda: probe_kvm_boot(image))


def image_and_accel(image_name: str, accel: str) -> tuple[image_cache.Image, AccelVerdict]:
    """What every machine-booting command needs first: the image and the accelerator verdict."""
    image = image_cache.resolve(cache_dir(), image_name)
    return image, resolve_accel(accel, image)


def boot_mode(cold_boot: bool) -> BootMode:
    return BootMode.COLD if cold_boot else BootMode.SNAPSHOT


def open_store(db: str | None) -> ResultsStore:
    from lab.store.db import ResultsStore  # SQLAlchemy and Alembic load only for commands that use a store

    return ResultsStore.open(db)


accel_option = click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
                            help="auto uses KVM only where a normal guest really boots under it.")
image_option = click.option("--image", "image_name", default=image_cache.DEFAULT_REF, show_default=True,
                            help="Image ref name or id (see 'pmemlab image list').")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
db_option = click.option("--db", default=None, envvar="PMEMLAB_DB", show_envvar=True,
                         help="Results database URL (default: SQLite in the data directory).")
cold_boot_option = click.option("--cold-boot", is_flag=True,
                                help="Boot every machine from cold instead of restoring a ready snapshot.")


def backend_options(fn: Any) -> Any:
    """--backend and --libvirt-uri."""
    fn = click.option("--libvirt-uri", default=None,
                      help="libvirt connection for --backend libvirt: qemu:///system (default), qemu:///session, "
                           "qemu+libssh://USER@HOST/system.")(fn)
    return click.option("--backend", type=click.Choice(["qemu", "libvirt"]), default="qemu", show_default=True,
                        help="qemu: the lab's own QEMU process; libvirt: transient libvirt domains (cold boots).")(fn)


host_option = click.option("--host", "host_name", default=None, metavar="NAME",
                           help="Run on this inventory host over SSH ('pmemlab host add'): the image is pushed by "
                                "id, the host's own pmemlab runs it, results, logs and fsck output come back.")


def lab_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pmemlab")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "unknown (not installed)"


jobs_option = click.option("-j", "--jobs", type=click.IntRange(1, 64), default=None,
                           help="Machines at once (default: from CPUs and free memory).")
