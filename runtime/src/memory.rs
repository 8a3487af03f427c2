//! How the binaries' memory is mapped.

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`), before it
/// allocates much.
///
/// Why: where the kernel's THP setting is `always` (as on our 2-core machines), every page
/// mimalloc takes fresh from the OS, or takes back after purging it, is faulted in as a whole
/// 2 MiB page that the kernel zeroes first. The engine hands its ~1 MiB COPY buffers from the
/// parser thread to the connection's task, which frees them on another thread, so that memory
/// keeps going back and forth: a profile of the engine loading 1M rows put 28% of its CPU in
/// the kernel's `clear_page_erms` under `do_huge_pmd_anonymous_page`. Off, across three
/// alternating `scripts/bench` rounds of all three scenarios (1M rows), the engine used 0.39-0.55 s
/// of CPU instead of 0.48-0.70 s and peaked at 50-79 MiB instead of 80-103 MiB
/// (bench/profile.md, 2026-12-07). Same as `MIMALLOC_ALLOW_THP=0`, which mimalloc reads too early
/// for a program to set it for itself.
pub fn disable_transparent_huge_pages() {
    if let Err(err) = nix::sys::prctl::set_thp_disable(true) {
        // Some sandboxes refuse it; the process works the same, only slower.
        tracing::info!(error = %err, "transparent huge pages stay on");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_reports_huge_pages_off_afterwards() {
        super::disable_transparent_huge_pages();
        if nix::sys::prctl::get_thp_disable().is_err() {
            return; // prctl refused altogether (a sandbox): nothing the process can check.
        }
        let status = std::fs::read_to_string("/proc/self/status").expect("Linux");
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("the kernel lists THP_enabled");
        assert!(line.ends_with('0'), "{line}");
    }
}
