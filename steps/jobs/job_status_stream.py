"""The ``jobStatus`` stream: each job's status and progress, live for the Workbench's Streams tab and for
any page using Motia's stream client (group ``jobs``, one item per job id)."""

from pydantic import BaseModel


class JobStatus(BaseModel):
    id: str
    type: str
    status: str  # queued, running, retry_scheduled, completed, failed
    progress: float  # 0.0 .. 1.0
    attempt: int
    error: str | None = None
    updatedAt: str


config = {
    "name": "jobStatus",
    "schema": JobStatus,
    "baseConfig": {"storageType": "default"},
}
