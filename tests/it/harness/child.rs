//! The real binary as a child process, with its JSON log lines collected.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Ragwatch {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    listening: std::sync::mpsc::Receiver<(String, String)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Ragwatch {
    /// Start `ragwatch --log-format json <args>` in `cwd`.
    pub fn spawn(cwd: &Path, args: &[&str]) -> Ragwatch {
        Ragwatch::spawn_with_env(cwd, args, &[])
    }

    /// Write `yaml` to `<cwd>/ragwatch.yaml` and start `ragwatch --config` on it.
    pub fn with_config(cwd: &Path, yaml: &str) -> Ragwatch {
        let config = cwd.join("ragwatch.yaml");
        std::fs::write(&config, yaml).expect("write the config");
        Ragwatch::spawn(cwd, &["--config", config.to_str().expect("utf-8 path")])
    }

    /// The same, with extra environment variables.
    pub fn spawn_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Ragwatch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ragwatch"))
            .args(args)
            .envs(env.iter().copied())
            .args(["--log-format", "json"])
            .current_dir(cwd)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ragwatch");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, listening) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        // Read stderr to the end, so the child never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                    && let (Some(c), Some(a)) = (v["component"].as_str(), v["address"].as_str())
                {
                    let _ = tx.send((c.to_string(), a.to_string()));
                }
                log2.lock().expect("lock").push(line);
            }
        });
        Ragwatch {
            child,
            log,
            listening,
            reader: Some(reader),
        }
    }

    /// The address a component (`admin`, `receiver otlp (grpc)`, …) listens on; None if the
    /// process ends first.
    pub fn address(&self, component: &str) -> Option<String> {
        loop {
            match self.listening.recv_timeout(Duration::from_secs(30)) {
                Ok((c, a)) if c == component => return Some(a),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The addresses of several components, whatever order they start in; None for one that
    /// never said it listens.
    pub fn addresses(&self, components: &[&str]) -> Vec<Option<String>> {
        let mut found: std::collections::HashMap<String, String> = Default::default();
        while components.iter().any(|c| !found.contains_key(*c)) {
            match self.listening.recv_timeout(Duration::from_secs(30)) {
                Ok((c, a)) => {
                    found.insert(c, a);
                }
                Err(_) => break,
            }
        }
        components.iter().map(|c| found.get(*c).cloned()).collect()
    }

    /// The log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Wait for the process to end; its exit code and its whole log.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("wait");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.log.lock().expect("lock").join("\n");
        (status.code(), log)
    }
}

impl Drop for Ragwatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
