//! Tests only: the log lines code writes.

use std::sync::{Arc, Mutex};

/// Log lines written while `f` runs.
///
/// A global subscriber that takes every event (and writes them nowhere) is installed first:
/// without one, another test thread can cache a callsite's interest as "never" (the no-op
/// default's answer) just after this thread's scoped subscriber rebuilt it, and the events would
/// not reach it (a flaky test, seen once in five runs).
pub fn logged(f: impl FnOnce()) -> Vec<String> {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let sink = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        // Another test's global subscriber is as good.
        let _ = tracing::subscriber::set_global_default(sink);
    });
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text =
        String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default()).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}
