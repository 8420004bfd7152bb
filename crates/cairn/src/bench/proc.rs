//! Reads facts about a running process from Linux's `/proc`, for reports that compare a
//! server's memory and CPU use across workloads.

/// Clock ticks per second of the `utime`/`stime` fields of `/proc/PID/stat` (`USER_HZ`). Linux
/// fixes it at 100 on every architecture Cairn runs on; reading it would need `sysconf`.
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// CPU time process `pid` has used so far, user plus system, in clock ticks
/// ([`CLOCK_TICKS_PER_SEC`]); `None` when the process or `/proc` is not there.
pub fn cpu_time_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// `utime + stime` of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

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
    fn parses_cpu_ticks_after_an_odd_command_name() {
        let stat = "4242 (cairn (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 8 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("4242 (cairn) S 1"), None);
        if cfg!(target_os = "linux") {
            assert!(cpu_time_ticks(std::process::id()).is_some());
        }
        assert_eq!(cpu_time_ticks(u32::MAX), None);
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
