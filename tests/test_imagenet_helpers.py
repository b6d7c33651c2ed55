"""The ImageNet helpers on files in ImageNet's own formats, and the torchvision import workaround."""

from __future__ import annotations

import os

import pytest

from conftest import run_cli
from dist_data.core.errors import InputError
from dist_data.image import imagenet
from dist_data.core.compat import _is_op_mismatch

XML = """<annotation>
  <folder>val</folder>
  <filename>{filename}</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJECT = "<object><name>{wnid}</name><pose>Unspecified</pose><bndbox><xmin>1</xmin><ymin>2</ymin>" \
         "<xmax>300</xmax><ymax>200</ymax></bndbox></object>"


def write_xml(folder, stem, wnids):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{stem}.xml")
    with open(path, "w") as f:
        f.write(XML.format(filename=stem, objects="".join(OBJECT.format(wnid=w) for w in wnids)))
    return path


def test_annotations_take_the_first_object_and_count_files_without_one(tmp_path):
    xml = tmp_path / "xml"
    write_xml(xml, "ILSVRC2012_val_00000002", ["n01443537", "n01440764"])
    write_xml(xml, "ILSVRC2012_val_00000001", ["n01751748"])
    empty = write_xml(xml / "sub", "ILSVRC2012_val_00000003", [])
    out = tmp_path / "annotations.txt"
    counts = imagenet.write_annotations(str(xml), str(out))
    assert out.read_text() == "00000001 n01751748\n00000002 n01443537\n"
    assert (counts.files, counts.written, counts.without_object) == (3, 2, [empty])
    by_cli = tmp_path / "cli" / "annotations.txt"
    proc = run_cli("dist_data.imagenet", "annotations", f"--xml_dir={xml}", f"--output_file={by_cli}", nproc=0)
    assert "3 XML file(s), 2 annotation(s) written, 1 without an <object>" in proc.stderr
    assert by_cli.read_text() == out.read_text()
    again = run_cli("dist_data.imagenet", "annotations", f"--xml_dir={xml}", f"--output_file={by_cli}", nproc=0)
    assert "already complete (same flags); nothing to do" in again.stderr
    # a file the command did not write (here: the library call's) is never replaced, even with --overwrite
    mine = run_cli("dist_data.imagenet", "annotations", f"--xml_dir={xml}", f"--output_file={out}", "--overwrite",
                   nproc=0, check=False)
    assert mine.returncode == 2 and "no dist_data manifest" in mine.stderr
    (xml / "broken.xml").write_text("<annotation><filename>x")
    with pytest.raises(InputError, match="broken.xml: not readable XML"):
        imagenet.write_annotations(str(xml), str(out))


def test_to_pytorch_style_moves_train_and_val_names_and_finishes_a_partial_move(tmp_path):
    split = tmp_path / "val"
    os.makedirs(split / "images")
    names = ["n01440764_10026.JPEG", "n01443537_77.JPEG", "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    for name in names:
        (split / "images" / name).write_bytes(name.encode())
    (split / "annotations.txt").write_text("10026 n01440764\n77 n01443537\n00000001 n01751748\n00000002 n01440764\n"
                                           "00000009 n01440764\n")
    # an earlier run moved one image already
    os.makedirs(split / "n01751748")
    os.replace(split / "images" / "ILSVRC2012_val_00000001.JPEG", split / "n01751748" / "ILSVRC2012_val_00000001.JPEG")
    counts = imagenet.to_pytorch_style(str(split))
    assert (counts.lines, counts.moved, counts.already, counts.missing) == (5, 3, 1, ["00000009 n01440764"])
    assert sorted(os.listdir(split / "n01440764")) == ["ILSVRC2012_val_00000002.JPEG", "n01440764_10026.JPEG"]
    assert os.listdir(split / "n01443537") == ["n01443537_77.JPEG"] and os.listdir(split / "images") == []
    (split / "annotations.txt").write_text("10026\n")
    bad = run_cli("dist_data.imagenet", "to_pytorch_style", f"--split_path={split}", nproc=0, check=False)
    assert bad.returncode == 2 and "annotations.txt:1: expected" in bad.stderr


def test_ffcv_file_names_follow_the_original_scheme():
    assert imagenet.ffcv_name("train", 500, 0.5, 90) == "train_500_0.5_90.ffcv"
    assert imagenet.ffcv_name("val", 256, 1.0, 100) == "val_256_1_100.ffcv"


def test_the_torchvision_workaround_acts_only_on_the_operator_mismatch():
    assert _is_op_mismatch(RuntimeError("operator torchvision::nms does not exist"))
    assert not _is_op_mismatch(RuntimeError("CUDA error: no kernel image is available"))
    assert not _is_op_mismatch(ImportError("operator torchvision::nms does not exist"))
    from dist_data.core.compat import import_torchvision

    tv = import_torchvision()
    from torchvision import transforms  # the pure-Python parts work either way

    assert import_torchvision() is tv and transforms.CenterCrop(4) is not None
