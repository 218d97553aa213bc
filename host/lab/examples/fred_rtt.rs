//! What FReD's own calls cost on a bed, the yardstick of the FReD path's latency target ("our
//! time beyond the model at most one Update round trip plus 0.3 ms"): the p50 and p99 of
//!
//! - `update`: one Update that creates a fresh item (the compare-and-set a turn's write is);
//! - `keys-local`, `keys-NODE`: a Keys call for that item on this node, and on each other node;
//! - `update+confirm`: the Update, then Keys on every node at once, which is what a turn's
//!   store-write does with `--fred-confirm replicas`.
//!
//! Run it against a bed that is up (fred/run-testbed.sh), with a proxy's certificate:
//!
//!     cargo run --release -p discedge-lab --example fred_rtt -- --certs /tmp/bed/certs \
//!         --user proxyA --node 127.0.0.1:9001 --other 127.0.0.1:9002 [--other ...] [--n 300]
//!
//! The items it writes (`rttNNNN...`) stay in the keygroup; proxies ignore ids that are not
//! theirs. With the bed's trigger feed on, every Update also waits for the feed's calls, as a
//! turn's does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use discedge_fred::{Confirm, FredClient, FredConfig};

struct Args {
    certs: PathBuf,
    user: String,
    node: String,
    others: Vec<String>,
    keygroup: String,
    n: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        certs: PathBuf::new(),
        user: "proxyA".into(),
        node: "127.0.0.1:9001".into(),
        others: Vec::new(),
        keygroup: "discedge".into(),
        n: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} wants a value"))
        };
        match flag.as_str() {
            "--certs" => args.certs = value()?.into(),
            "--user" => args.user = value()?,
            "--node" => args.node = value()?,
            "--other" => args.others.push(value()?),
            "--keygroup" => args.keygroup = value()?,
            "--n" => args.n = value()?.parse()?,
            _ => anyhow::bail!("unknown flag {flag} (see the doc comment of fred_rtt.rs)"),
        }
    }
    anyhow::ensure!(
        !args.certs.as_os_str().is_empty(),
        "--certs DIR (the bed's certificates) is required"
    );
    Ok(args)
}

/// p50 and p99 (nearest rank) in milliseconds.
fn quantiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let config = FredConfig {
        addr: args.node.clone(),
        tls_name: None,
        cert: args.certs.join(format!("{}.crt", args.user)),
        key: args.certs.join(format!("{}.key", args.user)),
        ca: args.certs.join("ca.crt"),
        keygroup: args.keygroup.clone(),
        node_id: String::new(),
        expiry: 0,
        replicas: None,
        grant: Vec::new(),
        timeout: Duration::from_secs(5),
        confirm: Confirm::Replicas,
        feed: None,
    };
    let local = FredClient::connect(&config).await?;
    let mut others = Vec::new();
    for addr in &args.others {
        others.push(FredClient::connect_to(&config, addr, None, false).await?);
    }
    let run = format!("{:08x}", std::process::id());
    let mut update = Vec::new();
    let mut keys_local = Vec::new();
    let mut keys_other = vec![Vec::new(); others.len()];
    let mut confirmed = Vec::new();
    for i in 0..args.n + 10 {
        let id = format!("rtt{run}{i:08}");
        let t0 = Instant::now();
        local.update(&id, "x".repeat(190), Vec::new()).await?;
        let t_update = t0.elapsed();
        let t1 = Instant::now();
        let all = futures_util::future::join_all(
            std::iter::once(&local)
                .chain(&others)
                .map(|node| node.keys(&id, 1)),
        )
        .await;
        let t_confirm = t1.elapsed();
        for result in all {
            result?;
        }
        // One at a time too, so each node's own round trip shows.
        let t2 = Instant::now();
        local.keys(&id, 1).await?;
        let t_local = t2.elapsed();
        let mut t_others = Vec::new();
        for node in &others {
            let t = Instant::now();
            node.keys(&id, 1).await?;
            t_others.push(t.elapsed());
        }
        if i < 10 {
            continue; // warm-up: connections, FReD's caches
        }
        update.push(t_update);
        confirmed.push(t_update + t_confirm);
        keys_local.push(t_local);
        for (samples, t) in keys_other.iter_mut().zip(t_others) {
            samples.push(t);
        }
    }
    println!("FReD calls from this process, {} samples each (ms)", args.n);
    println!("{:<28} {:>8} {:>8}", "call", "p50", "p99");
    let row = |name: &str, samples: &mut Vec<Duration>| {
        let (p50, p99) = quantiles(samples);
        println!("{name:<28} {p50:>8.2} {p99:>8.2}");
    };
    row("update", &mut update);
    row("keys-local", &mut keys_local);
    for (addr, samples) in args.others.iter().zip(&mut keys_other) {
        row(&format!("keys-{addr}"), samples);
    }
    row("update+confirm (parallel)", &mut confirmed);
    Ok(())
}
