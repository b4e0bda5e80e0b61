"""Near-duplicate detection: precision and recall on labelled pairs of real photos, new rule vs old.

Builds a corpus from ``../shared/data`` (``bench.data.shared_data``): distinct photos (CIFAR-10 JPEGs,
32x32 and low-detail, plus the hymenoptera and ImageNet sample photos) and, for a seeded sample of
them, five copies each: re-encoded at JPEG quality 50 and 95, resized (halved, or doubled for tiny
ones), cropped by 4% on every side, and stored turned with an EXIF orientation that turns it back.
Every file goes through the real validation (``check_files``: decode, EXIF, fingerprint) and the real
grouping (``duplicate_groups``); the old rule (a hand-written 64-bit dHash within 5 bits, as
``core/datasets/validate.py`` had it, now dataset_store/validate.py) runs on the same decoded images.

Truth: two files are duplicates when they come from the same photo. Pairs are scored as the report
uses them: every pair of files in one reported group (so a chain of look-alikes counts against it).
True pairs: all pairs among a photo and its copies. False pairs: every other pair of the corpus,
distinct photos of the same class and of different classes. CIFAR-10 itself holds some near
duplicates (the same photo twice, shifted or re-coloured); those found were checked by eye and are
listed in SOURCE_DUPLICATES, counted as true pairs (precision without that list is printed too).

Same background, different object (bench/datasets/dedup_scenes.py): scenes of several different real photos
cut out and laid on one textured backdrop (planks, tiles, a bedspread); two composites of one scene are
a false pair, and some composites get the five copies too (true pairs). Their objects are photos the
corpus does not hold (``--set tune``: CIFAR-10 train photos past ``--per-class`` and hymenoptera val;
``--set test``: CIFAR-10 test photos past ``--per-class`` and hymenoptera train).

Three rules run on the same files: the old one, the thumbnail rule (what an upload without a feature
model uses) and the feature rule (thumbnail candidates confirmed by the cosine of the ImageNet model's
pooled features, computed as the API computes them: service/inference/object_features.py, onnxruntime).

Thresholds (``IngestLimits``) were chosen on ``--set tune`` (CIFAR-10 train, hymenoptera train, tune
scenes; ``--sweep`` prints the pair-level precision and recall of each cosine threshold there); the
documented numbers are ``--set test`` (CIFAR-10 test, hymenoptera val, ImageNet samples, test scenes),
photos the thresholds never saw.

Run: ``flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.datasets.dedup --write-docs``
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench.data import ROOT, shared_data
from bench.datasets.dedup_scenes import scenes
from bench.docs import write_section
from core.datasets.schemas import IngestLimits
from core.images import open_rgb
from core.settings import Settings
from dataset_store.dedup import (
    Duplicates,
    Fingerprint,
    ObjectFeatures,
    components,
    duplicate_groups,
    exact_groups,
    group_edges,
    near_pairs,
)
from dataset_store.validate import check_files, fingerprint
from models import Registry
from service.inference.object_features import FeatureModel

log = logging.getLogger("bench.datasets.dedup")
SECTION = "## Near-duplicate detection"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.datasets.dedup --write-docs"
COPY_KINDS = ("q50", "q95", "resize", "crop", "exif")
OLD_DISTANCE = 5
# Photos in CIFAR-10 that are the same picture (shifted, re-coloured or re-scanned), checked by eye
# among the pairs of distinct originals that either rule flagged (bench.datasets.dedup --sheet shows those) or
# that a wider net caught (dHash within 12 or pHash within 14 bits and thumbnails >= 0.92 alike).
# The ones neither rule finds count as misses.
SOURCE_DUPLICATES: list[tuple[str, str]] = [
    ("cifar10/train/automobile/0029.jpg", "cifar10/train/automobile/0277.jpg"),  # same car, shifted
    ("cifar10/train/bird/0072.jpg", "cifar10/train/bird/0122.jpg"),  # same drawing, another scan
    ("cifar10/train/deer/0066.jpg", "cifar10/train/deer/0231.jpg"),
    ("cifar10/train/frog/0037.jpg", "cifar10/train/frog/0288.jpg"),  # same toad
    ("cifar10/train/frog/0178.jpg", "cifar10/train/frog/0204.jpg"),
    ("cifar10/train/frog/0186.jpg", "cifar10/train/frog/0213.jpg"),
    ("cifar10/train/horse/0225.jpg", "cifar10/train/horse/0283.jpg"),
    ("cifar10/test/automobile/0231.jpg", "cifar10/test/automobile/0277.jpg"),  # same car, shifted
    ("cifar10/test/deer/0176.jpg", "cifar10/test/deer/0241.jpg"),  # shifted
    ("cifar10/test/frog/0091.jpg", "cifar10/test/frog/0226.jpg"),
]


@dataclass
class Photo:
    path: Path  # the file in the corpus
    source: str  # the photo it was made from (relative to the data root)
    label: str
    kind: str  # "orig" or one of COPY_KINDS
    scene: int | None = None  # composites: the backdrop they share with the others of their scene


def _encode(img: Image.Image, quality: int = 90, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def copies(data: bytes) -> dict[str, bytes]:
    """The five kinds of copy a dataset picks up: re-encodes, a resize, a small crop, an EXIF turn."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    tiny = min(w, h) <= 64
    resized = img.resize((w * 2, h * 2), Image.Resampling.BICUBIC) if tiny else img.resize(
        (w // 2, h // 2), Image.Resampling.LANCZOS)
    dx, dy = max(1, round(0.04 * w)), max(1, round(0.04 * h))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the stored pixels are turned the other way
    return {"q50": _encode(img, 50), "q95": _encode(img, 95), "resize": _encode(resized),
            "crop": _encode(img.crop((dx, dy, w - dx, h - dy))),
            "exif": _encode(img.transpose(Image.Transpose.ROTATE_90), exif=exif)}


def originals(which: str, per_class: int) -> list[tuple[Path, str]]:
    cifar = shared_data("cifar10") / ("train" if which == "tune" else "test")
    found = [(p, c.name) for c in sorted(cifar.iterdir()) if c.is_dir() for p in sorted(c.glob("*.jpg"))[:per_class]]
    hym = shared_data("hymenoptera") / ("train" if which == "tune" else "val")
    found += [(p, p.parent.name) for p in sorted(hym.glob("*/*.jpg"))]
    if which == "test":
        found += [(p, "imagenet") for p in sorted(shared_data("imagenet_samples").glob("*.JPEG"))]
    return found


def scene_objects(which: str, per_class: int, count: int) -> list[tuple[Path, str]]:
    """Photos to lay on backdrops: none of them is in the corpus of ``which`` (see the module doc)."""
    cifar = shared_data("cifar10") / ("train" if which == "tune" else "test")
    found = [(p, c.name) for c in sorted(cifar.iterdir()) if c.is_dir()
             for p in sorted(c.glob("*.jpg"))[per_class:per_class + count]]
    hym = shared_data("hymenoptera") / ("val" if which == "tune" else "train")
    return found + [(p, f"{p.parent.name}-{k % 5}") for k, p in enumerate(sorted(hym.glob("*/*.jpg")))]


def build_corpus(which: str, per_class: int, copied: tuple[int, int], dest: Path, seed: int = 0,
                 scene_count: int = 0, per_scene: int = 6) -> list[Photo]:
    """Originals as they are, plus copies of ``copied`` = (CIFAR photos, other photos) picked at random,
    plus ``scene_count`` scenes of ``per_scene`` composites (a third of them copied too)."""
    photos = _plain_corpus(which, per_class, copied, dest, seed)
    rng = random.Random(seed + 1)
    made = scenes(scene_objects(which, per_class, 40), scene_count, per_scene, dest, seed) if scene_count else []
    for k, (path, label, scene) in enumerate(made):
        source = f"scene/{path.name}"
        photos.append(Photo(path, source, label, "orig", scene))
        if rng.random() < 1 / 3:
            for kind, data in copies(path.read_bytes()).items():
                out = dest / f"scene{k:05d}_{kind}.jpg"
                out.write_bytes(data)
                photos.append(Photo(out, source, label, kind, scene))
    return photos


def _plain_corpus(which: str, per_class: int, copied: tuple[int, int], dest: Path, seed: int) -> list[Photo]:
    found = originals(which, per_class)
    tiny = [i for i, (p, _) in enumerate(found) if "cifar10" in p.parts]
    large = [i for i in range(len(found)) if i not in set(tiny)]
    rng = random.Random(seed)
    chosen = set(rng.sample(tiny, min(copied[0], len(tiny)))) | set(rng.sample(large, min(copied[1], len(large))))
    photos = []
    for i, (path, label) in enumerate(found):
        source = path.relative_to(ROOT).as_posix()
        photos.append(Photo(path, source, label, "orig"))
        if i in chosen:
            for kind, data in copies(path.read_bytes()).items():
                out = dest / f"{i:05d}_{kind}.jpg"
                out.write_bytes(data)
                photos.append(Photo(out, source, label, kind))
    return photos


def old_dhash(img: Image.Image) -> int:
    """The hash the old rule used (``validate.dhash`` before near duplicates were confirmed)."""
    small = img.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = np.asarray(small, dtype=np.int16)
    return int(np.packbits((px[:, 1:] > px[:, :-1]).flatten()).view(">u8")[0])


def _old_prints(paths: Sequence[Path]) -> list[int]:
    return [old_dhash(open_rgb(p, 10**9)) for p in paths]


def old_groups(digests: Sequence[str], hashes: Sequence[int]) -> list[list[int]]:
    """The old rule: exact copies, and any dHash within OLD_DISTANCE bits joins the group, unchecked."""
    edges = group_edges(exact_groups(digests))
    first: dict[int, int] = {}
    edges += [(first.setdefault(h, i), i) for i, h in enumerate(hashes)]
    values = list(first)
    edges += [(first[values[a]], first[values[b]]) for a, b in near_pairs(values, OLD_DISTANCE)]
    return [g for g in components(len(digests), edges) if len(g) > 1]


def pairs_in(groups: Sequence[Sequence[int]]) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for g in groups for a, b in itertools.combinations(g, 2)}


def score(photos: Sequence[Photo], found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, object]:
    tp, fp = found & truth, found - truth
    same_class = sum(photos[a].label == photos[b].label for a, b in fp)
    by_kind = {}
    for kind in COPY_KINDS:  # a copy found with its own original
        wanted = {p for p in truth if {photos[p[0]].kind, photos[p[1]].kind} == {"orig", kind}}
        by_kind[kind] = round(len(wanted & found) / max(len(wanted), 1), 3)
    backdrop = {p for p in _scene_false(photos)}
    return {"true_found": len(tp), "false_found": len(fp), "false_same_class": same_class,
            "false_same_background": len(fp & backdrop), "same_background_pairs": len(backdrop),
            "false_other_class": len(fp) - same_class, "precision": len(tp) / max(len(found), 1),
            "recall": len(tp) / max(len(truth), 1), "recall_by_copy": by_kind,
            "false_pairs": sorted((photos[a].source, photos[b].source) for a, b in fp)}


def _scene_false(photos: Sequence[Photo]) -> set[tuple[int, int]]:
    """Pairs of composites from one scene that are different photos: same background, another object."""
    by_scene: dict[int, list[int]] = {}
    for i, p in enumerate(photos):
        if p.scene is not None:
            by_scene.setdefault(p.scene, []).append(i)
    return {(a, b) for g in by_scene.values() for a, b in itertools.combinations(g, 2)
            if photos[a].source != photos[b].source}


def truth_pairs(photos: Sequence[Photo], listed: Sequence[tuple[str, str]]) -> set[tuple[int, int]]:
    """Pairs from one photo (its copies), with the listed source duplicates as one photo."""
    same = {s: s for p in photos for s in [p.source]}
    for a, b in listed:
        if a in same and b in same:
            same[b] = same[a]
    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(photos):
        by_source.setdefault(same[p.source], []).append(i)
    return pairs_in([g for g in by_source.values() if len(g) > 1])


def sheet(photos: Sequence[Photo], pairs: Sequence[tuple[int, int]], out: Path) -> None:
    """A contact sheet of flagged pairs of distinct originals, to check them by eye."""
    tiles = []
    for a, b in pairs[:60]:
        tile = Image.new("RGB", (200, 100), "white")
        for k, i in enumerate((a, b)):
            tile.paste(open_rgb(photos[i].path, 10**9).resize((96, 96)), (k * 100, 2))
        tiles.append(tile)
        log.info("sheet %d: %s  %s", len(tiles), photos[a].source, photos[b].source)
    board = Image.new("RGB", (800, 100 * max(1, (len(tiles) + 3) // 4)), "grey")
    for k, tile in enumerate(tiles):
        board.paste(tile, ((k % 4) * 200, (k // 4) * 100))
    board.save(out)


def timing(paths: Sequence[Path], n: int = 200, repeats: int = 3) -> dict[str, float]:
    """Milliseconds per decoded image for the old hash and the new fingerprint (what changed per file):
    best of ``repeats`` interleaved rounds, after a warm-up (imagehash imports scipy on first use)."""
    imgs = [open_rgb(p, 10**9) for p in paths[:n]]
    fns = {"old_dhash_ms": old_dhash, "fingerprint_ms": fingerprint}
    out = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn(imgs[0])
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for img in imgs:
                fn(img)
            out[name] = min(out[name], (time.perf_counter() - start) / len(imgs) * 1000)
    out["decode_ms"] = _decode_ms(paths[:n])
    return out


def grouping_seconds(n: int, limits: IngestLimits, seed: int = 0) -> float:
    """Seconds to group ``n`` unrelated fingerprints (random hashes and thumbnails): the candidate
    search grows with the square of the file count, this says how fast at a large dataset's size."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=(n, 2),
                                                                                                   dtype=np.uint64)
    thumbs = rng.integers(0, 256, size=(n, 192), dtype=np.uint8)
    prints = [Fingerprint(int(d), int(p), t.tobytes()) for (d, p), t in zip(hashes, thumbs, strict=True)]
    start = time.perf_counter()
    duplicate_groups([str(i) for i in range(n)], prints, limits.near_duplicate_distance,
                     limits.near_duplicate_similarity)
    return time.perf_counter() - start


def _decode_ms(paths: Sequence[Path]) -> float:
    """For scale: what decoding one of these photos costs (ingest decodes every file fully)."""
    start = time.perf_counter()
    for p in paths:
        open_rgb(p, 10**9)
    return (time.perf_counter() - start) / len(paths) * 1000


RULES = ("old", "thumbnail", "features")


def markdown(which: str, photos: Sequence[Photo], results: dict, meta: dict) -> str:  # type: ignore[type-arg]
    kinds = Counter(p.kind for p in photos)
    plain = [p for p in photos if p.scene is None]
    origs = sum(1 for p in plain if p.kind == "orig")
    composites = sum(1 for p in photos if p.scene is not None and p.kind == "orig")
    names = {"old": "old: dHash within 5 bits",
             "thumbnail": f"thumbnail: dHash or pHash within {meta['distance']} bits, thumbnail similarity >= "
                          f"{meta['similarity']} (an upload without a feature model)",
             "features": f"features: the thumbnail rule's pairs confirmed by pooled-feature cosine >= "
                         f"{meta['cosine']} ({meta['model']}, the API's rule)"}
    lines = [
        SECTION, "",
        f"Command: `{COMMAND}` (set `{which}`; thresholds were chosen on `--set tune`, CIFAR-10 train, "
        "hymenoptera train and other scenes, which this set does not share). One run.", "",
        f"Corpus: {origs} distinct photos ({meta['cifar']} CIFAR-10 {meta['cifar_split']} JPEGs at 32x32, "
        f"{origs - meta['cifar']} {meta['others']}) and {composites} same-background composites "
        f"({meta['scenes']} scenes of {meta['per_scene']} different real photos, {meta['scene_objects']}, "
        "each cut out with a soft oval and laid near the centre of one textured backdrop: wooden planks, "
        "tiles or a bedspread; bench/datasets/dedup_scenes.py), plus 5 copies each of "
        f"{kinds['q50']} of them (JPEG quality 50 and 95, resized, 4% crop on every side, EXIF-rotated): "
        f"{len(photos)} files, {meta['true_pairs']} true pairs, {meta['false_pairs']:,} false pairs "
        f"(distinct photos, same class or not), {meta['backdrop_pairs']} of them same background, different "
        "object. Scored as the report groups them: every pair of files in one group counts. CIFAR-10 photos "
        f"that are the same picture twice (checked by eye, listed in `bench/datasets/dedup.py`; {meta['listed_here']} "
        "of them in this set) count as true pairs.", "",
        "| rule | precision | recall | false pairs (same class / other class) | same-background false pairs "
        "| recall by copy (q50, q95, resize, crop, EXIF) | recall, composites' copies |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rule in RULES:
        r = results[rule]
        by = r["recall_by_copy"]
        lines.append(f"| {names[rule]} | {r['precision']:.4f} | {r['recall']:.4f} | {r['false_found']} "
                     f"({r['false_same_class']} / {r['false_other_class']}) | {r['false_same_background']} of "
                     f"{r['same_background_pairs']} | {', '.join(f'{by[k]:.3f}' for k in COPY_KINDS)} | "
                     f"{r['scene_recall']:.3f} |")
    lines += [
        "", f"Without the by-eye list (its pairs counted as false): precision {meta['unlisted']}.",
        f"Per image (one process, {meta['timed']} decoded hymenoptera photos, best of 3): old dHash "
        f"{meta['old_dhash_ms']:.2f} ms, fingerprint (imagehash dHash + pHash on the image box-reduced to "
        f">= 64 px a side, 8x8 thumbnail) {meta['fingerprint_ms']:.2f} ms, beside {meta['decode_ms']:.2f} ms to "
        f"decode the photo. Grouping all {len(photos)} files: thumbnail rule {meta['group_s']:.2f} s; feature "
        f"rule {meta['features_s']:.2f} s, of which features for the {meta['embedded']} files in a "
        "thumbnail-confirmed pair (only those are run through the model; 2-core CPU, onnxruntime). "
        f"{meta['scale_n']:,} unrelated fingerprints (random): {meta['scale_s']:.1f} s (grows with the square of "
        "the file count).",
        "Why `imagehash`: the maintained library for both hashes. The thumbnail check is what buys precision "
        "on unrelated photos, the pHash and the wider distance buy recall (crops), and the features are what "
        "tell two objects on one background apart.",
    ]
    return "\n".join(lines) + "\n"


def feature_model(home: Path | None, scratch: Path) -> ObjectFeatures:
    """The API's feature model: the active ``imagenet`` version of ``home``, else one bootstrapped now."""
    if home is None:
        from trainer.publish.bootstrap import bootstrap

        home = scratch / "home"
        bootstrap(Registry(home / "models"), Settings(home=home), check_images=shared_data("imagenet_samples"))
    settings = Settings(home=home)
    objects = FeatureModel(Registry(settings.models_dir), settings).current()
    if objects is None:
        raise SystemExit(f"{home} has no active imagenet version with a features output: run `tuneserve bootstrap`")
    return objects


def sweep(photos: Sequence[Photo], dups: Duplicates, truth: set[tuple[int, int]]) -> list[dict[str, float]]:
    """Pair-level precision and recall of the thumbnail-confirmed pairs at each cosine threshold: how the
    threshold was chosen (on ``--set tune``). ``dups`` ran with no cosine floor."""
    out = []
    links = [(i, j, sim) for i, j, sim in dups.links]
    true_links = sum(1 for i, j, _ in links if (i, j) in truth)
    for t in np.round(np.arange(0.50, 0.99, 0.02), 2):
        kept = [(i, j) for i, j, sim in links if sim >= t]
        tp = sum(1 for pair in kept if pair in truth)
        backdrop = sum(1 for i, j in kept if pair_of_scene(photos, i, j) and (i, j) not in truth)
        out.append({"cosine": float(t), "precision": tp / max(len(kept), 1), "recall": tp / max(true_links, 1),
                    "false": len(kept) - tp, "false_same_background": backdrop})
    false_sims = sorted(sim for i, j, sim in links if (i, j) not in truth)
    true_sims = sorted(sim for i, j, sim in links if (i, j) in truth)
    log.info("links: %d true (lowest cosines %s), %d false (highest %s)", len(true_sims),
             [round(x, 3) for x in true_sims[:8]], len(false_sims), [round(x, 3) for x in false_sims[-8:]])
    return out


def pair_of_scene(photos: Sequence[Photo], i: int, j: int) -> bool:
    return photos[i].scene is not None and photos[i].scene == photos[j].scene


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="which", choices=("tune", "test"), default="test")
    parser.add_argument("--per-class", type=int, default=300, help="CIFAR-10 photos per class")
    parser.add_argument("--copied", type=int, nargs=2, default=(150, 80), metavar=("CIFAR", "OTHER"),
                        help="photos that get copies")
    parser.add_argument("--scenes", type=int, default=30, help="same-background scenes")
    parser.add_argument("--per-scene", type=int, default=6, help="different objects on each scene's backdrop")
    parser.add_argument("--home", type=Path, help="a TUNESERVE_HOME with the imagenet model (default: bootstrap one)")
    parser.add_argument("--scale", type=int, default=50_000, help="random fingerprints to time grouping on")
    parser.add_argument("--sweep", action="store_true", help="print precision/recall per cosine threshold")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of flagged distinct originals here")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    limits = IngestLimits()
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        objects = feature_model(opts.home, Path(tmp))
        photos = build_corpus(opts.which, opts.per_class, tuple(opts.copied), Path(tmp), 0, opts.scenes,
                              opts.per_scene)
        paths = [p.path for p in photos]
        log.info("corpus: %d files", len(photos))
        checked = check_files(paths, 10**9, 1, os.cpu_count() or 1)
        assert all(c.problem is None for c in checked), [c.problem for c in checked if c.problem]
        digests = [c.sha256 for c in checked]
        prints = [c.fingerprint for c in checked]
        start = time.perf_counter()
        dups = duplicate_groups(digests, prints, limits.near_duplicate_distance, limits.near_duplicate_similarity)
        group_s = time.perf_counter() - start
        embedded = len({i for i, j, _ in dups.links} | {j for i, j, _ in dups.links})
        start = time.perf_counter()
        by_object = duplicate_groups(digests, prints, limits.near_duplicate_distance,
                                     limits.near_duplicate_similarity, objects, paths, limits.near_duplicate_cosine)
        features_s = time.perf_counter() - start
        truth, bare = truth_pairs(photos, SOURCE_DUPLICATES), truth_pairs(photos, [])
        found = {"old": pairs_in(old_groups(digests, _old_prints(paths))),
                 "thumbnail": pairs_in(dups.exact + dups.near), "features": pairs_in(by_object.exact + by_object.near)}
        results = {rule: score(photos, f, truth) for rule, f in found.items()}
        scene_truth = {p for p in truth if photos[p[0]].scene is not None}
        for rule, f in found.items():
            results[rule]["scene_recall"] = len(f & scene_truth) / max(len(scene_truth), 1)
        unlisted = ", ".join(f"{rule} {score(photos, f, bare)['precision']:.4f}" for rule, f in found.items())
        if opts.sweep:
            loose = duplicate_groups(digests, prints, limits.near_duplicate_distance, limits.near_duplicate_similarity,
                                     objects, paths, -1.0)
            for row in sweep(photos, loose, truth):
                print(json.dumps(row))
        if opts.sheet:
            flagged = sorted(p for p in set().union(*found.values()) - bare
                             if photos[p[0]].kind == photos[p[1]].kind == "orig")
            sheet(photos, flagged, opts.sheet)
        n = len(photos)
        meta = {"cifar": sum(1 for p in photos if p.kind == "orig" and p.scene is None and "cifar10" in p.source),
                "cifar_split": "train" if opts.which == "tune" else "test",
                "others": "hymenoptera train photos" if opts.which == "tune" else
                "hymenoptera val and ImageNet sample photos",
                "scene_objects": ("CIFAR-10 train photos and hymenoptera val photos" if opts.which == "tune" else
                                  "CIFAR-10 test photos and hymenoptera train photos") + " the corpus does not hold",
                "scenes": opts.scenes, "per_scene": opts.per_scene,
                "true_pairs": len(truth), "false_pairs": n * (n - 1) // 2 - len(truth),
                "backdrop_pairs": len(_scene_false(photos)),
                "listed_here": sum(1 for a, b in SOURCE_DUPLICATES if {a, b} <= {p.source for p in photos}),
                "distance": limits.near_duplicate_distance, "similarity": limits.near_duplicate_similarity,
                "cosine": limits.near_duplicate_cosine, "model": objects.model, "group_s": group_s,
                "features_s": features_s, "embedded": embedded, "unlisted": unlisted, "timed": min(200, n),
                **timing([p.path for p in photos if "hymenoptera" in p.source]),
                "scale_n": opts.scale, "scale_s": grouping_seconds(opts.scale, limits)}
    text = markdown(opts.which, photos, results, meta)
    print(json.dumps({"results": {r: {k: v for k, v in x.items() if k != "false_pairs"} for r, x in results.items()},
                      "false_pairs": results["features"]["false_pairs"], "meta": meta}, indent=1, default=str))
    print(text)
    if opts.write_docs:
        if opts.which != "test":
            raise SystemExit("--write-docs documents the test set only")
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
