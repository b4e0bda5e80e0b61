"""A registry writer that stops at a chosen point of a publish, for a test to SIGKILL it there.

``python -m tests.integration.storage_writer <storage url> <cache dir> <version folder> <stage> <marker>``
registers a copy of the version in ``<version folder>`` (its model and report files) as a new version
of the same model, to be activated; at ``<stage>`` ("files": every file uploaded and checked, no
manifest; "manifest": manifest written, pointer not moved) it creates ``<marker>`` and waits to be killed.
boto3 reads the endpoint and credentials from the AWS_* variables, as the service does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.storage import Storage
from models import Manifest, S3Registry
from models.manifest import MANIFEST_FILE, MODEL_FILE


def main(url: str, cache: str, folder: str, stage: str, marker: str) -> None:
    source = Path(folder)
    manifest = Manifest.model_validate_json((source / MANIFEST_FILE).read_text(encoding="utf-8"))
    registry = S3Registry(Storage(url), Path(cache))

    def stop_here(reached: str) -> None:
        if reached == stage:
            Path(marker).write_text(reached)
            while True:  # the test kills this process now
                time.sleep(1)

    registry.stage_hook = stop_here
    extras = {p.name: p for p in source.iterdir() if p.is_file() and p.name not in (MANIFEST_FILE, MODEL_FILE)}
    registry.register(manifest, source / MODEL_FILE, extra_files=extras, activate=True)
    raise SystemExit(f"the writer finished without reaching {stage!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
