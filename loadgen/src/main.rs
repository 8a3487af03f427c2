//! The `loadgen` binary; see the library docs for what it does.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser as _;
use loadgen::cli::{BenchArgs, Cli, Command, GenerateArgs, IntakeArgs, PlotArgs, UploadArgs};
use loadgen::generate::DateSpread;
use loadgen::progress::ProgressMode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    ingest_runtime::telemetry::init_tracing(cli.log_format);
    match cli.command {
        Command::Generate(args) => generate(args),
        Command::Upload(args) => upload(args),
        Command::Bench(args) => bench(args),
        Command::Intake(args) => intake(args),
        Command::Plot(args) => plot(args),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let started = Instant::now();
    let spread = args
        .months
        .map_or(DateSpread::EverySecond, DateSpread::Months);
    let files = loadgen::generate::generate_spread(
        &args.out,
        args.num_records,
        args.file_size,
        seed,
        spread,
    )?;
    let secs = started.elapsed().as_secs_f64();
    let mut bytes = 0;
    for file in &files {
        bytes += std::fs::metadata(file)
            .with_context(|| format!("stat {}", file.display()))?
            .len();
    }
    println!(
        "wrote {} rows in {} files ({:.1} MB) to {} in {secs:.3} s ({:.2} M rows/s), seed {seed}",
        args.num_records,
        files.len(),
        bytes as f64 / 1e6,
        args.out.display(),
        args.num_records as f64 / secs.max(1e-9) / 1e6,
    );
    Ok(ExitCode::SUCCESS)
}

fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let opts = args.into_options(ProgressMode::for_stdout());
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let summary = runtime.block_on(loadgen::upload::run_upload(opts))?;
    print!("{summary}");
    Ok(if summary.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let results_dir = args.results_dir();
    let opts = args.into_options(ProgressMode::for_stdout());
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let report = runtime.block_on(loadgen::bench::run_bench(opts))?;
    println!();
    print!("{report}");
    let json = report
        .write_json(&results_dir)
        .with_context(|| format!("write the JSON result under {}", results_dir.display()))?;
    let table = report.append_markdown(&results_dir).with_context(|| {
        format!(
            "append to the results table under {}",
            results_dir.display()
        )
    })?;
    println!("results: {} and {}", json.display(), table.display());
    println!("{}", report.summary_line());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn intake(args: IntakeArgs) -> anyhow::Result<ExitCode> {
    let results_dir = args.results_dir();
    let opts = args.into_options();
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let report = runtime.block_on(loadgen::bench::intake::run_intake(opts))?;
    println!();
    print!("{report}");
    let json = report
        .write_json(&results_dir)
        .with_context(|| format!("write the JSON result under {}", results_dir.display()))?;
    let table = report
        .append_markdown(&results_dir)
        .with_context(|| format!("append to the table under {}", results_dir.display()))?;
    println!("results: {} and {}", json.display(), table.display());
    Ok(ExitCode::SUCCESS)
}

fn plot(args: PlotArgs) -> anyhow::Result<ExitCode> {
    let points = loadgen::plot::plot(&args.results_dir, &args.out)?;
    for p in &points {
        println!(
            "{:>10} rows: pipeline {:>9.0} rows/s, baseline {:>9.0} rows/s",
            p.rows, p.pipeline_rows_per_sec, p.baseline_rows_per_sec
        );
    }
    println!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
