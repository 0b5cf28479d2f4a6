"""ORM tables of the results store.

campaigns 1-n cases 1-n attempts 1-n findings / timings / artifacts.

A case id is derived from the scenario content, so the same case id appears in
every campaign of that scenario: cases are keyed by (campaign_id, id).
The schema itself is owned by the Alembic migrations (lab/store/migrations);
a unit test checks that these models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, ForeignKeyConstraint, Index, Integer,
                        MetaData, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints: Alembic (and PostgreSQL) can then refer to them by name.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class CampaignStatus(str, Enum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    FAILED = "failed"


class CaseStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class AttemptStatus(str, Enum):
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scenario_name: Mapped[str] = mapped_column(String(200))
    scenario_path: Mapped[str] = mapped_column(Text)
    scenario_text: Mapped[str] = mapped_column(Text)
    scenario_hash: Mapped[str] = mapped_column(String(128))
    image_id: Mapped[str] = mapped_column(String(128))
    kernel_version: Mapped[str] = mapped_column(String(200))
    accelerator: Mapped[str] = mapped_column(String(32))
    jobs: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    cases: Mapped[list[Case]] = relationship(back_populates="campaign", order_by="Case.position",
                                             cascade="all, delete-orphan")


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_campaign_id_status", "campaign_id", "status"),
    )

    campaign_id: Mapped[str] = mapped_column(String(64), ForeignKey("campaigns.id", ondelete="CASCADE"),
                                             primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    cell_key: Mapped[str] = mapped_column(Text)
    cell: Mapped[Any] = mapped_column(JSON)
    repeat: Mapped[int] = mapped_column(Integer)
    crash_index: Mapped[int] = mapped_column(Integer)
    # Text, not an integer column: a seed may be any Python int (64-bit unsigned overflows BIGINT).
    seed: Mapped[str] = mapped_column(String(40))
    expect: Mapped[str] = mapped_column(String(16))
    case: Mapped[dict[str, Any]] = mapped_column(JSON)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str | None] = mapped_column(String(16))
    met_expectation: Mapped[bool | None] = mapped_column(Boolean)
    infra_retries: Mapped[int] = mapped_column(Integer, default=0)

    campaign: Mapped[Campaign] = relationship(back_populates="cases")
    attempts: Mapped[list[Attempt]] = relationship(back_populates="case", order_by="Attempt.number",
                                                   cascade="all, delete-orphan")


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        ForeignKeyConstraint(["campaign_id", "case_id"], ["cases.campaign_id", "cases.id"], ondelete="CASCADE"),
        UniqueConstraint("campaign_id", "case_id", "number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[str] = mapped_column(String(64))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str | None] = mapped_column(String(16))
    run_dir: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host: Mapped[str | None] = mapped_column(String(200))  # who ran it: a host name or cluster worker

    case: Mapped[Case] = relationship(back_populates="attempts")
    findings: Mapped[list[FindingRow]] = relationship(order_by="FindingRow.id", cascade="all, delete-orphan")
    timings: Mapped[list[TimingRow]] = relationship(order_by="TimingRow.id", cascade="all, delete-orphan")
    artifacts: Mapped[list[ArtifactRow]] = relationship(order_by="ArtifactRow.id", cascade="all, delete-orphan")


class FindingRow(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    oracle: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[Any] = mapped_column(JSON)


class TimingRow(Base):
    __tablename__ = "timings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    phase: Mapped[str] = mapped_column(String(64))
    seconds: Mapped[float] = mapped_column(Float)


class ArtifactRow(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)


class WatchSeen(Base):
    """The kernel version `pmemlab watch` last ran for one source of one plan."""

    __tablename__ = "watch_seen"

    plan: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
