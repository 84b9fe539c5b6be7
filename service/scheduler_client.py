"""Luigi's RemoteScheduler over one kept-alive HTTP connection per thread.

Through luigid every task state is a synchronous RPC: a date's eleven tasks make about thirty, each of
them on the path of the build. Luigi's own fetcher goes through a `requests` session when requests is
installed (its machinery costs more CPU per call than luigid takes to answer) and otherwise through
urllib, a new connection per call; `http.client` on a kept-alive connection does the same POST for a
fraction of either, and irisflow does not need requests at all. Luigi's retries (`[core]
rpc_retry_attempts`, `rpc_retry_wait`) and its errors are unchanged: only the fetcher is replaced.
"""

import base64
import http.client
import os
import threading
import urllib.parse

import luigi.rpc

# A kept-alive connection luigid closed meanwhile (idle timeout, restart) fails on first use with one
# of these; the request is then sent once more on a new connection before Luigi's retries take over.
STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class SchedulerHTTPError(OSError):
    """luigid answered with an HTTP error status."""


class KeepAliveFetcher(luigi.rpc._FetcherInterface):  # noqa: SLF001 - Luigi's fetcher interface
    """POSTs Luigi's RPC bodies over a kept-alive HTTP(S) connection per thread (Luigi's worker pings from
    a thread of its own), made again after a fork or a lost connection."""

    raises = (OSError, http.client.HTTPException)

    def __init__(self):
        self._local = threading.local()

    def fetch(self, full_url, body, timeout):
        url = urllib.parse.urlsplit(full_url)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if url.username:
            credentials = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        path = url.path + (f"?{url.query}" if url.query else "")
        data = urllib.parse.urlencode(body).encode()
        for attempt in (1, 2):
            connection = self._connection(url, timeout)
            try:
                connection.request("POST", path, data, headers)
                response = connection.getresponse()
                text = response.read().decode("utf-8")
            except STALE_CONNECTION:
                self.close()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self.close()
                raise
            if response.status >= 400:
                raise SchedulerHTTPError(f"{response.status} {response.reason} from {url.scheme}://{url.netloc}{path}")
            return text
        raise AssertionError("unreachable")

    def _connection(self, url, timeout):
        """This thread's connection to the URL's server: made on first use, and again in a forked child
        (which must not share its parent's socket) or for another server."""
        key = (os.getpid(), url.scheme, url.hostname, url.port)
        if getattr(self._local, "key", None) != key:
            kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
            self._local.connection, self._local.key = kind(url.hostname, url.port, timeout=timeout), key
        return self._local.connection

    def close(self):
        """Close this thread's connection; the next request makes a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.key[0] == os.getpid():
            connection.close()
        self._local.connection = self._local.key = None


def remote_scheduler(url, attempts=None):
    """Luigi's RemoteScheduler for `url` with the kept-alive fetcher (Luigi's own for a Unix socket);
    `attempts` overrides `[core] rpc_retry_attempts` (1: a question that is not worth waiting for)."""
    scheduler = luigi.rpc.RemoteScheduler(url)
    if attempts is not None:
        scheduler._rpc_retry_attempts = attempts  # noqa: SLF001 - set from config in __init__, read per call
    if urllib.parse.urlsplit(url).scheme in ("http", "https"):
        scheduler._fetcher = KeepAliveFetcher()  # noqa: SLF001 - the fetcher is the transport seam
    return scheduler
