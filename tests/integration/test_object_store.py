"""What the object-storage backend (#23, `output_root = s3://bucket/prefix`) relies on an S3 store for, checked
on a real one (SeaweedFS, the `seaweedfs` fixture) through boto3 and through Luigi's own S3 client."""
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from luigi.contrib.s3 import S3Client, S3Target


@pytest.fixture
def s3(seaweedfs):
    """A boto3 S3 client of the session's SeaweedFS."""
    return seaweedfs.client()


def refusal(call, **request):
    """(error code, HTTP status) of the server's refusal of `call(**request)`; fails if it was done."""
    with pytest.raises(ClientError) as refused:
        call(**request)
    return refused.value.response["Error"]["Code"], refused.value.response["ResponseMetadata"]["HTTPStatusCode"]


def body(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def race(clients, attempt):
    """Call attempt(client, i) for each client at once, one thread each; "ok" or the error code of each."""
    start = threading.Barrier(len(clients))

    def run(i, client):
        start.wait()
        try:
            attempt(client, i)
        except ClientError as error:
            return error.response["Error"]["Code"]
        return "ok"

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(run, range(len(clients)), clients))


def test_put_then_get_returns_the_bytes(s3, s3_bucket):
    data = bytes(range(256)) * 40
    etag = s3.put_object(Bucket=s3_bucket, Key="runs/2024-01-01/model.joblib", Body=data)["ETag"]

    assert body(s3, s3_bucket, "runs/2024-01-01/model.joblib") == data
    head = s3.head_object(Bucket=s3_bucket, Key="runs/2024-01-01/model.joblib")
    assert (head["ContentLength"], head["ETag"]) == (len(data), etag)


def test_a_prefix_lists_its_keys_with_their_sizes_page_by_page(s3, s3_bucket):
    # A listing comes in pages: 1000 keys unless MaxKeys asks for fewer (AWS never gives more, SeaweedFS does
    # if asked), the rest behind a continuation token, which boto3's paginator follows. Pages of 10 show the
    # paging without writing 1000 keys.
    wanted = {f"runs/2024-01-{day:02d}/part-{part}.json": day * 10 + part for day in range(1, 6) for part in range(5)}
    for key, size in {**wanted, "runs-old/x.json": 1, "other/y.json": 2}.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"x" * size)

    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="runs/",
                                                               PaginationConfig={"PageSize": 10}))

    assert [page["KeyCount"] for page in pages] == [10, 10, 5]
    assert [page["IsTruncated"] for page in pages] == [True, True, False]
    listed = [(item["Key"], item["Size"]) for page in pages for item in page["Contents"]]
    assert listed == sorted(wanted.items())  # in key order, each key once
    days = s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/", Delimiter="/")["CommonPrefixes"]
    assert [day["Prefix"] for day in days] == [f"runs/2024-01-{day:02d}/" for day in range(1, 6)]


def test_an_overwrite_replaces_the_whole_object(s3, s3_bucket):
    s3.put_object(Bucket=s3_bucket, Key="report.json", Body=b'{"rows": 150, "accuracy": 0.97}')
    s3.put_object(Bucket=s3_bucket, Key="report.json", Body=b'{"rows": 3}')

    assert body(s3, s3_bucket, "report.json") == b'{"rows": 3}'
    assert s3.head_object(Bucket=s3_bucket, Key="report.json")["ContentLength"] == len(b'{"rows": 3}')


def test_if_none_match_writes_a_key_only_once(s3, s3_bucket):
    s3.put_object(Bucket=s3_bucket, Key="_SUCCESS", Body=b"first", IfNoneMatch="*")

    assert refusal(s3.put_object, Bucket=s3_bucket, Key="_SUCCESS", Body=b"second",
                   IfNoneMatch="*") == ("PreconditionFailed", 412)
    assert body(s3, s3_bucket, "_SUCCESS") == b"first"


def test_of_writers_racing_with_if_none_match_exactly_one_wins(seaweedfs, s3, s3_bucket):
    clients = [seaweedfs.client() for _ in range(3)]

    outcomes = race(clients, lambda client, i: client.put_object(Bucket=s3_bucket, Key="_SUCCESS",
                                                                   Body=f"writer {i}".encode(), IfNoneMatch="*"))

    assert sorted(outcomes) == ["PreconditionFailed"] * 2 + ["ok"]
    assert body(s3, s3_bucket, "_SUCCESS") == f"writer {outcomes.index('ok')}".encode()


def test_if_match_overwrites_only_the_version_that_was_read(seaweedfs, s3, s3_bucket):
    read = s3.put_object(Bucket=s3_bucket, Key="manifest.json", Body=b"v1")["ETag"]
    s3.put_object(Bucket=s3_bucket, Key="manifest.json", Body=b"v2", IfMatch=read)

    assert refusal(s3.put_object, Bucket=s3_bucket, Key="manifest.json", Body=b"v3 from a stale read",
                   IfMatch=read) == ("PreconditionFailed", 412)
    assert body(s3, s3_bucket, "manifest.json") == b"v2"
    # A key that is not there matches no ETag: refused (SeaweedFS says 412; AWS says 404 NoSuchKey), not written.
    assert refusal(s3.put_object, Bucket=s3_bucket, Key="absent.json", Body=b"x",
                   IfMatch=read)[0] in ("PreconditionFailed", "NoSuchKey")
    assert refusal(s3.head_object, Bucket=s3_bucket, Key="absent.json") == ("404", 404)

    current = s3.head_object(Bucket=s3_bucket, Key="manifest.json")["ETag"]
    outcomes = race([seaweedfs.client() for _ in range(3)],
                    lambda client, i: client.put_object(Bucket=s3_bucket, Key="manifest.json",
                                                        Body=f"writer {i}".encode(), IfMatch=current))
    assert sorted(outcomes) == ["PreconditionFailed"] * 2 + ["ok"]
    assert body(s3, s3_bucket, "manifest.json") == f"writer {outcomes.index('ok')}".encode()


def test_delete_object_removes_the_key_and_if_match_guards_it(s3, s3_bucket):
    s3.put_object(Bucket=s3_bucket, Key="a.json", Body=b"a")
    s3.delete_object(Bucket=s3_bucket, Key="a.json")
    assert refusal(s3.get_object, Bucket=s3_bucket, Key="a.json") == ("NoSuchKey", 404)
    s3.delete_object(Bucket=s3_bucket, Key="a.json")  # deleting what is not there is no error

    etag = s3.put_object(Bucket=s3_bucket, Key="b.json", Body=b"b")["ETag"]
    s3.put_object(Bucket=s3_bucket, Key="b.json", Body=b"b, rewritten")
    assert refusal(s3.delete_object, Bucket=s3_bucket, Key="b.json", IfMatch=etag) == ("PreconditionFailed", 412)
    assert body(s3, s3_bucket, "b.json") == b"b, rewritten"
    s3.delete_object(Bucket=s3_bucket, Key="b.json", IfMatch=s3.head_object(Bucket=s3_bucket, Key="b.json")["ETag"])
    assert refusal(s3.head_object, Bucket=s3_bucket, Key="b.json") == ("404", 404)


def test_requests_without_the_right_secret_are_refused(seaweedfs, s3, s3_bucket):
    wrong_secret = seaweedfs.client(secret_key="not-the-secret")
    assert refusal(wrong_secret.put_object, Bucket=s3_bucket, Key="x", Body=b"x") == ("SignatureDoesNotMatch", 403)
    assert refusal(wrong_secret.list_objects_v2, Bucket=s3_bucket) == ("SignatureDoesNotMatch", 403)
    unknown_key = seaweedfs.client(access_key="someone-else")
    assert refusal(unknown_key.put_object, Bucket=s3_bucket, Key="x", Body=b"x") == ("InvalidAccessKeyId", 403)
    unsigned = boto3.client("s3", endpoint_url=seaweedfs.endpoint_url, region_name=seaweedfs.REGION,
                            config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))
    assert refusal(unsigned.put_object, Bucket=s3_bucket, Key="x", Body=b"x") == ("AccessDenied", 403)

    assert s3.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_luigis_s3_client_takes_endpoint_and_region_from_luigi_cfg(irisflow_config, monkeypatch, seaweedfs, s3,
                                                                   s3_bucket):
    # Luigi hands each key of [s3] to boto3.resource("s3", ...) as a keyword argument; the credentials come
    # from the environment, as in the deployed service ([s3] never holds them).
    irisflow_config.set("s3", endpoint_url=seaweedfs.endpoint_url, region_name=seaweedfs.REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.SECRET_KEY)
    client = S3Client()
    report = S3Target(f"s3://{s3_bucket}/runs/2024-01-01/report.json", client=client)

    assert not report.exists()
    with report.open("w") as out:
        out.write('{"accuracy": 0.97}')
    with report.open("r") as back:
        assert back.read() == '{"accuracy": 0.97}'
    assert body(s3, s3_bucket, "runs/2024-01-01/report.json") == b'{"accuracy": 0.97}'
    assert client.exists(f"s3://{s3_bucket}/runs/2024-01-01/report.json")
    assert not client.exists(f"s3://{s3_bucket}/runs/2024-01-02/report.json")
    assert list(client.listdir(f"s3://{s3_bucket}/runs/")) == [f"s3://{s3_bucket}/runs/2024-01-01/report.json"]
