//! `polylith health --url URL`: exit status 0 only for a daemon that answers `"status": "ok"`,
//! 1 with one clear line otherwise (refused, timed out, error status, degraded).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Serves every connection with `status_line` and `body` (or never answers with `None`).
fn server(answer: Option<(&'static str, &'static str)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            match answer {
                Some((status, body)) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                None => held.push(s),
            }
        }
    });
    format!("http://{addr}")
}

fn health(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polylith"))
        .arg("health")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}: {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn exit_status_says_whether_the_daemon_is_healthy() {
    let ok = server(Some(("200 OK", r#"{"status":"ok","round":3}"#)));
    let out = health(&["--url", &ok]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ok: "), "{}", text(&out));
    assert!(
        text(&out).contains("/health"),
        "the path is added: {}",
        text(&out)
    );
    let out = health(&["--url", ok.trim_start_matches("http://"), "--quiet"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "HOST:PORT works: {}",
        text(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "--quiet prints nothing: {}",
        text(&out)
    );

    let degraded = server(Some(("200 OK", r#"{"status":"degraded","reason":"x"}"#)));
    let out = health(&["--url", &degraded]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unhealthy") && text(&out).contains("degraded"),
        "{}",
        text(&out)
    );

    let failing = server(Some(("503 Service Unavailable", r#"{"error":"db"}"#)));
    let out = health(&["--url", &failing]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP 503"), "{}", text(&out));

    let hung = server(None);
    let start = Instant::now();
    let out = health(&["--url", &hung, "--timeout-ms", "500"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the timeout holds"
    );
    assert!(
        text(&out).contains("no answer within 0.5 s"),
        "{}",
        text(&out)
    );

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = health(&["--url", &format!("http://{closed}")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out).to_lowercase();
    assert!(
        t.contains("unreachable") && t.contains("refused"),
        "the cause is named: {t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}
