"""Drives a Tarn workspace with the stock `mlflow` client (mlflow-skinny from PyPI), as users do.
Run by crates/tarn/tests/e2e/tracking.rs with MLFLOW_TRACKING_URI / MLFLOW_TRACKING_TOKEN set.
Every check is an assert; the last line printed is "ALL OK"."""
import json, math, os, tempfile, threading, time
import requests
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

c = MlflowClient()
uri = os.environ["MLFLOW_TRACKING_URI"]
headers = {"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]}


def rest(method, path, **kw):
    return requests.request(method, uri + "/api/2.0/mlflow/" + path, headers=headers, timeout=30, **kw)


def error_code(fn):
    try:
        fn()
    except MlflowException as e:
        return e.error_code
    raise AssertionError("no error")


# Experiments
assert c.get_experiment("0").name == "Default"
exp = c.create_experiment("tracking-e2e", tags={"team": "ml"})
assert c.get_experiment_by_name("tracking-e2e").experiment_id == exp
assert c.get_experiment(exp).tags == {"team": "ml"}
assert error_code(lambda: c.create_experiment("tracking-e2e")) == "RESOURCE_ALREADY_EXISTS"
assert c.get_experiment_by_name("no-such-experiment") is None
c.set_experiment_tag(exp, "stage", "dev")
c.rename_experiment(exp, "tracking-e2e-renamed")
assert c.get_experiment(exp).name == "tracking-e2e-renamed"
names = {e.name for e in c.search_experiments()}
assert {"Default", "tracking-e2e-renamed"} <= names, names
assert [e.name for e in c.search_experiments(filter_string="name LIKE 'tracking%'")] == ["tracking-e2e-renamed"]
doomed = c.create_experiment("doomed")
c.delete_experiment(doomed)
assert c.get_experiment(doomed).lifecycle_stage == "deleted"
assert "doomed" not in {e.name for e in c.search_experiments()}
assert "doomed" in {e.name for e in c.search_experiments(view_type=ViewType.DELETED_ONLY)}
c.restore_experiment(doomed)
assert c.get_experiment(doomed).lifecycle_stage == "active"

# Runs, params, metrics, tags
mlflow.set_experiment("tracking-e2e-renamed")
with mlflow.start_run(run_name="first") as run:
    rid = run.info.run_id
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"depth": 3, "model": "tree"})
    for step, acc in enumerate([0.5, 0.7, 0.9]):
        mlflow.log_metric("acc", acc, step=step)
    mlflow.log_metrics({"loss": 0.25, "weird": float("nan"), "big": float("inf")})
    mlflow.set_tags({"team": "ml", "note": "x" * 5000})
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "model.txt"), "w") as f:
        f.write("weights")
    mlflow.log_artifact(os.path.join(d, "model.txt"), artifact_path="model")
    mlflow.log_text("hello", "notes/hello.txt")
r = c.get_run(rid)
assert r.info.status == "FINISHED" and r.info.end_time >= r.info.start_time
assert r.info.run_name == "first"
assert r.data.params == {"lr": "0.01", "depth": "3", "model": "tree"}, r.data.params
assert r.data.metrics["acc"] == 0.9 and r.data.metrics["loss"] == 0.25
assert math.isnan(r.data.metrics["weird"]) and r.data.metrics["big"] == math.inf
assert r.data.tags["team"] == "ml" and len(r.data.tags["note"]) == 5000
assert [m.value for m in c.get_metric_history(rid, "acc")] == [0.5, 0.7, 0.9]
assert sorted(a.path for a in c.list_artifacts(rid)) == ["model", "notes"]
assert [a.path for a in c.list_artifacts(rid, "model")] == ["model/model.txt"]
assert open(c.download_artifacts(rid, "model/model.txt")).read() == "weights"
assert mlflow.artifacts.load_text(f"runs:/{rid}/notes/hello.txt") == "hello"

c.set_tag(rid, "temp", "1")
c.delete_tag(rid, "temp")
assert "temp" not in c.get_run(rid).data.tags
c.log_batch(rid, metrics=[Metric("m%d" % i, i, 0, 0) for i in range(50)], params=[Param("p1", "v")], tags=[RunTag("t1", "v")])
assert len(c.get_run(rid).data.metrics) == 4 + 50

# Datasets a run used
from mlflow.entities import Dataset, DatasetInput, InputTag

ds = Dataset(name="iris", digest="abc123", source_type="local", source='{"uri": "/data/iris.csv"}')
c.log_inputs(rid, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", "training")])])
inputs = c.get_run(rid).inputs.dataset_inputs
assert [(i.dataset.name, i.dataset.digest, i.tags[0].value) for i in inputs] == [("iris", "abc123", "training")], inputs

# Errors and limits, with MLflow's codes
assert error_code(lambda: c.log_param(rid, "lr", "0.5")) == "INVALID_PARAMETER_VALUE"
assert error_code(lambda: c.get_run("0" * 32)) == "RESOURCE_DOES_NOT_EXIST"
assert error_code(lambda: c.log_metric(rid, "bad/../key", 1)) == "INVALID_PARAMETER_VALUE"
resp = rest("POST", "runs/log-batch", json={"run_id": rid, "metrics": [{"key": "k", "value": 1, "timestamp": 1, "step": 0}] * 1001})
assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE", resp.text
assert "at most 1000 metrics" in resp.json()["message"], resp.text
resp = rest("POST", "runs/log-batch", json={"run_id": rid, "params": [{"key": "p%d" % i, "value": "v"} for i in range(101)]})
assert resp.status_code == 400, resp.text
resp = rest("POST", "runs/log-parameter", json={"run_id": rid, "key": "long", "value": "x" * 6001})
assert resp.status_code == 400 and "6000" in resp.json()["message"], resp.text
resp = rest("POST", "experiments/create", json={})
assert resp.status_code == 400 and "Missing value for required parameter 'name'" in resp.json()["message"], resp.text
resp = rest("GET", "runs/get", params={"run_id": rid})
assert resp.status_code == 200 and isinstance(resp.json()["run"]["info"]["start_time"], int), resp.text
assert len(c.get_run(rid).data.params) == 4, "a refused batch wrote nothing"

# Search: filter, order, pagination, lifecycle
ids = []
for i in range(12):
    run = c.create_run(exp, run_name=f"sweep-{i}", tags={"kind": "sweep" if i % 2 else "base"})
    c.log_metric(run.info.run_id, "score", i / 10)
    c.log_param(run.info.run_id, "i", str(i))
    c.set_terminated(run.info.run_id)
    ids.append(run.info.run_id)
found = c.search_runs([exp], "metrics.score >= 0.5 and tags.kind = 'sweep'", order_by=["metrics.score DESC"])
assert [x.data.metrics["score"] for x in found] == [1.1, 0.9, 0.7, 0.5], [x.data.metrics for x in found]
assert [x.info.run_name for x in c.search_runs([exp], "attributes.run_name LIKE 'sweep-1%'", order_by=["attributes.run_name ASC"])] == ["sweep-1", "sweep-10", "sweep-11"]
assert len(c.search_runs([exp], "params.i = '3'")) == 1
page1 = c.search_runs([exp], "", max_results=5)
page2 = c.search_runs([exp], "", max_results=5, page_token=page1.token)
assert len(page1) == 5 and len(page2) == 5 and not {x.info.run_id for x in page1} & {x.info.run_id for x in page2}
assert error_code(lambda: c.search_runs([exp], "metrics.score > 'high'")) == "INVALID_PARAMETER_VALUE"
c.delete_run(ids[0])
assert ids[0] not in {x.info.run_id for x in c.search_runs([exp], "", max_results=100)}
assert ids[0] in {x.info.run_id for x in c.search_runs([exp], "", run_view_type=ViewType.DELETED_ONLY)}
c.restore_run(ids[0])
assert c.get_run(ids[0]).info.lifecycle_stage == "active"

# MLflow 3 logged models: metrics measured of a model, models a run used and produced
from mlflow.entities import LoggedModelInput, LoggedModelOutput

lm = c.create_logged_model(exp)
assert lm.name.startswith("model-"), lm.name
c.log_metric(rid, "auc", 0.75, timestamp=5, step=1, model_id=lm.model_id, dataset_name="iris", dataset_digest="abc123")
got = c.get_logged_model(lm.model_id).metrics
assert [(m.key, m.value, m.run_id, m.dataset_name) for m in got] == [("auc", 0.75, rid, "iris")], got
assert [m.model_id for m in c.search_logged_models([exp], datasets=[{"dataset_name": "iris"}])] == [lm.model_id]
assert c.search_logged_models([exp], datasets=[{"dataset_name": "other"}]).to_list() == []
c.log_inputs(rid, models=[LoggedModelInput(lm.model_id)])
c.log_outputs(rid, [LoggedModelOutput(lm.model_id, 3)])
r = c.get_run(rid)
assert [m.model_id for m in r.inputs.model_inputs] == [lm.model_id]
assert [(m.model_id, m.step) for m in r.outputs.model_outputs] == [(lm.model_id, 3)]
c.set_logged_model_tags(lm.model_id, {"a": "1"})
c.delete_logged_model_tag(lm.model_id, "a")
assert error_code(lambda: c.delete_logged_model_tag(lm.model_id, "a")) == "RESOURCE_DOES_NOT_EXIST"

# The UI's calls: histories of several runs, the datasets of an experiment, uploads
ajax = uri + "/ajax-api/2.0/mlflow/"
bulk = requests.get(ajax + "metrics/get-history-bulk", headers=headers, params={"run_id": [rid], "metric_key": "acc"}).json()
assert [(m["step"], m["value"], m["run_id"]) for m in bulk["metrics"]] == [(0, 0.5, rid), (1, 0.7, rid), (2, 0.9, rid)], bulk
hist = c.create_run(exp, run_name="long").info.run_id
c.log_batch(hist, metrics=[Metric("x", float(i), 0, i) for i in range(10)])
# As mlflow server 3.17.2 samples: each run on its own, the last point kept within max_results.
sampled = requests.get(ajax + "metrics/get-history-bulk-interval", headers=headers, params={"run_ids": [hist], "metric_key": "x", "max_results": 5}).json()
assert [m["step"] for m in sampled["metrics"]] == [0, 2, 4, 6, 9], sampled
bad = requests.get(ajax + "metrics/get-history-bulk-interval", headers=headers, params={"run_ids": [hist], "metric_key": "x", "max_results": 0})
assert bad.status_code == 400 and "between 1 and 2500" in bad.json()["message"], bad.text
summaries = requests.post(ajax + "experiments/search-datasets", headers=headers, json={"experiment_ids": [exp]}).json()
assert summaries["dataset_summaries"] == [{"experiment_id": exp, "name": "iris", "digest": "abc123", "context": "training"}], summaries
up = requests.post(ajax + "upload-artifact", headers=headers, params={"run_uuid": rid, "path": "ui/up.txt"}, data=b"from the UI")
assert up.status_code == 200, up.text
got = requests.get(uri + "/get-artifact", headers=headers, params={"run_id": rid, "path": "ui/up.txt"})
assert got.text == "from the UI" and got.headers["Content-Type"] == "text/plain", got.headers
bad = requests.post(ajax + "upload-artifact", headers=headers, params={"run_uuid": rid, "path": "../x"}, data=b"x")
assert bad.status_code == 400 and bad.json()["message"] == "Invalid path", bad.text

# MLflow's request checks: field by field in its order, with its words
resp = rest("POST", "runs/log-parameter", json={"run_id": 31, "key": "k", "value": 41})
assert resp.status_code == 400 and "Invalid value 31 for parameter 'run_id' supplied" in resp.text, resp.text
resp = rest("POST", "runs/log-batch", json={"run_id": rid, "metrics": [{"key": "k", "value": 1}]})
assert "Missing value for required parameter 'metrics[0].timestamp'" in resp.text, resp.text

# A tracking URI with a trailing slash works; the CLI works; relative artifact roots are absolute
assert MlflowClient(uri + "/").get_experiment("0").name == "Default"
import subprocess, sys

out = subprocess.run([sys.executable, "-m", "mlflow", "experiments", "create", "-n", "made-by-cli"], capture_output=True, text=True)
assert out.returncode == 0, out.stderr
assert c.get_experiment_by_name("made-by-cli") is not None
rel = c.create_experiment("relative-root", artifact_location="some/dir")
assert os.path.isabs(c.get_experiment(rel).artifact_location), c.get_experiment(rel).artifact_location

# 100 concurrent writers: nothing lost, no "database is locked"
target = c.create_run(exp, run_name="concurrent").info.run_id
errors = []


def writer(n):
    try:
        cl = MlflowClient()
        for j in range(5):
            cl.log_batch(target, metrics=[Metric("w", n * 100 + j, 0, j + n * 10)])
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


threads = [threading.Thread(target=writer, args=(n,)) for n in range(100)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors[:3]
assert len(c.get_metric_history(target, "w")) == 500
print("ALL OK")
