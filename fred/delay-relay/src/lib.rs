//! A TCP relay that adds a fixed one-way delay to every byte, in each direction: a WAN link
//! between processes on one machine, for kernels without the `netem` qdisc.
//!
//! Each accepted connection is forwarded to one target. Every chunk read from either side is
//! stamped on arrival and written to the other side at `arrival + delay`, in order. The
//! deadlines are absolute, so a stream of chunks is delayed once, not once per chunk: the link
//! has latency but no bandwidth limit of its own (up to [`MAX_IN_FLIGHT`] bytes per direction
//! are held back, far more than a delay of milliseconds needs). A half-close (EOF) travels
//! with the same delay, after the bytes before it. Connection set-up is not delayed: the
//! client's connect succeeds at once and the relay dials the target at once (gRPC keeps its
//! connections open, so set-up is not what a WAN test bed measures).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};

/// Largest read, in bytes.
const CHUNK: usize = 64 * 1024;

/// Bytes per direction and connection that may wait for their release time; reading pauses
/// (but arrival times are still taken when the bytes are read) beyond this.
pub const MAX_IN_FLIGHT: usize = 32 * 1024 * 1024;

/// One relay: connections to its listener are forwarded to `target`.
#[derive(Clone, Debug)]
pub struct Link {
    /// Where to connect (HOST:PORT; resolved for each connection).
    pub target: String,
    /// One-way delay, applied in both directions.
    pub delay: Duration,
    /// Log each connection to stderr.
    pub verbose: bool,
}

/// Accepts connections on `listener` forever, relaying each to `link.target`.
pub async fn serve(listener: TcpListener, link: Link) -> io::Result<()> {
    let link = Arc::new(link);
    loop {
        let (inbound, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: wait a little rather than spin or stop.
            Err(e) => {
                eprintln!("delay-relay: accept on {:?}: {e}", listener.local_addr());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let link = link.clone();
        tokio::spawn(async move {
            match connection(inbound, &link).await {
                Ok((up, down)) if link.verbose => eprintln!(
                    "delay-relay: {from} -> {}: closed, {up} bytes up, {down} bytes down",
                    link.target
                ),
                Ok(_) => {}
                Err(e) => eprintln!("delay-relay: {from} -> {}: {e}", link.target),
            }
        });
    }
}

/// Relays one connection until both directions are done; answers the bytes sent each way.
pub async fn connection(inbound: TcpStream, link: &Link) -> io::Result<(u64, u64)> {
    let outbound = TcpStream::connect(&link.target).await?;
    // The relay must not hold small writes back (Nagle): the delay is the only one we add.
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    if link.verbose {
        eprintln!(
            "delay-relay: {} -> {}: open",
            inbound.peer_addr()?,
            outbound.peer_addr()?
        );
    }
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let (up, down) = tokio::join!(
        pipe(in_read, out_write, link.delay),
        pipe(out_read, in_write, link.delay)
    );
    Ok((up?, down?))
}

enum Event {
    Data(Instant, Vec<u8>, OwnedSemaphorePermit),
    /// End of stream (or a read error, which ends it too), with its release time.
    Eof(Instant),
}

/// Copies `from` to `to`, each chunk released `delay` after it was read. Answers the bytes
/// written. The reader and the writer run concurrently: reading never waits for a release.
pub async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
) -> io::Result<u64> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = tokio::select! {
                read = from.read(&mut buf) => read.unwrap_or(0),
                // The writer gave up (its side is gone): stop reading too.
                () = tx.closed() => return,
            };
            let due = Instant::now() + delay;
            if n == 0 {
                let _ = tx.send(Event::Eof(due));
                return;
            }
            // n <= CHUNK, far below u32::MAX and MAX_IN_FLIGHT; the semaphore is never closed.
            let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else {
                return;
            };
            if tx
                .send(Event::Data(due, buf[..n].to_vec(), permit))
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async move {
        let mut written = 0u64;
        while let Some(event) = rx.recv().await {
            match event {
                Event::Data(due, bytes, permit) => {
                    sleep_until(due).await;
                    to.write_all(&bytes).await?;
                    written += bytes.len() as u64;
                    drop(permit);
                }
                Event::Eof(due) => {
                    sleep_until(due).await;
                    break;
                }
            }
        }
        // Closing our write side passes the EOF on; the peer may have closed already.
        let _ = to.shutdown().await;
        Ok::<u64, io::Error>(written)
    };
    let ((), written) = tokio::join!(reader, writer);
    written
}
