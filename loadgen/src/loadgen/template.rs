//! Pre-encoded export requests and their re-stamping.
//!
//! A [`Template`] is one `ExportTraceServiceRequest`, encoded once with prost. While it is built,
//! the encoded bytes are walked (protobuf wire format) and the byte offset of every trace id,
//! span id, parent span id and timestamp is recorded. Sending it again is then a copy of the
//! bytes plus a few in-place writes: fresh ids (unique, random-looking) and every time shifted so
//! that the batch ends now. No message is built or encoded per send.
//!
//! Ids and times are fixed-width on the wire (`bytes` of 16/8 and `fixed64`), so patching never
//! changes a length prefix. Template ids are written as `index + 1` (big-endian) so the walker
//! knows, from the bytes alone, which trace and which span of the batch each id belongs to.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

/// The encoded bytes were not what the walker expects (a bug, or an unexpected encoding).
#[derive(Debug, thiserror::Error)]
#[error("template walk: {0}")]
pub struct WireError(&'static str);

/// One pre-encoded request and where its ids and times are.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    /// After each top-level `ResourceSpans`: (end offset, spans so far). A prefix of whole
    /// entries is itself a valid request, so a send may use fewer traces than the template holds.
    cuts: Vec<(usize, u64)>,
    traces: usize,
    spans: usize,
    /// (trace index, offset of the 16 id bytes)
    trace_ids: Vec<(u32, u32)>,
    /// (span index, offset of the 8 id bytes)
    span_ids: Vec<(u32, u32)>,
    /// (parent's span index, offset of the 8 id bytes)
    parent_ids: Vec<(u32, u32)>,
    /// Offsets of fixed64 times (span start/end, event times).
    times: Vec<u32>,
    /// The latest time in the template: a send shifts every time by `now - max_time`.
    max_time: u64,
}

impl Template {
    /// Encode `resource_spans` (whose ids are rewritten to `index + 1`) and record the offsets.
    pub fn new(mut resource_spans: Vec<ResourceSpans>) -> Result<Template, WireError> {
        reid(&mut resource_spans);
        let bytes = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
        let mut t = Template {
            bytes: Vec::new(),
            cuts: Vec::new(),
            traces: 0,
            spans: 0,
            trace_ids: Vec::new(),
            span_ids: Vec::new(),
            parent_ids: Vec::new(),
            times: Vec::new(),
            max_time: 0,
        };
        walk(&bytes, &mut t)?;
        t.bytes = bytes;
        Ok(t)
    }

    /// Spans in the whole template.
    pub fn spans(&self) -> u64 {
        self.cuts.last().map_or(0, |c| c.1)
    }

    /// The number of leading `ResourceSpans` entries to send so that at most `limit` spans go:
    /// (entries, spans); None when not even the first fits.
    pub fn cut_for(&self, limit: u64) -> Option<(usize, u64)> {
        let n = self.cuts.partition_point(|c| c.1 <= limit);
        (n > 0).then(|| (n, self.cuts[n - 1].1))
    }

    /// Encoded size of the first `entries` entries.
    pub fn len_of(&self, entries: usize) -> usize {
        match entries {
            0 => 0,
            n => self.cuts[n.min(self.cuts.len()) - 1].0,
        }
    }

    /// Entries (top-level `ResourceSpans`) in the template.
    pub fn entries(&self) -> usize {
        self.cuts.len()
    }
}

/// Rewrite ids so that trace k of the batch has id k+1 and span j (counted over the batch) has
/// id j+1, parents following their span.
fn reid(rss: &mut [ResourceSpans]) {
    let mut traces: Vec<Vec<u8>> = Vec::new();
    let mut next_span: u64 = 0;
    for rs in rss.iter_mut() {
        // Within one trace, old span id -> new span id.
        let mut map: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
        for ss in rs.scope_spans.iter_mut() {
            for s in ss.spans.iter_mut() {
                next_span += 1;
                let new = next_span.to_be_bytes().to_vec();
                map.push((s.trace_id.clone(), s.span_id.clone(), new.clone()));
                s.span_id = new;
            }
        }
        for ss in rs.scope_spans.iter_mut() {
            for s in ss.spans.iter_mut() {
                if !s.parent_span_id.is_empty()
                    && let Some((_, _, new)) = map
                        .iter()
                        .find(|(t, old, _)| *t == s.trace_id && *old == s.parent_span_id)
                {
                    s.parent_span_id = new.clone();
                }
                let k = match traces.iter().position(|t| *t == s.trace_id) {
                    Some(k) => k,
                    None => {
                        traces.push(s.trace_id.clone());
                        traces.len() - 1
                    }
                };
                s.trace_id = (k as u128 + 1).to_be_bytes().to_vec();
            }
        }
    }
}

/// A cursor over the fields of one protobuf message.
struct Fields<'a> {
    b: &'a [u8],
    pos: usize,
    end: usize,
}

enum Val {
    Varint,
    /// Offset of the 8 bytes.
    Fixed64(usize),
    /// Start and end of the payload.
    Len(usize, usize),
    Fixed32,
}

impl<'a> Fields<'a> {
    fn new(b: &'a [u8], start: usize, end: usize) -> Fields<'a> {
        Fields { b, pos: start, end }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .b
                .get(self.pos)
                .filter(|_| self.pos < self.end)
                .ok_or(WireError("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError("varint too long"))
    }

    fn next_field(&mut self) -> Result<Option<(u64, Val)>, WireError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let key = self.varint()?;
        let (field, wt) = (key >> 3, key & 7);
        let val = match wt {
            0 => {
                self.varint()?;
                Val::Varint
            }
            1 => {
                let at = self.pos;
                self.pos += 8;
                Val::Fixed64(at)
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError("length"))?;
                let at = self.pos;
                self.pos = at.checked_add(len).ok_or(WireError("length"))?;
                Val::Len(at, self.pos)
            }
            5 => {
                self.pos += 4;
                Val::Fixed32
            }
            _ => return Err(WireError("unsupported wire type")),
        };
        if self.pos > self.end {
            return Err(WireError("field runs past its message"));
        }
        Ok(Some((field, val)))
    }
}

fn index(b: &[u8]) -> Result<u32, WireError> {
    let mut v: u128 = 0;
    for &x in b {
        v = (v << 8) | u128::from(x);
    }
    v.checked_sub(1)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(WireError("template id is not an index"))
}

fn off(at: usize) -> Result<u32, WireError> {
    u32::try_from(at).map_err(|_| WireError("template larger than 4 GiB"))
}

fn fixed64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// ExportTraceServiceRequest.resource_spans(1) → ResourceSpans.scope_spans(2) →
/// ScopeSpans.spans(2) → Span { trace_id 1, span_id 2, parent_span_id 4, start 7, end 8,
/// events 11 → Event.time_unix_nano 1 }.
fn walk(b: &[u8], t: &mut Template) -> Result<(), WireError> {
    let mut req = Fields::new(b, 0, b.len());
    while let Some((f, v)) = req.next_field()? {
        let (1, Val::Len(rs_start, rs_end)) = (f, v) else {
            continue;
        };
        let mut rs = Fields::new(b, rs_start, rs_end);
        while let Some((f, v)) = rs.next_field()? {
            let (2, Val::Len(ss_start, ss_end)) = (f, v) else {
                continue;
            };
            let mut ss = Fields::new(b, ss_start, ss_end);
            while let Some((f, v)) = ss.next_field()? {
                let (2, Val::Len(s_start, s_end)) = (f, v) else {
                    continue;
                };
                span(b, s_start, s_end, t)?;
                t.spans += 1;
            }
        }
        t.cuts.push((rs_end, t.spans as u64));
    }
    Ok(())
}

fn span(b: &[u8], start: usize, end: usize, t: &mut Template) -> Result<(), WireError> {
    let mut s = Fields::new(b, start, end);
    while let Some((f, v)) = s.next_field()? {
        match (f, v) {
            (1, Val::Len(a, e)) if e - a == 16 => {
                let k = index(&b[a..e])?;
                t.traces = t.traces.max(k as usize + 1);
                t.trace_ids.push((k, off(a)?));
            }
            (2, Val::Len(a, e)) if e - a == 8 => t.span_ids.push((index(&b[a..e])?, off(a)?)),
            (4, Val::Len(a, e)) if e - a == 8 => t.parent_ids.push((index(&b[a..e])?, off(a)?)),
            (1 | 2 | 4, Val::Len(..)) => return Err(WireError("id of unexpected length")),
            (7 | 8, Val::Fixed64(a)) => {
                t.max_time = t.max_time.max(fixed64(b, a));
                t.times.push(off(a)?);
            }
            (11, Val::Len(ea, ee)) => {
                let mut ev = Fields::new(b, ea, ee);
                while let Some((f, v)) = ev.next_field()? {
                    if let (1, Val::Fixed64(a)) = (f, v) {
                        t.max_time = t.max_time.max(fixed64(b, a));
                        t.times.push(off(a)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The splitmix64 finalizer: a bijection on u64, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes fresh ids and times into copies of templates. One per worker: ids are unique across
/// workers (the worker number is in the top 16 bits of the counters) and across a run.
pub struct Stamper {
    keys: [u64; 3],
    trace_ctr: u64,
    span_ctr: u64,
    trace_scratch: Vec<[u8; 16]>,
    span_scratch: Vec<[u8; 8]>,
}

impl Stamper {
    /// `keys` should be random (they make ids unpredictable, not unique: uniqueness comes from
    /// the counters).
    pub fn new(worker: u16, keys: [u64; 3]) -> Stamper {
        let base = u64::from(worker) << 48;
        Stamper {
            keys,
            trace_ctr: base,
            span_ctr: base,
            trace_scratch: Vec::new(),
            span_scratch: Vec::new(),
        }
    }

    fn span_id(&mut self) -> [u8; 8] {
        loop {
            self.span_ctr = self.span_ctr.wrapping_add(1);
            let id = mix(self.span_ctr ^ self.keys[0]);
            if id != 0 {
                return id.to_be_bytes();
            }
        }
    }

    fn trace_id(&mut self) -> [u8; 16] {
        loop {
            self.trace_ctr = self.trace_ctr.wrapping_add(1);
            let hi = mix(self.trace_ctr ^ self.keys[1]);
            let lo = mix(self.trace_ctr ^ self.keys[2]);
            if hi != 0 {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&hi.to_be_bytes());
                id[8..].copy_from_slice(&lo.to_be_bytes());
                return id;
            }
        }
    }

    /// A copy of the first `entries` entries of `t` with fresh ids, every time shifted so the
    /// latest is `now_ns`.
    pub fn stamp(&mut self, t: &Template, entries: usize, now_ns: u64) -> Vec<u8> {
        let end = t.len_of(entries);
        let mut out = t.bytes[..end].to_vec();
        self.trace_scratch.clear();
        for _ in 0..t.traces {
            let id = self.trace_id();
            self.trace_scratch.push(id);
        }
        self.span_scratch.clear();
        for _ in 0..t.spans {
            let id = self.span_id();
            self.span_scratch.push(id);
        }
        let end = end as u32;
        for &(k, at) in t.trace_ids.iter().take_while(|x| x.1 < end) {
            let at = at as usize;
            out[at..at + 16].copy_from_slice(&self.trace_scratch[k as usize]);
        }
        for &(j, at) in t.span_ids.iter().take_while(|x| x.1 < end) {
            let at = at as usize;
            out[at..at + 8].copy_from_slice(&self.span_scratch[j as usize]);
        }
        for &(j, at) in t.parent_ids.iter().take_while(|x| x.1 < end) {
            let at = at as usize;
            out[at..at + 8].copy_from_slice(&self.span_scratch[j as usize]);
        }
        let shift = now_ns.wrapping_sub(t.max_time);
        for &at in t.times.iter().take_while(|&&x| x < end) {
            let at = at as usize;
            let v = fixed64(&out, at).wrapping_add(shift);
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::synth::{Fault, Profile, rag_trace};

    fn template(traces: usize, seed: u64) -> (Template, ExportTraceServiceRequest) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = Profile::new("rag-api-0", "gpt-4o");
        p.rerank = true;
        let rss: Vec<ResourceSpans> = (0..traces)
            .map(|i| {
                let fault = (i % 2 == 1).then_some(Fault::SequentialCalls);
                rag_trace(&mut rng, &p, fault, 1_000_000_000_000 + i as u64 * 1000)
            })
            .collect();
        let original = ExportTraceServiceRequest {
            resource_spans: rss.clone(),
        };
        (Template::new(rss).expect("template"), original)
    }

    fn spans(r: &ExportTraceServiceRequest) -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
        r.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect()
    }

    #[test]
    fn restamped_requests_decode_with_new_unique_ids_and_the_same_structure() {
        let (t, original) = template(10, 7);
        assert_eq!(t.spans(), 55); // 5 traces of 5 spans, 5 of 6
        let mut st = Stamper::new(3, [11, 22, 33]);
        let now = 1_800_000_000_000_000_000;
        let mut seen_spans = HashSet::new();
        let mut seen_traces = HashSet::new();
        for round in 0..3 {
            let bytes = st.stamp(&t, t.entries(), now + round);
            let r = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
            let (new, old) = (spans(&r), spans(&original));
            assert_eq!(new.len(), old.len());
            let mut by_trace: HashMap<&[u8], HashSet<&[u8]>> = HashMap::new();
            for s in &new {
                assert_eq!(s.trace_id.len(), 16);
                assert_eq!(s.span_id.len(), 8);
                assert!(seen_spans.insert(s.span_id.clone()), "span id reused");
                by_trace.entry(&s.trace_id).or_default().insert(&s.span_id);
            }
            for tid in by_trace.keys() {
                assert!(seen_traces.insert(tid.to_vec()), "trace id reused");
            }
            assert_eq!(by_trace.len(), 10);
            let latest = new.iter().map(|s| s.end_time_unix_nano).max();
            assert_eq!(latest, Some(now + round));
            let shift = now + round - old.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0);
            for (n, o) in new.iter().zip(&old) {
                // Everything but ids and times is unchanged.
                assert_eq!(n.name, o.name);
                assert_eq!(n.attributes, o.attributes);
                assert_eq!(n.start_time_unix_nano, o.start_time_unix_nano + shift);
                assert_eq!(n.end_time_unix_nano, o.end_time_unix_nano + shift);
                for (ne, oe) in n.events.iter().zip(&o.events) {
                    assert_eq!(ne.time_unix_nano, oe.time_unix_nano + shift);
                }
                assert_ne!(n.span_id, o.span_id);
                // Roots stay roots; a child's parent is in its own trace, and is the span that
                // was its parent in the template.
                assert_eq!(n.parent_span_id.is_empty(), o.parent_span_id.is_empty());
                if !n.parent_span_id.is_empty() {
                    assert!(by_trace[n.trace_id.as_slice()].contains(n.parent_span_id.as_slice()));
                    let oi = old
                        .iter()
                        .position(|x| x.span_id == o.parent_span_id && x.trace_id == o.trace_id);
                    let ni = new
                        .iter()
                        .position(|x| x.span_id == n.parent_span_id && x.trace_id == n.trace_id);
                    assert_eq!(oi, ni);
                }
            }
        }
    }

    #[test]
    fn a_prefix_of_whole_entries_is_a_valid_request() {
        let (t, _) = template(10, 8);
        let (entries, spans_in) = t.cut_for(20).expect("fits");
        assert_eq!((entries, spans_in), (3, 16));
        assert_eq!(t.cut_for(4), None);
        assert_eq!(t.cut_for(1000), Some((10, 55)));
        let mut st = Stamper::new(0, [1, 2, 3]);
        let bytes = st.stamp(&t, entries, 5_000_000_000_000);
        let r = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(spans(&r).len(), 16);
        assert_eq!(r.resource_spans.len(), 3);
    }

    #[test]
    fn ids_from_different_workers_never_collide() {
        let mut a = Stamper::new(0, [5, 5, 5]);
        let mut b = Stamper::new(1, [5, 5, 5]);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(a.span_id()));
            assert!(seen.insert(b.span_id()));
        }
    }
}
