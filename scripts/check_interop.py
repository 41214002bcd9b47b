"""A trained run's encoder in PyTorch, both ways, checked against the probe's own features.

1. `probe export` writes the run's encoder as safetensors; timm's VisionTransformer (no class
   token, average pooling, no fc_norm, no head) loads it with strict=True, and its pooled
   output on the run's test images, normalised as the file's metadata says, must equal the
   features the probe wrote for those images (features/test.parquet) to within 1e-4.
2. The same weights saved by PyTorch as an official I-JEPA training checkpoint (a dict with
   `encoder`, `predictor`, `target_encoder` under DDP's `module.` prefix, `opt`, `epoch`, ...)
   are imported by `probe features --encoder-file`, and the features it writes must equal
   timm's output for the target encoder to within 1e-4.

Usage: python scripts/check_interop.py --probe PROBE_BINARY --run RUN_DIR --work DIR
Needs torch, timm, safetensors and pyarrow.
"""

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

TOLERANCE = 1e-4


def fail(message: str) -> None:
    print(f"check_interop: {message}", file=sys.stderr)
    sys.exit(1)


def probe(binary: str, *arguments: str) -> None:
    command = [binary, *arguments, "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def timm_model(path: Path) -> tuple[VisionTransformer, dict]:
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    model = VisionTransformer(
        img_size=int(meta["img_size"]),
        patch_size=int(meta["patch_size"]),
        in_chans=int(meta["in_chans"]),
        embed_dim=int(meta["embed_dim"]),
        depth=int(meta["depth"]),
        num_heads=int(meta["num_heads"]),
        mlp_ratio=float(meta["mlp_ratio"]),
        class_token=False,
        global_pool="avg",
        fc_norm=False,
        num_classes=0,
    )
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval(), meta


def read_features(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    table = pq.read_table(path)
    ids = table.column("id").to_numpy()
    features = np.stack(table.column("feature").to_numpy(zero_copy_only=False)).astype(np.float32)
    footer = pq.read_metadata(path).metadata or {}
    metadata = {key.decode(): value.decode() for key, value in footer.items() if key != b"ARROW:schema"}
    return ids, features, metadata


def test_images(dataset: Path, ids: np.ndarray, size: int, channels: int) -> np.ndarray:
    """The test split's pixels in the order of `ids`, `[n, channels, size, size]` uint8."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    by_id = {}
    for entry in manifest["splits"]["test"]["files"]:
        table = pq.read_table(dataset / entry["path"], columns=["id", "height", "width", "channels", "pixels"])
        for row in table.to_pylist():
            if (row["height"], row["width"], row["channels"]) != (size, size, channels):
                fail(
                    f"{dataset}: test image {row['id']} is {row['height']}×{row['width']}×{row['channels']}; this "
                    f"check needs images already at the encoder's {size}×{size}×{channels} (no resize)"
                )
            by_id[row["id"]] = row["pixels"]
    pixels = np.stack([np.frombuffer(by_id[int(i)], dtype=np.uint8) for i in ids])
    # Shards hold pixels row-major with channels last; the encoder takes channels first.
    return pixels.reshape(len(ids), size, size, channels).transpose(0, 3, 1, 2)


def pooled(model: VisionTransformer, pixels: np.ndarray, mean: list, std: list) -> np.ndarray:
    mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1) * 255.0
    outputs = []
    with torch.no_grad():
        for start in range(0, len(pixels), 256):
            batch = torch.from_numpy(pixels[start : start + 256].astype(np.float32))
            outputs.append(model((batch - mean_t) / std_t).numpy())
    return np.concatenate(outputs)


def compare(name: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    if ours.shape != theirs.shape:
        fail(f"{name}: shapes {ours.shape} and {theirs.shape}")
    difference = float(np.abs(ours - theirs).max())
    print(f"{name}: {len(ours)} images × {ours.shape[1]} features, largest difference {difference:.2e}")
    if not difference <= TOLERANCE:
        fail(f"{name}: largest difference {difference:.2e} is above {TOLERANCE:.0e}")
    return difference


def official_checkpoint(model: VisionTransformer, path: Path) -> None:
    """The weights as the official I-JEPA training loop saves them: the target encoder is
    `model`; the context encoder differs (so reading the wrong entry is caught); the optimizer
    state holds tensors under integer keys."""
    target = {f"module.{key}": value.clone() for key, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    context = {key: value + 0.1 * torch.randn(value.shape, generator=generator) for key, value in target.items()}
    predictor = torch.nn.Sequential(torch.nn.Linear(model.embed_dim, 8), torch.nn.LayerNorm(8))
    optimizer = torch.optim.AdamW(predictor.parameters())
    predictor(torch.zeros(2, model.embed_dim)).sum().backward()
    optimizer.step()
    torch.save(
        {
            "encoder": context,
            "predictor": {f"module.{key}": value for key, value in predictor.state_dict().items()},
            "target_encoder": target,
            "opt": optimizer.state_dict(),
            "scaler": None,
            "epoch": 3,
            "loss": 0.25,
            "batch_size": 64,
            "world_size": 1,
            "lr": 1e-3,
        },
        path,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", required=True, help="the probe binary")
    parser.add_argument("--run", required=True, type=Path, help="a trained run with features/test.parquet")
    parser.add_argument("--work", required=True, type=Path, help="a folder for the files written")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    exported = args.work / "encoder.safetensors"
    probe(args.probe, "export", "--run", str(args.run), "--out", str(exported))
    model, meta = timm_model(exported)
    print(f"{exported}: loaded strictly into timm VisionTransformer (depth {meta['depth']}, dim {meta['embed_dim']})")

    ids, ours, feature_meta = read_features(args.run / "features" / "test.parquet")
    if feature_meta.get("checkpoint") != meta.get("checkpoint") or feature_meta.get("layers", "1") != "1":
        fail(
            f"features/test.parquet is of {feature_meta.get('checkpoint')} (layers {feature_meta.get('layers')}), "
            f"the export of {meta.get('checkpoint')}: run `probe features --run {args.run}` first"
        )
    config = tomllib.loads((args.run / "config.toml").read_text())
    size, channels = int(meta["img_size"]), int(meta["in_chans"])
    pixels = test_images(Path(config["dataset"]), ids, size, channels)
    mean, std = json.loads(meta["pixel_mean"]), json.loads(meta["pixel_std"])
    theirs = pooled(model, pixels, mean, std)
    compare("timm on the exported encoder vs the probe's features", ours, theirs)

    checkpoint = args.work / "ijepa-official.pth.tar"
    official_checkpoint(model, checkpoint)
    imported = args.work / "imported-official"
    probe(
        args.probe,
        "features",
        "--run",
        str(imported),
        "--encoder-file",
        str(checkpoint),
        "--dataset",
        config["dataset"],
        "--heads",
        meta["num_heads"],
        "--pixel-mean",
        ",".join(str(value) for value in mean),
        "--pixel-std",
        ",".join(str(value) for value in std),
    )
    imported_ids, imported_features, _ = read_features(imported / "features" / "test.parquet")
    if not np.array_equal(imported_ids, ids):
        fail(f"{imported}: test features are not in the run's order")
    compare("the probe on the official-layout checkpoint vs timm", imported_features, theirs)
    print("check_interop: ok")


if __name__ == "__main__":
    main()
