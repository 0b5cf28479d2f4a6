"""The power-cut model in words: the one text every user-facing output states (terminal, HTML, JSON, JUnit).

DESIGN.md requires every report to name the model its verdicts rest on; one
constant keeps the terminal line, the HTML page and the exports saying the same.
"""

from __future__ import annotations

POWER_CUT_MODEL = (
    "Power-cut model: at the crash point every vCPU is frozen (QMP stop), the NVDIMM backing file is "
    "captured, and the machine is destroyed. Guest RAM (page cache, uncommitted journal transactions, "
    "dirty metadata buffers) is lost, as on a real power loss; the NVDIMM backing file is the persistent "
    "domain. Each verdict names its persistence model. eadr (eADR): no CPU cache is modelled, every store that "
    "reached the emulated NVDIMM is in the capture (a platform whose caches are in the persistence domain); "
    "missing cache flushes are not visible. adr (ADR): a TCG plugin traces stores, flushes (clwb, clflushopt, "
    "clflush, non-temporal stores) and fences into the NVDIMM, and the crash state reverts every line not "
    "flushed and fenced to its last persisted content (adr:drop-all), or keeps in-order prefixes of its "
    "stores (adr:subset, adr:random).")
