//! A TCP proxy that can black-hole its traffic.
//!
//! Healthy, it forwards bytes both ways. Black-holed, it stops reading from either side, so
//! nothing arrives and nothing is closed: senders see their data accepted by the kernel and
//! then silence, as in a real partition. Healing resumes forwarding of whatever was held;
//! connections opened during the partition are held too.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops accepting (open connections end with their peers).
pub struct BlackholeProxy {
    addr: SocketAddr,
    blackhole: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackholeProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<BlackholeProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (blackhole, rx) = watch::channel(false);
        let rx = Arc::new(rx);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = (*rx).clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pump(cr, sw, rx.clone()), pump(sr, cw, rx));
                    }
                });
            }
        });
        Ok(BlackholeProxy {
            addr,
            blackhole,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Swallows traffic from now on (connections stay open).
    pub fn partition(&self) {
        let _ = self.blackhole.send(true);
    }

    /// Forwards again, including what was held.
    pub fn heal(&self) {
        let _ = self.blackhole.send(false);
    }
}

impl Drop for BlackholeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction, pausing (not reading) while black-holed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blackhole: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while *blackhole.borrow() {
            if blackhole.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => { let _ = to.shutdown().await; return; }
                Ok(n) => {
                    // A partition that starts mid-copy holds these bytes until it heals.
                    while *blackhole.borrow() {
                        if blackhole.changed().await.is_err() {
                            return;
                        }
                    }
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = blackhole.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn forwards_then_holds_then_forwards() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut b = [0u8; 16];
            loop {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    return;
                }
                s.write_all(&b[..n]).await.unwrap();
            }
        });
        let proxy = BlackholeProxy::start(target).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = [0u8; 4];
        c.write_all(b"ping").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        proxy.partition();
        c.write_all(b"lost").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut b)).await;
        assert!(r.is_err(), "nothing may pass a partition");
        proxy.heal();
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"lost", "held bytes arrive after healing");
    }
}
