//! The FAKE llama-server (`discedge_lab::fake_llm::FakeLlm`: answers at once with a fixed reply,
//! one token per byte unless --model) served standalone on a given port, so a test bed on real FReD can be
//! measured without a model:
//!
//!     cargo run --release -p discedge --example fake_llama -- --port 18100 [--delay-ms N]
//!     fred/run-testbed.sh --llama-url http://127.0.0.1:18100 ...
//!
//! Prints its URL and serves until killed. `--delay-ms` makes every answer take that long.
//! `--model GGUF` makes it tokenize with that model and name it in `/props`, so a proxy next to
//! it tokenizes locally, as next to a real llama-server (replies stay fake).
//!
//! The fake listens on a free loopback port of its own; this program forwards connections from
//! `127.0.0.1:PORT` to it byte for byte (one more loopback hop, tens of microseconds, which the
//! proxy counts as model time: its `Server-Timing` `llm`).

use std::time::Duration;

use discedge_lab::fake_llm::FakeLlm;
use tokio::net::{TcpListener, TcpStream};

fn arg(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: fake_llama [--port 18100] [--host 127.0.0.1] [--delay-ms 0] [--model GGUF]"
        );
        return Ok(());
    }
    let port: u16 = arg(&args, "--port").map_or(Ok(18100), |p| p.parse())?;
    let host = arg(&args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let delay_ms: u64 = arg(&args, "--delay-ms").map_or(Ok(0), |d| d.parse())?;

    let fake = match arg(&args, "--model") {
        Some(gguf) => FakeLlm::start_with_model(gguf.as_ref()).await?,
        None => FakeLlm::start().await?,
    };
    fake.set_delay(Duration::from_millis(delay_ms));
    let inner = fake.url.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind((host.as_str(), port)).await?;
    let addr = listener.local_addr()?;
    println!("http://{addr}");
    eprintln!(
        "fake_llama: FAKE llama-server (fixed reply, {delay_ms} ms per answer) \
         at http://{addr}; Ctrl-C stops it"
    );

    let serve = async {
        loop {
            let (mut client, _) = listener.accept().await?;
            let inner = inner.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = TcpStream::connect(&inner).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = serve => r?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "fake_llama: calls served: {}",
        fake.calls.load(std::sync::atomic::Ordering::SeqCst)
    );
    Ok(())
}
