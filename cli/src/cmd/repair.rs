//! `tally repair`: anti-entropy over every range the first node
//! replicates, with progress.

use crate::args::Cli;
use crate::cmd::topology;
use crate::output::print_json;

/// Runs `tally repair`.
pub async fn run(cli: &Cli) -> Result<(), String> {
    let addr = cli.first().to_owned();
    let repairing = topology::long_client(cli, &addr).await?;
    let report = topology::with_progress(cli, &addr, "repair", cli.json, repairing.repair())
        .await?
        .map_err(|e| e.to_string())?;
    if cli.json {
        print_json(&report);
    } else {
        println!(
                "repaired {addr}: {} ranges ({} skipped), {} of {} Merkle leaves differed, {} cells sent, {:.1} s",
                report.ranges,
                report.ranges_skipped,
                report.leaves_differing,
                report.leaves,
                report.cells_repaired,
                report.elapsed_ms as f64 / 1000.0
            );
    }
    Ok(())
}
