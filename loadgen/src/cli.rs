//! The command line: `loadgen generate`, `upload`, `bench` and `plot`, turned into library
//! calls.
//!
//! Flags override the `INGEST_*` environment variables, which override defaults that work
//! against a gateway on its standard local port. Only `main` parses; everything below takes the
//! resulting options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ingest_runtime::settings::{parse_millis, Secret};
use ingest_runtime::telemetry::LogFormat;

use crate::bench::intake::IntakeOptions;
use crate::bench::{BenchOptions, Scenario};
use crate::client::Credentials;
use crate::generate::DEFAULT_NUM_RECORDS;
use crate::progress::ProgressMode;
use crate::retry::RetryPolicy;
use crate::upload::UploadOptions;

/// `loadgen`: generates the original system's test data and uploads CSV files to the gateway.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "INGEST_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write CSV files in the original generator's format.
    Generate(GenerateArgs),
    /// Upload CSV files as one upload, in parallel chunks, and wait until they are loaded.
    Upload(UploadArgs),
    /// Measure `psql \copy` against the whole pipeline on the same generated rows.
    Bench(BenchArgs),
    /// Measure how fast the gateway takes chunks in, against the disk's own fdatasync rate.
    Intake(IntakeArgs),
    /// Draw rows/s against rows for pipeline and baseline from the benchmark results.
    Plot(PlotArgs),
}

/// `loadgen generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Rows to write in all.
    #[arg(long, default_value_t = DEFAULT_NUM_RECORDS)]
    pub num_records: u64,

    /// Size at which a new file starts: bytes, or with a unit (KiB/K, MiB/M, GiB/G are powers
    /// of 1024; KB, MB, GB powers of 1000).
    #[arg(long, default_value = "9MiB", value_parser = parse_size)]
    pub file_size: u64,

    /// Seed of the random amounts and types: the same seed writes the same bytes. Default:
    /// random, and printed so the run can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Spread the rows evenly over this many consecutive months from January 2023. Default:
    /// one second per row from 01/01/2023 00:00:00, as the original generator did.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1200))]
    pub months: Option<u32>,

    /// Directory the files `data_000.csv`, `data_001.csv`, ... are written to.
    #[arg(long, default_value = "data")]
    pub out: PathBuf,
}

/// Where the gateway is and who the client is (`upload` and `bench`).
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's base URL.
    #[arg(long, env = "INGEST_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// API client id.
    #[arg(long, env = "INGEST_CLIENT_ID")]
    pub client_id: String,

    /// API client secret.
    #[arg(long, env = "INGEST_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub client_secret: Secret,
}

impl GatewayArgs {
    fn credentials(self) -> Credentials {
        Credentials {
            client_id: self.client_id,
            client_secret: self.client_secret,
        }
    }
}

/// How chunks are cut and sent (`upload` and `bench`).
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Target chunk size (chunks end at the first record boundary past it); units as for
    /// `generate --file-size`.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub chunk_size: u64,

    /// Chunks in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

/// `loadgen upload` flags.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// CSV files, sent as one upload in this order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub sending: SendArgs,

    /// Continue this upload (its folder id): only chunks the gateway lacks are sent. Give the
    /// same files and chunk size as the first time.
    #[arg(long, value_name = "FOLDER")]
    pub resume: Option<String>,

    /// Attempts per request before a 5xx or connection error is fatal.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Deadline of one HTTP request, in seconds.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,

    /// Pause between status polls while the engine loads, in milliseconds.
    #[arg(long, default_value = "200", value_parser = parse_millis("--poll-interval-ms"))]
    pub poll_interval_ms: Duration,

    /// How long to wait for the load to finish, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub wait_timeout_secs: u64,
}

impl UploadArgs {
    /// The library's options for these flags.
    pub fn into_options(self, progress: ProgressMode) -> UploadOptions {
        let url = self.gateway.url.clone();
        let mut opts = UploadOptions::new(url, self.gateway.credentials(), self.files);
        opts.chunk_size = self.sending.chunk_size;
        opts.concurrency = usize::from(self.sending.concurrency);
        opts.resume = self.resume;
        opts.retry = RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        };
        opts.request_timeout = Duration::from_secs(self.request_timeout_secs.max(1));
        opts.poll_interval = self.poll_interval_ms;
        opts.wait_timeout = Duration::from_secs(self.wait_timeout_secs);
        opts.progress = progress;
        opts
    }
}

/// `loadgen bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How the pipeline gets the rows: our parallel client, the original's client (one
    /// connection, whole files as multipart posts, one at a time), or the whole input as one
    /// chunk.
    #[arg(long, value_enum, default_value_t = Scenario::OwnClient)]
    pub scenario: Scenario,

    /// Rows to generate and load.
    #[arg(long, default_value_t = DEFAULT_NUM_RECORDS)]
    pub rows: u64,

    /// Months the rows are spread over, evenly (from January 2023).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1200))]
    pub months: u32,

    /// Where the generated files are cached (default `bench/cache/<rows>-rows-<months>-months`);
    /// reused when they are complete and were made with the same rows, months, file size and
    /// seed.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Size at which a new file starts (the original's 9 MiB).
    #[arg(long, default_value = "9MiB", value_parser = parse_size)]
    pub file_size: u64,

    /// Seed of the generated values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// The database the engine loads into; the baseline table is made (and dropped) there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ingest",
        hide_env_values = true
    )]
    pub database_url: String,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    #[command(flatten)]
    pub sending: SendArgs,

    /// Pause between status polls while the engine loads, in milliseconds (short: the poll
    /// decides when the pipeline's clock stops).
    #[arg(long, default_value = "20", value_parser = parse_millis("--poll-interval-ms"))]
    pub poll_interval_ms: Duration,

    /// The gateway's process id, to report its CPU time and peak memory.
    #[arg(long)]
    pub gateway_pid: Option<u32>,

    /// The engine's process id, likewise.
    #[arg(long)]
    pub engine_pid: Option<u32>,

    #[command(flatten)]
    pub results: ResultsArgs,
}

impl BenchArgs {
    /// Where `loadgen bench` writes its results.
    pub fn results_dir(&self) -> PathBuf {
        self.results.dir(BENCH_RESULTS)
    }

    /// The library's options for these flags.
    pub fn into_options(self, progress: ProgressMode) -> BenchOptions {
        let url = self.gateway.url.clone();
        let mut upload = UploadOptions::new(url, self.gateway.credentials(), Vec::new());
        upload.chunk_size = self.sending.chunk_size;
        upload.concurrency = usize::from(self.sending.concurrency);
        upload.poll_interval = self.poll_interval_ms;
        upload.progress = progress;
        BenchOptions {
            scenario: self.scenario,
            rows: self.rows,
            months: self.months,
            data_dir: self.data_dir.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "bench/cache/{}-rows-{}-months",
                    self.rows, self.months
                ))
            }),
            file_size: self.file_size,
            seed: self.seed,
            database_url: self.database_url,
            upload,
            gateway_pid: self.gateway_pid,
            engine_pid: self.engine_pid,
            label: self.results.label(),
        }
    }
}

/// Where `loadgen bench` and `loadgen plot` read and write results unless told otherwise.
pub const BENCH_RESULTS: &str = "bench/results";
/// Where `loadgen intake` writes its results unless told otherwise.
pub const INTAKE_RESULTS: &str = "bench/results/intake";

/// What a benchmark's results are labelled and where they go (`loadgen bench`, `loadgen intake`).
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Free text naming the configuration, stored with the results (e.g. `copy-connections=3`).
    #[arg(long, env = "INGEST_BENCH_LABEL")]
    label: Option<String>,

    /// Where the JSON results and the Markdown table go [default: `bench/results`, and
    /// `bench/results/intake` for `loadgen intake`].
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

impl ResultsArgs {
    /// The label, unless it is blank.
    pub fn label(&self) -> Option<String> {
        self.label.clone().filter(|l| !l.trim().is_empty())
    }

    /// The results directory given, or `default`.
    fn dir(&self, default: &str) -> PathBuf {
        self.results_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    }
}

/// `loadgen intake` flags.
#[derive(Debug, Args)]
pub struct IntakeArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Largest chunk; the chunk is the generated rows that fit. Units as for `generate
    /// --file-size`.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub chunk_size: u64,

    /// Chunks sent (and files written to the disk) per concurrency level.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunks: u64,

    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<u16>,

    /// Where the disk's own rate is measured: the gateway's upload directory.
    #[arg(long, env = "INGEST_UPLOAD_DIR", default_value = "./data/uploads")]
    pub disk_dir: PathBuf,

    /// The gateway's process id, to report the CPU it used at each level.
    #[arg(long)]
    pub gateway_pid: Option<u32>,

    #[command(flatten)]
    pub results: ResultsArgs,
}

impl IntakeArgs {
    /// Where `loadgen intake` writes its results.
    pub fn results_dir(&self) -> PathBuf {
        self.results.dir(INTAKE_RESULTS)
    }

    /// The library's options for these flags.
    pub fn into_options(self) -> IntakeOptions {
        let url = self.gateway.url.clone();
        IntakeOptions {
            upload: UploadOptions::new(url, self.gateway.credentials(), Vec::new()),
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            levels: self
                .concurrency
                .iter()
                .map(|&c| usize::from(c.max(1)))
                .collect(),
            disk_dir: self.disk_dir,
            label: self.results.label(),
            gateway_pid: self.gateway_pid,
        }
    }
}

/// `loadgen plot` flags.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Directory of the benchmark's JSON results.
    #[arg(long, default_value = BENCH_RESULTS)]
    pub results_dir: PathBuf,

    /// The SVG to write.
    #[arg(long, default_value = "bench/results/throughput.svg")]
    pub out: PathBuf,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        Err("INGEST_CLIENT_SECRET must not be empty".to_owned())
    } else {
        Ok(Secret::new(value))
    }
}

/// Parses a positive byte count such as `1048576`, `8MiB`, `8M`, `500KB` or `1.5 GiB`.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{value:?}: unknown unit (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size such as 8MiB"))?;
    let bytes = (number * unit_bytes as f64).round();
    if bytes >= 1.0 && bytes < u64::MAX as f64 {
        Ok(bytes as u64)
    } else {
        Err(format!("{value:?}: the size must be at least one byte"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("9 MiB"), Ok(9 << 20));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("0").is_err());
        assert!(parse_size("8 furlongs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn upload_flags_become_options() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "upload",
            "a.csv",
            "b.csv",
            "--url",
            "http://gw:1",
            "--client-id",
            "me",
            "--client-secret",
            "s3cret",
            "--chunk-size",
            "1MiB",
            "--concurrency",
            "3",
            "--resume",
            "abc",
            "--max-attempts",
            "2",
        ])
        .expect("valid flags should parse");
        let Command::Upload(args) = cli.command else {
            panic!("expected the upload subcommand");
        };
        assert!(
            !format!("{args:?}").contains("s3cret"),
            "secrets never print"
        );
        let opts = args.into_options(ProgressMode::Off);
        assert_eq!(
            opts.files,
            vec![PathBuf::from("a.csv"), PathBuf::from("b.csv")]
        );
        assert_eq!(opts.url, "http://gw:1");
        assert_eq!(opts.credentials.client_secret.expose(), "s3cret");
        assert_eq!(opts.chunk_size, 1 << 20);
        assert_eq!(opts.concurrency, 3);
        assert_eq!(opts.resume.as_deref(), Some("abc"));
        assert_eq!(opts.retry.max_attempts, 2);
        assert_eq!(opts.poll_interval, Duration::from_millis(200));
    }

    /// `loadgen <flags>` with a client's credentials: the subcommand's flags.
    fn parse(flags: &[&str]) -> Command {
        let credentials = ["--client-id", "me", "--client-secret", "s3cret"];
        let argv = std::iter::once("loadgen").chain(flags.iter().copied());
        Cli::try_parse_from(argv.chain(credentials))
            .expect("valid flags should parse")
            .command
    }

    #[test]
    fn intake_flags_become_options() {
        let Command::Intake(args) = parse(&["intake", "--disk-dir", "/tmp/up"]) else {
            panic!("expected the intake subcommand");
        };
        assert_eq!(args.results_dir(), PathBuf::from("bench/results/intake"));
        let opts = args.into_options();
        assert_eq!(opts.levels, vec![1, 4, 16]);
        assert_eq!((opts.chunk_size, opts.chunks), (8 << 20, 48));
        assert_eq!(opts.disk_dir, PathBuf::from("/tmp/up"));
        let flags = ["intake", "--concurrency", "2,8", "--results-dir", "/tmp/r"];
        let Command::Intake(args) = parse(&flags) else {
            panic!("expected the intake subcommand");
        };
        assert_eq!(args.results_dir(), PathBuf::from("/tmp/r"));
        assert_eq!(args.into_options().levels, vec![2, 8]);
    }

    #[test]
    fn generate_defaults_match_the_original() {
        let cli = Cli::try_parse_from(["loadgen", "generate"]).expect("defaults should parse");
        let Command::Generate(args) = cli.command else {
            panic!("expected the generate subcommand");
        };
        assert_eq!(args.num_records, 1_000_000);
        assert_eq!(args.file_size, 9 << 20);
        assert_eq!(args.seed, None);
        assert_eq!(args.months, None, "one second per row unless asked");
        let cli = Cli::try_parse_from(["loadgen", "generate", "--months", "15"])
            .expect("months should parse");
        let Command::Generate(args) = cli.command else {
            panic!("expected the generate subcommand");
        };
        assert_eq!(args.months, Some(15));
        assert!(Cli::try_parse_from(["loadgen", "generate", "--months", "0"]).is_err());
    }

    #[test]
    fn bench_flags_become_options() {
        let flags = [
            "bench",
            "--rows",
            "5000",
            "--concurrency",
            "4",
            "--engine-pid",
            "42",
            "--label",
            " ",
        ];
        let Command::Bench(args) = parse(&flags) else {
            panic!("expected the bench subcommand");
        };
        let opts = args.into_options(ProgressMode::Off);
        assert_eq!(opts.rows, 5000);
        assert_eq!(opts.scenario, Scenario::OwnClient);
        assert_eq!(opts.months, 12);
        assert_eq!(
            opts.data_dir,
            PathBuf::from("bench/cache/5000-rows-12-months")
        );
        assert_eq!(opts.file_size, 9 << 20);
        assert_eq!(opts.upload.concurrency, 4);
        assert_eq!(opts.upload.chunk_size, 8 << 20);
        assert_eq!(opts.upload.poll_interval, Duration::from_millis(20));
        assert_eq!((opts.gateway_pid, opts.engine_pid), (None, Some(42)));
        assert_eq!(opts.label, None, "a blank label is none");

        let flags = ["bench", "--scenario", "original-client", "--months", "15"];
        let Command::Bench(args) = parse(&flags) else {
            panic!("expected the bench subcommand");
        };
        let opts = args.into_options(ProgressMode::Off);
        assert_eq!(opts.scenario, Scenario::OriginalClient);
        assert_eq!(opts.months, 15);
        assert_eq!(
            opts.data_dir,
            PathBuf::from("bench/cache/1000000-rows-15-months")
        );
        for name in ["own-client", "original-client", "one-file"] {
            let parsed = <Scenario as clap::ValueEnum>::from_str(name, false);
            assert_eq!(parsed.map(Scenario::name), Ok(name));
        }
    }
}
