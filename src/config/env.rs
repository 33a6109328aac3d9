//! `${env:VAR}` and `${env:VAR:-default}` expansion inside string values, after parsing, the way
//! the Collector's confmap does it; `$$` is a literal `$`. Keys are never expanded.
//!
//! A value that is exactly one reference takes the type its text has in YAML (`${env:PORT}` with
//! PORT=4317 is the number 4317); a reference inside a longer string stays text. An unset variable
//! without a default is a problem: a silently empty API key is worse than a refusal to start.

use serde_json::Value;

use super::Problems;

pub fn expand(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        Value::String(s) if s.contains('$') => {
            let whole_reference =
                s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            match expand_str(s, env) {
                Ok(expanded) => {
                    *value = if whole_reference {
                        typed_scalar(expanded)
                    } else {
                        Value::String(expanded)
                    };
                }
                Err(msg) => problems.push(path, msg),
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                expand(v, &child(path, &i.to_string()), env, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                expand(v, &child(path, k), env, problems);
            }
        }
        _ => {}
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Numbers and booleans keep their type; everything else stays a string.
fn typed_scalar(text: String) -> Value {
    match super::yaml::from_str::<Value>(&text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text),
    }
}

pub fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let Some(end) = body_and_tail.find('}') else {
                return Err(format!("unterminated `${{` in `{s}`"));
            };
            out.push_str(&resolve(&body_and_tail[..end], env)?);
            rest = &body_and_tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let Some(spec) = reference.strip_prefix("env:") else {
        return Err(format!(
            "`${{{reference}}}`: only the env scheme is supported, as ${{env:NAME}} or ${{env:NAME:-default}}"
        ));
    };
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`{name}` is not a valid environment variable name"));
    }
    match (env(name), default) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (write ${{env:{name}:-default}} to give a default)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("backend".into()),
            "PORT" => Some("4317".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        assert_eq!(
            expand_str("${env:HOST}:${env:PORT}", &env).as_deref(),
            Ok("backend:4317")
        );
        assert_eq!(expand_str("${env:MISSING:-x}", &env).as_deref(), Ok("x"));
        assert_eq!(expand_str("${env:EMPTY:-x}", &env).as_deref(), Ok(""));
        assert_eq!(
            expand_str("$${env:HOST}", &env).as_deref(),
            Ok("${env:HOST}")
        );
        assert_eq!(expand_str("cost $5", &env).as_deref(), Ok("cost $5"));
        assert!(
            expand_str("${env:MISSING}", &env)
                .unwrap_err()
                .contains("MISSING is not set")
        );
        assert!(
            expand_str("${env:HOST", &env)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            expand_str("${file:/x}", &env)
                .unwrap_err()
                .contains("env scheme")
        );
    }

    #[test]
    fn whole_references_take_their_yaml_type() {
        let mut v =
            serde_json::json!({"a": "${env:PORT}", "b": "port ${env:PORT}", "c": ["${env:HOST}"]});
        let mut p = Problems::default();
        expand(&mut v, "", &env, &mut p);
        assert!(p.is_empty());
        assert_eq!(
            v,
            serde_json::json!({"a": 4317, "b": "port 4317", "c": ["backend"]})
        );
    }

    #[test]
    fn problems_carry_the_key_path() {
        let mut v = serde_json::json!({"exporters": {"otlp": {"headers": {"x": "${env:NOPE}"}}}});
        let mut p = Problems::default();
        expand(&mut v, "", &env, &mut p);
        assert_eq!(p.as_slice()[0].path, "exporters.otlp.headers.x");
    }
}
