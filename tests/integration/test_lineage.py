"""OpenLineage events of one date through the file transport: START and COMPLETE of each task with its
nominal time, its input and output files, the champion decision as a facet of IrisPipeline's run; FAIL for
a rejected input; and an unreachable lineage server that fails no task."""
import datetime as dt
import json

from conftest import free_port, write_input

DAY = dt.date(2026, 5, 1)


def events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_job(found, kind):
    return {e["job"]["name"]: e for e in found if e["eventType"] == kind}


def test_each_task_reports_its_inputs_and_outputs_for_one_date(irisflow_config, cli, tmp_path):
    data, log = tmp_path / "data", tmp_path / "lineage.jsonl"
    source = write_input(data, DAY)
    irisflow_config.set("iris", source=f"{data}/{{date}}.csv", models='["knn"]')
    irisflow_config.set("lineage", transport="file", file=log)
    assert cli("run", "--date", DAY.isoformat()).returncode == 0
    found = events(log)
    started, completed = by_job(found, "START"), by_job(found, "COMPLETE")
    families = {"Extract", "Validate", "Drift", "Split", "TrainModel", "IrisPipeline"}
    assert set(started) == set(completed) == families
    part = irisflow_config.output_root / DAY.isoformat()
    split = next((part / "split").iterdir())
    model = next((part / "models").iterdir())
    expected = {  # job: (inputs, outputs)
        "Extract": ({source}, {part / "input.csv"}),
        "Validate": ({part / "input.csv"}, {part / "validated.csv", part / "validation.json"}),
        "Drift": ({part / "validated.csv", part / "validation.json"}, {part / "drift.json"}),
        "Split": ({part / "validated.csv", part / "validation.json"}, {split / "train.csv", split / "test.csv"}),
        "TrainModel": ({split / "train.csv", split / "test.csv"}, {model / "model.joblib", model / "metrics.json"}),
        "IrisPipeline": ({part / "drift.json", model / "model.joblib", model / "metrics.json"}, {part / "summary.json"}),
    }
    for job, (inputs, outputs) in expected.items():
        for event in (started[job], completed[job]):
            assert event["job"]["namespace"] == "irisflow"
            assert {(d["namespace"], d["name"]) for d in event["inputs"]} == {("file", str(p)) for p in inputs}, job
            assert {(d["namespace"], d["name"]) for d in event["outputs"]} == {("file", str(p)) for p in outputs}, job
            assert event["run"]["facets"]["nominalTime"]["nominalStartTime"] == "2026-05-01T00:00:00Z"
        assert started[job]["run"]["runId"] == completed[job]["run"]["runId"]
    decision = [e for e in found if e["eventType"] == "OTHER"]
    assert len(decision) == 1 and decision[0]["run"]["runId"] == completed["IrisPipeline"]["run"]["runId"]
    facet = decision[0]["run"]["facets"]["champion"]
    assert facet["decision"] == "promoted" and facet["champion"]["date"] == DAY.isoformat()


def test_a_rejected_input_is_a_fail_event_and_a_dead_server_fails_no_task(irisflow_config, cli, tmp_path):
    data, log = tmp_path / "data", tmp_path / "lineage.jsonl"
    write_input(data, DAY, bad=True)
    irisflow_config.set("iris", source=f"{data}/{{date}}.csv", models='["knn"]')
    irisflow_config.set("lineage", transport="file", file=log)
    assert cli("run", "--date", DAY.isoformat()).returncode == 1
    failed = by_job(events(log), "FAIL")
    assert set(failed) == {"Validate"}
    assert "dandelion" in failed["Validate"]["run"]["facets"]["errorMessage"]["message"]

    write_input(data, DAY)
    irisflow_config.set("lineage", transport="http", url=f"http://127.0.0.1:{free_port()}", timeout=1)
    done = cli("run", "--date", DAY.isoformat())
    assert done.returncode == 0, done.stderr
    assert (irisflow_config.output_root / "champion.json").exists()
