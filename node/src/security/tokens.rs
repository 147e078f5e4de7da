//! [`TokenStore`]: the API tokens a node accepts, as hashes with roles, read
//! from a file the operator manages and read again when it changes, so a
//! token is added or revoked without a restart.
//!
//! The file has one token per line: its SHA-256 in hex, its role, and an
//! optional name (`tally token create` prints the line). `#` starts a
//! comment. A file that fails to parse on reload leaves the tokens as they
//! were and says why in the log: a typo must not lock every client out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use tally_client::auth::Role;

/// How often the file's modification time is checked.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A token the node knows: its role and the name the operator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// What it may do.
    pub role: Role,
    /// Who it was made for (may be empty).
    pub name: String,
}

/// The tokens of a tokens file, by hash.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    by_hash: HashMap<String, TokenEntry>,
    modified: Option<SystemTime>,
}

impl TokenStore {
    /// Reads `path`; fails when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Arc<TokenStore>, String> {
        let (by_hash, modified) = read(path)?;
        Ok(Arc::new(TokenStore {
            path: path.to_owned(),
            state: RwLock::new(Loaded { by_hash, modified }),
        }))
    }

    /// The role of the token whose hash is `hash` (`None`: not known, or
    /// revoked).
    pub fn role(&self, hash: &str) -> Option<Role> {
        self.state.read().by_hash.get(hash).map(|e| e.role)
    }

    /// Tokens known now.
    pub fn len(&self) -> usize {
        self.state.read().by_hash.len()
    }

    /// Whether no token is known (every client is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again if it changed since the last read. Returns
    /// whether the tokens changed.
    pub fn reload_if_changed(&self) -> bool {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified == self.state.read().modified {
            return false;
        }
        match read(&self.path) {
            Ok((by_hash, modified)) => {
                let n = by_hash.len();
                *self.state.write() = Loaded { by_hash, modified };
                tracing::info!(path = %self.path.display(), tokens = n, "tokens reloaded");
                true
            }
            Err(e) => {
                // Keep the tokens in force; remember the time so the error
                // is logged once per change of the file.
                self.state.write().modified = modified;
                tracing::error!(error = %e, "the tokens file changed but cannot be used; the tokens read before stay in force");
                false
            }
        }
    }

    /// Checks the file for changes every second until the store is dropped.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let Some(store) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
            }
        });
    }
}

/// Parses a tokens file's text.
pub fn parse(text: &str) -> Result<HashMap<String, TokenEntry>, String> {
    let mut by_hash = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(hash), Some(role)) = (words.next(), words.next()) else {
            return Err(format!(
                "line {}: expected `<sha256 hex> <role> [name]`",
                n + 1
            ));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: `{hash}` is not a SHA-256 in hex (store the hash `tally token create` prints, never the token)",
                n + 1
            ));
        }
        let role = Role::parse(role)
            .ok_or_else(|| format!("line {}: unknown role `{role}` (read, write, admin)", n + 1))?;
        let name = words.collect::<Vec<_>>().join(" ");
        by_hash.insert(hash.to_ascii_lowercase(), TokenEntry { role, name });
    }
    Ok(by_hash)
}

fn read(path: &Path) -> Result<(HashMap<String, TokenEntry>, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
    let by_hash = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((by_hash, modified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_client::auth::{new_token, token_hash};

    #[test]
    fn lines_give_hashes_roles_and_names_and_bad_lines_are_named() {
        let t = new_token();
        let text = format!(
            "# tokens\n{} write ingest service\n\n{} admin # ops\n",
            token_hash(&t),
            "A".repeat(64)
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed[&token_hash(&t)].role, Role::Write);
        assert_eq!(parsed[&token_hash(&t)].name, "ingest service");
        assert_eq!(parsed[&"a".repeat(64)].role, Role::Admin);
        let err = parse(&format!("{t} write\n")).unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("never the token"),
            "{err}"
        );
        assert!(parse(&format!("{} root\n", "b".repeat(64)))
            .unwrap_err()
            .contains("unknown role"));
        assert!(parse("abc\n").unwrap_err().contains("expected"));
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let (a, b) = (new_token(), new_token());
        std::fs::write(&path, format!("{} read\n", token_hash(&a))).unwrap();
        let store = TokenStore::load(&path).unwrap();
        assert_eq!(store.role(&token_hash(&a)), Some(Role::Read));
        assert!(!store.reload_if_changed());
        // A new modification time (file systems may keep whole seconds).
        let later = std::fs::metadata(&path).unwrap().modified().unwrap() + Duration::from_secs(5);
        std::fs::write(&path, format!("{} admin\n", token_hash(&b))).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(store.reload_if_changed());
        assert_eq!(store.role(&token_hash(&a)), None);
        assert_eq!(store.role(&token_hash(&b)), Some(Role::Admin));
        std::fs::write(&path, "garbage\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        assert!(!store.reload_if_changed());
        assert_eq!(store.role(&token_hash(&b)), Some(Role::Admin));
    }
}
