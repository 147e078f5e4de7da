//! [`History`]: every operation the clients invoked and how it ended, in
//! the order it happened, one JSON line each.
//!
//! An operation appears twice: an `invoke` line when a client starts it and
//! a completion when it ends: `ok` (it happened; a read carries its value),
//! `fail` (it certainly did not happen) or `info` (unknown: a timeout, a
//! lost connection). An operation still running when the history ends has
//! no completion and counts as `info`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Add `value` to the counter `key`.
    Incr,
    /// Read the counter `key` (at QUORUM).
    Read,
}

/// How a line ends an operation (or starts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation started.
    Invoke,
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown whether it happened.
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Op {
    /// The client (one per concurrent worker).
    pub process: u32,
    /// Which line this is.
    #[serde(rename = "type")]
    pub ty: OpType,
    /// What the operation does.
    pub f: OpKind,
    /// The counter.
    pub key: String,
    /// The delta of an increment; the value read by an `ok` read.
    pub value: Option<i64>,
    /// Identifies the operation across its two lines.
    pub op_id: u64,
    /// Nanoseconds since the run started.
    pub time_ns: u64,
    /// Why it failed or is unknown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// An append-only history shared by the clients.
#[derive(Debug)]
pub struct History {
    started: Instant,
    ops: Mutex<Vec<Op>>,
    next_op: std::sync::atomic::AtomicU64,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            started: Instant::now(),
            ops: Mutex::new(Vec::new()),
            next_op: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Nanoseconds since the history started.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Records the start of an operation; returns its id.
    pub fn invoke(&self, process: u32, f: OpKind, key: &str, value: Option<i64>) -> u64 {
        let op_id = self
            .next_op
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.push(Op {
            process,
            ty: OpType::Invoke,
            f,
            key: key.to_owned(),
            value,
            op_id,
            time_ns: self.now_ns(),
            error: None,
        });
        op_id
    }

    /// Records how operation `op_id` ended.
    #[allow(clippy::too_many_arguments)]
    pub fn complete(
        &self,
        process: u32,
        op_id: u64,
        ty: OpType,
        f: OpKind,
        key: &str,
        value: Option<i64>,
        error: Option<String>,
    ) {
        self.push(Op {
            process,
            ty,
            f,
            key: key.to_owned(),
            value,
            op_id,
            time_ns: self.now_ns(),
            error,
        });
    }

    fn push(&self, op: Op) {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(op);
    }

    /// A copy of every line so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

/// Writes `ops` as JSON lines.
pub fn write_jsonl(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history written by [`write_jsonl`]; a malformed line is an
/// error naming its number.
pub fn read_jsonl(path: &Path) -> Result<Vec<Op>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ops = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(
            serde_json::from_str(&line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_round_trips_through_jsonl() {
        let h = History::new();
        let id = h.invoke(3, OpKind::Incr, "k", Some(5));
        h.complete(
            3,
            id,
            OpType::Info,
            OpKind::Incr,
            "k",
            Some(5),
            Some("timeout".into()),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        write_jsonl(&path, &h.ops()).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), h.ops());
        std::fs::write(&path, "{\"process\": 1}\n").unwrap();
        assert!(read_jsonl(&path).unwrap_err().contains("line 1"));
    }
}
