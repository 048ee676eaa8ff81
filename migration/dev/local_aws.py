"""The demo's Secrets Manager and S3 bucket: moto's server on 127.0.0.1, state kept on disk.

Why a server rather than moto's in-process mock: the auth and storage steps then make the same
boto3 calls over HTTP as against AWS (`SecretsManagerStore`, the storage copy and check), with
nothing patched. Nothing outside the machine is reached: the endpoint is 127.0.0.1 and the
credentials are dummies.

Why the state is saved: moto keeps it in memory, and a second `make demo` must find the first
one's passwords and files (each step then finds nothing to do). `save` writes the secrets
(mode 0600, like the demo's master password file) and the bucket's objects under `directory`;
`start` puts them back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

from migration.db.roles import LOGIN_ROLES, SecretsManagerStore
from migration.dev.local import free_port

REGION = "us-east-1"
BUCKET = "qckstrt-demo-files"
SECRET_PREFIX = "qckstrt/demo/"


class LocalAws:
    """moto's ThreadedMotoServer with the stack's secrets (one per login role) and bucket.

    :param directory: where the state is kept between runs (``.demo/aws``).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.endpoint = ""
        self._server: Any = None
        self.arns: dict[str, str] = {}

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        # Its HTTP server logs every request at INFO on stderr, amid the demo's progress.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        # moto's backends live in this process: start from this directory's state only.
        reset = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10):
            pass
        self._restore()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, service: str) -> Any:
        """A boto3 client of `service` at the local endpoint (dummy credentials)."""
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
        )

    def password_store(self) -> SecretsManagerStore:
        """The auth step's password store: the same class `run` uses against AWS."""
        return SecretsManagerStore(self.arns, self.client("secretsmanager"))

    @property
    def _secrets_file(self) -> Path:
        return self.directory / "secrets.json"

    @property
    def _objects_dir(self) -> Path:
        return self.directory / "bucket"

    def _restore(self) -> None:
        """Create the secrets and the bucket, with the values and objects saved last time."""
        saved = json.loads(self._secrets_file.read_text()) if self._secrets_file.exists() else {}
        sm = self.client("secretsmanager")
        for role in LOGIN_ROLES:
            extra = {"SecretString": saved[role]} if role in saved else {}
            self.arns[role] = sm.create_secret(Name=SECRET_PREFIX + role, **extra)["ARN"]
        s3 = self.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        index = self._objects_dir / "index.json"
        for key, saved_object in (json.loads(index.read_text()) if index.exists() else {}).items():
            body = (self._objects_dir / _file_name(key)).read_bytes()
            s3.put_object(Bucket=BUCKET, Key=key, Body=body, **saved_object["head"])

    def save(self) -> None:
        """Write the secrets' values and the bucket's objects under `directory`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sm = self.client("secretsmanager")
        values: dict[str, str] = {}
        for role, arn in self.arns.items():
            secret = sm.describe_secret(SecretId=arn)
            if secret.get("VersionIdsToStages"):
                values[role] = sm.get_secret_value(SecretId=arn)["SecretString"]
        self._secrets_file.touch(mode=0o600)
        self._secrets_file.write_text(json.dumps(values))
        self._save_objects()

    def _save_objects(self) -> None:
        """The bucket's objects, fetching only those not saved already (same ETag)."""
        s3 = self.client("s3")
        self._objects_dir.mkdir(exist_ok=True)
        path = self._objects_dir / "index.json"
        before: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
        index: dict[str, dict[str, Any]] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                key, file = item["Key"], self._objects_dir / _file_name(item["Key"])
                if before.get(key, {}).get("etag") == item["ETag"] and file.exists():
                    index[key] = before[key]
                    continue
                got = s3.get_object(Bucket=BUCKET, Key=key)
                file.write_bytes(got["Body"].read())
                head = {"ContentType": got["ContentType"], "Metadata": got.get("Metadata", {})}
                if got.get("CacheControl"):
                    head["CacheControl"] = got["CacheControl"]
                index[key] = {"etag": item["ETag"], "head": head}
        path.write_text(json.dumps(index, indent=1))


def _file_name(key: str) -> str:
    """A flat file name for an S3 key (keys hold slashes and any character)."""
    return hashlib.sha256(key.encode()).hexdigest()
