//! What the generated traffic looks like: services, models, the retried calls, and the pools of
//! templates for the clean and the faulty phase of a scenario.

use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use rand::RngExt;
use rand::rngs::StdRng;

use super::template::{Template, WireError};
use crate::synth::{Fault, Profile, agent_trace, rag_trace};
use ragwatch::attributes::{get_str, kv_i64, kv_str};

/// Spans held by the templates of one phase, at most (more templates give more variety).
const POOL_SPANS: u64 = 64 * 1024;
const MAX_TEMPLATES: u64 = 64;
const MIN_TEMPLATES: u64 = 4;
/// Times in templates start here (any value works; sends shift them to now).
const TEMPLATE_BASE_NS: u64 = 1_000_000_000_000;

/// The provider serving a model, by its name.
pub fn provider_of(model: &str) -> &'static str {
    let m = model.to_ascii_lowercase();
    if m.starts_with("claude") {
        "anthropic"
    } else if m.starts_with("gemini") {
        "gcp.gemini"
    } else if m.starts_with("mistral") || m.starts_with("codestral") {
        "mistral_ai"
    } else if m.starts_with("command") {
        "cohere"
    } else {
        "openai"
    }
}

/// The profiles of every (service, model) pair: services differ in their retrieval and
/// embedding speed and whether they rerank, models in time to first token and answer speed.
pub fn profiles(services: usize, models: &[String]) -> Vec<Vec<Profile>> {
    (0..services)
        .map(|i| {
            let service = format!("rag-api-{i}");
            models
                .iter()
                .enumerate()
                .map(|(m, model)| {
                    let mut p = Profile::new(&service, model);
                    p.provider = provider_of(model).into();
                    p.embed_ms *= 1.0 + 0.2 * (i % 3) as f64;
                    p.retrieval_ms *= 1.0 + 0.25 * (i % 4) as f64;
                    p.rerank = i % 2 == 1;
                    p.ttft_ms *= 1.0 + 0.3 * (m % 4) as f64;
                    p.per_token_ms *= 1.0 + 0.25 * (m % 4) as f64;
                    p.output_tokens *= 1.0 + 0.5 * (i % 2) as f64;
                    p
                })
                .collect()
        })
        .collect()
}

fn is_ok_chat(s: &Span) -> bool {
    get_str(&s.attributes, "gen_ai.operation.name") == Some("chat")
        && s.status
            .as_ref()
            .is_none_or(|st| st.code != StatusCode::Error as i32)
}

/// Turn the first successful chat call of a trace into a failed attempt (rate limited or an
/// upstream error) followed, after a back-off, by the successful retry, which carries
/// `http.request.resend_count = 1`. Everything after the call moves later; the root still
/// succeeds. False when the trace has no successful chat call.
pub fn add_retry(rs: &mut ResourceSpans, rng: &mut StdRng) -> bool {
    let Some(ss) = rs.scope_spans.first_mut() else {
        return false;
    };
    let Some(i) = ss.spans.iter().position(is_ok_chat) else {
        return false;
    };
    let rate_limited = rng.random::<f64>() < 0.7;
    let fail_ns = if rate_limited {
        rng.random_range(20_000_000..120_000_000u64)
    } else {
        rng.random_range(200_000_000..2_000_000_000u64)
    };
    let backoff_ns = rng.random_range(100_000_000..1_000_000_000u64);
    let shift = fail_ns + backoff_ns;
    let call_start = ss.spans[i].start_time_unix_nano;

    let mut failed = ss.spans[i].clone();
    failed.end_time_unix_nano = failed.start_time_unix_nano + fail_ns;
    failed.attributes.retain(|kv| {
        matches!(
            kv.key.as_str(),
            "gen_ai.operation.name"
                | "gen_ai.provider.name"
                | "gen_ai.request.model"
                | "gen_ai.usage.input_tokens"
        )
    });
    failed.attributes.push(kv_str(
        "error.type",
        if rate_limited { "429" } else { "500" },
    ));
    failed.status = Some(Status {
        code: StatusCode::Error as i32,
        message: if rate_limited {
            "rate limited".into()
        } else {
            "upstream error".into()
        },
    });
    // A placeholder id, unique in the trace (the template rewrites every id anyway).
    failed.span_id = u64::MAX.to_be_bytes().to_vec();

    for s in ss.spans.iter_mut() {
        if s.parent_span_id.is_empty() {
            s.end_time_unix_nano += shift;
            for e in s.events.iter_mut() {
                e.time_unix_nano += shift;
            }
        } else if s.start_time_unix_nano >= call_start {
            s.start_time_unix_nano += shift;
            s.end_time_unix_nano += shift;
        }
    }
    ss.spans[i]
        .attributes
        .push(kv_i64("http.request.resend_count", 1));
    ss.spans.insert(i, failed);
    true
}

/// What to build a pool from.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub services: usize,
    pub models: Vec<String>,
    /// Spans per request, rounded down to whole traces (at least one trace).
    pub batch: u64,
    /// Share of traces with a failed-then-retried model call.
    pub retry_share: f64,
    /// Share of traces that are agent runs.
    pub agent_share: f64,
}

/// Templates for one phase (the clean traffic, or the traffic under `fault`).
pub fn pool(
    spec: &PoolSpec,
    fault: Option<Fault>,
    rng: &mut StdRng,
) -> Result<Vec<Template>, WireError> {
    let profiles = profiles(spec.services.max(1), &spec.models);
    let n = (POOL_SPANS / spec.batch.max(1)).clamp(MIN_TEMPLATES, MAX_TEMPLATES);
    let mut out = Vec::with_capacity(n as usize);
    let mut pending: Option<ResourceSpans> = None;
    for _ in 0..n {
        let mut traces = Vec::new();
        let mut spans = 0u64;
        loop {
            let rs = match pending.take() {
                Some(rs) => rs,
                None => {
                    let svc = &profiles[rng.random_range(0..profiles.len())];
                    let p = &svc[rng.random_range(0..svc.len())];
                    // Traces of one batch start over about a second.
                    let start = TEMPLATE_BASE_NS + rng.random_range(0..1_000_000_000u64);
                    if spec.agent_share > 0.0 && rng.random::<f64>() < spec.agent_share {
                        agent_trace(rng, p, fault, start)
                    } else {
                        let mut rs = rag_trace(rng, p, fault, start);
                        if rng.random::<f64>() < spec.retry_share {
                            add_retry(&mut rs, rng);
                        }
                        rs
                    }
                }
            };
            let k: u64 = rs.scope_spans.iter().map(|ss| ss.spans.len() as u64).sum();
            if spans > 0 && spans + k > spec.batch {
                pending = Some(rs);
                break;
            }
            spans += k;
            traces.push(rs);
            if spans >= spec.batch {
                break;
            }
        }
        out.push(Template::new(traces)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_retried_call_fails_first_then_succeeds_later() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut p = Profile::new("s", "gpt-4o");
        p.error_rate = 0.0;
        let mut rs = rag_trace(&mut rng, &p, None, 1_000_000_000);
        let before = rs.scope_spans[0].spans.clone();
        assert!(add_retry(&mut rs, &mut rng));
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), before.len() + 1);
        let chats: Vec<&Span> = spans
            .iter()
            .filter(|s| get_str(&s.attributes, "gen_ai.operation.name") == Some("chat"))
            .collect();
        assert_eq!(chats.len(), 2);
        assert!(!is_ok_chat(chats[0]));
        assert!(is_ok_chat(chats[1]));
        assert!(chats[0].end_time_unix_nano < chats[1].start_time_unix_nano);
        let root = spans.iter().find(|s| s.parent_span_id.is_empty());
        let root = root.expect("root");
        assert!(root.status.is_none());
        assert!(
            spans
                .iter()
                .all(|s| s.end_time_unix_nano <= root.end_time_unix_nano)
        );
    }

    #[test]
    fn batches_hold_whole_traces_up_to_the_batch_size() {
        let mut rng = StdRng::seed_from_u64(2);
        let spec = PoolSpec {
            services: 3,
            models: vec!["gpt-4o".into(), "claude-sonnet-4".into()],
            batch: 100,
            retry_share: 0.1,
            agent_share: 0.0,
        };
        let pool = pool(&spec, None, &mut rng).expect("pool");
        assert_eq!(pool.len(), MAX_TEMPLATES as usize);
        for t in &pool {
            assert!(t.spans() <= 100 && t.spans() > 90, "{}", t.spans());
        }
        let one = PoolSpec { batch: 1, ..spec };
        for t in pool_of(&one) {
            assert!((4..=7).contains(&t.spans()), "{}", t.spans());
        }
    }

    fn pool_of(spec: &PoolSpec) -> Vec<Template> {
        pool(spec, None, &mut StdRng::seed_from_u64(3)).expect("pool")
    }
}
