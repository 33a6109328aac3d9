//! `file`: OTLP/JSON lines, one export request per line, in the shape the Collector's file
//! exporter writes (`{"resourceSpans":[...]}`), with size-based rotation.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::helper::{Delivered, ExportError, Payload};
use crate::config::{Problems, Validate};
use crate::signal::Batch;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// The file to append to; its directory is created if missing.
    pub path: String,
    #[serde(default)]
    pub rotation: RotationConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Rotate when the file would grow past this many MiB (default 100; 0 turns rotation off).
    #[serde(default = "default_max_megabytes")]
    pub max_megabytes: u64,
    /// Rotated files kept as `<path>.1` (newest) … `<path>.N` (default 10).
    #[serde(default = "default_max_backups")]
    pub max_backups: u32,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            max_megabytes: default_max_megabytes(),
            max_backups: default_max_backups(),
        }
    }
}

fn default_max_megabytes() -> u64 {
    100
}
fn default_max_backups() -> u32 {
    10
}

impl Validate for FileExporterConfig {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.path.trim().is_empty() {
            problems.push(&format!("{path}.path"), "must not be empty");
        }
    }
}

struct Open {
    out: BufWriter<File>,
    size: u64,
}

pub(crate) struct FileTransport {
    path: PathBuf,
    max_bytes: u64,
    max_backups: u32,
    state: Mutex<Option<Open>>,
}

impl FileTransport {
    pub(crate) fn new(c: &FileExporterConfig) -> Result<Self, String> {
        let path = PathBuf::from(&c.path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let t = FileTransport {
            max_bytes: c.rotation.max_megabytes.saturating_mul(1024 * 1024),
            max_backups: c.rotation.max_backups,
            state: Mutex::new(None),
            path,
        };
        let open = t.open()?;
        if let Ok(mut s) = t.state.lock() {
            *s = Some(open);
        }
        Ok(t)
    }

    fn open(&self) -> Result<Open, String> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Open {
            out: BufWriter::new(f),
            size,
        })
    }

    fn rotate(&self) -> std::io::Result<()> {
        let name = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.max_backups == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(name(self.max_backups));
        for i in (1..self.max_backups).rev() {
            let from = name(i);
            if from.exists() {
                std::fs::rename(&from, name(i + 1))?;
            }
        }
        std::fs::rename(&self.path, name(1))
    }

    pub(crate) fn send(&self, p: &Payload) -> Result<Delivered, ExportError> {
        let mut line = match p.batch() {
            Batch::Traces(r) => serde_json::to_vec(r),
            Batch::Metrics(r) => serde_json::to_vec(r),
            Batch::Logs(r) => serde_json::to_vec(r),
        }
        .map_err(|e| ExportError::Permanent(format!("cannot encode as JSON: {e}")))?;
        line.push(b'\n');
        let io = |e: std::io::Error| ExportError::Retryable {
            message: format!("writing {}: {e}", self.path.display()),
            retry_after: None,
        };
        let mut guard = self
            .state
            .lock()
            .map_err(|_| ExportError::Permanent("file exporter state poisoned".into()))?;
        if let Some(open) = guard.as_mut()
            && self.max_bytes > 0
            && open.size > 0
            && open.size + line.len() as u64 > self.max_bytes
        {
            open.out.flush().map_err(io)?;
            *guard = None;
            self.rotate().map_err(io)?;
        }
        if guard.is_none() {
            *guard = Some(self.open().map_err(|m| ExportError::Retryable {
                message: m,
                retry_after: None,
            })?);
        }
        let Some(open) = guard.as_mut() else {
            return Err(ExportError::Permanent("file not open".into()));
        };
        open.out.write_all(&line).map_err(io)?;
        open.out.flush().map_err(io)?;
        open.size += line.len() as u64;
        Ok(Delivered::default())
    }
}

impl super::helper::Transport for FileTransport {
    fn send<'a>(
        &'a self,
        p: &'a Payload,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Delivered, ExportError>> + Send + 'a>,
    > {
        Box::pin(std::future::ready(FileTransport::send(self, p)))
    }
}
