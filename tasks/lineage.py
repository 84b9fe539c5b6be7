"""OpenLineage run events of every task run: START, COMPLETE, FAIL, sent through `openlineage-python`.

The job is the task family (in `[lineage] namespace`), the run's nominal time is the task's date (midnight
UTC to the next midnight), the inputs and outputs are the files it read and wrote (namespace `file`, the
absolute path as name). The handlers hang on Luigi's task events (START, SUCCESS, FAILURE), so every entry
point that runs the tasks — irisflow, a central scheduler's workers, the stock `luigi` command — reports.

Lineage is an observer: `[lineage] transport = none` (the default) sends nothing and imports nothing, and
whatever goes wrong while sending (a server down, a full disk) is logged once as a warning and never fails
a task. After a date is decided, its champion decision is sent as a `champion` run facet of the run of
IrisPipeline that built the date (an OTHER event with that run's id, kept under `.lineage/` of the root).
"""

import datetime as dt
import functools
import json
import logging
import os
import urllib.parse
import uuid
from typing import Any

import luigi
from luigi.task import flatten

from . import config

LOG = logging.getLogger("irisflow.lineage")
TRANSPORTS = ("none", "file", "http")
MAX_ERROR_CHARS = 4000  # a validation report names every failing check; the event stays small
RUN_IDS = ".lineage"  # {output_root}/.lineage/{date}.run: the id of the date's last IrisPipeline run
FACET_SCHEMA = "https://github.com/irisflow/irisflow/blob/main/docs/lineage.md#championdecisionrunfacet"


class lineage(luigi.Config):  # noqa: N801 - the class name is the luigi.cfg section name
    transport = luigi.Parameter(
        default="none", description="none (off), file (JSON lines) or http (a Marquez-like server)."
    )
    file = luigi.Parameter(
        default="lineage.jsonl", description="file transport: the JSON-lines file events are appended to."
    )
    url = luigi.OptionalParameter(
        default=None, description="http transport: the server's base URL, e.g. http://127.0.0.1:5000."
    )
    endpoint = luigi.Parameter(default="api/v1/lineage", description="http transport: the path events are POSTed to.")
    api_key = luigi.OptionalParameter(
        default=None, description="http transport: a bearer token, if the server wants one."
    )
    timeout = luigi.FloatParameter(default=5.0, description="http transport: seconds one event may take to send.")
    namespace = luigi.Parameter(default="irisflow", description="The namespace of the jobs (task families).")


class LineageMisconfigured(ValueError):
    """A `[lineage]` value that cannot work; the message names the key (never the api_key's value)."""


def lineage_settings() -> lineage:
    """The `[lineage]` section, checked: LineageMisconfigured names the first bad key."""
    # Read once per reading of the configuration: every task event asks, and a luigi.Config resolves each
    # of its keys again on every instantiation. Tied to the very `[iris]` object `tasks.config.settings`
    # holds (not an equal one), so clearing that cache (each build does, at its start) reads this again.
    current = config.settings()
    if _read[0] is not current:
        _read[:] = [current, _checked()]
    return _read[1]


_read: list[Any] = [None, None]  # [the `[iris]` settings object, the `[lineage]` section read with it]


def _checked() -> lineage:
    settings = lineage()
    if settings.transport not in TRANSPORTS:
        raise LineageMisconfigured(
            f"[lineage] transport must be one of {', '.join(TRANSPORTS)}, not {settings.transport!r}"
        )
    if settings.transport == "file":
        folder = os.path.dirname(os.path.abspath(settings.file))
        if not os.path.isdir(folder):
            raise LineageMisconfigured(f"[lineage] file {settings.file}: no such directory {folder}")
    if settings.transport == "http":
        url = urllib.parse.urlsplit(settings.url or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise LineageMisconfigured("[lineage] url must be an http:// or https:// URL for transport = http")
    if not settings.timeout > 0:
        raise LineageMisconfigured("[lineage] timeout must be positive")
    return settings


def _transport_config(settings: lineage) -> dict[str, Any]:
    if settings.transport == "file":
        return {"type": "file", "log_file_path": os.path.abspath(settings.file), "append": True}
    config: dict[str, Any] = {
        "type": "http",
        "url": settings.url,
        "endpoint": settings.endpoint,
        "timeout": settings.timeout,
        # one retry: a task waits for its events, and lineage is never worth holding the pipeline up
        "retry": {"total": 1, "backoff_factor": 0.3, "status_forcelist": [500, 502, 503, 504]},
    }
    if settings.api_key:
        config["auth"] = {"type": "api_key", "apiKey": settings.api_key}
    return config


@functools.lru_cache(maxsize=4)
def _client(config_text: str):
    from openlineage.client import OpenLineageClient

    return OpenLineageClient(config={"transport": json.loads(config_text)})


def _send(event) -> None:
    settings = lineage_settings()
    _client(json.dumps(_transport_config(settings), sort_keys=True)).emit(event)


def _enabled() -> bool:
    try:
        return lineage_settings().transport != "none"
    except Exception as exc:  # a bad [lineage] is the CLI's one-line error; a task just runs on
        LOG.warning("lineage not sent: %s", exc)
        return False


def _datasets(targets, kind):
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    cls = InputDataset if kind == "input" else OutputDataset
    paths = sorted({os.path.abspath(t.path) for t in flatten(targets) if hasattr(t, "path")})
    return [cls(namespace="file", name=path) for path in paths]


def _nominal(date: dt.date):
    from openlineage.client.facet_v2 import nominal_time_run

    start = dt.datetime.combine(date, dt.time(), dt.UTC)
    return nominal_time_run.NominalTimeRunFacet(
        nominalStartTime=start.isoformat().replace("+00:00", "Z"),
        nominalEndTime=(start + dt.timedelta(days=1)).isoformat().replace("+00:00", "Z"),
    )


def _event(state, run_id, job_name, date, inputs=(), outputs=(), facets=None):
    from openlineage.client.event_v2 import Job, Run, RunEvent

    return RunEvent(
        eventType=state,
        eventTime=dt.datetime.now(dt.UTC).isoformat(),
        run=Run(runId=run_id, facets={"nominalTime": _nominal(date), **(facets or {})}),
        job=Job(namespace=lineage_settings().namespace, name=job_name),
        inputs=list(inputs),
        outputs=list(outputs),
    )


def _run_id_file(date: dt.date):
    from .config import settings
    from .partition import location

    return location(settings().output_root) / RUN_IDS / f"{date.isoformat()}.run"


def _task_event(task, kind: str, error: BaseException | None = None) -> None:
    """Send the task's START, COMPLETE or FAIL event; never raises."""
    date = getattr(task, "date", None)
    if not isinstance(date, dt.date) or not _enabled():
        return
    try:
        from openlineage.client.event_v2 import RunState

        if kind == "START" or not getattr(task, "_lineage_run_id", None):
            task._lineage_run_id = str(_new_run_id())
            if task.task_family == "IrisPipeline":
                from .partition import write_durably

                write_durably(_run_id_file(date), task._lineage_run_id)
        facets = {}
        if error is not None:
            from openlineage.client.facet_v2 import error_message_run

            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(error)[:MAX_ERROR_CHARS] or type(error).__name__,
                programmingLanguage="python",
            )
        _send(
            _event(
                getattr(RunState, kind),
                task._lineage_run_id,
                task.task_family,
                date,
                _datasets(task.input(), "input"),
                _datasets(task.output(), "output"),
                facets,
            )
        )
    except Exception as exc:
        LOG.warning("%s %s: lineage event %s not sent: %s", task.task_family, date, kind, exc)


def _new_run_id():
    from openlineage.client.uuid import generate_new_uuid

    return generate_new_uuid()


@luigi.Task.event_handler(luigi.Event.START)
def _started(task):
    _task_event(task, "START")


@luigi.Task.event_handler(luigi.Event.SUCCESS)
def _succeeded(task):
    _task_event(task, "COMPLETE")


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _failed(task, exception):
    _task_event(task, "FAIL", exception)


def send_champion_decision(date: dt.date, decision: dict[str, Any]) -> None:
    """The champion decision for `date` as a `champion` facet of the run of IrisPipeline that built it
    (an OTHER event with its run id; a fresh id when that run's is not known). Never raises."""
    if not _enabled():
        return
    try:
        import attr
        from openlineage.client.event_v2 import RunState
        from openlineage.client.generated.base import RunFacet

        @attr.define
        class ChampionDecisionRunFacet(RunFacet):
            decision: str = attr.field()
            reason: str = attr.field()
            gate: str | None = attr.field(default=None)
            challenger: dict | None = attr.field(default=None)
            scores: dict | None = attr.field(default=None)
            champion: dict | None = attr.field(default=None)

            @staticmethod
            def _get_schema() -> str:
                return FACET_SCHEMA

        from .partition.durable import read_bytes

        try:
            run_id = read_bytes(_run_id_file(date), 64).decode().strip()
            uuid.UUID(run_id)
        except (OSError, ValueError):
            run_id = str(_new_run_id())
        facet = ChampionDecisionRunFacet(
            decision=decision["decision"],
            reason=decision.get("reason") or "",
            gate=decision.get("gate"),
            challenger=decision.get("challenger"),
            scores=decision.get("scores"),
            champion={k: v for k, v in (decision.get("champion") or {}).items() if k != "settings"} or None,
        )
        _send(_event(RunState.OTHER, run_id, "IrisPipeline", date, facets={"champion": facet}))
    except Exception as exc:
        LOG.warning("%s: lineage of the champion decision not sent: %s", date, exc)
