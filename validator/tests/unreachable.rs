//! An `unreachable` failure names its root cause (connection refused, DNS, TLS, timeout),
//! not just reqwest's "error sending request for url (…)", and stays within the bound on
//! text kept from a query.

use polylith_protocol::keys::Hotkey;
use polylith_validator::client::SignedClient;
use polylith_validator::task::{FailureReason, MAX_MESSAGE_BYTES};
use std::time::Duration;

fn client() -> SignedClient {
    SignedClient::new(Hotkey::generate(), 1 << 20).unwrap()
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn refused_dns_tls_and_timeout_are_named() {
    let c = client();
    let receiver = Hotkey::generate().public();
    let refused = c
        .post_signed(
            &format!("http://127.0.0.1:{}", closed_port()),
            &receiver,
            "/v1/gemm/commit",
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.reason, FailureReason::Unreachable);
    assert!(
        refused.message.to_lowercase().contains("refused"),
        "{refused}"
    );
    assert!(
        refused.message.starts_with("POST /v1/gemm/commit: "),
        "{refused}"
    );

    let dns = c
        .get(
            "http://no-such-host.invalid:1",
            "/v1/weights",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        ["dns", "lookup", "resolve", "name"]
            .iter()
            .any(|w| dns.to_lowercase().contains(w)),
        "{dns}"
    );

    // TLS to a listener that speaks plain HTTP: the handshake error is in the message.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = plain.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = plain.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let tls = c
        .get(
            &format!("https://127.0.0.1:{port}"),
            "/v1/weights",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        ["tls", "handshake", "certificate", "message", "corrupt"]
            .iter()
            .any(|w| tls.to_lowercase().contains(w)),
        "{tls}"
    );

    // A listener that accepts and never answers: a timeout, said as one.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let timeout = c
        .get(
            &format!("http://127.0.0.1:{port}"),
            "/v1/weights",
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(timeout.contains("no answer within 200 ms"), "{timeout}");
    println!("{refused}\n{dns}\n{tls}\n{timeout}");

    for message in [&refused.message, &dns, &tls, &timeout] {
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{message}");
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }
}
