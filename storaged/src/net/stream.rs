//! Frames and bodies over one QUIC bidirectional stream.
//!
//! A stream carries any sequence of frames and bodies in each direction; what follows
//! what is the business of the layer above (`rpc`), which knows from a header frame
//! whether a body comes next. Frames are bounded by [`MAX_FRAME_LEN`] and read whole;
//! bodies may be any length and are read in pieces of at most [`BODY_PIECE`] bytes, so
//! a chunk transfer never buffers a whole object.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::NetError;
use super::frame::{self, BODY_LEN_PREFIX, FrameError, LEN_PREFIX, MAX_FRAME_LEN};
use crate::util::budget::{BudgetPermit, MemoryBudget, UNCOUNTED_FRAME};

/// The largest piece of a body read or written at once: bounds memory per transfer.
pub const BODY_PIECE: usize = 64 * 1024;

/// The sending half of a stream: writes frames and bodies.
#[derive(Debug)]
pub struct FrameSend {
    inner: quinn::SendStream,
}

/// The receiving half of a stream: reads frames and bodies.
#[derive(Debug)]
pub struct FrameRecv {
    inner: quinn::RecvStream,
}

impl FrameSend {
    pub(super) fn new(inner: quinn::SendStream) -> Self {
        Self { inner }
    }

    /// Sends one frame carrying `payload`.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] past [`MAX_FRAME_LEN`] (nothing is sent), or the stream
    /// failed.
    pub async fn send_frame(&mut self, payload: &[u8]) -> Result<(), NetError> {
        let prefix = frame::encode_len(payload.len())?;
        self.inner.write_all(&prefix).await?;
        self.inner.write_all(payload).await?;
        Ok(())
    }

    /// Sends a body of exactly `len` bytes read from `source`, in bounded pieces.
    ///
    /// # Errors
    /// [`NetError::BodyTooShort`] if `source` ends before `len` bytes (the stream is
    /// then reset, so the peer sees an error rather than a silently short body); I/O
    /// errors of `source` or of the stream.
    pub async fn send_body<R>(&mut self, len: u64, source: &mut R) -> Result<(), NetError>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        self.inner.write_all(&len.to_be_bytes()).await?;
        let mut remaining = len;
        let mut buf = vec![0u8; BODY_PIECE.min(usize::try_from(len).unwrap_or(BODY_PIECE))];
        while remaining > 0 {
            let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
            let n = source
                .read(&mut buf[..want])
                .await
                .map_err(NetError::BodyIo)?;
            if n == 0 {
                let _ = self.inner.reset(quinn::VarInt::from_u32(1));
                return Err(NetError::BodyTooShort {
                    expected: len,
                    got: len - remaining,
                });
            }
            self.inner.write_all(&buf[..n]).await?;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Ends this direction of the stream: the peer's next read sees a clean end.
    ///
    /// # Errors
    /// The stream was already finished or reset.
    pub fn finish(&mut self) -> Result<(), NetError> {
        self.inner.finish()?;
        Ok(())
    }

    /// Abandons the stream with an application error code, telling the peer to stop
    /// waiting (e.g. a handler failed halfway through a body).
    pub fn reset(&mut self, code: u32) {
        let _ = self.inner.reset(quinn::VarInt::from_u32(code));
    }
}

impl FrameRecv {
    pub(super) fn new(inner: quinn::RecvStream) -> Self {
        Self { inner }
    }

    /// Reads one frame's payload.
    ///
    /// The length is validated before anything is allocated, and the buffer grows as the
    /// bytes arrive (never to more than the announced length): a peer that announces a
    /// large frame and sends nothing costs nothing.
    ///
    /// # Errors
    /// [`FrameError::Incomplete`] if the stream ends inside the frame (or before it),
    /// [`FrameError::TooLarge`] for an oversized length, or the stream failed.
    pub async fn recv_frame(&mut self) -> Result<Bytes, NetError> {
        let len = self.recv_len().await?;
        self.recv_payload(len).await
    }

    /// [`Self::recv_frame`], holding the frame's bytes from `budget` (twice its length: the
    /// frame and the message decoded from it) before reading it; the permit is the
    /// caller's to keep while it uses the message. Small frames are not counted
    /// ([`UNCOUNTED_FRAME`]).
    ///
    /// # Errors
    /// As [`Self::recv_frame`].
    pub async fn recv_frame_counted(
        &mut self,
        budget: &MemoryBudget,
    ) -> Result<(Bytes, BudgetPermit), NetError> {
        let len = self.recv_len().await?;
        let permit = if len < UNCOUNTED_FRAME {
            BudgetPermit::none()
        } else {
            budget.acquire_internal(len.saturating_mul(2)).await
        };
        Ok((self.recv_payload(len).await?, permit))
    }

    async fn recv_len(&mut self) -> Result<usize, NetError> {
        let mut prefix = [0u8; LEN_PREFIX];
        self.read_exact(&mut prefix).await?;
        let len = frame::decode_len(prefix)?;
        debug_assert!(len <= MAX_FRAME_LEN);
        Ok(len)
    }

    async fn recv_payload(&mut self, len: usize) -> Result<Bytes, NetError> {
        let mut payload = Vec::with_capacity(len.min(BODY_PIECE));
        while payload.len() < len {
            let want = (len - payload.len()).min(BODY_PIECE);
            let Some(chunk) = self.inner.read_chunk(want, true).await? else {
                return Err(NetError::Frame(FrameError::Incomplete));
            };
            if payload.capacity() - payload.len() < chunk.bytes.len() {
                // Doubling, capped at the announced length: the final size is exact.
                let grow = (len - payload.len()).min(payload.capacity().max(BODY_PIECE));
                payload.reserve_exact(grow);
            }
            payload.extend_from_slice(&chunk.bytes);
        }
        Ok(Bytes::from(payload))
    }

    /// Starts reading a body: reads its length, then hands out a reader of its bytes.
    ///
    /// # Errors
    /// [`FrameError::Incomplete`] if the stream ends inside the length, or the stream
    /// failed.
    pub async fn recv_body(&mut self) -> Result<BodyReader<'_>, NetError> {
        let mut prefix = [0u8; BODY_LEN_PREFIX];
        self.read_exact(&mut prefix).await?;
        let len = u64::from_be_bytes(prefix);
        Ok(BodyReader {
            recv: &mut self.inner,
            len,
            remaining: len,
        })
    }

    /// Tells the peer we will read no more (e.g. a refused request).
    pub fn stop(&mut self, code: u32) {
        let _ = self.inner.stop(quinn::VarInt::from_u32(code));
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NetError> {
        self.inner.read_exact(buf).await.map_err(|e| match e {
            quinn::ReadExactError::FinishedEarly(_) => NetError::Frame(FrameError::Incomplete),
            quinn::ReadExactError::ReadError(e) => NetError::Read(e),
        })
    }
}

/// The bytes of one body, handed out in pieces of at most [`BODY_PIECE`] bytes.
///
/// Check [`BodyReader::len`] against what the request allows before reading: the
/// length comes from the peer.
#[derive(Debug)]
pub struct BodyReader<'a> {
    recv: &'a mut quinn::RecvStream,
    len: u64,
    remaining: u64,
}

impl BodyReader<'_> {
    /// The body's announced total length.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes not yet handed out.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next piece, or `None` once the whole body has been read.
    ///
    /// # Errors
    /// [`FrameError::Incomplete`] if the stream ends before the announced length, or the
    /// stream failed.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, NetError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let max = usize::try_from(self.remaining).map_or(BODY_PIECE, |r| r.min(BODY_PIECE));
        match self.recv.read_chunk(max, true).await? {
            Some(chunk) => {
                let n = chunk.bytes.len() as u64;
                // quinn never returns more than `max`; guard anyway, the count must not wrap.
                self.remaining = self
                    .remaining
                    .checked_sub(n)
                    .ok_or(NetError::Protocol("stream returned more bytes than asked"))?;
                Ok(Some(chunk.bytes))
            }
            None => Err(NetError::Frame(FrameError::Incomplete)),
        }
    }

    /// Copies the rest of the body into `sink`, piece by piece; returns the bytes copied.
    ///
    /// # Errors
    /// As [`BodyReader::next_piece`], plus I/O errors of `sink` as [`NetError::BodyIo`].
    pub async fn copy_to<W>(&mut self, sink: &mut W) -> Result<u64, NetError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut copied = 0u64;
        while let Some(piece) = self.next_piece().await? {
            sink.write_all(&piece).await.map_err(NetError::BodyIo)?;
            copied += piece.len() as u64;
        }
        sink.flush().await.map_err(NetError::BodyIo)?;
        Ok(copied)
    }
}

#[cfg(test)]
impl FrameSend {
    /// Writes bytes as they are, bypassing the frame encoder: lets tests play a broken
    /// or hostile peer.
    pub(super) async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), NetError> {
        self.inner.write_all(bytes).await?;
        Ok(())
    }
}
