"""Named files: the names a dialect gives uploads and outputs (ComfyUI's ``/view?filename=``).

A name is ``(folder, subfolder, name)`` within one dialect and one owner. It is a row that
points at bytes the service already keeps: an upload's artifact key, or image ``image_index``
of a job's outputs (so an output's name stops resolving when the output expires). Names are
looked up, never joined onto a filesystem path, so no name can reach outside.

Numbered outputs follow ComfyUI's ``SaveImage``: ``<prefix>_<counter:05>_.png``, the counter
one past the highest this owner has under that prefix and subfolder, allocated in the same
transaction that records the names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, func, insert, select
from sqlalchemy.exc import IntegrityError

from .db import Database
from .tables import named_files, outputs

__all__ = ["NamedFile", "NamedFiles", "Slot"]


@dataclass(frozen=True)
class NamedFile:
    folder: str
    subfolder: str
    name: str
    key: str | None = None  # an upload's artifact key
    job_id: str | None = None  # or a job's output
    image_index: int | None = None


@dataclass(frozen=True)
class Slot:
    """Names wanted for ``count`` outputs of one job: image ``first + i`` gets name ``i``."""

    folder: str
    subfolder: str
    prefix: str
    job_id: str
    count: int
    first: int = 0
    suffix: str = ".png"


def _ns(owner: str | None) -> str:
    return owner or ""


class NamedFiles:
    def __init__(self, db: Database, dialect: str) -> None:
        self.db = db
        self.dialect = dialect

    def _where(self, owner: str | None, folder: str, subfolder: str):  # type: ignore[no-untyped-def]
        c = named_files.c
        return and_(c.dialect == self.dialect, c.owner_ns == _ns(owner), c.folder == folder, c.subfolder == subfolder)

    def get(self, owner: str | None, folder: str, subfolder: str, name: str) -> NamedFile | None:
        with self.db.tx() as conn:
            row = conn.execute(select(named_files).where(self._where(owner, folder, subfolder),
                                                         named_files.c.name == name)).first()
        if row is None:
            return None
        return NamedFile(row.folder, row.subfolder, row.name, row.key, row.job_id, row.image_index)

    def listing(self, owner: str | None, folder: str) -> list[tuple[str, str]]:
        """(subfolder, name) of every file in ``folder``, sorted."""
        c = named_files.c
        with self.db.tx() as conn:
            rows = conn.execute(select(c.subfolder, c.name).where(
                c.dialect == self.dialect, c.owner_ns == _ns(owner), c.folder == folder)
                .order_by(c.subfolder, c.name)).all()
        return [(r.subfolder, r.name) for r in rows]

    def output_key(self, f: NamedFile) -> str | None:
        """Where a job output's bytes are, while the output lives (None: not yet, or expired)."""
        now = time.time()
        with self.db.tx() as conn:
            row = conn.execute(select(outputs).where(outputs.c.job_id == f.job_id,
                                                     outputs.c.image_index == f.image_index)).first()
        if row is None or row.removed or (row.expires_at is not None and row.expires_at <= now):
            return None
        return str(row.key)

    def put_upload(self, owner: str | None, folder: str, subfolder: str, name: str, key: str) -> None:
        """Name an upload (replacing what had that name)."""
        c = named_files.c
        with self.db.tx() as conn:
            conn.execute(named_files.delete().where(self._where(owner, folder, subfolder), c.name == name))
            conn.execute(insert(named_files).values(dialect=self.dialect, owner_ns=_ns(owner), folder=folder,
                                                    subfolder=subfolder, name=name, key=key, created_at=time.time()))

    def allocate(self, owner: str | None, slots: list[Slot], attempts: int = 5) -> list[list[NamedFile]]:
        """Numbered names for each slot, all recorded in one transaction (retried when another
        server took the same counter first)."""
        for attempt in range(attempts):
            try:
                return self._allocate(owner, slots)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _allocate(self, owner: str | None, slots: list[Slot]) -> list[list[NamedFile]]:
        c = named_files.c
        now = time.time()
        out: list[list[NamedFile]] = []
        with self.db.tx() as conn:
            taken: dict[tuple[str, str, str], int] = {}
            for s in slots:
                k = (s.folder, s.subfolder, s.prefix)
                if k not in taken:
                    top: int | None = conn.execute(select(func.max(c.counter)).where(self._where(owner, s.folder, s.subfolder),
                                                                         c.prefix == s.prefix)).scalar_one()
                    taken[k] = int(top or 0)
                names: list[NamedFile] = []
                for i in range(s.count):
                    taken[k] += 1
                    name = f"{s.prefix}_{taken[k]:05}_{s.suffix}"
                    conn.execute(insert(named_files).values(
                        dialect=self.dialect, owner_ns=_ns(owner), folder=s.folder, subfolder=s.subfolder, name=name,
                        prefix=s.prefix, counter=taken[k], job_id=s.job_id, image_index=s.first + i, created_at=now))
                    names.append(NamedFile(s.folder, s.subfolder, name, None, s.job_id, s.first + i))
                out.append(names)
        return out
