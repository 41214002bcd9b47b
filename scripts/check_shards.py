"""Opens a jepa-stream dataset with Python polars and pyarrow exactly as the shards are
on disk, and checks the documented columns, types, counts and pixel sizes.

Usage: python scripts/check_shards.py DATASET_DIR
"""

import gzip
import json
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

EXPECTED = {
    "id": pl.UInt64,
    "label": pl.Int16,
    "height": pl.UInt16,
    "width": pl.UInt16,
    "channels": pl.UInt8,
    "pixels": pl.Binary,
}


def fail(message: str) -> None:
    print(f"check_shards: {message}", file=sys.stderr)
    sys.exit(1)


def check_split(root: Path, name: str, split: dict, num_classes: int) -> pl.DataFrame:
    frames = []
    for entry in split["files"]:
        path = root / entry["path"]
        frame = pl.read_parquet(path)
        schema = dict(frame.schema)
        if schema != EXPECTED:
            fail(f"{path}: columns {schema}, expected {EXPECTED}")
        if frame.height != entry["rows"]:
            fail(f"{path}: {frame.height} rows, manifest lists {entry['rows']}")
        row_groups = pq.ParquetFile(path).metadata.num_row_groups
        if row_groups != entry["row_groups"]:
            fail(f"{path}: {row_groups} row groups, manifest lists {entry['row_groups']}")
        frames.append(frame)
    frame = pl.concat(frames)
    bad_size = frame.filter(
        pl.col("pixels").bin.size()
        != pl.col("height").cast(pl.Int64) * pl.col("width").cast(pl.Int64) * pl.col("channels").cast(pl.Int64)
    )
    if bad_size.height:
        fail(f"split {name}: {bad_size.height} rows whose pixels disagree with height×width×channels")
    if frame.height != split["count"]:
        fail(f"split {name}: {frame.height} rows, manifest count {split['count']}")
    if frame["id"].n_unique() != frame.height:
        fail(f"split {name}: duplicate ids")
    labels = frame["label"].drop_nulls()
    if labels.len() and (labels.min() < 0 or labels.max() >= num_classes):
        fail(f"split {name}: labels outside 0..{num_classes - 1}")
    return frame


def check_fashion_pixels(root: Path, manifest: dict) -> None:
    """Fashion-MNIST shards hold the IDX bytes untouched: compare a few images."""
    source = Path(manifest["source"]["location"])
    for name, stem in [("train", "train"), ("test", "t10k")]:
        images = gzip.open(source / f"{stem}-images-idx3-ubyte.gz").read()
        frame = pl.read_parquet([root / entry["path"] for entry in manifest["splits"][name]["files"]])
        for image_id in [0, 1, frame.height - 1]:
            row = frame.filter(pl.col("id") == image_id)
            expected = images[16 + image_id * 784 : 16 + (image_id + 1) * 784]
            if row["pixels"][0] != expected:
                fail(f"{name} image {image_id}: pixels differ from the IDX bytes")
    print("fashion-mnist: pixels read through polars equal the IDX bytes")


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: check_shards.py DATASET_DIR")
    root = Path(sys.argv[1])
    manifest = json.loads((root / "manifest.json").read_text())
    num_classes = len(manifest["class_names"])
    for name, split in sorted(manifest["splits"].items()):
        frame = check_split(root, name, split, num_classes)
        histogram = frame.group_by("label").len().sort("label")
        print(
            f"{root.name}/{name}: {frame.height} rows, {len(split['files'])} file(s), "
            f"{histogram.height} label values, columns {list(frame.schema)} open in polars and pyarrow"
        )
    if manifest["source"]["kind"] == "fashion-mnist":
        check_fashion_pixels(root, manifest)
    # The same shards through pyarrow's own schema view.
    first = next(iter(manifest["splits"].values()))["files"][0]["path"]
    print(pq.read_schema(root / first).to_string(show_schema_metadata=False))


if __name__ == "__main__":
    main()
