//! Real browsers and system tools for the tests that need them: Debian packages installed with
//! apt when missing (CI runs as root on a fresh machine), and the Node drivers of `browser/`
//! (Playwright over Debian's Chromium) run against a live service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The first of `candidates` that exists, after `apt-get install -y <package>` if none does.
/// Call it once per binary (through a `OnceLock`): tests running in parallel must not race apt
/// for its lock.
pub fn debian_package(candidates: &[&str], package: &str) -> PathBuf {
    let find = || {
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    };
    if let Some(found) = find() {
        return found;
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "-o",
                "DPkg::Lock::Timeout=120",
                package,
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        assert!(install(), "apt-get install {package} failed");
    }
    find().unwrap_or_else(|| panic!("{package} should be installed now"))
}

/// Debian's Chromium.
pub fn chromium() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            debian_package(
                &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
                "chromium",
            )
        })
        .clone()
}

/// The repository's `browser/` folder: the Node drivers and their pinned `playwright-core`.
fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

/// `npm ci` in `browser/` once per test binary (the lock file pins every package).
fn install_drivers() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = drivers_dir();
        if dir.join("node_modules/playwright-core").is_dir() {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm should run (Node.js is on every machine of this kind)");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    });
}

/// Runs driver `script` of `browser/` with `env` (and `CHROMIUM`), for at most `timeout`;
/// returns the JSON line it prints. Panics with its stderr when it fails.
pub async fn run_driver(
    script: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> serde_json::Value {
    let chromium = tokio::task::spawn_blocking(|| {
        install_drivers();
        chromium()
    })
    .await
    .expect("installing the browser should not panic");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .current_dir(drivers_dir())
        .env("CHROMIUM", chromium)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {timeout:?}"))
        .expect("node should run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|err| panic!("{script} printed {stdout:?}: {err}"))
}
