//! Small helpers for OTLP attributes, shared by every component that reads or writes them.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// The value of attribute `key`, if present.
pub fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// A string attribute.
pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(attrs, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A numeric attribute, int or double.
pub fn get_f64(attrs: &[KeyValue], key: &str) -> Option<f64> {
    match get(attrs, key)? {
        Value::DoubleValue(x) => Some(*x),
        Value::IntValue(x) => Some(*x as f64),
        _ => None,
    }
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub fn kv_str(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_string()))
}

pub fn kv_f64(key: &str, v: f64) -> KeyValue {
    kv(key, Value::DoubleValue(v))
}

/// An int attribute (values beyond i64 saturate).
pub fn kv_i64(key: &str, v: u64) -> KeyValue {
    kv(key, Value::IntValue(v.min(i64::MAX as u64) as i64))
}

/// Add `key` unless the span (or whatever owns `attrs`) already has it: never overwrite what the
/// application set.
pub fn put(attrs: &mut Vec<KeyValue>, key: &str, value: Value) {
    if get(attrs, key).is_none() {
        attrs.push(kv(key, value));
    }
}

/// The `service.name` of a resource's attributes.
pub fn service_name(resource_attrs: &[KeyValue]) -> Option<&str> {
    get_str(resource_attrs, "service.name")
}

/// Lowercase hex, as trace and span ids are written in OTLP/JSON.
pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// A span's duration in seconds (0 when it ends before it starts).
pub fn duration_secs(s: &opentelemetry_proto::tonic::trace::v1::Span) -> f64 {
    s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e9
}

/// Whether a span failed: its status is ERROR (the reliable signal; `error.type` is not).
pub fn is_error(s: &opentelemetry_proto::tonic::trace::v1::Span) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.code == opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32
    })
}
