"""The job database's tables (SQLAlchemy Core). Alembic migrations create them; this module
is what the code queries and what the migration test compares the migrated schema with.

Times are Unix seconds (floats): portable across SQLite and PostgreSQL and what the
service computes with. JSON columns are Text so both backends store them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

__all__ = ["metadata", "jobs", "job_inputs", "outputs", "api_keys", "rate_buckets", "webhook_deliveries", "meta",
           "job_groups", "named_files"]

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    # ``seq`` orders submissions (FIFO within an owner); ``id`` is the public, unguessable name.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("owner", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("model", String(255), nullable=False),
    Column("request", Text, nullable=False),  # the parameters as submitted (JSON, no image bytes)
    Column("params", Text, nullable=False),  # resolved GenerationParams (JSON, no image bytes)
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Column("error", Text, nullable=True),  # JSON: class, message, field
    Column("device", String(32), nullable=True),
    Column("dtype", String(16), nullable=True),
    Column("credits", Integer, nullable=False, server_default="0"),  # charged to the owner's key
    Column("webhook", Text, nullable=True),
    Column("webhook_events", String(64), nullable=True),  # comma-separated: start,completed
    Column("warnings", Text, nullable=True),  # JSON list of the engine's warnings to the caller
    # What the submitting dialect needs to answer later (JSON), and its webhook body format.
    Column("reply", Text, nullable=True),
    Column("webhook_format", String(32), nullable=True),
    # Written while it runs, for the servers not running it (several API replicas on one
    # database): who claimed the latest attempt, its step, and its latest preview PNG.
    Column("claimed_by", String(128), nullable=True),
    Column("progress_step", Integer, nullable=True),
    Column("progress_total", Integer, nullable=True),
    Column("preview", LargeBinary, nullable=True),
    # Compute units (engine.cost), priced at submit: credits, limits and fairness use it.
    Column("cost", Float, nullable=False, server_default="0"),
)
Index("ix_jobs_status_owner", jobs.c.status, jobs.c.owner)

# Input images live apart from the job row so listing jobs never loads megabytes, and are
# deleted when the job ends. One row per image, by role (init, mask, and the add-ons' roles),
# so a new kind of input needs no new column.
job_inputs = Table(
    "job_inputs",
    metadata,
    Column("job_id", String(64), ForeignKey("jobs.id"), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("position", Integer, primary_key=True, server_default="0"),  # index among images of one role
    Column("data", LargeBinary, nullable=False),
)

outputs = Table(
    "outputs",
    metadata,
    Column("token", String(64), primary_key=True),  # the unguessable part of the output URL
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False, index=True),
    Column("image_index", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("key", String(512), nullable=False),  # where the artifact store keeps the bytes
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True, index=True),
    Column("removed", Boolean, nullable=False, server_default=false()),
    Column("nsfw", Boolean, nullable=True),  # the safety checker's flag; NULL: not checked
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    Column("prefix", String(16), nullable=False),  # first characters, to recognise a key in lists
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("rate_limit", Integer, nullable=True),  # requests per minute
    Column("credits", Integer, nullable=True),  # images allowed in total
    Column("credits_used", Integer, nullable=False, server_default="0"),  # images charged (with or without a quota)
    Column("compute_credits", Float, nullable=True),  # compute units allowed in total
    Column("compute_used", Float, nullable=False, server_default="0"),  # compute units charged
    Column("limits", Text, nullable=True),  # JSON: this key's per-request limits (service.limits)
)

# Token buckets of the per-key rate limits, in the database so that every server sharing it
# enforces one limit per key (service.ratelimit).
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),  # Unix seconds: servers share wall clocks, not monotonic ones
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),  # the webhook-id header: same on every retry
    Column("job_id", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("event", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),  # the exact bytes signed and sent
    Column("status", String(16), nullable=False),  # pending, delivered, failed, gone
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False, index=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# A dialect's request that became several jobs (a ComfyUI prompt: one job per sampler chain),
# under the dialect's own id, with what the dialect needs to answer for it later (service.groups).
job_groups = Table(
    "job_groups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("dialect", String(32), nullable=False),
    Column("owner", String(64), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("job_ids", Text, nullable=False),  # JSON list, in the dialect's order
    Column("data", Text, nullable=False),  # JSON: the dialect's own record of the request
    Column("finished_at", Float, nullable=True),  # set once every job ended (history vs queue)
)
Index("ix_job_groups_dialect_owner", job_groups.c.dialect, job_groups.c.owner, job_groups.c.created_at)

# Files a dialect names itself (ComfyUI's /view?filename=&subfolder=&type=): an upload (its bytes
# in the artifact store under ``key``) or image ``image_index`` of a job's outputs (served while
# that output lives). Names are per owner (``owner_ns``: the owner id, "" on an open server); a
# name is looked up here, never joined onto a path, so no name reaches outside (service.named_files).
named_files = Table(
    "named_files",
    metadata,
    Column("dialect", String(32), primary_key=True),
    Column("owner_ns", String(64), primary_key=True),
    Column("folder", String(16), primary_key=True),
    Column("subfolder", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("prefix", String(255), nullable=True),  # numbered outputs: <prefix>_<counter:05>_.png
    Column("counter", Integer, nullable=True),
    Column("key", String(512), nullable=True),
    Column("job_id", String(64), nullable=True, index=True),
    Column("image_index", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
)
