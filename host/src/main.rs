use clap::Parser;
use discedge::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => discedge::serve::run(*args).await,
        Command::Bench(args) => discedge::bench::run(args).await,
        Command::Scenario(args) => discedge::scenario::run(args).await.map(|_| ()),
    }
}
