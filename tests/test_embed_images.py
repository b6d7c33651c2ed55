"""embed_images on real photos (skimage / scikit-learn samples) in all three input formats.

Quality: the real ImageNet EfficientNet-Lite0 (shipped by a PyPI package); its classifier head on
the stored vectors must give each photo's known ImageNet class. The rest uses a seeded tiny timm
model. References are computed here independently (PIL + timm's own transform + the model).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pathlib
import tarfile

import numpy as np
import pytest
import torch

from conftest import bucket_files, run_cli

from PIL import Image  # noqa: E402

from dist_data.core.compat import import_torchvision  # noqa: E402
from dist_data.image.samples import efficientnet_lite0_checkpoint, sample_photos  # noqa: E402

import_torchvision()  # before timm (see dist_data.core.compat)
pytest.importorskip("timm")

TINY = "test_efficientnet"


def _variants(im: Image.Image):
    w, h = im.size
    yield "orig", im
    yield "flip", im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    yield "crop", im.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    yield "small", im.resize((w * 2 // 3, h * 2 // 3), Image.Resampling.BICUBIC)


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """20 real photos (5 ImageNet classes x 4 views) as an ImageFolder tree and as webdataset
    shards holding the same JPEG bytes; the Lite0 checkpoint; a seeded tiny model."""
    root = tmp_path_factory.mktemp("images")
    photos = sample_photos()
    wnids = sorted(p.wnid for p in photos)
    samples = []  # (wnid, file name, jpeg bytes, accepted ImageNet classes)
    for p in photos:
        for view, im in _variants(Image.fromarray(p.pixels)):
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=95)
            samples.append((p.wnid, f"{p.name}_{view}.jpg", buf.getvalue(), p.classes))
    samples.sort(key=lambda s: (s[0], s[1]))  # ImageFolder's order
    for wnid, name, data, _ in samples:
        os.makedirs(root / "folder" / wnid, exist_ok=True)
        (root / "folder" / wnid / name).write_bytes(data)
    os.makedirs(root / "shards")
    for shard, chunk in enumerate((samples[:11], samples[11:])):  # img2dataset's layout, 2 shards
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as tar:
            for j, (wnid, name, data, _) in enumerate(chunk):
                key = f"{shard:05d}{j:04d}"
                meta = json.dumps({"key": key, "caption": name, "label": wnids.index(wnid), "status": "success"})
                for ext, payload in (("jpg", data), ("txt", name.encode()), ("json", meta.encode()),
                                     ("cls", str(wnids.index(wnid)).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    lite0 = efficientnet_lite0_checkpoint(str(root / "lite0.pth"))
    import_torchvision()
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model(TINY).state_dict(), root / "tiny.pth")
    return {"root": root, "folder": str(root / "folder"), "shards": str(root / "shards"), "lite0": lite0,
            "tiny": str(root / "tiny.pth"), "samples": samples, "wnids": wnids}


def embed(out, *flags, nproc=0, check=True, env=None):
    return run_cli("dist_data.embed_images", f"--output_dir={out}", "--noprogress", "--num_workers=2", *flags,
                   nproc=nproc, check=check, env=env)


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def reference(model_name, checkpoint, paths):
    """Vectors computed here, one image at a time: PIL, timm's eval transform, pre-logits features."""
    import_torchvision()
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(model_name, pretrained=False)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    out = []
    with torch.no_grad():
        for path in paths:
            x = transform(Image.open(path).convert("RGB"))[None]
            out.append(model.forward_head(model.forward_features(x), pre_logits=True)[0].numpy())
    return np.stack(out), model


def folder_paths(images):
    return [os.path.join(images["folder"], w, n) for w, n, _, _ in images["samples"]]


def test_lite0_features_classify_real_photos_and_match_a_reference(images, tmp_path):
    embed(tmp_path / "run", f"--train_data={images['folder']}", "--model_name=tf_efficientnet_lite0",
          f"--checkpoint={images['lite0']}", "--batch_size=8")
    out = load(tmp_path / "run" / "train.npz")
    assert out["data"].shape == (20, 1280) and out["data"].dtype == np.float32
    assert out["label"].tolist() == [images["wnids"].index(w) for w, _, _, _ in images["samples"]]
    assert out["index"].tolist() == list(range(20))
    ref, model = reference("tf_efficientnet_lite0", images["lite0"], folder_paths(images))
    np.testing.assert_allclose(out["data"], ref, rtol=1e-4, atol=1e-4)  # row by row, in dataset order
    top1 = model.get_classifier()(torch.from_numpy(out["data"])).argmax(-1).tolist()
    for (wnid, name, _, classes), predicted in zip(images["samples"], top1):
        assert predicted in classes, (name, predicted, classes)
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    split = stats["splits"]["train"]
    assert split["embedded"] == 20 and split["rejected"] == {} and split["images_per_s"] > 0
    assert stats["transform"]["mean"] == [0.5, 0.5, 0.5] and stats["transform"]["crop_pct"] == 0.875
    assert json.loads((tmp_path / "run" / "classes.json").read_text())["train"] == images["wnids"]
    assert (tmp_path / "run" / "_SUCCESS").exists() and not list((tmp_path / "run" / "parts").glob("*.npz"))


def test_webdataset_shards_give_the_folder_vectors_and_labels(images, tmp_path):
    common = [f"--model_name={TINY}", f"--checkpoint={images['tiny']}", "--batch_size=4", "--output_dtype=float16"]
    embed(tmp_path / "folder", f"--eval_data={images['folder']}", *common)
    embed(tmp_path / "wds", f"--eval_data={images['shards']}/{{00000..00001}}.tar", *common)
    embed(tmp_path / "wds_json", f"--eval_data={images['shards']}", "--label_key=label", *common)
    folder, wds, wds_json = (load(tmp_path / d / "eval.npz") for d in ("folder", "wds", "wds_json"))
    assert folder["data"].dtype == np.float16 and folder["data"].shape == (20, 256)
    for other in (wds, wds_json):  # the same JPEG bytes, the same batches: the same vectors
        np.testing.assert_array_equal(other["data"], folder["data"])
        np.testing.assert_array_equal(other["label"], folder["label"])


def test_ffcv_agrees_with_the_folder_within_jpeg_reencoding(images, tmp_path):
    pytest.importorskip("ffcv")
    run_cli("dist_data.imagenet", "write_ffcv", "--split=val", f"--data_dir={images['folder']}",
            f"--write_dir={tmp_path}", "--max_resolution=1024", "--write_mode=jpg", "--jpeg_quality=90",
            "--num_workers=2", nproc=0)
    ffcv_file = tmp_path / "val_1024_0.5_90.ffcv"
    assert ffcv_file.exists()
    common = ["--model_name=tf_efficientnet_lite0", f"--checkpoint={images['lite0']}", "--batch_size=8"]
    embed(tmp_path / "ffcv", f"--eval_data_ffcv={ffcv_file}", *common)
    got = load(tmp_path / "ffcv" / "eval.npz")
    # what re-encoding alone moves: the folder's photos saved again at JPEG quality 90
    reencoded = []
    for path in folder_paths(images):
        buf = io.BytesIO()
        Image.open(path).convert("RGB").save(buf, format="JPEG", quality=90)
        buf.seek(0)
        reencoded.append(buf)
    folder, model = reference("tf_efficientnet_lite0", images["lite0"], folder_paths(images))
    again, _ = reference("tf_efficientnet_lite0", images["lite0"], reencoded)

    def cos(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert got["label"].tolist() == [images["wnids"].index(w) for w, _, _, _ in images["samples"]]
    jpeg_only = cos(folder, again)
    ffcv = cos(folder, got["data"])
    # FFCV also resizes with OpenCV's area filter instead of PIL's bicubic: allow twice the JPEG change
    assert (1 - ffcv).mean() <= 2 * (1 - jpeg_only).mean() + 0.01, (ffcv, jpeg_only)
    assert ffcv.min() > 0.95
    head = model.get_classifier()
    top1 = head(torch.from_numpy(got["data"])).argmax(-1).tolist()
    confident = head(torch.from_numpy(folder)).softmax(-1).max(-1).values.detach().numpy() >= 0.5
    right = np.array([p in s[3] for p, s in zip(top1, images["samples"])])
    # every photo the model is sure of keeps its class; close calls (the rocket's crop: missile at
    # p=0.27 from the original JPEG) may flip under the other resize filter
    assert right[confident].all()
    assert right.mean() >= 0.9, [(s[1], p) for p, s in zip(top1, images["samples"]) if p not in s[3]]


def test_unreadable_images_stop_the_run_or_go_to_the_rejects(images, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(images["folder"], tree)
    first = sorted((tree / images["wnids"][1]).iterdir())[0]
    first.write_bytes(first.read_bytes()[:200])  # a truncated JPEG
    (tree / images["wnids"][3] / "notes.jpg").write_text("not an image")
    common = [f"--train_data={tree}", f"--model_name={TINY}", f"--checkpoint={images['tiny']}", "--batch_size=4"]
    failed = embed(tmp_path / "strict", *common, check=False)
    assert failed.returncode == 2
    assert str(first) in failed.stderr and "--on_bad_rows=skip" in failed.stderr
    embed(tmp_path / "skip", *common, "--on_bad_rows=skip")
    out = load(tmp_path / "skip" / "train.npz")
    rejects = [json.loads(line) for line in (tmp_path / "skip" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in rejects) == sorted([str(first), str(tree / images["wnids"][3] / "notes.jpg")])
    assert all(r["reason"].startswith("cannot read the image") for r in rejects)
    assert len(out["data"]) == 19 and set(range(21)) - set(out["index"].tolist()) == {r["index"] for r in rejects}
    stats = json.loads((tmp_path / "skip" / "stats.json").read_text())
    assert stats["splits"]["train"]["rejected"] == {"cannot read the image": 2} and stats["rejected"] == 2


def test_resume_by_block_stack_and_a_missing_block(images, tmp_path):
    common = [f"--train_data={images['folder']}", f"--model_name={TINY}", f"--checkpoint={images['tiny']}",
              "--batch_size=1"]  # blocks of 8 images: 3 blocks
    embed(tmp_path / "whole", *common)
    run = tmp_path / "run"
    embed(run, *common, "--nostack", "--keep_parts")
    parts = sorted((run / "parts").glob("train-*.npz"))
    assert len(parts) == 3 and not (run / "train.npz").exists() and not (run / "_SUCCESS").exists()
    before = parts[0].stat().st_mtime_ns
    parts[1].unlink()  # a run killed before its second block was written
    again = embed(run, *common, "--keep_parts")
    assert "1 block(s) from an earlier run" not in again.stderr and "2 block(s) from an earlier run" in again.stderr
    assert parts[0].stat().st_mtime_ns == before
    assert (run / "train.npz").read_bytes() == (tmp_path / "whole" / "train.npz").read_bytes()
    # stack alone, from the kept blocks; then with a block gone
    stacked = tmp_path / "stacked"
    os.makedirs(stacked / "parts")
    for p in (run / "parts").glob("train*"):
        (stacked / "parts" / p.name).write_bytes(p.read_bytes())
    run_cli("dist_data.embed_images", "stack", f"--dir={stacked}", nproc=0)
    assert (stacked / "train.npz").read_bytes() == (tmp_path / "whole" / "train.npz").read_bytes()
    (stacked / "parts" / "train-0000001.npz").unlink()
    gap = run_cli("dist_data.embed_images", "stack", f"--dir={stacked}", nproc=0, check=False)
    assert gap.returncode == 2 and "misses block(s) 1 of 3" in gap.stderr


def test_two_ranks_give_the_bytes_of_one_process_augment_included(images, tmp_path, s3_server):
    """Two ranks written to a bucket, each rank staging apart (as on two hosts): rank 1's blocks reach
    rank 0 through the store, and the stacked arrays have the bytes of one process's."""
    common = [f"--train_data={images['folder']}", f"--eval_data={images['shards']}", f"--model_name={TINY}",
              f"--checkpoint={images['tiny']}", "--batch_size=2", "--train_transform=augment", "--seed=7"]
    # one CPU thread per process, as torchrun gives each of several ranks: a convolution's float sums
    # depend on its thread count (1e-8 apart), never on which rank or batch neighbours an image has
    embed(tmp_path / "one", *common, env={"OMP_NUM_THREADS": "1"})
    s3_server.create_bucket(Bucket="images")
    embed("s3://images/two", *common, nproc=2)
    stored = bucket_files(s3_server, "images", "two")
    for split in ("train", "eval"):
        assert (tmp_path / "one" / f"{split}.npz").read_bytes() == stored[f"{split}.npz"]
    assert not any(k.startswith("parts/train-") for k in stored)  # blocks stacked leave the store too
    stats = json.loads(stored["stats.json"])
    assert stats["world_size"] == 2 and [r["images"] for r in stats["splits"]["train"]["ranks"]] == [16, 4]
    augmented, plain = load(tmp_path / "one" / "train.npz"), load(tmp_path / "one" / "eval.npz")
    assert not np.allclose(augmented["data"], plain["data"], atol=1e-3)  # train was augmented, eval was not


def test_module_function_and_open_clip_backbones():
    from dist_data.image.backbones import load_backbone

    module = load_backbone("image_models:tiny_cnn", None, torch.device("cpu"))
    assert module.kind == "module" and module.config.size == 224  # timm's defaults for a plain module
    assert module.features(torch.zeros(2, 3, 224, 224)).shape == (2, 8)
    pytest.importorskip("open_clip")
    clip = load_backbone("open_clip:RN50", None, torch.device("cpu"))  # random weights: wiring only
    assert clip.kind == "open_clip" and clip.config.crop_pct == 1.0 and clip.config.size == 224
    assert clip.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024)


def test_flags_and_unknown_models_fail_in_one_line(images, tmp_path):
    bad = embed(tmp_path / "x", f"--train_data_ffcv={images['folder']}", check=False)
    assert bad.returncode == 2 and "must be an .ffcv or .beton file" in bad.stderr
    typo = embed(tmp_path / "x", f"--train_dta={images['folder']}", check=False)
    assert typo.returncode == 2 and "did you mean --train_data" in typo.stderr
    unknown = embed(tmp_path / "x", f"--train_data={images['folder']}", "--model_name=no_such_net", check=False)
    assert unknown.returncode == 2 and "not a timm model" in unknown.stderr
    misfit = embed(tmp_path / "y", f"--train_data={images['folder']}", "--model_name=tf_efficientnet_lite0",
                   f"--checkpoint={images['tiny']}", check=False)
    assert misfit.returncode == 2 and "does not fit tf_efficientnet_lite0" in misfit.stderr


def test_a_sample_without_an_image_is_counted_in_its_split(images, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in os.listdir(images["shards"]):
        (shards / name).write_bytes((pathlib.Path(images["shards"]) / name).read_bytes())
    with tarfile.open(shards / "00001.tar", "a") as tar:  # img2dataset's record of a failed download: no image
        for ext, payload in (("json", b'{"status": "failed_to_download"}'), ("txt", b"a caption")):
            info = tarfile.TarInfo(f"000019999.{ext}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    common = [f"--model_name={TINY}", f"--checkpoint={images['tiny']}", "--batch_size=4", "--on_bad_rows=skip"]
    embed(tmp_path / "out", f"--eval_data={shards}", *common)
    stats = json.load(open(tmp_path / "out" / "stats.json"))
    assert stats["splits"]["eval"]["rejected"] == {"no image in the sample": 1}, stats["splits"]["eval"]
    assert stats["rejected"] == 1 and stats["splits"]["eval"]["embedded"] == 20


@pytest.mark.parametrize("name", ["resnet50d.ra4_e3600_r224_in1k", "open_clip:ViT-B-32/laion2b_s34b_b79k",
                                  "open_clip:ViT-B-32/no_such_tag"])
def test_weights_that_cannot_be_had_are_one_line_before_any_download(name, images, tmp_path):
    proc = embed(tmp_path / "out", f"--train_data={images['folder']}", f"--model_name={name}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert ("no pretrained tag 'no_such_tag'" if "no_such" in name
            else "is neither a local folder nor in the Hugging Face cache") in proc.stderr, proc.stderr


def test_write_ffcv_names_a_corrupt_image_instead_of_hanging(images, tmp_path):
    pytest.importorskip("ffcv")
    tree = tmp_path / "tree"
    for path in folder_paths(images)[:6]:
        (tree / os.path.basename(os.path.dirname(path))).mkdir(parents=True, exist_ok=True)
        (tree / os.path.basename(os.path.dirname(path)) / os.path.basename(path)).write_bytes(open(path, "rb").read())
    broken = sorted(tree.rglob("*.jpg"))[2]
    broken.write_bytes(broken.read_bytes()[:200])  # a download cut short
    proc = run_cli("dist_data.imagenet", "write_ffcv", "--split=val", f"--data_dir={tree}", f"--write_dir={tmp_path}",
                   "--max_resolution=64", "--num_workers=2", nproc=0, check=False, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{broken}: cannot read the image" in proc.stderr and "nothing was written" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob("*.ffcv*"))


def test_a_tar_cut_at_a_member_boundary_is_named_not_read_short(images, tmp_path):
    shard = pathlib.Path(images["shards"]) / "00001.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[-8].offset  # the first member of the last two samples: a boundary tarfile reads past silently
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00000.tar").write_bytes((pathlib.Path(images["shards"]) / "00000.tar").read_bytes())
    (tmp_path / "shards" / "00001.tar").write_bytes(shard.read_bytes()[:cut])
    proc = embed(tmp_path / "out", f"--eval_data={tmp_path / 'shards'}", f"--model_name={TINY}",
                 f"--checkpoint={images['tiny']}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{tmp_path / 'shards' / '00001.tar'}: truncated tar" in proc.stderr, proc.stderr


def test_a_file_that_is_not_what_its_flag_needs_is_one_line(images, tmp_path):
    fake = tmp_path / "train.ffcv"
    fake.write_bytes(b"this is not an FFCV file, it only has the name of one")
    weights = tmp_path / "cut.pth"
    weights.write_bytes(pathlib.Path(images["tiny"]).read_bytes()[:1000])
    cases = []
    if importlib.util.find_spec("ffcv") is not None:
        cases.append(([f"--train_data_ffcv={fake}"], f"{fake}: not a readable FFCV file"))
    cases.append(([f"--train_data={images['folder']}", f"--model_name={TINY}", f"--checkpoint={weights}"],
                  f"--checkpoint {weights}: not a readable checkpoint"))
    for flags, message in cases:
        proc = embed(tmp_path / "out", *flags, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert message in proc.stderr, proc.stderr


def test_overwrite_with_another_output_dtype_replaces_the_stacked_file(images, tmp_path):
    common = [f"--train_data={images['folder']}", f"--model_name={TINY}", f"--checkpoint={images['tiny']}",
              "--batch_size=8"]
    embed(tmp_path / "out", *common, "--output_dtype=float32")
    assert load(tmp_path / "out" / "train.npz")["data"].dtype == np.float32
    proc = embed(tmp_path / "out", *common, "--output_dtype=float16", check=False)
    assert proc.returncode == 2 and "--output_dtype='float16' (was 'float32')" in proc.stderr, proc.stderr
    embed(tmp_path / "out", *common, "--output_dtype=float16", "--overwrite")
    assert load(tmp_path / "out" / "train.npz")["data"].dtype == np.float16


def test_overwrite_after_the_stack_command_leaves_no_stale_stacked_file(images, tmp_path):
    """--nostack, then ``stack`` (a result of another command, recorded in the run folder), then the first
    command with another --output_dtype and --overwrite: the stacked float32 file goes with the run."""
    common = [f"--train_data={images['folder']}", f"--eval_data={images['shards']}", f"--model_name={TINY}",
              f"--checkpoint={images['tiny']}", "--batch_size=8"]
    embed(tmp_path / "out", *common, "--nostack")
    run_cli("dist_data.embed_images", "stack", f"--dir={tmp_path / 'out'}", nproc=0)
    assert load(tmp_path / "out" / "eval.npz")["data"].dtype == np.float32
    embed(tmp_path / "out", *common, "--output_dtype=float16", "--overwrite")
    for split in ("train", "eval"):
        assert load(tmp_path / "out" / f"{split}.npz")["data"].dtype == np.float16, split
