//! The byte level of the protocol: a bounds-checked [`Reader`] that never
//! panics nor lets a hostile length make it allocate, the `put_*` writers,
//! the codecs of the types several messages carry (increments, cells,
//! per-item results), the protocol's size limits, and [`DecodeError`].

use bytes::{BufMut, BytesMut};

use super::cell_batch::CellBatch;
use super::types::{Add, CellState, Consistency, Increment, ItemResult};
use crate::error::ErrorCode;
use crate::resolution::Resolution;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct DecodeError {
    /// The error code to answer with.
    pub code: ErrorCode,
    /// What was wrong.
    pub reason: String,
}

pub(crate) fn unknown_kind(what: &str, kind: u8) -> DecodeError {
    DecodeError {
        code: ErrorCode::UnknownMessage,
        reason: format!("unknown {what} kind {kind:#04x}"),
    }
}

pub(crate) fn malformed(reason: impl Into<String>) -> DecodeError {
    DecodeError {
        code: ErrorCode::MalformedFrame,
        reason: reason.into(),
    }
}

/// Largest number of increments in one batch.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// Largest number of cells in one `ReplicaWrite` or `Cells` answer (a full
/// batch touches four cells per increment).
pub const MAX_CELLS: usize = 200_000;
/// Largest number of key ranges in one `ReplicaRead`.
pub const MAX_RANGES: usize = 64;

/// A bounds-checked reader.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Whether every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(malformed(format!(
                "needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    /// `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    pub(crate) fn u128(&mut self) -> Result<u128, DecodeError> {
        let mut w = [0u8; 16];
        w.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(w))
    }
    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub(crate) fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn string16(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }
    pub(crate) fn string32(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| malformed("string is not UTF-8"))
    }
    /// A list count, checked against the bytes left (each item takes at
    /// least `min_item_bytes`).
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.buf.len() {
            return Err(malformed(format!(
                "list of {n} items does not fit in {} bytes",
                self.buf.len()
            )));
        }
        Ok(n)
    }
    pub(crate) fn consistency(&mut self) -> Result<Consistency, DecodeError> {
        match self.u8()? {
            1 => Ok(Consistency::One),
            2 => Ok(Consistency::Quorum),
            3 => Ok(Consistency::All),
            c => Err(malformed(format!("unknown consistency {c}"))),
        }
    }
    pub(crate) fn resolution(&mut self) -> Result<Resolution, DecodeError> {
        let c = self.u8()?;
        Resolution::from_code(c).ok_or_else(|| malformed(format!("unknown resolution {c}")))
    }
    pub(crate) fn error_code(&mut self) -> Result<ErrorCode, DecodeError> {
        Ok(ErrorCode::from_u16(self.u16()?))
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!("{} trailing bytes", self.buf.len())))
        }
    }
}

pub(crate) fn put_bytes16(buf: &mut BytesMut, b: &[u8]) {
    // Lengths are bounded by validation (keys <= 1024, names <= 64); a
    // longer value is cut to what the field can say and fails validation.
    let n = b.len().min(u16::MAX as usize);
    buf.put_u16_le(n as u16);
    buf.put_slice(&b[..n]);
}

pub(crate) fn put_bytes32(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32_le(b.len() as u32);
    buf.put_slice(b);
}

pub(crate) fn put_increments(buf: &mut BytesMut, items: &[Increment]) {
    buf.put_u32_le(items.len() as u32);
    for item in items {
        put_bytes16(buf, item.namespace.as_bytes());
        put_bytes16(buf, &item.key);
        buf.put_i64_le(item.timestamp_ms);
        buf.put_i64_le(item.delta);
        // Flags: bit 0 an op id follows, bit 1 an event count (omitted
        // when 1, the common case).
        let flags = u8::from(item.op_id.is_some()) | (u8::from(item.events != 1) << 1);
        buf.put_u8(flags);
        if let Some(id) = item.op_id {
            buf.put_u128_le(id);
        }
        if item.events != 1 {
            buf.put_u32_le(item.events);
        }
    }
}

pub(crate) fn get_increments(r: &mut Reader<'_>) -> Result<Vec<Increment>, DecodeError> {
    let n = r.count(2 + 2 + 8 + 8 + 1)?;
    if n > MAX_BATCH_ITEMS {
        return Err(DecodeError {
            code: ErrorCode::BatchTooLarge,
            reason: format!("batch of {n} increments exceeds {MAX_BATCH_ITEMS}"),
        });
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let namespace = r.string16()?;
        let key = r.bytes16()?.to_vec();
        let timestamp_ms = r.i64()?;
        let delta = r.i64()?;
        let flags = r.u8()?;
        if flags & !0b11 != 0 {
            return Err(malformed(format!("bad increment flags {flags:#04x}")));
        }
        let op_id = if flags & 1 != 0 {
            Some(r.u128()?)
        } else {
            None
        };
        let events = if flags & 2 != 0 { r.u32()? } else { 1 };
        if events == 0 {
            return Err(malformed("an increment stands for at least one event"));
        }
        items.push(Increment {
            namespace,
            key,
            timestamp_ms,
            delta,
            events,
            op_id,
        });
    }
    Ok(items)
}

pub(crate) fn put_adds(buf: &mut BytesMut, items: &[Add]) {
    buf.put_u32_le(items.len() as u32);
    for item in items {
        put_bytes16(buf, item.namespace.as_bytes());
        put_bytes16(buf, &item.key);
        buf.put_i64_le(item.timestamp_ms);
        put_bytes16(buf, &item.member);
    }
}

pub(crate) fn get_adds(r: &mut Reader<'_>) -> Result<Vec<Add>, DecodeError> {
    let n = r.count(2 + 2 + 8 + 2)?;
    if n > MAX_BATCH_ITEMS {
        return Err(DecodeError {
            code: ErrorCode::BatchTooLarge,
            reason: format!("batch of {n} adds exceeds {MAX_BATCH_ITEMS}"),
        });
    }
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(Add {
            namespace: r.string16()?,
            key: r.bytes16()?.to_vec(),
            timestamp_ms: r.i64()?,
            member: r.bytes16()?.to_vec(),
        });
    }
    Ok(items)
}

pub(crate) fn put_cells(buf: &mut BytesMut, cells: &[CellState]) {
    put_cell_chunks(buf, &[cells]);
}

pub(crate) fn put_cell_chunks(buf: &mut BytesMut, chunks: &[&[CellState]]) {
    let n: usize = chunks.iter().map(|c| c.len()).sum();
    let bytes: usize = chunks
        .iter()
        .flat_map(|c| c.iter())
        .map(|c| 6 + c.key.len() + c.value.len())
        .sum();
    buf.reserve(4 + bytes);
    buf.put_u32_le(n as u32);
    for cell in chunks.iter().flat_map(|c| c.iter()) {
        put_bytes16(buf, &cell.key);
        put_bytes32(buf, &cell.value);
    }
}

pub(crate) fn put_cell_batch(buf: &mut BytesMut, cells: &CellBatch) {
    buf.reserve(4 + 6 * cells.len() + cells.payload_bytes());
    buf.put_u32_le(cells.len() as u32);
    for (key, value) in cells.iter() {
        put_bytes16(buf, key);
        put_bytes32(buf, value);
    }
}

/// A `ReplicaWrite`'s cells, copied into one buffer.
pub(crate) fn get_cell_batch(r: &mut Reader<'_>) -> Result<CellBatch, DecodeError> {
    let n = r.count(2 + 4)?;
    if n > MAX_CELLS {
        return Err(malformed(format!("{n} cells exceed {MAX_CELLS}")));
    }
    // The cells' bytes are at most what is left of the body.
    let mut cells = CellBatch::with_capacity(n, r.remaining().saturating_sub(6 * n));
    for _ in 0..n {
        let key = r.bytes16()?;
        let value = r.bytes32()?;
        cells.push(key, value);
    }
    Ok(cells)
}

pub(crate) fn get_cells(r: &mut Reader<'_>) -> Result<Vec<CellState>, DecodeError> {
    let n = r.count(2 + 4)?;
    if n > MAX_CELLS {
        return Err(malformed(format!("{n} cells exceed {MAX_CELLS}")));
    }
    let mut cells = Vec::with_capacity(n);
    for _ in 0..n {
        cells.push(CellState {
            key: r.bytes16()?.to_vec(),
            value: r.bytes32()?.to_vec(),
        });
    }
    Ok(cells)
}

pub(crate) fn put_string32(buf: &mut BytesMut, s: &str) {
    buf.put_u32_le(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

pub(crate) fn consistency_code(c: Consistency) -> u8 {
    match c {
        Consistency::One => 1,
        Consistency::Quorum => 2,
        Consistency::All => 3,
    }
}

pub(crate) fn put_item_result(buf: &mut BytesMut, result: &ItemResult) {
    let (tag, code) = match result {
        ItemResult::Ok => (0, 0),
        ItemResult::Failed(c) => (1, c.as_u16()),
        ItemResult::Indeterminate(c) => (2, c.as_u16()),
    };
    buf.put_u8(tag);
    buf.put_u16_le(code);
}
