"""Configuration is checked before any work, in every entry point: a malformed luigi.cfg names its file and
line, a bad value its section, key, value and what is expected, a path setting that is empty, a URL or a
folder other software shares is refused; each is one line on stderr and exit status 2, no traceback, and
nothing is written."""

import os
import subprocess
import sys

import pytest
from conftest import REPO, free_port

from service.cli import EXIT_USAGE

DAY = "2024-03-01"


def _one_line_error(result):
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("irisflow: error: ")
    return lines[0].removeprefix("irisflow: error: ")


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("[iris]\nseed = 1\n\n[iris]\nmin_rows = 3\n", 4, "section [iris] appears a second time in the file"),
        ("[iris]\nseed = 1\nseed = 2\n", 3, "[iris] seed appears a second time in the section"),
        ("seed = 1\n[iris]\n", 1, "a key before any [section] header"),
        ("[iris]\nseed = 1\nnot a setting\n", 3, "neither a [section] header nor 'key = value'"),
    ],
)
def test_a_malformed_file_is_named_with_its_line(irisflow_config, cli, text, line, words):
    """Luigi reads LUIGI_CONFIG_PATH's file while it is imported, before any irisflow code runs."""
    irisflow_config.path.write_text(text)
    for command in (("status",), ("run", "--date", DAY)):
        assert _one_line_error(cli(*command)) == f"{irisflow_config.path} line {line}: {words}"
    assert not irisflow_config.output_root.exists()


def test_a_malformed_luigi_cfg_in_the_working_directory_is_named_too(irisflow_config, tmp_path):
    """./luigi.cfg is read at the first use of Luigi's configuration, not at its import."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "luigi.cfg").write_text("[iris]\nseed = 1\n[iris]\n")
    environment = {key: value for key, value in irisflow_config.env().items() if key != "LUIGI_CONFIG_PATH"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "status"], cwd=work, env=environment, capture_output=True, text=True,
        timeout=120,
    )
    assert _one_line_error(result) == f"{work / 'luigi.cfg'} line 3: section [iris] appears a second time in the file"


def test_an_unset_variable_names_the_file_and_line_of_the_key(irisflow_config, cli, monkeypatch):
    monkeypatch.delenv("IRISFLOW_NOT_SET", raising=False)
    irisflow_config.set("core", default_scheduler_url="http://irisflow:${IRISFLOW_NOT_SET}@127.0.0.1:1/")
    line = irisflow_config.path.read_text().splitlines().index("[core]") + 2
    assert _one_line_error(cli("status")) == (
        "luigi.cfg [core] default_scheduler_url: cannot be read: environment variable IRISFLOW_NOT_SET is not set "
        f"({irisflow_config.path} line {line})"
    )


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("iris", "min_rows", "abc", "'abc' is not a whole number"),
        ("iris", "test_size", "a third", "'a third' is not a number"),
        ("iris", "models", "knn", 'is not a JSON list such as ["a", "b"]'),
        ("service", "retry_interval", "soon", "'soon' is not a duration such as '15 minutes', '6 hours' or 'PT15M'"),
        ("quality", "fail_on_drift", "maybe", "'maybe' is not true or false"),
        ("smtp", "port", "twenty-five", "'twenty-five' is not a whole number"),
        ("email", "method", "pigeon", "'pigeon' is not one of sendgrid, ses, smtp, sns"),
    ],
)
def test_a_bad_value_names_section_key_value_and_what_is_expected(irisflow_config, cli, section, key, value, expected):
    irisflow_config.set(section, **{key: value})
    error = _one_line_error(cli("run", "--date", DAY))
    assert error.startswith(f"luigi.cfg [{section}] {key}: ")
    assert error.endswith(expected)
    assert not irisflow_config.output_root.exists()


@pytest.mark.parametrize(
    "section, key, value, words",
    [
        ("iris", "output_root", "", "is empty; give a path"),
        ("iris", "output_root", "/", "'/' is /, a folder other software shares: give irisflow a folder of its own"),
        ("iris", "output_root", "/usr/../etc", "'/usr/../etc' is /etc, a folder other software shares"),
        ("iris", "output_root", "s3://Bad_Bucket/parts", "'Bad_Bucket' is not a valid S3 bucket name"),
        ("iris", "output_root", "s3://bucket/a/../b", "the prefix has an empty, '.' or '..' component"),
        ("iris", "output_root", "gs://bucket", "is a URL: irisflow reads and writes local paths and s3://bucket/prefix"),
        ("service", "state_dir", "/var", "'/var' is /var, a folder other software shares"),
        ("service", "state_dir", "http://host/state", "is a URL: irisflow reads and writes local paths only"),
        ("quality", "reference", "https://host/reference.csv", "is a URL: irisflow reads and writes local paths only"),
        ("iris", "source", "ftp://host/{date}.csv", "is a URL: irisflow reads and writes local paths and s3://"),
    ],
)
def test_a_path_setting_must_be_a_local_folder_of_irisflow_s_own(irisflow_config, cli, section, key, value, words):
    irisflow_config.set(section, **{key: value})
    error = _one_line_error(cli("run", "--date", DAY))
    assert error.startswith(f"luigi.cfg [{section}] {key}: ") and words in error
    assert not (REPO / "s3:").exists() and not (REPO / "gs:").exists()


def test_the_input_folder_may_not_be_a_shared_one(irisflow_config, cli):
    irisflow_config.set("iris", source="/tmp/{date}.csv")
    assert _one_line_error(cli("status")) == (
        "luigi.cfg [iris] source's folder: '/tmp' is /tmp, a folder other software shares: "
        "give irisflow a folder of its own"
    )


def test_a_shared_folder_is_refused_through_a_symlink(irisflow_config, cli, tmp_path):
    link = tmp_path / "outputs"
    link.symlink_to("/usr")
    irisflow_config.set("iris", output_root=link)
    assert _one_line_error(cli("status")) == (
        f"luigi.cfg [iris] output_root: '{link}' is /usr through symlinks, a folder other software shares: "
        "give irisflow a folder of its own"
    )


def test_a_relative_output_root_is_resolved_once_and_shown_absolute(irisflow_config, tmp_path):
    """`..` is resolved against the working directory; status shows the absolute root it uses."""
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    irisflow_config.set("iris", output_root="../parts")
    result = subprocess.run(
        [sys.executable, "-m", "service", "status", "--start", DAY, "--end", DAY], cwd=work,
        env=irisflow_config.env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"output root: {tmp_path / 'deep' / 'parts'}" in result.stdout.splitlines()


def test_a_secret_key_s_value_is_never_shown(irisflow_config, cli):
    irisflow_config.set("smtp", password="hunter2-not-shown")
    irisflow_config.set("core", default_scheduler_url="http://irisflow:s3cret-not-shown@127.0.0.1:1/")
    irisflow_config.set("iris", output_root="http://irisflow:s3cret-not-shown@127.0.0.1:1/parts")
    result = cli("status")
    error = _one_line_error(result)
    assert error == (
        "luigi.cfg [iris] output_root: 'http://irisflow:***@127.0.0.1:1/parts' is a URL: "
        "irisflow reads and writes local paths and s3://bucket/prefix URLs only"
    )
    assert "not-shown" not in result.stdout + result.stderr


def test_the_daemon_and_the_worker_check_the_configuration_too(irisflow_config, cli):
    irisflow_config.set("iris", output_root="gs://bucket/parts")
    irisflow_config.set("core", default_scheduler_host="127.0.0.1", default_scheduler_port=free_port())
    for command in ("serve", "worker"):
        error = _one_line_error(cli(command, timeout=120))
        assert error.startswith("luigi.cfg [iris] output_root: 'gs://bucket/parts' is a URL"), command
    assert not os.path.exists(irisflow_config.state_dir / "daemon.lock")


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("aws_secret_access_key", "wJalr-not-shown", "credentials do not belong in luigi.cfg; set AWS_ACCESS_KEY_ID"),
        ("aws_access_key_id", "AKIA-not-shown", "credentials do not belong in luigi.cfg"),
        ("endpoint_url", "http://key:not-shown@127.0.0.1:1", "'http://key:***@127.0.0.1:1' is not an http(s)://host[:port]"),
        ("endpoint_url", "file:///etc/passwd", "is not an http(s)://host[:port] URL"),
        ("max_pool", "8", "unknown key; irisflow reads endpoint_url, region_name, verify"),
    ],
)
def test_the_object_store_s_section_holds_where_it_is_never_credentials(irisflow_config, cli, key, value, words):
    """[s3] is passed on to boto3: only where the store is; keys and secrets come from the environment."""
    irisflow_config.set("s3", **{key: value})
    result = cli("status")
    error = _one_line_error(result)
    assert error.startswith(f"luigi.cfg [s3] {key}: ") and words in error, error
    assert "not-shown" not in result.stdout + result.stderr
