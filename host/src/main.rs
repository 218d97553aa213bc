use clap::Parser;
use discedge::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // A scenario run owns the terminal (progress bar, summary): its in-process proxy reports
    // only warnings unless RUST_LOG asks for more.
    let default_level = match command {
        Command::Scenario(_) | Command::Policy(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .init();
    match command {
        Command::Serve(args) => discedge_server::serve::run(*args).await,
        Command::Bench(args) => discedge_lab::bench::run(args).await,
        Command::Scenario(args) => discedge_lab::scenario::run(args).await.map(|_| ()),
        Command::Report(args) => discedge_lab::report::run(&args).map(|_| ()),
        Command::Policy(args) => discedge_kit::run(args).await,
    }
}
