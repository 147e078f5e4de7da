//! [`Spool`]: a producer's sums that are not yet known to be counted,
//! kept on local disk with their op ids until the cluster acknowledges
//! them.
//!
//! Why: a producer that cannot reach the cluster, or does not know
//! whether a sum was applied, must neither drop the sum nor send it with
//! a new op id (which could count it twice). The spool keeps it, with the
//! id it was (maybe) sent with, across a crash of the producer, and
//! drains it when the cluster answers. A log consumer also spools each
//! batch *before* it sends it and before it moves its checkpoint, so that
//! a crash between the two can only lead to a resend of the same ids.
//!
//! On disk: a directory of segment files `spool-NNNNNNNNNN.log`, each an
//! 8-byte header and records `[len u32][crc32 u32][payload]`, little
//! endian. A record adds sums (with the source range they cover, if
//! any), marks sums done by op id, gives sums new op ids, or carries a
//! source's high-water offset forward into a new segment. Every append is fsynced before it
//! returns. A segment is deleted once it and every older one hold no
//! pending sum (so a "done" is never lost while the sum it cancels is
//! still on disk); when the spool passes half its budget, the oldest
//! segment's pending sums are copied forward so it can go.
//!
//! Damage: the newest segment may end in a torn record (the producer died
//! while appending, before the append returned, so nothing relied on it):
//! it is cut off and reported in [`Recovered`]. Anything else, a checksum
//! mismatch anywhere or a short record in an older segment, is
//! [`SpoolError::Corrupt`], naming the file and offset: the spool refuses
//! to guess, since a lost sum is a wrong count.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::sums::{SourceRange, Sum};

const HEADER: &[u8; 8] = b"TSPOOL01";
const ADD: u8 = 1;
const DONE: u8 = 2;
const WATER: u8 = 3;
const REISSUE: u8 = 4;
/// A record's payload is at most this long (a batch of sums is far less).
const MAX_RECORD_BYTES: usize = 256 << 20;

/// How big a spool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Bytes on disk at most; an append past it fails with
    /// [`SpoolError::Full`].
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig { max_bytes: 1 << 30 }
    }
}

/// Why the spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Reading or writing a spool file failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A spool file is damaged where no crash could have left it so.
    #[error("spool file {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The append would take the spool past its budget; nothing was
    /// written. Drain it (or give it more room) first.
    #[error("spool is full: {used} bytes used of {max}, {wanted} more wanted")]
    Full {
        /// Bytes on disk now.
        used: u64,
        /// The budget.
        max: u64,
        /// What the refused append needed.
        wanted: u64,
    },
}

/// What opening a spool found besides its pending sums.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The newest segment ended in a record cut short by a crash during
    /// its append; it was removed from here on (file, offset).
    pub torn_tail: Option<(PathBuf, u64)>,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Pending sums whose newest copy is in this segment.
    live: usize,
    /// Their bytes, about (what copying them forward would write).
    live_bytes: u64,
}

/// About what a sum takes in a record.
fn sum_bytes(sum: &Sum) -> u64 {
    (40 + sum.namespace.len() + sum.key.len()) as u64
}

/// The spool of one producer (one directory; one process at a time).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    segments: VecDeque<Segment>,
    file: File,
    /// Pending sums by op id, and the segment holding their newest copy.
    pending: HashMap<u128, (Sum, u64)>,
    /// Per source, the end of the furthest range ever spooled.
    water: BTreeMap<String, u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("spool-{seq:010}.log"))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, replaying what it holds.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<(Spool, Recovered), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let name = entry.map_err(io(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_prefix("spool-")
                .and_then(|s| s.strip_suffix(".log"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut replay = Replay::default();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let newest = i + 1 == seqs.len();
            let bytes = replay.segment(&path, seq, newest, &mut recovered)?;
            segments.push_back(Segment {
                seq,
                path,
                bytes,
                live: 0,
                live_bytes: 0,
            });
        }
        for (sum, seg) in replay.pending.values() {
            if let Some(s) = segments.iter_mut().find(|s| s.seq == *seg) {
                s.live += 1;
                s.live_bytes += sum_bytes(sum);
            }
        }
        let file = match segments.back() {
            Some(last) => OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(io(&last.path))?,
            None => {
                let (segment, file) = create_segment(dir, 1)?;
                segments.push_back(segment);
                file
            }
        };
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            config,
            segments,
            file,
            pending: replay.pending,
            water: replay.water,
        };
        spool.drop_empty_front()?;
        Ok((spool, recovered))
    }

    /// The sums not yet marked done, oldest first.
    pub fn pending(&self) -> Vec<Sum> {
        let mut sums: Vec<(&Sum, u64)> = self.pending.values().map(|(s, g)| (s, *g)).collect();
        sums.sort_by_key(|(s, g)| (*g, s.op_id));
        sums.into_iter().map(|(s, _)| s.clone()).collect()
    }

    /// How many sums are pending.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The end of the furthest range of `source` ever spooled here.
    pub fn high_water(&self, source: &str) -> Option<u64> {
        self.water.get(source).copied()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The budget.
    pub fn config(&self) -> SpoolConfig {
        self.config
    }

    /// Adds `sums` (covering `range`, if they come from a log), durably:
    /// once this returns `Ok` they survive a crash of this process or of
    /// the machine. Sums already pending (same op id) are kept once.
    pub fn append(&mut self, range: Option<&SourceRange>, sums: &[Sum]) -> Result<(), SpoolError> {
        let record = encode_add(range, sums);
        let wanted = record.len() as u64;
        if self.bytes() + wanted > self.config.max_bytes {
            self.compact()?;
            let used = self.bytes();
            if used + wanted > self.config.max_bytes {
                return Err(SpoolError::Full {
                    used,
                    max: self.config.max_bytes,
                    wanted,
                });
            }
        }
        self.write(&record)?;
        let seq = self.current_seq();
        for sum in sums {
            self.track(sum.clone(), seq);
        }
        if let Some(range) = range {
            let w = self.water.entry(range.source.clone()).or_insert(range.end);
            *w = (*w).max(range.end);
        }
        Ok(())
    }

    /// Marks the sums with these op ids done (counted, or settled for
    /// good), durably; ids not pending are ignored. May free segments.
    pub fn done(&mut self, op_ids: &[u128]) -> Result<(), SpoolError> {
        let ids: Vec<u128> = op_ids
            .iter()
            .copied()
            .filter(|id| self.pending.contains_key(id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        // Written even past the budget: it is what frees room.
        self.write(&encode_done(&ids))?;
        for id in ids {
            if let Some((sum, seq)) = self.pending.remove(&id) {
                if let Some(s) = self.segments.iter_mut().find(|s| s.seq == seq) {
                    s.live -= 1;
                    s.live_bytes -= sum_bytes(&sum);
                }
            }
        }
        self.drop_empty_front()?;
        if self.pending.is_empty() && self.segments.back().is_some_and(|s| s.bytes > 1 << 20) {
            // Drained: a fresh segment lets the big one go.
            self.roll()?;
            self.drop_empty_front()?;
        } else if self.bytes() > self.config.max_bytes / 2 {
            self.compact()?;
        }
        Ok(())
    }

    /// Replaces pending sums by the same sums under new op ids, durably
    /// and in one record (a crash leaves either all old ids or all new
    /// ones): `(old op id, sum with its new id)`. For sums certainly never
    /// applied whose old ids would soon expire.
    pub fn reissue(&mut self, pairs: &[(u128, Sum)]) -> Result<(), SpoolError> {
        let pairs: Vec<&(u128, Sum)> = pairs
            .iter()
            .filter(|(old, _)| self.pending.contains_key(old))
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let mut p = vec![REISSUE];
        p.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (old, sum) in &pairs {
            p.extend_from_slice(&old.to_le_bytes());
            put_sum(&mut p, sum);
        }
        // Written even past the budget: it takes the room it replaces.
        self.write(&frame(p))?;
        let seq = self.current_seq();
        for (old, sum) in pairs {
            if let Some((gone, at)) = self.pending.remove(old) {
                if let Some(s) = self.segments.iter_mut().find(|s| s.seq == at) {
                    s.live -= 1;
                    s.live_bytes -= sum_bytes(&gone);
                }
            }
            self.track(sum.clone(), seq);
        }
        self.drop_empty_front()
    }

    fn current_seq(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.seq)
    }

    fn track(&mut self, sum: Sum, seq: u64) {
        let (id, bytes) = (sum.op_id, sum_bytes(&sum));
        if let Some((_, old)) = self.pending.insert(id, (sum, seq)) {
            if let Some(s) = self.segments.iter_mut().find(|s| s.seq == old) {
                s.live -= 1;
                s.live_bytes -= bytes;
            }
        }
        if let Some(s) = self.segments.iter_mut().find(|s| s.seq == seq) {
            s.live += 1;
            s.live_bytes += bytes;
        }
    }

    /// Appends one record to the newest segment (rolling to a new one
    /// first when it is large) and fsyncs it.
    fn write(&mut self, record: &[u8]) -> Result<(), SpoolError> {
        let segment_bytes = (self.config.max_bytes / 8).clamp(64 << 10, 64 << 20);
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes >= segment_bytes)
        {
            self.roll()?;
        }
        let Some(current) = self.segments.back_mut() else {
            return Ok(());
        };
        let path = current.path.clone();
        self.file.write_all(record).map_err(io(&path))?;
        self.file.sync_data().map_err(io(&path))?;
        current.bytes += record.len() as u64;
        Ok(())
    }

    /// Starts a new segment, carrying every source's high water into it
    /// (so older segments can be deleted without losing it).
    fn roll(&mut self) -> Result<(), SpoolError> {
        let seq = self.current_seq() + 1;
        let (mut segment, mut file) = create_segment(&self.dir, seq)?;
        for (source, &end) in &self.water {
            let record = encode_water(source, end);
            file.write_all(&record).map_err(io(&segment.path))?;
            segment.bytes += record.len() as u64;
        }
        file.sync_data().map_err(io(&segment.path))?;
        self.file = file;
        self.segments.push_back(segment);
        Ok(())
    }

    /// Deletes the oldest segments while they hold no pending sum.
    fn drop_empty_front(&mut self) -> Result<(), SpoolError> {
        let mut dropped = false;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.live == 0) {
            if let Some(old) = self.segments.pop_front() {
                std::fs::remove_file(&old.path).map_err(io(&old.path))?;
                dropped = true;
            }
        }
        if dropped {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Copies the pending sums of the oldest segments into the newest one
    /// and deletes them, while that frees more than it writes (a segment
    /// at most half live). Only segments older than the newest one at the
    /// start are taken, so the copies are never copied again here.
    fn compact(&mut self) -> Result<(), SpoolError> {
        let current = self.current_seq();
        while let Some(front) = self.segments.front() {
            if front.seq >= current || front.live_bytes * 2 > front.bytes {
                return Ok(());
            }
            let oldest = front.seq;
            let mut moving: Vec<Sum> = self
                .pending
                .values()
                .filter(|(_, seq)| *seq == oldest)
                .map(|(s, _)| s.clone())
                .collect();
            moving.sort_by_key(|s| s.op_id);
            if !moving.is_empty() {
                self.write(&encode_add(None, &moving))?;
                let seq = self.current_seq();
                for sum in moving {
                    self.track(sum, seq);
                }
            }
            self.drop_empty_front()?;
            if self.segments.front().map(|s| s.seq) == Some(oldest) {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<(Segment, File), SpoolError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    file.write_all(HEADER).map_err(io(&path))?;
    file.sync_data().map_err(io(&path))?;
    sync_dir(dir)?;
    Ok((
        Segment {
            seq,
            path,
            bytes: HEADER.len() as u64,
            live: 0,
            live_bytes: 0,
        },
        file,
    ))
}

/// The state a replay of the segments builds.
#[derive(Default)]
struct Replay {
    pending: HashMap<u128, (Sum, u64)>,
    water: BTreeMap<String, u64>,
}

impl Replay {
    /// Replays one segment file; returns its length (after cutting a
    /// torn tail off the newest).
    fn segment(
        &mut self,
        path: &Path,
        seq: u64,
        newest: bool,
        recovered: &mut Recovered,
    ) -> Result<u64, SpoolError> {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(path))?;
        let corrupt = |offset: usize, reason: String| SpoolError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        if bytes.len() < HEADER.len() || &bytes[..HEADER.len()] != HEADER {
            if newest && bytes.len() < HEADER.len() && HEADER.starts_with(&bytes) {
                // Created, then the crash before its header was written.
                return self.cut(path, 0, recovered).map(|()| 0);
            }
            return Err(corrupt(0, "not a spool segment (bad header)".into()));
        }
        let mut at = HEADER.len();
        while at < bytes.len() {
            let rest = &bytes[at..];
            let len = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            let whole = len.is_some_and(|len| rest.len() >= 8 + len);
            if !whole {
                if newest {
                    self.cut(path, at as u64, recovered)?;
                    return Ok(at as u64);
                }
                return Err(corrupt(at, "record cut short".into()));
            }
            let len = len.unwrap_or_default();
            if len > MAX_RECORD_BYTES {
                return Err(corrupt(at, format!("record of {len} bytes")));
            }
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            let payload = &rest[8..8 + len];
            if crc32fast::hash(payload) != crc {
                return Err(corrupt(at, "checksum mismatch".into()));
            }
            self.record(payload, seq).map_err(|e| corrupt(at, e))?;
            at += 8 + len;
        }
        Ok(bytes.len() as u64)
    }

    fn cut(&self, path: &Path, at: u64, recovered: &mut Recovered) -> Result<(), SpoolError> {
        tracing::warn!(
            file = %path.display(),
            offset = at,
            "spool: a record torn by a crash during its append was removed"
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(at).map_err(io(path))?;
        if at == 0 {
            let mut file = file;
            file.write_all(HEADER).map_err(io(path))?;
        }
        recovered.torn_tail = Some((path.to_path_buf(), at));
        Ok(())
    }

    fn record(&mut self, payload: &[u8], seq: u64) -> Result<(), String> {
        let mut r = Reader(payload);
        match r.u8()? {
            ADD => {
                if r.u8()? == 1 {
                    let source = r.string()?;
                    let _start = r.u64()?;
                    let end = r.u64()?;
                    let w = self.water.entry(source).or_insert(end);
                    *w = (*w).max(end);
                }
                for _ in 0..r.u32()? {
                    let sum = r.sum()?;
                    self.pending.insert(sum.op_id, (sum, seq));
                }
            }
            REISSUE => {
                for _ in 0..r.u32()? {
                    let old = r.u128()?;
                    let sum = r.sum()?;
                    self.pending.remove(&old);
                    self.pending.insert(sum.op_id, (sum, seq));
                }
            }
            DONE => {
                for _ in 0..r.u32()? {
                    self.pending.remove(&r.u128()?);
                }
            }
            WATER => {
                let source = r.string()?;
                let end = r.u64()?;
                let w = self.water.entry(source).or_insert(end);
                *w = (*w).max(end);
            }
            kind => return Err(format!("unknown record kind {kind}")),
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the record", r.0.len()));
        }
        Ok(())
    }
}

fn frame(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Namespaces, keys and source names are far below 64 KiB (the wire's
    // own limit for a key); longer ones are cut, never sent anyway.
    let n = b.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

fn encode_add(range: Option<&SourceRange>, sums: &[Sum]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + sums.len() * 64);
    p.push(ADD);
    match range {
        Some(r) => {
            p.push(1);
            put_bytes(&mut p, r.source.as_bytes());
            p.extend_from_slice(&r.start.to_le_bytes());
            p.extend_from_slice(&r.end.to_le_bytes());
        }
        None => p.push(0),
    }
    p.extend_from_slice(&(sums.len() as u32).to_le_bytes());
    for s in sums {
        put_sum(&mut p, s);
    }
    frame(p)
}

fn put_sum(p: &mut Vec<u8>, s: &Sum) {
    put_bytes(p, s.namespace.as_bytes());
    put_bytes(p, &s.key);
    p.extend_from_slice(&s.minute_ms.to_le_bytes());
    p.extend_from_slice(&s.delta.to_le_bytes());
    p.extend_from_slice(&s.events.to_le_bytes());
    p.extend_from_slice(&s.op_id.to_le_bytes());
}

fn encode_done(ids: &[u128]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + ids.len() * 16);
    p.push(DONE);
    p.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        p.extend_from_slice(&id.to_le_bytes());
    }
    frame(p)
}

fn encode_water(source: &str, end: u64) -> Vec<u8> {
    let mut p = vec![WATER];
    put_bytes(&mut p, source.as_bytes());
    p.extend_from_slice(&end.to_le_bytes());
    frame(p)
}

/// Reads a record's fields; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("record ends {} bytes early", n - self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = u16::from_le_bytes(self.array()?);
        self.take(usize::from(n))
    }
    fn sum(&mut self) -> Result<Sum, String> {
        Ok(Sum {
            namespace: self.string()?,
            key: self.bytes()?.to_vec(),
            minute_ms: self.u64()? as i64,
            delta: self.u64()? as i64,
            events: self.u32()?,
            op_id: self.u128()?,
        })
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn sum(i: u32) -> Sum {
        Sum {
            namespace: "views".into(),
            key: format!("video-{i}").into_bytes(),
            minute_ms: 60_000 * i64::from(i % 7),
            delta: i64::from(i) - 3,
            events: i + 1,
            op_id: 1_000 + u128::from(i),
        }
    }

    fn open(dir: &Path, max_bytes: u64) -> (Spool, Recovered) {
        Spool::open(dir, SpoolConfig { max_bytes }).unwrap()
    }

    #[test]
    fn pending_sums_survive_a_reopen_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        let range = SourceRange {
            source: "a.jsonl".into(),
            start: 0,
            end: 900,
        };
        spool.append(Some(&range), &[sum(1), sum(2)]).unwrap();
        spool.append(None, &[sum(3)]).unwrap();
        spool.done(&[sum(2).op_id, 99]).unwrap();
        drop(spool);
        let (spool, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered, Recovered::default());
        assert_eq!(spool.pending(), vec![sum(1), sum(3)]);
        assert_eq!(spool.high_water("a.jsonl"), Some(900));
        assert_eq!(spool.high_water("b.jsonl"), None);
    }

    #[test]
    fn a_full_spool_refuses_the_append_and_keeps_what_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 4096);
        let mut n = 0;
        let err = loop {
            match spool.append(None, &[sum(n)]) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SpoolError::Full { max: 4096, .. }), "{err}");
        assert!(spool.bytes() <= 4096);
        let (spool, _) = open(dir.path(), 4096);
        assert_eq!(spool.pending_len(), n as usize, "every accepted sum kept");
        assert!(!spool.pending().contains(&sum(n)));
    }

    /// Spread over many segments: a full spool of pending sums refuses at
    /// once (copying them forward would free nothing), and once most are
    /// done the room comes back.
    #[test]
    fn room_comes_from_done_sums_not_from_copying_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 512 << 10);
        let batch = |r: u32| -> Vec<Sum> { (r * 1_000..(r + 1) * 1_000).map(sum).collect() };
        let mut r = 0;
        while spool.append(None, &batch(r)).is_ok() {
            r += 1;
        }
        assert!(r >= 6, "{r} batches before the spool was full");
        assert!(matches!(
            spool.append(None, &batch(r)),
            Err(SpoolError::Full { .. })
        ));
        // All but the last batch done: their segments go, with the copies
        // of the few pending sums among them.
        for done in 0..r - 1 {
            let ids: Vec<u128> = batch(done).iter().map(|s| s.op_id).collect();
            spool.done(&ids).unwrap();
        }
        for more in r..r + 3 {
            spool.append(None, &batch(more)).unwrap();
        }
        assert!(spool.bytes() <= 512 << 10);
        drop(spool);
        let (spool, _) = open(dir.path(), 512 << 10);
        assert_eq!(spool.pending_len(), 4_000);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(None, &[sum(1)]).unwrap();
        let path = segment_path(dir.path(), 1);
        let good = std::fs::metadata(&path).unwrap().len();
        spool.append(None, &[sum(2)]).unwrap();
        drop(spool);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(good + 11).unwrap();
        let (mut spool, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered.torn_tail, Some((path.clone(), good)));
        assert_eq!(spool.pending(), vec![sum(1)]);
        // Appends go on after the cut.
        spool.append(None, &[sum(3)]).unwrap();
        drop(spool);
        let (spool, recovered) = open(dir.path(), 1 << 20);
        assert_eq!(recovered, Recovered::default());
        assert_eq!(spool.pending(), vec![sum(1), sum(3)]);
    }

    #[test]
    fn a_flipped_byte_is_corruption_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 20);
        spool.append(None, &[sum(1)]).unwrap();
        let path = segment_path(dir.path(), 1);
        let second = std::fs::metadata(&path).unwrap().len();
        spool.append(None, &[sum(2)]).unwrap();
        spool.append(None, &[sum(3)]).unwrap();
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second as usize + 20] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        match Spool::open(dir.path(), SpoolConfig::default()) {
            Err(SpoolError::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!((p, offset), (path, second));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_short_record_in_an_older_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(dir.path(), 1 << 19);
        // Past a segment's size (64 KiB here), so a second one starts.
        let big: Vec<Sum> = (0..1_500).map(sum).collect();
        spool.append(None, &big).unwrap();
        spool.append(None, &[sum(2_000)]).unwrap();
        drop(spool);
        let first = segment_path(dir.path(), 1);
        assert!(segment_path(dir.path(), 2).exists());
        let len = std::fs::metadata(&first).unwrap().len();
        let file = OpenOptions::new().write(true).open(&first).unwrap();
        file.set_len(len - 5).unwrap();
        let err = Spool::open(dir.path(), SpoolConfig::default()).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { path, offset: 8, .. } if *path == first),
            "{err}"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u32>, Option<u64>),
        Done(Vec<u32>),
        Reissue(Vec<u32>),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                prop::collection::vec(0u32..200, 1..40),
                prop::option::of(0u64..1_000)
            )
                .prop_map(|(s, w)| Op::Append(s, w)),
            prop::collection::vec(0u32..200, 1..60).prop_map(Op::Done),
            prop::collection::vec(0u32..200, 1..20).prop_map(Op::Reissue),
            Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Against a model (a map of pending sums and a high water), over
        /// appends, dones, reopens, segment rolls, compaction and a full
        /// spool: the spool holds exactly the model's pending sums.
        #[test]
        fn the_spool_matches_a_model(ops in prop::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let config = SpoolConfig { max_bytes: 96 << 10 };
            let (mut spool, _) = Spool::open(dir.path(), config).unwrap();
            let mut model: BTreeMap<u128, Sum> = BTreeMap::new();
            let mut water: Option<u64> = None;
            for op in ops {
                match op {
                    Op::Append(ids, end) => {
                        let sums: Vec<Sum> = ids.iter().map(|&i| sum(i)).collect();
                        let range = end.map(|end| SourceRange { source: "s".into(), start: 0, end });
                        match spool.append(range.as_ref(), &sums) {
                            Ok(()) => {
                                for s in sums { model.insert(s.op_id, s); }
                                if let Some(end) = end { water = Some(water.map_or(end, |w| w.max(end))); }
                            }
                            Err(SpoolError::Full { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Op::Done(ids) => {
                        let ids: Vec<u128> = ids.iter().map(|&i| sum(i).op_id).collect();
                        spool.done(&ids).unwrap();
                        for id in ids { model.remove(&id); }
                    }
                    Op::Reissue(ids) => {
                        // The reissued sum keeps its fields under id + 2^64.
                        let pairs: Vec<(u128, Sum)> = ids
                            .iter()
                            .filter_map(|&i| model.get(&sum(i).op_id).cloned())
                            .map(|s| (s.op_id, Sum { op_id: s.op_id + (1 << 64), ..s }))
                            .collect();
                        spool.reissue(&pairs).unwrap();
                        for (old, new) in pairs {
                            model.remove(&old);
                            model.insert(new.op_id, new);
                        }
                    }
                    Op::Reopen => {
                        drop(spool);
                        let (s, recovered) = Spool::open(dir.path(), config).unwrap();
                        prop_assert_eq!(recovered, Recovered::default());
                        spool = s;
                    }
                }
                let mut got = spool.pending();
                got.sort_by_key(|s| s.op_id);
                prop_assert_eq!(got, model.values().cloned().collect::<Vec<_>>());
                prop_assert_eq!(spool.high_water("s"), water);
                prop_assert!(spool.bytes() <= config.max_bytes + 4096, "{} bytes", spool.bytes());
            }
        }
    }
}
