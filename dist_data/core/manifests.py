"""Collection manifests: which datasets a manifest (YAML or JSON) or a folder of datasets names, read
strictly (a key given twice is refused, not read as its last value). Used by the collection
runner (:mod:`dist_data.core.collection`) and by the path checks and input signatures
(:mod:`dist_data.core.paths`): a manifest's paths are inputs as much as the manifest itself."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import InputError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
COLLECTION_FILE = "collection.json"
# names a dataset's folder may not take: the collection's own files and a run folder's own
RESERVED_NAMES = frozenset({COLLECTION_FILE, "parts", "cache", "manifest.json", "args.json", "stats.json",
                            "_SUCCESS", "rejects.jsonl", "README.md"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    overrides: dict[str, Any]
    source: str  # where it was named: the manifest, or the folder


def dataset_name(path: str) -> str:
    """A dataset's name from its file: the whole file name minus its format suffixes
    (``nli.pairs.jsonl.gz`` -> ``nli.pairs``)."""
    base = os.path.basename(path.rstrip(os.sep))
    for suffix in (".gz", ".zst", ".bz2", ".xz"):
        base = base.removesuffix(suffix)
    return base.rsplit(".", 1)[0] if "." in base else base


def read_collection(opts: Any) -> list[Dataset]:
    """The datasets of a collection (``opts``: its ``collection`` manifest, or its ``dataset`` folder
    with ``per_dataset``), in the manifest's (or the folder's sorted) order.

    Raises:
        InputError: an unreadable manifest, an entry without a path, a bad or repeated name.
    """
    if opts.per_dataset:
        folder = getattr(opts, "dataset")
        entries = [{"path": os.path.abspath(os.path.join(folder, n))} for n in sorted(os.listdir(folder))
                   if not n.startswith(".")]
        source, root = folder, folder
    else:
        source, root = opts.collection, os.path.dirname(os.path.abspath(opts.collection))
        entries = _manifest_entries(opts.collection)
    datasets, seen = [], {}
    for i, entry in enumerate(entries, start=1):
        where = f"{source}: dataset {i}"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"].strip():
            raise InputError(f"{where}: expected a path (or a mapping with 'path'), got {entry!r:.80}")
        path = os.path.expanduser(entry["path"])
        path = path if os.path.isabs(path) else os.path.join(root, path)
        name = str(entry.get("name") or dataset_name(path))
        if not _NAME.match(name) or name in RESERVED_NAMES:
            raise InputError(f"{where}: {name!r} cannot name a folder of the collection (letters, digits, '.', '_', "
                             f"'-'; not one of the collection's own names: {', '.join(sorted(RESERVED_NAMES))})")
        if name in seen:
            raise InputError(f"{where}: the name {name!r} is already dataset {seen[name]}; give each a 'name'")
        seen[name] = i
        overrides = {k: v for k, v in entry.items() if k not in ("name", "path")}
        datasets.append(Dataset(name, path, overrides, where + f" ({name})"))
    if not datasets:
        raise InputError(f"{source}: no datasets")
    return datasets


def is_manifest(path: str) -> bool:
    """A collection manifest: ``.yaml``/``.yml``, or a ``.json`` object with ``datasets``."""
    lower = path.lower()
    if lower.endswith((".yaml", ".yml")):
        return True
    if not lower.endswith(MANIFEST_SUFFIXES):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 20)
        return isinstance(data := json.loads(head), dict) and "datasets" in data
    except (ValueError, OSError):  # rows, or a file longer than the head: not a manifest
        return False


def manifest_datasets(path: str) -> list[Dataset]:
    """The datasets a manifest file names (:func:`read_collection` of ``--collection=path``).

    Raises:
        InputError: as :func:`read_collection`.
    """
    return read_collection(_AsManifest(path))


def manifest_paths(path: str) -> list[str]:
    """The paths a manifest names (none when ``path`` is not a readable manifest): inputs of the run
    as much as the manifest itself, held to the same path checks and signature."""
    if not os.path.isfile(path) or not is_manifest(path):
        return []
    try:
        return [ds.path for ds in manifest_datasets(path)]
    except InputError:
        return []  # said where the manifest is read


@dataclass(frozen=True)
class _AsManifest:  # the flags read_collection reads, of a manifest given as a file
    collection: str
    per_dataset: bool = False


def _no_repeated_keys(path: str):
    """A YAML loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"--collection {path}:{key_node.start_mark.line + 1}: the key {key!r} is given "
                                 f"twice (also on line {seen[key]}); give it once")
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _json_no_repeated_keys(path: str):
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise InputError(f"--collection {path}: the key {repeated[0]!r} is given twice in one object; give it once")
        return dict(items)

    return pairs


def _manifest_entries(path: str) -> list[Any]:
    if not path.lower().endswith(MANIFEST_SUFFIXES):
        raise InputError(f"--collection {path}: a .yaml, .yml or .json manifest is expected")
    try:
        with open(path, encoding="utf-8") as f:
            if path.lower().endswith(".json"):
                data = json.load(f, object_pairs_hook=_json_no_repeated_keys(path))
            else:
                import yaml

                data = yaml.load(f, Loader=_no_repeated_keys(path))  # noqa: S506 - a SafeLoader
    except InputError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"--collection {path}: not a readable manifest ({str(e).splitlines()[0]})") from None
    except Exception as e:  # yaml.YAMLError
        raise InputError(f"--collection {path}: not a readable manifest ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict) and "datasets" in data:
        data = data["datasets"]
    if isinstance(data, dict):  # {name: path} or {name: {path: ..., flag: ...}}
        data = [{"name": k, **(v if isinstance(v, dict) else {"path": v})} for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError(f"--collection {path}: expected a list of datasets (or 'datasets:'), got "
                         f"{type(data).__name__}")
    return data
