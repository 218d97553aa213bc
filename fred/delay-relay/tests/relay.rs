//! The relay against an echo server on loopback: a round trip costs at least 2 x delay, bytes
//! arrive intact and in order, chunks in flight are delayed once each (not one after the
//! other), and a half-close is passed on. Timing checks are lower bounds, plus upper bounds
//! only where the alternative (delays adding up) would be many times over them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use delay_relay::{Link, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server: writes back everything it reads, closes its side on EOF.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// A relay to `target` with `delay_ms` one way; answers its listening address.
async fn relay(target: SocketAddr, delay_ms: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let link = Link {
        target: target.to_string(),
        delay: Duration::from_millis(delay_ms),
        verbose: false,
    };
    tokio::spawn(serve(listener, link));
    addr
}

/// Sends `msg`, reads until as many bytes came back; answers the elapsed time.
async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let started = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    let took = started.elapsed();
    assert_eq!(back, msg);
    took
}

#[tokio::test]
async fn round_trip_takes_twice_the_delay() {
    let echo = echo_server().await;
    for delay_ms in [20, 50] {
        let mut s = TcpStream::connect(relay(echo, delay_ms).await)
            .await
            .unwrap();
        s.set_nodelay(true).unwrap();
        for i in 0..5 {
            let took = round_trip(&mut s, format!("ping {i}").as_bytes()).await;
            eprintln!("delay {delay_ms} ms: round trip {took:?}");
            assert!(
                took >= Duration::from_millis(2 * delay_ms),
                "round trip {took:?} through a {delay_ms} ms relay"
            );
        }
    }
}

#[tokio::test]
async fn no_delay_relays_at_once() {
    let echo = echo_server().await;
    let mut s = TcpStream::connect(relay(echo, 0).await).await.unwrap();
    let took = round_trip(&mut s, b"hello").await;
    // Generous: a loopback round trip takes well under a millisecond.
    assert!(
        took < Duration::from_secs(2),
        "round trip {took:?} without delay"
    );
}

#[tokio::test]
async fn bytes_arrive_intact_and_in_order() {
    let echo = echo_server().await;
    let s = TcpStream::connect(relay(echo, 10).await).await.unwrap();
    // 8 MiB of a pattern that shows any reordering, lost or repeated chunk.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        // Uneven writes, so chunk borders fall everywhere.
        let mut at = 0;
        let mut size = 1;
        while at < sent.len() {
            let end = (at + size).min(sent.len());
            w.write_all(&sent[at..end]).await.unwrap();
            at = end;
            size = size * 7 % 100_003 + 1;
        }
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap(); // the relay passes the echo server's EOF on
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes changed or reordered");
}

#[tokio::test]
async fn chunks_in_flight_are_delayed_once_each() {
    let echo = echo_server().await;
    let delay_ms = 200;
    let s = TcpStream::connect(relay(echo, delay_ms).await)
        .await
        .unwrap();
    s.set_nodelay(true).unwrap();
    let (mut r, mut w) = s.into_split();
    let started = Instant::now();
    let messages = 20u8;
    let writer = tokio::spawn(async move {
        for i in 0..messages {
            w.write_all(&[i; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w
    });
    let mut back = vec![0u8; 100 * messages as usize];
    r.read_exact(&mut back[..100]).await.unwrap();
    let first = started.elapsed();
    r.read_exact(&mut back[100..]).await.unwrap();
    let all = started.elapsed();
    drop(writer.await.unwrap());
    for (i, chunk) in back.chunks(100).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == i as u8),
            "message {i} garbled or out of order"
        );
    }
    eprintln!("first echo after {first:?}, all {messages} after {all:?}");
    assert!(first >= Duration::from_millis(2 * delay_ms));
    // Delays released one after another would take 20 x 2 x 200 ms = 8 s; in flight together,
    // 19 x 10 ms of sending plus one round trip of 400 ms.
    assert!(all < Duration::from_secs(4), "delays added up: {all:?}");
}

#[tokio::test]
async fn half_close_is_passed_on_after_the_data() {
    let echo = echo_server().await;
    let delay_ms = 30;
    let s = TcpStream::connect(relay(echo, delay_ms).await)
        .await
        .unwrap();
    let (mut r, mut w) = s.into_split();
    let started = Instant::now();
    w.write_all(b"last words").await.unwrap();
    w.shutdown().await.unwrap();
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"last words");
    assert!(started.elapsed() >= Duration::from_millis(2 * delay_ms));
}

#[tokio::test]
async fn unreachable_target_closes_the_client() {
    // A port nobody listens on: bind one, note it, close it.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut s = TcpStream::connect(relay(gone, 5).await).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "client not closed: {read:?}"
    );
}
