"""Opens a method comparison's summary with Python polars as it is on disk: one row per
(method, encoder, protocol): methods ijepa | ijepa-pixels | mae | random under linear | knn | finetune,
I-JEPA's context encoder and the raw pixels under linear | knn; accuracies that are fractions, and
each row re-derived from the run's own predictions.

Usage: python scripts/check_compare.py COMPARE_DIR
"""

import sys
from pathlib import Path

import polars as pl


def fail(message: str) -> None:
    print(f"check_compare: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    out = Path(sys.argv[1])
    path = out / "summary.parquet"
    if not path.is_file():
        fail(f"{path}: missing (make test-rust writes it, through the probe's compare test)")
    summary = pl.read_parquet(path)
    expected = {
        "method": pl.String,
        "encoder": pl.String,
        "protocol": pl.String,
        "accuracy": pl.Float64,
        "macro_f1": pl.Float64,
        "steps": pl.Int64,
        "train_seconds": pl.Float64,
    }
    for name, dtype in expected.items():
        if summary.schema.get(name) != dtype:
            fail(f"{path}: `{name}` is {summary.schema.get(name)}, expected {dtype}")
    pairs = set(summary.select("method", "encoder", "protocol").iter_rows())
    owners = [("ijepa", "pretrained"), ("ijepa-pixels", "pretrained"), ("mae", "pretrained"), ("random", "random")]
    wanted = {(m, e, p) for m, e in owners for p in ["linear", "knn", "finetune"]}
    wanted |= {(m, e, p) for m, e in [("ijepa", "context"), ("pixels", "pixels")] for p in ["linear", "knn"]}
    if pairs != wanted or summary.height != len(wanted):
        fail(f"{path}: rows {sorted(pairs)}, expected one per (method, encoder, protocol) of {sorted(wanted)}")
    if not summary.select(pl.col("accuracy").is_between(0, 1).all()).item():
        fail(f"{path}: accuracies outside [0, 1]")
    # Every number comes from a predictions file of the run it names.
    for row in summary.iter_rows(named=True):
        encoder = row["encoder"]
        predictions = Path(row["run"]) / "probe" / "predictions" / f"{encoder}-{row['protocol']}.parquet"
        accuracy = (
            pl.read_parquet(predictions)
            .filter(pl.col("protocol") == row["task"])
            .select((pl.col("predicted") == pl.col("label")).mean())
            .item()
        )
        if abs(accuracy - row["accuracy"]) > 1e-9:
            fail(f"{path}: {row['method']} ({encoder}) {row['protocol']} says {row['accuracy']}, {predictions} gives {accuracy}")
    print(f"check_compare: {path}: {summary.height} rows, each re-derived from its predictions")


if __name__ == "__main__":
    main()
