//! Facts about the running node process that the drivers report (its peak
//! resident set size, which hospitals put in their final report and the
//! coordinator in its results) and the signals that ask it to stop.

/// Peak resident set size of this process in bytes (`VmHWM` of
/// `/proc/self/status`), or `None` where that file is not readable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A request to stop the process, by signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stopped by {name}")]
pub struct Stopped {
    /// `SIGINT` or `SIGTERM`.
    pub name: &'static str,
}

impl Stopped {
    /// The conventional exit status of a process stopped by this signal
    /// (128 + the signal number).
    pub fn exit_code(&self) -> u8 {
        if self.name == "SIGTERM" {
            143
        } else {
            130
        }
    }
}

/// Resolves when SIGINT (Ctrl-C) or SIGTERM arrives. A driver selects on it
/// beside its loop to stop between two calls into its state machine (the
/// machines persist what must survive before they transmit, so any such point
/// is a safe one). Must be called within a Tokio runtime.
pub async fn stop_signal() -> Stopped {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No signal handling available: never resolve; the default action
        // (termination) then applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Stopped { name: "SIGINT" },
        _ = term.recv() => Stopped { name: "SIGTERM" },
    }
}

/// The exit status of a binary's `main` for `result`: success, the signal's
/// conventional status for a [`Stopped`] run, else failure after printing
/// `BIN: error: ` and the whole error chain (outermost first, `: `-joined, as
/// anyhow's `{:#}`) to stderr. Takes any error that can be seen as a
/// `dyn Error` (an `anyhow::Error` can).
pub fn exit_code<E>(bin: &str, result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    let Err(e) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    let mut chain = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        next = s.source();
    }
    eprintln!("{bin}: error: {chain}");
    match e.downcast_ref::<Stopped>() {
        Some(s) => std::process::ExitCode::from(s.exit_code()),
        None => std::process::ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        let bytes = super::peak_rss_bytes().expect("VmHWM readable on Linux");
        assert!(bytes > 1024 * 1024, "implausible peak RSS {bytes}");
    }
}
