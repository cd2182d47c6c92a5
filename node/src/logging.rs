//! Log and progress output shared by the binaries: logs go to stderr
//! (filtered by `RUST_LOG`, default `info`), progress goes to stdout as one
//! JSON object per line.

use std::io::{IsTerminal, Write};

/// Installs the stderr logger. Colours only when stderr is a terminal, so a
/// log redirected to a file holds no escape sequences.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Prints one progress line (a JSON object with an `event` field) on stdout
/// and flushes it, so a supervising process sees it at once.
pub fn progress(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the run.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
