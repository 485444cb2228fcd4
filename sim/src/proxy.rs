//! A TCP proxy that can black-hole, one way or both, and delay its traffic.
//!
//! Healthy, it forwards bytes both ways. Black-holed, it stops reading from the cut side, so
//! nothing arrives and nothing is closed: senders see their data accepted by the kernel and
//! then silence, as in a real partition. Healing resumes forwarding of whatever was held;
//! connections opened during the partition are held too. Delay and jitter postpone each
//! chunk (order kept), like a slow or congested path.

use crate::net::LinkFaults;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A running proxy; dropping it stops accepting (open connections end with their peers).
pub struct BlackholeProxy {
    addr: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackholeProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<BlackholeProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (faults, rx) = watch::channel(LinkFaults::default());
        let rx = Arc::new(rx);
        let task = tokio::spawn(async move {
            let mut seed = addr.port() as u64;
            while let Ok((client, _)) = listener.accept().await {
                let rx = (*rx).clone();
                seed = seed.wrapping_add(1);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(
                            pump(cr, sw, rx.clone(), |f| f.up_cut, seed),
                            pump(sr, cw, rx, |f| f.down_cut, !seed)
                        );
                    }
                });
            }
        });
        Ok(BlackholeProxy { addr, faults, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Swallows traffic both ways from now on (connections stay open).
    pub fn partition(&self) {
        self.set(LinkFaults {
            up_cut: true,
            down_cut: true,
            ..LinkFaults::default()
        });
    }

    /// Forwards again, including what was held; clears delay and jitter.
    pub fn heal(&self) {
        self.set(LinkFaults::default());
    }

    /// Sets the path's faults: `up_cut` holds client-to-target bytes, `down_cut` the reverse.
    pub fn set(&self, f: LinkFaults) {
        let _ = self.faults.send(f);
    }

    /// The path's faults now.
    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }
}

impl Drop for BlackholeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction: a reader stamps chunks as they arrive (not reading while cut), a
/// writer releases each at arrival + delay + jitter, never before the previous one.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<LinkFaults>,
    cut: fn(&LinkFaults) -> bool,
    seed: u64,
) {
    let mut rng = crate::rng::Rng::new(seed);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut held = faults.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if faults.wait_for(|f| !cut(f)).await.is_err() {
                return;
            }
            tokio::select! {
                n = from.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                },
                _ = faults.changed() => {}
            }
        }
    };
    let writer = async move {
        let mut last = Instant::now();
        while let Some((arrived, chunk)) = rx.recv().await {
            // A partition that starts mid-copy holds these bytes until it heals.
            if held.wait_for(|f| !cut(f)).await.is_err() {
                return;
            }
            let f = *held.borrow();
            let jitter = if f.jitter.is_zero() {
                Duration::ZERO
            } else {
                let r = rng.next_u64();
                Duration::from_micros(r % (f.jitter.as_micros() as u64 + 1))
            };
            let due = (arrived + f.delay + jitter).max(last);
            last = due;
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
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

    #[tokio::test]
    async fn one_way_cut_and_delay() {
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
        // Replies cut: the request reaches the echo server, the echo is held.
        proxy.set(LinkFaults {
            down_cut: true,
            ..LinkFaults::default()
        });
        c.write_all(b"half").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut b)).await;
        assert!(r.is_err(), "the reply direction is cut");
        proxy.heal();
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"half");
        // 100 ms each way: the round trip takes at least 200 ms.
        proxy.set(LinkFaults {
            delay: Duration::from_millis(100),
            ..LinkFaults::default()
        });
        let t = std::time::Instant::now();
        c.write_all(b"slow").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"slow");
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
}
