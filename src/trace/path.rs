//! Critical path and self time of one trace, the way Jaeger's UI computes the critical path:
//! from the root, descend into the child that finished last, then into the child that finished
//! last before that one started, and so on; a parent owns the gaps between. Children are clamped
//! to their parent's interval (clock skew); a CONSUMER child of a PRODUCER does not block it.
//! Iterative, O(n log n), no panics on any input (cycles and missing parents included).

use std::borrow::Cow;

use hashbrown::HashMap;

/// A span's kind, as far as the analysis cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Other,
    Producer,
    Consumer,
}

/// One span, as the analysis needs it (ids borrowed from the span, or owned).
#[derive(Debug, Clone)]
pub struct SpanNode<'a> {
    pub span_id: Cow<'a, [u8]>,
    /// Empty for a root.
    pub parent: Cow<'a, [u8]>,
    pub start: u64,
    pub end: u64,
    pub kind: Kind,
}

/// Time span `span` (an input index) owns on the critical path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub span: usize,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    /// The root: the parentless span starting first (the longest among equals).
    pub root: Option<usize>,
    /// Per span: its duration minus the union of its children's clamped intervals, ns.
    pub self_time: Vec<u64>,
    /// The critical path in time order; its segments tile the root's interval.
    pub critical_path: Vec<Segment>,
}

pub fn analyze(spans: &[SpanNode<'_>]) -> Analysis {
    let n = spans.len();
    let index: HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_ref(), i))
        .collect();
    let parent: Vec<Option<usize>> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| index.get(s.parent.as_ref()).copied().filter(|p| *p != i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = *p {
            children[p].push(i);
        }
    }
    // Clamped intervals, top-down from every span without a known parent; a cycle is never
    // reached from those and is left unclamped.
    let mut clamped: Vec<(u64, u64)> = spans
        .iter()
        .map(|s| (s.start, s.end.max(s.start)))
        .collect();
    let mut inside = vec![true; n];
    let mut visited = vec![false; n];
    let mut stack: Vec<usize> = (0..n).filter(|i| parent[*i].is_none()).collect();
    while let Some(p) = stack.pop() {
        if std::mem::replace(&mut visited[p], true) {
            continue;
        }
        let (ps, pe) = clamped[p];
        for &c in &children[p] {
            let (cs, ce) = clamped[c];
            if ce < ps || cs > pe || !inside[p] {
                inside[c] = false;
            }
            clamped[c] = (cs.clamp(ps, pe), ce.clamp(ps, pe));
            stack.push(c);
        }
    }
    let self_time = (0..n)
        .map(|i| {
            let (s, e) = clamped[i];
            let mut iv: Vec<(u64, u64)> = children[i]
                .iter()
                .filter(|c| inside[**c])
                .map(|c| clamped[*c])
                .collect();
            iv.sort_unstable();
            let mut covered = 0u64;
            let mut cur: Option<(u64, u64)> = None;
            for (a, b) in iv {
                match cur {
                    Some((cs, ce)) if a <= ce => cur = Some((cs, ce.max(b))),
                    Some((cs, ce)) => {
                        covered += ce - cs;
                        cur = Some((a, b));
                    }
                    None => cur = Some((a, b)),
                }
            }
            if let Some((cs, ce)) = cur {
                covered += ce - cs;
            }
            (e - s).saturating_sub(covered)
        })
        .collect();

    let root = (0..n)
        .filter(|i| spans[*i].parent.is_empty())
        .min_by_key(|i| {
            (
                clamped[*i].0,
                std::cmp::Reverse(clamped[*i].1 - clamped[*i].0),
            )
        });
    let mut analysis = Analysis {
        root,
        self_time,
        critical_path: Vec::new(),
    };
    let Some(root) = root else { return analysis };

    // Blocking children, latest-ending first.
    let mut blocking: Vec<Vec<usize>> = children
        .iter()
        .enumerate()
        .map(|(p, cs)| {
            let mut v: Vec<usize> = cs
                .iter()
                .copied()
                .filter(|c| {
                    inside[*c]
                        && !(spans[p].kind == Kind::Producer && spans[*c].kind == Kind::Consumer)
                })
                .collect();
            v.sort_unstable_by_key(|c| std::cmp::Reverse(clamped[*c].1));
            v
        })
        .collect();
    for v in &mut blocking {
        v.dedup();
    }
    let mut path = Vec::new();
    // Per span, where the search for its next blocking child resumes: children already taken
    // are never taken again (a zero-length child could otherwise be found forever).
    let mut cursor = vec![0usize; n];
    // (span, bound): the span is on the path up to `bound` (None: its end).
    let (mut cur, mut bound): (usize, Option<u64>) = (root, None);
    // Each step either descends to a child (at most n times per span, as each child is taken
    // once) or climbs; bound the walk to be safe against any malformed input.
    for _ in 0..(4 * n + 4) {
        let end = bound.unwrap_or(clamped[cur].1);
        // A child ending exactly where the previous one started (sequential calls) counts.
        let found = blocking[cur]
            .iter()
            .enumerate()
            .skip(cursor[cur])
            .find(|(_, c)| bound.is_none_or(|b| clamped[**c].1 <= b))
            .map(|(k, c)| (k, *c));
        match found {
            Some((k, c)) => {
                cursor[cur] = k + 1;
                let cend = clamped[c].1;
                if cend < end {
                    path.push(Segment {
                        span: cur,
                        start: cend,
                        end,
                    });
                }
                cur = c;
                bound = None;
            }
            None => {
                let start = clamped[cur].0;
                if start < end {
                    path.push(Segment {
                        span: cur,
                        start,
                        end,
                    });
                }
                if cur == root {
                    break;
                }
                let Some(p) = parent[cur] else { break };
                bound = Some(clamped[cur].0);
                cur = p;
            }
        }
    }
    path.reverse();
    analysis.critical_path = path;
    analysis
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u8, parent: Option<u8>, start: u64, end: u64) -> SpanNode<'static> {
        SpanNode {
            span_id: vec![id].into(),
            parent: parent.map(|p| vec![p]).unwrap_or_default().into(),
            start,
            end,
            kind: Kind::Other,
        }
    }

    /// (span id, start, end) of each segment.
    fn path(spans: &[SpanNode<'_>]) -> Vec<(u8, u64, u64)> {
        let a = analyze(spans);
        let p: Vec<(u8, u64, u64)> = a
            .critical_path
            .iter()
            .map(|s| (spans[s.span].span_id[0], s.start, s.end))
            .collect();
        if let Some(r) = a.root {
            // The segments tile the root's interval.
            let mut t = spans[r].start;
            for s in &a.critical_path {
                assert_eq!(s.start, t, "gap or overlap in {p:?}");
                t = s.end;
            }
            assert_eq!(t, spans[r].end.max(spans[r].start), "{p:?}");
        }
        p
    }

    #[test]
    fn sequential_children_and_the_gaps_between() {
        // root 0..100; a 10..30; b 40..90.
        let s = [
            node(1, None, 0, 100),
            node(2, Some(1), 10, 30),
            node(3, Some(1), 40, 90),
        ];
        assert_eq!(
            path(&s),
            vec![
                (1, 0, 10),
                (2, 10, 30),
                (1, 30, 40),
                (3, 40, 90),
                (1, 90, 100)
            ]
        );
    }

    #[test]
    fn back_to_back_children() {
        // embeddings 0..50, retrieval 50..800, chat 800..990 under a 0..1000 root.
        let s = [
            node(1, None, 0, 1000),
            node(2, Some(1), 0, 50),
            node(3, Some(1), 50, 800),
            node(4, Some(1), 800, 990),
        ];
        assert_eq!(
            path(&s),
            vec![(2, 0, 50), (3, 50, 800), (4, 800, 990), (1, 990, 1000)]
        );
    }

    #[test]
    fn zero_length_children_are_taken_once() {
        let s = [
            node(1, None, 0, 10),
            node(2, Some(1), 5, 5),
            node(3, Some(1), 5, 5),
        ];
        assert_eq!(path(&s), vec![(1, 0, 5), (1, 5, 10)]);
    }

    #[test]
    fn overlapping_children() {
        // a 10..60 and b 20..80 overlap: b ends last; a ends after b starts, so it is skipped.
        let s = [
            node(1, None, 0, 100),
            node(2, Some(1), 10, 60),
            node(3, Some(1), 20, 80),
        ];
        assert_eq!(path(&s), vec![(1, 0, 20), (3, 20, 80), (1, 80, 100)]);
        let a = analyze(&s);
        assert_eq!(
            a.self_time,
            vec![100 - 70, 50, 60],
            "the union 10..80 counted once"
        );
    }

    #[test]
    fn a_child_outliving_its_parent_is_clamped() {
        let s = [node(1, None, 0, 100), node(2, Some(1), 50, 150)];
        assert_eq!(path(&s), vec![(1, 0, 50), (2, 50, 100)]);
    }

    #[test]
    fn a_child_starting_before_its_parent_is_clamped() {
        let s = [node(1, None, 100, 200), node(2, Some(1), 50, 150)];
        assert_eq!(path(&s), vec![(2, 100, 150), (1, 150, 200)]);
    }

    #[test]
    fn clock_skew_on_both_sides() {
        // The server's clock runs 30 behind: its span appears to start before and end after
        // the client span that called it; it is clamped to it.
        let s = [
            node(1, None, 0, 100),
            node(2, Some(1), 20, 60),
            node(3, Some(2), 10, 70),
            node(4, Some(3), 30, 40),
        ];
        assert_eq!(
            path(&s),
            vec![
                (1, 0, 20),
                (3, 20, 30),
                (4, 30, 40),
                (3, 40, 60),
                (1, 60, 100)
            ]
        );
    }

    #[test]
    fn a_consumer_does_not_block_its_producer() {
        let mut s = vec![
            node(1, None, 0, 100),
            node(2, Some(1), 10, 20),
            node(3, Some(2), 30, 95),
        ];
        s[1].kind = Kind::Producer;
        s[2].kind = Kind::Consumer;
        assert_eq!(path(&s), vec![(1, 0, 10), (2, 10, 20), (1, 20, 100)]);
    }

    #[test]
    fn an_orphan_is_not_on_the_path() {
        let s = [
            node(1, None, 0, 100),
            node(2, Some(1), 10, 20),
            node(3, Some(9), 30, 90),
        ];
        assert_eq!(path(&s), vec![(1, 0, 10), (2, 10, 20), (1, 20, 100)]);
        assert_eq!(analyze(&s).self_time[2], 60);
    }

    #[test]
    fn single_span_and_no_root() {
        assert_eq!(path(&[node(1, None, 5, 9)]), vec![(1, 5, 9)]);
        let a = analyze(&[node(1, Some(2), 0, 1), node(2, Some(1), 0, 1)]);
        assert_eq!(a.root, None);
        assert!(a.critical_path.is_empty());
    }

    #[test]
    fn a_deep_chain_does_not_overflow_the_stack() {
        let n = 10_000u64;
        let s: Vec<SpanNode> = (0..n)
            .map(|i| SpanNode {
                span_id: i.to_be_bytes().to_vec().into(),
                parent: if i == 0 {
                    Vec::new()
                } else {
                    (i - 1).to_be_bytes().to_vec()
                }
                .into(),
                start: i,
                end: 2 * n - i,
                kind: Kind::Other,
            })
            .collect();
        let a = analyze(&s);
        assert_eq!(a.critical_path.len(), 2 * (n as usize) - 1);
    }
}
