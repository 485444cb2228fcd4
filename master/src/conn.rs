//! Connection limits on the gRPC listener and the metrics/health port, so a flood of
//! connections cannot take the master's file descriptors, its CPU or its nodes' way back in.
//!
//! Every accepted connection is counted, in total and per peer address. A connection is
//! *unproven* until it has sent the 24 bytes of the HTTP/2 client preface; one that does not
//! within `limits.handshake_timeout_ms` is closed. At a limit, a new connection takes the
//! place of the oldest unproven one (of the same peer at the per-peer limit), so idle
//! sockets can never lock out a client or node that speaks; only when every connection has
//! proven itself is the new one refused. The total is kept below the open-file limit with
//! room to spare for the ledger, the metrics port and outgoing sockets. Accept errors (the
//! file-descriptor limit) back off instead of spinning. Refusals and evictions are counted
//! (`heatmesh_connections_refused_total`, `heatmesh_connections_closed_total`) and logged at
//! most every ten seconds.
//!
//! Architecture invariant: nothing here reads what a connection carries beyond counting
//! its first bytes; `tests/conn_flood.rs` holds the behaviour under a real flood.

use futures::task::AtomicWaker;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: usize = 24;
/// Descriptors kept free of connections for the ledger, the metrics port and the rest.
pub const FD_HEADROOM: u64 = 256;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_total: usize,
    /// Open connections from one peer address at most.
    pub max_per_peer: usize,
    /// Time a connection has to send the HTTP/2 preface.
    pub handshake: Duration,
}

impl ConnLimits {
    /// The configured limits, with the total kept [`FD_HEADROOM`] below the open-file limit.
    pub fn new(max_total: usize, max_per_peer: usize, handshake: Duration) -> ConnLimits {
        let fds = open_file_limit().unwrap_or(u64::MAX);
        let room = fds.saturating_sub(FD_HEADROOM).max(16) as usize;
        if room < max_total {
            tracing::warn!(
                "open-file limit {fds}: at most {room} gRPC connections (limits.max_connections = {max_total}); raise `ulimit -n` for more"
            );
        }
        ConnLimits {
            max_total: max_total.min(room).max(1),
            max_per_peer: max_per_peer.max(1),
            handshake,
        }
    }
}

/// The soft limit on open files.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft open-file limit to the hard one, where allowed; returns (before, after).
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    let before = l.current?;
    let hard = l.maximum.unwrap_or(1 << 20).min(1 << 20);
    if hard <= before {
        return Some((before, before));
    }
    l.current = Some(hard);
    match setrlimit(Resource::Nofile, l) {
        Ok(()) => Some((before, hard)),
        Err(_) => Some((before, before)),
    }
}

struct Entry {
    peer: IpAddr,
    proven: Arc<AtomicBool>,
    kill: Arc<Kill>,
}

#[derive(Default)]
struct Kill {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Kill {
    fn fire(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Open connections, oldest first.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
    /// Refusals and evictions since the last warning, and when that was.
    refused: u64,
    evicted: u64,
    warned: Option<Instant>,
}

/// Why a connection was let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admitted,
    /// Admitted in the place of an unproven connection, which was closed.
    Evicted(&'static str),
    Refused(&'static str),
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&e.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&e.peer);
            }
        }
        metrics::gauge!("heatmesh_connections_open").set(self.open.len() as f64);
        Some(e)
    }

    /// Closes the oldest unproven connection (of `peer`, if given); false if there is none.
    fn evict(&mut self, peer: Option<IpAddr>) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| !e.proven.load(Ordering::Acquire) && peer.is_none_or(|p| e.peer == p))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.kill.fire();
                true
            }
            None => false,
        }
    }

    fn admit(&mut self, peer: IpAddr, l: &ConnLimits) -> Verdict {
        let mut verdict = Verdict::Admitted;
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= l.max_per_peer {
            if !self.evict(Some(peer)) {
                return Verdict::Refused("per_peer");
            }
            verdict = Verdict::Evicted("per_peer");
        }
        if self.open.len() >= l.max_total {
            if !self.evict(None) {
                return Verdict::Refused("total");
            }
            verdict = Verdict::Evicted("total");
        }
        verdict
    }

    fn insert(&mut self, peer: IpAddr) -> (u64, Arc<AtomicBool>, Arc<Kill>) {
        self.next += 1;
        let (proven, kill) = (Arc::new(AtomicBool::new(false)), Arc::new(Kill::default()));
        self.open.insert(
            self.next,
            Entry {
                peer,
                proven: proven.clone(),
                kill: kill.clone(),
            },
        );
        *self.per_peer.entry(peer).or_default() += 1;
        metrics::gauge!("heatmesh_connections_open").set(self.open.len() as f64);
        (self.next, proven, kill)
    }

    /// Logs refusals and evictions at most every ten seconds.
    fn report(&mut self, l: &ConnLimits) {
        let now = Instant::now();
        if self
            .warned
            .is_some_and(|t| now < t + Duration::from_secs(10))
        {
            return;
        }
        if self.refused + self.evicted == 0 {
            return;
        }
        tracing::warn!(
            refused = self.refused,
            idle_closed = self.evicted,
            open = self.open.len(),
            "gRPC connection limits reached (limits.max_connections {} in total, limits.max_connections_per_peer {} per peer): refused new connections and closed connections that had not sent the HTTP/2 preface",
            l.max_total,
            l.max_per_peer
        );
        (self.refused, self.evicted, self.warned) = (0, 0, Some(now));
    }
}

type Shared = Arc<Mutex<Table>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts from `listener` under `limits`, as a stream of guarded connections for
/// `serve_with_incoming`. The accept task ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
) -> tokio_stream::wrappers::ReceiverStream<Result<Guarded, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let table: Shared = Arc::default();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (or another transient error): retrying at once is
                    // the spin that starves everything else.
                    accept_failed(&table, &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Some((id, proven, kill)) = admit(&table, peer.ip(), &limits) else {
                continue;
            };
            let g = Guarded {
                inner: stream,
                id,
                table: table.clone(),
                proven,
                kill,
                seen: 0,
                handshake: Some(Box::pin(tokio::time::sleep(limits.handshake))),
            };
            if tx.send(Ok(g)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn accept_failed(table: &Shared, e: &io::Error) {
    metrics::counter!("heatmesh_connections_refused_total", "reason" => "accept_error")
        .increment(1);
    let mut t = lock(table);
    t.refused += 1;
    if t.warned
        .is_none_or(|w| w.elapsed() >= Duration::from_secs(10))
    {
        tracing::warn!("gRPC accept failed: {e}; backing off");
        t.warned = Some(Instant::now());
    }
}

/// Counts a new connection in, making room if it must; `None`: refused (dropping the
/// stream closes it).
fn admit(
    table: &Shared,
    peer: IpAddr,
    limits: &ConnLimits,
) -> Option<(u64, Arc<AtomicBool>, Arc<Kill>)> {
    let mut t = lock(table);
    match t.admit(peer, limits) {
        Verdict::Refused(why) => {
            metrics::counter!("heatmesh_connections_refused_total", "reason" => why).increment(1);
            t.refused += 1;
            t.report(limits);
            return None;
        }
        Verdict::Evicted(why) => {
            metrics::counter!("heatmesh_connections_closed_total", "reason" => why).increment(1);
            t.evicted += 1;
            t.report(limits);
        }
        Verdict::Admitted => {}
    }
    Some(t.insert(peer))
}

/// The metrics/health port's limits: scrapes and probes need few connections, and these
/// fit inside the descriptors [`FD_HEADROOM`] keeps free of gRPC ones.
pub const HTTP_MAX_TOTAL: usize = 128;
/// The metrics/health port's limit per peer address.
pub const HTTP_MAX_PER_PEER: usize = 64;

/// A listener for `axum::serve` under the same limits as the gRPC port (a request line and
/// headers count as the preface).
pub struct HttpListener {
    rx: tokio_stream::wrappers::ReceiverStream<Result<Guarded, io::Error>>,
    addr: std::net::SocketAddr,
}

impl HttpListener {
    /// Accepts from `listener` under `limits`.
    pub fn new(listener: TcpListener, limits: ConnLimits) -> io::Result<HttpListener> {
        let addr = listener.local_addr()?;
        Ok(HttpListener {
            rx: incoming(listener, limits),
            addr,
        })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Guarded;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Guarded, std::net::SocketAddr) {
        use futures::StreamExt;
        loop {
            match self.rx.next().await {
                Some(Ok(g)) => {
                    let peer = g.inner.peer_addr().unwrap_or(self.addr);
                    return (g, peer);
                }
                Some(Err(_)) => continue,
                // The accept task only ends with this listener.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        Ok(self.addr)
    }
}

/// An accepted connection, counted while open; closed early if it is evicted or does not
/// send the HTTP/2 preface in time.
pub struct Guarded {
    inner: TcpStream,
    id: u64,
    table: Shared,
    proven: Arc<AtomicBool>,
    kill: Arc<Kill>,
    seen: usize,
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    fn closed(&self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.kill.waker.register(cx.waker());
        self.kill.flag.load(Ordering::Acquire).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room: it had not sent the HTTP/2 preface",
            )
        })
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.closed(cx) {
            return Poll::Ready(Err(e));
        }
        if let Some(h) = self.handshake.as_mut()
            && h.as_mut().poll(cx).is_ready()
        {
            metrics::counter!("heatmesh_connections_closed_total", "reason" => "handshake_timeout")
                .increment(1);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface within limits.handshake_timeout_ms",
            )));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.handshake.is_some() && matches!(r, Poll::Ready(Ok(()))) {
            self.seen += buf.filled().len() - before;
            if self.seen >= PREFACE {
                self.proven.store(true, Ordering::Release);
                self.handshake = None;
            }
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_peer: usize) -> ConnLimits {
        ConnLimits {
            max_total: total,
            max_per_peer: per_peer,
            handshake: Duration::from_secs(5),
        }
    }

    #[test]
    fn at_a_limit_the_oldest_unproven_connection_makes_room_and_proven_ones_never_do() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let l = limits(4, 3);
        let mut t = Table::default();
        let mut conns = Vec::new();
        // (peer, prove it, expected verdict)
        let steps = [
            (a, true, Verdict::Admitted),
            (a, false, Verdict::Admitted),
            (a, false, Verdict::Admitted),
            // a at its per-peer limit: its oldest unproven (the second) goes.
            (a, false, Verdict::Evicted("per_peer")),
            (b, false, Verdict::Admitted),
            // The total is full: the oldest unproven of anyone (a's third) goes.
            (b, true, Verdict::Evicted("total")),
        ];
        for (i, (peer, prove, want)) in steps.into_iter().enumerate() {
            let got = t.admit(peer, &l);
            assert_eq!(got, want, "step {i}");
            let (_, proven, kill) = t.insert(peer);
            proven.store(prove, Ordering::Release);
            conns.push(kill);
        }
        let killed: Vec<bool> = conns
            .iter()
            .map(|k| k.flag.load(Ordering::Acquire))
            .collect();
        assert_eq!(killed, [false, true, true, false, false, false]);
        // Prove everyone: nothing can make room, so a newcomer is refused.
        for e in t.open.values() {
            e.proven.store(true, Ordering::Release);
        }
        assert_eq!(t.admit(b, &l), Verdict::Refused("total"));
        assert_eq!(t.admit(a, &limits(8, 2)), Verdict::Refused("per_peer"));
        assert_eq!(t.open.len(), 4);
        let ids: Vec<u64> = t.open.keys().copied().collect();
        for id in ids {
            t.remove(id);
        }
        assert!(t.per_peer.is_empty());
    }

    #[test]
    fn the_total_stays_below_the_open_file_limit() {
        let fds = open_file_limit().unwrap();
        let l = ConnLimits::new(usize::MAX, 10, Duration::from_secs(1));
        assert_eq!(l.max_total as u64, fds.saturating_sub(FD_HEADROOM).max(16));
    }
}
