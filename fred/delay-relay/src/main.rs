//! `delay-relay`: TCP relays with a fixed one-way delay in each direction. See the crate docs.

use std::time::Duration;

use clap::Parser;
use delay_relay::{Link, serve};
use tokio::net::TcpListener;

/// TCP relays that delay every byte by --delay-ms in each direction (so a request/answer round
/// trip through a relay takes 2 x --delay-ms longer), keeping byte order and not limiting
/// throughput. Emulates a WAN link between processes on one machine, where the kernel has no
/// netem qdisc.
///
/// Give --listen and --to in pairs, one pair per relay: the first --listen forwards to the
/// first --to, and so on. Example, two FReD peering links with 25 ms one way:
///
///   delay-relay --delay-ms 25 --listen 127.0.0.1:15555 --to 127.0.0.1:5555
///                             --listen 127.0.0.1:15556 --to 127.0.0.1:5556
#[derive(Parser, Debug)]
#[command(name = "delay-relay", version, verbatim_doc_comment)]
struct Args {
    /// Address to accept connections on (HOST:PORT); repeat for more relays.
    #[arg(long, value_name = "ADDR", required = true)]
    listen: Vec<String>,

    /// Where the matching --listen forwards to (HOST:PORT); one per --listen, in order.
    #[arg(long, value_name = "ADDR", required = true)]
    to: Vec<String>,

    /// One-way delay in milliseconds, applied to both directions of every relay (0 relays
    /// without delay).
    #[arg(long, value_name = "N", default_value_t = 0)]
    delay_ms: u64,

    /// Log every connection (open, close, bytes each way) to stderr.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.listen.len() != args.to.len() {
        eprintln!(
            "delay-relay: {} --listen but {} --to: give them in pairs",
            args.listen.len(),
            args.to.len()
        );
        std::process::exit(2);
    }
    let delay = Duration::from_millis(args.delay_ms);
    let mut relays = tokio::task::JoinSet::new();
    // Bind every listener before serving any, so a port in use fails the whole start.
    for (listen, to) in args.listen.iter().zip(&args.to) {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("delay-relay: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        let at = listener
            .local_addr()
            .map_or(listen.clone(), |a| a.to_string());
        eprintln!("delay-relay: {at} -> {to}, {} ms one way", args.delay_ms);
        let link = Link {
            target: to.clone(),
            delay,
            verbose: args.verbose,
        };
        relays.spawn(async move { (at, serve(listener, link).await) });
    }
    // serve only returns on a fatal error.
    if let Some(Ok((at, Err(e)))) = relays.join_next().await {
        eprintln!("delay-relay: relay on {at} stopped: {e}");
    }
    std::process::exit(1);
}
