"""The lab as an ordinary user: a throwaway account builds the image, passes doctor's user checks, boots a
machine and survives a power cut, and every file it leaves is its own."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.image.cache import Image
from tests.integration.conftest import InstalledLab

# An ordinary login's PATH on Debian: no sbin (the lab must find depmod & co. by itself).
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


def _privileged_prefix() -> list[str]:
    """How this test creates and removes an account: directly as root, else through passwordless sudo."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=30).returncode == 0:
        return [sudo, "-n"]
    pytest.skip("creating a throwaway user needs root or passwordless sudo (CI runs as root, where this runs)")


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class LabUser:
    name: str
    uid: int
    base: Path  # HOME, the cache and the data directory live under it
    privileged: list[str]

    @property
    def home(self) -> Path:
        return self.base / "home"

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": USER_PATH,
                "LANG": "C.UTF-8", "NO_COLOR": "1",
                "PMEMLAB_CACHE": str(self.base / "cache"), "PMEMLAB_DATA": str(self.base / "data")}

    def run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """`argv` as this user (runuser: no password, no PAM session), with only its own environment."""
        env = [f"{k}={v}" for k, v in self.env().items()]
        return subprocess.run([*self.privileged, "runuser", "-u", self.name, "--", "env", "-i", *env, *argv],
                              cwd=self.home, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab_user() -> Iterator[LabUser]:
    privileged = _privileged_prefix()
    name = f"pmemlab-t{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="pmemlab-user-"))
    base.chmod(0o755)
    created = _run([*privileged, "useradd", "--user-group", "--no-create-home", "--home-dir", str(base / "home"),
                    "--shell", "/bin/sh", name])
    try:
        assert created.returncode == 0, f"useradd {name}: {created.stderr}"
        (base / "home").mkdir()
        user = LabUser(name, pwd.getpwnam(name).pw_uid, base, privileged)
        chown = _run([*privileged, "chown", "-R", f"{name}:", str(base)])
        assert chown.returncode == 0, chown.stderr
        yield user
    finally:
        if created.returncode == 0:
            removed = _run([*privileged, "userdel", "--force", name])
        _run([*privileged, "rm", "-rf", str(base)])
        if created.returncode == 0:
            assert removed.returncode == 0, f"userdel {name}: {removed.stderr}"


def _not_owned_by(root: Path, uid: int) -> list[str]:
    return [f"{p} (uid {p.lstat().st_uid})" for p in [root, *root.rglob("*")] if p.lstat().st_uid != uid]


@pytest.mark.timeout(900)
def test_ordinary_user_builds_boots_and_survives_a_power_cut(lab_user: LabUser, installed_lab: InstalledLab,
                                                             image: Image) -> None:
    pmemlab = str(installed_lab.pmemlab)  # the checkout may sit in a home other users cannot enter
    built = lab_user.run([pmemlab, "image", "build", "--json"], timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads(built.stdout)["id"] == image.id
    shutil.rmtree(lab_user.base / "cache" / "kernels", ignore_errors=True)  # the unpacked package: 0.4 GiB

    doctor = lab_user.run([pmemlab, "doctor", "--json"], timeout=120)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["writable (cache)"]["ok"] and checks["writable (runs)"]["ok"], doctor.stdout
    if Path("/dev/kvm").exists():
        kvm_rw = lab_user.run(["sh", "-c", "test -r /dev/kvm && test -w /dev/kvm"], timeout=30).returncode == 0
        said = checks["kvm access"]
        assert ("not accessible to " + lab_user.name in said["detail"]) == (not kvm_rw), said
        assert kvm_rw or said["fix"], said

    smoke = lab_user.run([pmemlab, "vm", "smoke", "--fs", "ext4", "--json"], timeout=300)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert json.loads(smoke.stdout)["dax"] is True

    cut = lab_user.run([pmemlab, "run", "mapsync", "--fs", "ext4", "--records", "40", "--cut-after", "20",
                        "--json"], timeout=400)
    assert cut.returncode == 0, cut.stderr[-3000:]
    result = json.loads(cut.stdout)
    assert result["verdict"] == "PASS", result
    assert Path(result["run_dir"]).is_relative_to(lab_user.base / "data")

    assert _not_owned_by(lab_user.base, lab_user.uid) == []
