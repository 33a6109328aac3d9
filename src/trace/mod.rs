//! The whole-trace vocabulary the processors share: a batch's spans grouped by trace, each span's
//! parent, the stage that owns each span's time, and the critical path of a trace.

pub mod path;
pub mod summary;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::names::attrs as a;

/// The spans of one trace within a batch, each with its resource's service name.
pub struct TraceSpans<'a> {
    /// The root's service (else the first span's).
    pub service: &'a str,
    pub spans: Vec<(&'a str, &'a mut Span)>,
}

impl TraceSpans<'_> {
    /// The position of the root span, if the trace has it.
    pub fn root(&self) -> Option<usize> {
        self.spans
            .iter()
            .position(|(_, s)| s.parent_span_id.is_empty())
    }
}

/// std's HashMap with hashbrown's default hasher (foldhash): std's SipHash showed in the
/// profile of the per-trace indexes (span id → position), which need no DoS resistance here
/// (a trace's spans are bounded). std's map rather than hashbrown's, whose destructor keeps
/// borrows alive to the end of the scope.
pub type FastMap<K, V> = std::collections::HashMap<K, V, hashbrown::DefaultHashBuilder>;

/// Group a batch's spans by trace, in order of first appearance (`trace_assembly` in hold mode
/// hands whole traces to the stages after it).
pub fn group_by_trace(
    r: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> Vec<TraceSpans<'_>> {
    // foldhash (hashbrown's default), and a trace id copied once per trace, not once per span.
    let mut index: hashbrown::HashMap<Vec<u8>, usize> = hashbrown::HashMap::new();
    let mut out: Vec<TraceSpans<'_>> = Vec::new();
    for rs in &mut r.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|res| crate::attributes::service_name(&res.attributes))
            .unwrap_or("unknown_service");
        for s in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
            let i = *index.entry_ref(s.trace_id.as_slice()).or_insert_with(|| {
                out.push(TraceSpans {
                    service,
                    spans: Vec::new(),
                });
                out.len() - 1
            });
            if s.parent_span_id.is_empty() {
                out[i].service = service;
            }
            out[i].spans.push((service, s));
        }
    }
    out
}

pub fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Value> {
    crate::attributes::get(&s.attributes, k)
}

pub(crate) fn stage_of(s: &Span) -> Option<&str> {
    match attr(s, a::RAG_STAGE) {
        Some(Value::StringValue(st)) => Some(st.as_str()),
        _ => None,
    }
}

pub use crate::attributes::hex;

/// The stage each span's time belongs to, and the span that owns that time.
///
/// A span with a `rag.stage` owns its time under that stage (an unknown value counts as
/// `other`). A span without one beneath a staged span (OpenLIT's HTTP client span `POST` under
/// a chat call, a database driver's span under a retrieval) is part of its nearest staged
/// ancestor: that ancestor owns its time, under its stage. Any other span is the application's
/// own code: it owns its time, under [`APP`]. So every stage written or used as a label is one
/// of the fixed stage names or `app`, never a span's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub stage: Vec<&'static str>,
    pub owner: Vec<usize>,
}

/// The stage of time owned by the application's own (non-GenAI) spans.
pub use crate::names::values::APP_STAGE as APP;

/// Each span's parent, by index (None for a root, a span whose parent is absent, or one that
/// names itself).
pub fn parents(spans: &[Span]) -> Vec<Option<usize>> {
    let index: hashbrown::HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_slice(), i))
        .collect();
    spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            index
                .get(s.parent_span_id.as_slice())
                .copied()
                .filter(|p| *p != i && !s.parent_span_id.is_empty())
        })
        .collect()
}

impl Owners {
    pub fn of(spans: &[Span]) -> Owners {
        let n = spans.len();
        let parent = parents(spans);
        let own: Vec<Option<&'static str>> = spans.iter().map(fixed_stage).collect();
        // Resolved owner per span; resolved top-down along each span's ancestry, iteratively
        // (deep traces) and safely on cycles (a span in a cycle with no staged member is `app`).
        let mut owner: Vec<Option<usize>> = vec![None; n];
        let mut walk: Vec<usize> = Vec::new();
        let mut on_walk = vec![false; n];
        for i in 0..n {
            if owner[i].is_some() {
                continue;
            }
            walk.clear();
            let mut cur = i;
            // The owner found above the walk, if any staged ancestor exists.
            let found: Option<usize> = loop {
                if let Some(o) = owner[cur] {
                    break (own[o].is_some()).then_some(o);
                }
                if own[cur].is_some() {
                    owner[cur] = Some(cur);
                    break Some(cur);
                }
                if std::mem::replace(&mut on_walk[cur], true) {
                    break None;
                }
                walk.push(cur);
                match parent[cur] {
                    Some(p) => cur = p,
                    None => break None,
                }
            };
            for &w in &walk {
                on_walk[w] = false;
                owner[w] = Some(found.unwrap_or(w));
            }
        }
        let owner: Vec<usize> = owner
            .iter()
            .enumerate()
            .map(|(i, o)| o.unwrap_or(i))
            .collect();
        let stage = owner.iter().map(|&o| own[o].unwrap_or(APP)).collect();
        Owners { stage, owner }
    }

    /// Whether span `i` is part of another span (a non-GenAI span beneath a GenAI one).
    pub fn absorbed(&self, i: usize) -> bool {
        self.owner.get(i).is_some_and(|&o| o != i)
    }
}

/// A span's own `rag.stage`, as one of the fixed names (`other` for an unknown value).
fn fixed_stage(s: &Span) -> Option<&'static str> {
    let st = stage_of(s)?;
    Some(
        crate::stage::Stage::ALL
            .iter()
            .map(|x| x.as_str())
            .find(|x| *x == st)
            .unwrap_or(crate::stage::Stage::Other.as_str()),
    )
}
