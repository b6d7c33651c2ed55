"""Images per second of ``dist_data.embed_images`` per input format, against the bare forward pass
on already-decoded tensors (the floor) and a plain torchvision ImageFolder + DataLoader loop (what
the original scripts ran), with the same model, batch size and decode workers.

    python bench/embed_images.py --images=384 --workers=2            # CPU, the real EfficientNet-Lite0
    python bench/embed_images.py --images=20000 --batch_size=256 --workers=12 --model=vit_base_patch32_clip_224
        # on a GPU machine (random weights for a model that cannot be downloaded: speed only)

The images are the five real sample photos (scikit-image, scikit-learn) cut into seeded random crops
of 300-640 px, saved as JPEG (quality 90) into an ImageFolder tree, webdataset shards holding the
same bytes, and an FFCV file (JPEG mode). ``dist_data`` runs as the command users type (one
process); its images/s is the split's wall time in stats.json (model loading excluded, as for the
others). Prints a table and writes bench/results/embed_images.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time

from common import HERE, write_report


def make_images(root: str, n: int, seed: int = 0) -> dict[str, str]:
    """``n`` JPEG crops of the sample photos as a folder tree, 4 webdataset shards and an FFCV file."""
    import numpy as np
    from PIL import Image

    from dist_data.image.imagenet import write_ffcv
    from dist_data.image.samples import sample_photos

    folder, shards = os.path.join(root, "folder"), os.path.join(root, "shards")
    ffcv = os.path.join(root, "images.ffcv")
    if os.path.exists(ffcv):
        return {"folder": folder, "webdataset": shards, "ffcv": ffcv}
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    items = []
    for i in range(n):
        p = photos[i % len(photos)]
        im = Image.fromarray(p.pixels)
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = im.crop((x, y, x + cw, y + ch))
        scale = rng.uniform(300, 640) / max(im.size)
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        items.append((p.wnid, f"{i:06d}.jpg", buf.getvalue()))
    items.sort()
    wnids = sorted({w for w, _, _ in items})
    for wnid, name, data in items:
        os.makedirs(os.path.join(folder, wnid), exist_ok=True)
        with open(os.path.join(folder, wnid, name), "wb") as f:
            f.write(data)
    os.makedirs(shards, exist_ok=True)
    per_shard = -(-len(items) // 4)
    for s in range(4):
        with tarfile.open(os.path.join(shards, f"{s:05d}.tar"), "w") as tar:
            for j, (wnid, name, data) in enumerate(items[s * per_shard:(s + 1) * per_shard]):
                for ext, payload in (("jpg", data), ("cls", str(wnids.index(wnid)).encode())):
                    info = tarfile.TarInfo(f"{s:05d}{j:05d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    write_ffcv(folder, ffcv, max_resolution=640, write_mode="jpg", jpeg_quality=90, num_workers=2)
    return {"folder": folder, "webdataset": shards, "ffcv": ffcv}


def load(model_name: str, checkpoint: str | None):
    import torch

    from dist_data.image.backbones import load_backbone

    return load_backbone(model_name, checkpoint, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def floor(backbone, folder: str, batch_size: int) -> dict:
    """The forward pass alone, on the images decoded and transformed beforehand."""
    import torch
    from PIL import Image

    from dist_data.image.backbones import pil_transform
    from dist_data.image.sources import open_source

    source = open_source(folder)
    transform = pil_transform(backbone.config)
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in source.files])
    x = x.contiguous(memory_format=torch.channels_last)  # the layout the model runs fastest in
    device = next(backbone.model.parameters()).device
    autocast = (torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    with torch.inference_mode(), autocast:
        backbone.features(x[:batch_size].to(device))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            backbone.features(x[i:i + batch_size].to(device)).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images": len(x), "seconds": round(seconds, 3), "images_per_s": round(len(x) / seconds, 1)}


def dataloader_loop(model_name: str, checkpoint: str | None, folder: str, batch_size: int, workers: int) -> dict:
    """What the original scripts did: timm.create_model, torchvision's ImageFolder with timm's eval
    transform, a DataLoader, the pre-logits features, np.concatenate."""
    import numpy as np
    import torch

    from dist_data.core.compat import import_torchvision

    import_torchvision()
    import timm
    from timm.data import create_transform, resolve_data_config
    from torchvision.datasets import ImageFolder

    model = timm.create_model(model_name, pretrained=False)
    if checkpoint:
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.eval().to(device)
    dataset = ImageFolder(folder, transform=create_transform(**resolve_data_config({}, model=model)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).float().cpu().numpy())
    seconds = time.perf_counter() - start
    return {"images": int(sum(len(o) for o in out)), "seconds": round(seconds, 3),
            "images_per_s": round(sum(len(o) for o in out) / seconds, 1), "dim": int(np.concatenate(out).shape[1])}


def dist_data_run(kind: str, path: str, out: str, model: str, checkpoint: str | None, batch_size: int,
                  workers: int) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time (a finished run would be reused)
    flag = "--eval_data_ffcv" if kind == "ffcv" else "--eval_data"
    cmd = [sys.executable, "-m", "dist_data.embed_images", f"{flag}={path}", f"--output_dir={out}",
           f"--model_name={model}", f"--batch_size={batch_size}", f"--num_workers={workers}", "--noprogress",
           ] + ([f"--checkpoint={checkpoint}"] if checkpoint else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "stats.json")) as f:
        split = json.load(f)["splits"]["eval"]
    return {"images": split["embedded"], "seconds": split["seconds"]["wall"], "images_per_s": split["images_per_s"],
            "command_seconds": round(wall, 1), "stage_seconds": split["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--work_dir", default="/tmp/dist_data_bench_images")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    checkpoint = None
    if args.model == "tf_efficientnet_lite0":
        from dist_data.image.samples import efficientnet_lite0_checkpoint

        checkpoint = efficientnet_lite0_checkpoint(os.path.join(args.work_dir, "lite0.pth"))
    data = make_images(os.path.join(args.work_dir, f"data{args.images}"), args.images)
    backbone = load(args.model, checkpoint)
    rows = {"floor (bare forward, decoded tensors)": floor(backbone, data["folder"], args.batch_size),
            "ImageFolder + DataLoader loop": dataloader_loop(args.model, checkpoint, data["folder"], args.batch_size,
                                                             args.workers)}
    for kind in ("folder", "webdataset", "ffcv"):
        rows[f"dist_data {kind}"] = dist_data_run(kind, data[kind], os.path.join(args.work_dir, f"out-{kind}"),
                                                  args.model, checkpoint, args.batch_size, args.workers)
    floor_rate = rows["floor (bare forward, decoded tensors)"]["images_per_s"]
    print(f"\n{args.model}, {args.images} images, batch {args.batch_size}, {args.workers} decode workers, "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'':42} {'images/s':>10} {'x floor':>8} {'seconds':>8}")
    for name, r in rows.items():
        r["floor_ratio"] = round(floor_rate / r["images_per_s"], 3)
        print(f"{name:42} {r['images_per_s']:>10,.1f} {r['floor_ratio']:>8.2f} {r['seconds']:>8.1f}")
    path = write_report("embed_images", {"model": args.model, "images": args.images, "batch_size": args.batch_size,
                                         "workers": args.workers, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
