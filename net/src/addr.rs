//! Listen addresses given as `host:port` with a host name (`localhost:8091`), not only as an
//! IP address.

use std::net::{SocketAddr, ToSocketAddrs};

/// Errors resolving a listen address.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// The text is not `host:port` or the host name does not resolve.
    #[error("listen address {text:?} is not IP:PORT or HOST:PORT that resolves")]
    Resolve {
        /// The address as given.
        text: String,
        /// The resolver's reason.
        source: std::io::Error,
    },
    /// The host name resolved to no address.
    #[error("listen address {0:?} resolves to no address")]
    Empty(String),
}

/// Parses `IP:PORT` (`127.0.0.1:8091`, `[::1]:8091`) or resolves `HOST:PORT`
/// (`localhost:8091`). A host with both IPv4 and IPv6 addresses binds its first IPv4
/// address: metagraph endpoints and examples use IPv4 loopback, and `localhost` commonly
/// resolves to `::1` first, which would bind where no one connects.
pub fn resolve_listen_addr(text: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|source| AddrError::Resolve {
            text: text.to_string(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| AddrError::Empty(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_and_host_names_are_accepted_and_localhost_is_ipv4_loopback() {
        assert_eq!(
            resolve_listen_addr("127.0.0.1:8091").unwrap(),
            "127.0.0.1:8091".parse().unwrap()
        );
        assert_eq!(
            resolve_listen_addr("[::1]:8091").unwrap(),
            "[::1]:8091".parse().unwrap()
        );
        assert_eq!(
            resolve_listen_addr("localhost:8091").unwrap(),
            "127.0.0.1:8091".parse().unwrap()
        );
        for bad in ["localhost", "127.0.0.1", "no-such-host.invalid:1", ":80"] {
            let err = resolve_listen_addr(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
