//! What a run reads about its processes and its machine: peak memory and CPU time from
//! `/proc`, sums from a binary's Prometheus text.

/// The machine's memory (`MemTotal` of `/proc/meminfo`), in bytes; 0 when unknown.
pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

/// The cores this process may use; 0 when unknown.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// Now, UTC, as RFC 3339: the date of a report.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// `VmHWM` of `/proc/<pid>/status`, in bytes; `None` once the process is gone.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system, every thread) the process used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime` + `stime` (fields 14 and 15) in clock ticks of 1/100 s (`USER_HZ`, 100 on Linux).
pub fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// The sum over every label set of the samples named exactly `name` in Prometheus text.
pub fn metric_total(text: &str, name: &str) -> f64 {
    metric_total_where(text, name, "")
}

/// Like [`metric_total`], only the samples whose line contains `label` (e.g. `route="/x"`).
pub fn metric_total_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains(label))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tgateway\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51_200 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_time_is_user_plus_system() {
        let stat = "4242 (consumer (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat), Some(12.9));
        assert_eq!(parse_cpu_seconds("4242 (x) S 1"), None);
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn metric_totals_sum_label_sets_and_skip_longer_names() {
        let text =
            "# TYPE w summary\nw_sum{sink=\"a\",outcome=\"ok\"} 1.5\nw_sum{sink=\"a\",outcome=\"retry\"} 0.5\nw_sum_extra 9\nw_count 4\n";
        assert_eq!(metric_total(text, "w_sum"), 2.0);
        assert_eq!(metric_total(text, "w_count"), 4.0);
        assert_eq!(metric_total(text, "missing"), 0.0);
        assert_eq!(metric_total_where(text, "w_sum", "outcome=\"ok\""), 1.5);
    }

    #[test]
    fn this_process_has_a_peak_and_the_machine_memory() {
        assert!(peak_rss_bytes(std::process::id()).unwrap() > 0);
        assert!(machine_memory_bytes() > 0);
    }
}
