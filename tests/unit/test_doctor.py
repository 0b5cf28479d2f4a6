"""doctor for an ordinary user: /dev/kvm access and writable lab directories, judged from real files' modes."""

from __future__ import annotations

import grp
import os
from pathlib import Path

from lab.doctor import Identity, check_kvm_access, check_writable, permits

ME = os.getuid()
OTHER = ME + 4242  # not the owner of anything the test makes


def alice(member: frozenset[int] = frozenset(), active: frozenset[int] = frozenset()) -> Identity:
    return Identity("alice", OTHER, frozenset({OTHER}) | active, frozenset({OTHER}) | member)


def node(tmp_path: Path, mode: int) -> Path:
    """A file standing for /dev/kvm: only its owner, group and mode matter to the check."""
    path = tmp_path / "kvm"
    path.touch()
    path.chmod(mode)
    return path


def test_permits_reads_owner_group_and_other_bits(tmp_path: Path) -> None:
    path = node(tmp_path, 0o640)
    st = path.stat()
    owner = Identity("owner", st.st_uid, frozenset({st.st_gid}), frozenset({st.st_gid})) if st.st_uid else None
    if owner is not None:  # uid 0 is allowed everything, so the owner case needs a non-root owner
        assert permits(st, owner, os.R_OK | os.W_OK)
    assert permits(st, alice(active=frozenset({st.st_gid})), os.R_OK)
    assert not permits(st, alice(active=frozenset({st.st_gid})), os.W_OK)
    assert not permits(st, alice(), os.R_OK)
    assert permits(st, Identity("root", 0, frozenset({0}), frozenset({0})), os.R_OK | os.W_OK)


def test_kvm_group_device_tells_a_non_member_to_join(tmp_path: Path) -> None:
    device = node(tmp_path, 0o660)
    group = grp.getgrgid(device.stat().st_gid).gr_name
    check = check_kvm_access(device, accessible=False, pvm=False, who=alice())
    assert check is not None and not check.ok
    assert "not accessible to alice" in check.detail and "TCG" in check.detail
    assert check.fix == f"sudo usermod -aG {group} alice, then log in again"


def test_member_whose_login_predates_the_group_is_told_to_log_in_again(tmp_path: Path) -> None:
    device = node(tmp_path, 0o660)
    check = check_kvm_access(device, accessible=False, pvm=False, who=alice(member=frozenset({device.stat().st_gid})))
    assert check is not None and not check.ok
    assert "log in again" in check.fix and "usermod" not in check.fix


def test_device_without_group_access_needs_a_udev_rule(tmp_path: Path) -> None:
    check = check_kvm_access(node(tmp_path, 0o600), accessible=False, pvm=False, who=alice())
    assert check is not None and not check.ok
    assert 'MODE="0660"' in check.fix and "usermod -aG kvm alice" in check.fix


def test_pvm_host_loses_nothing_without_kvm(tmp_path: Path) -> None:
    check = check_kvm_access(node(tmp_path, 0o660), accessible=False, pvm=True, who=alice())
    assert check is not None and check.ok and "PVM" in check.detail and check.fix


def test_accessible_device_and_missing_device(tmp_path: Path) -> None:
    ok = check_kvm_access(node(tmp_path, 0o660), accessible=True, pvm=False, who=alice())
    assert ok is not None and ok.ok and ok.fix == ""
    assert check_kvm_access(tmp_path / "absent", accessible=False, pvm=False, who=alice()) is None


def test_cache_owned_by_someone_else_is_not_writable(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    check = check_writable("writable (cache)", cache, alice())
    assert not check.ok
    assert check.detail.startswith(f"{cache} is not writable by alice")
    assert check.fix == f"sudo chown -R alice: {cache}"
    assert check.data["blocked"] == [str(cache), str(cache / "images")]


def test_entry_left_unwritable_inside_an_own_cache_is_named(tmp_path: Path) -> None:
    """The owner's cache with one entry it cannot write (as an image dir left by an earlier root run)."""
    st = tmp_path.stat()
    who = Identity("me", st.st_uid or OTHER, frozenset({st.st_gid}), frozenset({st.st_gid}))
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    (cache / "refs").mkdir()
    if who.uid == OTHER:  # running as root: let the stand-in user own the cache through the group bits
        for path in (cache, cache / "images", cache / "refs"):
            path.chmod(0o775)
    (cache / "images").chmod(0o555)
    try:
        check = check_writable("writable (cache)", cache, who)
    finally:
        (cache / "images").chmod(0o755)
    assert not check.ok and check.data["blocked"] == [str(cache / "images")]


def test_directory_to_be_made_is_judged_by_its_parent(tmp_path: Path) -> None:
    parent = tmp_path / "share"
    parent.mkdir()
    parent.chmod(0o777)
    assert check_writable("writable (runs)", parent / "pmemlab" / "runs", alice()).ok
    parent.chmod(0o755)
    check = check_writable("writable (runs)", parent / "pmemlab", alice())
    assert not check.ok and check.fix == f"sudo install -d -o alice {parent / 'pmemlab'}"


def test_current_identity_is_this_process() -> None:
    who = Identity.current()
    assert who.uid == os.getuid()
    assert os.getgid() in who.active_gids
