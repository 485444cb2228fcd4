//! The `connection-flood` drill step: idle TCP connections held open against the master's
//! gRPC port, as an attacker or a broken client pool would, never speaking HTTP/2.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle connections this process holds open.
#[derive(Default)]
pub struct Flood {
    conns: Vec<TcpStream>,
}

impl Flood {
    /// Opens `n` connections to `addr` (raising this process's open-file limit first).
    /// The master may close them again (that is its defence); they are only held here.
    pub async fn open(&mut self, addr: SocketAddr, n: u32) -> Result<(), String> {
        let room = heatmesh_master::conn::raise_open_file_limit().map_or(0, |(_, now)| now);
        if room < self.conns.len() as u64 + n as u64 + 256 {
            return Err(format!(
                "connection-flood: this process may open only {room} files, too few for {n} connections"
            ));
        }
        for _ in 0..n {
            // A full accept backlog drops SYNs, and the kernel retries after a second.
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => self.conns.push(s),
                Ok(Err(e)) => {
                    return Err(format!(
                        "connection-flood: connecting to {addr} after {} connections: {e}",
                        self.conns.len()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "connection-flood: {addr} stopped taking connections after {}",
                        self.conns.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Closes every connection.
    pub fn end(&mut self) {
        self.conns.clear();
    }
}
