//! The API token file (`--auth-file`, TOML): one `[[token]]` per principal,
//! with its name, role and tenant scope, and the token only as a salted
//! SHA-256, never in clear. `trimatch auth add-token` appends an entry and
//! prints the token once.
//!
//! A token is `tmt_<id>_<secret>`: `id` (8 hex digits) finds its entry
//! without trying every hash, `secret` is 32 random bytes (base64url). A fast
//! hash is the right one here: a slow password hash (argon2, bcrypt) protects
//! guessable passwords, and 256 random bits are not guessable, while every
//! call verifies its token.
//!
//! ```toml
//! [[token]]
//! name = "ap-dashboard"
//! role = "reader"
//! tenants = ["acme", "globex"]
//! id = "3f9a1c2b"
//! salt = "…"
//! sha256 = "…"
//! created_at = "2026-12-02T09:30:00Z"
//! ```

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Principal, Role, TenantScope};

pub(super) const PREFIX: &str = "tmt_";

/// One principal's token, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Tenant ids, or `["*"]` for every tenant.
    pub tenants: Vec<String>,
    pub id: String,
    pub salt: String,
    pub sha256: String,
    #[serde(default)]
    pub created_at: Option<String>,
    /// The scope parsed from `tenants` (checked when the file is loaded).
    #[serde(skip)]
    scope: Option<TenantScope>,
}

impl TokenEntry {
    pub fn principal(&self) -> Principal {
        Principal {
            name: self.name.clone(),
            role: self.role,
            // The scope is parsed when the file is loaded; an entry that somehow
            // has none reads nothing rather than everything.
            tenants: self
                .scope
                .clone()
                .unwrap_or_else(|| TenantScope::Only(Default::default())),
            cluster: false,
            expires_at: None,
            token_id: Some(self.id.clone()),
        }
    }

    fn matches(&self, token: &str) -> bool {
        let Ok(salt) = STANDARD.decode(&self.salt) else {
            return false;
        };
        let Ok(expected) = STANDARD.decode(&self.sha256) else {
            return false;
        };
        bool::from(hash(&salt, token).as_slice().ct_eq(&expected))
    }
}

/// The token file's contents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
}

impl TokenFile {
    /// Reads and checks a token file: every entry has a valid scope, names
    /// and ids are unique.
    pub fn load(path: &Path) -> Result<TokenFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let mut file: TokenFile = toml::from_str(&text)
            .with_context(|| format!("the token file {} is not valid", path.display()))?;
        let mut names = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for entry in &mut file.tokens {
            let scope = TenantScope::from_list(&entry.tenants).map_err(|problem| {
                anyhow::anyhow!("{}: token {:?}: {problem}", path.display(), entry.name)
            })?;
            entry.scope = Some(scope);
            if !names.insert(entry.name.clone()) {
                bail!(
                    "{}: the token name {:?} appears twice",
                    path.display(),
                    entry.name
                );
            }
            if !ids.insert(entry.id.clone()) {
                bail!(
                    "{}: the token id {:?} appears twice",
                    path.display(),
                    entry.id
                );
            }
        }
        Ok(file)
    }

    /// The entry `token` belongs to, if it is one of these tokens.
    pub fn verify(&self, token: &str) -> Option<&TokenEntry> {
        let id = token.strip_prefix(PREFIX)?.split('_').next()?;
        self.tokens
            .iter()
            .find(|entry| entry.id == id)
            .filter(|entry| entry.matches(token))
    }

    /// The entry of the token with this id, if it is still in the file.
    pub fn with_id(&self, id: &str) -> Option<&TokenEntry> {
        self.tokens.iter().find(|entry| entry.id == id)
    }

    /// Adds a token named `name` to the file at `path` (created, readable by
    /// its owner only, if missing) and returns the token: the only time it
    /// is seen in clear.
    pub fn add(path: &Path, name: &str, role: Role, tenants: TenantScope) -> Result<String> {
        let mut file = if path.exists() {
            TokenFile::load(path)?
        } else {
            TokenFile::default()
        };
        if name.trim().is_empty() || name.contains(':') {
            bail!("a token name is not empty and has no ':' (it is the Basic user name), got {name:?}");
        }
        if file.tokens.iter().any(|entry| entry.name == name) {
            bail!(
                "{} already has a token named {name:?}; revoke it first (`trimatch auth revoke-token`) or choose another name",
                path.display()
            );
        }
        let id = loop {
            let id = hex(&random::<4>());
            if file.with_id(&id).is_none() {
                break id;
            }
        };
        let token = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(random::<32>()));
        let salt = random::<16>();
        file.tokens.push(TokenEntry {
            name: name.to_string(),
            role,
            tenants: tenants.to_list(),
            id,
            salt: STANDARD.encode(salt),
            sha256: STANDARD.encode(hash(&salt, &token)),
            created_at: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            scope: Some(tenants),
        });
        file.save(path)?;
        Ok(token)
    }

    /// Removes the token named `name`; whether there was one.
    pub fn revoke(path: &Path, name: &str) -> Result<bool> {
        let mut file = TokenFile::load(path)?;
        let before = file.tokens.len();
        file.tokens.retain(|entry| entry.name != name);
        if file.tokens.len() == before {
            return Ok(false);
        }
        file.save(path)?;
        Ok(true)
    }

    /// Writes the file whole (to a temporary file renamed over it, so that a
    /// server reloading it never reads half a file).
    fn save(&self, path: &Path) -> Result<()> {
        let text = format!(
            "# trimatch API tokens: `trimatch auth add-token` adds one, `trimatch auth revoke-token` removes one.\n\
             # Tokens are stored as salted SHA-256 hashes; a running server re-reads this file on SIGHUP.\n\n{}",
            toml::to_string(self).context("cannot write the token file")?
        );
        let temporary = path.with_extension("toml.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }
}

/// Whether `token` has the form of an API token (not whether it is valid).
pub fn looks_like_api_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn hash(salt: &[u8], token: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

/// `N` bytes from the operating system's random source.
/// A 32-byte key for `purpose`: derived from the cluster token when there is
/// one, so that every process of a cluster holds the same key (a session
/// token or a statement handle made by one is good at all), else random for
/// this process's life.
pub fn process_key(cluster_token: Option<&str>, purpose: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    match cluster_token {
        Some(token) => Sha256::new()
            .chain_update(purpose.as_bytes())
            .chain_update(b"\0")
            .chain_update(token.as_bytes())
            .finalize()
            .into(),
        None => random::<32>(),
    }
}

pub(super) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_verify_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        let scope = TenantScope::from_list(&["acme"]).unwrap();
        let token = TokenFile::add(&path, "alice", Role::Reader, scope.clone()).unwrap();
        let other = TokenFile::add(&path, "root", Role::Admin, TenantScope::All).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&token) && !text.contains(&token[13..]),
            "never in clear"
        );
        let file = TokenFile::load(&path).unwrap();
        assert_eq!(file.verify(&token).unwrap().principal().tenants, scope);
        assert_eq!(file.verify(&other).unwrap().principal().role, Role::Admin);
        assert!(file.verify(&format!("{token}x")).is_none());
        assert!(file.verify("tmt_nothing").is_none());
        assert!(TokenFile::add(&path, "alice", Role::Admin, TenantScope::All).is_err());
        assert!(TokenFile::revoke(&path, "alice").unwrap());
        assert!(TokenFile::load(&path).unwrap().verify(&token).is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only");
        }
    }

    #[test]
    fn a_bad_scope_in_the_file_is_refused_with_the_token_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(
            &path,
            "[[token]]\nname = \"x\"\nrole = \"reader\"\ntenants = []\nid = \"1\"\nsalt = \"\"\nsha256 = \"\"\n",
        )
        .unwrap();
        let error = format!("{:#}", TokenFile::load(&path).unwrap_err());
        assert!(
            error.contains("token \"x\": a tenant scope lists at least one tenant"),
            "{error}"
        );
    }
}
