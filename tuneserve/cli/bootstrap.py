"""``tuneserve bootstrap``: register the ImageNet-pretrained default model. The settings are read here, at the edge."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from core.settings import get_settings
from models import registry_for

log = logging.getLogger(__name__)


def cmd_bootstrap(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tuneserve bootstrap")
    parser.add_argument("--check-images", type=Path, default=None,
                        help="folder of real photos to check the ONNX export on")
    parser.add_argument("--force", action="store_true", help="register a new version even if one is active")
    parser.add_argument("--variants", action="store_true",
                        help="also build fp16 (CUDA) and int8 (CPU) variants, checked on --check-images")
    opts = parser.parse_args(args)
    from trainer.publish.bootstrap import bootstrap

    settings = get_settings()
    version = bootstrap(registry_for(settings), settings, opts.check_images, opts.force, opts.variants)
    log.info("default model 'imagenet' version %d is active in %s", version,
             settings.storage_url or settings.models_dir)
    return 0


def run(command: str, args: list[str]) -> int:
    return cmd_bootstrap(args)
