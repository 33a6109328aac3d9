use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

use super::*;
use crate::attributes::{kv, kv_f64, kv_str};
use crate::derived::Limits;
use crate::genai::SpanFacts;

fn span(id: u8, parent: Option<u8>, attributes: Vec<KeyValue>, events: Vec<Event>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("s{id}"),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes,
        events,
        ..Default::default()
    }
}

fn trace() -> Vec<Span> {
    let event = |name: &str, attributes: Vec<KeyValue>| Event {
        name: name.into(),
        attributes,
        ..Default::default()
    };
    vec![
        span(
            1,
            None,
            vec![],
            vec![
                event(
                    "gen_ai.evaluation.result",
                    vec![
                        kv_str("gen_ai.evaluation.name", "relevance"),
                        kv_f64("gen_ai.evaluation.score.value", 0.8),
                    ],
                ),
                event("app.user_feedback", vec![kv_str("feedback.score", "1")]),
            ],
        ),
        span(
            2,
            Some(1),
            vec![
                kv_str("openinference.span.kind", "RETRIEVER"),
                kv_f64("retrieval.documents.0.document.score", 0.9),
                kv_f64("retrieval.documents.1.document.score", 0.5),
            ],
            vec![],
        ),
        span(
            3,
            Some(1),
            vec![
                kv_str("gen_ai.operation.name", "chat"),
                kv_str("gen_ai.request.model", "gpt-4o-mini"),
                kv(
                    "gen_ai.response.finish_reasons",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::StringValue("length".into())),
                        }],
                    }),
                ),
            ],
            vec![],
        ),
    ]
}

fn run(config: QualityConfig, spans: Vec<Span>) -> (Span, Arc<DerivedMetrics>) {
    let d = Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
        Limits::default(),
    ));
    let mut p = QualityProcessor::new(config, d.clone());
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut out = Vec::new();
    p.on_input(Batch::Traces(req), Instant::now(), &mut out);
    let Some(Batch::Traces(r)) = out.pop() else {
        panic!("traces out")
    };
    let root = r.resource_spans[0].scope_spans[0].spans[0].clone();
    (root, d)
}

fn q(root: &Span, signal: &str) -> Option<f64> {
    get_f64(&root.attributes, &format!("rag.quality.{signal}"))
}

fn feedback() -> Vec<FeedbackSource> {
    vec![FeedbackSource {
        event: Some("app.user_feedback".into()),
        attribute: "feedback.score".into(),
        min: -1.0,
        max: 1.0,
    }]
}

#[test]
fn every_signal_and_their_mean() {
    let (root, d) = run(
        QualityConfig {
            feedback: feedback(),
            ..QualityConfig::default()
        },
        trace(),
    );
    assert_eq!(q(&root, "retrieval_top"), Some(0.9));
    assert!((q(&root, "retrieval_mean").unwrap_or(0.0) - 0.7).abs() < 1e-12);
    assert_eq!(q(&root, "evaluation"), Some(0.8));
    assert_eq!(q(&root, "feedback"), Some(1.0), "1 on a -1..1 scale");
    assert_eq!(
        q(&root, "answer"),
        Some(0.0),
        "finish reason length: truncated"
    );
    assert!((q(&root, "score").unwrap_or(0.0) - (0.9 + 0.7 + 0.8 + 1.0 + 0.0) / 5.0).abs() < 1e-12);
    assert_eq!(get_f64(&root.attributes, "rag.quality.signals"), Some(5.0));
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(r#"rag_quality_flags_total{flag="truncated",service="unknown_service"} 1"#),
        "{text}"
    );
}

#[test]
fn weights_and_distance_scores() {
    let (root, _) = run(
        QualityConfig {
            weights: BTreeMap::from([("evaluation".to_string(), 3.0)]),
            ..QualityConfig::default()
        },
        trace(),
    );
    // No feedback source configured: four signals.
    assert!((q(&root, "score").unwrap_or(0.0) - (0.9 + 0.7 + 3.0 * 0.8 + 0.0) / 6.0).abs() < 1e-12);
    let (root, _) = run(
        QualityConfig {
            score_kind: ScoreKind::Distance,
            score_range: [0.0, 2.0],
            ..QualityConfig::default()
        },
        trace(),
    );
    // Distances 0.9 and 0.5 on 0..2: 1 - 0.45 = 0.55 and 1 - 0.25 = 0.75.
    assert!((q(&root, "retrieval_top").unwrap_or(0.0) - 0.75).abs() < 1e-12);
    assert!((q(&root, "retrieval_mean").unwrap_or(0.0) - 0.65).abs() < 1e-12);
}

#[test]
fn no_signal_no_score() {
    let (root, _) = run(
        QualityConfig::default(),
        vec![span(1, None, vec![], vec![])],
    );
    assert!(q(&root, "score").is_none());
    assert!(root.attributes.is_empty());
}

fn retrieval(id: u8, top_k: Option<i64>, docs: Option<&str>) -> Span {
    let mut attrs = vec![kv_str("gen_ai.operation.name", "retrieval")];
    if let Some(k) = top_k {
        attrs.push(kv("db.vector.query.top_k", Value::IntValue(k)));
    }
    if let Some(d) = docs {
        attrs.push(kv_str("gen_ai.retrieval.documents", d));
    }
    span(id, Some(1), attrs, vec![])
}

#[test]
fn coverage_is_returned_over_requested_and_an_empty_retrieval_scores_zero() {
    // Two retrievals: 2 of top_k 4 (0.5) and 3 of top_k 2 (capped at 1): mean 0.75. The
    // documents carry no score, so coverage is the only signal.
    let (root, _) = run(
        QualityConfig::default(),
        vec![
            span(1, None, vec![], vec![]),
            retrieval(2, Some(4), Some(r#"[{"id":"a"},{"id":"b"}]"#)),
            retrieval(3, Some(2), Some(r#"[{"id":"a"},{"id":"b"},{"id":"c"}]"#)),
        ],
    );
    assert_eq!(q(&root, "retrieval_coverage"), Some(0.75));
    assert_eq!(q(&root, "score"), Some(0.75));

    // An empty one: 0, flagged, even without top_k.
    let (root, d) = run(
        QualityConfig::default(),
        vec![
            span(1, None, vec![], vec![]),
            retrieval(2, None, Some("[]")),
        ],
    );
    assert_eq!(q(&root, "retrieval_coverage"), Some(0.0));
    assert_eq!(
        d.sample(
            "rag_quality_flags_total",
            &[("flag", "empty_retrieval"), ("service", "unknown_service")]
        ),
        Some(1.0)
    );

    // No record of the documents at all: no coverage signal (and so no score).
    let (root, _) = run(
        QualityConfig::default(),
        vec![span(1, None, vec![], vec![]), retrieval(2, Some(4), None)],
    );
    assert_eq!(q(&root, "retrieval_coverage"), None);
    assert_eq!(q(&root, "score"), None);
}

#[test]
fn lexical_groundedness_by_hand() {
    // Content words (3+ letters, no stopwords): answer {paris, capital, france}; all in the
    // retrieved text.
    assert_eq!(
        groundedness(
            "Paris is the capital of France.",
            "France's capital city is Paris."
        ),
        Some(1.0)
    );
    // {paris, hosts, louvre, museum}: only paris is found: 1/4.
    assert_eq!(
        groundedness("Paris hosts the Louvre museum", "Paris, France"),
        Some(0.25)
    );
    assert_eq!(groundedness("", "text"), None);
    assert_eq!(groundedness("an answer", ""), None);

    let llm = |text: &str| {
        span(
            3,
            Some(1),
            vec![
                kv_str("gen_ai.operation.name", "chat"),
                kv_str(
                    "gen_ai.output.messages",
                    &format!(
                        r#"[{{"role":"assistant","parts":[{{"type":"text","content":"{text}"}}]}}]"#
                    ),
                ),
            ],
            vec![],
        )
    };
    let docs = vec![
        kv_str("openinference.span.kind", "RETRIEVER"),
        kv_str("retrieval.documents.0.document.content", "Paris, France"),
    ];
    let trace = |text: &str| {
        vec![
            span(1, None, vec![], vec![]),
            span(2, Some(1), docs.clone(), vec![]),
            llm(text),
        ]
    };
    // Off by default.
    let (root, _) = run(
        QualityConfig::default(),
        trace("Paris hosts the Louvre museum"),
    );
    assert_eq!(q(&root, "groundedness"), None);
    let on = QualityConfig {
        groundedness: true,
        ..Default::default()
    };
    let (root, _) = run(on.clone(), trace("Paris hosts the Louvre museum"));
    assert_eq!(q(&root, "groundedness"), Some(0.25));
    // No top_k, so no coverage; answer 1 (no problem) and
    // groundedness 0.25: score 0.625.
    assert_eq!(q(&root, "retrieval_coverage"), None);
    assert_eq!(q(&root, "score"), Some(0.625));

    // An empty answer is flagged and scores the answer 0.
    let (root, d) = run(on, trace(""));
    assert_eq!(q(&root, "answer"), Some(0.0));
    assert_eq!(
        d.sample(
            "rag_quality_flags_total",
            &[("flag", "empty_output"), ("service", "unknown_service")]
        ),
        Some(1.0)
    );
}

// Found by fuzz/fuzz_targets/genai_view.rs: `retrieval.documents.18446744073709551615.*` made the
// document count overflow (a panic with debug assertions; a count of 0 and a false empty
// retrieval without).
#[test]
fn a_document_index_of_usize_max_neither_panics_nor_reads_as_empty() {
    let mut s = retrieval(2, Some(4), None);
    s.attributes.push(kv_str(
        "retrieval.documents.18446744073709551615.document.id",
        "d",
    ));
    let (root, d) = run(
        QualityConfig::default(),
        vec![span(1, None, vec![], vec![]), s],
    );
    assert_eq!(q(&root, "retrieval_coverage"), Some(1.0));
    assert_eq!(
        d.sample(
            "rag_quality_flags_total",
            &[("flag", "empty_retrieval"), ("service", "unknown_service")]
        ),
        None
    );
}

#[test]
fn an_agent_stopped_at_its_limit_did_not_answer() {
    // The last model call finished normally ("stop"), but the run it belonged to was stopped at
    // its limit: answer 0, flagged agent_failed. The same run ending ok answers 1.
    let trace_with = |outcome: &str| {
        vec![
            span(1, None, vec![], vec![]),
            span(
                2,
                Some(1),
                vec![
                    kv_str("gen_ai.operation.name", "invoke_agent"),
                    kv_str("rag.agent.outcome", outcome),
                ],
                vec![],
            ),
            span(
                3,
                Some(2),
                vec![
                    kv_str("gen_ai.operation.name", "chat"),
                    kv_str("gen_ai.request.model", "gpt-4o-mini"),
                    kv_str("gen_ai.response.finish_reasons", "stop"),
                ],
                vec![],
            ),
        ]
    };
    let (root, d) = run(QualityConfig::default(), trace_with("limit_reached"));
    assert_eq!(q(&root, "answer"), Some(0.0));
    let mut text = String::new();
    d.encode_prometheus(&mut text);
    assert!(
        text.contains(
            r#"rag_quality_flags_total{flag="agent_failed",service="unknown_service"} 1"#
        ),
        "{text}"
    );
    let (root, _) = run(QualityConfig::default(), trace_with("ok"));
    assert_eq!(q(&root, "answer"), Some(1.0));
}

/// A stage that keeps the facts handed to it.
struct Probe(Arc<std::sync::Mutex<Vec<Option<Facts>>>>);

impl Processor for Probe {
    fn on_input(&mut self, batch: Batch, _now: Instant, out: &mut Vec<Batch>) {
        out.push(batch);
    }

    fn on_input_with(
        &mut self,
        batch: Batch,
        facts: Option<Facts>,
        _now: Instant,
        out: &mut Vec<WithFacts>,
    ) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(facts.clone());
        }
        out.push((batch, facts));
    }
}

fn request(spans: Vec<Span>) -> Batch {
    Batch::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

#[test]
fn facts_read_by_genai_cross_trace_assembly_to_the_stages_after() {
    use crate::processor::genai::{GenAiConfig, GenAiProcessor};
    use crate::processor::trace_assembly::{
        AssemblyCounters, Mode, TraceAssembly, TraceAssemblyConfig,
    };
    use crate::processor::{run_chain, shutdown_chain, tick_chain};
    let d = Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
        Limits::default(),
    ));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut chain: Vec<Box<dyn Processor>> = vec![
        Box::new(GenAiProcessor::new(GenAiConfig::default(), d.clone()).expect("genai")),
        Box::new(TraceAssembly::new(
            TraceAssemblyConfig {
                mode: Mode::Hold,
                wait_after_root: std::time::Duration::from_secs(1),
                ..TraceAssemblyConfig::default()
            },
            Vec::new(),
            AssemblyCounters::default(),
        )),
        Box::new(Probe(seen.clone())),
    ];
    let mut llm = trace().remove(2);
    llm.attributes
        .push(kv("gen_ai.usage.input_tokens", Value::IntValue(120)));
    llm.attributes
        .push(kv("gen_ai.usage.output_tokens", Value::IntValue(30)));
    let t0 = Instant::now();
    // The trace comes in two requests; trace assembly holds the first until the root is in.
    let (root, retrieval) = {
        let mut t = trace();
        let r = t.remove(1);
        (t.remove(0), r)
    };
    let mut out = run_chain(&mut chain, vec![request(vec![retrieval, llm])], t0);
    out.extend(run_chain(&mut chain, vec![request(vec![root])], t0));
    assert!(out.is_empty(), "held until a second after the root");
    out.extend(tick_chain(
        &mut chain,
        t0 + std::time::Duration::from_secs(2),
    ));
    out.extend(shutdown_chain(&mut chain, t0));
    assert_eq!(out.iter().map(Batch::item_count).sum::<usize>(), 3);
    let seen = seen.lock().expect("probe");
    assert_eq!(seen.len(), 1, "one request left trace assembly");
    let facts = seen[0].as_ref().expect("facts handed along");
    let span = |id: u8| Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        ..Default::default()
    };
    assert_eq!(facts.len(), 3, "every span's facts, the plain root's too");
    let root = facts.get(&span(1)).expect("root");
    assert_eq!(root.stage, None, "the root is no GenAI span");
    let retrieval = facts.get(&span(2)).expect("retrieval");
    assert_eq!(retrieval.stage, Some(Stage::Retrieval));
    assert_eq!(retrieval.documents, 2);
    assert_eq!(&*retrieval.document_scores, &[0.9, 0.5]);
    let llm = facts.get(&span(3)).expect("llm");
    assert_eq!(llm.stage, Some(Stage::Llm));
    assert_eq!(llm.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!((llm.input_tokens, llm.output_tokens), (Some(120), Some(30)));
    assert!(llm.truncated, "finish reason length");
    assert!(!llm.content_filtered);
}

#[test]
fn quality_judges_by_the_facts_handed_to_it_and_reads_the_others() {
    let d = Arc::new(DerivedMetrics::new(
        crate::derived::defs::DEFS,
        Limits::default(),
    ));
    let mut p = QualityProcessor::new(QualityConfig::default(), d);
    // The spans say the answer was cut (finish reason `length`) and the documents scored 0.9
    // and 0.5; the facts handed along say the answer came whole, and give the retrieval one
    // document of 0.3. The stage believes the facts (read once, upstream) and reads the view
    // only of the root, which came without.
    let mut facts = Facts::default();
    let mut names = Names::default();
    let spans = trace();
    let mut llm = SpanFacts::read(&spans[2], &mut names);
    llm.truncated = false;
    facts.insert(&spans[2], llm);
    let mut retrieval = SpanFacts::read(&spans[1], &mut names);
    retrieval.documents = 1;
    retrieval.document_scores = vec![0.3].into();
    facts.insert(&spans[1], retrieval);
    let mut out = Vec::new();
    p.on_input_with(request(spans), Some(facts), Instant::now(), &mut out);
    let Some((Batch::Traces(r), Some(facts))) = out.pop() else {
        panic!("traces out, with their facts")
    };
    let root = &r.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        q(root, "answer"),
        Some(1.0),
        "not truncated, as the facts say"
    );
    assert_eq!(q(root, "retrieval_top"), Some(0.3));
    assert_eq!(q(root, "retrieval_mean"), Some(0.3));
    assert_eq!(
        q(root, "evaluation"),
        Some(0.8),
        "the root's own, read from its view"
    );
    assert_eq!(facts.len(), 3, "the root's facts were read and go on");
}
