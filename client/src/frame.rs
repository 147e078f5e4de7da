//! Frames: the unit on the wire.
//!
//! Every frame is a 4-byte big-endian length (written by tokio-util's
//! `LengthDelimitedCodec`) followed by
//! `version: u8 | kind: u8 | request_id: u64 LE | crc32: u32 LE | body`,
//! where the crc covers the body. A frame longer than
//! [`MAX_FRAME_BYTES`] cannot be skipped safely and closes the connection;
//! any other bad frame (wrong version, bad crc, undecodable body) is
//! answered with a typed error and the connection stays usable, since the
//! length prefix still marks where the next frame starts.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder, FramedWrite, LengthDelimitedCodec};

use crate::error::ErrorCode;

/// The protocol version this code speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of header after the length prefix.
pub const HEADER_BYTES: usize = 14;
/// Largest frame accepted (header and body).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message kind.
    pub kind: u8,
    /// Matches a response to its request.
    pub request_id: u64,
    /// The message body.
    pub body: Bytes,
}

/// A frame whose boundary is intact but whose header or body is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame {
    /// The request id, when the header was readable (0 otherwise).
    pub request_id: u64,
    /// Why it is bad.
    pub code: ErrorCode,
    /// Details.
    pub reason: String,
}

/// The frame codec: length-delimited frames with a checked header.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec refusing frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec {
            inner: LengthDelimitedCodec::builder()
                .max_frame_length(max_frame_bytes)
                .new_codec(),
        }
    }
}

/// Parses one frame's bytes (after the length prefix).
pub fn parse_frame(mut raw: BytesMut) -> Result<Frame, BadFrame> {
    if raw.len() < HEADER_BYTES {
        return Err(BadFrame {
            request_id: 0,
            code: ErrorCode::MalformedFrame,
            reason: format!(
                "frame of {} bytes is shorter than the {HEADER_BYTES}-byte header",
                raw.len()
            ),
        });
    }
    let version = raw.get_u8();
    let kind = raw.get_u8();
    let request_id = raw.get_u64_le();
    let crc = raw.get_u32_le();
    if version != PROTOCOL_VERSION {
        return Err(BadFrame {
            request_id,
            code: ErrorCode::UnsupportedVersion,
            reason: format!("protocol version {version}, this side speaks {PROTOCOL_VERSION}"),
        });
    }
    let got = crc32fast::hash(&raw);
    if got != crc {
        return Err(BadFrame {
            request_id,
            code: ErrorCode::ChecksumMismatch,
            reason: format!("body crc {got:#010x}, header says {crc:#010x}"),
        });
    }
    Ok(Frame {
        kind,
        request_id,
        body: raw.freeze(),
    })
}

impl Decoder for FrameCodec {
    type Item = Result<Frame, BadFrame>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        Ok(self.inner.decode(src)?.map(parse_frame))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + frame.body.len());
        buf.put_u8(PROTOCOL_VERSION);
        buf.put_u8(frame.kind);
        buf.put_u64_le(frame.request_id);
        buf.put_u32_le(crc32fast::hash(&frame.body));
        buf.put_slice(&frame.body);
        self.inner.encode(buf.freeze(), dst)
    }
}

/// Writes the frames arriving on `queue` to `writer` until the queue
/// closes (`Ok`) or a write fails (`Err`). Frames already queued go out
/// together with one flush, so a burst of responses or pipelined requests
/// costs one syscall, not one each. Both ends of the protocol use it.
pub async fn write_queued<W: AsyncWrite + Unpin>(
    mut queue: mpsc::Receiver<Frame>,
    writer: W,
) -> std::io::Result<()> {
    let mut sink = FramedWrite::new(writer, FrameCodec::default());
    while let Some(frame) = queue.recv().await {
        sink.feed(frame).await?;
        // Let the tasks that are ready to run go first: the answers they
        // are about to queue (often a whole write group's) join this
        // write instead of costing a syscall each.
        tokio::task::yield_now().await;
        while let Ok(frame) = queue.try_recv() {
            sink.feed(frame).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}
