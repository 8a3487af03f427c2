//! `engine`: load the chunks announced on the partition streams, or apply migrations
//! ([`engine::cli`]).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    engine::cli::run().await
}
