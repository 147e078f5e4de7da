//! What commands print: JSON for scripts (`--json`), and the small pieces
//! tables share.

use tally_client::StorageHealth;

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

/// A storage health for a table cell.
pub fn health_word(health: StorageHealth) -> &'static str {
    match health {
        StorageHealth::Ok => "ok",
        StorageHealth::Poisoned => "POISONED",
        StorageHealth::DiskFull => "DISK FULL",
    }
}
