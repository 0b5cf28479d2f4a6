"""Results database: campaigns, cases, attempts, findings (SQLAlchemy + Alembic), read back as typed records."""

from lab.store.db import ResultsStore, StoreError, default_url
from lab.store.models import AttemptStatus, CampaignStatus, CaseStatus
from lab.store.records import (ArtifactRecord, AttemptRecord, CampaignListing, CampaignRecord, CaseRecord,
                               FindingRecord)
from lab.store.summary import CampaignSummary, CellSummary, summarize

__all__ = ["ArtifactRecord", "AttemptRecord", "AttemptStatus", "CampaignListing", "CampaignRecord", "CampaignStatus",
           "CampaignSummary", "CaseRecord", "CaseStatus", "CellSummary", "FindingRecord", "ResultsStore",
           "StoreError", "default_url", "summarize"]
