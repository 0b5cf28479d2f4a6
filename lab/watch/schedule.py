"""`pmemlab schedule install PLAN --at HH:MM`: a systemd timer + service that runs `watch PLAN --once`
daily (user units for a non-root user, system units for root; Persistent=true: a run missed while
the machine was off happens at the next boot), or the crontab line where systemd is absent.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ConfigError


def parse_at(at: str) -> tuple[int, int]:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at.strip())
    if not match:
        raise ConfigError(f"--at {at!r}: expected HH:MM (24-hour), e.g. 02:00")
    return int(match.group(1)), int(match.group(2))


def watch_argv(plan: Path) -> list[str]:
    """The command the timer runs: this interpreter's pmemlab, so the same install (venv) is used."""
    return [sys.executable, "-m", "lab.cli", "watch", str(plan.resolve()), "--once"]


@dataclass(frozen=True)
class Units:
    name: str  # pmemlab-watch-PLAN
    service: str
    timer: str


def render_units(plan_name: str, plan: Path, at: str, env: dict[str, str]) -> Units:
    hour, minute = parse_at(at)
    name = f"pmemlab-watch-{plan_name}"
    environment = "".join(f"Environment={shlex.quote(f'{k}={v}')}\n" for k, v in sorted(env.items()))
    service = (f"[Unit]\nDescription=pmemlab watch {plan_name}: run the plan on new kernels\n\n"
               f"[Service]\nType=oneshot\n{environment}"
               f"ExecStart={shlex.join(watch_argv(plan))}\n")
    timer = (f"[Unit]\nDescription=pmemlab watch {plan_name} daily at {hour:02d}:{minute:02d}\n\n"
             f"[Timer]\nOnCalendar=*-*-* {hour:02d}:{minute:02d}:00\nPersistent=true\n\n"
             f"[Install]\nWantedBy=timers.target\n")
    return Units(name, service, timer)


def crontab_line(plan: Path, at: str, env: dict[str, str]) -> str:
    hour, minute = parse_at(at)
    prefix = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
    return f"{minute} {hour} * * * {prefix + ' ' if prefix else ''}{shlex.join(watch_argv(plan))}"


def unit_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/etc/systemd/system")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "systemd" / "user"


def systemd_running() -> bool:
    return shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()


def install_units(units: Units, directory: Path, *, enable: bool) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / f"{units.name}.service", directory / f"{units.name}.timer"]
    written[0].write_text(units.service)
    written[1].write_text(units.timer)
    if enable:
        scope = [] if os.geteuid() == 0 else ["--user"]
        for argv in (["systemctl", *scope, "daemon-reload"],
                     ["systemctl", *scope, "enable", "--now", f"{units.name}.timer"]):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise ConfigError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-300:]} "
                                  f"(the units are in {directory})")
    return written
