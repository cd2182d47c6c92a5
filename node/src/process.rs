//! Facts about the running node process that the drivers report: its peak
//! resident set size, which hospitals put in their final report and the
//! coordinator in its results.

/// Peak resident set size of this process in bytes (`VmHWM` of
/// `/proc/self/status`), or `None` where that file is not readable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_rss_is_read_on_linux() {
        let bytes = super::peak_rss_bytes().expect("VmHWM readable on Linux");
        assert!(bytes > 1024 * 1024, "implausible peak RSS {bytes}");
    }
}
