//! Framing on one link: a [`Link`] is one authenticated connection carrying
//! one bidirectional stream of length-prefixed frames, split into a
//! [`LinkSender`] and a [`LinkReceiver`] (which splits frames with the
//! protocol's fuzzed [`FrameDecoder`] under the peer's limits) and a
//! [`LinkHandle`] that closes it.
//!
//! It does not decide whom to link to or what the frames mean.

use std::net::SocketAddr;

use protocol::{FrameDecoder, Limits};

use super::{Result, TransportError, CLOSE_POLICY};

/// One authenticated connection to a named peer: a stream of frames each way.
#[derive(Debug)]
pub struct Link {
    conn: quinn::Connection,
    pub(super) sender: LinkSender,
    receiver: LinkReceiver,
}

impl Link {
    pub(super) fn new(
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        peer: String,
        max_frame: usize,
        limits: Limits,
    ) -> Link {
        Link {
            conn,
            sender: LinkSender {
                send,
                peer: peer.clone(),
                max_frame,
            },
            receiver: LinkReceiver {
                recv,
                peer,
                decoder: FrameDecoder::new(limits),
            },
        }
    }

    /// The peer's authenticated name.
    pub fn peer(&self) -> &str {
        &self.sender.peer
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Sends one frame.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.sender.send(payload).await
    }

    /// Receives one frame; `Ok(None)` when the peer finished its stream.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.receiver.recv().await
    }

    /// A handle that closes this link's connection.
    pub(super) fn handle(&self) -> LinkHandle {
        LinkHandle {
            conn: self.conn.clone(),
        }
    }

    /// Splits into independent halves (for a reader task and a writer task)
    /// plus a handle to close the connection.
    pub fn split(self) -> (LinkSender, LinkReceiver, LinkHandle) {
        (self.sender, self.receiver, LinkHandle { conn: self.conn })
    }
}

/// Handle that can close a link's connection.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    conn: quinn::Connection,
}

impl LinkHandle {
    /// Closes the connection, telling the peer why.
    pub fn close(&self, reason: &str) {
        self.conn.close(CLOSE_POLICY.into(), reason.as_bytes());
    }

    /// Waits until the connection is closed (by either side or by timeout).
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }
}

/// Sending half of a [`Link`].
#[derive(Debug)]
pub struct LinkSender {
    send: quinn::SendStream,
    peer: String,
    max_frame: usize,
}

impl LinkSender {
    /// The peer's authenticated name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Sends one frame: a 4-byte big-endian length, then the payload.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() > self.max_frame || u32::try_from(payload.len()).is_err() {
            return Err(TransportError::OutgoingTooLarge {
                peer: self.peer.clone(),
                len: payload.len(),
                max: self.max_frame,
            });
        }
        let len = (payload.len() as u32).to_be_bytes();
        let err = |e: quinn::WriteError| TransportError::Stream {
            peer: self.peer.clone(),
            reason: e.to_string(),
        };
        self.send.write_all(&len).await.map_err(err)?;
        self.send.write_all(payload).await.map_err(err)
    }

    /// Sends one already framed message (4-byte big-endian length, then the
    /// payload, as `protocol::wire::encode_frame` makes it), checking the prefix.
    pub async fn send_frame(&mut self, frame: &[u8]) -> Result<()> {
        let bad = |len: usize| TransportError::OutgoingTooLarge {
            peer: self.peer.clone(),
            len,
            max: self.max_frame,
        };
        let Some((head, payload)) = frame.split_first_chunk::<4>() else {
            return Err(bad(frame.len()));
        };
        if u32::from_be_bytes(*head) as usize != payload.len() || payload.len() > self.max_frame {
            return Err(bad(payload.len()));
        }
        self.send
            .write_all(frame)
            .await
            .map_err(|e| TransportError::Stream {
                peer: self.peer.clone(),
                reason: e.to_string(),
            })
    }

    /// Finishes the stream: the peer's `recv` returns `Ok(None)` after the
    /// frames already sent.
    pub fn finish(&mut self) {
        // Finishing an already finished or reset stream is harmless here.
        let _ = self.send.finish();
    }

    /// Waits until the peer has received everything sent (or the link is gone).
    pub async fn flushed(&mut self) {
        let _ = self.send.stopped().await;
    }

    #[cfg(test)]
    pub(super) async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| TransportError::Stream {
                peer: self.peer.clone(),
                reason: e.to_string(),
            })
    }
}

/// Receiving half of a [`Link`].
///
/// Frames are split by the protocol's [`FrameDecoder`], the decoder the fuzz
/// target exercises: one framing code path in tests, fuzzing and production.
#[derive(Debug)]
pub struct LinkReceiver {
    recv: quinn::RecvStream,
    peer: String,
    decoder: FrameDecoder,
}

/// Largest chunk read from the stream at once: what may be buffered beyond
/// the frame being assembled.
const READ_CHUNK: usize = 64 * 1024;

impl LinkReceiver {
    /// The peer's authenticated name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The largest frame payload this link accepts (its peer's largest limit).
    pub fn largest_frame(&self) -> usize {
        self.decoder.limits().largest().saturating_add(1)
    }

    /// Receives one frame (kind byte and JSON); `Ok(None)` when the peer
    /// finished its stream cleanly between frames. A length above its kind's
    /// limit is refused before its payload is buffered: at most [`READ_CHUNK`] bytes beyond the frame in progress are
    /// ever held.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match self.decoder.next_payload() {
                Ok(Some(payload)) => return Ok(Some(payload)),
                Ok(None) => {}
                Err(protocol::Error::Oversized { len, max }) => {
                    return Err(TransportError::FrameTooLarge {
                        peer: self.peer.clone(),
                        len,
                        max,
                    })
                }
                Err(e) => {
                    return Err(TransportError::Stream {
                        peer: self.peer.clone(),
                        reason: e.to_string(),
                    })
                }
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                Ok(None) if self.decoder.buffered() == 0 => return Ok(None),
                Ok(None) => {
                    return Err(TransportError::Stream {
                        peer: self.peer.clone(),
                        reason: format!(
                            "stream ended inside a frame ({} bytes buffered)",
                            self.decoder.buffered()
                        ),
                    })
                }
                Err(e) => {
                    return Err(TransportError::Stream {
                        peer: self.peer.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::Endpoint;
    use super::*;

    #[tokio::test]
    async fn mutual_tls_link_exchanges_frames() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let client = Endpoint::bind(local(), &v[1], set(&["coordinator"]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move {
            let mut link = s.accept().await.unwrap().unwrap();
            assert_eq!(link.peer(), "hospital-1");
            let got = link.recv().await.unwrap().unwrap();
            let (kind, rest) = got.split_first().unwrap();
            let mut back = vec![*kind];
            back.extend(rest.iter().rev());
            link.send(&back).await.unwrap();
            assert!(link.recv().await.unwrap().is_none());
        });
        let link = client.connect(addr, "coordinator").await.unwrap();
        assert_eq!(link.peer(), "coordinator");
        let (mut tx, mut rx, _h) = link.split();
        tx.send(b"\x07hello").await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), b"\x07olleh");
        tx.finish();
        acceptor.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = ids(dir.path(), &["coordinator", "hospital-1"]);
        let server = Endpoint::bind(local(), &v[0], set(&["hospital-1"]), opts()).unwrap();
        let client = Endpoint::bind(local(), &v[1], set(&[]), opts()).unwrap();
        let addr = server.local_addr().unwrap();
        let s = server.clone();
        let acceptor = tokio::spawn(async move {
            let mut link = s.accept().await.unwrap().unwrap();
            link.recv().await
        });
        let mut link = client.connect(addr, "coordinator").await.unwrap();
        // Our own sender refuses to send above the cap...
        let e = link.send(&vec![0u8; 1025]).await.unwrap_err();
        assert!(matches!(e, TransportError::OutgoingTooLarge { .. }), "{e}");
        // ...and a peer announcing a huge frame is refused before any payload.
        link.sender.send_raw(&u32::MAX.to_be_bytes()).await.unwrap();
        link.sender
            .send_raw(&[protocol::Kind::Receipt.byte()])
            .await
            .unwrap();
        let e = acceptor.await.unwrap().unwrap_err();
        assert!(
            matches!(e, TransportError::FrameTooLarge { len, max: 1024, .. } if len == u32::MAX as u64 - 1),
            "{e}"
        );
        assert!(e.to_string().contains("hospital-1"));
    }
}
