"""The link between a controller and a `pmemlab attempt` on a lab host: heartbeats both ways.

The attempt runs under a pty, so when sshd notices the link is gone it hangs the pty up and the
attempt gets SIGHUP (treated like Ctrl-C: every machine destroyed; QEMU also has a parent-death
signal). sshd notices only with ClientAliveInterval set, which a lab host may not have, so each
side also watches the other: the controller writes a newline every HEARTBEAT_S and the attempt
hangs itself up when none came for LINK_TIMEOUT_S; the attempt prints a heartbeat line every
HEARTBEAT_S and the controller declares the host lost when nothing came for LINK_TIMEOUT_S.
"""

from __future__ import annotations

import os

from lab.errors import ConfigError

HEARTBEAT_S = 2.0
LINK_TIMEOUT_S = 15.0  # several missed heartbeats: a TCG guest starving the host CPU is slow, not gone
LINK_TIMEOUT_ENV = "PMEMLAB_LINK_TIMEOUT_S"  # shorter on a lab's own quiet network, longer on a slow one
BEAT = "pmemlab-heartbeat"  # a line the attempt prints; the controller drops it from the log
PHASE = "pmemlab-phase "  # a line the attempt prints as a case enters a phase: "pmemlab-phase SLOT PHASE"


def link_timeout_s() -> float:
    """The controller's link timeout: LINK_TIMEOUT_S, or PMEMLAB_LINK_TIMEOUT_S. The attempt is told it,
    so both sides give up on the other after the same silence."""
    raw = os.environ.get(LINK_TIMEOUT_ENV)
    if raw is None:
        return LINK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 3 * HEARTBEAT_S <= value < float("inf"):  # NaN fails too
        raise ConfigError(f"{LINK_TIMEOUT_ENV}={raw!r}: expected seconds, at least {3 * HEARTBEAT_S:.0f} "
                          f"(three missed {HEARTBEAT_S:.0f} s heartbeats)")
    return value
