//! `tally ingest`: reads events from files (or stdin), sums them per
//! cell and range of lines, and hands each range to an
//! [`Ingestor`]: spooled, checkpointed, then sent
//! with op ids derived from (file, byte range, cell), so a run killed at
//! any moment and started again counts every event exactly once.
//!
//! A source is a file's canonical path (or `--source-name` for stdin,
//! which must then replay the same bytes from its start: the part before
//! the checkpoint is skipped). Ranges are cut every `--chunk-events`
//! events, at the end of a file, and with `--follow` when the file has
//! not grown for a moment.

pub(crate) mod events;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tally_client::ingest::{
    Aggregate, Checkpoint, IngestError, IngestReport, Ingestor, IngestorConfig, SourceRange,
    SpoolConfig, SpoolFullPolicy,
};
use tally_client::Client;

pub use events::Format;
use events::{parse, Columns, Line};

use crate::output::print_json;

/// `tally ingest` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Files to read, in order; `-` reads stdin.
    #[arg(default_value = "-")]
    pub files: Vec<PathBuf>,
    /// jsonl or csv (by default from the file's extension; jsonl for
    /// stdin).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The namespace of events that name none.
    #[arg(long, default_value = "events")]
    pub ns: String,
    /// Where the checkpoint and the spool live (one run at a time).
    #[arg(long, default_value = ".tally-ingest")]
    pub state_dir: PathBuf,
    /// Keep reading as the file grows (like `tail -f`); stop with Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// Events per range: each range is spooled, checkpointed and sent as
    /// a whole. Larger ranges sum more events per cell (fewer increments,
    /// fewer op ids) and hold more in memory.
    #[arg(long, default_value_t = 500_000)]
    pub chunk_events: usize,
    /// The spool's budget in MiB.
    #[arg(long, default_value_t = 256)]
    pub spool_mib: u64,
    /// When the spool is full: wait for room, or fail.
    #[arg(long, value_enum, default_value = "block")]
    pub spool_full: FullPolicy,
    /// Lines that do not parse, skipped, before the command gives up.
    #[arg(long, default_value_t = 0)]
    pub max_bad_lines: u64,
    /// The source name of stdin, for its checkpoint.
    #[arg(long, default_value = "stdin")]
    pub source_name: String,
    /// Seconds to wait at the end for every sum to be acknowledged; what
    /// is still unsettled stays in the spool for the next run.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout: u64,
}

/// `--spool-full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FullPolicy {
    /// Wait until sums are acknowledged and free room.
    Block,
    /// Stop with an error.
    Fail,
}

/// What one run did, printed at the end.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    /// Per source: where the run started and ended.
    sources: Vec<SourceSummary>,
    events_read: u64,
    bad_lines: u64,
    /// Per namespace, the events read and their deltas summed.
    namespaces: BTreeMap<String, NamespaceTotal>,
    report: IngestReport,
    /// Every sum is settled (none left in the spool).
    drained: bool,
    seconds: f64,
}

#[derive(Debug, serde::Serialize)]
struct SourceSummary {
    source: String,
    from_offset: u64,
    to_offset: u64,
}

#[derive(Debug, Default, serde::Serialize)]
struct NamespaceTotal {
    events: u64,
    delta: i128,
}

/// Runs `tally ingest`.
/// `connect` is awaited once the state directory has been checked, so a
/// damaged checkpoint is reported as such, cluster or not.
pub async fn run(
    connect: impl std::future::Future<Output = Result<Client, String>>,
    args: &IngestArgs,
    json: bool,
) -> Result<(), String> {
    Checkpoint::open(&args.state_dir.join("checkpoint")).map_err(|e| e.to_string())?;
    let client = connect.await?;
    let config = IngestorConfig {
        spool: SpoolConfig {
            max_bytes: args.spool_mib.max(1) << 20,
        },
        on_full: match args.spool_full {
            FullPolicy::Block => SpoolFullPolicy::Block,
            FullPolicy::Fail => SpoolFullPolicy::Fail,
        },
        ..IngestorConfig::default()
    };
    let ingestor = Ingestor::open(client, &args.state_dir, config).map_err(|e| e.to_string())?;
    if let Some((file, offset)) = &ingestor.recovered().torn_tail {
        eprintln!(
            "tally ingest: the spool's last record ({}, byte {offset}) was torn by a crash and dropped; \
             its range is read again",
            file.display()
        );
    }
    let started = Instant::now();
    let bar = progress_bar(json);
    let mut summary = Summary::default();
    for file in &args.files {
        let result = ingest_source(&ingestor, args, file, &bar, &mut summary).await;
        if let Err(e) = result {
            bar.abandon();
            return Err(e);
        }
    }
    bar.set_message(format!(
        "{} events read; waiting for the cluster to acknowledge the last sums",
        summary.events_read
    ));
    summary.drained = ingestor
        .finish(Some(Duration::from_secs(args.drain_timeout)))
        .await;
    bar.finish_and_clear();
    summary.report = ingestor.report();
    summary.seconds = started.elapsed().as_secs_f64();
    if json {
        print_json(&summary);
    } else {
        print_summary(&summary);
    }
    let d = summary.report.delivered;
    if !summary.drained {
        return Err(format!(
            "{} sums are not acknowledged yet; they stay in the spool ({}) and are sent on the next run",
            summary.report.sums_pending,
            args.state_dir.join("spool").display()
        ));
    }
    if d.events_failed + d.events_expired > 0 {
        return Err(format!(
            "{} events were refused and {} have an unknown outcome (op id expired); see the log",
            d.events_failed, d.events_expired
        ));
    }
    Ok(())
}

fn progress_bar(json: bool) -> indicatif::ProgressBar {
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// An open source: a file (seekable) or stdin.
enum Input {
    File(BufReader<std::fs::File>, PathBuf),
    Stdin(BufReader<std::io::Stdin>),
}

impl Input {
    fn read_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Input::File(r, _) => r.read_until(b'\n', buf),
            Input::Stdin(r) => r.read_until(b'\n', buf),
        }
    }

    /// Bytes in the file (for the lag shown), if it is one.
    fn len(&self) -> Option<u64> {
        match self {
            Input::File(_, path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Input::Stdin(_) => None,
        }
    }
}

async fn ingest_source(
    ingestor: &Ingestor,
    args: &IngestArgs,
    file: &Path,
    bar: &indicatif::ProgressBar,
    summary: &mut Summary,
) -> Result<(), String> {
    let stdin = file == Path::new("-");
    let (source, format) = if stdin {
        (
            args.source_name.clone(),
            args.format.unwrap_or(Format::Jsonl),
        )
    } else {
        let path = file
            .canonicalize()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let format = args
            .format
            .unwrap_or(if csv { Format::Csv } else { Format::Jsonl });
        (path.display().to_string(), format)
    };
    let start = ingestor.resume_offset(&source);
    let mut input = if stdin {
        let mut r = BufReader::new(std::io::stdin());
        let skipped = std::io::copy(&mut (&mut r).take(start), &mut std::io::sink())
            .map_err(|e| format!("stdin: {e}"))?;
        if skipped < start {
            return Err(format!(
                "stdin ended at byte {skipped}, before its checkpoint at {start}: not the stream checkpointed as {source:?}"
            ));
        }
        Input::Stdin(r)
    } else {
        let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        if len < start {
            return Err(format!(
                "{} has {len} bytes, fewer than its checkpoint at byte {start}: was it replaced? \
                 (use another --state-dir for a new file)",
                file.display()
            ));
        }
        f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
        Input::File(BufReader::with_capacity(1 << 20, f), file.to_path_buf())
    };
    let mut offset = start;
    let mut columns = Columns::default();
    // A CSV header is only looked for on the first line of the source;
    // after a resume its columns come from reading that line again.
    if format == Format::Csv && start > 0 && !stdin {
        columns = csv_header(file)?.unwrap_or_default();
    }
    let mut line = Vec::with_capacity(256);
    let mut chunk = Aggregate::default();
    let mut chunk_start = offset;
    let mut line_no: u64 = 0;
    let mut idle_since: Option<Instant> = None;
    let started = Instant::now();
    let read_before = summary.events_read;
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .map_err(|e| format!("{source}: {e}"))?;
        // stdin blocks until a line is whole or the stream ended.
        let complete = line.last() == Some(&b'\n') || matches!(input, Input::Stdin(_));
        let at_end = n == 0 || !complete;
        if n > 0 && (complete || !args.follow) {
            idle_since = None;
            line_no += 1;
            let first = offset == 0;
            offset += n as u64;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            match parse(format, text, &columns, first) {
                Ok(Line::Event(e)) => {
                    let ns = e.namespace.as_deref().unwrap_or(&args.ns);
                    chunk
                        .add(ns, e.key.as_bytes(), e.ts, e.delta)
                        .map_err(|err| format!("{source} at byte {}: {err}", offset - n as u64))?;
                    let t = summary.namespaces.entry(ns.to_owned()).or_default();
                    t.events += 1;
                    t.delta += i128::from(e.delta);
                    summary.events_read += 1;
                }
                Ok(Line::Skip(header)) => {
                    if let Some(h) = header {
                        columns = h;
                    }
                }
                Err(e) => {
                    summary.bad_lines += 1;
                    eprintln!(
                        "tally ingest: {source} line {} (byte {}): {e}",
                        if start == 0 {
                            line_no.to_string()
                        } else {
                            format!("+{line_no}")
                        },
                        offset - n as u64
                    );
                    if summary.bad_lines > args.max_bad_lines {
                        return Err(format!(
                            "more than {} lines do not parse (--max-bad-lines); the checkpoint stays at byte {chunk_start}",
                            args.max_bad_lines
                        ));
                    }
                }
            }
        } else if n > 0 {
            // A line still being written (--follow): read it again whole.
            if let Input::File(r, _) = &mut input {
                r.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
            }
        }
        let idle = at_end
            && args.follow
            && idle_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(200);
        let cut = chunk.events() as usize >= args.chunk_events.max(1)
            || (at_end && !args.follow)
            || (idle && offset > chunk_start);
        if cut && offset > chunk_start {
            let range = SourceRange {
                source: source.clone(),
                start: chunk_start,
                end: offset,
            };
            ingestor
                .commit(range, std::mem::take(&mut chunk))
                .await
                .map_err(|e: IngestError| e.to_string())?;
            chunk_start = offset;
        }
        if cut || at_end {
            let events = summary.events_read - read_before;
            show(bar, ingestor, &source, offset, input.len(), events, started);
        }
        if at_end {
            if !args.follow {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    summary.sources.push(SourceSummary {
        source,
        from_offset: start,
        to_offset: offset,
    });
    Ok(())
}

/// The columns a CSV file's header names, if its first line is one.
fn csv_header(file: &Path) -> Result<Option<Columns>, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut first = Vec::new();
    BufReader::new(f)
        .read_until(b'\n', &mut first)
        .map_err(|e| e.to_string())?;
    let text = first.strip_suffix(b"\n").unwrap_or(&first);
    Ok(match parse(Format::Csv, text, &Columns::default(), true) {
        Ok(Line::Skip(Some(c))) => Some(c),
        _ => None,
    })
}

fn show(
    bar: &indicatif::ProgressBar,
    ingestor: &Ingestor,
    source: &str,
    offset: u64,
    len: Option<u64>,
    events: u64,
    started: Instant,
) {
    let r = ingestor.report();
    let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
    let lag = len.map_or(String::new(), |l| {
        format!(
            "  lag {:.1} MiB",
            l.saturating_sub(offset) as f64 / (1 << 20) as f64
        )
    });
    bar.set_message(format!(
        "{source}: byte {offset}{lag}  {events} events  {rate:.0}/s  {} sums acknowledged, {} pending (spool {:.1} MiB)",
        r.delivered.events_acknowledged,
        r.sums_pending,
        r.spool_bytes as f64 / (1 << 20) as f64,
    ));
}

fn print_summary(s: &Summary) {
    for src in &s.sources {
        println!(
            "{}: bytes {} to {}",
            src.source, src.from_offset, src.to_offset
        );
    }
    let d = &s.report.delivered;
    println!(
        "{} events read in {:.1} s ({:.0}/s), {} bad lines skipped",
        s.events_read,
        s.seconds,
        s.events_read as f64 / s.seconds.max(0.001),
        s.bad_lines
    );
    println!(
        "{} sums committed ({} left by an earlier run), {} sent in {} requests",
        s.report.sums_committed, s.report.sums_recovered, d.sums_sent, d.batches_sent
    );
    println!(
        "events acknowledged {}  refused {}  expired {}  sums still pending {}",
        d.events_acknowledged, d.events_failed, d.events_expired, s.report.sums_pending
    );
    println!("{:<24} {:>14} {:>20}", "NAMESPACE", "EVENTS", "DELTA");
    for (ns, t) in &s.namespaces {
        println!("{ns:<24} {:>14} {:>20}", t.events, t.delta);
    }
}
