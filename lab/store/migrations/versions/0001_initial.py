"""Initial schema: campaigns, cases, attempts, findings, timings, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _attempt_child(name: str, *columns: sa.Column[Any]) -> None:
    """findings, timings and artifacts: rows hanging off one attempt."""
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(["attempt_id"], ["attempts.id"], name=op.f(f"fk_{name}_attempt_id_attempts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(op.f(f"ix_{name}_attempt_id"), name, ["attempt_id"])


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("scenario_name", sa.String(length=200), nullable=False),
        sa.Column("scenario_path", sa.Text(), nullable=False),
        sa.Column("scenario_text", sa.Text(), nullable=False),
        sa.Column("scenario_hash", sa.String(length=128), nullable=False),
        sa.Column("image_id", sa.String(length=128), nullable=False),
        sa.Column("kernel_version", sa.String(length=200), nullable=False),
        sa.Column("accelerator", sa.String(length=32), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(op.f("ix_campaigns_created_at"), "campaigns", ["created_at"])

    op.create_table(
        "cases",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("cell_key", sa.Text(), nullable=False),
        sa.Column("cell", sa.JSON(), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("crash_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.String(length=40), nullable=False),
        sa.Column("expect", sa.String(length=16), nullable=False),
        sa.Column("case", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("met_expectation", sa.Boolean(), nullable=True),
        sa.Column("infra_retries", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_cases_campaign_id_campaigns"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "id", name=op.f("pk_cases")),
    )
    op.create_index("ix_cases_campaign_id_status", "cases", ["campaign_id", "status"])
    op.create_index(op.f("ix_cases_id"), "cases", ["id"])

    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id", "case_id"], ["cases.campaign_id", "cases.id"],
                                name=op.f("fk_attempts_campaign_id_cases"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("campaign_id", "case_id", "number", name=op.f("uq_attempts_campaign_id")),
    )

    _attempt_child("findings",
                   sa.Column("oracle", sa.String(length=64), nullable=False),
                   sa.Column("verdict", sa.String(length=16), nullable=False),
                   sa.Column("summary", sa.Text(), nullable=False),
                   sa.Column("details", sa.JSON(), nullable=False))
    _attempt_child("timings",
                   sa.Column("phase", sa.String(length=64), nullable=False),
                   sa.Column("seconds", sa.Float(), nullable=False))
    _attempt_child("artifacts",
                   sa.Column("kind", sa.String(length=32), nullable=False),
                   sa.Column("path", sa.Text(), nullable=False))


def downgrade() -> None:
    for name in ("artifacts", "timings", "findings"):
        op.drop_index(op.f(f"ix_{name}_attempt_id"), table_name=name)
        op.drop_table(name)
    op.drop_table("attempts")
    op.drop_index(op.f("ix_cases_id"), table_name="cases")
    op.drop_index("ix_cases_campaign_id_status", table_name="cases")
    op.drop_table("cases")
    op.drop_index(op.f("ix_campaigns_created_at"), table_name="campaigns")
    op.drop_table("campaigns")
