//! Software nobody here wrote, for the interop tests: finding it on PATH, and stopping it.

use std::process::Child;

/// `name` on PATH. When missing, the test says SKIPPED and why — unless RAGWATCH_INTEROP is set
/// (.ci/run installs every tool), when a missing tool fails the test.
pub fn tool(name: &str, install: &str) -> Option<String> {
    tool_named(&[name], install)
}

/// [`tool`] under the first of `names` found on PATH (one program, packaged under several names).
pub fn tool_named(names: &[&str], install: &str) -> Option<String> {
    let found = names.iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.exists())
                .map(|p| p.display().to_string())
        })
    });
    let name = names.first().copied().unwrap_or_default();
    if found.is_none() {
        assert!(
            std::env::var("RAGWATCH_INTEROP").is_err(),
            "RAGWATCH_INTEROP is set but `{name}` was not found"
        );
        eprintln!("SKIPPED: `{name}` not found ({install})");
    }
    found
}

/// A Prometheus listening on `listen`, configured by `config` (the text of its prometheus.yml),
/// its files under `dir`; stopped when dropped.
pub fn start_prometheus(
    prometheus: &str,
    dir: &std::path::Path,
    config: &str,
    listen: &dyn std::fmt::Display,
) -> Killed {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config).expect("prometheus config");
    Killed(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus"),
    )
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every PromQL expression (`expr`) of a Grafana dashboard's JSON, in order.
pub fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(e)) if !e.is_empty() => out.push(e.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}
