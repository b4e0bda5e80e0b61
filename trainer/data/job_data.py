"""One job's dataset and its decoded splits (torch-free to import: a worker starts without torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.manifest import Preprocessing
    from trainer.data.pixels import CachedSplit, DatasetLike


class JobData:
    """One job's dataset and its decoded splits: each step that reads pixels asks here, decoding happens once.

    The engine fills the same caches (memory, then ``cache_dir``) while it trains, so the steps
    after it (export check, variant gates, evaluation) reuse those pixels instead of decoding again.
    """

    def __init__(self, dataset: DatasetLike, cache_dir: Path | None = None) -> None:
        self.dataset = dataset
        self.cache_dir = cache_dir

    @property
    def id(self) -> str:
        return self.dataset.id

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    def has(self, split: str) -> bool:
        return bool(self.dataset.items(split))

    def split(self, name: str, pre: Preprocessing, with_train: bool = False) -> CachedSplit:
        from trainer.data.pixels import load_split

        return load_split(self.dataset, name, pre, with_train=with_train, cache_dir=self.cache_dir)
