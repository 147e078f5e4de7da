//! Checksummed record framing shared by the WAL and the manifest.
//!
//! A record is `crc32: u32 | len: u32 | payload[len]` (little-endian), where
//! the crc covers the four length bytes and the payload. A log is records
//! back to back, appended and never rewritten.
//!
//! Reading distinguishes a *torn tail* from *corruption*. A crash in the
//! middle of an append leaves a record that is cut short or fails its
//! checksum, and nothing valid after it: that is the end of the log, and the
//! record was never acknowledged (acknowledgement waits for the write to
//! complete). A bad record followed by any valid record cannot come from a
//! crash: it is corruption, reported with the file and offset, and the
//! engine refuses to open rather than drop acknowledged data.
//!
//! One case is indistinguishable from a torn write: damage to the very last
//! record. It is dropped like a torn write, as in LevelDB and RocksDB.

use std::path::Path;

use crate::decoder::Decoder;
use crate::error::{Error, Result};

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 8;
/// Largest payload a record may carry; a larger length is damage.
pub(crate) const MAX_PAYLOAD_LEN: usize = 64 << 20;

/// Appends one framed record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, payload: &[u8]) {
    encode_record_parts(buf, &[payload]);
}

/// [`encode_record`] of the payload `parts` concatenated, without
/// concatenating them first.
pub(crate) fn encode_record_parts(buf: &mut Vec<u8>, parts: &[&[u8]]) {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(payload_len > 0 && payload_len <= MAX_PAYLOAD_LEN);
    let len = (payload_len as u32).to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    for part in parts {
        hasher.update(part);
    }
    buf.extend_from_slice(&hasher.finalize().to_le_bytes());
    buf.extend_from_slice(&len);
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// The valid record at `offset`, if there is one: returns its payload range.
fn record_at(data: &[u8], offset: usize) -> Option<(usize, usize)> {
    let mut d = Decoder::new(data.get(offset..)?);
    let crc = d.u32()?;
    let len = d.u32()? as usize;
    if len == 0 || len > MAX_PAYLOAD_LEN {
        return None;
    }
    let payload = d.bytes(len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(len as u32).to_le_bytes());
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    let start = offset + HEADER_LEN;
    Some((start, start + len))
}

/// What reading a whole log found.
#[derive(Debug)]
pub(crate) struct LogContents<'a> {
    /// Each valid record's payload and its offset in the file.
    pub(crate) records: Vec<(u64, &'a [u8])>,
    /// Where a torn tail starts (the log ends there), if it has one.
    pub(crate) torn_tail_at: Option<u64>,
}

/// Splits a log file's bytes into records; see the module docs for the
/// torn-tail rule.
pub(crate) fn read_log<'a>(file: &Path, data: &'a [u8]) -> Result<LogContents<'a>> {
    read_log_as(file, data, false)
}

/// [`read_log`], or with `salvage` the valid records before the first bad
/// one, whatever follows it (an operator's choice to drop a damaged tail).
pub(crate) fn read_log_as<'a>(
    file: &Path,
    data: &'a [u8],
    salvage: bool,
) -> Result<LogContents<'a>> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < data.len() {
        match record_at(data, offset) {
            Some((start, end)) => {
                records.push((offset as u64, &data[start..end]));
                offset = end;
            }
            None => {
                // Is there any valid record later? Then this is not a tail.
                let later = if salvage {
                    None
                } else {
                    (offset + 1..data.len()).find(|&o| record_at(data, o).is_some())
                };
                if let Some(later) = later {
                    return Err(Error::corruption(
                        file,
                        offset as u64,
                        format!("bad record with a valid record after it at offset {later}"),
                    ));
                }
                return Ok(LogContents {
                    records,
                    torn_tail_at: Some(offset as u64),
                });
            }
        }
    }
    Ok(LogContents {
        records,
        torn_tail_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn log_of(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = Vec::new();
        for p in payloads {
            encode_record(&mut buf, p);
        }
        buf
    }

    proptest! {
        #[test]
        fn truncation_yields_a_prefix(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let log = log_of(&payloads);
            let cut = cut.index(log.len() + 1);
            let contents = read_log(Path::new("wal"), &log[..cut]).unwrap();
            let got: Vec<&[u8]> = contents.records.iter().map(|(_, p)| *p).collect();
            prop_assert!(got.len() <= payloads.len());
            for (g, p) in got.iter().zip(&payloads) {
                prop_assert_eq!(*g, &p[..]);
            }
        }

        #[test]
        fn a_flipped_bit_is_detected_or_is_the_tail(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 2..8),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut log = log_of(&payloads);
            let at = at.index(log.len());
            log[at] ^= 1 << bit;
            match read_log(Path::new("wal"), &log) {
                Err(Error::Corruption { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
                Ok(contents) => {
                    // Only the last record may be lost, and nothing may change.
                    prop_assert!(contents.records.len() + 1 >= payloads.len());
                    for ((_, g), p) in contents.records.iter().zip(&payloads) {
                        prop_assert_eq!(*g, &p[..]);
                    }
                }
            }
        }
    }

    #[test]
    fn damage_before_a_valid_record_is_corruption() {
        let mut log = log_of(&[b"first".to_vec(), b"second".to_vec()]);
        log[HEADER_LEN] ^= 0xff;
        let err = read_log(Path::new("wal"), &log).unwrap_err();
        assert!(matches!(err, Error::Corruption { offset: 0, .. }), "{err}");
    }
}
