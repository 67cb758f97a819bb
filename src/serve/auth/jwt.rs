//! JSON Web Tokens, both kinds: the session tokens a Handshake hands out
//! ([`Sessions`], HS256 with this server's key), and tokens from an identity
//! provider ([`IdentityProvider`]: HS256 with a shared secret, or RS256 with
//! the keys of a JWKS file), whose role and tenant scope come from
//! configurable claims. `jsonwebtoken` checks signatures, expiry (with a
//! minute of leeway for clock skew), issuer and audience; a token whose
//! header lists critical extensions (`crit`, RFC 7515 §4.1.11) is refused,
//! since trimatch understands none. The JWKS file is read again when it
//! changes (checked at most every [`JWKS_CHECK_INTERVAL`]), so a provider's
//! key rotation needs no restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};

use super::{AuthError, Principal, Role, TenantScope};

/// The issuer of session tokens; other JWTs are the identity provider's.
const SESSION_ISSUER: &str = "trimatch-session";

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;

/// Session tokens: what a Handshake answers with, valid for a while.
///
/// Their key is derived from the cluster token when there is one, so that any
/// process of a cluster accepts a session another one started; otherwise it is
/// random per process (sessions end with the process).
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl Sessions {
    pub fn new(cluster_token: Option<&str>, ttl: Duration) -> Sessions {
        let key = super::tokens::process_key(cluster_token, "trimatch session key");
        Sessions {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            ttl,
        }
    }

    /// A session token for `principal`. It ends with the TTL, or with the
    /// credential it came from if that ends first (a JWT's `exp`, an earlier
    /// session's), so no session outlives what it was started with; it names
    /// the API token it came from, which must stay in the token file.
    pub fn issue(&self, principal: &Principal) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let ttl_end = now + self.ttl.as_secs() as i64;
        let claims = json!({
            "iss": SESSION_ISSUER,
            "sub": principal.name,
            "role": principal.role.name(),
            "tenants": principal.tenants.to_list(),
            "tid": principal.token_id,
            "iat": now,
            "exp": principal.expires_at.map_or(ttl_end, |end| end.min(ttl_end)),
        });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Whether `token` claims to be a session token (its signature unchecked).
    pub fn is_session_token(token: &str) -> bool {
        unverified_claims(token)
            .is_some_and(|claims| claims.get("iss").and_then(Value::as_str) == Some(SESSION_ISSUER))
    }

    /// The principal of a session token this server issued.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[SESSION_ISSUER]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|error| {
                AuthError::Jwt(format!(
                    "the session token is refused: {}; Handshake again",
                    describe(&error)
                ))
            })?
            .claims;
        let mut principal = principal_of(&claims, "role", "tenants", "session token")?;
        principal.token_id = claims
            .get("tid")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(principal)
    }
}

/// Where an identity provider's JWTs are checked against, and which claims
/// say what.
#[derive(Clone, Debug, Default)]
pub struct JwtConfig {
    /// A shared secret for HS256 tokens.
    pub hs256_secret_file: Option<PathBuf>,
    /// The provider's public keys for RS256 tokens (a JWKS document).
    pub jwks_file: Option<PathBuf>,
    /// The `iss` every token must have, if set.
    pub issuer: Option<String>,
    /// The `aud` every token must have, if set.
    pub audience: Option<String>,
    /// The claim holding the tenant scope (a list of tenant ids, one id, or `"*"`).
    pub tenant_claim: String,
    /// The claim holding the role (`reader` or `admin`; `reader` when absent).
    pub role_claim: String,
}

/// How often the JWKS file is looked at for a change.
pub const JWKS_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Verifies an identity provider's JWTs (see [`JwtConfig`]).
pub struct IdentityProvider {
    config: JwtConfig,
    secret: Option<DecodingKey>,
    keys: Option<JwksFile>,
}

/// A JWKS file and the keys last read from it.
struct JwksFile {
    path: PathBuf,
    state: Mutex<JwksState>,
}

struct JwksState {
    keys: Arc<JwkSet>,
    /// The file's modification time and length when `keys` were read.
    read: (Option<SystemTime>, u64),
    checked: Instant,
}

impl JwksFile {
    fn load(path: &std::path::Path) -> anyhow::Result<(JwkSet, (Option<SystemTime>, u64))> {
        use anyhow::Context;
        let stamp = file_stamp(path);
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the JWKS file {}", path.display()))?;
        let keys = serde_json::from_str::<JwkSet>(&text).with_context(|| {
            format!(
                "{} is not a JWKS document ({{\"keys\": [...]}})",
                path.display()
            )
        })?;
        Ok((keys, stamp))
    }

    fn new(path: PathBuf) -> anyhow::Result<Self> {
        let (keys, read) = Self::load(&path)?;
        Ok(JwksFile {
            path,
            state: Mutex::new(JwksState {
                keys: Arc::new(keys),
                read,
                checked: Instant::now(),
            }),
        })
    }

    /// The keys, read again first if the file changed since they were. A
    /// file that no longer parses is reported and the keys in use are kept.
    fn keys(&self) -> Arc<JwkSet> {
        let mut state = self.state.lock().expect("jwks lock");
        if state.checked.elapsed() >= JWKS_CHECK_INTERVAL {
            state.checked = Instant::now();
            if file_stamp(&self.path) != state.read {
                match Self::load(&self.path) {
                    Ok((keys, read)) => {
                        tracing::info!(file = %self.path.display(), keys = keys.keys.len(), "the JWKS file changed; its keys are read again");
                        state.keys = Arc::new(keys);
                        state.read = read;
                    }
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "the JWKS file changed but cannot be read; the keys read before stay in use")
                    }
                }
            }
        }
        state.keys.clone()
    }
}

/// What tells that a file changed: its modification time and length.
fn file_stamp(path: &std::path::Path) -> (Option<SystemTime>, u64) {
    match std::fs::metadata(path) {
        Ok(metadata) => (metadata.modified().ok(), metadata.len()),
        Err(_) => (None, 0),
    }
}

impl IdentityProvider {
    pub fn new(config: JwtConfig) -> anyhow::Result<IdentityProvider> {
        use anyhow::Context;
        let secret = match &config.hs256_secret_file {
            Some(path) => {
                let secret = std::fs::read(path)
                    .with_context(|| format!("cannot read the JWT secret {}", path.display()))?;
                let secret = secret.trim_ascii();
                if secret.len() < 32 {
                    anyhow::bail!(
                        "the JWT secret {} has {} bytes; an HS256 secret needs at least 32",
                        path.display(),
                        secret.len()
                    );
                }
                Some(DecodingKey::from_secret(secret))
            }
            None => None,
        };
        let keys = config.jwks_file.clone().map(JwksFile::new).transpose()?;
        if secret.is_none() && keys.is_none() {
            anyhow::bail!("JWT authentication needs --jwt-hs256-secret-file or --jwt-jwks-file");
        }
        if config.issuer.is_none() {
            tracing::warn!(
                "JWTs are accepted from any issuer: set --jwt-issuer to the identity provider's"
            );
        }
        if config.audience.is_none() {
            tracing::warn!("JWTs are accepted for any audience: set --jwt-audience to the one the identity provider issues trimatch's tokens for");
        }
        Ok(IdentityProvider {
            config,
            secret,
            keys,
        })
    }

    /// The principal of an identity provider's JWT.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let refused = |why: String| AuthError::Jwt(format!("the JWT is refused: {why}"));
        let header =
            jsonwebtoken::decode_header(token).map_err(|error| refused(describe(&error)))?;
        if let Some(critical) = critical_extensions(token) {
            return Err(refused(format!(
                "its header lists critical extensions (crit: {critical}) and trimatch \
                 understands none (RFC 7515 §4.1.11)"
            )));
        }
        let key = match header.alg {
            Algorithm::HS256 => self.secret.clone().ok_or_else(|| {
                refused(
                    "HS256 tokens are not accepted here (no --jwt-hs256-secret-file)".to_string(),
                )
            })?,
            Algorithm::RS256 => {
                let keys = self
                    .keys
                    .as_ref()
                    .ok_or_else(|| {
                        refused(
                            "RS256 tokens are not accepted here (no --jwt-jwks-file)".to_string(),
                        )
                    })?
                    .keys();
                let jwk = match &header.kid {
                    Some(kid) => keys.find(kid),
                    None if keys.keys.len() == 1 => keys.keys.first(),
                    None => None,
                }
                .ok_or_else(|| {
                    refused(format!(
                        "no key in the JWKS file has the token's kid {:?}",
                        header.kid
                    ))
                })?;
                DecodingKey::from_jwk(jwk).map_err(|error| refused(describe(&error)))?
            }
            other => {
                return Err(refused(format!(
                    "the algorithm {other:?} is not accepted; use HS256 or RS256"
                )))
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &self.config.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| refused(describe(&error)))?
            .claims;
        principal_of(
            &claims,
            &self.config.role_claim,
            &self.config.tenant_claim,
            "JWT",
        )
    }
}

/// A principal from a token's claims: `sub`, the role and the tenant scope.
fn principal_of(
    claims: &Map<String, Value>,
    role_claim: &str,
    tenant_claim: &str,
    what: &str,
) -> Result<Principal, AuthError> {
    let refused = |why: String| AuthError::Jwt(format!("the {what} is refused: {why}"));
    let name = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("it has no \"sub\" claim".to_string()))?;
    let role = match claims.get(role_claim) {
        None | Some(Value::Null) => Role::Reader,
        Some(Value::String(role)) => Role::parse(role).ok_or_else(|| {
            refused(format!(
                "its {role_claim:?} claim is {role:?}; it must be \"reader\" or \"admin\""
            ))
        })?,
        Some(other) => {
            return Err(refused(format!(
                "its {role_claim:?} claim must be a string, got {other}"
            )))
        }
    };
    let tenants: Vec<String> = match claims.get(tenant_claim) {
        Some(Value::String(tenant)) => vec![tenant.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| refused(format!("its {tenant_claim:?} claim must list tenant ids as strings")))?,
        _ => {
            return Err(refused(format!(
                "it has no {tenant_claim:?} claim with the tenant scope (a list of tenant ids, or \"*\")"
            )))
        }
    };
    let tenants = TenantScope::from_list(&tenants)
        .map_err(|why| refused(format!("its {tenant_claim:?} claim: {why}")))?;
    Ok(Principal {
        name: name.to_string(),
        role,
        tenants,
        cluster: false,
        expires_at: claims.get("exp").and_then(Value::as_i64),
        token_id: None,
    })
}

/// The `crit` member of a token's header, if it has one.
fn critical_extensions(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let mut header: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    header.remove("crit")
}

/// The subject a token claims, without checking its signature: what
/// authentication failures are counted under.
pub fn unverified_subject(token: &str) -> Option<String> {
    let claims = unverified_claims(token)?;
    claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A token's claims without checking its signature (to tell the kinds apart).
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JWT error as a person reads it.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired".to_string(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_string(),
        ErrorKind::InvalidSignature => "its signature does not verify".to_string(),
        ErrorKind::InvalidIssuer => "its issuer (iss) is not the one configured".to_string(),
        ErrorKind::InvalidAudience => "its audience (aud) is not the one configured".to_string(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim:?} claim"),
        ErrorKind::InvalidToken => {
            "it is not a JWT (three base64url parts separated by dots)".to_string()
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let secret = "0123456789abcdef0123456789abcdef";
        let (provider, _dir) = provider(secret);
        let now = chrono::Utc::now().timestamp();
        let early = json!({"sub": "carol", "iss": "https://idp.example", "exp": now + 7200, "nbf": now + 3600,
                           "trimatch_tenants": "*"});
        let error = provider.verify(&token(secret, early)).unwrap_err();
        assert!(error.to_string().contains("not valid yet"), "{error}");
    }

    #[test]
    fn a_token_with_critical_extensions_is_refused() {
        let secret = "0123456789abcdef0123456789abcdef";
        let (provider, _dir) = provider(secret);
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"sub": "carol", "iss": "https://idp.example", "exp": now + 600,
                            "trimatch_tenants": "*"});
        assert!(provider.verify(&token(secret, claims.clone())).is_ok());
        // The same claims and key, with `crit` in a header we sign by hand.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"HS256","typ":"JWT","crit":["exp-ext"],"exp-ext":1}"#);
        let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
        let signing_input = format!("{header}.{payload}");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            signing_input.as_bytes(),
        );
        let critical = format!("{signing_input}.{}", b64.encode(tag.as_ref()));
        let error = provider.verify(&critical).unwrap_err();
        assert!(error.to_string().contains("critical extensions"), "{error}");
    }

    #[test]
    fn a_changed_jwks_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, r#"{"keys": []}"#).unwrap();
        let file = JwksFile::new(path.clone()).unwrap();
        assert!(file.keys().keys.is_empty());
        let jwk =
            r#"{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#;
        std::fs::write(&path, jwk).unwrap();
        file.state.lock().unwrap().checked -= JWKS_CHECK_INTERVAL;
        assert_eq!(file.keys().keys.len(), 1, "the new key is read");
        std::fs::write(&path, "not json, and longer than before").unwrap();
        file.state.lock().unwrap().checked -= JWKS_CHECK_INTERVAL;
        assert_eq!(file.keys().keys.len(), 1, "a broken file keeps the keys");
    }

    fn provider(secret: &str) -> (IdentityProvider, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, secret).unwrap();
        let config = JwtConfig {
            hs256_secret_file: Some(path),
            issuer: Some("https://idp.example".to_string()),
            tenant_claim: "trimatch_tenants".to_string(),
            role_claim: "trimatch_role".to_string(),
            ..JwtConfig::default()
        };
        (IdentityProvider::new(config).unwrap(), dir)
    }

    fn token(secret: &str, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn identity_provider_tokens_give_their_claims_scope_and_expired_or_forged_ones_are_refused() {
        let secret = "0123456789abcdef0123456789abcdef";
        let (provider, _dir) = provider(secret);
        let now = chrono::Utc::now().timestamp();
        let claims = |exp: i64| {
            json!({"sub": "carol", "iss": "https://idp.example", "exp": exp,
                   "trimatch_tenants": ["acme"], "trimatch_role": "reader"})
        };
        let principal = provider.verify(&token(secret, claims(now + 300))).unwrap();
        assert_eq!(principal.name, "carol");
        assert_eq!(
            principal.tenants,
            TenantScope::from_list(&["acme"]).unwrap()
        );
        let expired = provider
            .verify(&token(secret, claims(now - 3600)))
            .unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
        let forged = provider
            .verify(&token(
                "another secret of at least 32 bytes!!",
                claims(now + 300),
            ))
            .unwrap_err();
        assert!(
            forged.to_string().contains("signature does not verify"),
            "{forged}"
        );
        let mut wrong_issuer = claims(now + 300);
        wrong_issuer["iss"] = json!("https://evil.example");
        assert!(provider
            .verify(&token(secret, wrong_issuer))
            .unwrap_err()
            .to_string()
            .contains("issuer"));
        let mut no_scope = claims(now + 300);
        no_scope.as_object_mut().unwrap().remove("trimatch_tenants");
        assert!(provider
            .verify(&token(secret, no_scope))
            .unwrap_err()
            .to_string()
            .contains("\"trimatch_tenants\""));
    }

    #[test]
    fn sessions_verify_only_with_their_key() {
        let now = chrono::Utc::now().timestamp();
        let principal = Principal {
            name: "alice".to_string(),
            role: Role::Admin,
            tenants: TenantScope::All,
            cluster: false,
            expires_at: Some(now + 30),
            token_id: Some("0a1b2c3d".to_string()),
        };
        let sessions = Sessions::new(Some("cluster secret"), Duration::from_secs(60));
        let token = sessions.issue(&principal).unwrap();
        assert!(Sessions::is_session_token(&token));
        let session = sessions.verify(&token).unwrap();
        assert_eq!(
            session, principal,
            "the credential's end (30 s) comes before the TTL's (60 s)"
        );
        let renewed = sessions.verify(&sessions.issue(&session).unwrap()).unwrap();
        assert_eq!(
            renewed.expires_at, principal.expires_at,
            "a session renewed from a session ends no later"
        );
        let same_cluster = Sessions::new(Some("cluster secret"), Duration::from_secs(60));
        assert_eq!(same_cluster.verify(&token).unwrap(), principal);
        let elsewhere = Sessions::new(None, Duration::from_secs(60));
        assert!(elsewhere.verify(&token).is_err());
    }
}
