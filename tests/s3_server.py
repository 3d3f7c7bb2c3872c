"""Object-storage fixtures for tests: a real S3-compatible server on loopback, and `memory://` folders.

Use from a test module with `pytest_plugins = ["s3_server"]` (or from tests/conftest.py, once, for all).

Fixtures
  s3_server   (session)  moto in server mode on 127.0.0.1, a bucket, dummy credentials; an `S3Server`.
  s3          (function) the same server with s3fs's caches cleared and a fresh, empty prefix for the test.
  memory_dir  (function) a fresh `memory://` folder, removed afterwards.

How code under test reaches the server
  With explicit options: `fsspec.url_to_fs(url, **server.storage_options)`.
  With a bare URL: the fixture sets `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_S3`) for the session.
  botocore >= 1.31 reads these when a client is created and s3fs builds its client through botocore, so
  `fsspec.url_to_fs("s3://bucket/x")` with no options talks to the loopback server
  (checked by tests/test_storage.py::test_bare_s3_url_reaches_server_through_env).

Why clear s3fs's caches per test: fsspec keeps one S3FileSystem instance per set of options, and each keeps a
listing cache. An instance made with storage options and one made from the environment are different
objects, so a write through one leaves the other's listings stale. `s3` starts each test with none cached.
"""

from __future__ import annotations

import logging
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

REGION = "us-east-1"
BUCKET = "rlds-test"
KEY = "testing-key"
SECRET = "testing-secret"


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server and the bucket made for the tests.

    `prefix` is "" for the session-wide handle; the per-test `s3` fixture hands out one with a fresh prefix,
    and `url(...)` joins under it.
    """

    endpoint_url: str
    bucket: str
    key: str = KEY
    secret: str = SECRET
    region: str = REGION
    prefix: str = ""

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options that reach this server without relying on the environment."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def url(self, *parts: str) -> str:
        """`s3://bucket/prefix/parts...`."""
        return "s3://" + posixpath.join(self.bucket, self.prefix, *parts).rstrip("/")

    def filesystem(self):
        """An s3fs file system on this server (built from `storage_options`)."""
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def with_prefix(self, prefix: str) -> S3Server:
        return S3Server(self.endpoint_url, self.bucket, self.key, self.secret, self.region, prefix)

    def upload_dir(self, local_dir: str | os.PathLike, prefix: str) -> str:
        """Copy a local folder tree to `s3://bucket/<self.prefix>/<prefix>`; return that URL."""
        fs = self.filesystem()
        target = self.url(prefix)
        copy_tree(local_dir, fs, target)
        return target

    @staticmethod
    def clear_caches() -> None:
        """Forget every cached S3FileSystem instance (and with them their listing caches)."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


def copy_tree(local_dir: str | os.PathLike, fs, target: str) -> None:
    """Copy every file under a local folder to `target` on file system `fs`, keeping relative paths."""
    root = os.fspath(local_dir)
    for folder, _, files in os.walk(root):
        for name in files:
            local = os.path.join(folder, name)
            rel = os.path.relpath(local, root).replace(os.sep, "/")
            with open(local, "rb") as f:
                fs.pipe_file(posixpath.join(target, rel), f.read())
    fs.invalidate_cache()


def upload_to_memory(local_dir: str | os.PathLike, url: str) -> str:
    """Copy a local folder tree to a `memory://` URL; return the URL."""
    import fsspec

    copy_tree(local_dir, fsspec.filesystem("memory"), url)
    return url


def _env(endpoint_url: str) -> dict[str, str]:
    missing = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".no-such-aws-file")
    return {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ENDPOINT_URL_S3": endpoint_url,
        # never read a developer's real AWS config, never ask an instance metadata service
        "AWS_SHARED_CREDENTIALS_FILE": missing,
        "AWS_CONFIG_FILE": missing,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server once per session on a free loopback port, with one bucket."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("AWS_PROFILE", raising=False)
            mp.delenv("AWS_SESSION_TOKEN", raising=False)
            for name, value in _env(endpoint_url).items():
                mp.setenv(name, value)
            S3Server.clear_caches()
            import boto3  # not s3fs's mkdir: it sends a LocationConstraint, which us-east-1 refuses

            boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id=KEY,
                         aws_secret_access_key=SECRET).create_bucket(Bucket=BUCKET)
            yield S3Server(endpoint_url=endpoint_url, bucket=BUCKET)
            S3Server.clear_caches()
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Server]:
    """The session's server, with no cached S3FileSystem and an empty prefix of this test's own."""
    S3Server.clear_caches()
    yield s3_server.with_prefix(f"t-{uuid.uuid4().hex[:12]}")
    S3Server.clear_caches()


@pytest.fixture
def memory_dir() -> Iterator[str]:
    """A fresh `memory://` folder (fsspec's process-wide in-memory file system), removed afterwards."""
    import fsspec

    url = f"memory://rlds-test-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("memory")
    fs.mkdir(url)
    yield url
    if fs.exists(url):
        fs.rm(url, recursive=True)
