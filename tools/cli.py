"""The `sunlit` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.scenario import ScenarioError, preset_names

ASSISTANT_MODEL_HELP = (
    "the assistant's language model: auto (default): the shipped onboard model with real compute (or the "
    "Hugging Face model directory in $SUNLIT_HF_MODEL, when set), templates with modeled compute; none: "
    "templates only; onboard: the shipped weights; or PATH: a weights file, a Hugging Face model directory, or "
    "a checkpoint directory of an assistant fine-tuning run (sunlit sim --train assistant): its newest verified "
    "checkpoint. "
    "It is loaded at the first question; its answers run only on GPU time the power manager grants, else the "
    "template answers")


def _progress_factory(enabled: bool):
    def factory(total_s: int):
        if not enabled:
            return None
        from tqdm import tqdm

        bar = tqdm(total=total_s, unit="sim s", unit_scale=True, dynamic_ncols=True, leave=False,
                   desc="simulating")
        last = [0]

        def update(t_s: int) -> None:
            bar.update(t_s - last[0])
            last[0] = t_s
            if t_s >= total_s:
                bar.close()

        return update

    return factory


def cmd_sim(args: argparse.Namespace) -> int:
    from flight.sequence_format import SequenceError
    from flight.training_job import TrainingTaskError
    from sim.sil import AssistantModelChoiceError
    from tools.run_sim import human_summary, run_simulation

    try:
        summary = run_simulation(
            args.scenario, orbits=args.orbits, duration_s=args.duration_s, seed=args.seed,
            compute=args.compute, out_dir=args.out, report=not args.no_report,
            progress_factory=_progress_factory(not args.quiet and sys.stderr.isatty() or args.progress),
            sequences=args.sequence, assistant_model=args.assistant_model,
            train=args.train, dialogues=args.dialogues,
        )
    except (ScenarioError, AssistantModelChoiceError, TrainingTaskError) as exc:
        print(f"sunlit sim: {exc}", file=sys.stderr)
        return 2
    except SequenceError as exc:
        for issue in exc.issues:
            where = f"{issue.line}: " if issue.line is not None else ""
            print(f"sunlit sim: sequence error: {where}{issue.message}", file=sys.stderr)
        return 2
    print(human_summary(summary))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tools.bench import main as bench_main

    return bench_main(quick=args.quick, only=args.only, json_path=args.json,
                      basilisk_python=args.basilisk_python)


def cmd_policies(args: argparse.Namespace) -> int:
    import json

    from tools.policies import compare_policies, format_comparison

    results = []
    for scenario in args.scenario:
        try:
            comparison = compare_policies(scenario, duration_s=args.duration_s, seed=args.seed)
        except ScenarioError as exc:
            print(f"sunlit policies: {exc}", file=sys.stderr)
            return 2
        print(format_comparison(comparison), flush=True)
        results.append(comparison)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _speed(text: str) -> float:
    if text == "max":
        return float("inf")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number > 0 or 'max', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"speed must be > 0, got {text}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from tools.stack import StackOptions, run_stack

    try:
        options = StackOptions(scenario=args.scenario, out_dir=args.out, seed=args.seed, compute=args.compute,
                               speed=args.speed, duration_s=args.duration_s, host=args.host, port=args.port,
                               keys_dir=args.keys, insecure=args.insecure, ready_file=args.ready_file,
                               assistant_model=args.assistant_model, train=args.train, dialogues=args.dialogues)
        run_stack(options)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"sunlit run: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_ground(args: argparse.Namespace) -> int:
    from tools.ground_archive import serve_ground_archive

    setup = None
    if not args.insecure:
        if args.keys is None:
            print("sunlit ground: give --keys DIR (the stack's key folder) or --insecure", file=sys.stderr)
            return 2
        from tools.keys import KeyFileError, load_client_keys, load_public_key

        try:
            client = load_client_keys(args.keys / f"{args.client}.key_secret")
            server_public = load_public_key(args.keys / "server.key")
        except KeyFileError as exc:
            print(f"sunlit ground: {exc}", file=sys.stderr)
            return 2

        def setup(socket) -> None:
            import zmq

            socket.setsockopt(zmq.CURVE_PUBLICKEY, client.public)
            socket.setsockopt(zmq.CURVE_SECRETKEY, client.secret)
            socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)

    print(f"sunlit ground: archiving {args.endpoint} into {args.archive} (Ctrl-C to stop)", file=sys.stderr)
    stats = serve_ground_archive(args.endpoint, args.archive, socket_setup=setup)
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


def cmd_dict(args: argparse.Namespace) -> int:
    from flight.dictionary import DictionaryError, default_dictionary, load_dictionary
    from tools.dictionary_export import to_json_text, to_xtce

    try:
        dictionary = load_dictionary(args.dictionary) if args.dictionary else default_dictionary()
    except DictionaryError as exc:
        print(f"sunlit dict: {exc}", file=sys.stderr)
        return 2
    if args.json:
        text = to_json_text(dictionary)
    elif args.xtce:
        text = to_xtce(dictionary)
    elif args.name:
        command = dictionary.commands.get(args.name)
        channel = dictionary.channel(args.name)
        if command is not None:
            text = command.help_text() + "\n"
        elif channel is not None:
            limits = ", ".join(f"{k}={getattr(channel, k):g}" for k in ("red_low", "yellow_low", "yellow_high", "red_high")
                               if getattr(channel, k) is not None)
            text = (f"{channel.full_name} ({channel.type}{', ' + channel.units if channel.units else ''}) on {channel.topic}"
                    f"\n  {channel.description}" + (f"\n  limits: {limits}" if limits else "") + "\n")
        else:
            print(f"sunlit dict: no command or channel {args.name!r}", file=sys.stderr)
            return 2
    else:
        lines = []
        for name, comp in sorted(dictionary.components.items()):
            lines.append(f"{name}: {comp.description}")
            for command in sorted(dictionary.commands_of(name).values(), key=lambda c: c.opcode):
                lines.append(f"  cmd  {command.usage()}{'   [hazardous]' if command.hazardous else ''}")
            for channel in (c for c in dictionary.channels.values() if c.component == name):
                lines.append(f"  tlm  {channel.full_name} [{channel.units or channel.type}]")
            for event in (e for e in dictionary.events.values() if e.component == name):
                lines.append(f"  evt  {event.full_name} {event.severity}")
        text = "\n".join(lines) + "\n"
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _add_training_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", choices=("text", "assistant"), default=None,
                        help="what the training job trains (default: the scenario's [training] task, text): "
                             "the character-level GPT from its seed, or the assistant's GPT fine-tuned on "
                             "telemetry dialogues (with --compute real the assistant then speaks with its "
                             "newest verified checkpoint)")
    parser.add_argument("--dialogues", type=Path, default=None, metavar="FILE",
                        help="dialogue corpus for --train assistant (default: the scenario's, else one "
                             "written from the simulator into the run folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sunlit", description="Onboard runtime and SIL simulator for AI payloads in orbit")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("sim", help="simulate orbits with the whole flight stack in the loop",
                         description="Run a scenario in software-in-the-loop: world, HAL services and flight "
                                     "software in lockstep. Writes summary.json, telemetry.db and report.png.")
    sim.add_argument("--scenario", default="starcloud1",
                     help=f"preset name ({', '.join(preset_names())}) or path to a TOML file (default: starcloud1)")
    length = sim.add_mutually_exclusive_group()
    length.add_argument("--orbits", type=float, default=None, help="number of orbits to simulate (default: 1)")
    length.add_argument("--duration-s", type=float, default=None, help="simulated seconds")
    sim.add_argument("--seed", type=int, default=0, help="seed for model init, data order and sensor noise")
    sim.add_argument("--compute", choices=("real", "modeled"), default="real",
                     help="real: training steps run on this host; modeled: accounted by the GPU model only")
    sim.add_argument("--out", type=Path, default=None, help="output folder (default: a new folder under runs/)")
    sim.add_argument("--sequence", type=Path, action="append", default=[], metavar="FILE",
                     help="a stored command sequence, checked, then loaded and started at the epoch (repeatable)")
    sim.add_argument("--assistant-model", default="auto", metavar="{auto,none,onboard,PATH}",
                     help=ASSISTANT_MODEL_HELP)
    _add_training_task_arguments(sim)
    sim.add_argument("--no-report", action="store_true", help="skip report.png")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    sim.set_defaults(func=cmd_sim)

    from tools.bench import BENCHMARKS

    bench = sub.add_parser("bench", help="measure speed against baselines taken in the same run",
                           description="Benchmarks, each with its baseline measured in the same run: SIL day "
                                       "vs Basilisk, the floor of its messages over ZeroMQ into SQLite alone, bus "
                                       "vs raw pyzmq, command round trip over tcp, training "
                                       "under the scheduler vs a bare loop, energy vs the oracle, the "
                                       "assistant's model: fact accuracy vs its templates, latency, "
                                       "fine-tuning throughput.")
    bench.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    bench.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    bench.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                       help=f"run only these ({', '.join(BENCHMARKS)})")
    bench.add_argument("--basilisk-python", default=None, metavar="PATH",
                       help="interpreter with bsk==2.12.1 installed (default: $SUNLIT_BASILISK_PYTHON, "
                            "or this one if it can import Basilisk)")
    bench.set_defaults(func=cmd_bench)

    policies = sub.add_parser("policies", help="compare power policies with the oracle over a day",
                              description="Fly the power manager and two baselines (always on until the floor; "
                                          "sunlight only at a fixed cap) over the same day, rounded up to whole "
                                          "orbits, and compare their payload energy with the oracle's (an LP "
                                          "with perfect knowledge of the same sunlight and battery).")
    policies.add_argument("--scenario", nargs="+", default=["starcloud1", "dawn-dusk-650"],
                          help="preset names or TOML paths (default: both presets)")
    policies.add_argument("--duration-s", type=float, default=86400.0,
                          help="at least this long, rounded up to whole orbits (default: a day)")
    policies.add_argument("--seed", type=int, default=0)
    policies.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    policies.set_defaults(func=cmd_policies)
    run = sub.add_parser("run", help="keep the whole stack up, paced, with its command and telemetry endpoints open",
                         description="Run the SIL stack (world, HAL services, flight software) paced at real time or "
                                     "a chosen speed-up, with the ground link open: a CURVE-secured command endpoint "
                                     "(port) and telemetry endpoint (port + 1). Prints the endpoints and the console "
                                     "command. Ctrl-C (or SIGTERM) stops it cleanly and writes summary.json.")
    run.add_argument("--scenario", default="starcloud1",
                     help=f"preset name ({', '.join(preset_names())}) or path to a TOML file (default: starcloud1)")
    run.add_argument("--speed", type=_speed, default=1.0,
                     help="simulated seconds per wall second, or 'max' (default: 1, real time)")
    run.add_argument("--duration-s", type=float, default=None, help="stop after this much simulated time (default: never)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--compute", choices=("real", "modeled"), default="modeled",
                     help="modeled (default): the GPU model accounts the work; real: training runs on this host")
    run.add_argument("--assistant-model", default="auto", metavar="{auto,none,onboard,PATH}",
                     help=ASSISTANT_MODEL_HELP + " (with the default modeled compute, auto means templates: "
                          "give onboard for the model's words)")
    _add_training_task_arguments(run)
    run.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    run.add_argument("--port", type=int, default=5555, help="command port; telemetry on port + 1 (0: any free ports)")
    run.add_argument("--keys", type=Path, default=None, metavar="DIR",
                     help="key folder from `sunlit keys init` (default: a fresh one in the output folder)")
    run.add_argument("--insecure", action="store_true",
                     help="no CURVE: every client may command (local benches only)")
    run.add_argument("--out", type=Path, default=None, help="output folder (default: a new folder under runs/)")
    run.add_argument("--ready-file", type=Path, default=None, metavar="PATH",
                     help="write the endpoints as JSON here once serving (for scripts and test fixtures)")
    run.set_defaults(func=cmd_run)

    from tools.sequence_tool import add_parser as add_sequence_parser

    add_sequence_parser(sub)  # sunlit seq check FILE... | sunlit seq compile FILE -o OUT

    from tools.console import run_console

    # The console parses its own arguments: a script name may follow options there.
    console = sub.add_parser("console", help="command a running stack: interactive prompt, -c lines or scripts",
                             add_help=False, prefix_chars="\0",
                             usage="sunlit console ENDPOINT [SCRIPT ...] [options]   (sunlit console --help)")
    console.add_argument("argv", nargs=argparse.REMAINDER)
    console.set_defaults(func=lambda args: run_console(args.argv))

    from tools.prepare_data import add_parser as add_prepare_parser

    add_prepare_parser(sub)  # sunlit prepare TEXT_FILE --out DIR [--val-fraction F]

    from tools.ask import add_parser as add_ask_parser

    add_ask_parser(sub)  # sunlit ask QUESTION [--scenario S --at UTC | --endpoint EP --keys DIR]

    from tools.keys import add_parser as add_keys_parser

    add_keys_parser(sub)  # sunlit keys init DIR | sunlit keys add DIR NAME --role ROLE

    ground = sub.add_parser("ground", help="archive a stack's store-and-forward downlink and acknowledge it",
                            description="Connect to a stack's downlink endpoint, archive every frame that comes "
                                        "down in ground passes in SQLite (one copy per store and frame id), and "
                                        "acknowledge what is committed, so the stack may delete it. Runs until "
                                        "Ctrl-C; a restart resumes the same archive.")
    ground.add_argument("endpoint", help="the stack's downlink endpoint (sunlit run prints it)")
    ground.add_argument("--archive", type=Path, required=True, metavar="PATH", help="SQLite archive (created if absent)")
    ground.add_argument("--keys", type=Path, default=None, metavar="DIR", help="the stack's key folder")
    ground.add_argument("--client", default="operator", help="client key to use from --keys (default: operator)")
    ground.add_argument("--insecure", action="store_true", help="no CURVE (a stack run with --insecure)")
    ground.set_defaults(func=cmd_ground)

    dictionary = sub.add_parser("dict", help="the command, telemetry and event dictionary (list, JSON, XTCE)",
                                description="Print the dictionary: every command (arguments, ranges, hazardous flag), "
                                            "telemetry channel (units, limits) and event (severity). With a NAME, "
                                            "the help of one command or channel.")
    dictionary.add_argument("name", nargs="?", help="a command (eps.SET_SWITCH) or channel (eps.battery_soc)")
    form = dictionary.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="export as JSON")
    form.add_argument("--xtce", action="store_true", help="export as XTCE 1.2 XML")
    dictionary.add_argument("-o", "--output", type=Path, default=None, help="write to this file")
    dictionary.add_argument("--dictionary", type=Path, default=None, metavar="DIR",
                            help="a dictionary folder (default: the packaged one)")
    dictionary.set_defaults(func=cmd_dict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "orbits", None) is not None and args.orbits <= 0:
        print("sunlit sim: --orbits must be > 0", file=sys.stderr)
        return 2
    if getattr(args, "duration_s", None) is not None and args.duration_s <= 0:
        print("sunlit sim: --duration-s must be > 0", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
