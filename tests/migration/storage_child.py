"""The storage step run alone in a child process, for the kill test (`test_storage_copy`).

``python -m tests.migration.storage_child SOURCE_URL FILE_ROOT BUCKET``; S3 is reached through
``AWS_ENDPOINT_URL`` (a moto server on 127.0.0.1). Progress lines go to stdout as they happen.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3

from migration.connection import Endpoint
from migration.progress import LogReporter
from migration.storage_copy import StorageCopySettings, copy_objects
from migration.storage_sources import FileBackendSource


def main(argv: list[str]) -> None:
    url, root, bucket = argv
    report = copy_objects(
        Endpoint(url, "source"),
        FileBackendSource(Path(root)),
        StorageCopySettings(bucket, workers=2),
        boto3.client("s3", region_name="us-east-1"),
        LogReporter(lambda line: print(line, flush=True), interval=0),
    )
    print(json.dumps(report.as_dict()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
