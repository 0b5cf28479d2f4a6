"""Dependencies point one way (DESIGN.md): checked on the source, function-level imports included."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"


def imports_of(path: Path) -> set[str]:
    """Every lab module a file imports, at any depth of the file (TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name == "lab" or name.startswith("lab.")}


def modules(pattern: str) -> list[Path]:
    return sorted(LAB.glob(pattern))


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {str(f.relative_to(LAB.parent)): sorted(i for i in imports_of(f)
                                                  if any(i == p or i.startswith(p + ".") for p in forbidden))
           for f in files}
    return {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize(("files", "forbidden"), [
    # The store reads and writes rows; it knows no report, command, campaign or kind.
    ("store/*.py", ("lab.report", "lab.cli", "lab.cli_campaign", "lab.cli_common", "lab.campaign",
                    "lab.workloads")),
    # Reports render typed results; kinds hand them their sections, so no report imports a kind.
    ("report/*.py", ("lab.workloads", "lab.cli", "lab.cli_campaign", "lab.cli_common", "lab.campaign",
                     "lab.store.db")),
    # A kind may bring its own report section, built with lab.markup, but never imports a report.
    ("workloads/*.py", ("lab.report", "lab.cli", "lab.cli_campaign", "lab.cli_common", "lab.campaign",
                        "lab.store.db")),
    # The shared CLI pieces sit below both command modules, and the command modules do not import each other.
    ("cli_common.py", ("lab.cli", "lab.cli_campaign")),
    ("cli_campaign.py", ("lab.cli",)),
    # One writer: an attempt (run locally or on a cluster worker) never touches the store; the campaign
    # scheduler knows no cluster (the executor is handed to it).
    ("attempt.py", ("lab.store", "lab.campaign", "lab.cluster", "lab.cli")),
    ("cluster/task.py", ("lab.store", "lab.campaign", "lab.cli")),
    ("campaign.py", ("lab.cluster", "lab.cli")),
    # Machines (either backend) and lab hosts sit below every run, kind and command.
    ("vm/*.py", ("lab.runner", "lab.crash", "lab.workloads", "lab.campaign", "lab.cli", "lab.hosts")),
    ("hosts/*.py", ("lab.runner", "lab.crash", "lab.workloads", "lab.campaign", "lab.cli", "lab.cli_common")),
    # What runs on a lab host is an attempt like a Dask task's: no store, no campaign, no command line.
    ("hostrun/remote_side.py", ("lab.store", "lab.campaign", "lab.cli")),
    ("hostrun/*.py", ("lab.cli",)),
])
def test_no_import_points_up(files: str, forbidden: tuple[str, ...]) -> None:
    found = modules(files)
    assert found, files
    assert offenders(found, forbidden) == {}


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lab.report.html import write_html\n    import lab.cli\n")
    assert imports_of(module) >= {"lab.report.html", "lab.cli"}


def test_a_single_host_campaign_loads_no_dask() -> None:
    """Dask is the optional cluster extra: the CLI, the campaign runner and the bench never load it
    unless a cluster command or --cluster asks."""
    code = ("import sys, lab.cli, lab.campaign, lab.cli_campaign, lab.cli_cluster, lab.bench, lab.attempt; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'lab')"
            " and (m.startswith(('dask', 'distributed', 'lab.cluster')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=LAB.parent, env={**os.environ, "PYTHONPATH": str(LAB.parent)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
