//! `polylith_net::serve_tls` end to end with a self-signed certificate made in the test: a
//! client that trusts it is served, one that does not is refused, plain HTTP is not served,
//! and a stalled handshake is cut like a stalled header.

use axum::Router;
use axum::routing::get;
use polylith_net::tls::{TlsError, client_roots, server_config};
use polylith_net::{ListenerLimits, ListenerMetrics, ListenerObserver, serve_tls};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
struct Identity {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

fn identity() -> Identity {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    Identity {
        _dir: dir,
        cert: cert_path,
        key: key_path,
    }
}

fn limits(header_read_timeout: Duration) -> ListenerLimits {
    ListenerLimits {
        header_read_timeout,
        body_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_connections: 100,
        max_connections_per_ip: 100,
        shutdown_grace: Duration::from_secs(1),
    }
}

async fn start(id: &Identity, limits: ListenerLimits) -> (SocketAddr, ListenerObserver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let observer = ListenerMetrics::register(&prometheus::Registry::new())
        .unwrap()
        .listener("api");
    let config = server_config(&id.cert, &id.key).unwrap();
    let router = Router::new().route("/", get(|| async { "over tls" }));
    tokio::spawn(serve_tls(
        listener,
        config,
        router,
        limits,
        observer.clone(),
        std::future::pending(),
    ));
    (addr, observer)
}

fn client_trusting(cert: Option<&Path>) -> reqwest::Client {
    let roots = match cert {
        Some(path) => client_roots(Some(path)).unwrap(),
        None => Vec::new(),
    };
    let roots = roots
        .into_iter()
        .map(|der| reqwest::Certificate::from_der(&der).unwrap());
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(roots)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_trusts_the_certificate_is_served_over_https() {
    let id = identity();
    let (addr, _) = start(&id, limits(Duration::from_secs(5))).await;
    let client = client_trusting(Some(&id.cert));
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}/", addr.port());
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.text().await.unwrap(), "over tls");
    }
}

#[tokio::test]
async fn an_untrusted_certificate_and_plain_http_are_refused() {
    let id = identity();
    let (addr, _) = start(&id, limits(Duration::from_secs(5))).await;
    let err = client_trusting(None)
        .get(format!("https://127.0.0.1:{}/", addr.port()))
        .send()
        .await
        .unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    // A plain HTTP request gets no HTTP response from a TLS listener.
    let plain = client_trusting(None)
        .get(format!("http://127.0.0.1:{}/", addr.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_after_the_header_timeout() {
    let id = identity();
    let (addr, observer) = start(&id, limits(Duration::from_millis(300))).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Half a ClientHello record header, then silence.
    stream.write_all(&[0x16, 0x03]).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the server closed the stalled connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    // The count is made just before the connection is dropped.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(observer.timeouts().0, 1);
    // The listener still serves.
    let client = client_trusting(Some(&id.cert));
    let ok = client
        .get(format!("https://localhost:{}/", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_a_clear_error() {
    let a = identity();
    let b = identity();
    let err = server_config(&a.cert, &b.key).unwrap_err();
    assert!(matches!(err, TlsError::Config { .. }), "{err}");
    let missing = a.cert.with_file_name("missing.pem");
    let err = server_config(&missing, &a.key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // The key file is not a certificate.
    let err = server_config(&a.key, &a.key).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}
