//! OpenTelemetry's consistent probability sampling in the W3C `tracestate` (the `ot` member's
//! `th` and `rv` sub-keys, "TraceState: Probability Sampling").
//!
//! Randomness R is 56 bits: the `rv` sub-key (14 hex digits) if present, else the trace id's
//! last 7 bytes. A sampler with rejection threshold T keeps a trace when R >= T; T is written as
//! `th:` with up to 14 hex digits, trailing zeros removed (`th:0` is 100 %). A kept trace stands
//! for 2^56 / (2^56 - T) traces.

/// 2^56: the number of randomness values.
pub const MAX: u64 = 1 << 56;

/// The rejection threshold of a sampling probability `p` (0..=1), rounded to the nearest
/// representable probability.
pub fn threshold_for(p: f64) -> u64 {
    if p.is_nan() || p <= 0.0 {
        return MAX;
    }
    if p >= 1.0 {
        return 0;
    }
    // p * 2^56 is exact in binary floating point but for the rounding of p itself.
    let keep = (p * MAX as f64).round() as u64;
    MAX - keep.clamp(1, MAX)
}

/// How many traces one kept at threshold `t` stands for.
pub fn adjusted_count(t: u64) -> f64 {
    let keep = MAX.saturating_sub(t).max(1);
    MAX as f64 / keep as f64
}

/// `th`'s value: 14 hex digits without their trailing zeros; `0` for 0.
pub fn encode_threshold(t: u64) -> String {
    let t = t.min(MAX - 1);
    if t == 0 {
        return "0".into();
    }
    let s = format!("{t:014x}");
    s.trim_end_matches('0').to_string()
}

/// A `th` value back to a threshold (1 to 14 hex digits, padded with zeros on the right).
pub fn decode_threshold(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 14 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u64::from_str_radix(s, 16).ok()?;
    Some(v << (4 * (14 - s.len())))
}

/// The `ot` member's value, if the tracestate has one.
fn ot_value(tracestate: &str) -> Option<&str> {
    tracestate
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .find_map(|m| m.strip_prefix("ot="))
}

/// A sub-key of the `ot` member.
fn ot_sub<'a>(tracestate: &'a str, key: &str) -> Option<&'a str> {
    ot_value(tracestate)?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once(':')?;
        (k == key).then_some(v)
    })
}

/// The threshold already written on a trace (by a sampler before ragwatch), if any.
pub fn threshold_in(tracestate: &str) -> Option<u64> {
    decode_threshold(ot_sub(tracestate, "th")?)
}

/// The trace's randomness: `rv` from the tracestate, else the trace id's last 7 bytes.
pub fn randomness(trace_id: &[u8], tracestate: &str) -> u64 {
    if let Some(rv) = ot_sub(tracestate, "rv")
        && rv.len() == 14
        && let Ok(v) = u64::from_str_radix(rv, 16)
    {
        return v;
    }
    let n = trace_id.len();
    trace_id[n.saturating_sub(7)..]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// `tracestate` with the `ot` member's `th` set to `t`, the `ot` member first (as W3C says of a
/// member that changed) and every other member and sub-key kept. None when the tracestate is
/// not well formed (then it is better left as it is).
pub fn with_threshold(tracestate: &str, t: u64) -> Option<String> {
    let th = format!("th:{}", encode_threshold(t));
    let mut ot = th.clone();
    let mut others: Vec<&str> = Vec::new();
    for m in tracestate.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if m.is_empty() {
            continue;
        }
        let (k, v) = m.split_once('=')?;
        if k.is_empty() {
            return None;
        }
        if k == "ot" {
            for sub in v.split(';').filter(|s| !s.is_empty()) {
                let (sk, _) = sub.split_once(':')?;
                if sk != "th" {
                    ot.push(';');
                    ot.push_str(sub);
                }
            }
        } else {
            others.push(m);
        }
    }
    if ot.len() > 256 || others.len() >= 32 {
        return None;
    }
    let mut out = format!("ot={ot}");
    for m in others {
        out.push(',');
        out.push_str(m);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_of_common_probabilities() {
        // 10 %: keep 0.1 * 2^56 = 0x1999999999999a randomness values (rounded), reject the
        // rest: 2^56 - 0x1999999999999a = 0xe6666666666666.
        assert_eq!(threshold_for(0.1), 0xe6666666666666);
        assert_eq!(encode_threshold(threshold_for(0.1)), "e6666666666666");
        // 50 %: 0x80000000000000, written with its trailing zeros removed.
        assert_eq!(encode_threshold(threshold_for(0.5)), "8");
        assert_eq!(encode_threshold(threshold_for(0.25)), "c");
        assert_eq!(encode_threshold(threshold_for(1.0)), "0");
        assert_eq!(threshold_for(0.0), MAX);
        assert_eq!(decode_threshold("8"), Some(1 << 55));
        assert_eq!(decode_threshold("e6666666666666"), Some(0xe6666666666666));
        assert_eq!(decode_threshold("xyz"), None);
        assert_eq!(decode_threshold("123456789012345"), None);
        assert!((adjusted_count(threshold_for(0.1)) - 10.0).abs() < 1e-9);
        assert_eq!(adjusted_count(0), 1.0);
        assert_eq!(adjusted_count(1 << 55), 2.0);
    }

    #[test]
    fn randomness_is_the_last_seven_bytes_or_rv() {
        let id = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7,
        ];
        assert_eq!(randomness(&id, ""), 0x01020304050607);
        assert_eq!(
            randomness(&id, "vendor=x,ot=rv:00000000000009;th:8"),
            0x9,
            "an explicit rv wins"
        );
        // A malformed rv is ignored.
        assert_eq!(randomness(&id, "ot=rv:12"), 0x01020304050607);
        assert_eq!(randomness(&[], ""), 0);
    }

    #[test]
    fn the_threshold_is_set_and_everything_else_kept() {
        assert_eq!(with_threshold("", 1 << 55).as_deref(), Some("ot=th:8"));
        assert_eq!(
            with_threshold("congo=t61rcWkgMzE, ot=rv:01020304050607;th:c;x:y", 1 << 55).as_deref(),
            Some("ot=th:8;rv:01020304050607;x:y,congo=t61rcWkgMzE")
        );
        assert_eq!(
            with_threshold("a=1,,b=2", 0).as_deref(),
            Some("ot=th:0,a=1,b=2")
        );
        assert_eq!(with_threshold("garbage", 0), None);
        assert_eq!(threshold_in("a=1,ot=th:c"), Some(0xc0000000000000));
        assert_eq!(threshold_in("a=1"), None);
    }
}
