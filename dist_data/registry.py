"""Every command users type, listed once.

The conformance suite (``tests/test_conformance.py``) runs each command listed here through the
same careless-user and faulty-machine cases, so a verb or subcommand is covered by being added:
a verb module declares its commands (``COMMANDS``: subcommand name, or None for the verb's own flags ->
(options class, body(info, options))), and its ``main(argv)`` runs them through the engine
(:func:`dist_data.core.run.run_main`).
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
        table = getattr(importlib.import_module(module_name), "COMMANDS", None)
        if not table:
            raise TypeError(f"{module_name} declares no COMMANDS")
        out += [Command(verb, name, cls) for name, (cls, _) in table.items()]
    return out


def check(argv: list[str]) -> None:
    """``python -m dist_data.registry check MODULE [COMMAND] --flags``: parse and check the flags (paths
    included) of a command in the launching process, before torchrun starts any rank: a typo is then one
    line and exit 2, not a failure of every rank under torchrun's summary. A module that is not a
    dist_data verb, or ``--help``, passes (torchrun runs it and says what it says)."""
    from .core.run import dispatch

    module, rest = (argv[0], argv[1:]) if argv else ("", [])
    verb = next((v for v, m in VERBS.items() if m.removesuffix(".__main__") == module), None)
    if verb is None or any(a in ("-h", "--help") for a in rest):
        return
    dispatch(importlib.import_module(VERBS[verb]).COMMANDS, None, module, rest, lambda opts, body, command: None)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["check"]:
        sys.exit("usage: python -m dist_data.registry check MODULE [COMMAND] --flags")
    check(sys.argv[2:])
