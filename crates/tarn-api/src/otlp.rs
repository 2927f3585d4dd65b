//! OpenTelemetry's OTLP/HTTP trace export (`POST …/v1/traces`), as MLflow's server takes it:
//! protobuf or OTLP JSON bodies (gzip or not), the experiment in `x-mlflow-experiment-id`.
//! The messages below are the part of `opentelemetry/proto/trace/v1` a span needs, declared
//! with `prost` (no code generation step). Each span is kept as the JSON of the same message
//! in protobuf's own JSON form (ids base64, field names as declared), which is what MLflow's
//! clients read back in `GetTrace`/`BatchGetTraces`.

use base64::Engine;
use serde_json::{Map, Value as Json, json};
use tarn_core::traces::{IngestSpan, SpanRow};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
    #[prost(message, repeated, tag = "13")]
    pub links: Vec<Link>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Link {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(super::ArrayValue),
        #[prost(message, tag = "6")]
        Kvlist(super::KeyValueList),
        #[prost(bytes = "vec", tag = "7")]
        Bytes(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// A body that is not an OTLP trace export, with why.
#[derive(Debug)]
pub struct BadExport(pub String);

/// Reads an export: `content_type` is `application/x-protobuf` or `application/json`,
/// `encoding` the `Content-Encoding` (gzip or none).
pub fn read(
    body: &[u8],
    content_type: &str,
    encoding: Option<&str>,
) -> Result<ExportTraceServiceRequest, BadExport> {
    let unzipped;
    let body = match encoding.map(str::trim).filter(|e| !e.is_empty()) {
        None | Some("identity") => body,
        Some("gzip") => {
            use std::io::Read;
            let mut out = vec![];
            flate2::read::GzDecoder::new(body)
                .take(crate::mlflow::MAX_OTLP_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| BadExport(format!("The gzip body could not be read: {e}")))?;
            if out.len() > crate::mlflow::MAX_OTLP_BYTES {
                return Err(BadExport("The unzipped body is too large".into()));
            }
            unzipped = out;
            &unzipped
        }
        Some(other) => {
            return Err(BadExport(format!(
                "Unsupported Content-Encoding '{other}': send gzip or none"
            )));
        }
    };
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let request = match media {
        "application/x-protobuf" => <ExportTraceServiceRequest as prost::Message>::decode(body)
            .map_err(|e| BadExport(format!("Invalid OpenTelemetry format: {e}")))?,
        "application/json" => {
            let v: Json = serde_json::from_slice(body)
                .map_err(|e| BadExport(format!("Invalid OpenTelemetry format: {e}")))?;
            from_json(&v)?
        }
        other => {
            return Err(BadExport(format!(
                "Invalid Content-Type: {other}. Expected: application/x-protobuf or application/json"
            )));
        }
    };
    if request
        .resource_spans
        .iter()
        .all(|r| r.scope_spans.iter().all(|s| s.spans.is_empty()))
    {
        return Err(BadExport(
            "Invalid OpenTelemetry format - no spans found".into(),
        ));
    }
    Ok(request)
}

/// A field of an OTLP JSON object, by its JSON name (camelCase) or its proto name.
fn field<'a>(v: &'a Json, camel: &str, snake: &str) -> Option<&'a Json> {
    v.get(camel).or_else(|| v.get(snake))
}

fn list<'a>(v: &'a Json, camel: &str, snake: &str) -> &'a [Json] {
    field(v, camel, snake)
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A 64-bit integer: OTLP JSON writes them as strings, protobuf's JSON also as numbers.
fn int(v: Option<&Json>) -> Result<u64, BadExport> {
    match v {
        None | Some(Json::Null) => Ok(0),
        Some(Json::Number(n)) => n
            .as_u64()
            .ok_or_else(|| BadExport(format!("Invalid time {n}"))),
        Some(Json::String(s)) => s
            .parse()
            .map_err(|_| BadExport(format!("Invalid time '{s}'"))),
        Some(other) => Err(BadExport(format!("Invalid time {other}"))),
    }
}

/// An id: OTLP JSON writes them in hex (MLflow's server reads them so too).
fn id(v: Option<&Json>, len: usize) -> Result<Vec<u8>, BadExport> {
    let text = v.and_then(Json::as_str).unwrap_or_default();
    if text.is_empty() {
        return Ok(vec![]);
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|b| b.len() == len)
        .ok_or_else(|| BadExport(format!("Invalid id '{text}': expected {len} bytes in hex")))?;
    Ok(bytes)
}

fn any_from_json(v: &Json) -> Result<AnyValue, BadExport> {
    use any_value::Value as V;
    let value = if let Some(s) = field(v, "stringValue", "string_value") {
        Some(V::String(s.as_str().unwrap_or_default().into()))
    } else if let Some(b) = field(v, "boolValue", "bool_value") {
        Some(V::Bool(b.as_bool().unwrap_or_default()))
    } else if let Some(i) = field(v, "intValue", "int_value") {
        let n = match i {
            Json::String(s) => s.parse().ok(),
            other => other.as_i64(),
        };
        Some(V::Int(
            n.ok_or_else(|| BadExport(format!("Invalid intValue {i}")))?,
        ))
    } else if let Some(d) = field(v, "doubleValue", "double_value") {
        Some(V::Double(d.as_f64().unwrap_or_default()))
    } else if let Some(a) = field(v, "arrayValue", "array_value") {
        Some(V::Array(ArrayValue {
            values: list(a, "values", "values")
                .iter()
                .map(any_from_json)
                .collect::<Result<_, _>>()?,
        }))
    } else if let Some(kv) = field(v, "kvlistValue", "kvlist_value") {
        Some(V::Kvlist(KeyValueList {
            values: key_values(list(kv, "values", "values"))?,
        }))
    } else {
        None
    };
    Ok(AnyValue { value })
}

fn key_values(items: &[Json]) -> Result<Vec<KeyValue>, BadExport> {
    items
        .iter()
        .map(|kv| {
            Ok(KeyValue {
                key: kv
                    .get("key")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .into(),
                value: kv.get("value").map(any_from_json).transpose()?,
            })
        })
        .collect()
}

/// An OTLP JSON export as the message.
fn from_json(v: &Json) -> Result<ExportTraceServiceRequest, BadExport> {
    let mut out = ExportTraceServiceRequest::default();
    for rs in list(v, "resourceSpans", "resource_spans") {
        let resource = field(rs, "resource", "resource")
            .map(|r| {
                Ok::<_, BadExport>(Resource {
                    attributes: key_values(list(r, "attributes", "attributes"))?,
                })
            })
            .transpose()?;
        let mut scope_spans = vec![];
        for ss in list(rs, "scopeSpans", "scope_spans") {
            let mut spans = vec![];
            for s in list(ss, "spans", "spans") {
                let status = field(s, "status", "status").map(|st| Status {
                    message: st
                        .get("message")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .into(),
                    code: match st.get("code") {
                        Some(Json::Number(n)) => n.as_i64().unwrap_or_default() as i32,
                        Some(Json::String(s)) if s.ends_with("_OK") => 1,
                        Some(Json::String(s)) if s.ends_with("_ERROR") => 2,
                        _ => 0,
                    },
                });
                let mut events = vec![];
                for e in list(s, "events", "events") {
                    events.push(Event {
                        time_unix_nano: int(field(e, "timeUnixNano", "time_unix_nano"))?,
                        name: e
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                            .into(),
                        attributes: key_values(list(e, "attributes", "attributes"))?,
                    });
                }
                spans.push(Span {
                    trace_id: id(field(s, "traceId", "trace_id"), 16)?,
                    span_id: id(field(s, "spanId", "span_id"), 8)?,
                    trace_state: String::new(),
                    parent_span_id: id(field(s, "parentSpanId", "parent_span_id"), 8)?,
                    name: s
                        .get("name")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .into(),
                    kind: s.get("kind").and_then(Json::as_i64).unwrap_or_default() as i32,
                    start_time_unix_nano: int(field(
                        s,
                        "startTimeUnixNano",
                        "start_time_unix_nano",
                    ))?,
                    end_time_unix_nano: int(field(s, "endTimeUnixNano", "end_time_unix_nano"))?,
                    attributes: key_values(list(s, "attributes", "attributes"))?,
                    events,
                    links: vec![],
                    status,
                });
            }
            scope_spans.push(ScopeSpans { spans });
        }
        out.resource_spans.push(ResourceSpans {
            resource,
            scope_spans,
        });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn any_json(v: &AnyValue) -> Json {
    use any_value::Value as V;
    match &v.value {
        None => json!({}),
        Some(V::String(s)) => json!({"string_value": s}),
        Some(V::Bool(b)) => json!({"bool_value": b}),
        Some(V::Int(i)) => json!({"int_value": i}),
        Some(V::Double(d)) if d.is_finite() => json!({"double_value": d}),
        Some(V::Double(d)) => json!({"double_value": d.to_string()}),
        Some(V::Array(a)) => {
            json!({"array_value": {"values": a.values.iter().map(any_json).collect::<Vec<_>>()}})
        }
        Some(V::Kvlist(kv)) => {
            json!({"kvlist_value": {"values": attributes_json(&kv.values)}})
        }
        Some(V::Bytes(b)) => json!({"bytes_value": b64(b)}),
    }
}

fn attributes_json(kvs: &[KeyValue]) -> Json {
    Json::Array(
        kvs.iter()
            .map(|kv| {
                let mut o = Map::new();
                o.insert("key".into(), json!(kv.key));
                if let Some(v) = &kv.value {
                    o.insert("value".into(), any_json(v));
                }
                Json::Object(o)
            })
            .collect(),
    )
}

/// The span in protobuf's JSON form (what MLflow's `Span.from_otel_proto` reads back).
fn span_json(s: &Span) -> Json {
    let mut o = Map::new();
    o.insert("trace_id".into(), json!(b64(&s.trace_id)));
    o.insert("span_id".into(), json!(b64(&s.span_id)));
    if !s.parent_span_id.is_empty() {
        o.insert("parent_span_id".into(), json!(b64(&s.parent_span_id)));
    }
    o.insert("name".into(), json!(s.name));
    if s.kind != 0 {
        o.insert("kind".into(), json!(s.kind));
    }
    o.insert("start_time_unix_nano".into(), json!(s.start_time_unix_nano));
    if s.end_time_unix_nano != 0 {
        o.insert("end_time_unix_nano".into(), json!(s.end_time_unix_nano));
    }
    o.insert("attributes".into(), attributes_json(&s.attributes));
    if !s.events.is_empty() {
        let events: Vec<Json> = s
            .events
            .iter()
            .map(|e| {
                json!({
                    "time_unix_nano": e.time_unix_nano,
                    "name": e.name,
                    "attributes": attributes_json(&e.attributes),
                })
            })
            .collect();
        o.insert("events".into(), Json::Array(events));
    }
    if !s.links.is_empty() {
        let links: Vec<Json> = s
            .links
            .iter()
            .map(|l| {
                json!({
                    "trace_id": b64(&l.trace_id),
                    "span_id": b64(&l.span_id),
                    "attributes": attributes_json(&l.attributes),
                })
            })
            .collect();
        o.insert("links".into(), Json::Array(links));
    }
    if let Some(st) = &s.status {
        o.insert(
            "status".into(),
            json!({"code": status_name(st.code, "STATUS_CODE_"), "message": st.message}),
        );
    }
    Json::Object(o)
}

fn status_name(code: i32, prefix: &str) -> String {
    let name = match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    };
    format!("{prefix}{name}")
}

/// An attribute's value as MLflow's span dict holds it: a string as it is (MLflow writes JSON
/// texts into strings), anything else as JSON.
fn plain(v: &AnyValue) -> Json {
    match &v.value {
        Some(any_value::Value::String(s)) => json!(s),
        Some(any_value::Value::Bool(b)) => json!(b),
        Some(any_value::Value::Int(i)) => json!(i),
        Some(any_value::Value::Double(d)) => json!(d),
        Some(any_value::Value::Array(a)) => Json::Array(a.values.iter().map(plain).collect()),
        Some(any_value::Value::Kvlist(kv)) => plain_attributes(&kv.values),
        Some(any_value::Value::Bytes(b)) => json!(b64(b)),
        None => Json::Null,
    }
}

fn plain_attributes(kvs: &[KeyValue]) -> Json {
    Json::Object(
        kvs.iter()
            .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, plain)))
            .collect(),
    )
}

/// The span as MLflow's span dict (its keys never `value`, so a search for a word finds the
/// word where the user put it, not in the wire format's field names), its attributes as the
/// texts `span.attributes.<key>` filters compare (`tarn_core::traces::value_text`).
fn search_text(s: &Span) -> Json {
    let attributes: Map<String, Json> = s
        .attributes
        .iter()
        .map(|kv| {
            let v = kv.value.as_ref().map_or(Json::Null, plain);
            (
                kv.key.clone(),
                Json::String(tarn_core::traces::value_text(&v)),
            )
        })
        .collect();
    json!({
        "name": s.name,
        "status": status_name(s.status.as_ref().map_or(0, |st| st.code), "STATUS_CODE_"),
        "attributes": attributes,
        "events": s.events.iter().map(|e| json!({"name": e.name, "attributes": plain_attributes(&e.attributes)})).collect::<Vec<_>>(),
    })
}

/// A string attribute's value (MLflow writes every attribute as a JSON text in a string).
fn string_attribute<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::String(v) => Some(v.as_str()),
            _ => None,
        }
    })
}

/// A value in protobuf's JSON form (`{"string_value": …}`, [`any_json`]) as a plain one
/// ([`plain`]'s forms).
fn plain_json(v: &Json) -> Json {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return Json::Null;
    };
    match kind.as_str() {
        "array_value" => Json::Array(
            inner["values"]
                .as_array()
                .map(|items| items.iter().map(plain_json).collect())
                .unwrap_or_default(),
        ),
        "kvlist_value" => plain_attributes_json(&inner["values"]),
        _ => inner.clone(),
    }
}

/// `[{"key": …, "value": …}, …]` in protobuf's JSON form as an object of plain values.
fn plain_attributes_json(kvs: &Json) -> Json {
    Json::Object(
        kvs.as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|kv| {
                        let key = kv["key"].as_str().unwrap_or_default().to_string();
                        (key, plain_json(&kv["value"]))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// An id in base64 (protobuf's JSON form) as hex.
fn hex_of_b64(id: &Json) -> Json {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(id.as_str().unwrap_or_default())
        .unwrap_or_default();
    json!(hex(&bytes))
}

/// JSON text as Python's `json.dumps` writes it (`", "` and `": "` between items), so an
/// attribute Tarn writes reads the same as the one MLflow's client wrote.
fn python_json(v: &Json) -> String {
    struct Python;
    impl serde_json::ser::Formatter for Python {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = vec![];
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Python);
    serde::Serialize::serialize(v, &mut ser).expect("JSON values serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// A stored span ([`span_json`]'s form) as MLflow's span dict, what `Span.to_dict()` writes
/// and a `traces.json` file holds: each attribute as the JSON text of its value, as MLflow's
/// server writes them whatever form the exporter sent (`dump_span_attribute_value`); events'
/// attributes as plain values.
pub fn span_dict(stored: &Json) -> Json {
    let attributes: Map<String, Json> = match plain_attributes_json(&stored["attributes"]) {
        Json::Object(m) => m
            .into_iter()
            .map(|(k, v)| (k, Json::String(python_json(&v))))
            .collect(),
        _ => Map::new(),
    };
    let events: Vec<Json> = stored["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    json!({
                        "name": e["name"],
                        "time_unix_nano": e["time_unix_nano"],
                        "attributes": plain_attributes_json(&e["attributes"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let links: Vec<Json> = stored["links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| {
                    json!({
                        "trace_id": format!("tr-{}", hex_of_b64(&l["trace_id"]).as_str().unwrap_or_default()),
                        "span_id": hex_of_b64(&l["span_id"]),
                        "attributes": plain_attributes_json(&l["attributes"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "trace_id": stored["trace_id"],
        "span_id": stored["span_id"],
        "parent_span_id": stored["parent_span_id"],
        "name": stored["name"],
        "start_time_unix_nano": stored["start_time_unix_nano"],
        "end_time_unix_nano": stored["end_time_unix_nano"],
        "events": events,
        "status": {
            "code": stored["status"]["code"].as_str().unwrap_or("STATUS_CODE_UNSET"),
            "message": stored["status"]["message"].as_str().unwrap_or_default(),
        },
        "attributes": attributes,
        "links": links,
    })
}

/// The export's spans as Tarn keeps them. A span without a trace or span id is refused.
pub fn spans(request: &ExportTraceServiceRequest) -> Result<Vec<IngestSpan>, BadExport> {
    let mut out = vec![];
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                    return Err(BadExport(
                        "Invalid OpenTelemetry format: a span needs a 16-byte trace_id and an 8-byte span_id".into(),
                    ));
                }
                let span_type = string_attribute(s, "mlflow.spanType")
                    .map(|t| serde_json::from_str::<String>(t).unwrap_or_else(|_| t.to_string()));
                out.push(IngestSpan {
                    row: SpanRow {
                        trace_id: format!("tr-{}", hex(&s.trace_id)),
                        span_id: hex(&s.span_id),
                        parent_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                        name: s.name.clone(),
                        span_type,
                        status: status_name(s.status.as_ref().map_or(0, |st| st.code), ""),
                        start_ns: s.start_time_unix_nano as i64,
                        end_ns: (s.end_time_unix_nano != 0).then_some(s.end_time_unix_nano as i64),
                        content: span_json(s).to_string(),
                        search_text: search_text(s).to_string(),
                    },
                    inputs: string_attribute(s, "mlflow.spanInputs").map(str::to_string),
                    outputs: string_attribute(s, "mlflow.spanOutputs").map(str::to_string),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: (0..16).collect(),
                        span_id: (0..8).collect(),
                        name: "predict".into(),
                        start_time_unix_nano: 1_000_000_000,
                        end_time_unix_nano: 3_000_000_000,
                        attributes: vec![KeyValue {
                            key: "mlflow.spanInputs".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::String("{\"q\": 1}".into())),
                            }),
                        }],
                        status: Some(Status {
                            message: String::new(),
                            code: 2,
                        }),
                        ..Default::default()
                    }],
                }],
            }],
        }
    }

    #[test]
    fn protobuf_and_otlp_json_exports_read_alike() {
        let request = sample();
        let from_proto = read(&request.encode_to_vec(), "application/x-protobuf", None).unwrap();
        let json_body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "000102030405060708090a0b0c0d0e0f",
            "spanId": "0001020304050607",
            "name": "predict",
            "startTimeUnixNano": "1000000000",
            "endTimeUnixNano": "3000000000",
            "attributes": [{"key": "mlflow.spanInputs", "value": {"stringValue": "{\"q\": 1}"}}],
            "status": {"code": 2}
        }]}]}]});
        let from_json = read(
            json_body.to_string().as_bytes(),
            "application/json; charset=utf-8",
            None,
        )
        .unwrap();
        assert_eq!(spans(&from_proto).unwrap(), spans(&from_json).unwrap());
        let s = &spans(&from_proto).unwrap()[0];
        assert_eq!(s.row.trace_id, "tr-000102030405060708090a0b0c0d0e0f");
        assert_eq!(s.row.status, "ERROR");
        assert_eq!(s.row.end_ns, Some(3_000_000_000));
        assert_eq!(s.inputs.as_deref(), Some("{\"q\": 1}"));
        let content: Json = serde_json::from_str(&s.row.content).unwrap();
        assert_eq!(content["trace_id"], "AAECAwQFBgcICQoLDA0ODw==");
        assert_eq!(content["status"]["code"], "STATUS_CODE_ERROR");
    }

    #[test]
    fn bad_exports_say_why() {
        for (body, ctype, says) in [
            (
                &b"\xff\xff\xff"[..],
                "application/x-protobuf",
                "Invalid OpenTelemetry",
            ),
            (b"{", "application/json", "Invalid OpenTelemetry"),
            (b"{}", "application/json", "no spans found"),
            (b"{}", "text/plain", "Invalid Content-Type"),
        ] {
            let e = read(body, ctype, None).unwrap_err();
            assert!(e.0.contains(says), "{e:?}");
        }
        let e = read(b"x", "application/json", Some("br")).unwrap_err();
        assert!(e.0.contains("Unsupported Content-Encoding"));
        let bad_ids = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]});
        let e = read(bad_ids.to_string().as_bytes(), "application/json", None).unwrap_err();
        assert!(e.0.contains("Invalid id"), "{e:?}");
    }

    /// A kept span read back as MLflow's span dict: attributes as the JSON texts Python writes
    /// (whatever form the exporter sent), events' attributes plain, ids as sent.
    #[test]
    fn kept_spans_read_back_as_mlflows_span_dict() {
        let mut span = sample().resource_spans[0].scope_spans[0].spans[0].clone();
        span.attributes = vec![
            KeyValue {
                key: "inputs".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::Kvlist(KeyValueList {
                        values: vec![KeyValue {
                            key: "x".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::Array(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(any_value::Value::Int(7)),
                                    }],
                                })),
                            }),
                        }],
                    })),
                }),
            },
            KeyValue {
                key: "type".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::String("LLM".into())),
                }),
            },
        ];
        let dict = span_dict(&span_json(&span));
        assert_eq!(dict["attributes"]["inputs"], json!("{\"x\": [7]}"));
        assert_eq!(dict["attributes"]["type"], json!("\"LLM\""));
        assert_eq!(dict["span_id"], json!(b64(&span.span_id)));
        assert!(
            dict["status"]["code"]
                .as_str()
                .unwrap()
                .starts_with("STATUS_CODE_")
        );
    }
}
