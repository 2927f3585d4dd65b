"""Drives a Tarn workspace's MLflow 3 tracing with the stock `mlflow` client (mlflow-skinny from
PyPI), as an LLM application does: traced functions with nested spans and an exception (spans
exported over OTLP, the trace's info over StartTraceV3), the UI's traces.json download, MLflow
2's StartTrace/EndTrace, a trace in a run, a raw OTLP/JSON export
from a foreign OpenTelemetry producer, searches with each filter kind, tags, assessments and
deletes. Run by crates/tarn/tests/e2e/tracking.rs with MLFLOW_TRACKING_URI /
MLFLOW_TRACKING_TOKEN set. Every check is an assert; the last line printed is "ALL OK"."""
import os

# Traces are exported as they end (not from a background queue), so each is readable at once.
os.environ["MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"] = "false"

import time
import requests
import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, Expectation
from mlflow.exceptions import MlflowException

uri = os.environ["MLFLOW_TRACKING_URI"]
headers = {"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]}
c = MlflowClient()


def error_code(fn):
    try:
        fn()
    except MlflowException as e:
        return e.error_code
    raise AssertionError("no error")


exp = mlflow.set_experiment("traces-e2e").experiment_id


@mlflow.trace(span_type="RETRIEVER")
def retrieve(question):
    return ["doc one", "doc two"]


@mlflow.trace(span_type="LLM")
def generate(question, docs):
    with mlflow.start_span("format") as span:
        span.set_inputs({"docs": docs})
        span.set_outputs("formatted")
        span.set_attribute("tokens", 42)
    return f"the answer to {question}"


@mlflow.trace(span_type="CHAIN")
def answer(question):
    return generate(question, retrieve(question))


@mlflow.trace
def broken(x):
    raise ValueError(f"boom {x}")


# A traced function with nested spans: the span tree, its inputs and outputs, types and timing.
before = int(time.time() * 1000)
assert answer("what is tarn?") == "the answer to what is tarn?"
ok_id = mlflow.get_last_active_trace_id()
trace = mlflow.get_trace(ok_id)
assert trace.info.state == "OK", trace.info
assert trace.info.experiment_id == exp
assert trace.info.request_time >= before - 1000
assert trace.info.execution_duration is not None and trace.info.execution_duration >= 0
assert "what is tarn?" in trace.info.request_preview, trace.info.request_preview
assert "the answer" in trace.info.response_preview
assert trace.info.tags.get("mlflow.traceName") == "answer", trace.info.tags
assert trace.info.tags.get("mlflow.artifactLocation", "").endswith(f"/traces/{ok_id}/artifacts")
spans = {s.name: s for s in trace.data.spans}
assert set(spans) == {"answer", "retrieve", "generate", "format"}, spans.keys()
assert spans["answer"].parent_id is None
assert spans["retrieve"].parent_id == spans["answer"].span_id
assert spans["generate"].parent_id == spans["answer"].span_id
assert spans["format"].parent_id == spans["generate"].span_id
assert spans["retrieve"].span_type == "RETRIEVER" and spans["generate"].span_type == "LLM"
assert spans["retrieve"].outputs == ["doc one", "doc two"]
assert spans["format"].inputs == {"docs": ["doc one", "doc two"]}
assert spans["format"].get_attribute("tokens") == 42
assert all(s.end_time_ns >= s.start_time_ns for s in trace.data.spans)

# An exception: the trace and its span fail, the exception is an event of the span.
try:
    broken(7)
except ValueError:
    pass
error_id = mlflow.get_last_active_trace_id()
failed = mlflow.get_trace(error_id)
assert failed.info.state == "ERROR", failed.info
[root] = failed.data.spans
assert root.status.status_code.value == "ERROR"
assert root.events and root.events[0].name == "exception", root.events
assert "boom 7" in root.events[0].attributes["exception.message"]

# The UI's download of a trace (`get-trace-artifact`): its spans as traces.json, span for span
# as the client holds them (attributes, events, status).
r = requests.get(uri + "/ajax-api/2.0/mlflow/get-trace-artifact", params={"request_id": error_id}, headers=headers, timeout=30)
assert r.status_code == 200 and r.headers["Content-Disposition"] == "attachment; filename=traces.json", (r.status_code, r.headers)
from mlflow.entities.trace_data import TraceData
downloaded = TraceData.from_dict(r.json())
assert [s.to_dict() for s in downloaded.spans] == [s.to_dict() for s in failed.data.spans], ([s.to_dict() for s in downloaded.spans], [s.to_dict() for s in failed.data.spans])
r = requests.get(uri + "/ajax-api/2.0/mlflow/get-trace-artifact", params={"request_id": "tr-" + "0" * 32}, headers=headers, timeout=30)
assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", r.text

# MLflow 2's StartTrace/EndTrace (older clients): a trace in progress, then ended, its tags and
# metadata merged; it is a trace like any other to 3.x calls.
from mlflow.entities.trace_status import TraceStatus
store = c._tracing_client.store
v2 = store.deprecated_start_trace_v2(experiment_id=exp, timestamp_ms=1000, request_metadata={"m1": "a", "m2": "b"}, tags={"t1": "x"})
assert v2.request_id.startswith("tr-") and v2.status == TraceStatus.IN_PROGRESS and v2.execution_time_ms == 0, v2
v2 = store.deprecated_end_trace_v2(request_id=v2.request_id, timestamp_ms=3500, status=TraceStatus.OK, request_metadata={"m1": "c"}, tags={"t2": "y"})
assert (v2.status, v2.timestamp_ms, v2.execution_time_ms) == (TraceStatus.OK, 1000, 2500), v2
assert {k: v for k, v in v2.request_metadata.items() if not k.startswith("mlflow.")} == {"m1": "c", "m2": "b"}
assert {k: v for k, v in v2.tags.items() if not k.startswith("mlflow.")} == {"t1": "x", "t2": "y"}
assert c._tracing_client.get_trace_info(v2.request_id).state.value == "OK"
r = requests.patch(uri + f"/api/2.0/mlflow/traces/{v2.request_id}", json={"timestamp_ms": 4000, "status": "DONE"}, headers=headers, timeout=30)
assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
c.delete_traces(exp, trace_ids=[v2.request_id])

# How two filters go together (the UI's correlation insight): failed traces are never OK ones.
from mlflow.tracing.client import TracingClient
tc = TracingClient()
total = len(mlflow.search_traces(locations=[exp], return_type="list"))
corr = tc.calculate_trace_filter_correlation(experiment_ids=[exp], filter_string1="trace.status = 'ERROR'", filter_string2="trace.status = 'OK'")
assert (corr.total_count, corr.filter1_count, corr.joint_count) == (total, 1, 0), corr
assert corr.filter1_count + corr.filter2_count == total and corr.npmi == -1.0, corr
corr = tc.calculate_trace_filter_correlation(experiment_ids=[exp], filter_string1="trace.status = 'ERROR'", filter_string2="span.name = 'broken'")
assert (corr.filter1_count, corr.filter2_count, corr.joint_count, corr.npmi) == (1, 1, 1, 1.0), corr
assert error_code(lambda: tc.calculate_trace_filter_correlation(experiment_ids=[exp], filter_string1="nope.x = 'y'", filter_string2="trace.status = 'OK'")) == "INVALID_PARAMETER_VALUE"

# Trace metrics (what MLflow's UI charts read): counts by status, latency percentiles by name.
from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType
everything = mlflow.search_traces(locations=[exp], return_type="list")
by_status = store.query_trace_metrics(experiment_ids=[exp], view_type=MetricViewType.TRACES, metric_name="trace_count",
                                      aggregations=[MetricAggregation(aggregation_type=AggregationType.COUNT)], dimensions=["trace_status"])
assert {p.dimensions["trace_status"]: p.values["COUNT"] for p in by_status} == {
    s: sum(1 for t in everything if t.info.state.value == s) for s in {t.info.state.value for t in everything}}, by_status
answers = [t.info.execution_duration for t in everything if t.info.tags.get("mlflow.traceName") == "answer"]
latency = store.query_trace_metrics(experiment_ids=[exp], view_type=MetricViewType.TRACES, metric_name="latency", dimensions=["trace_name"],
                                    aggregations=[MetricAggregation(aggregation_type=AggregationType.PERCENTILE, percentile_value=100.0)],
                                    filters=["trace.tag.mlflow.traceName = 'answer'"])
assert [(p.dimensions["trace_name"], p.values["P100.0"]) for p in latency] == [("answer", max(answers))], latency
# Spans: counts by name and type, filtered by the span's type.
retrievers = store.query_trace_metrics(experiment_ids=[exp], view_type=MetricViewType.SPANS, metric_name="span_count",
                                       aggregations=[MetricAggregation(aggregation_type=AggregationType.COUNT)],
                                       dimensions=["span_name", "span_type"], filters=["span.type = 'RETRIEVER'"])
assert [(p.dimensions["span_name"], p.dimensions["span_type"], p.values["COUNT"]) for p in retrievers] == [
    ("retrieve", "RETRIEVER", float(sum(1 for t in everything for sp in t.data.spans if sp.name == "retrieve")))], retrievers
assert error_code(lambda: store.query_trace_metrics(experiment_ids=[exp], view_type=MetricViewType.SPANS, metric_name="span_count",
                                                    aggregations=[MetricAggregation(aggregation_type=AggregationType.COUNT)],
                                                    filters=["assessment.name = 'x'"])) == "INVALID_PARAMETER_VALUE"

# A trace made inside a run is linked to it.
with mlflow.start_run() as run:
    answer("inside a run")
run_trace_id = mlflow.get_last_active_trace_id()
assert mlflow.get_trace(run_trace_id).info.trace_metadata["mlflow.sourceRun"] == run.info.run_id

# A foreign OpenTelemetry producer exports spans as OTLP/JSON (ids in hex).
start_ns = time.time_ns()
otlp = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
             "name": "agent-run", "startTimeUnixNano": str(start_ns),
             "endTimeUnixNano": str(start_ns + 5_000_000), "status": {"code": 1},
             "attributes": [{"key": "mlflow.spanInputs", "value": {"stringValue": "\"plan a trip\""}}]},
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175",
             "parentSpanId": "eee19b7ec3c1b174", "name": "tool-call",
             "startTimeUnixNano": str(start_ns + 1_000_000), "endTimeUnixNano": str(start_ns + 2_000_000),
             "attributes": [{"key": "retries", "value": {"intValue": "2"}}]},
        ]}],
    }]
}
r = requests.post(uri + "/v1/traces", json=otlp, headers={**headers, "x-mlflow-experiment-id": exp}, timeout=30)
assert r.status_code == 200, r.text
foreign_id = "tr-5b8efff798038103d269b633813fc60c"
foreign = mlflow.get_trace(foreign_id)
assert foreign.info.state == "OK" and foreign.info.execution_duration == 5, foreign.info
assert foreign.info.request_preview == '"plan a trip"'
assert sorted(s.name for s in foreign.data.spans) == ["agent-run", "tool-call"]
assert [s for s in foreign.data.spans if s.name == "tool-call"][0].get_attribute("retries") == 2

# Bad exports are refused with why, and store nothing.
for body, extra, says in [
    (b"not json", {"Content-Type": "application/json", "x-mlflow-experiment-id": exp}, "Invalid OpenTelemetry format"),
    (b"{}", {"Content-Type": "application/json"}, "x-mlflow-experiment-id"),
    (b"{}", {"Content-Type": "text/plain", "x-mlflow-experiment-id": exp}, "Invalid Content-Type"),
]:
    r = requests.post(uri + "/v1/traces", data=body, headers={**headers, **extra}, timeout=30)
    assert r.status_code == 400 and says in r.text, (r.status_code, r.text)
r = requests.post(uri + "/v1/traces", json=otlp, headers={**headers, "x-mlflow-experiment-id": "999"}, timeout=30)
assert r.status_code == 404, r.text
assert error_code(lambda: c.get_trace("tr-00000000000000000000000000000000")) == "RESOURCE_DOES_NOT_EXIST"


# Search: each filter kind, order and pages.
def ids(filter_string=None, **kw):
    found = mlflow.search_traces(locations=[exp], filter_string=filter_string, return_type="list", **kw)
    return [t.info.trace_id for t in found]


everything = ids()
assert set(everything) == {ok_id, error_id, run_trace_id, foreign_id}, everything
assert ids("trace.status = 'ERROR'") == [error_id]
assert set(ids("trace.status != 'ERROR'")) == {ok_id, run_trace_id, foreign_id}
assert ids(f"trace.timestamp_ms < {before}") == []
assert error_id in ids(f"trace.timestamp_ms >= {before}")
assert ids("span.name = 'tool-call'") == [foreign_id]
assert set(ids("span.type = 'RETRIEVER'")) == {ok_id, run_trace_id}
# A span attribute by key, as the client wrote it (a JSON text) or as a pattern.
assert set(ids("span.attributes.mlflow.spanType = 'RETRIEVER'")) == {ok_id, run_trace_id}
assert set(ids("span.attributes.`mlflow.spanType` LIKE 'RETR%'")) == {ok_id, run_trace_id}
assert ids("span.attributes.`mlflow.spanType` IN ('TOOL', 'AGENT')") == []
assert ids("trace.name = 'broken'") == [error_id]
assert ids(f"run_id = '{run.info.run_id}'") == [run_trace_id]
assert ids(f"metadata.`mlflow.sourceRun` = '{run.info.run_id}'") == [run_trace_id]
assert set(ids("metadata.`mlflow.sourceRun` IS NULL")) == {ok_id, error_id, foreign_id}
c.set_trace_tag(ok_id, "reviewed", "yes")
c.set_trace_tag(error_id, "reviewed", "no")
assert ids("tags.reviewed = 'yes'") == [ok_id]
assert set(ids("tags.reviewed LIKE '%'")) == {ok_id, error_id}
assert set(ids("tags.reviewed IS NOT NULL AND trace.status = 'OK'")) == {ok_id}
# RLIKE: a regular expression found anywhere in the value, on each kind of key; one that
# matches nothing finds nothing, and one that is no regular expression is refused.
assert ids("trace.name RLIKE '^bro.en$'") == [error_id]
assert set(ids("tags.reviewed RLIKE '^(yes|no)$'")) == {ok_id, error_id}
assert ids("tags.reviewed RLIKE 'y.s' AND trace.status RLIKE '^O'") == [ok_id]
assert ids("trace.status RLIKE 'RR'") == [error_id]
assert ids("span.name RLIKE '^tool-[a-z]+$'") == [foreign_id]
assert set(ids("span.attributes.`mlflow.spanType` RLIKE 'RETR.*ER$'")) == {ok_id, run_trace_id}
assert ids(f"metadata.`mlflow.sourceRun` RLIKE '^{run.info.run_id[:6]}'") == [run_trace_id]
assert ids("tags.reviewed RLIKE '^maybe[0-9]{3}$'") == []
assert error_code(lambda: ids("tags.reviewed RLIKE '(yes'")) == "INVALID_PARAMETER_VALUE"
assert error_code(lambda: ids("span.content RLIKE 'x'")) == "INVALID_PARAMETER_VALUE"
c.delete_trace_tag(error_id, "reviewed")
assert ids("tags.reviewed = 'no'") == []
assert error_code(lambda: c.delete_trace_tag(error_id, "reviewed")) == "RESOURCE_DOES_NOT_EXIST"
assert ids(order_by=["timestamp_ms ASC"]) == list(reversed(everything))
first = c.search_traces(locations=[exp], max_results=3)
assert len(first) == 3 and first.token
rest = c.search_traces(locations=[exp], max_results=3, page_token=first.token)
assert [t.info.trace_id for t in first] + [t.info.trace_id for t in rest] == everything
oldest = c.search_traces(locations=[exp], max_results=2, order_by=["timestamp_ms ASC"])
newest = c.search_traces(locations=[exp], max_results=2, order_by=["timestamp_ms ASC"], page_token=oldest.token)
assert [t.info.trace_id for t in oldest] + [t.info.trace_id for t in newest] == list(reversed(everything))
# A token that is none, or another order's, is refused.
for order, token in [([], "not a token!"), (["status ASC"], first.token)]:
    refused = lambda: c.search_traces(locations=[exp], max_results=3, order_by=order, page_token=token)
    assert error_code(refused) == "INVALID_PARAMETER_VALUE", (order, token)
for bad in ["span.color = 'x'", "trace.timestamp_ms > 'soon'", "trace.status = 'OK' OR trace.status = 'ERROR'"]:
    assert error_code(lambda: ids(bad)) == "INVALID_PARAMETER_VALUE", bad

# Assessments: feedback from a human and a judge, expectations, update, override, delete.
feedback = mlflow.log_feedback(
    trace_id=ok_id, name="relevance", value=0.6, rationale="partly",
    source=AssessmentSource(source_type="LLM_JUDGE", source_id="judge-1"),
)
assert feedback.assessment_id.startswith("a-")
expectation = mlflow.log_expectation(
    trace_id=ok_id, name="expected_answer", value="the answer",
    source=AssessmentSource(source_type="HUMAN", source_id="bob"),
)
got = mlflow.get_assessment(ok_id, feedback.assessment_id)
assert got.value == 0.6 and got.rationale == "partly" and got.source.source_id == "judge-1"
updated = mlflow.update_assessment(
    trace_id=ok_id, assessment_id=expectation.assessment_id,
    assessment=Expectation(name="expected_answer", value="a better answer"),
)
assert updated.value == "a better answer"
override = mlflow.override_feedback(
    trace_id=ok_id, assessment_id=feedback.assessment_id, value=0.9, rationale="a human says so",
    source=AssessmentSource(source_type="HUMAN", source_id="alice"),
)
assert override.overrides == feedback.assessment_id
by_id = {a.assessment_id: a for a in mlflow.get_trace(ok_id).info.assessments}
assert set(by_id) == {feedback.assessment_id, expectation.assessment_id, override.assessment_id}
assert by_id[feedback.assessment_id].valid is False and by_id[override.assessment_id].valid is not False
assert by_id[expectation.assessment_id].value == "a better answer"
# Searched by their values; an overridden feedback no longer counts.
assert ids("feedback.relevance > 0.8") == [ok_id]
assert ids("feedback.relevance < 0.7") == []
assert ids("expectation.expected_answer = 'a better answer'") == [ok_id]
assert ids("expectation.expected_answer RLIKE 'better an'") == [ok_id]
assert ids("expectation.expected_answer RLIKE '^the answer$'") == []
assert set(ids("feedback.relevance IS NULL")) == {error_id, run_trace_id, foreign_id}
assert error_code(lambda: ids("feedback.relevance > 'high'")) == "INVALID_PARAMETER_VALUE"
mlflow.delete_assessment(trace_id=ok_id, assessment_id=override.assessment_id)
by_id = {a.assessment_id: a for a in mlflow.get_trace(ok_id).info.assessments}
assert override.assessment_id not in by_id and by_id[feedback.assessment_id].valid is not False
assert ids("feedback.relevance < 0.7") == [ok_id]
assert error_code(lambda: mlflow.get_assessment(ok_id, override.assessment_id)) == "RESOURCE_DOES_NOT_EXIST"
# Assessment metrics: counts by name, the feedback's mean value.
counts = store.query_trace_metrics(experiment_ids=[exp], view_type=MetricViewType.ASSESSMENTS, metric_name="assessment_count",
                                   aggregations=[MetricAggregation(aggregation_type=AggregationType.COUNT)], dimensions=["assessment_name"])
assert {p.dimensions["assessment_name"]: p.values["COUNT"] for p in counts} == {"relevance": 1.0, "expected_answer": 1.0}, counts
[mean] = store.query_trace_metrics(experiment_ids=[exp], view_type=MetricViewType.ASSESSMENTS, metric_name="assessment_value",
                                   aggregations=[MetricAggregation(aggregation_type=AggregationType.AVG)],
                                   filters=["assessment.type = 'feedback'"])
assert mean.values["AVG"] == 0.6, mean
assert error_code(lambda: mlflow.log_feedback(trace_id="tr-00000000000000000000000000000000", name="x", value=1)) == "RESOURCE_DOES_NOT_EXIST"

# Deletes: by id, then the oldest by time.
assert c.delete_traces(experiment_id=exp, trace_ids=[error_id]) == 1
assert error_code(lambda: c.get_trace(error_id)) == "RESOURCE_DOES_NOT_EXIST"
assert c.delete_traces(experiment_id=exp, max_timestamp_millis=int(time.time() * 1000), max_traces=1) == 1
assert len(ids()) == 2
assert c.delete_traces(experiment_id=exp, max_timestamp_millis=int(time.time() * 1000)) == 2
assert ids() == []

# A trace made while a logged model is active is linked to it, and found by it.
model = mlflow.set_active_model(name="assistant-v1")
answer("with a model")
model_trace = mlflow.get_last_active_trace_id()
mlflow.clear_active_model()
assert mlflow.get_trace(model_trace).info.trace_metadata["mlflow.modelId"] == model.model_id
found = mlflow.search_traces(locations=[exp], model_id=model.model_id, return_type="list")
assert [t.info.trace_id for t in found] == [model_trace], found

print("ALL OK")
