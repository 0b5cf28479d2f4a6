"""A stand-in controller process for the concurrency test: writes one campaign's share of cases.

python -m tests.unit.store_controller URL NAME GO_FILE CASE_ID...
Waits for GO_FILE (so that both controllers open a new store at once), opens the store,
creates campaign NAME with its own cases, then runs every case of it and the given cases
of the shared campaign: an INFRA-ERROR retry first, then PASS.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from lab.store import ResultsStore
from tests.unit.test_store import make_cases, new_campaign, run_case

WAIT_S = 60.0


def main(url: str, name: str, go: str, shared_ids: list[str]) -> int:
    deadline = time.monotonic() + WAIT_S
    while not Path(go).exists():
        if time.monotonic() > deadline:
            print(f"{go} never appeared", file=sys.stderr)
            return 3
        time.sleep(0.01)
    with tempfile.TemporaryDirectory(prefix=f"ctl-{name}-") as tmp_name, ResultsStore.open(url) as store:
        tmp = Path(tmp_name)
        own = make_cases({f"{name}-a": "PASS", f"{name}-b": "PASS"}, per_cell=5)
        new_campaign(store, name, own)
        for case_id in shared_ids:
            run_case(store, "shared", case_id, "INFRA-ERROR", tmp, final=False)
            run_case(store, "shared", case_id, "PASS", tmp)
        for case in own:
            run_case(store, name, case["id"], "INFRA-ERROR", tmp, final=False)
            run_case(store, name, case["id"], "PASS", tmp)
        store.set_campaign_status(name, "finished")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
