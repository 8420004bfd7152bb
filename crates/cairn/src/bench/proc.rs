//! Reads facts about a running process from Linux's `/proc`, for reports that compare a
//! server's memory use across workloads.

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`); `None` when the
/// process does not exist, `/proc` is not available (not Linux) or the field is missing.
pub fn resident_memory_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss_kib(&status)
}

/// The `VmRSS` value of a `/proc/PID/status` text, in KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let rest = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let mut fields = rest.split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    // The kernel always reports kB; refuse anything else rather than mis-scale it.
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vm_rss_line() {
        let status = "Name:\tcairn\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
    }

    #[test]
    fn missing_or_odd_fields_give_none() {
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn own_process_has_a_resident_size_on_linux() {
        if cfg!(target_os = "linux") {
            let kib = resident_memory_kib(std::process::id()).expect("own VmRSS");
            assert!(kib > 0);
        }
        assert_eq!(resident_memory_kib(u32::MAX), None);
    }
}
