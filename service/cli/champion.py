"""`irisflow champion {show,history,promote,replay}` and `irisflow predict`: which model is live, why, and
its predictions. The rule and the files are `service.champion`'s."""

import argparse
import json
import sys

from tasks import partition

from ..config import ConfigError, checked_settings
from . import output
from .exits import EXIT_OK, EXIT_USAGE
from .inspection import _check_readable_file

PREDICTION = "predicted_species"


def _root():
    return partition.location(checked_settings()[0].output_root)


def _public(record):
    """A champion record as commands show it (its settings are in the date's metrics.json)."""
    return None if record is None else {k: v for k, v in record.items() if k != "settings"}


def describe(entry) -> str:
    """'2026-01-03  promoted  knn (0.978 vs 0.956 on 45 rows): why' — one history line for people."""
    challenger = entry.get("challenger") or {}
    scores = entry.get("scores") or {}
    shown = f"{challenger.get('model')}"
    if scores.get("champion") is not None:
        shown += f" ({scores['challenger']:.3f} vs {scores['champion']:.3f} on {scores.get('rows')} rows)"
    elif challenger.get("accuracy") is not None:
        shown += f" ({challenger['accuracy']:.3f})"
    gate = f" [{entry['gate']}]" if entry.get("gate") else ""
    return f"{entry['date']}  {entry['decision']:<10}{gate} {shown}: {entry.get('reason', '')}"


def cmd_show(args: argparse.Namespace) -> int:
    from ..champion import current

    root = _root()
    ledger = current(root)
    champion = ledger.champion
    if args.json:
        last = ledger.entries[-1] if ledger.entries else None
        output.tell(json.dumps({"champion": _public(champion), "last_decision": last}, indent=2, sort_keys=True))
        return EXIT_OK
    if champion is None:
        output.tell(
            f"no champion yet under {root}"
            + (f"; last decision: {describe(ledger.entries[-1])}" if ledger.entries else "")
        )
        return EXIT_OK
    output.tell(
        f"champion: {champion['model']} of {champion['date']} (settings {champion['digest']}), "
        f"accuracy {champion['accuracy']:.3f}, since {champion.get('since', '?')}\n"
        f"model file: {root / champion['model_file']} (sha256 {champion['sha256']})"
    )
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from ..champion import current

    root = _root()
    entries = current(root).entries
    if args.json:
        output.tell(json.dumps(entries, indent=2, sort_keys=True))
    else:
        output.tell("\n".join(describe(e) for e in entries) if entries else f"no champion decisions under {root}")
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    from ..champion import NoSuchModel, override

    if not args.reason.strip():
        raise ConfigError("--reason must say why the champion is chosen by hand")
    try:
        entry = override(_root(), args.date, args.model, args.reason.strip())
    except NoSuchModel as exc:
        raise ConfigError(str(exc)) from None
    output.tell(describe(entry))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from ..champion import replay

    decided = replay(_root(), args.start)
    output.tell("\n".join(describe(e) for e in decided) if decided else f"no complete date from {args.start} on")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict the species of every row of --input with the champion; a missing or extra column, or no
    champion yet, is a one-line error (exit 2)."""
    from tasks.reading import read_source
    from tasks.schema import InputRejected, check_features

    from ..champion import current, load_model

    settings, _ = checked_settings()
    root = partition.location(settings.output_root)
    _check_readable_file(args.input)
    champion = current(root).champion
    if champion is None:
        output.error(f"no champion yet under {root}: run the pipeline for a date that passes the [champion] gates")
        return EXIT_USAGE
    try:
        frame = check_features(read_source(args.input, settings.max_source_bytes), source=args.input)
    except InputRejected as exc:
        output.error(str(exc).replace("\n", "; "))
        return EXIT_USAGE
    estimator = load_model(root, champion)
    frame[PREDICTION] = estimator.predict(frame[list(champion["settings"]["features"])])
    if args.out:
        from tasks.partition import write_durably

        write_durably(args.out, frame.to_csv(index=False))
    else:
        frame.to_csv(sys.stdout, index=False)
    return EXIT_OK
