//! Who is calling (SPEC §9): every Flight call's credentials become a
//! [`Principal`] (a name, a [`Role`] and a [`TenantScope`]), or the call is
//! refused with UNAUTHENTICATED and a sentence saying what was expected.
//!
//! The credentials are the ones Flight clients already send, in the
//! `authorization` header:
//! * `Basic base64(name:token)`: an API token of the token file
//!   ([`tokens`]) with its name, as pyarrow's `authenticate_basic_token` and
//!   ADBC's username/password send it in a Handshake (which answers with a
//!   session token) or on any call;
//! * `Bearer <token>`: an API token, a session token from a Handshake
//!   ([`jwt::Sessions`]), a JWT from an identity provider ([`jwt::IdentityProvider`]),
//!   or the cluster's shared token (what processes of one cluster present to
//!   each other for shard reads).
//!
//! What a principal may read is decided by the access gate (see
//! `serve::gate`); this module only says who it is. Repeated
//! failures from one address are refused for a while (`limiter`).
//!
//! May use: its token file, the JWT library and the clock; nothing else of
//! trimatch (the CLI's `auth` command reads and writes its token file).

mod credentials;
pub mod jwt;
mod limiter;
pub mod tokens;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::Status;

pub use credentials::base64_any_padding;
use credentials::{claimed_identity, Credentials};
pub use jwt::{IdentityProvider, JwtConfig, Sessions};
use limiter::FailureLimiter;
pub use tokens::{TokenEntry, TokenFile};

/// What a principal may do beyond reading its tenants' rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the tenant collections, within its tenant scope.
    Reader,
    /// Also reads `dead_letters`, `source_progress` and the `status` action.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "reader" => Some(Role::Reader),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The tenants whose rows a principal may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant (`"*"`).
    All,
    /// These tenants only (never empty).
    Only(BTreeSet<String>),
}

impl TenantScope {
    /// A scope from its list form: `["*"]` is every tenant, otherwise the
    /// tenants listed (at least one).
    pub fn from_list<S: AsRef<str>>(items: &[S]) -> Result<TenantScope, String> {
        let items: BTreeSet<String> = items
            .iter()
            .map(|item| item.as_ref().trim().to_string())
            .collect();
        if items.contains("*") {
            return if items.len() == 1 {
                Ok(TenantScope::All)
            } else {
                Err("\"*\" (every tenant) cannot be combined with tenant ids".to_string())
            };
        }
        if items.is_empty() || items.contains("") {
            return Err(
                "a tenant scope lists at least one tenant id, or is \"*\" for every tenant"
                    .to_string(),
            );
        }
        Ok(TenantScope::Only(items))
    }

    /// The list form: `["*"]`, or the tenants.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            TenantScope::All => vec!["*".to_string()],
            TenantScope::Only(tenants) => tenants.iter().cloned().collect(),
        }
    }

    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(tenants) => tenants.contains(tenant),
        }
    }
}

impl fmt::Display for TenantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list().join(","))
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name, the JWT's subject, or `cluster`/`anonymous`.
    pub name: String,
    pub role: Role,
    pub tenants: TenantScope,
    /// Another process of this cluster (the shared cluster token), or anyone
    /// while authentication is off: may read a single process's shard.
    pub cluster: bool,
    /// When the credential ends (a JWT's or session's `exp`), if it does.
    pub expires_at: Option<i64>,
    /// The API token the credential is or came from (its id in the token file).
    pub token_id: Option<String>,
}

impl Principal {
    /// The caller while authentication is off (loopback only, SPEC §9).
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".to_string(),
            role: Role::Admin,
            tenants: TenantScope::All,
            cluster: true,
            expires_at: None,
            token_id: None,
        }
    }

    fn cluster_peer() -> Principal {
        Principal {
            name: "cluster".to_string(),
            role: Role::Admin,
            tenants: TenantScope::All,
            cluster: true,
            expires_at: None,
            token_id: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why credentials were refused (each becomes UNAUTHENTICATED).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this trimatch requires authentication: send \"authorization: Bearer <token>\" (an API token from `trimatch auth add-token`, a session token from a Handshake with Basic credentials, or a JWT), or \"authorization: Basic <base64 of name:token>\"")]
    Missing,
    #[error("the authorization header must be \"Bearer <token>\" or \"Basic <base64 of name:token>\", got {0}")]
    UnknownScheme(String),
    #[error("Basic credentials must be the base64 of \"name:token\" ({0})")]
    BadBasic(String),
    #[error(
        "unknown token name or wrong token for {0:?}; issue a token with `trimatch auth add-token`"
    )]
    WrongToken(String),
    #[error("the API token is not one of this trimatch's tokens (it may have been revoked); issue one with `trimatch auth add-token`")]
    UnknownToken,
    #[error(
        "the API token behind this session was revoked; authenticate again with a valid token"
    )]
    Revoked,
    #[error("the role or tenants of the API token behind this session changed after it began; authenticate again (Handshake) to start a session with the token's new rights")]
    RightsChanged,
    #[error("{0}")]
    Jwt(String),
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        Status::unauthenticated(error.to_string())
    }
}

/// How callers are authenticated; see the module doc.
#[derive(Default)]
pub struct AuthConfig {
    /// The API token file (`--auth-file`).
    pub token_file: Option<PathBuf>,
    /// JWTs from an identity provider.
    pub identity_provider: Option<JwtConfig>,
    /// The token processes of one cluster present to each other.
    pub cluster_token: Option<String>,
    /// How long a Handshake's session token is valid.
    pub session_ttl: Duration,
}

/// Authenticates calls (see the module doc). Without any credentials
/// configured, everyone is [`Principal::anonymous`].
pub struct Authenticator {
    token_file: Option<PathBuf>,
    tokens: RwLock<TokenFile>,
    identity_provider: Option<IdentityProvider>,
    cluster_token: Option<String>,
    sessions: Sessions,
    limiter: FailureLimiter,
}

impl Authenticator {
    /// No authentication: every caller is anonymous (loopback only).
    pub fn disabled() -> Authenticator {
        Authenticator {
            token_file: None,
            tokens: RwLock::new(TokenFile::default()),
            identity_provider: None,
            cluster_token: None,
            sessions: Sessions::new(None, Duration::from_secs(3600)),
            limiter: FailureLimiter::default(),
        }
    }

    pub fn new(config: AuthConfig) -> anyhow::Result<Authenticator> {
        let tokens = match &config.token_file {
            Some(path) => TokenFile::load(path)?,
            None => TokenFile::default(),
        };
        let identity_provider = config
            .identity_provider
            .map(IdentityProvider::new)
            .transpose()?;
        Ok(Authenticator {
            token_file: config.token_file,
            tokens: RwLock::new(tokens),
            identity_provider,
            sessions: Sessions::new(config.cluster_token.as_deref(), config.session_ttl),
            cluster_token: config.cluster_token,
            limiter: FailureLimiter::default(),
        })
    }

    /// The key this process (and every process of its cluster) uses for
    /// `purpose`; see [`tokens::process_key`].
    pub fn process_key(&self, purpose: &str) -> [u8; 32] {
        tokens::process_key(self.cluster_token.as_deref(), purpose)
    }

    /// How many API tokens the token file holds.
    pub fn token_count(&self) -> usize {
        self.tokens.read().expect("token lock").tokens.len()
    }

    /// Whether JWTs of an identity provider are accepted.
    pub fn accepts_jwts(&self) -> bool {
        self.identity_provider.is_some()
    }

    /// Whether calls need credentials at all.
    pub fn is_enabled(&self) -> bool {
        self.token_file.is_some()
            || self.identity_provider.is_some()
            || self.cluster_token.is_some()
    }

    /// Re-reads the token file (on SIGHUP): added tokens work and revoked
    /// ones stop working, without a restart. A file that no longer parses is
    /// reported and the tokens in use are kept.
    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.token_file {
            let tokens = TokenFile::load(path)?;
            *self.tokens.write().expect("token lock") = tokens;
        }
        Ok(())
    }

    /// The principal of a call's `authorization` header, from `peer`.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<Principal, Status> {
        if !self.is_enabled() {
            return Ok(Principal::anonymous());
        }
        self.limited(peer, metadata, || self.principal_of(metadata))
    }

    /// A Handshake: the caller's principal and a session token for later calls.
    pub fn handshake(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<(Principal, String), Status> {
        let principal = self.authenticate(metadata, peer)?;
        let token = self
            .sessions
            .issue(&principal)
            .map_err(|error| Status::internal(error.to_string()))?;
        Ok((principal, token))
    }

    /// Runs `check` unless `peer` has failed too often lately with the
    /// identity `metadata` claims; counts a failure.
    fn limited(
        &self,
        peer: Option<IpAddr>,
        metadata: &MetadataMap,
        check: impl FnOnce() -> Result<Principal, AuthError>,
    ) -> Result<Principal, Status> {
        let claimed = claimed_identity(metadata);
        if let Some((peer, wait)) =
            peer.and_then(|peer| Some((peer, self.limiter.refused(peer, &claimed)?)))
        {
            return Err(Status::resource_exhausted(format!(
                "too many failed authentications as {claimed} from {peer}; retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        check().map_err(|error| {
            if let Some(peer) = peer {
                self.limiter.failed(peer, &claimed);
            }
            tracing::warn!(target: "trimatch::audit", peer = ?peer, claimed = %claimed, reason = %error, "authentication failed");
            Status::from(error)
        })
    }

    fn principal_of(&self, metadata: &MetadataMap) -> Result<Principal, AuthError> {
        match Credentials::parse(metadata)? {
            Credentials::Basic { name, token } => self.basic(&name, &token),
            Credentials::Bearer(token) => self.bearer(&token),
        }
    }

    /// Basic credentials: the token of the token file's entry `name`.
    fn basic(&self, name: &str, token: &str) -> Result<Principal, AuthError> {
        let tokens = self.tokens.read().expect("token lock");
        match tokens.verify(token) {
            Some(entry) if entry.name == name => Ok(entry.principal()),
            _ => Err(AuthError::WrongToken(name.to_string())),
        }
    }

    fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if let Some(cluster) = &self.cluster_token {
            if bool::from(cluster.as_bytes().ct_eq(token.as_bytes())) {
                return Ok(Principal::cluster_peer());
            }
        }
        if tokens::looks_like_api_token(token) {
            let tokens = self.tokens.read().expect("token lock");
            return tokens
                .verify(token)
                .map(TokenEntry::principal)
                .ok_or(AuthError::UnknownToken);
        }
        if Sessions::is_session_token(token) {
            let principal = self.sessions.verify(token)?;
            // A session has its token's rights as they are now: none if the
            // token was revoked, and none if its role or tenants changed.
            if let Some(id) = &principal.token_id {
                let tokens = self.tokens.read().expect("token lock");
                let now = tokens.with_id(id).ok_or(AuthError::Revoked)?.principal();
                if now.role != principal.role || now.tenants != principal.tenants {
                    return Err(AuthError::RightsChanged);
                }
            }
            return Ok(principal);
        }
        match &self.identity_provider {
            Some(provider) => provider.verify(token),
            None => Err(AuthError::Jwt(
                "the bearer token is neither an API token (tmt_…) nor a session token, and no identity provider is configured for JWTs (--jwt-hs256-secret-file or --jwt-jwks-file)".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn metadata(header: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", header.parse().unwrap());
        map
    }

    fn with_token(role: Role, tenants: &[&str]) -> (Authenticator, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        let token = TokenFile::add(
            &path,
            "alice",
            role,
            TenantScope::from_list(tenants).unwrap(),
        )
        .unwrap();
        let auth = Authenticator::new(AuthConfig {
            token_file: Some(path),
            session_ttl: Duration::from_secs(60),
            ..AuthConfig::default()
        })
        .unwrap();
        (auth, token)
    }

    #[test]
    fn basic_credentials_with_or_without_padding_and_bearer_tokens() {
        let (auth, token) = with_token(Role::Reader, &["acme"]);
        let padded = base64::engine::general_purpose::STANDARD.encode(format!("alice:{token}"));
        let unpadded = padded.trim_end_matches('=').to_string();
        for credentials in [padded, unpadded] {
            let principal = auth
                .authenticate(&metadata(&format!("Basic {credentials}")), None)
                .unwrap();
            assert_eq!(principal.name, "alice");
            assert_eq!(
                principal.tenants,
                TenantScope::from_list(&["acme"]).unwrap()
            );
        }
        assert_eq!(
            auth.authenticate(&metadata(&format!("Bearer {token}")), None)
                .unwrap()
                .role,
            Role::Reader
        );
        let (_, session) = auth
            .handshake(&metadata(&format!("Bearer {token}")), None)
            .unwrap();
        assert_eq!(
            auth.authenticate(&metadata(&format!("Bearer {session}")), None)
                .unwrap()
                .name,
            "alice"
        );
    }

    #[test]
    fn revoking_a_token_ends_its_sessions_at_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        let token = TokenFile::add(&path, "alice", Role::Reader, TenantScope::All).unwrap();
        let auth = Authenticator::new(AuthConfig {
            token_file: Some(path.clone()),
            session_ttl: Duration::from_secs(600),
            ..AuthConfig::default()
        })
        .unwrap();
        let (_, session) = auth
            .handshake(&metadata(&format!("Bearer {token}")), None)
            .unwrap();
        let session = metadata(&format!("Bearer {session}"));
        assert!(auth.authenticate(&session, None).is_ok());
        TokenFile::revoke(&path, "alice").unwrap();
        auth.reload().unwrap();
        let status = auth.authenticate(&session, None).unwrap_err();
        assert!(status.message().contains("revoked"), "{status:?}");
    }

    #[test]
    fn wrong_credentials_say_what_was_expected() {
        let (auth, token) = with_token(Role::Admin, &["*"]);
        let refused = |header: &str| auth.authenticate(&metadata(header), None).unwrap_err();
        let wrong = base64::engine::general_purpose::STANDARD.encode(format!("alice:{token}x"));
        let status = refused(&format!("Basic {wrong}"));
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().contains("wrong token for \"alice\""),
            "{}",
            status.message()
        );
        let other_name = base64::engine::general_purpose::STANDARD.encode(format!("bob:{token}"));
        assert_eq!(
            refused(&format!("Basic {other_name}")).code(),
            tonic::Code::Unauthenticated
        );
        assert!(refused("Digest abc")
            .message()
            .contains("\"Bearer <token>\""));
        let unschemed = refused(&token);
        assert!(
            !unschemed.message().contains(&token[4..]),
            "a secret sent without its scheme is not echoed"
        );
        assert!(auth
            .authenticate(&MetadataMap::new(), None)
            .unwrap_err()
            .message()
            .contains("requires authentication"));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            refused(&format!("Bearer {forged}")).code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn repeated_failures_of_one_identity_from_one_address_are_refused_for_a_while() {
        let (auth, token) = with_token(Role::Reader, &["acme"]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        for _ in 0..limiter::MAX_FAILURES {
            let status = auth
                .authenticate(&metadata("Bearer tmt_00000000_nope"), Some(peer))
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
        let status = auth
            .authenticate(&metadata("Bearer tmt_00000000_nope"), Some(peer))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status
                .message()
                .contains("too many failed authentications as token:00000000 from 10.1.2.3"),
            "{status:?}"
        );
        // Another identity from the same address (behind one NAT, say) is
        // not locked out by those failures, and neither is another address.
        let good = metadata(&format!("Bearer {token}"));
        assert!(auth.authenticate(&good, Some(peer)).is_ok());
        assert!(auth.authenticate(&good, Some(other)).is_ok());
        assert!(auth
            .authenticate(&metadata("Bearer tmt_00000000_nope"), Some(other))
            .is_err_and(|status| status.code() == tonic::Code::Unauthenticated));
    }

    #[test]
    fn tenant_scopes_are_a_list_or_star() {
        assert_eq!(TenantScope::from_list(&["*"]).unwrap(), TenantScope::All);
        assert!(TenantScope::from_list::<&str>(&[]).is_err());
        assert!(TenantScope::from_list(&["*", "acme"]).is_err());
        let scope = TenantScope::from_list(&["b", "a"]).unwrap();
        assert_eq!(scope.to_string(), "a,b");
        assert!(scope.allows("a") && !scope.allows("c"));
    }
}
