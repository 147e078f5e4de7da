//! The report directory of a run:
//!
//! - `verdict.json`: validity, anomalies with the ops involved, counts,
//!   the faults, the configuration and the seed;
//! - `summary.txt`: the same for people;
//! - `history.jsonl`: every operation; `final.json`: the cluster read back
//!   after healing (so `analyze` can re-check a run);
//! - `latency.svg`, `throughput.svg`: over time, with fault windows shaded;
//! - `nodes/`: every node's log (written there during the run).
//!
//! The plots are plain SVG written here: a scatter and three lines need no
//! plotting library.

use std::fmt::Write as _;
use std::path::Path;

use tally_client::ReplicaView;

use crate::checker::{FinalState, Verdict};
use crate::history::{write_jsonl, Op, OpKind, OpType};
use crate::nemesis::FaultWindow;

/// The final state as written to `final.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FinalFile {
    replicas: std::collections::BTreeMap<String, Vec<ReplicaView>>,
    reads: std::collections::BTreeMap<String, Option<i64>>,
}

/// Writes the report of a run into `dir`.
pub fn write(
    dir: &Path,
    config: &serde_json::Value,
    verdict: &Verdict,
    ops: &[Op],
    faults: &[FaultWindow],
    final_state: Option<&FinalState>,
    notes: &[String],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_jsonl(&dir.join("history.jsonl"), ops)?;
    if let Some(f) = final_state {
        let file = FinalFile {
            replicas: f.replicas.clone(),
            reads: f.reads.clone(),
        };
        std::fs::write(dir.join("final.json"), serde_json::to_vec_pretty(&file)?)?;
    }
    let doc = serde_json::json!({
        "validity": verdict.validity,
        "anomalies": verdict.anomalies,
        "stats": verdict.stats,
        "faults": faults,
        "notes": notes,
        "config": config,
    });
    std::fs::write(dir.join("verdict.json"), serde_json::to_vec_pretty(&doc)?)?;
    std::fs::write(dir.join("summary.txt"), summary(verdict, faults, notes))?;
    std::fs::write(dir.join("latency.svg"), latency_svg(ops, faults))?;
    std::fs::write(dir.join("throughput.svg"), throughput_svg(ops, faults))?;
    Ok(())
}

/// Whether the run in `dir` used the producer workload (its verdict's
/// config says so), whose totals must be exact.
pub fn producer_run(dir: &Path) -> bool {
    std::fs::read(dir.join("verdict.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| !v["config"]["workload"]["producer"].is_null())
}

/// Reads `final.json` back, if the run wrote one.
pub fn read_final(dir: &Path) -> Result<Option<FinalState>, String> {
    let path = dir.join("final.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let f: FinalFile =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Some(FinalState {
                replicas: f.replicas,
                reads: f.reads,
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The verdict for people.
pub fn summary(verdict: &Verdict, faults: &[FaultWindow], notes: &[String]) -> String {
    let s = &verdict.stats;
    let mut out = String::new();
    let _ = writeln!(out, "verdict: {:?}", verdict.validity);
    let _ = writeln!(
        out,
        "increments: {} ok, {} failed, {} indeterminate; reads: {} ok, {} failed",
        s.incr_ok, s.incr_fail, s.incr_info, s.read_ok, s.read_failed
    );
    let _ = writeln!(out, "faults injected: {}", faults.len());
    for f in faults {
        let _ = writeln!(
            out,
            "  {:>6.1}s - {:>6.1}s  {:?}: {}",
            f.start_ns as f64 / 1e9,
            f.end_ns as f64 / 1e9,
            f.kind,
            f.what
        );
    }
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    if verdict.anomalies.is_empty() {
        let _ = writeln!(out, "anomalies: none");
    } else {
        let _ = writeln!(out, "anomalies: {}", verdict.anomalies.len());
        for a in verdict.anomalies.iter().take(20) {
            let _ = writeln!(
                out,
                "  {} {}: {} (ops {:?})",
                a.kind, a.key, a.detail, a.ops
            );
        }
    }
    out
}

const W: f64 = 960.0;
const H: f64 = 320.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

struct Frame {
    t_max_s: f64,
}

impl Frame {
    fn x(&self, t_s: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (t_s / self.t_max_s.max(1e-9))
    }
}

fn span_s(ops: &[Op]) -> f64 {
    ops.iter().map(|o| o.time_ns).max().unwrap_or(0) as f64 / 1e9
}

fn open_svg(out: &mut String, title: &str, frame: &Frame, faults: &[FaultWindow]) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="18" font-size="13">{title}</text>"#
    );
    for f in faults {
        let (a, b) = (
            frame.x(f.start_ns as f64 / 1e9),
            frame.x(f.end_ns as f64 / 1e9),
        );
        let _ = write!(
            out,
            r##"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="#999" fill-opacity="0.18"><title>{:?}: {}</title></rect><text x="{a:.1}" y="{:.1}" fill="#666" font-size="9">{:?}</text>"##,
            (b - a).max(1.0),
            H - TOP - BOTTOM,
            f.kind,
            f.what,
            TOP + 10.0,
            f.kind
        );
    }
    let bottom = H - BOTTOM;
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>"##,
        W - RIGHT
    );
    let step = (frame.t_max_s / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= frame.t_max_s {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"##,
            frame.x(t),
            bottom + 15.0
        );
        t += step;
    }
}

fn color(ty: OpType) -> &'static str {
    match ty {
        OpType::Ok => "#2a9d4a",
        OpType::Fail => "#d33",
        OpType::Info => "#e89b1c",
        OpType::Invoke => "#888",
    }
}

/// Latency of every completed operation over time (log scale), coloured by
/// outcome, faults shaded.
pub fn latency_svg(ops: &[Op], faults: &[FaultWindow]) -> String {
    let frame = Frame {
        t_max_s: span_s(ops),
    };
    let mut invoked = std::collections::HashMap::new();
    let mut points = Vec::new();
    for op in ops {
        if op.ty == OpType::Invoke {
            invoked.insert(op.op_id, op.time_ns);
        } else if let Some(start) = invoked.get(&op.op_id) {
            points.push((
                *start as f64 / 1e9,
                (op.time_ns.saturating_sub(*start)) as f64 / 1e6,
                op.ty,
                op.f,
            ));
        }
    }
    let (lo, hi) = (0.05f64.log10(), 10_000f64.log10());
    let y = |ms: f64| {
        let v = ms.max(0.05).log10().min(hi);
        (H - BOTTOM) - (H - TOP - BOTTOM) * (v - lo) / (hi - lo)
    };
    let mut out = String::new();
    open_svg(
        &mut out,
        "latency (ms, log) of increments (o) and reads (x): ok, fail, info",
        &frame,
        faults,
    );
    for ms in [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0] {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{ms}</text><line x1="{LEFT}" x2="{}" y1="{2:.1}" y2="{2:.1}" stroke="#eee"/>"##,
            LEFT - 4.0,
            y(ms),
            W - RIGHT
        );
    }
    for (t, ms, ty, f) in points {
        let (cx, cy) = (frame.x(t), y(ms));
        match f {
            OpKind::Incr => {
                let _ = write!(
                    out,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="1.6" fill="none" stroke="{}"/>"#,
                    color(ty)
                );
            }
            OpKind::Read => {
                let _ = write!(
                    out,
                    r#"<path d="M{:.1} {:.1}l3 3m0 -3l-3 3" stroke="{}"/>"#,
                    cx - 1.5,
                    cy - 1.5,
                    color(ty)
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Completed operations per second by outcome, faults shaded.
pub fn throughput_svg(ops: &[Op], faults: &[FaultWindow]) -> String {
    let frame = Frame {
        t_max_s: span_s(ops),
    };
    let buckets = (frame.t_max_s * 4.0).ceil() as usize + 1;
    let mut counts = vec![[0u32; 3]; buckets];
    for op in ops {
        let i = ((op.time_ns as f64 / 1e9) * 4.0) as usize;
        let lane = match op.ty {
            OpType::Ok => 0,
            OpType::Fail => 1,
            OpType::Info => 2,
            OpType::Invoke => continue,
        };
        if let Some(b) = counts.get_mut(i) {
            b[lane] += 1;
        }
    }
    let peak = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64 * 4.0;
    let y = |per_s: f64| (H - BOTTOM) - (H - TOP - BOTTOM) * per_s / peak;
    let mut out = String::new();
    open_svg(
        &mut out,
        "completed operations per second: ok, fail, info",
        &frame,
        faults,
    );
    for frac in [0.0, 0.5, 1.0] {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text>"#,
            LEFT - 4.0,
            y(peak * frac),
            peak * frac
        );
    }
    for (lane, ty) in [(0, OpType::Ok), (1, OpType::Fail), (2, OpType::Info)] {
        let pts: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(
                    "{:.1},{:.1}",
                    frame.x((i as f64 + 0.5) / 4.0),
                    y(b[lane] as f64 * 4.0)
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            color(ty),
            pts.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}
