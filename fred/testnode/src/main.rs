//! `fred-testnode`: runs a cluster of FReD-compatible test nodes in one process, for tests and
//! local runs of DisCEdge-rs. Not FReD.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use fred_testnode::{Cluster, NodeHandle, TestPki};
use tracing::info;

/// A FReD-compatible test node for tests; not FReD.
///
/// Serves FReD v0.2.19's client gRPC API over mTLS for every --node, all in one process with a
/// shared in-process naming service and replication. Certificates are read from
/// DIR/NAME.crt, DIR/NAME.key and DIR/ca.crt; a node presents its certificate to the trigger
/// nodes it calls after each write (AddTrigger). Runs until SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "fred-testnode", version)]
struct Args {
    /// Directory with ca.crt and NAME.crt / NAME.key per node (fred/make-certs.sh layout).
    #[arg(long, value_name = "DIR")]
    certs: PathBuf,

    /// A node to run, as NAME=IP:PORT (repeat for each node).
    #[arg(long = "node", value_name = "NAME=ADDR", required = true, value_parser = parse_node)]
    nodes: Vec<(String, SocketAddr)>,

    /// Replication delay in milliseconds: a write call waits this long for its relay, as
    /// FReD's synchronous relay does, so peers have the write when the call returns.
    #[arg(long, default_value_t = 0, value_name = "N")]
    delay_ms: u64,

    /// Simulate replication lag instead: writes answer at once and reach the peers --delay-ms
    /// later (like FReD's experimental --peer-async-replication).
    #[arg(long)]
    lag: bool,

    /// If DIR is missing or empty, generate a test CA and certificates for every node plus
    /// these extra names (e.g. client users).
    #[arg(long, value_name = "NAME", num_args = 0..)]
    generate_certs: Option<Vec<String>>,
}

fn parse_node(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s.split_once('=').ok_or("expected NAME=IP:PORT")?;
    if name.is_empty() {
        return Err("empty node name".into());
    }
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok((name.to_string(), addr))
}

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    if let Some(extra) = &args.generate_certs {
        if is_empty_dir(&args.certs)? {
            let mut names: Vec<&str> = args.nodes.iter().map(|(n, _)| n.as_str()).collect();
            names.extend(extra.iter().map(String::as_str));
            TestPki::generate(&args.certs, &names)?;
            info!(
                "generated test certificates for {names:?} in {}",
                args.certs.display()
            );
        } else {
            info!(
                "{} is not empty: using its certificates",
                args.certs.display()
            );
        }
    }

    // Same file layout as TestPki writes and fred/make-certs.sh.
    let pki = TestPki {
        dir: args.certs.clone(),
    };
    let cluster = Cluster::new();
    let delay = Duration::from_millis(args.delay_ms);
    if args.lag {
        cluster.set_replication_lag(delay);
    } else {
        cluster.set_replication_delay(delay);
    }
    let mut handles = Vec::new();
    for (name, addr) in &args.nodes {
        if handles.iter().any(|h: &NodeHandle| h.node_id() == name) {
            bail!("node {name} given twice");
        }
        let tls = pki.node_tls(name);
        handles.push(cluster.start_node(name, *addr, tls).await?);
    }
    info!(
        "fred-testnode: {} FReD-compatible test node(s) running (not FReD); replication {} {} ms",
        handles.len(),
        if args.lag { "lag" } else { "delay" },
        args.delay_ms
    );

    shutdown_signal().await?;
    info!("fred-testnode: stopping test nodes");
    for h in &handles {
        h.stop().await;
    }
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
