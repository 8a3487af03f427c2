//! The engine binary, built from this package as `system-engine`: Cargo tells a package's tests
//! where its own binaries are (`CARGO_BIN_EXE_<name>`) and no other's, and this way the system
//! tests start the engine of the same build as themselves. Same `main` as `engine/src/main.rs`;
//! another name, so `cargo build --bins` never writes two binaries to `target/*/engine`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    engine::cli::run().await
}
