//! A hospital's append-only audit log of everything that left it: one JSON
//! line per message (time, recipient, kind, round, bytes), for its data
//! protection officer. The file is created 0600 and only ever appended to.
//!
//! What this module does not record: message contents (ciphertexts and seeds
//! do not belong in a log).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::files::FileError;

/// The open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    /// Opens `path` for appending (created 0600 if missing).
    pub fn open(path: &Path) -> Result<AuditLog, FileError> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|source| FileError::Io {
                path: d.to_owned(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| FileError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(AuditLog {
            path: path.to_owned(),
            file,
        })
    }

    /// Records one outgoing message. A failing write is logged, not fatal:
    /// the message has already been handed to the transport.
    pub fn record(&mut self, to: &str, kind: &str, round: u32, bytes: usize) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = serde_json::json!({
            "at": at, "to": to, "kind": kind, "round": round + 1, "bytes": bytes,
        });
        if let Err(e) = writeln!(self.file, "{line}") {
            tracing::error!(path = %self.path.display(), "cannot append to the audit log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn appends_one_line_per_message_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        AuditLog::open(&p)
            .unwrap()
            .record("hospital-2", "ring_pass", 0, 1234);
        AuditLog::open(&p)
            .unwrap()
            .record("coordinator", "reveal", 0, 99);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["to"], "hospital-2");
        assert_eq!(lines[0]["bytes"], 1234);
        assert_eq!(lines[1]["kind"], "reveal");
        assert_eq!(lines[1]["round"], 1);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
