"""Make the img2dataset output that tests/test_laionet.py reads (tests/data/img2dataset/).

img2dataset is not a dependency of dist_data (it pins old pandas and webdataset), so this script
runs it from its own virtual environment, offline, on ``file://`` URLs:

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset
    python scripts/make_img2dataset_fixture.py --img2dataset=/tmp/i2d/bin/img2dataset

It writes 10 small JPEGs (one per row of a LAIONet-style url_list) under /tmp/dist_data_i2d/images,
deletes one of them (row 6: a failed download), and runs img2dataset with 4 samples per shard, so
the output has 3 shards, a failure, and samples in a tar in completion order (not input order).
The url_list is the one ``python -m dist_data.laionet url_list`` writes (URL, TEXT + extra columns).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

WORK = "/tmp/dist_data_i2d"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "img2dataset")
WNIDS = ["n01440764", "n01443537", "n02085620", "n01440764", "n02085620",
         "n04037443", "n01443537", "n04037443", "n02085620", "n01440764"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--img2dataset", default="img2dataset")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(os.path.join(WORK, "images"))
    rng = np.random.default_rng(0)
    urls = []
    for i in range(len(WNIDS)):
        path = os.path.join(WORK, "images", f"{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (16 + i, 24, 3), dtype=np.uint8)).save(path, quality=90)
        urls.append("file://" + path)
    os.remove(os.path.join(WORK, "images", "6.jpg"))  # a download that fails
    table = pa.table({
        "URL": urls,
        "TEXT": [f"caption {i} of a {w}" for i, w in enumerate(WNIDS)],
        "laion_index": pa.array([100 + 7 * i for i in range(len(WNIDS))], pa.int64()),
        "wnid": WNIDS,
        "NSFW": ["UNLIKELY"] * len(WNIDS),
        "similarity": pa.array([0.3 + 0.01 * i for i in range(len(WNIDS))], pa.float64()),
    })
    pq.write_table(table, os.path.join(WORK, "url_list.parquet"))
    shutil.rmtree(OUT, ignore_errors=True)
    subprocess.run([args.img2dataset, "--url_list", os.path.join(WORK, "url_list.parquet"), "--input_format", "parquet",
                    "--url_col", "URL", "--caption_col", "TEXT", "--output_format", "webdataset",
                    "--output_folder", OUT, "--number_sample_per_shard", "4", "--processes_count", "1",
                    "--thread_count", "4", "--resize_mode", "no", "--skip_reencode", "True", "--retries", "0",
                    "--save_additional_columns", '["laion_index","wnid","NSFW","similarity"]',
                    "--enable_wandb", "False", "--distributor", "multiprocessing"], check=True)
    shutil.copy(os.path.join(WORK, "url_list.parquet"), os.path.join(OUT, "..", "img2dataset_url_list.parquet"))


if __name__ == "__main__":
    main()
