//! Scale out, measured (issue #17): one ragwatch instance gets the whole of a synthetic stream,
//! and three replicas get the same stream partitioned by trace id the way the OpenTelemetry
//! Collector's `loadbalancing` exporter (`routing_key: traceID`) partitions it. A real Prometheus
//! scrapes all four. Then:
//!
//! - every counter and histogram ragwatch derives, summed over the replicas, equals the single
//!   instance's, series by series (exactly for counts, within float rounding for sums of
//!   durations and costs), and so does every dashboard query built on them and on the additive
//!   gauges and self-metrics (run over the totals: `rate` and `increase` removed, since the
//!   two groups' scrapes fall at different moments);
//! - each replica's SLO figures lie within the sampling bound the README states ("Scale out");
//! - no instance reports an anomaly on the clean stream's RAG services (the agent service's
//!   output tokens are a known exception, below).
//!
//! Skipped with a message when Prometheus is missing, unless RAGWATCH_INTEROP=1 (.ci/run).

use crate::harness;
use crate::harness::tools::collect_exprs;
use crate::harness::tools::start_prometheus;
use crate::harness::tools::tool;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::backend::Backend;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use ragwatch::Service;
use ragwatch::derived::Kind;
use ragwatch::derived::defs;
use ragwatch_loadgen::synth::{Profile, agent_trace, rag_trace};
use rand::SeedableRng;
use rand::rngs::StdRng;

// ---------------------------------------------------------------------------------------------
// The partitioner: the Collector's consistent-hash ring, written again from its description.
// ---------------------------------------------------------------------------------------------

/// The ring of the Collector's `loadbalancing` exporter, as in opentelemetry-collector-contrib
/// `exporter/loadbalancingexporter/consistent_hashing.go` since PR #41271 (July 2025):
///
/// - positions run over 0..36,000 ("360 degrees with two decimal places");
/// - each endpoint, taken in sorted order (the static and DNS resolvers sort what they resolve),
///   gets 100 points: the CRC-32 (IEEE) of the endpoint's bytes followed by the point's index as
///   4 little-endian bytes, modulo 36,000. A point that lands on a taken position moves to the
///   next one, at most 10 times; one that has moved 10 times is dropped;
/// - a key goes to the first point at or after CRC-32(key) mod 36,000, wrapping to the first.
///
/// With `routing_key: traceID` the key is the trace id's 16 bytes (`routingIdentifiersFromTraces`
/// in `trace_exporter.go`), after the batch is split per trace; the pieces for one endpoint are
/// merged into one request. (PR #49585, July 2026, orders all points globally before resolving
/// collisions and raises the defaults to 200 points over 131,071 positions: another ring, the
/// same routing — every span of a trace to one replica, a trace's replica independent of its
/// content.) Before PR #41271 the index was one byte (`byte(i)`): `index_width` 1 gives that
/// form, whose published test vectors check this code below.
struct Ring {
    /// (position, endpoint index), sorted by position.
    points: Vec<(u32, usize)>,
}

const POSITIONS: u32 = 36_000;
const WEIGHT: u32 = 100;
const PROBE_LIMIT: u32 = 10;

impl Ring {
    fn new(endpoints: &[&str], weight: u32, index_width: usize) -> Ring {
        let mut order: Vec<usize> = (0..endpoints.len()).collect();
        order.sort_by_key(|&e| endpoints[e]);
        let mut taken = HashSet::new();
        let mut points = Vec::new();
        for e in order {
            for pos in positions(endpoints[e], weight, index_width) {
                let (mut pos, mut moved) = (pos, 0);
                while taken.contains(&pos) && moved < PROBE_LIMIT {
                    pos = (pos + 1) % POSITIONS;
                    moved += 1;
                }
                if moved >= PROBE_LIMIT {
                    continue;
                }
                taken.insert(pos);
                points.push((pos, e));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The endpoint (its index in the list given to `new`) that gets `key`.
    fn route(&self, key: &[u8]) -> usize {
        let pos = crc32(&[key]) % POSITIONS;
        let next = self.points.partition_point(|&(p, _)| p < pos);
        let (_, e) = self
            .points
            .get(next)
            .or(self.points.first())
            .expect("a ring with points");
        *e
    }
}

/// An endpoint's points before collisions are resolved, in index order.
fn positions(endpoint: &str, n: u32, index_width: usize) -> Vec<u32> {
    (0..n)
        .map(|i| crc32(&[endpoint.as_bytes(), &i.to_le_bytes()[..index_width]]) % POSITIONS)
        .collect()
}

/// CRC-32 with the IEEE polynomial (reflected 0xEDB88320, initial and final XOR 0xFFFFFFFF): Go's
/// `crc32.NewIEEE()`, over the concatenation of `parts`.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn the_partitioner_is_the_collectors_ring() {
    // The CRC-32/IEEE check value: the CRC of the ASCII digits 1 to 9.
    assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
    assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    // The vectors upstream's consistent_hashing_test.go published for the one-byte index
    // (TestPositionsForEndpoints, 5 points each; TestEndpointFor, the default 100 points).
    let mut p = positions("endpoint-1", 5, 1);
    p.sort_unstable();
    assert_eq!(p, [1401, 4175, 14133, 17836, 21667]);
    let two = Ring::new(&["endpoint-2", "endpoint-1"], 5, 1);
    assert_eq!(
        two.points,
        [
            (1401, 1),
            (4175, 1),
            (10240, 0),
            (14133, 1),
            (15002, 0),
            (17836, 1),
            (21263, 0),
            (21667, 1),
            (26806, 0),
            (27020, 0)
        ]
    );
    let ring = Ring::new(&["endpoint-1", "endpoint-2"], 100, 1);
    assert_eq!(ring.route(&[1, 2, 0, 0]), 0);
    assert_eq!(ring.route(&[128, 128, 0, 0]), 1);
    assert_eq!(ring.route(b"ad-service-7"), 0);
    assert_eq!(ring.route(b"get-recommendations-1"), 1);
    // Lookup on a small ring: the first point at or after the key's position, else the first.
    let small = Ring {
        points: vec![(100, 0), (20_000, 1)],
    };
    let at = |key: &[u8]| crc32(&[key]) % POSITIONS;
    let key = (0u8..=255)
        .map(|b| [b])
        .find(|k| at(k) > 20_000)
        .expect("a key past the last point");
    assert_eq!(small.route(&key), 0, "wraps to the first point");
    let key = (0u8..=255)
        .map(|b| [b])
        .find(|k| (101..=20_000).contains(&at(k)))
        .expect("a key between the points");
    assert_eq!(small.route(&key), 1);
    // The ring of the test below: 3 × 100 points, every replica owns a part of it.
    let replicas = Ring::new(&REPLICA_NAMES, WEIGHT, 4);
    assert!(replicas.points.len() > 290 && replicas.points.len() <= 300);
    for r in 0..3 {
        assert!(replicas.points.iter().filter(|p| p.1 == r).count() >= 90);
    }
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

/// The three replicas as the Collector's DNS resolver would list them. The ring is built over
/// these names, not over the ports the test happens to get, so the partition is the same in
/// every run.
const REPLICA_NAMES: [&str; 3] = ["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"];

/// 800 traces, a quarter each of three RAG services and one agent service: about 67 per service
/// per replica, so every replica's anomaly baselines pass their 50-value warm-up.
const TRACES: usize = 800;
/// Traces per export request (the single instance gets each whole; the replicas their parts).
const BATCH: usize = 20;

/// The full analysis, SLOs with a budget, the derived metrics served to Prometheus, and an OTLP
/// backend that counts what arrives.
fn config(backend: &str) -> String {
    format!(
        r#"
receivers:
{}
processors:
  genai:
  trace_assembly:
    mode: hold
    wait_after_root: 200ms
  quality:
  anomaly:
  slo:
    resolution: 1s
    evaluation_interval: 200ms
    slos:
      - {{ name: latency, kind: latency, objective: 0.9, threshold: 2500ms }}
      - {{ name: availability, kind: availability, objective: 0.99 }}
    budgets:
      - {{ name: daily, limit_usd: 1000 }}
exporters:
  otlp:
    endpoint: {backend}
  prometheus:
    endpoint: 127.0.0.1:0
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [genai, trace_assembly, quality, anomaly, slo]
      exporters: [otlp, prometheus]
"#,
        harness::otlp_receiver("")
    )
}

/// The services of the stream: three RAG services (one with a reranker, one on another
/// provider, one failing 2% of its model calls where the others fail 1%) and an agent service.
fn services() -> [Profile; 4] {
    [
        Profile {
            error_rate: 0.02,
            ..Profile::new("rag-api", "gpt-4o-mini")
        },
        Profile {
            rerank: true,
            output_tokens: 120.0,
            ..Profile::new("docs-search", "gpt-4o")
        },
        Profile {
            provider: "anthropic".into(),
            ttft_ms: 450.0,
            ..Profile::new("support-bot", "claude-3-5-haiku")
        },
        Profile::new("order-agent", "gpt-4o-mini"),
    ]
}

/// The stream: seeded, so the same in every run; the services in turn, no injected fault.
fn traffic() -> Vec<ResourceSpans> {
    let mut rng = StdRng::seed_from_u64(17);
    let [rag_api, docs, support, agent] = services();
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    (0..TRACES)
        .map(|i| {
            let start = t0 + i as u64 * 5_000_000;
            match i % 4 {
                0 => rag_trace(&mut rng, &rag_api, None, start),
                1 => rag_trace(&mut rng, &docs, None, start),
                2 => rag_trace(&mut rng, &support, None, start),
                _ => agent_trace(&mut rng, &agent, None, start),
            }
        })
        .collect()
}

/// The bound on a replica's SLI (README, Scale out) for a replica with `n` of the `big_n` events
/// of the single instance, whose SLI is `p`. Trace-id routing makes a replica's events a uniform
/// sample, without replacement, of the whole: the number of good ones is hypergeometric, so the
/// replica's SLI differs from `p` by a standard error of sqrt(p(1-p)/n · (N-n)/(N-1)). The bound
/// is 4 of them (beyond it: about 6 in 100,000 under the normal approximation), plus 1/n, the
/// step of one event, for small samples and SLIs near 1.
fn sli_bound(p: f64, big_n: f64, n: f64) -> f64 {
    4.0 * (p * (1.0 - p) / n * (big_n - n) / (big_n - 1.0)).sqrt() + 1.0 / n
}

/// The premise of that bound, checked without Prometheus: over 300 seeded streams of 200
/// requests of each of two services partitioned by the ring, a replica's latency SLI (≤ 2.5 s,
/// the test's SLO) differs from the whole stream's by z-scores, in those standard errors, of
/// mean about 0 and variance about 1 — a uniform sample — and never by more than the bound.
#[test]
fn a_replica_sees_a_uniform_sample_within_the_bound() {
    let ring = Ring::new(&REPLICA_NAMES, WEIGHT, 4);
    let [rag_api, _, support, _] = services();
    let good = |t: &ResourceSpans| {
        let root = &t.scope_spans[0].spans[0];
        root.end_time_unix_nano - root.start_time_unix_nano <= 2_500_000_000
    };
    let (mut z, mut beyond) = (Vec::new(), 0);
    for seed in 0..300 {
        let mut rng = StdRng::seed_from_u64(seed);
        for profile in [&rag_api, &support] {
            let stream: Vec<_> = (0..200)
                .map(|_| rag_trace(&mut rng, profile, None, 0))
                .collect();
            let big_n = stream.len() as f64;
            let p = stream.iter().filter(|t| good(t)).count() as f64 / big_n;
            let (mut n, mut g) = ([0.0; 3], [0.0; 3]);
            for t in &stream {
                let r = ring.route(trace_id(t));
                n[r] += 1.0;
                g[r] += f64::from(u8::from(good(t)));
            }
            for r in 0..3 {
                let q = g[r] / n[r];
                let se = (p * (1.0 - p) / n[r] * (big_n - n[r]) / (big_n - 1.0)).sqrt();
                if se > 0.0 {
                    z.push((q - p) / se);
                }
                beyond += usize::from((q - p).abs() > sli_bound(p, big_n, n[r]));
            }
        }
    }
    let mean = z.iter().sum::<f64>() / z.len() as f64;
    let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / z.len() as f64;
    assert!(z.len() > 1500, "{} comparisons with spread", z.len());
    assert!(mean.abs() < 0.1, "z-scores centred: mean {mean}");
    assert!(
        (0.8..1.25).contains(&var),
        "z-scores of unit variance: {var}"
    );
    assert_eq!(beyond, 0, "replica SLIs beyond the bound");
}

fn span_count(rs: &[ResourceSpans]) -> usize {
    rs.iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn trace_id(rs: &ResourceSpans) -> &[u8] {
    rs.scope_spans
        .iter()
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.as_slice())
        .next()
        .expect("a trace has spans")
}

/// Percent-encoding for a query string (everything but the unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

type Series = BTreeMap<String, String>;

/// An instant PromQL query: each series' labels and value (NaN as NaN).
async fn query(prom: SocketAddr, q: &str) -> Vec<(Series, f64)> {
    let url = format!("http://{prom}/api/v1/query?query={}", encode(q));
    let text = reqwest::get(&url)
        .await
        .expect("query")
        .text()
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["status"], "success", "{q}: {text}");
    v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: {text}"))
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{q}: value in {r}"));
            (labels, value)
        })
        .collect()
}

/// The sum over a `(service, window)` family of one SLO's `rag_slo_events`, per window, read from
/// the instance itself.
fn slo_events(s: &Service, slo: &str) -> BTreeMap<String, f64> {
    let mut by_window = BTreeMap::new();
    for (labels, v) in s.derived().values(defs::SLO_EVENTS) {
        if labels.first().map(String::as_str) == Some(slo) {
            *by_window.entry(labels[3].clone()).or_insert(0.0) += v;
        }
    }
    by_window
}

#[derive(Clone, Copy, PartialEq)]
enum Agg {
    /// Sums over replicas equal the single instance's: exactly for counts, within float rounding
    /// for sums of costs and durations.
    Additive,
    /// Computed by each replica over the traces it sees or from its own state (SLO gauges,
    /// anomaly baselines, the budget projection, queues, trace assembly, alerts): not summed; the
    /// SLO gauges and anomalies are checked against the README's bounds instead.
    PerReplica,
}

/// How a metric the dashboard names aggregates over replicas.
fn aggregation(name: &str) -> Agg {
    let base = ["_bucket", "_count", "_sum", "_total"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    if let Some(i) = defs::DEFS
        .iter()
        .position(|d| d.prom_name == base || d.prom_name == name)
    {
        let additive = match defs::DEFS[i].kind {
            Kind::Counter | Kind::Histogram { .. } => i != defs::ANOMALIES,
            Kind::Gauge => i == defs::BUDGET_SPEND,
        };
        return if additive {
            Agg::Additive
        } else {
            Agg::PerReplica
        };
    }
    // ragwatch's own counters of items received, sent, refused, failed or dropped: each span,
    // point or record is counted by the one instance that handles it. (Trace assembly's late
    // spans and evictions depend on each instance's timing and memory: per replica.)
    let items = ["_spans_total", "_metric_points_total", "_log_records_total"];
    let io = name.starts_with("ragwatch_receiver_") || name.starts_with("ragwatch_exporter_");
    if io && items.iter().any(|s| name.ends_with(s))
        || name == "ragwatch_pipeline_dropped_items_total"
    {
        Agg::Additive
    } else {
        Agg::PerReplica
    }
}

/// A dashboard query over one group's targets, and the metric names it uses: `$service` matches
/// all, `group="<group>"` is added to every selector, and `rate(x[r])` / `increase(x[r])`
/// become `(x)`, the totals since start.
fn over_group(expr: &str, group: &str) -> (String, Vec<String>) {
    const PREFIXES: &[&str] = &["rag_", "ragwatch_", "gen_ai_", "traces_"];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let e = expr.replace("$service", ".*");
    let chars: Vec<char> = e.chars().collect();
    let (mut out, mut names) = (String::new(), Vec::new());
    let (mut i, mut braces, mut in_string, mut label_list) = (0, 0, false, 0);
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            in_string = c != '"';
            out.push(c);
            i += 1;
            continue;
        }
        if label_list > 0 {
            match c {
                '(' => label_list += 1,
                ')' => label_list -= 1,
                _ => {}
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => braces += 1,
            '}' => braces -= 1,
            '(' if LABEL_LISTS.contains(&last_word.as_str()) => label_list = 1,
            _ => {}
        }
        if braces == 0 && (c.is_alphabetic() || c == '_') {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if PREFIXES.iter().any(|p| word.starts_with(p)) && next != Some('(') {
                names.push(word.clone());
                out.push_str(&word);
                if next == Some('{') {
                    out.push_str(&format!("{{group=\"{group}\","));
                    i = j + 1;
                    braces += 1;
                } else {
                    out.push_str(&format!("{{group=\"{group}\"}}"));
                }
            } else {
                out.push_str(&word);
            }
            last_word = word;
            continue;
        }
        if !c.is_whitespace() {
            last_word.clear();
        }
        out.push(c);
        i += 1;
    }
    // Totals instead of rates: drop the range selectors and the functions over them.
    let mut totals = String::new();
    let mut rest = out.as_str();
    while let Some(open) = rest.find('[') {
        totals.push_str(&rest[..open]);
        let close = rest[open..].find(']').expect("a closed range") + open;
        rest = &rest[close + 1..];
    }
    totals.push_str(rest);
    for f in ["increase(", "rate("] {
        totals = totals
            .replace(&format!(" {f}"), " (")
            .replace(&format!("({f}"), "((");
        if totals.starts_with(f) {
            totals = format!("({}", &totals[f.len()..]);
        }
    }
    (totals, names)
}

/// Equal within float rounding: 1e-9 of the larger value (or both NaN, as histogram_quantile
/// gives over empty buckets).
fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn by_labels(v: Vec<(Series, f64)>) -> BTreeMap<Series, f64> {
    v.into_iter()
        .map(|(mut l, x)| {
            l.remove("group");
            l.remove("instance");
            (l, x)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_a_trace_id_partitioner_add_up_to_one_instance() {
    let Some(prometheus) = tool("prometheus", "apt-get install prometheus") else {
        return;
    };
    ragwatch::service::install_crypto_provider();
    let started = std::time::Instant::now();

    // One instance and three replicas, each with its own counting backend.
    let mut backends = Vec::new();
    let mut instances = Vec::new();
    for _ in 0..4 {
        let b = Backend::start().await;
        instances.push(harness::start(&config(&b.grpc_endpoint())).await);
        backends.push(b);
    }
    let (single, replicas) = instances.split_first().expect("four instances");

    // Prometheus scrapes the derived metrics and the admin endpoint of each, every second; the
    // `group` label tells the single instance from the replicas.
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = harness::free_port();
    let targets = |ss: &[Service]| {
        ss.iter()
            .flat_map(|s| {
                [
                    format!("'{}'", s.exporter_addr("prometheus").expect("prometheus")),
                    format!("'{}'", s.admin_addr()),
                ]
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _p = start_prometheus(
        &prometheus,
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ragwatch\n    static_configs:\n      - targets: [{}]\n        labels: {{ group: single }}\n      - targets: [{}]\n        labels: {{ group: replicas }}\n",
            targets(std::slice::from_ref(single)),
            targets(replicas)
        ),
        &prom,
    );

    // The stream, whole to the single instance and partitioned over the replicas.
    let traces = traffic();
    let ring = Ring::new(&REPLICA_NAMES, WEIGHT, 4);
    let mut to_single = TraceServiceClient::connect(harness::grpc_url(single))
        .await
        .expect("connect");
    let mut to_replicas = Vec::new();
    for r in replicas {
        to_replicas.push(
            TraceServiceClient::connect(harness::grpc_url(r))
                .await
                .expect("connect"),
        );
    }
    // Per instance (single first): traces and spans sent.
    let mut sent = [(0usize, 0usize); 4];
    for batch in traces.chunks(BATCH) {
        to_single
            .export(ExportTraceServiceRequest {
                resource_spans: batch.to_vec(),
            })
            .await
            .expect("export to the single instance");
        sent[0].0 += batch.len();
        sent[0].1 += span_count(batch);
        let mut parts: [Vec<ResourceSpans>; 3] = Default::default();
        for t in batch {
            parts[ring.route(trace_id(t))].push(t.clone());
        }
        for (r, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            sent[r + 1].0 += part.len();
            sent[r + 1].1 += span_count(&part);
            to_replicas[r]
                .export(ExportTraceServiceRequest {
                    resource_spans: part,
                })
                .await
                .expect("export to a replica");
        }
    }
    assert_eq!(sent[0].0, TRACES);
    assert_eq!(sent[1].0 + sent[2].0 + sent[3].0, TRACES);
    assert_eq!(sent[1].1 + sent[2].1 + sent[3].1, sent[0].1);
    for (r, (t, _)) in sent[1..].iter().enumerate() {
        // Each replica's share of the ring is about a third; 100 points each keep it well away
        // from nothing or everything.
        assert!(
            *t > TRACES / 6 && *t < TRACES / 2,
            "replica {r} got {t} of {TRACES} traces"
        );
    }

    // Every instance has delivered every span, holds no trace, and has counted every request in
    // its SLO windows.
    for (i, s) in instances.iter().enumerate() {
        let (t, n) = sent[i];
        assert!(
            backends[i].wait_for_spans(n, Duration::from_secs(60)).await,
            "instance {i}: {} of {n} spans delivered",
            backends[i].span_count()
        );
        let done = harness::eventually(Duration::from_secs(30), || {
            harness::metric(s, "ragwatch_traces_in_flight") == 0.0
                && ["latency", "availability"].iter().all(|slo| {
                    let w = slo_events(s, slo);
                    !w.is_empty() && w.values().all(|v| *v == t as f64)
                })
        })
        .await;
        assert!(
            done,
            "instance {i}: in flight {}, SLO events {:?} of {t}",
            harness::metric(s, "ragwatch_traces_in_flight"),
            slo_events(s, "availability")
        );
    }
    let finished = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();

    // Wait until Prometheus has scraped every target since then: from here on every sample it
    // returns is final.
    let scraped = harness::eventually_async(Duration::from_secs(60), || async {
        let Ok(r) = reqwest::get(format!(
            "http://{prom}/api/v1/query?query={}",
            encode("count(up == 1) == 8 and min(timestamp(up)) > ") + &format!("{finished}")
        ))
        .await
        else {
            return false;
        };
        let Ok(text) = r.text().await else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().map(|a| !a.is_empty()))
            .unwrap_or(false)
    })
    .await;
    assert!(
        scraped,
        "Prometheus has scraped all 8 targets after the traffic"
    );

    // 1. Series by series, every counter and histogram ragwatch derives.
    let mut checked = BTreeSet::new();
    for (i, d) in defs::DEFS.iter().enumerate() {
        if i == defs::ANOMALIES {
            continue; // per replica: below
        }
        let names: Vec<String> = match d.kind {
            Kind::Counter => vec![format!("{}_total", d.prom_name)],
            Kind::Histogram { .. } => ["_bucket", "_count", "_sum"]
                .iter()
                .map(|s| format!("{}{s}", d.prom_name))
                .collect(),
            Kind::Gauge if i == defs::BUDGET_SPEND => vec![d.prom_name.to_string()],
            Kind::Gauge => continue,
        };
        let float = d.unit == "USD";
        for name in names {
            let q = |g: &str| format!("sum without (instance, group) ({name}{{group=\"{g}\"}})");
            let one = by_labels(query(prom, &q("single")).await);
            let sum = by_labels(query(prom, &q("replicas")).await);
            assert_eq!(
                one.keys().collect::<Vec<_>>(),
                sum.keys().collect::<Vec<_>>(),
                "{name}: the same series"
            );
            for (labels, v) in &one {
                let w = sum[labels];
                let exact = !float && !name.ends_with("_sum");
                assert!(
                    if exact { *v == w } else { close(*v, w) },
                    "{name}{labels:?}: single {v}, replicas {w}"
                );
            }
            if !one.is_empty() {
                checked.insert(name);
            }
        }
    }
    // Not vacuous: the families this traffic must produce are there.
    for name in [
        "rag_requests_total",
        "rag_llm_calls_total",
        "rag_llm_tokens_total",
        "rag_llm_cost_usd_total",
        "rag_request_duration_seconds_bucket",
        "rag_request_duration_seconds_sum",
        "rag_stage_duration_seconds_count",
        "gen_ai_client_operation_duration_seconds_sum",
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
        "rag_retrieval_top_score_count",
        "rag_quality_score_sum",
        "rag_trace_critical_path_share_bucket",
        "rag_bottleneck_traces_total",
        "traces_span_metrics_calls_total",
        "traces_span_metrics_duration_milliseconds_sum",
        "rag_tool_calls_total",
        "rag_agent_runs_total",
        "rag_agent_cost_usd_total",
        "rag_budget_spend_usd",
    ] {
        assert!(checked.contains(name), "{name} has series: {checked:?}");
    }
    let errors = query(
        prom,
        r#"sum(rag_requests_total{group="single",status="error"})"#,
    )
    .await;
    assert!(
        errors.first().is_some_and(|(_, v)| *v > 0.0),
        "the stream has failed requests"
    );

    // 2. The dashboard: every query over additive metrics gives the same over the replicas as
    // over the single instance.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/grafana/ragwatch-dashboard.json").expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    let (mut same, mut per_replica) = (0, BTreeSet::new());
    for e in &exprs {
        let (q1, names) = over_group(e, "single");
        let (qn, _) = over_group(e, "replicas");
        assert!(!names.is_empty(), "a metric in {e}");
        let apart: Vec<&String> = names
            .iter()
            .filter(|n| aggregation(n) == Agg::PerReplica)
            .collect();
        if !apart.is_empty() {
            per_replica.extend(apart.into_iter().cloned());
            continue;
        }
        let one = by_labels(query(prom, &q1).await);
        let sum = by_labels(query(prom, &qn).await);
        assert_eq!(
            one.keys().collect::<Vec<_>>(),
            sum.keys().collect::<Vec<_>>(),
            "{q1}\n{qn}"
        );
        for (labels, v) in &one {
            assert!(
                close(*v, sum[labels]),
                "{e}{labels:?}: single {v}, replicas {}",
                sum[labels]
            );
        }
        same += usize::from(!one.is_empty());
    }
    assert!(same >= 30, "{same} dashboard queries compared with data");
    // What is left is per replica by nature: the SLO gauges (next), anomalies (below), the
    // budget projection, queues, traces in flight and alerts.
    assert_eq!(
        per_replica,
        [
            "rag_anomalies_total",
            "rag_budget_projected_spend_usd",
            "rag_slo_burn_rate",
            "rag_slo_error_budget_remaining",
            "rag_slo_sli_ratio",
            "ragwatch_alerts_firing",
            "ragwatch_exporter_queue_capacity",
            "ragwatch_exporter_queue_size",
            "ragwatch_exporter_retries_total",
            "ragwatch_pipeline_queue_capacity",
            "ragwatch_pipeline_queue_items",
            "ragwatch_trace_evictions_total",
            "ragwatch_trace_late_spans_total",
            "ragwatch_traces_in_flight",
        ]
        .map(String::from)
        .into_iter()
        .collect()
    );

    // 3. SLOs: each replica's SLI within `sli_bound` of the single instance's; its burn rate and
    // the error budget it has left within the same over (1 - objective); the events and the good
    // events add up exactly.
    // Prometheus drops empty labels (the scope of a request SLO is empty).
    let key = |l: &Series| {
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        (get("slo"), get("service"), get("scope"), get("window"))
    };
    let gauge = |name: &'static str, g: &'static str| async move {
        query(prom, &format!("{name}{{group=\"{g}\"}}")).await
    };
    // (slo, service, scope, window) → per instance: (events, SLI).
    let mut slo: BTreeMap<_, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    for g in ["single", "replicas"] {
        let events = gauge("rag_slo_events", g).await;
        let sli = gauge("rag_slo_sli_ratio", g).await;
        for (l, n) in &events {
            let (_, p) = sli
                .iter()
                .find(|(m, _)| key(m) == key(l) && m.get("instance") == l.get("instance"))
                .unwrap_or_else(|| panic!("an SLI beside {l:?}"));
            let who = if g == "single" {
                "single"
            } else {
                &l["instance"]
            };
            slo.entry(key(l))
                .or_default()
                .insert(who.to_string(), (*n, *p));
        }
    }
    assert_eq!(slo.len(), 2 * 4 * 4, "2 SLOs × 4 services × 4 windows");
    let objective = |slo: &str| if slo == "latency" { 0.9 } else { 0.99 };
    let burn = |slo: &str, sli: f64| (1.0 - sli) / (1.0 - objective(slo));
    let bound = sli_bound;
    let mut widest: f64 = 0.0;
    for (k, by) in &slo {
        let (big_n, p) = by["single"];
        let reps: Vec<(f64, f64)> = by
            .iter()
            .filter(|(who, _)| *who != "single")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(reps.len(), 3, "{k:?}: every replica sees every service");
        let n_sum: f64 = reps.iter().map(|(n, _)| n).sum();
        assert_eq!(n_sum, big_n, "{k:?}: the events add up");
        let good: f64 = reps.iter().map(|(n, q)| n * q).sum();
        assert!(
            (good - big_n * p).abs() < 1e-6,
            "{k:?}: {good} good events over the replicas, {} on one instance",
            big_n * p
        );
        for (n, q) in reps {
            let b = bound(p, big_n, n);
            widest = widest.max((q - p).abs() / b);
            assert!(
                (q - p).abs() <= b,
                "{k:?}: a replica's SLI {q} over {n} events and the single instance's {p} over {big_n} are more than {b} apart"
            );
            assert!(
                (burn(&k.0, q) - burn(&k.0, p)).abs() <= b / (1.0 - objective(&k.0)) + 1e-9,
                "{k:?}: burn rates"
            );
        }
    }
    // The error budget left over the period (which holds every event): 1 - the period's burn
    // rate, so within the same bound over (1 - objective).
    for g in ["single", "replicas"] {
        for (l, left) in gauge("rag_slo_error_budget_remaining", g).await {
            let who = if g == "single" {
                "single"
            } else {
                &l["instance"]
            };
            let (slo_name, service, scope, _) = key(&l);
            let (_, by) = slo
                .iter()
                .find(|((s, v, c, _), _)| (s, v, c) == (&slo_name, &service, &scope))
                .expect("the SLO's events");
            let (big_n, p) = by["single"];
            let (n, q) = by[who];
            assert!(
                (left - (1.0 - burn(&slo_name, q))).abs() < 1e-9,
                "{l:?}: budget left {left} is 1 - burn over the period"
            );
            assert!(
                (left - (1.0 - burn(&slo_name, p))).abs()
                    <= bound(p, big_n, n) / (1.0 - objective(&slo_name)) + 1e-9,
                "{l:?}: budget left {left}"
            );
        }
    }

    // 4. Anomalies: none on any instance, clean traffic of which each replica sees a uniform
    // sample. (The agent service's model calls once were: tool requests and answers shared one
    // baseline; an agent's model calls are now judged by their error rate alone.)
    let anomalies = query(prom, "rag_anomalies_total > 0").await;
    assert!(anomalies.is_empty(), "anomalies: {anomalies:?}");
    for (i, s) in instances.iter().enumerate() {
        let found: Vec<_> = s
            .findings()
            .recent()
            .into_iter()
            .filter(|f| f.name == "anomaly")
            .collect();
        assert!(found.is_empty(), "instance {i}: {found:?}");
    }

    eprintln!(
        "scale out: {TRACES} traces, {} spans; replicas got {:?} traces; {} derived series families and {same} dashboard queries equal; SLIs within {:.0}% of their bound; {:.1} s",
        sent[0].1,
        sent[1..].iter().map(|s| s.0).collect::<Vec<_>>(),
        checked.len(),
        widest * 100.0,
        started.elapsed().as_secs_f64()
    );
    for s in instances {
        s.shutdown().await;
    }
}
