"""The model registry through the stock `mlflow` client. Run by crates/tarn/tests/e2e/tracking.rs
after it registered model `tarn-made` (version 1) with `tarn model create`; the test then checks
with `tarn model show` what this script registered. Prints "ALL OK" at the end."""
import os, tempfile
import mlflow
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

c = MlflowClient()


def error_code(fn):
    try:
        fn()
    except MlflowException as e:
        return e.error_code
    raise AssertionError("no error")


# A model made with `tarn model create` is a registered model with one version.
made = c.get_registered_model("tarn-made")
assert [v.version for v in c.search_model_versions("name = 'tarn-made'")] == ["1"]
assert made.latest_versions[0].current_stage == "None"

# Register from a run, the usual way.
mlflow.set_experiment("registry")
with mlflow.start_run() as run:
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "MLmodel"), "w") as f:
        f.write("flavors: {}\n")
    mlflow.log_artifact(os.path.join(d, "MLmodel"), artifact_path="model")
mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", "churn")
assert mv.version == "1" and mv.run_id == run.info.run_id, mv
mv2 = mlflow.register_model(f"runs:/{run.info.run_id}/model", "churn")
assert mv2.version == "2"
assert error_code(lambda: c.create_registered_model("churn")) == "RESOURCE_ALREADY_EXISTS"

c.update_registered_model("churn", description="predicts churn")
c.set_registered_model_tag("churn", "owner", "ml")
c.set_registered_model_alias("churn", "champion", "1")
assert c.get_model_version_by_alias("churn", "champion").version == "1"
assert error_code(lambda: c.set_registered_model_alias("churn", "v3", "1")) == "INVALID_PARAMETER_VALUE"
c.update_model_version("churn", "2", description="second")
c.set_model_version_tag("churn", "2", "validated", "yes")
assert c.get_model_version("churn", "2").tags == {"validated": "yes"}
c.transition_model_version_stage("churn", "1", "Production")
c.transition_model_version_stage("churn", "2", "Production", archive_existing_versions=True)
assert c.get_model_version("churn", "1").current_stage == "Archived"
assert [v.version for v in c.get_latest_versions("churn", stages=["Production"])] == ["2"]
rm = c.get_registered_model("churn")
assert rm.description == "predicts churn" and rm.tags == {"owner": "ml"} and rm.aliases == {"champion": "1"}
assert {m.name for m in c.search_registered_models(filter_string="name LIKE 'ch%'")} == {"churn"}
assert {m.name for m in c.search_registered_models()} >= {"churn", "tarn-made"}
assert len(c.search_model_versions(f"run_id = '{run.info.run_id}'")) == 2

# Files come back through the download URI.
uri = c.get_model_version_download_uri("churn", "2")
assert uri.startswith("mlflow-artifacts:/"), uri
path = mlflow.artifacts.download_artifacts(artifact_uri=uri + "/MLmodel")
assert open(path).read() == "flavors: {}\n"

# The UI's download of one file of a version, and MLflow's refusal of paths that climb out.
session = requests.Session()
session.headers["Authorization"] = "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]
base = mlflow.get_tracking_uri()
r = session.get(f"{base}/model-versions/get-artifact", params={"name": "churn", "version": "2", "path": "MLmodel"})
assert r.status_code == 200 and r.text == "flavors: {}\n", (r.status_code, r.text)
assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Content-Type"] == "text/plain"
r = session.get(f"{base}/model-versions/get-artifact", params={"name": "churn", "version": "2", "path": "../../x"})
assert r.status_code == 400 and r.json()["message"] == "Invalid path", r.text

# A source that climbs out of its root, however encoded, or a server-local path, is refused.
for bad in ["mlflow-artifacts:/models/../../etc", "s3://bucket/a/..%2f..%2fb", "/etc/passwd"]:
    assert error_code(lambda: c.create_model_version("churn", bad, run.info.run_id)) == "INVALID_PARAMETER_VALUE", bad
# A version of another model's version (copy_model_version) shares its files.
copy = c.copy_model_version("models:/churn/2", "churn-copy")
assert copy.name == "churn-copy" and copy.version == "1"
assert c.get_model_version_download_uri("churn-copy", "1") == uri

# Versions in MLflow's order: last updated first by default, or as asked.
assert [v.version for v in c.search_model_versions("name = 'churn'", order_by=["version_number ASC"])] == ["1", "2"]
assert [v.version for v in c.search_model_versions("name = 'churn'", order_by=["version_number DESC"])] == ["2", "1"]
assert [v.version for v in c.search_model_versions("name = 'churn' and version_number > 1")] == ["2"]

# A rename moves every version, the description, tags and aliases; the old name is gone.
c.rename_registered_model("churn-copy", "churn-renamed")
assert error_code(lambda: c.get_registered_model("churn-copy")) == "RESOURCE_DOES_NOT_EXIST"
assert [v.version for v in c.search_model_versions("name = 'churn-renamed'")] == ["1"]
assert error_code(lambda: c.rename_registered_model("churn-renamed", "churn")) == "RESOURCE_ALREADY_EXISTS"
assert error_code(lambda: c.rename_registered_model("churn-renamed", "has space")) == "INVALID_PARAMETER_VALUE"

# Azure ML's rule where it differs from MLflow's: delete archives.
c.delete_model_version("churn", "1")
assert error_code(lambda: c.get_model_version("churn", "1")) == "RESOURCE_DOES_NOT_EXIST"
assert error_code(lambda: c.get_registered_model("nope")) == "RESOURCE_DOES_NOT_EXIST"

# MLflow 3: log a model, register it from its models:/ URI, load it back by name.
class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="echo", python_model=Echo())
assert info.model_uri.startswith("models:/m-"), info.model_uri
assert c.get_logged_model(info.model_id).name == "echo"
mv = mlflow.register_model(info.model_uri, "echo")
loaded = mlflow.pyfunc.load_model(f"models:/echo/{mv.version}")
assert loaded.predict([[1, 2]]) == [[1, 2]]
print("ALL OK")
