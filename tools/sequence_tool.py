"""Ground side of stored command sequences: check, compile, and the commands that uplink one.

    sunlit seq check FILE...             every error of every file as FILE:LINE: message; exit 0/1
    sunlit seq compile FILE -o OUT       the uplink form (flight/sequence_format.py) as .json or .msgpack

(also ``python -m tools.sequence_tool check|compile ...``). The check is the one the sequencer runs
on board (flight/sequence_format.py), against the same dictionary, so a file that passes here loads
there. A sequence is named for its file (``example.seq`` -> ``example``).

``uplink_commands(path)`` gives the console what to send through the dispatcher:
``sequencer.LOAD name=<stem> text=<file text>`` then ``sequencer.START name=<stem>``. The text goes as
written, so the lines the sequencer names on board are the file's lines; a file longer than LOAD's
``text`` limit goes without its comments, each command still on its own line number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import msgpack

from flight.dictionary import Dictionary, default_dictionary, load_dictionary
from flight.sequence_format import (
    DEFAULT_ARMING_WINDOW_S,
    Issue,
    Sequence,
    SequenceError,
    format_utc_ns,
    parse_sequence,
)

LOAD_COMMAND = "sequencer.LOAD"
START_COMMAND = "sequencer.START"


def load_sequence(path: Path | str, dictionary: Dictionary | None = None, *,
                  arming_window_s: float = DEFAULT_ARMING_WINDOW_S) -> tuple[Sequence, str]:
    """Read and check a sequence file: (sequence, its text); SequenceError lists every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SequenceError([Issue(None, f"cannot read the file: {exc}")]) from None
    # The name comes from the file name; a bad one is reported with the file's other problems.
    sequence = parse_sequence(text, dictionary, name=path.stem, arming_window_s=arming_window_s)
    return sequence, text


def describe(sequence: Sequence, dictionary: Dictionary | None = None) -> str:
    """One line an operator reads before uplink: size, hazards, absolute window."""
    parts = [f"{len(sequence.steps)} commands"]
    absolute = [s.t_ns for s in sequence.steps if s.kind == "A"]
    if absolute:
        parts.append(f"absolute times {format_utc_ns(min(absolute))} .. {format_utc_ns(max(absolute))}")
    dictionary = dictionary if dictionary is not None else default_dictionary()
    hazardous = sorted({s.command for s in sequence.steps
                        if s.command in dictionary.commands and dictionary.commands[s.command].hazardous})
    if hazardous:
        parts.append("HAZARDOUS: " + ", ".join(hazardous))
    return ", ".join(parts)


def check_files(paths: list[Path | str], dictionary: Dictionary | None = None, *,
                arming_window_s: float = DEFAULT_ARMING_WINDOW_S, out: TextIO | None = None) -> int:
    """Print every problem of every file (FILE:LINE: message) or FILE: OK; 0 when all are good, else 1."""
    out = out if out is not None else sys.stdout
    status = 0
    for path in paths:
        try:
            sequence, _ = load_sequence(path, dictionary, arming_window_s=arming_window_s)
        except SequenceError as exc:
            status = 1
            for issue in exc.issues:
                where = f"{path}:{issue.line}" if issue.line is not None else f"{path}"
                print(f"{where}: {issue.message}", file=out)
            print(f"{path}: {len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''}", file=out)
            continue
        print(f"{path}: OK, {describe(sequence, dictionary)}", file=out)
    return status


def encode_uplink(sequence: Sequence, fmt: str) -> bytes:
    data = sequence.to_uplink()
    if fmt == "json":
        return (json.dumps(data, indent=2) + "\n").encode()
    if fmt == "msgpack":
        return msgpack.packb(data, use_bin_type=True)
    raise ValueError(f"unknown uplink format {fmt!r} (json or msgpack)")


def decode_uplink(raw: bytes, fmt: str, dictionary: Dictionary | None = None) -> Sequence:
    """Read a compiled file back, checking everything again (SequenceError on anything wrong)."""
    try:
        data: Any = json.loads(raw) if fmt == "json" else msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a malformed file
        raise SequenceError([Issue(None, f"not valid {fmt}: {type(exc).__name__}: {exc}")]) from None
    return Sequence.from_uplink(data, dictionary)


def uplink_format(path: Path | str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".msgpack", ".mpk"):
        return "msgpack"
    raise ValueError(f"{path}: the output name must end in .json or .msgpack")


def compile_file(path: Path | str, out_path: Path | str, dictionary: Dictionary | None = None, *,
                 arming_window_s: float = DEFAULT_ARMING_WINDOW_S) -> Sequence:
    """Check a sequence file and write its uplink form (format from out_path's suffix)."""
    fmt = uplink_format(out_path)
    sequence, _ = load_sequence(path, dictionary, arming_window_s=arming_window_s)
    Path(out_path).write_bytes(encode_uplink(sequence, fmt))
    return sequence


def uplink_text(sequence: Sequence, text: str, max_chars: int) -> str:
    """The text LOAD carries: the file as written, or without comments when that is too long."""
    if len(text) <= max_chars:
        return text
    compact = sequence.to_text()  # each command on its own line number, comments dropped
    if len(compact) > max_chars:
        raise SequenceError([Issue(None, f"the sequence is {len(compact)} characters even without comments; "
                                         f"sequencer.LOAD takes at most {max_chars}: split it")])
    return compact


def uplink_commands(path: Path | str, dictionary: Dictionary | None = None, *,
                    arming_window_s: float = DEFAULT_ARMING_WINDOW_S) -> list[tuple[str, dict[str, Any]]]:
    """What the console sends (through the dispatcher) to load and start a checked sequence file."""
    dictionary = dictionary if dictionary is not None else default_dictionary()
    sequence, text = load_sequence(path, dictionary, arming_window_s=arming_window_s)
    load = dictionary.command(LOAD_COMMAND)
    text_arg = load.arg("text")
    sent = uplink_text(sequence, text, text_arg.max_length if text_arg is not None else len(text))
    commands = [(LOAD_COMMAND, {"name": sequence.name, "text": sent}), (START_COMMAND, {"name": sequence.name})]
    for name, args in commands:
        dictionary.validate_command(name, args)  # CommandRejected here would be a bug: fail loudly
    return commands


# --------------------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``seq check`` and ``seq compile`` to a CLI's subparsers (tools/cli.py: ``sunlit seq``)."""
    seq = subparsers.add_parser("seq", help="check and compile stored command sequences",
                                description="Stored command sequences (flight/sequence_format.py): check them "
                                            "against the dictionary exactly as the onboard sequencer will, and "
                                            "compile them to the uplink form.")
    seq_sub = seq.add_subparsers(dest="seq_command", required=True)
    check = seq_sub.add_parser("check", help="print every error of each file (FILE:LINE: message); exit 1 if any")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    compile_ = seq_sub.add_parser("compile", help="check a file and write its uplink form (.json or .msgpack)")
    compile_.add_argument("file", type=Path, metavar="FILE")
    compile_.add_argument("-o", "--out", type=Path, required=True, metavar="OUT",
                          help="output file; its suffix picks the format: .json or .msgpack")
    for sub in (check, compile_):
        sub.add_argument("--dictionary", type=Path, default=None, metavar="DIR",
                         help="dictionary folder (default: the packaged flight/dictionary)")
        sub.add_argument("--arming-window-s", type=float, default=DEFAULT_ARMING_WINDOW_S,
                         help=f"the dispatcher's arming window (default {DEFAULT_ARMING_WINDOW_S:g} s)")
    seq.set_defaults(func=run_command)
    return seq


def run_command(args: argparse.Namespace) -> int:
    try:
        dictionary = load_dictionary(args.dictionary) if args.dictionary is not None else None
    except ValueError as exc:
        print(f"sunlit seq: {exc}", file=sys.stderr)
        return 2
    if args.seq_command == "check":
        return check_files(args.files, dictionary, arming_window_s=args.arming_window_s)
    try:
        uplink_format(args.out)
        sequence = compile_file(args.file, args.out, dictionary, arming_window_s=args.arming_window_s)
    except SequenceError as exc:
        for issue in exc.issues:
            where = f"{args.file}:{issue.line}" if issue.line is not None else f"{args.file}"
            print(f"{where}: {issue.message}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"sunlit seq compile: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {sequence.name}, {describe(sequence, dictionary)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sunlit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["seq", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
