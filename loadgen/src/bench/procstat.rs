//! CPU time and peak memory of another process, from Linux's `/proc`.
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat` (all threads of the process) in clock
//! ticks; the tick rate comes from the kernel's auxiliary vector (`AT_CLKTCK` in
//! `/proc/self/auxv`), which is what `sysconf(_SC_CLK_TCK)` returns, read without `unsafe`.
//! Peak memory is `VmHWM` of `/proc/<pid>/status`: the resident set's high-water mark since the
//! process started.

use std::io;

use serde::Serialize;

/// `AT_CLKTCK` in `<elf.h>`.
const AT_CLKTCK: u64 = 17;
/// The tick rate Linux uses on every common architecture, if the auxiliary vector is unreadable.
const DEFAULT_CLK_TCK: u64 = 100;

/// What a process used during the measured run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcUsage {
    /// CPU seconds (user + system) spent during the run.
    pub cpu_secs: f64,
    /// Peak resident memory since the process started, in MiB.
    pub peak_rss_mib: f64,
}

/// A process being watched: its CPU time when the watch started.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pid: u32,
    cpu_start: f64,
}

impl Watch {
    /// Starts watching `pid`.
    pub fn start(pid: u32) -> io::Result<Self> {
        Ok(Self {
            pid,
            cpu_start: cpu_seconds(pid)?,
        })
    }

    /// CPU used since [`Watch::start`] and the peak memory so far.
    pub fn stop(&self) -> io::Result<ProcUsage> {
        Ok(ProcUsage {
            cpu_secs: cpu_seconds(self.pid)? - self.cpu_start,
            peak_rss_mib: peak_rss_kib(self.pid)? as f64 / 1024.0,
        })
    }
}

/// User plus system CPU seconds of `pid` so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| malformed("stat"))?;
    Ok(ticks as f64 / clock_ticks_per_sec() as f64)
}

/// `VmHWM` of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_hwm(&status).ok_or_else(|| malformed("status"))
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) ... field 14 (utime), field 15 (stime).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second, as `sysconf(_SC_CLK_TCK)` would say.
fn clock_ticks_per_sec() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| auxv_value(&auxv, AT_CLKTCK))
        .filter(|&hz| hz > 0)
        .unwrap_or(DEFAULT_CLK_TCK)
}

/// The value of `key` in an auxiliary vector of native-endian (key, value) word pairs.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let word = |bytes: &[u8]| {
            let mut buf = [0u8; WORD];
            buf.copy_from_slice(bytes);
            usize::from_ne_bytes(buf) as u64
        };
        (word(&pair[..WORD]) == key).then(|| word(&pair[WORD..]))
    })
}

fn malformed(file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected /proc/<pid>/{file}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 350 25 0 0 20 0 9 0";
        assert_eq!(parse_stat_ticks(stat), Some(375));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tengine\nVmPeak:\t  900 kB\nVmHWM:\t   81234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(81_234));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_watched() {
        let watch = Watch::start(std::process::id()).expect("own /proc entry");
        // Burn CPU until the kernel has counted some (ticks are 10 ms; a busy machine may give
        // this thread little of its wall time), with a deadline.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let mut usage = watch.stop().expect("own /proc entry");
        while usage.cpu_secs <= 0.0 && started.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            usage = watch.stop().expect("own /proc entry");
        }
        std::hint::black_box(x);
        assert!(usage.cpu_secs > 0.0, "{usage:?}");
        assert!(usage.peak_rss_mib > 1.0, "{usage:?}");
        assert!((10..=10_000).contains(&clock_ticks_per_sec()));
    }
}
