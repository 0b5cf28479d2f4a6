"""The results store: campaigns, cases, attempts and what they found.

One engine per store, one short session per operation, a commit per call: a
controller killed with SIGKILL loses no case whose attempt it had finished.
Several threads of one process may call a store at once.

SQLite (the default) runs in WAL mode with a busy timeout, and every write
transaction starts with BEGIN IMMEDIATE: it takes the write lock up front and
waits for it, instead of failing when two deferred transactions both try to
upgrade to writers. Any other SQLAlchemy URL (postgresql://...) works too.

Opening a store brings its schema to the newest Alembic revision.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy import case as when
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.pool import StaticPool

from lab.errors import LabError
from lab.paths import data_dir
from lab.store.models import (ArtifactRow, Attempt, AttemptStatus, Campaign, CampaignStatus, Case, CaseStatus,
                              FindingRow, TimingRow, WatchSeen, utcnow)
from lab.store.records import (ArtifactRecord, AttemptRecord, CampaignListing, CampaignRecord, CaseRecord,
                               FindingRecord)
from lab.store.summary import CampaignSummary, summarize
from lab.verdict import Verdict

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0
# Files of a run directory recorded as artifacts: (kind, glob).
ARTIFACT_GLOBS = [("result", "result.json"), ("console", "*.console.log"), ("events", "events.log"),
                  ("fsck", "fsck.txt"), ("hang", "*.hang.txt"), ("capture", "capture")]
_MIGRATION_LOCK = 0x706D656D6C6162  # "pmemlab": the advisory lock key of schema upgrades on PostgreSQL
_WRITE = "pmemlab_write"  # execution option: this transaction writes (BEGIN IMMEDIATE on SQLite)


class StoreError(LabError):
    """The results store could not be opened or used; names the URL (password masked) and why."""


def default_url() -> str:
    return f"sqlite:///{data_dir()}/results.db"


def mask_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not parseable: mask anything that looks like user:password@
        return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # the driver's own message is the useful part
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def _json(data: Any) -> str:
    # Paths and enums in a result dict are stored as their text, not refused.
    return json.dumps(data, default=str)


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
                              "json_serializer": _json}
    if memory:  # one shared connection, or every session would see its own empty database
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine


def _alembic_config(connection: Connection, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolates '%'
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(engine: Engine, url: str) -> None:
    """alembic upgrade head, in one write transaction: two processes opening a new store do not race.

    SQLite's BEGIN IMMEDIATE serializes them; PostgreSQL takes a transaction-scoped advisory
    lock first (its DDL is transactional, but two CREATE TABLEs at once collide)."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            current = MigrationContext.configure(conn).get_current_revision()
            if current != head:
                command.upgrade(_alembic_config(conn, url), "head")


def _finding_record(row: FindingRow) -> FindingRecord:
    return FindingRecord(oracle=row.oracle, verdict=row.verdict, summary=row.summary, details=row.details or {})


def _attempt_record(row: Attempt) -> AttemptRecord:
    return AttemptRecord(
        id=row.id, campaign_id=row.campaign_id, case_id=row.case_id, number=row.number, status=row.status,
        verdict=row.verdict, started_at=row.started_at, finished_at=row.finished_at, run_dir=row.run_dir,
        error=row.error, result=row.result, findings=tuple(_finding_record(f) for f in row.findings),
        timings={t.phase: t.seconds for t in row.timings},
        artifacts=tuple(ArtifactRecord(kind=a.kind, path=a.path) for a in row.artifacts), host=row.host)


def _case_record(row: Case, *, attempts: bool) -> CaseRecord:
    return CaseRecord(
        id=row.id, campaign_id=row.campaign_id, cell_key=row.cell_key, repeat=row.repeat,
        crash_index=row.crash_index, seed=int(row.seed), expect=row.expect, position=row.position,
        status=row.status, verdict=row.verdict, met_expectation=row.met_expectation,
        infra_retries=row.infra_retries, cell=row.cell or {}, case=row.case or {},
        attempts=tuple(_attempt_record(a) for a in row.attempts) if attempts else ())


def _campaign_record(row: Campaign, *, cases: tuple[CaseRecord, ...] | None = None) -> CampaignRecord:
    """cases=None: a listing (no scenario text, no cases)."""
    return CampaignRecord(
        id=row.id, scenario_name=row.scenario_name, scenario_path=row.scenario_path,
        scenario_hash=row.scenario_hash, image_id=row.image_id, kernel_version=row.kernel_version,
        accelerator=row.accelerator, jobs=row.jobs, status=row.status, created_at=row.created_at,
        finished_at=row.finished_at, scenario_text=None if cases is None else row.scenario_text,
        cases=cases or ())


def _artifacts(run_dir: Path) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not run_dir.is_dir():
        return found
    for kind, pattern in ARTIFACT_GLOBS:
        found += [(kind, str(p)) for p in sorted(run_dir.glob(pattern))]
    return found


_ATTEMPT_LOAD = (selectinload(Attempt.findings), selectinload(Attempt.timings), selectinload(Attempt.artifacts))


def _fill_attempt(attempt: Attempt, result: dict[str, Any]) -> str:
    """Finish an attempt row from a CheckResult.to_dict(); returns its verdict."""
    verdict = str(result.get("verdict") or Verdict.INFRA_ERROR.value)  # no verdict is no pass
    run_dir = Path(str(result.get("run_dir") or attempt.run_dir))
    attempt.status = AttemptStatus.FINISHED.value
    if result.get("run_dir"):
        attempt.run_dir = str(result["run_dir"])  # where it ran: a cluster worker's own run directory
    attempt.finished_at = utcnow()
    attempt.verdict = verdict
    attempt.error = result.get("error")
    attempt.result = result
    attempt.findings = [FindingRow(oracle=str(f["oracle"]), verdict=str(f["verdict"]),
                                   summary=str(f["summary"]), details=f.get("details") or {})
                        for f in result.get("findings") or []]
    attempt.timings = [TimingRow(phase=str(k), seconds=float(v))
                       for k, v in (result.get("timings") or {}).items()]
    attempt.artifacts = [ArtifactRow(kind=k, path=p) for k, p in _artifacts(run_dir)]
    return verdict


class ResultsStore:
    """Use ``ResultsStore.open(url)``; every method commits before it returns."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self._read = sessionmaker(engine, expire_on_commit=False)
        # Same engine and pool; the option only marks the transaction as a writer.
        self._write_sessions = sessionmaker(engine.execution_options(**{_WRITE: True}), expire_on_commit=False)

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(cls, url: str | None = None) -> ResultsStore:
        if url is None:
            url = default_url()
            data_dir().mkdir(parents=True, exist_ok=True)
        where = mask_url(url)
        try:
            dialect = make_url(url).get_backend_name()
            if dialect == "sqlite":
                engine = _sqlite_engine(url)
            else:
                engine = create_engine(url, pool_pre_ping=True, json_serializer=_json)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            hint = " (its database driver is not installed)" if isinstance(exc, ImportError) else ""
            raise StoreError(f"cannot open the results store {where}: {_reason(exc)}{hint}") from exc
        try:
            _upgrade(engine, url)
        except (SQLAlchemyError, CommandError, OSError) as exc:
            engine.dispose()
            hint = ""
            if dialect == "sqlite" and "unable to open" in str(exc):
                hint = " (does its directory exist and is it writable?)"
            elif isinstance(exc, CommandError):
                hint = " (written by a newer pmemlab?)"
            raise StoreError(f"cannot open the results store {where}: {_reason(exc)}{hint}") from exc
        return cls(engine, url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        try:
            with (self._write_sessions if write else self._read)() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"results store {mask_url(self.url)}: {_reason(exc)}") from exc

    # -- writing ---------------------------------------------------------
    def create_campaign(self, *, campaign_id: str, scenario_name: str, scenario_path: str, scenario_text: str,
                        scenario_hash: str, image_id: str, kernel_version: str, accelerator: str, jobs: int,
                        cases: list[dict[str, Any]]) -> None:
        """Store a campaign (status running) and its cases (pending), in the order given."""
        campaign = Campaign(id=campaign_id, scenario_name=scenario_name, scenario_path=str(scenario_path),
                            scenario_text=scenario_text, scenario_hash=scenario_hash, image_id=image_id,
                            kernel_version=kernel_version, accelerator=accelerator, jobs=jobs,
                            status=CampaignStatus.RUNNING.value, created_at=utcnow())
        for position, data in enumerate(cases):
            campaign.cases.append(Case(
                id=str(data["id"]), cell_key=str(data["cell_key"]), cell=data["cell"], repeat=int(data["repeat"]),
                crash_index=int(data["crash_index"]), seed=str(int(data["seed"])), expect=str(data["expect"]),
                case=data, position=position, status=CaseStatus.PENDING.value, infra_retries=0))
        with self._session(write=True) as s:
            if s.get(Campaign, campaign_id) is not None:
                raise StoreError(f"campaign {campaign_id} already exists in {mask_url(self.url)}")
            s.add(campaign)

    def start_attempt(self, campaign_id: str, case_id: str, run_dir: str | Path, host: str | None = None) -> int:
        """Record a new attempt (number = previous attempts + 1) and mark the case running. `host`: who runs
        it, when known now (a cluster attempt learns its worker when it ends: see finish_attempt)."""
        with self._session(write=True) as s:
            case = s.get(Case, (campaign_id, case_id))
            if case is None:
                raise StoreError(f"no case {case_id} in campaign {campaign_id}")
            number = s.scalar(select(func.count()).select_from(Attempt).where(
                Attempt.campaign_id == campaign_id, Attempt.case_id == case_id)) or 0
            attempt = Attempt(campaign_id=campaign_id, case_id=case_id, number=number + 1, started_at=utcnow(),
                              status=AttemptStatus.RUNNING.value, run_dir=str(run_dir), host=host)
            s.add(attempt)
            case.status = CaseStatus.RUNNING.value
            s.flush()
            return attempt.id

    def finish_attempt(self, attempt_id: int, result: dict[str, Any], *, final: bool,
                       host: str | None = None) -> bool:
        """Store a CheckResult.to_dict(). final=False: an INFRA-ERROR to be retried (case back to pending).

        Idempotent: a cluster delivers at least once, so finishing an attempt that is no longer running
        changes nothing (no second retry counted, no verdict replaced) and returns False."""
        with self._session(write=True) as s:
            attempt = s.get(Attempt, attempt_id)
            if attempt is None:
                raise StoreError(f"no attempt {attempt_id}")
            if attempt.status != AttemptStatus.RUNNING.value:
                return False
            if host is not None:
                attempt.host = host
            verdict = _fill_attempt(attempt, result)
            case = attempt.case
            if final:
                case.status = CaseStatus.FINISHED.value
                case.verdict = verdict
                case.met_expectation = verdict == case.expect
            else:
                case.status = CaseStatus.PENDING.value
                case.infra_retries += 1
        return True

    def add_rerun(self, campaign_id: str, case_id: str, run_dir: str | Path, result: dict[str, Any]) -> int:
        """Store a finished re-run of a case (`repro --record`, watch's re-runs before calling a regression):
        an attempt like any other, marked ``"rerun": true`` in its result, that leaves the case's own
        verdict and status as the campaign judged them (lab/compare.py reads re-runs apart)."""
        with self._session(write=True) as s:
            if s.get(Case, (campaign_id, case_id)) is None:
                raise StoreError(f"no case {case_id} in campaign {campaign_id}")
            number = s.scalar(select(func.count()).select_from(Attempt).where(
                Attempt.campaign_id == campaign_id, Attempt.case_id == case_id)) or 0
            attempt = Attempt(campaign_id=campaign_id, case_id=case_id, number=number + 1, started_at=utcnow(),
                              status=AttemptStatus.RUNNING.value, run_dir=str(run_dir))
            s.add(attempt)
            _fill_attempt(attempt, {**result, "rerun": True})
            s.flush()
            return attempt.id

    def interrupt_running(self, campaign_id: str) -> None:
        """After Ctrl-C or a crashed controller: running attempts and cases become interrupted."""
        now = utcnow()
        with self._session(write=True) as s:
            s.execute(update(Attempt).where(Attempt.campaign_id == campaign_id,
                                            Attempt.status == AttemptStatus.RUNNING.value)
                      .values(status=AttemptStatus.INTERRUPTED.value, finished_at=now))
            s.execute(update(Case).where(Case.campaign_id == campaign_id, Case.status == CaseStatus.RUNNING.value)
                      .values(status=CaseStatus.INTERRUPTED.value))
            self._campaign(s, campaign_id).status = CampaignStatus.INTERRUPTED.value

    def set_campaign_status(self, campaign_id: str, status: str | CampaignStatus) -> None:
        value = CampaignStatus(status).value
        with self._session(write=True) as s:
            campaign = self._campaign(s, campaign_id)
            campaign.status = value
            campaign.finished_at = None if value == CampaignStatus.RUNNING.value else utcnow()

    # -- reading ---------------------------------------------------------
    @staticmethod
    def _campaign(s: Session, campaign_id: str) -> Campaign:
        campaign = s.get(Campaign, campaign_id)
        if campaign is None:
            raise StoreError(f"no campaign {campaign_id}")
        return campaign

    def pending_cases(self, campaign_id: str) -> list[dict[str, Any]]:
        """Case json (for ``lab.cases.Case.from_dict``) of every case not finished (pending, running,
        interrupted), in position order."""
        with self._session(write=False) as s:
            self._campaign(s, campaign_id)
            rows = s.scalars(select(Case.case).where(Case.campaign_id == campaign_id,
                                                     Case.status != CaseStatus.FINISHED.value)
                             .order_by(Case.position))
            return list(rows)

    def list_campaigns(self) -> list[CampaignListing]:
        """Newest first, with case counts (total, finished, met)."""
        with self._session(write=False) as s:
            counts = {cid: (total, finished or 0, met or 0) for cid, total, finished, met in s.execute(
                select(Case.campaign_id, func.count(),
                       func.sum(when((Case.status == CaseStatus.FINISHED.value, 1), else_=0)),
                       func.sum(when((Case.met_expectation.is_(True), 1), else_=0)))
                .group_by(Case.campaign_id))}
            out = []
            for campaign in s.scalars(select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id)):
                total, finished, met = counts.get(campaign.id, (0, 0, 0))
                out.append(CampaignListing(_campaign_record(campaign), cases=int(total), finished=int(finished),
                                           met=int(met)))
            return out

    def get_campaign(self, campaign_id: str) -> CampaignRecord:
        """The campaign, with its cases (position order) and their attempts."""
        with self._session(write=False) as s:
            campaign = self._campaign(s, campaign_id)
            cases = s.scalars(select(Case).where(Case.campaign_id == campaign_id).order_by(Case.position)
                              .options(selectinload(Case.attempts).options(*_ATTEMPT_LOAD))).all()
            return _campaign_record(campaign, cases=tuple(_case_record(c, attempts=True) for c in cases))

    def get_case(self, case_id: str, campaign_id: str | None = None) -> CaseRecord:
        """The case in the campaign given, else in its most recent campaign, with all its attempts and
        their findings."""
        with self._session(write=False) as s:
            where = [Case.id == case_id] + ([Case.campaign_id == campaign_id] if campaign_id else [])
            case = s.scalars(select(Case).join(Campaign).where(*where)
                             .order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(1)
                             .options(selectinload(Case.attempts).options(*_ATTEMPT_LOAD))).first()
            if case is None:
                raise StoreError(f"no case {case_id}" + (f" in campaign {campaign_id}" if campaign_id else ""))
            return _case_record(case, attempts=True)

    def find(self, id_or_prefix: str) -> CampaignRecord | CaseRecord:
        """get_campaign() or get_case() for an id or an unambiguous prefix of one."""
        key = id_or_prefix.strip()
        if not key:
            raise StoreError("an empty id matches nothing")
        pattern = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._session(write=False) as s:
            campaigns = list(s.scalars(select(Campaign.id).where(Campaign.id.like(pattern, escape="\\"))))
            cases = list(s.scalars(select(Case.id).where(Case.id.like(pattern, escape="\\")).distinct()))
        if key in campaigns:
            return self.get_campaign(key)
        if key in cases:
            return self.get_case(key)
        matches = [("campaign", c) for c in sorted(campaigns)] + [("case", c) for c in sorted(cases)]
        if not matches:
            raise StoreError(f"no campaign or case id starts with {key!r}")
        if len(matches) > 1:
            shown = ", ".join(f"{kind} {ident}" for kind, ident in matches[:8])
            more = f" and {len(matches) - 8} more" if len(matches) > 8 else ""
            raise StoreError(f"{key!r} is ambiguous: it matches {shown}{more}; give more characters")
        kind, ident = matches[0]
        return self.get_campaign(ident) if kind == "campaign" else self.get_case(ident)

    def campaign_summary(self, campaign_id: str) -> CampaignSummary:
        with self._session(write=False) as s:
            self._campaign(s, campaign_id)
            rows = s.scalars(select(Case).where(Case.campaign_id == campaign_id))
            cases = [_case_record(c, attempts=False) for c in rows]
        return summarize(campaign_id, cases)

    # -- history (the dashboard) -------------------------------------------
    def cell_history(self, scenario_name: str, cell_key: str) -> list[tuple[CampaignRecord, list[CaseRecord]]]:
        """Every campaign of a scenario, oldest first, with its cases of one cell (no attempts)."""
        with self._session(write=False) as s:
            campaigns = list(s.scalars(select(Campaign).where(Campaign.scenario_name == scenario_name)
                                       .order_by(Campaign.created_at, Campaign.id)))
            rows = s.scalars(select(Case).join(Campaign).where(Campaign.scenario_name == scenario_name,
                                                               Case.cell_key == cell_key)
                             .order_by(Case.position))
            by_campaign: dict[str, list[CaseRecord]] = {}
            for row in rows:
                by_campaign.setdefault(row.campaign_id, []).append(_case_record(row, attempts=False))
            return [(_campaign_record(c), by_campaign.get(c.id, [])) for c in campaigns]

    # -- pmemlab watch ------------------------------------------------------
    def watch_last_seen(self, plan: str, source: str) -> str | None:
        with self._session(write=False) as s:
            row = s.get(WatchSeen, (plan, source))
            return row.version if row is not None else None

    def watch_record_seen(self, plan: str, source: str, version: str) -> None:
        with self._session(write=True) as s:
            row = s.get(WatchSeen, (plan, source))
            if row is None:
                s.add(WatchSeen(plan=plan, source=source, version=version, seen_at=utcnow()))
            else:
                row.version, row.seen_at = version, utcnow()
