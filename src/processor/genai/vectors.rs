//! `drop_embedding_vectors`: embedding vectors cost much to store and tell little. OpenInference
//! writes each one (1,536 floats for text-embedding-3-small, about 60 KB of OTLP/JSON) as the
//! attribute `embedding.embeddings.N.embedding.vector`, and again inside the response JSON in
//! `output.value`. Both go; the text embedded, the model and the usage stay.

use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;

/// Remove the span's embedding vectors; how many were removed (each copy counts).
pub fn drop_embedding_vectors(span: &mut Span) -> u64 {
    let before = span.attributes.len();
    span.attributes.retain(|kv| !is_vector_key(&kv.key));
    let mut n = (before - span.attributes.len()) as u64;
    for kv in &mut span.attributes {
        if kv.key != OUTPUT_VALUE {
            continue;
        }
        let Some(AnyValue {
            value: Some(Value::StringValue(s)),
        }) = &mut kv.value
        else {
            continue;
        };
        // Only a response that can hold vectors is parsed.
        if !s.contains("\"embedding\"") {
            continue;
        }
        if let Some((stripped, k)) = strip_response(s) {
            *s = stripped;
            n += k;
        }
    }
    n
}

/// OpenInference's response body attribute.
const OUTPUT_VALUE: &str = "output.value";

/// `embedding.embeddings.<N>.embedding.vector`
fn is_vector_key(k: &str) -> bool {
    k.strip_prefix("embedding.embeddings.")
        .and_then(|rest| rest.strip_suffix(".embedding.vector"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// An embeddings response (`{"data": [{"embedding": [...]}, ...], ...}`) without its vectors
/// (float arrays, or base64 strings), and how many there were; None if it has none.
fn strip_response(s: &str) -> Option<(String, u64)> {
    let mut v: serde_json::Value = serde_json::from_str(s).ok()?;
    let data = v.get_mut("data")?.as_array_mut()?;
    let mut n = 0;
    for item in data {
        if let Some(o) = item.as_object_mut()
            && matches!(
                o.get("embedding"),
                Some(serde_json::Value::Array(_) | serde_json::Value::String(_))
            )
        {
            o.remove("embedding");
            n += 1;
        }
    }
    if n == 0 {
        return None;
    }
    Some((serde_json::to_string(&v).ok()?, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{get_str, kv, kv_str};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use prost::Message;

    fn vector(n: usize) -> Value {
        Value::ArrayValue(ArrayValue {
            values: (0..n)
                .map(|i| AnyValue {
                    value: Some(Value::DoubleValue(i as f64 / 1000.0)),
                })
                .collect(),
        })
    }

    #[test]
    fn vectors_go_and_everything_else_stays() {
        let mut s = Span {
            attributes: vec![
                kv_str("embedding.model_name", "text-embedding-3-small"),
                kv_str("embedding.embeddings.0.embedding.text", "what is RAG?"),
                kv("embedding.embeddings.0.embedding.vector", vector(1536)),
                kv("embedding.embeddings.1.embedding.vector", vector(1536)),
                kv("embedding.embeddings.x.embedding.vector", vector(2)),
                kv_str(
                    "output.value",
                    r#"{"data":[{"embedding":[0.1,0.2],"index":0},{"embedding":"AAAA","index":1}],"usage":{"prompt_tokens":9}}"#,
                ),
            ],
            ..Default::default()
        };
        assert_eq!(drop_embedding_vectors(&mut s), 4);
        let keys: Vec<&str> = s.attributes.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "embedding.model_name",
                "embedding.embeddings.0.embedding.text",
                "embedding.embeddings.x.embedding.vector",
                "output.value"
            ]
        );
        let out: serde_json::Value =
            serde_json::from_str(get_str(&s.attributes, "output.value").expect("output"))
                .expect("json");
        assert_eq!(
            out,
            serde_json::json!({"data": [{"index": 0}, {"index": 1}], "usage": {"prompt_tokens": 9}})
        );
        // Nothing more to remove; an output that is not an embeddings response is untouched.
        assert_eq!(drop_embedding_vectors(&mut s), 0);
        let mut chat = Span {
            attributes: vec![kv_str("output.value", r#"the "embedding" of {a}"#)],
            ..Default::default()
        };
        assert_eq!(drop_embedding_vectors(&mut chat), 0);
        assert_eq!(
            get_str(&chat.attributes, "output.value"),
            Some(r#"the "embedding" of {a}"#)
        );
    }

    #[test]
    fn off_by_default_on_in_the_embedded_default_and_counted() {
        use crate::processor::genai::{GenAiConfig, GenAiProcessor};
        assert!(!GenAiConfig::default().drop_embedding_vectors);
        let root: serde_json::Value =
            crate::config::yaml::from_str(include_str!("../../../config/default.yaml"))
                .expect("embedded default");
        let g: GenAiConfig = serde_json::from_value(root["processors"]["genai"].clone())
            .expect("the embedded default has a genai processor");
        assert!(g.drop_embedding_vectors);
        let counter = prometheus_client::metrics::counter::Counter::default();
        let derived = std::sync::Arc::new(crate::derived::DerivedMetrics::new(
            crate::derived::defs::DEFS,
            Default::default(),
        ));
        let p = GenAiProcessor::new(g.clone(), derived)
            .expect("build")
            .with_vectors_counter(counter.clone());
        let mut s = Span {
            name: "CreateEmbeddings".into(),
            attributes: vec![
                kv_str("openinference.span.kind", "EMBEDDING"),
                kv("embedding.embeddings.0.embedding.vector", vector(8)),
            ],
            ..Default::default()
        };
        p.enrich(&mut s, "svc", std::time::Instant::now());
        assert_eq!(counter.get(), 1);
        assert!(s.attributes.iter().all(|k| !k.key.ends_with(".vector")));
    }

    /// The bytes saved on the OpenInference capture, in OTLP protobuf (what an exporter sends).
    #[test]
    fn openinference_capture_shrinks() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/otlp/openinference-normal-http.jsonl"
        );
        let text = std::fs::read_to_string(path).expect("capture");
        let (mut before, mut after, mut vectors) = (0, 0, 0);
        let (mut json_before, mut json_after) = (0, 0);
        for line in text.lines().filter(|l| l.starts_with("{\"resourceSpans\"")) {
            let mut r: ExportTraceServiceRequest = serde_json::from_str(line).expect("request");
            before += r.encoded_len();
            json_before += serde_json::to_vec(&r).expect("json").len();
            for s in r
                .resource_spans
                .iter_mut()
                .flat_map(|rs| &mut rs.scope_spans)
                .flat_map(|ss| &mut ss.spans)
            {
                vectors += drop_embedding_vectors(s);
            }
            after += r.encoded_len();
            json_after += serde_json::to_vec(&r).expect("json").len();
        }
        eprintln!(
            "openinference-normal-http.jsonl: {before} -> {after} protobuf bytes ({:.1} % saved), \
             {json_before} -> {json_after} OTLP/JSON bytes ({:.1} % saved), {vectors} vectors",
            100.0 * (before - after) as f64 / before as f64,
            100.0 * (json_before - json_after) as f64 / json_before as f64
        );
        // 5 embedding calls, each vector twice (attribute and response).
        assert_eq!(vectors, 10);
        assert!(after * 2 < before, "{before} -> {after}");
    }
}
