"""Results database: campaigns, cases, attempts, findings (SQLAlchemy + Alembic)."""

from lab.report.campaign import CampaignSummary, CellSummary
from lab.store.db import ResultsStore, StoreError, default_url
from lab.store.models import AttemptStatus, CampaignStatus, CaseStatus

__all__ = ["AttemptStatus", "CampaignStatus", "CampaignSummary", "CaseStatus", "CellSummary", "ResultsStore",
           "StoreError", "default_url"]
