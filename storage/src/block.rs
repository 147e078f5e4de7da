//! Data and index blocks of an SSTable.
//!
//! A data block is entries back to back, `kind: u8 | key: varint len + bytes
//! | value: varint len + bytes`, followed by a crc32 of those bytes. Blocks
//! are about 4 KiB; within a block a reader scans linearly. The index block
//! holds, per data block, its last key and its position.

use std::path::Path;

use crate::decoder::{put_bytes, put_varint, Decoder};
use crate::entry::Kind;
use crate::error::{Error, Result};

/// Where a block lies in the file: offset and length including its crc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockHandle {
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

/// One index entry: the last key of a data block and where the block is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) last_key: Vec<u8>,
    pub(crate) handle: BlockHandle,
}

/// Appends one entry to a data block under construction.
pub(crate) fn encode_entry(buf: &mut Vec<u8>, key: &[u8], kind: Kind, value: &[u8]) {
    buf.push(kind as u8);
    put_bytes(buf, key);
    put_bytes(buf, value);
}

/// Seals a block: appends the crc32 of everything in it.
pub(crate) fn seal(buf: &mut Vec<u8>) {
    let crc = crc32fast::hash(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Checks a sealed block's crc and returns its contents.
pub(crate) fn unseal<'a>(file: &Path, offset: u64, raw: &'a [u8]) -> Result<&'a [u8]> {
    let Some(body_len) = raw.len().checked_sub(4) else {
        return Err(Error::corruption(
            file,
            offset,
            "block shorter than its checksum",
        ));
    };
    let (body, crc) = raw.split_at(body_len);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32fast::hash(body);
    if got != expected {
        return Err(Error::corruption(
            file,
            offset,
            format!("block checksum mismatch: got {got:#010x}, expected {expected:#010x}"),
        ));
    }
    Ok(body)
}

/// Walks the entries of an unsealed data block.
#[derive(Debug)]
pub(crate) struct BlockEntries<'a> {
    decoder: Decoder<'a>,
    file: &'a Path,
    offset: u64,
}

impl<'a> BlockEntries<'a> {
    pub(crate) fn new(file: &'a Path, offset: u64, body: &'a [u8]) -> BlockEntries<'a> {
        BlockEntries {
            decoder: Decoder::new(body),
            file,
            offset,
        }
    }
}

impl<'a> Iterator for BlockEntries<'a> {
    type Item = Result<(&'a [u8], Kind, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.decoder.is_empty() {
            return None;
        }
        let at = self.offset + self.decoder.position() as u64;
        let parsed = (|| {
            let kind = Kind::from_u8(self.decoder.u8()?)?;
            let key = self.decoder.length_prefixed()?;
            let value = self.decoder.length_prefixed()?;
            Some((key, kind, value))
        })();
        match parsed {
            Some(item) => Some(Ok(item)),
            None => {
                // Stop after reporting: nothing after a bad entry is trusted.
                self.decoder = Decoder::new(&[]);
                Some(Err(Error::corruption(
                    self.file,
                    at,
                    "malformed block entry",
                )))
            }
        }
    }
}

/// Encodes the index block (unsealed): `count: varint`, then per entry
/// `last_key: varint len + bytes | offset: u64 | len: u32`.
pub(crate) fn encode_index(buf: &mut Vec<u8>, index: &[IndexEntry]) {
    put_varint(buf, index.len() as u64);
    for entry in index {
        put_bytes(buf, &entry.last_key);
        buf.extend_from_slice(&entry.handle.offset.to_le_bytes());
        buf.extend_from_slice(&entry.handle.len.to_le_bytes());
    }
}

/// Decodes an unsealed index block; `None` if malformed.
pub(crate) fn decode_index(body: &[u8]) -> Option<Vec<IndexEntry>> {
    let mut d = Decoder::new(body);
    let count = usize::try_from(d.varint()?).ok()?;
    let mut index = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        let last_key = d.length_prefixed()?.to_vec();
        let offset = d.u64()?;
        let len = d.u32()?;
        index.push(IndexEntry {
            last_key,
            handle: BlockHandle { offset, len },
        });
    }
    d.is_empty().then_some(index)
}
