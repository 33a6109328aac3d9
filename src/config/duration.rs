//! Durations written the Collector's way: `5s`, `500ms`, `1m30s`, `2h`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 5s, 500ms, 1m30s"))
}

pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_collector_durations() {
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse("-5s").is_err());
        assert!(parse("five").is_err());
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
    }
}
