"""Every command users type, listed once.

The conformance suite (``tests/test_conformance.py``) runs each command listed here through the
same careless-user and faulty-machine cases, so a verb or subcommand is covered by being added:
a verb module names its options class (``OPTIONS``) and/or its subcommands (``COMMANDS``, name ->
(options class, body)), and its ``main(argv)`` runs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

# verb -> the module ``python -m`` runs (captions and catalog: their package's __main__)
VERBS = {
    "filter": "dist_data.filter",
    "mine": "dist_data.mine",
    "pretokenize": "dist_data.pretokenize",
    "embed_mteb": "dist_data.embed_mteb",
    "combine": "dist_data.combine",
    "finetune_data": "dist_data.finetune_data",
    "embed_images": "dist_data.embed_images",
    "imagenet": "dist_data.imagenet",
    "captions": "dist_data.captions.__main__",
    "laionet": "dist_data.laionet",
    "pairs": "dist_data.pairs",
    "triplets": "dist_data.triplets",
    "catalog": "dist_data.catalog.__main__",
}


@dataclass(frozen=True)
class Command:
    """One command: a verb, or one subcommand of it."""

    verb: str
    subcommand: str | None
    options: type

    @property
    def name(self) -> str:
        return self.verb + (f" {self.subcommand}" if self.subcommand else "")

    @property
    def module(self) -> str:
        """What ``python -m`` / ``torchrun -m`` runs."""
        return VERBS[self.verb].removesuffix(".__main__")

    def argv(self, *flags: str) -> list[str]:
        """The command line after ``python -m MODULE``."""
        return ([self.subcommand] if self.subcommand else []) + list(flags)

    def main(self, *flags: str) -> None:
        """Run the command in this process (as ``python -m MODULE ...`` would)."""
        importlib.import_module(VERBS[self.verb]).main(self.argv(*flags))


def commands() -> list[Command]:
    """Every verb and subcommand, in :data:`VERBS` order."""
    out = []
    for verb, module_name in VERBS.items():
        module = importlib.import_module(module_name)
        if getattr(module, "OPTIONS", None) is not None:
            out.append(Command(verb, None, module.OPTIONS))
        out += [Command(verb, name, cls) for name, (cls, _) in getattr(module, "COMMANDS", {}).items()]
        if not any(c.verb == verb for c in out):
            raise TypeError(f"{module_name} declares neither OPTIONS nor COMMANDS")
    return out
