//! Listening sockets: address parsing, binding, TCP_NODELAY.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

/// Parse `host:port` for a listener. The host is an IP literal or `localhost` (127.0.0.1).
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| format!("`{s}`: the port must be a number from 0 to 65535")),
        Some((host, port)) if port.parse::<u16>().is_ok() => Err(format!(
            "`{s}`: listen on an IP address (127.0.0.1, 0.0.0.0, [::1]) or localhost, not `{host}`"
        )),
        _ => Err(format!(
            "`{s}` is not a host:port listen address, e.g. 127.0.0.1:4317"
        )),
    }
}

/// Bind a listener, saying so in a log line when it is reachable beyond this machine.
pub async fn bind(what: &str, address: &str) -> std::io::Result<TcpListener> {
    let addr = parse_listen_address(address)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            component = what,
            address = %bound,
            "listening on a non-loopback address because the configuration says so; it is reachable from other machines"
        );
    }
    tracing::info!(component = what, address = %bound, "listening");
    Ok(listener)
}
