//! The event hub: a [`Hub`] owns a node's links (one reader and one writer
//! task per link, dialing with retry, one inbound link per peer) and reports
//! everything to the driver as [`NetEvent`]s on one bounded channel.
//!
//! It does not build endpoints or split frames (those are
//! [`super::endpoint`]'s and [`super::link`]'s), and knows nothing of what the
//! frames mean.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::Endpoint;
use super::link::{Link, LinkHandle};
use super::{TransportError, EVENT_QUEUE, LINK_BYTES, OUT_QUEUE};

/// What a [`Hub`] reports to its driver.
#[derive(Debug)]
pub enum NetEvent {
    /// An authenticated link to `peer` is up (inbound or outbound).
    Up {
        /// The peer's authenticated name.
        peer: String,
        /// Id of this link (a peer may have several over time).
        id: u64,
        /// Queue of frames to write on this link.
        out: tokio::sync::mpsc::Sender<Vec<u8>>,
        /// Handle to close the link.
        handle: LinkHandle,
    },
    /// A frame's payload arrived, in order per link.
    Frame {
        /// The peer's authenticated name.
        peer: String,
        /// The link it came over.
        id: u64,
        /// The payload (length prefix removed, size cap checked).
        payload: Vec<u8>,
        /// Its bytes against the link's budget of received but unhandled
        /// frames ([`LINK_BYTES`]); released when the event is dropped.
        budget: tokio::sync::OwnedSemaphorePermit,
    },
    /// A link went down.
    Down {
        /// The peer's authenticated name.
        peer: String,
        /// The link.
        id: u64,
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
struct LinkEntry {
    id: u64,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
    handle: LinkHandle,
}

/// Owns a node's links: accepts inbound links, opens outbound ones on demand,
/// runs one reader and one writer task per link, and reports everything as
/// [`NetEvent`]s on one channel, so a driver's loop only reads that channel
/// and keeps its state machine single-threaded.
///
/// Per peer, frames are sent over its oldest live link, so their order is kept.
#[derive(Debug)]
pub struct Hub {
    endpoint: Endpoint,
    events: tokio::sync::mpsc::Sender<NetEvent>,
    links: std::collections::HashMap<String, Vec<LinkEntry>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// Held by every writer task; closed once all have flushed and finished.
    writers_alive: Option<tokio::sync::mpsc::Sender<()>>,
    writers_done: tokio::sync::mpsc::Receiver<()>,
    dialing: BTreeSet<String>,
}

impl Hub {
    /// Starts accepting on `endpoint`; returns the hub and its event channel.
    pub fn start(endpoint: Endpoint) -> (Hub, tokio::sync::mpsc::Receiver<NetEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let (alive, done) = tokio::sync::mpsc::channel(1);
        let next_id = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let hub = Hub {
            endpoint: endpoint.clone(),
            events: tx.clone(),
            links: std::collections::HashMap::new(),
            next_id: next_id.clone(),
            writers_alive: Some(alive.clone()),
            writers_done: done,
            dialing: BTreeSet::new(),
        };
        let weak = alive.downgrade();
        drop(alive);
        tokio::spawn(async move {
            // The live inbound link of each peer: a newer one replaces it.
            let mut inbound: std::collections::HashMap<String, LinkHandle> =
                std::collections::HashMap::new();
            while let Some(r) = endpoint.accept().await {
                // Refusals were logged by `accept`; keep serving others.
                if let (Ok(link), Some(alive)) = (r, weak.upgrade()) {
                    let peer = link.peer().to_owned();
                    if let Some(old) = inbound.remove(&peer) {
                        tracing::info!(%peer, "a newer link from the peer replaces its older one");
                        old.close("replaced by a newer link");
                    }
                    inbound.insert(peer, link.handle());
                    if !spawn_link(link, &next_id, &tx, alive).await {
                        break;
                    }
                }
            }
        });
        (hub, rx)
    }

    /// The endpoint (to change the allowed set, read the local address).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Records a link that came up. Returns `true` if the peer had no live link
    /// before (the driver tells its state machine the peer connected).
    pub fn link_up(
        &mut self,
        peer: &str,
        id: u64,
        out: tokio::sync::mpsc::Sender<Vec<u8>>,
        handle: LinkHandle,
    ) -> bool {
        self.dialing.remove(peer);
        let list = self.links.entry(peer.to_owned()).or_default();
        list.push(LinkEntry { id, out, handle });
        list.len() == 1
    }

    /// Records a link that went down. Returns `true` if the peer now has no
    /// live link (the driver tells its state machine the peer was lost).
    pub fn link_down(&mut self, peer: &str, id: u64) -> bool {
        let Some(list) = self.links.get_mut(peer) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| e.id != id);
        if list.is_empty() {
            self.links.remove(peer);
            return before > 0;
        }
        false
    }

    /// Whether `peer` has a live link.
    pub fn is_connected(&self, peer: &str) -> bool {
        self.links.get(peer).is_some_and(|l| !l.is_empty())
    }

    /// Queues a frame for `peer` on its oldest live link; `false` if it has
    /// none. A link whose queue is full ([`OUT_QUEUE`] frames: the peer stopped
    /// reading) is closed instead of buffering more.
    pub fn send(&mut self, peer: &str, frame: Vec<u8>) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        let Some(list) = self.links.get_mut(peer) else {
            return false;
        };
        let mut frame = frame;
        while let Some(first) = list.first() {
            match first.out.try_send(frame) {
                Ok(()) => return true,
                Err(TrySendError::Full(f)) => {
                    tracing::warn!(%peer, "dropping link: the peer does not read its frames");
                    first.handle.close("not reading");
                    frame = f;
                }
                // Its writer is gone; the Down event is on its way.
                Err(TrySendError::Closed(f)) => frame = f,
            }
            list.remove(0);
        }
        false
    }

    /// Queues a frame for `peer` like [`send`](Self::send), but when its
    /// queue is full drops the frame, not the link (`false`): for traffic the
    /// node only forwards, which a third party could otherwise use to get the
    /// peer disconnected.
    pub fn send_or_drop(&mut self, peer: &str, frame: Vec<u8>) -> bool {
        let Some(first) = self.links.get(peer).and_then(|l| l.first()) else {
            return false;
        };
        first.out.try_send(frame).is_ok()
    }

    /// Closes every link of `peer`.
    pub fn disconnect(&mut self, peer: &str, reason: &str) {
        if let Some(list) = self.links.remove(peer) {
            for e in list {
                e.handle.close(reason);
            }
        }
    }

    /// Whether an outbound connection to `peer` is being attempted.
    pub fn is_dialing(&self, peer: &str) -> bool {
        self.dialing.contains(peer)
    }

    /// Dials `peer` at `addr` in the background, retrying with backoff until
    /// `give_up`; success arrives as [`NetEvent::Up`], giving up as
    /// [`NetEvent::Down`] with id 0. Does nothing if already dialing `peer`.
    pub fn dial(&mut self, peer: &str, addr: SocketAddr, give_up: std::time::Instant) {
        if !self.dialing.insert(peer.to_owned()) {
            return;
        }
        let endpoint = self.endpoint.clone();
        let tx = self.events.clone();
        let next_id = self.next_id.clone();
        let Some(alive) = self.writers_alive.clone() else {
            return;
        };
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            // The last attempt often ends in a plain timeout while an earlier
            // one said why (a certificate refused): keep that for the report.
            let mut refused: Option<String> = None;
            loop {
                // An unanswered handshake would only fail at the idle timeout:
                // never wait past `give_up`.
                let left = give_up.saturating_duration_since(std::time::Instant::now());
                let attempt = match tokio::time::timeout(left, endpoint.connect(addr, &peer)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::Connect {
                        addr,
                        name: peer.clone(),
                        reason: "no answer".into(),
                    }),
                };
                match attempt {
                    Ok(link) => {
                        spawn_link(link, &next_id, &tx, alive).await;
                        return;
                    }
                    Err(e) => {
                        let text = e.to_string();
                        let silent = text.contains("no answer") || text.contains("timed out");
                        if std::time::Instant::now() + backoff >= give_up {
                            let reason = match refused.filter(|r| silent && *r != text) {
                                Some(r) => {
                                    format!(
                                        "gave up dialing: {e}; an earlier attempt was refused: {r}"
                                    )
                                }
                                None => format!("gave up dialing: {e}"),
                            };
                            let _ = tx
                                .send(NetEvent::Down {
                                    peer,
                                    id: 0,
                                    reason,
                                })
                                .await;
                            return;
                        }
                        if !silent {
                            refused = Some(text);
                        }
                        tracing::debug!(peer = %peer, "dial failed, retrying: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    /// Marks a failed dial as over (after its `Down` with id 0).
    pub fn dial_failed(&mut self, peer: &str) {
        self.dialing.remove(peer);
    }

    /// Flushes every queued frame (each writer finishes its stream and waits
    /// until the peer has read it, or `grace` passes), then closes the endpoint.
    pub async fn shutdown(mut self, grace: Duration) {
        self.links.clear();
        self.writers_alive = None;
        let _ = tokio::time::timeout(grace, self.writers_done.recv()).await;
        self.endpoint.close();
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}

/// Starts a link's reader and writer tasks after queueing its `Up`; `false`
/// once the driver is gone.
async fn spawn_link(
    link: Link,
    next_id: &std::sync::atomic::AtomicU64,
    events: &tokio::sync::mpsc::Sender<NetEvent>,
    alive: tokio::sync::mpsc::Sender<()>,
) -> bool {
    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let peer = link.peer().to_owned();
    let (mut sender, mut receiver, handle) = link.split();
    let (out, mut queue) = tokio::sync::mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer_handle = handle.clone();
    tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            if let Err(e) = sender.send_frame(&frame).await {
                tracing::warn!(peer = %sender.peer(), "dropping link: {e}");
                writer_handle.close("write failed");
                break;
            }
        }
        sender.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), sender.flushed()).await;
        drop(alive);
    });
    let reader_handle = handle.clone();
    // Up is queued before the reader starts, so the driver sees it first.
    let up = NetEvent::Up {
        peer,
        id,
        out,
        handle: handle.clone(),
    };
    if events.send(up).await.is_err() {
        handle.close("shutting down");
        return false;
    }
    let tx = events.clone();
    // Frames read but not yet handled by the driver, in bytes: the event
    // queue alone bounds them in number only, which at a big kind's limit
    // is tens of MiB a flooding peer could pin.
    let budget = LINK_BYTES.max(receiver.largest_frame());
    let permits = Arc::new(tokio::sync::Semaphore::new(budget));
    tokio::spawn(async move {
        let reason = loop {
            match receiver.recv().await {
                Ok(Some(payload)) => {
                    let want = u32::try_from(payload.len().clamp(1, budget)).unwrap_or(u32::MAX);
                    // Waits while the link's budget is spent: backpressure.
                    let Ok(permit) = permits.clone().acquire_many_owned(want).await else {
                        break "driver gone".to_owned();
                    };
                    let ev = NetEvent::Frame {
                        peer: receiver.peer().to_owned(),
                        id,
                        payload,
                        budget: permit,
                    };
                    // Waits while the driver's queue is full: backpressure.
                    if tx.send(ev).await.is_err() {
                        break "driver gone".to_owned();
                    }
                }
                Ok(None) => break "peer finished its stream".to_owned(),
                Err(e) => {
                    // After an oversized prefix the stream is out of sync: close.
                    tracing::warn!(peer = %receiver.peer(), "closing link: {e}");
                    reader_handle.close("protocol violation");
                    break e.to_string();
                }
            }
        };
        let _ = tx
            .send(NetEvent::Down {
                peer: receiver.peer().to_owned(),
                id,
                reason,
            })
            .await;
    });
    true
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::transport::TransportOptions;
    use protocol::{Limits, PeerLimits};

    /// A frame of kind `receipt` holding `payload`; it arrives as the kind
    /// byte followed by `payload`.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32 + 1).to_be_bytes().to_vec();
        f.push(protocol::Kind::Receipt.byte());
        f.extend_from_slice(payload);
        f
    }

    fn received(payload: &[u8]) -> Vec<u8> {
        frame(payload)[4..].to_vec()
    }

    /// A peer sending faster than the driver handles frames gets at most
    /// [`LINK_BYTES`] of them into the driver's queue; the rest wait in the
    /// stream (QUIC flow control), and arrive as the queued ones are handled.
    #[tokio::test]
    async fn frames_waiting_for_the_driver_are_bounded_in_bytes() {
        const BIG: usize = 200 << 10;
        let wide = || TransportOptions {
            max_frame: 256 << 10,
            limits: PeerLimits::new(Limits::uniform(256 << 10)),
            ..opts()
        };
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), wide()).unwrap();
        let addr = server.local_addr().unwrap();
        let (_shub, mut sev) = Hub::start(server);
        let client = Endpoint::bind(local(), &v[1], set(&[]), wide()).unwrap();
        let mut link = client.connect(addr, "coordinator").await.unwrap();
        let Some(NetEvent::Up { .. }) = sev.recv().await else {
            panic!("link not up");
        };
        let sending = tokio::spawn(async move {
            for i in 0..10u8 {
                link.send(&received(&vec![i; BIG])).await.unwrap();
            }
            link
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Held, not handled: their bytes stay counted.
        let mut held = Vec::new();
        while let Ok(ev) = sev.try_recv() {
            held.push(ev);
        }
        assert!(
            held.len() <= LINK_BYTES / BIG && !held.is_empty(),
            "{} frames of {BIG} bytes queued",
            held.len()
        );
        // Handled: the rest arrive, in order.
        let mut got = held.len();
        drop(held);
        while got < 10 {
            match tokio::time::timeout(Duration::from_secs(5), sev.recv()).await {
                Ok(Some(NetEvent::Frame { payload, .. })) => {
                    assert_eq!(payload[1], got as u8);
                    got += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(sending.await.unwrap());
    }

    #[tokio::test]
    async fn newer_link_from_a_peer_replaces_the_older() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let (_shub, mut sev) = Hub::start(server);
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let mut first = client.connect(addr, "coordinator").await.unwrap();
        let Some(NetEvent::Up { id: old, .. }) = sev.recv().await else {
            panic!("first link not up");
        };
        // A reconnect (or a peer opening link after link) replaces the old link.
        let mut second = client.connect(addr, "coordinator").await.unwrap();
        let (mut up, mut down) = (false, false);
        while !(up && down) {
            match tokio::time::timeout(Duration::from_secs(5), sev.recv()).await {
                Ok(Some(NetEvent::Up { id, .. })) => {
                    assert_ne!(id, old);
                    up = true;
                }
                Ok(Some(NetEvent::Down { id, .. })) => {
                    assert_eq!(id, old);
                    down = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let closed = tokio::time::timeout(Duration::from_secs(5), first.recv()).await;
        assert!(matches!(closed, Ok(Err(_)) | Ok(Ok(None))), "{closed:?}");
        // The new link carries frames; one above its kind's limit closes it.
        second.send(&received(b"ok")).await.unwrap();
        match sev.recv().await {
            Some(NetEvent::Frame { payload, .. }) => assert_eq!(payload, received(b"ok")),
            other => panic!("unexpected {other:?}"),
        }
        let mut head = 2000u32.to_be_bytes().to_vec();
        head.push(protocol::Kind::Receipt.byte());
        second.sender.send_raw(&head).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), sev.recv()).await {
            Ok(Some(NetEvent::Down { reason, .. })) => {
                assert!(reason.contains("exceeds"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn hub_dials_with_retry_delivers_in_order_and_reports_loss() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let addr: SocketAddr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let client = Endpoint::bind(local(), &v[1], set(&["coordinator"]), opts()).unwrap();
        let (mut chub, mut cev) = Hub::start(client);
        // Dial before the server exists: the hub keeps retrying.
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        chub.dial("coordinator", addr, give_up);
        assert!(chub.is_dialing("coordinator"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let server = Endpoint::bind(addr, &v[0], set(&["hospital-1"]), opts()).unwrap();
        let (mut shub, mut sev) = Hub::start(server);

        let Some(NetEvent::Up {
            peer,
            id,
            out,
            handle,
        }) = cev.recv().await
        else {
            panic!("client link not up");
        };
        assert_eq!(peer, "coordinator");
        assert!(chub.link_up(&peer, id, out, handle));
        assert!(!chub.is_dialing("coordinator"));
        let Some(NetEvent::Up {
            peer,
            id,
            out,
            handle,
        }) = sev.recv().await
        else {
            panic!("server link not up");
        };
        assert_eq!(peer, "hospital-1");
        assert!(shub.link_up(&peer, id, out, handle));
        let server_link = id;

        for i in 0..50u32 {
            assert!(chub.send("coordinator", frame(&i.to_be_bytes())));
        }
        for i in 0..50u32 {
            match sev.recv().await {
                Some(NetEvent::Frame { peer, payload, .. }) => {
                    assert_eq!(peer, "hospital-1");
                    assert_eq!(payload, received(&i.to_be_bytes()));
                }
                other => panic!("expected frame {i}, got {other:?}"),
            }
        }
        assert!(!shub.send("hospital-2", frame(b"x")));

        // A dial to a dead address gives up with a Down of id 0.
        let dead: SocketAddr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let soon = std::time::Instant::now() + Duration::from_millis(300);
        chub.dial("hospital-2", dead, soon);
        loop {
            match cev.recv().await {
                Some(NetEvent::Down { peer, id: 0, .. }) => {
                    assert_eq!(peer, "hospital-2");
                    chub.dial_failed(&peer);
                    break;
                }
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }

        // Shutting the client down finishes its stream: the server sees the loss.
        chub.shutdown(Duration::from_secs(2)).await;
        loop {
            match sev.recv().await {
                Some(NetEvent::Down { peer, id, .. }) => {
                    assert_eq!(peer, "hospital-1");
                    assert_eq!(id, server_link);
                    assert!(shub.link_down(&peer, id));
                    assert!(!shub.is_connected("hospital-1"));
                    break;
                }
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    }
}
