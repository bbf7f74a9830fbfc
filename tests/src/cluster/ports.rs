//! Free TCP ports on 127.0.0.1.

use std::net::TcpListener;

/// `n` distinct ports that were free a moment ago. All are held open
/// together while choosing (so they differ), then released for the server
/// processes to bind. Another process could grab one in between; the
/// harness reports that as a startup failure naming the port.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}
