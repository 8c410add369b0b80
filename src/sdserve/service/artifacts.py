"""Where output images live: a local directory (the default), any S3-compatible bucket
(boto3), or memory (a service built without a data dir). Keys are ``job-id/token.ext``."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from ..errors import NotFound

__all__ = ["ArtifactStore", "LocalArtifacts", "S3Artifacts", "MemoryArtifacts"]

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


def _check_key(key: str) -> str:
    # Keys are made by the service, but a path built from one must never leave the root.
    if not _SAFE_KEY.match(key) or ".." in key:
        raise ValueError(f"unsafe artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    """Bytes by key. ``presigned_url`` is a direct, expiring link, or None where the
    backend has none (the output is then served through the API)."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (``job-id/``); how many."""
        ...

    def presigned_url(self, key: str, ttl_s: int) -> str | None: ...


class LocalArtifacts:
    """Files under ``root``; each is written to a temporary name, synced and renamed, so a
    crash never leaves a half-written output under its real name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"output {key} no longer exists") from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # the job's folder, once its last output is gone
        except OSError:
            pass

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix.rstrip("/"))
        files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        for p in files:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return len(files)

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        return None


class S3Artifacts:
    """Objects in an S3-compatible bucket under ``prefix``."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 presign: bool = False) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.presign = presign
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            # Path-style addressing works with every S3-compatible server (MinIO, moto, R2).
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                          retries={"max_attempts": 3, "mode": "standard"}),
        )

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey:
            raise NotFound(f"output {key} no longer exists") from None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        _check_key(prefix.rstrip("/"))
        n = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                n += len(keys)
        return n

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        if not self.presign:
            return None
        return self.client.generate_presigned_url(  # type: ignore[no-any-return]
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=ttl_s)


class MemoryArtifacts:
    """A dict: outputs of a service built without a data dir, gone with the process."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self._data[_check_key(key)] = data

    def get(self, key: str) -> bytes:
        with self._lock:
            if key not in self._data:
                raise NotFound(f"output {key} no longer exists")
            return self._data[key]

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def delete_prefix(self, prefix: str) -> int:
        _check_key(prefix.rstrip("/"))
        with self._lock:
            keys = [k for k in self._data if k.startswith(prefix)]
            for k in keys:
                del self._data[k]
            return len(keys)

    def presigned_url(self, key: str, ttl_s: int) -> str | None:
        return None
