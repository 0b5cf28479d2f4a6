"""The fsck oracle: after unmount, e2fsck -fn / xfs_repair -n must be clean."""

from __future__ import annotations

from lab.guest.agent import AgentClient
from lab.guest.pmem import FSCK, Filesystem
from lab.oracles.finding import Finding
from lab.verdict import Verdict


def run_fsck(agent: AgentClient, fs: Filesystem, device: str, timeout: float = 300) -> tuple[Finding, str]:
    """Run the read-only checker in the guest; returns the finding and its full output."""
    argv = FSCK[fs] + [device]
    result = agent.run(argv, timeout=timeout)
    output = f"$ {' '.join(argv)}\n{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}" \
             f"[exit {result.exit_code}{', timed out' if result.timed_out else ''}]\n"
    if result.timed_out:
        return Finding("fsck", Verdict.HANG, f"{argv[0]} did not finish within {timeout:.0f} s"), output
    clean = result.exit_code == 0
    summary = f"{argv[0]} clean" if clean else f"{argv[0]} found problems (exit {result.exit_code})"
    return Finding("fsck", Verdict.PASS if clean else Verdict.VIOLATION, summary,
                   {"exit_code": result.exit_code, "clean": clean}), output
