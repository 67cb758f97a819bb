//! The `authorization` header read into the credentials it carries, before
//! anything is verified: `Basic base64(name:token)` or `Bearer <token>`.
//! Verifying is the authenticator's; what the credentials *claim* (a token
//! id, a Basic name, a JWT's subject, never the secret) is also what the
//! failure limiter counts under.

use base64::Engine as _;
use tonic::metadata::MetadataMap;

use super::{jwt, tokens, AuthError};

/// What a call presents.
pub(super) enum Credentials {
    Basic { name: String, token: String },
    Bearer(String),
}

impl Credentials {
    /// The credentials of a call's `authorization` header. What was sent is
    /// never echoed whole in an error: it may be a secret without its scheme.
    pub fn parse(metadata: &MetadataMap) -> Result<Credentials, AuthError> {
        let header = metadata
            .get("authorization")
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::UnknownScheme("a value that is not ASCII".to_string()))?
            .trim();
        let Some((scheme, credentials)) = header.split_once(' ') else {
            return Err(AuthError::UnknownScheme(
                "a value without a scheme".to_string(),
            ));
        };
        let credentials = credentials.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => basic(credentials),
            "bearer" => Ok(Credentials::Bearer(credentials.to_string())),
            other if other.len() <= 16 && other.chars().all(|c| c.is_ascii_alphabetic()) => {
                Err(AuthError::UnknownScheme(format!("the scheme {other:?}")))
            }
            _ => Err(AuthError::UnknownScheme("an unknown scheme".to_string())),
        }
    }

    /// Who these credentials say they are: an API token's id, a Basic
    /// name, a JWT's or session's subject.
    pub fn claimed(&self) -> String {
        match self {
            Credentials::Basic { name, .. } => format!("basic:{name}"),
            Credentials::Bearer(token) => match token
                .strip_prefix(tokens::PREFIX)
                .and_then(|rest| rest.split('_').next())
            {
                Some(id) => format!("token:{id}"),
                None => jwt::unverified_subject(token)
                    .map(|subject| format!("subject:{subject}"))
                    .unwrap_or_else(|| "bearer".to_string()),
            },
        }
    }
}

/// What a call's credentials claim, or what they are when unreadable.
pub(super) fn claimed_identity(metadata: &MetadataMap) -> String {
    match Credentials::parse(metadata) {
        Ok(credentials) => credentials.claimed(),
        Err(AuthError::Missing) => "no credentials".to_string(),
        Err(_) => "unreadable credentials".to_string(),
    }
}

/// `base64(name:token)`; the padding may be left out (Go clients, ADBC
/// among them, omit it).
fn basic(credentials: &str) -> Result<Credentials, AuthError> {
    let bytes = base64_any_padding()
        .decode(credentials)
        .map_err(|error| AuthError::BadBasic(error.to_string()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| AuthError::BadBasic("not UTF-8".to_string()))?;
    let (name, token) = text
        .split_once(':')
        .ok_or_else(|| AuthError::BadBasic("no ':' between name and token".to_string()))?;
    Ok(Credentials::Basic {
        name: name.to_string(),
        token: token.to_string(),
    })
}

/// Standard base64 that accepts input with or without its `=` padding.
pub fn base64_any_padding() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}
