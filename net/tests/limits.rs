//! Each limit of `polylith_net::serve` against a raw-socket client that misbehaves in one
//! way, with a well-behaved client alongside. Timeouts are tens to hundreds of milliseconds
//! of real time (paused time would race the loopback sockets).

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use polylith_net::{ListenerLimits, ListenerMetrics, ListenerObserver, serve};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A server under test and the means to stop it.
struct Server {
    addr: SocketAddr,
    observer: ListenerObserver,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
}

async fn start(limits: ListenerLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let observer = ListenerMetrics::register(&prometheus::Registry::new())
        .unwrap()
        .listener("api");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        app(),
        limits,
        observer.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        observer,
        stop: Some(stop),
        task,
    }
}

/// Limits with every timeout long enough not to interfere, unless a test shortens one.
fn relaxed() -> ListenerLimits {
    ListenerLimits {
        header_read_timeout: Duration::from_secs(5),
        body_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_connections: 100,
        max_connections_per_ip: 100,
        shutdown_grace: Duration::from_secs(5),
    }
}

async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends a keep-alive GET and reads one response; returns its status line and body.
async fn get_on(stream: &mut TcpStream, path: &str) -> Option<(String, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// One GET on a fresh connection that asks the server to close after answering.
async fn get_once(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head.lines().next().unwrap_or("").to_string();
                return Some((status, text[end + 4..end + 4 + length].to_string()));
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server closes; returns how long that took, or `None` if it did not
/// close within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn half_sent_header_is_cut_after_the_header_timeout_while_others_are_served() {
    let server = start(ListenerLimits {
        header_read_timeout: Duration::from_millis(200),
        ..relaxed()
    })
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let sent = Instant::now();

    let (status, body) = get_once(server.addr, "/")
        .await
        .expect("normal client served");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok");

    let waited = closed_within(&mut slow, Duration::from_secs(3)).await;
    let elapsed = sent.elapsed();
    assert!(waited.is_some(), "half-sent header still open after 3 s");
    assert!(
        elapsed >= Duration::from_millis(150),
        "cut before the timeout: {elapsed:?}"
    );
    // Only the slow connection was cut (the good one closed itself after its answer).
    assert_eq!(server.observer.timeouts().0, 1);
    let (status, _) = get_once(server.addr, "/").await.expect("still served");
    assert!(status.contains("200"), "{status}");
    drop(server.stop);
}

#[tokio::test]
async fn per_address_and_total_caps_refuse_new_connections() {
    let server = start(ListenerLimits {
        max_connections: 5,
        max_connections_per_ip: 3,
        ..relaxed()
    })
    .await;
    let local = Ipv4Addr::new(127, 0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from(local, server.addr).await;
        assert!(get_on(&mut s, "/").await.is_some(), "within the cap");
        held.push(s);
    }
    // A fourth from the same address is closed at once.
    let mut over = connect_from(local, server.addr).await;
    assert!(
        closed_within(&mut over, Duration::from_secs(2))
            .await
            .is_some(),
        "fourth connection from one address not refused"
    );
    assert_eq!(server.observer.refused(), (0, 1));

    // Another address still gets in, up to the total of 5.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..2 {
        let mut s = connect_from(other, server.addr).await;
        assert!(get_on(&mut s, "/").await.is_some(), "other address served");
        held.push(s);
    }
    assert_eq!(server.observer.open_connections(), 5);
    let mut third = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).await;
    assert!(
        closed_within(&mut third, Duration::from_secs(2))
            .await
            .is_some(),
        "sixth connection not refused by the total cap"
    );
    assert_eq!(server.observer.refused(), (1, 1));

    // Closing one gives its place back.
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.observer.open_connections() > 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = connect_from(local, server.addr).await;
    assert!(
        get_on(&mut again, "/").await.is_some(),
        "place not given back"
    );
    drop(server.stop);
}

#[tokio::test]
async fn dripped_body_is_cut_by_the_body_timeout() {
    let server = start(ListenerLimits {
        body_read_timeout: Duration::from_millis(200),
        ..relaxed()
    })
    .await;
    // Control: a whole body in time is read.
    let mut fast = TcpStream::connect(server.addr).await.unwrap();
    fast.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (status, body) = read_response(&mut fast).await.expect("fast body answered");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "5");

    // One byte every 50 ms: each gap is far below the timeout, the total is not.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let (mut rd, mut wr) = slow.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), rd.read_to_end(&mut reply)).await;
    let elapsed = start.elapsed();
    drip.abort();
    assert!(read.is_ok(), "dripping body not cut within 3 s");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        elapsed >= Duration::from_millis(150),
        "cut before the timeout: {elapsed:?}"
    );
    assert_eq!(server.observer.timeouts().1, 1);
    drop(server.stop);
}

#[tokio::test]
async fn client_that_stops_reading_is_cut_but_a_long_handler_is_not() {
    let server = start(ListenerLimits {
        idle_timeout: Duration::from_millis(200),
        ..relaxed()
    })
    .await;
    // A handler running longer than the idle timeout is not idleness.
    let mut patient = TcpStream::connect(server.addr).await.unwrap();
    patient
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut patient).await.expect("slow handler");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "slow");
    assert_eq!(server.observer.timeouts().2, 0);

    // Asks for 64 MiB and never reads: the server's writes stall and the connection goes.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(3);
    while server.observer.timeouts().2 == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server.observer.timeouts().2,
        1,
        "stalled reader still connected after 3 s"
    );
    assert!(sent.elapsed() >= Duration::from_millis(150), "cut early");
    assert_eq!(server.observer.open_connections(), 0);
    drop(stalled);
    drop(server.stop);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let mut server = start(relaxed()).await;
    let mut inflight = TcpStream::connect(server.addr).await.unwrap();
    inflight
        .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = server.stop.take().map(|s| s.send(()));
    let (status, body) = read_response(&mut inflight)
        .await
        .expect("in-flight answered");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "slow");
    tokio::time::timeout(Duration::from_secs(3), server.task)
        .await
        .expect("serve returns after the in-flight request")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting"
    );
}

#[test]
fn nofile_limit_is_raised_to_the_hard_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let start = getrlimit(Resource::Nofile);
    // Lower the soft limit first (allowed without privileges), so there is something to
    // raise whatever the environment's limits are; half the hard limit leaves the other
    // tests of this binary plenty.
    let hard = start.maximum.unwrap_or(1 << 20);
    let lowered = (hard / 2).max(64);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(lowered),
            maximum: start.maximum,
        },
    )
    .unwrap();
    let limit = polylith_net::try_raise_nofile_limit().unwrap();
    assert_eq!(limit.before, Some(lowered));
    assert_eq!(limit.soft, Some(hard));
    assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
}
