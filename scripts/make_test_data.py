"""Rebuild the small photo sets committed under ``tests/data`` from the full sets in ``../shared/data``.

Run once by a developer (the tests never read ``../shared``)::

    .venv/bin/python scripts/make_test_data.py --shared ../shared/data

* ``tests/data/imagenet``: the 43 ImageNet photos and ``labels.csv``, byte for byte.
* ``tests/data/ants_bees``: a subset of the PyTorch tutorial's ants/bees set: the first 40 train and
  25 val JPEGs per class (sorted by name), plus the photos and quirks the tests name, each photo
  shrunk so its longer side is at most 400 px (aspect ratio kept, quality 88). The quirks are kept:
  the GIF placeholder, the ``.jpeg`` file, the name with a space, the very wide photo.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = {"train": 40, "val": 25}
NAMED = {  # files the tests name, kept whatever their sort position
    "train/ants": ["0013035.jpg", "formica.jpeg", "ant photos.jpg", "imageNotFound.gif", "662541407_ff8db781e7.jpg"],
    "val/bees": ["10870992_eebeeb3a12.jpg"],

}
LONG_SIDE = 400

SOURCE = """# ants_bees: a small two-class set for the tests

A subset of `hymenoptera_data`, the ants/bees photos of the PyTorch transfer-learning tutorial
("a very small subset of ImageNet"; source: github.com/zhangtao7750/syn @ f0503091488f67b6809a6da2eaa43c25f2f277fc,
folder hymenoptera_data/). Licence: none stated for the images (that repository has no LICENSE; the
tutorial's code says "License: BSD"); the photos come from ImageNet, i.e. from Flickr and other sites.

Built by `scripts/make_test_data.py`: the first 40 train and 25 val JPEGs per class plus the files
the tests name, each shrunk to at most 400 px on its longer side (aspect kept, JPEG quality 88).
Quirks of the original kept on purpose: `train/ants/imageNotFound.gif` is a 300x300 placeholder
picture, `train/ants/formica.jpeg` has another extension, `train/ants/ant photos.jpg` has a space in
its name, and `train/ants/662541407_ff8db781e7.jpg` is very wide. `SHA256SUMS` lists every file.
"""


def shrink(src: Path, dest: Path) -> None:
    if src.suffix.lower() == ".gif":
        shutil.copyfile(src, dest)
        return
    with Image.open(src) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        scale = min(1.0, LONG_SIDE / max(rgb.size))
        if scale < 1.0:
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        rgb.save(dest, "JPEG", quality=88, optimize=True)


def build_ants_bees(shared: Path, dest: Path) -> None:
    src_root = shared / "hymenoptera"
    if dest.exists():
        shutil.rmtree(dest)
    for split, n in PER_CLASS.items():
        for label in ("ants", "bees"):
            folder = src_root / split / label
            jpegs = sorted(p.name for p in folder.iterdir() if p.suffix == ".jpg" and " " not in p.name)[:n]
            names = sorted(set(jpegs) | set(NAMED.get(f"{split}/{label}", [])))
            out = dest / split / label
            out.mkdir(parents=True)
            for name in names:
                shrink(folder / name, out / name)
    (dest / "SOURCE.md").write_text(SOURCE, encoding="utf-8")
    sums = []
    for path in sorted(p for p in dest.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        sums.append(f"{digest}  ./{path.relative_to(dest).as_posix()}")
    (dest / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")


def copy_imagenet(shared: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(shared / "imagenet_samples", dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    data = REPO / "tests" / "data"
    copy_imagenet(args.shared, data / "imagenet")
    build_ants_bees(args.shared, data / "ants_bees")


if __name__ == "__main__":
    main()
