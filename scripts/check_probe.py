"""Opens a probed run's Parquet outputs with Python polars exactly as they are on disk:
the features (id, label, feature as a fixed-size float32 array), the predictions and the
report tables; checks their types and that the scores agree with the predictions; then
runs the per-class query docs/evaluation.md shows.

Usage: python scripts/check_probe.py RUN_DIR
"""

import sys
from pathlib import Path

import polars as pl


def fail(message: str) -> None:
    print(f"check_probe: {message}", file=sys.stderr)
    sys.exit(1)


def read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        fail(f"{path}: missing (make test-rust writes it, through the probe's end-to-end test)")
    return pl.read_parquet(path)


def check_features(run: Path) -> None:
    for folder in ["features", "features-context", "features-random", "features-pixels"]:
        dims = set()
        for split in ["train", "test"]:
            path = run / folder / f"{split}.parquet"
            frame = read(path)
            schema = frame.schema
            if schema["id"] != pl.UInt64 or schema["label"] != pl.Int32:
                fail(f"{path}: id/label are {schema['id']}/{schema['label']}, expected UInt64/Int32")
            feature = schema["feature"]
            if not isinstance(feature, pl.Array) or feature.inner != pl.Float32:
                fail(f"{path}: feature is {feature}, expected Array(Float32, dim)")
            if frame["id"].n_unique() != frame.height:
                fail(f"{path}: repeated ids")
            if not frame.select(pl.col("feature").arr.eval(pl.element().is_finite()).arr.all().all()).item():
                fail(f"{path}: non-finite features")
            dims.add(feature.size)
            print(f"{path}: {frame.height} rows, feature Array(Float32, {feature.size})")
        if len(dims) != 1:
            fail(f"{run / folder}: train and test features differ in size: {dims}")


def check_report(run: Path) -> None:
    probe = run / "probe"
    predictions = read(probe / "predictions.parquet")
    summary = read(probe / "summary.parquet")
    for name in ["encoder", "probe", "protocol", "accuracy", "macro_f1"]:
        if name not in summary.columns:
            fail(f"summary.parquet lacks {name}")
    # Recompute accuracy from the predictions and compare with the summary.
    recomputed = (
        predictions.group_by("encoder", "probe", "protocol", "fold")
        .agg((pl.col("label") == pl.col("predicted")).mean().alias("accuracy"))
        .group_by("encoder", "probe", "protocol")
        .agg(pl.col("accuracy").mean().alias("recomputed"))
    )
    joined = summary.join(recomputed, on=["encoder", "probe", "protocol"])
    if joined.height != summary.height:
        fail("summary rows without predictions")
    off = joined.filter((pl.col("accuracy") - pl.col("recomputed")).abs() > 1e-9)
    if off.height:
        fail(f"summary accuracy disagrees with predictions:\n{off}")
    if not summary["accuracy"].is_between(0, 1).all() or not summary["macro_f1"].is_between(0, 1).all():
        fail(f"scores outside 0..1:\n{summary}")
    for name in ["per_task", "per_class", "confusion"]:
        frame = read(probe / f"{name}.parquet")
        print(f"{probe / name}.parquet: {frame.height} rows, columns {frame.columns}")
    confusion = read(probe / "confusion.parquet")
    if confusion["count"].sum() != predictions.height:
        fail("confusion counts do not add up to the predictions")
    print(summary)


def check_figures(run: Path) -> None:
    probe = run / "probe"
    tsne = read(probe / "tsne.parquet")
    expected = {"encoder": pl.String, "id": pl.UInt64, "label": pl.Int32, "class_name": pl.String, "x": pl.Float32, "y": pl.Float32}
    if dict(tsne.schema) != expected:
        fail(f"tsne.parquet has schema {dict(tsne.schema)}, expected {expected}")
    test = read(run / "features" / "test.parquet")
    per_encoder = tsne.group_by("encoder").agg(pl.len().alias("points"), pl.col("id").n_unique().alias("ids"))
    if set(per_encoder["encoder"]) != {"pretrained", "random"} or not (per_encoder["points"] == test.height).all():
        fail(f"tsne.parquet does not hold one point per test image and encoder:\n{per_encoder}")
    if not per_encoder["ids"].eq(per_encoder["points"]).all():
        fail("tsne.parquet repeats an image")
    retrieval = read(probe / "retrieval.parquet")
    if retrieval["predictor"].to_list() != ["trained", "random"]:
        fail(f"retrieval.parquet predictors are {retrieval['predictor'].to_list()}")
    if not (retrieval["top1"] <= retrieval["top5"]).all() or not retrieval["top5"].is_between(0, 1).all():
        fail(f"retrieval scores out of order or range:\n{retrieval}")
    if not (retrieval["mean_rank"] >= 0).all() or not (retrieval["mean_rank"] < retrieval["candidates"]).all():
        fail(f"retrieval mean ranks out of range:\n{retrieval}")
    print(retrieval)


def readme_query(run: Path) -> None:
    # docs/evaluation.md's example, verbatim apart from the run folder.
    per_class = (
        pl.scan_parquet(run / "probe" / "predictions.parquet")
        .filter(pl.col("probe") == "linear")
        .group_by("encoder", "label")
        .agg((pl.col("predicted") == pl.col("label")).mean().alias("accuracy"))
        .sort("label", "encoder")
        .collect()
    )
    if per_class.height == 0:
        fail("the per-class query of docs/evaluation.md found no linear-probe predictions")
    print(per_class)


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: check_probe.py RUN_DIR")
    run = Path(sys.argv[1])
    check_features(run)
    check_report(run)
    check_figures(run)
    readme_query(run)
    print(f"check_probe: {run} opens in polars {pl.__version__} as written")


if __name__ == "__main__":
    main()
