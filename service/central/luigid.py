"""`irisflow-luigid` (`python -m service.luigid`): Luigi's luigid, its task history written in batches.

The server, the scheduler, the visualiser, the history pages and the configuration are Luigi's own
(`luigi.server.run`, Luigi's `Scheduler` with one more RPC); the command line is luigid's, without `--background`
(systemd runs it in the foreground), and it listens on 127.0.0.1 unless `--address` says otherwise (Luigi's
listens on every interface). What differs is how task history reaches its database. Luigi's
`DbTaskHistory` opens a session, looks the task up and commits once for every state a task passes
through, three times per task; through SQLAlchemy's ORM that costs luigid more CPU than answering the
RPC itself, and luigid answers every RPC in one thread, so the builds wait for it. `BatchedTaskHistory`
keeps the events in memory and writes them in one transaction of a few SQL statements every
FLUSH_SECONDS, before any history page is read, and when luigid stops, into the same tables, which
Luigi's history pages read as before.
luigid also prunes its state every PRUNE_SECONDS instead of only every 60 s (fixed in luigi/server.py):
a pruning drops the workers not heard from for `worker_disconnect_delay` and fails the task each was
running, so a host lost mid-task gives its task back within that delay, not up to a minute after it.
Two more differences make each RPC cheaper: one more RPC, `batch_calls`, answers several in one request
(irisflow's workers send the task states they report with their next question), and the `[cors]`
settings are read once instead of on every request. And unless `[core] logging_conf_file` configures
logging, Tornado's access log of every RPC is left out.
"""

import argparse
import atexit
import functools
import logging
import sys

import luigi.configuration
import luigi.scheduler
import luigi.server
import tornado.ioloop
import tornado.web
from luigi.db_task_history import DbTaskHistory, TaskEvent, TaskParameter, TaskRecord
from luigi.setup_logging import DaemonLogging
from sqlalchemy import bindparam

FLUSH_SECONDS = 1.0
PRUNE_SECONDS = 1.0
LOG = logging.getLogger("luigi.server")


class BatchedTaskHistory(DbTaskHistory):
    """Luigi's database task history, with the events of a task's life written in batches.

    Runs in luigid's one thread: events are queued by the scheduler's calls and written by `flush`,
    which the server's event loop calls every FLUSH_SECONDS. A luigid killed with SIGKILL loses at most
    that much history, and never the scheduler's state.
    """

    def __init__(self):
        super().__init__()
        self._pending = []

    def _add_task_event(self, task, event):
        self._pending.append((task, event))

    def _session(self, session=None):
        """Luigi's session, after writing what is queued: a history page reads every event so far."""
        if session is None:
            self.flush()
        return super()._session(session)

    def flush(self):
        """Write every queued event in one transaction, creating each task's record on its first event."""
        pending, self._pending = self._pending, []
        if pending:
            try:
                self._write(pending)
            except Exception:  # as Luigi's scheduler treats a failed history write: luigid goes on
                LOG.warning("could not save %d task history events", len(pending), exc_info=True)

    def _write(self, pending):
        """The rows Luigi's ORM objects would make, through SQLAlchemy Core: a task's row on its first
        event (its id read back), then its parameters, every event and the hosts of tasks recorded
        before (set by their RUNNING event) in one statement each. A task keeps its new row's id only
        once the transaction is committed."""
        records, parameters, events = (table.__table__ for table in (TaskRecord, TaskParameter, TaskEvent))
        new_ids, new_parameters, hosts = {}, [], {}
        with super()._session() as session:
            connection = session.connection()
            for task, _ in pending:
                if task.record_id is None and task not in new_ids:
                    row = {"task_id": task._task.id, "name": task.task_family, "host": task.host}
                    new_ids[task] = record = connection.execute(records.insert(), row).inserted_primary_key[0]
                    new_parameters += [{"task_id": record, "name": k, "value": v} for k, v in task.parameters.items()]
                elif task.record_id is not None and task.host:
                    hosts[task.record_id] = task.host
            if new_parameters:
                connection.execute(parameters.insert(), new_parameters)
            connection.execute(
                events.insert(),
                [
                    {"task_id": new_ids.get(task, task.record_id), "event_name": event.event_name, "ts": event.ts}
                    for task, event in pending
                ],
            )
            if hosts:
                connection.execute(
                    records.update().where(records.c.id == bindparam("record")).values(host=bindparam("new_host")),
                    [{"record": record, "new_host": host} for record, host in hosts.items()],
                )
        for task, record in new_ids.items():
            task.record_id = record


class Scheduler(luigi.scheduler.Scheduler):
    """Luigi's scheduler with one more RPC, `batch_calls`: several of its RPCs in one request."""

    @luigi.scheduler.rpc_method()
    def batch_calls(self, calls):
        """Answer each [method, arguments] of `calls` in order, as if each had come alone; their answers.

        irisflow's workers send the task states they report (whose answers Luigi's worker ignores) with
        their next question (`service.scheduler_client`): one round trip instead of three per task.
        """
        answers = []
        for method, arguments in calls:
            if method == "batch_calls" or method not in luigi.scheduler.RPC_METHODS:
                raise ValueError(f"not a scheduler RPC: {method!r}")
            answers.append(getattr(self, method)(**arguments))
        return answers


@functools.cache
def _cors_settings():
    return luigi.server.cors()


class RPCHandler(luigi.server.RPCHandler):
    """Luigi's RPC handler with its `[cors]` settings read once. Luigi's reads them again for every
    request (a Config instance made from the configuration, every parameter looked up), which cost luigid
    about as much CPU as the scheduler's own work for the call; luigid's configuration never changes
    while it runs."""

    def __init__(self, *args, **kwargs):
        tornado.web.RequestHandler.__init__(self, *args, **kwargs)  # not Luigi's: it reads [cors] again
        self._cors_config = _cors_settings()


def build_parser():
    parser = argparse.ArgumentParser(prog="irisflow-luigid", description="Luigi's central scheduler for irisflow")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="listening address (default 127.0.0.1: loopback only; 0.0.0.0 or :: for every interface)",
    )
    parser.add_argument("--port", type=int, default=8082, help="listening port (default 8082)")
    parser.add_argument("--unix-socket", help="listen on this Unix socket instead")
    parser.add_argument("--state-path", help="pickled scheduler state ([scheduler] state_path)")
    parser.add_argument("--logdir", help="log to luigi-server.log in this folder instead of standard error")
    return parser


def main(argv=None):
    """Run luigid until SIGTERM or SIGINT (then its state is saved and the history written)."""
    options = build_parser().parse_args(argv)
    options.background = False  # DaemonLogging reads it
    if options.state_path:
        luigi.configuration.get_config().set("scheduler", "state_path", options.state_path)
    DaemonLogging.setup(options)
    if luigi.configuration.get_config().get("core", "logging_conf_file", None) is None:
        # Tornado logs every request at INFO: some thirty lines per date built, in the journal. Requests
        # answered with an error are still logged (as warnings and errors).
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    luigi.server.RPCHandler = RPCHandler  # luigi.server.app() builds its routes from this name
    history = BatchedTaskHistory() if luigi.scheduler.scheduler().record_task_history else None
    scheduler = Scheduler(task_history_impl=history)
    tornado.ioloop.PeriodicCallback(scheduler.prune, PRUNE_SECONDS * 1000).start()
    if history is not None:
        atexit.register(history.flush)
        tornado.ioloop.PeriodicCallback(history.flush, FLUSH_SECONDS * 1000).start()
    luigi.server.run(
        api_port=options.port, address=options.address, unix_socket=options.unix_socket, scheduler=scheduler
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
