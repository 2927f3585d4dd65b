"""MLflow 3 GenAI evaluation against a Tarn workspace with the stock `mlflow` client
(mlflow-skinny from PyPI): evaluation datasets built from dicts and from traces (search, get,
tags, records merged by their inputs, delete), then `mlflow.genai.evaluate` over a dataset with
two code scorers (plain Python functions: no model provider), whose results are a run, traces
linked to it and the scorers' feedback on those traces; registered scorers (versions, list,
get, delete; decorator scorers refused); GenAI issues (create, update, search, trace counts,
the traces of an issue). Run by crates/tarn/tests/e2e/tracking.rs
with MLFLOW_TRACKING_URI / MLFLOW_TRACKING_TOKEN set. The last line printed is "ALL OK"."""
import os

os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.genai import datasets
from mlflow.genai.scorers import Guidelines, ScorerSamplingConfig, delete_scorer, get_scorer, list_scorers, scorer

c = MlflowClient()
exp = mlflow.set_experiment("genai-e2e").experiment_id
other = c.create_experiment("genai-other")


def error_code(fn):
    try:
        fn()
    except MlflowException as e:
        return e.error_code
    raise AssertionError("no error")


# A dataset from dicts; the same inputs again merge into their record.
qa = datasets.create_dataset(name="qa-v1", experiment_id=exp, tags={"team": "search"})
assert qa.dataset_id.startswith("d-") and qa.name == "qa-v1"
qa.merge_records([
    {"inputs": {"question": "capital of France?"}, "expectations": {"expected": "Paris"}},
    {"inputs": {"question": "2 + 2?"}, "expectations": {"expected": "4"}},
])
qa.merge_records([{"inputs": {"question": "2 + 2?"}, "expectations": {"expected": "four", "strict": False}}])
df = datasets.get_dataset(dataset_id=qa.dataset_id).to_df()
assert len(df) == 2, df
merged = [r for r in df.to_dict("records") if r["inputs"] == {"question": "2 + 2?"}][0]
assert merged["expectations"] == {"expected": "four", "strict": False}, merged
got = datasets.get_dataset(name="qa-v1")
assert got.dataset_id == qa.dataset_id and got.tags.get("team") == "search", got.tags
assert got.experiment_ids == [exp]
assert [d.name for d in datasets.search_datasets(experiment_ids=[exp])] == ["qa-v1"]
assert datasets.search_datasets(experiment_ids=[other]) == []
assert [d.name for d in datasets.search_datasets(filter_string="name LIKE 'qa%'")] == ["qa-v1"]
assert [d.name for d in datasets.search_datasets(filter_string="tags.team = 'search'")] == ["qa-v1"]
c.set_dataset_tags(qa.dataset_id, {"stage": "dev"})
c.delete_dataset_tag(qa.dataset_id, "team")
assert datasets.get_dataset(dataset_id=qa.dataset_id).tags.get("stage") == "dev"
assert "team" not in datasets.get_dataset(dataset_id=qa.dataset_id).tags
assert error_code(lambda: datasets.get_dataset(dataset_id="d-00000000000000000000000000000000")) == "RESOURCE_DOES_NOT_EXIST"


# A dataset from traces: inputs from the root span, expectations from the trace's assessments.
@mlflow.trace
def assistant(question):
    return "I think " + question


assistant("how tall is Everest?")
trace_id = mlflow.get_last_active_trace_id()
mlflow.log_expectation(trace_id=trace_id, name="expected", value="8849 m")
from_traces = datasets.create_dataset(name="from-traces", experiment_id=[exp, other])
from_traces.merge_records(mlflow.search_traces(locations=[exp], return_type="list"))
[record] = from_traces.to_df().to_dict("records")
assert record["inputs"] == {"question": "how tall is Everest?"}, record
assert record["expectations"] == {"expected": "8849 m"}, record
assert record["source_type"] == "TRACE" and record["source_id"] == trace_id, record
assert sorted(datasets.get_dataset(dataset_id=from_traces.dataset_id).experiment_ids) == sorted([exp, other])
datasets.delete_dataset(dataset_id=from_traces.dataset_id)
assert error_code(lambda: datasets.get_dataset(dataset_id=from_traces.dataset_id)) == "RESOURCE_DOES_NOT_EXIST"


# Evaluation with two code scorers, over the dataset.
@scorer
def exact_match(outputs, expectations):
    return outputs == expectations["expected"]


@scorer
def answer_length(outputs):
    return len(outputs)


def predict(question):
    return {"capital of France?": "Paris"}.get(question, "not sure")


result = mlflow.genai.evaluate(
    data=datasets.get_dataset(dataset_id=qa.dataset_id), predict_fn=predict, scorers=[exact_match, answer_length]
)
assert result.metrics["exact_match/mean"] == 0.5, result.metrics
assert result.metrics["answer_length/mean"] == (len("Paris") + len("not sure")) / 2, result.metrics
run = c.get_run(result.run_id)
assert run.data.metrics["exact_match/mean"] == 0.5, run.data.metrics
evaluated = mlflow.search_traces(locations=[exp], filter_string=f"run_id = '{result.run_id}'", return_type="list")
assert len(evaluated) == 2, [t.info.trace_id for t in evaluated]
for t in evaluated:
    feedback = {a.name: a.value for a in t.info.assessments if a.feedback is not None}
    assert set(feedback) >= {"exact_match", "answer_length"}, t.info.assessments
    assert feedback["exact_match"] == (t.data.spans[0].outputs == "Paris"), (feedback, t.data.spans[0].outputs)

datasets.delete_dataset(dataset_id=qa.dataset_id)
assert datasets.search_datasets(experiment_ids=[exp]) == []

# Registered scorers: versions of a named judge kept with the experiment.
Guidelines(name="polite", guidelines=["Be polite"]).register(name="polite")
Guidelines(name="polite", guidelines=["Be very polite"]).register(name="polite")
Guidelines(name="brief", guidelines=["Be brief"]).register(name="brief")
assert sorted((s.name, s.guidelines[0]) for s in list_scorers()) == [("brief", "Be brief"), ("polite", "Be very polite")]
assert get_scorer(name="polite").guidelines == ["Be very polite"]
assert get_scorer(name="polite", version=1).guidelines == ["Be polite"]
assert len(c._tracking_client.store.list_scorer_versions(exp, "polite")) == 2
# A decorator scorer carries code that whoever loads it would run: refused, as mlflow server does.
assert error_code(lambda: exact_match.register(name="exact_match")) == "INVALID_PARAMETER_VALUE"
# Tarn does not score incoming traces itself: starting a scorer says so.
assert error_code(lambda: get_scorer(name="brief").start(sampling_config=ScorerSamplingConfig(sample_rate=0.5))) == "NOT_IMPLEMENTED"
delete_scorer(name="polite", version=1)
assert [v.scorer_version for v in c._tracking_client.store.list_scorer_versions(exp, "polite")] == [2]
delete_scorer(name="polite", version="all")
assert [s.name for s in list_scorers()] == ["brief"]
assert error_code(lambda: get_scorer(name="polite")) == "RESOURCE_DOES_NOT_EXIST"

# GenAI issues: a problem found in the evaluation, triaged; searched most severe first.
from mlflow.entities.issue import IssueSeverity, IssueStatus
store = c._tracking_client.store
slow = store.create_issue(experiment_id=exp, name="slow answers", description="p90 over 2 s", severity=IssueSeverity.MEDIUM,
                          root_causes=["cold cache"], source_run_id=result.run_id, created_by="e2e")
assert slow.issue_id.startswith("iss-") and slow.status == IssueStatus.PENDING and slow.root_causes == ["cold cache"], slow
wrong = store.create_issue(experiment_id=exp, name="wrong capital", description="says Lyon", severity=IssueSeverity.HIGH)
store.create_issue(experiment_id=other, name="elsewhere", description="another experiment")
assert [i.name for i in store.search_issues(experiment_id=exp)] == ["wrong capital", "slow answers"]
# Traces linked to an issue (issue references, as MLflow's issue discovery writes them):
# counted per issue, and found by `issue.id`.
from mlflow.entities import IssueReference
for t in evaluated:
    mlflow.log_assessment(trace_id=t.info.trace_id, assessment=IssueReference(issue_id=slow.issue_id, issue_name=slow.name))
counted = store.search_issues(experiment_id=exp, include_trace_count=True)
assert [(i.name, i.trace_count) for i in counted] == [("wrong capital", 0), ("slow answers", 2)], counted
linked = mlflow.search_traces(locations=[exp], filter_string=f"issue.id = '{slow.issue_id}'", return_type="list")
assert sorted(t.info.trace_id for t in linked) == sorted(t.info.trace_id for t in evaluated), linked
assert error_code(lambda: mlflow.search_traces(locations=[exp], filter_string="issue.name = 'x'")) == "INVALID_PARAMETER_VALUE"
store.update_issue(wrong.issue_id, status=IssueStatus.RESOLVED, description="fixed the prompt")
got = store.get_issue(wrong.issue_id)
assert (got.status, got.description, got.name) == (IssueStatus.RESOLVED, "fixed the prompt", "wrong capital"), got
assert [i.name for i in store.search_issues(experiment_id=exp, filter_string="status = 'resolved'")] == ["wrong capital"]
assert [i.name for i in store.search_issues(filter_string=f"source_run_id = '{result.run_id}'")] == ["slow answers"]
first = store.search_issues(max_results=2)
assert len(first) == 2 and first.token, first
assert len(store.search_issues(max_results=2, page_token=first.token)) == 1
assert error_code(lambda: store.get_issue("iss-" + "0" * 32)) == "RESOURCE_DOES_NOT_EXIST"
assert error_code(lambda: store.search_issues(filter_string="tags.x = 'y'")) == "INVALID_PARAMETER_VALUE"
print("ALL OK")
