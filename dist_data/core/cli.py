"""The command line of every entry point: one typed options object per verb, checked before any work.

A verb declares its flags once, as a dataclass whose fields carry their meaning and their check::

    @dataclass(frozen=True)
    class FilterOptions(RunOptions):
        k: int = flag(2, "keep a pair iff its document is among the top-k neighbours", at_least(1))

and its ``main`` is ``cli.main(FilterOptions, run_filter, __doc__)``. Flags are written as fire
writes them (``--k=2``, ``--k 2``, ``--compress``, ``--nocompress``, ``--output-dir=...``) and
their values are read with fire's own literal parser, so the commands users type do not change.
What fire did not do, and this does:

- an unknown or misspelled flag is an error before anything runs, with the closest valid name;
- every value is checked against its flag's type and rule, and all problems are named at once;
- ``--help`` / ``-h`` print one line per flag (type, default, meaning);
- the options are built once and passed down whole (``opts.k``), never re-listed per layer.
"""

from __future__ import annotations

import dataclasses
import json
import difflib
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .paths import path_problems

Check = Callable[[Any], "str | None"]


class UsageError(ValueError):
    """Bad flags: printed as one line (or a short list), exit status 2."""


def flag(default: Any, help: str, check: Check | None = None, *, result: bool = True, path: str | None = None) -> Any:
    """A flag: its default, one line of meaning, an optional check returning a problem or None.

    ``result=False`` marks a flag that does not change the result (a rerun may change it);
    ``path`` its role as a path (:mod:`dist_data.core.paths`: INPUT, OUTPUT_DIR, ...), which the
    engine checks for every verb alike.
    """
    return field(default=default, metadata={"help": help, "check": check, "result": result, "path": path})


def required(help: str, check: Check | None = None, *, result: bool = True, path: str | None = None) -> Any:
    return field(metadata={"help": help, "check": check, "result": result, "path": path})


# ---------------------------------------------------------------- checks

def at_least(low: float) -> Check:
    return lambda v: None if v is None or v >= low else f"must be >= {low}, got {v!r}"


def in_range(low: float, high: float) -> Check:
    return lambda v: None if v is None or low <= v <= high else f"must be in [{low}, {high}], got {v!r}"


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v is None or v in choices else f"must be one of {', '.join(choices)}, got {v!r}"

    check.choices = choices  # type: ignore[attr-defined]  # what --help and the conformance suite read
    return check


def cosine(v: Any) -> str | None:
    """A threshold on the cosine of unit vectors: outside [-1, 1] it would keep everything or nothing."""
    return None if v is None or -1.0 <= v <= 1.0 else f"is a cosine similarity: must be in [-1, 1], got {v!r}"


def json_object(v: Any) -> str | None:
    """A JSON object given as text (``--model_kwargs='{"attn_implementation": "sdpa"}'``)."""
    if v is None:
        return None
    try:
        value = json.loads(v)
    except ValueError as e:
        return f"must be a JSON object, e.g. '{{\"key\": \"value\"}}' ({e})"
    return None if isinstance(value, dict) else f"must be a JSON object {{...}}, got {v!r}"


def non_empty(v: Any) -> str | None:
    return None if v is None or str(v).strip() else "must not be empty"


# ---------------------------------------------------------------- options

@dataclass(frozen=True)
class Options:
    """Base of every verb's options; :meth:`problems` holds the checks that involve several flags."""

    def problems(self) -> list[str]:
        return []

    def models(self) -> list[tuple[str, str | None, str | None]]:
        """``(flag, model name, revision)`` of every flag that names a model: each is checked before
        anything is read or written (:func:`dist_data.core.models.check_models`)."""
        return []

    def result_args(self) -> dict[str, Any]:
        """The flags that determine the result (what ``args.json`` holds and a rerun must repeat)."""
        return self.canonical_args({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                    if f.metadata.get("result", True)})

    @classmethod
    def canonical_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` with values that give the same result written alike; applied to the flags of this run
        and to those an earlier run recorded, so that a rerun compares like with like (a flag that no
        longer changes the result, recorded by an earlier version, is left out)."""
        neutral = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("result", True)}
        return {k: v for k, v in args.items() if k not in neutral}


@dataclass(frozen=True)
class CommonOptions(Options):
    """Flags of every distributed verb."""

    progress: bool = flag(True, "progress bars (rank 0); --noprogress silences every bar, libraries' too",
                          result=False)
    timeout_minutes: int = flag(120, "process-group timeout (rank 0 may merge while others wait)", at_least(1),
                                result=False)
    storage_options: str | None = flag(None, "JSON of the filesystem's options for URL inputs (s3://, gs://, hf://...), "
                                       "e.g. '{\"anon\": true}' or per protocol '{\"s3\": {...}}'; never recorded",
                                       json_object, result=False)


def _kind(annotation: Any) -> tuple[type, bool]:
    """(base type, accepts None) of a field's annotation (``int | None`` -> (int, True))."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing})  # noqa: S307 - our own annotations
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        base = [a for a in args if a is not type(None)]
        return base[0], len(base) < len(args)
    return annotation, False


def _type_name(f: dataclasses.Field) -> str:
    base, optional = _kind(f.type)
    return base.__name__ + ("|None" if optional else "")


def _convert(name: str, raw: str | bool, f: dataclasses.Field) -> Any:
    """The value of ``--name=raw`` for field ``f``, or :class:`UsageError` naming the flag."""
    base, optional = _kind(f.type)
    if isinstance(raw, bool):
        if base is bool:
            return raw
        raise UsageError(f"--{name} needs a value ({_type_name(f)}), e.g. --{name}=...")
    if optional and raw.strip().lower() in ("none", "null"):
        return None
    if base is str:  # the text as typed: fire would turn --prompt=1 into an int, or a,b into a tuple
        return raw
    from fire.parser import DefaultParseValue

    value = DefaultParseValue(raw)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).lower() in ("1", "0", "true", "false", "yes", "no"):
            return str(value).lower() in ("1", "true", "yes")
        raise UsageError(f"--{name} must be True or False, got {raw!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"--{name} must be an integer, got {raw!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"--{name} must be a number, got {raw!r}")
    return value


def _tokens(argv: Sequence[str], names: set[str], bools: set[str]) -> list[tuple[str, str | bool]]:
    """``(name, raw value)`` pairs of ``argv`` (``--a=1``, ``--a 1``, ``--flag``, ``--noflag``)."""
    out: list[tuple[str, str | bool]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if not tok.startswith("--") or tok == "--":
            raise UsageError(f"unexpected argument {tok!r}: every option is a flag, e.g. --output_dir=DIR")
        name, eq, value = tok[2:].partition("=")
        name = name.replace("-", "_")
        if eq:
            out.append((name, value))
        elif name in bools:
            out.append((name, True))
        elif name.startswith("no") and name[2:] in bools:
            out.append((name[2:], False))
        elif name in names and i < len(argv) and not argv[i].startswith("--"):
            out.append((name, argv[i]))
            i += 1
        else:
            out.append((name, True))
    return out


def parse(cls: type[Options], argv: Sequence[str]) -> Options:
    """``cls`` built from ``argv``; every problem (unknown flag, type, rule) raised together.

    Raises:
        UsageError: one line per problem, unknown flags with the closest valid name.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    bools = {n for n, f in fields.items() if _kind(f.type)[0] is bool}
    problems, values = [], {}
    for name, raw in _tokens(argv, set(fields), bools):
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            problems.append(f"unknown flag --{name}" + (f"; did you mean --{close[0]}?" if close else
                                                         " (--help lists the flags)"))
            continue
        if name in values:
            problems.append(f"--{name} is given twice")
            continue
        try:
            values[name] = _convert(name, raw, fields[name])
        except UsageError as e:
            problems.append(str(e))
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    problems.extend(f"--{n} is required ({fields[n].metadata.get('help', '')})" for n in missing)
    return _checked(lambda: cls(**values), fields, values, problems)


def with_values(opts: Options, raw: dict[str, Any]) -> Options:
    """``opts`` with the flags in ``raw`` set (text as typed, or values already typed, e.g. a YAML
    manifest's), checked as a command line is.

    Raises:
        UsageError: one line per problem.
    """
    fields = {f.name: f for f in dataclasses.fields(opts)}
    problems, values = [], {}
    for name, value in raw.items():
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            problems.append(f"unknown flag {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            continue
        try:
            values[name] = _convert(name, value if isinstance(value, (bool, str)) else str(value), fields[name])
        except UsageError as e:
            problems.append(str(e))
    return _checked(lambda: dataclasses.replace(opts, **values), fields, values, problems)


def _checked(build: Callable[[], Options], fields: dict[str, dataclasses.Field], values: dict[str, Any],
             problems: list[str]) -> Options:
    """The options ``build()`` makes once each value passed its flag's rule, then the cross-flag and
    path rules; every problem raised together."""
    for name, value in values.items():
        check = fields[name].metadata.get("check")
        problem = check(value) if check else None
        if problem:
            problems.append(f"--{name} {problem}")
    if problems:
        raise UsageError("; ".join(problems))
    opts = build()
    cross = opts.problems() + getattr(opts, "collection_problems", list)() + path_problems(opts)
    if cross:
        raise UsageError("; ".join(cross))
    return opts


def flag_table(cls: type[Options]) -> list[tuple[str, str, str, str]]:
    """``(flag, type, default, help)`` of every flag, in ``--help``'s order: required flags first,
    then the verb's own, then the shared ones (the docs' flag tables are made from it too)."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    order = [n for c in cls.__mro__ if c is not CommonOptions for n in vars(c).get("__annotations__", {})
             if n in by_name] + [f.name for f in dataclasses.fields(CommonOptions) if f.name in by_name]
    fields = sorted((by_name[n] for n in dict.fromkeys(order)), key=lambda f: f.default is not dataclasses.MISSING)
    return [(f.name, _type_name(f), "required" if f.default is dataclasses.MISSING else f"default {_shown(f.default)}",
             f.metadata.get("help", "")) for f in fields]


def usage(cls: type[Options], prog: str, doc: str | None) -> str:
    """The text of ``--help``: the verb's summary, then one line per flag."""
    rows = flag_table(cls)
    width = max(len(r[0]) for r in rows) + 2
    type_width = max(len(r[1]) for r in rows) + 1
    default_width = max(len(r[2]) for r in rows) + 1
    lines = [f"usage: {prog} [--flag=value ...]", ""]
    if doc:
        lines += [doc.strip().splitlines()[0], ""]
    lines.append("flags:")
    for name, kind, default, help_ in rows:
        lines.append(f"  --{name:<{width}} {kind:<{type_width}} {default:<{default_width}} {help_}")
    return "\n".join(lines)


def _shown(default: Any) -> str:
    """A default as it reads in --help (a shipped file by its name, not its site-packages path)."""
    if isinstance(default, str) and os.sep in default and os.path.exists(default):
        return "<shipped " + os.path.basename(default) + ">"
    return "''" if default == "" else str(default)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _say(text: str) -> None:
    """A usage error, said once (rank 0) and given to torchrun as each rank's cause. The other ranks
    wait a moment before they exit: torchrun stops every rank as soon as one exits, and under load
    it stopped rank 0 before rank 0 had said it."""
    tell_launcher(text)
    if _is_main_process():
        print(text, file=sys.stderr)
    else:
        import time

        time.sleep(2.0)


def tell_launcher(text: str) -> None:
    """Under torchrun, a rank's one-line error also goes to the error file torchrun gave the rank, so
    torchrun's failure summary names it as the root cause (not "To enable traceback see ...").
    ``launch/*.sh`` check the flags before torchrun starts (``python -m dist_data.registry check``)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    import json
    import time

    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"message": text, "timestamp": int(time.time())}, f)
    except OSError:
        pass


def main(cls: type[Options], body: Callable[[Options], Any], doc: str | None, prog: str,
         argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``cls`` and call ``body(options)``.

    ``--help``/``-h`` prints the flags and exits 0; bad flags print one line and exit 2, before
    any work (and before the process group, so every rank stops at once).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        if _is_main_process():
            print(usage(cls, prog, doc))
        sys.exit(0)
    try:
        opts = parse(cls, argv)
    except UsageError as e:
        _say(f"{prog}: error: {e}")
        sys.exit(2)
    body(opts)


def main_with_commands(commands: dict[str, tuple[type[Options], Callable[[Options], Any]]], doc: str | None,
                       prog: str, argv: Sequence[str] | None = None) -> None:
    """``prog COMMAND --flags``: one options class and body per subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    listing = "\n".join(f"  {name:<12} {(cls.__doc__ or '').strip().splitlines()[0]}"
                        for name, (cls, _) in commands.items())
    if not argv or argv[0] in ("-h", "--help"):
        if _is_main_process():
            print(f"usage: {prog} COMMAND [--flag=value ...]\n\n{(doc or '').strip().splitlines()[0]}\n\n"
                  f"commands:\n{listing}\n\n{prog} COMMAND --help lists a command's flags")
        sys.exit(0 if argv else 2)
    name = argv[0]
    if name not in commands:
        close = difflib.get_close_matches(name, list(commands), n=1, cutoff=0.5)
        _say(f"{prog}: error: unknown command {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
             + f" (commands: {', '.join(commands)})")
        sys.exit(2)
    cls, body = commands[name]
    main(cls, body, cls.__doc__, f"{prog} {name}", argv[1:])


def dispatch(commands: dict[str | None, tuple[type[Options], Callable[..., Any]]], doc: str | None, prog: str,
             argv: Sequence[str] | None, act: Callable[[Options, Callable[..., Any], str], Any]) -> None:
    """Pick the command ``argv`` names, parse its flags (one line and exit 2 on a problem) and call
    ``act(options, body, command name)``: :func:`dist_data.core.run.execute`, or nothing (the launch
    scripts' pre-flight check, ``python -m dist_data.registry check``)."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def runner(body: Callable[..., Any], command: str) -> Callable[[Options], Any]:
        return lambda opts: act(opts, body, command)

    named = {name: (cls, runner(body, f"{prog} {name}")) for name, (cls, body) in commands.items() if name}
    if argv and argv[0] in named or None not in commands:
        main_with_commands(named, doc, prog, argv)
        return
    cls, body = commands[None]
    main(cls, runner(body, prog), doc, prog, argv)
