//! The OAuth 2.0 / OpenID Connect error codes the provider answers with: one closed table
//! from code to HTTP status and where the RFC defines it, like `reason.rs` for SMTP. A code
//! that is not in this table cannot be sent.

use axum::http::StatusCode;

macro_rules! oauth_errors {
    ($( $variant:ident => $code:literal, $status:ident, $rfc:literal; )*) => {
        /// An error code as the RFCs spell it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum OAuthError {
            $( #[doc = $rfc] $variant, )*
        }

        impl OAuthError {
            /// Every code, in table order.
            pub const ALL: &'static [OAuthError] = &[$(OAuthError::$variant,)*];

            /// The `error` value.
            pub fn as_str(self) -> &'static str {
                match self { $(OAuthError::$variant => $code,)* }
            }

            /// The HTTP status of a JSON error answer (`/token`, `/userinfo`); redirected
            /// errors of `/authorize` travel in the redirect URI instead.
            pub fn status(self) -> StatusCode {
                match self { $(OAuthError::$variant => StatusCode::$status,)* }
            }

            /// Where the code is defined.
            pub fn rfc(self) -> &'static str {
                match self { $(OAuthError::$variant => $rfc,)* }
            }
        }
    };
}

oauth_errors! {
    // RFC 6749 §4.1.2.1 (authorization endpoint, sent to the redirect URI) and §5.2 (token).
    InvalidRequest => "invalid_request", BAD_REQUEST, "RFC 6749 §4.1.2.1, §5.2";
    UnauthorizedClient => "unauthorized_client", BAD_REQUEST, "RFC 6749 §4.1.2.1, §5.2";
    AccessDenied => "access_denied", FORBIDDEN, "RFC 6749 §4.1.2.1";
    UnsupportedResponseType => "unsupported_response_type", BAD_REQUEST, "RFC 6749 §4.1.2.1";
    InvalidScope => "invalid_scope", BAD_REQUEST, "RFC 6749 §4.1.2.1, §5.2";
    ServerError => "server_error", INTERNAL_SERVER_ERROR, "RFC 6749 §4.1.2.1";
    TemporarilyUnavailable => "temporarily_unavailable", SERVICE_UNAVAILABLE, "RFC 6749 §4.1.2.1";
    // RFC 6749 §5.2: `invalid_client` is 401 (with WWW-Authenticate when Basic was tried).
    InvalidClient => "invalid_client", UNAUTHORIZED, "RFC 6749 §5.2";
    InvalidGrant => "invalid_grant", BAD_REQUEST, "RFC 6749 §5.2";
    UnsupportedGrantType => "unsupported_grant_type", BAD_REQUEST, "RFC 6749 §5.2";
    // OpenID Connect Core §3.1.2.6.
    LoginRequired => "login_required", BAD_REQUEST, "OIDC Core §3.1.2.6";
    InteractionRequired => "interaction_required", BAD_REQUEST, "OIDC Core §3.1.2.6";
    RequestNotSupported => "request_not_supported", BAD_REQUEST, "OIDC Core §3.1.2.6";
    RequestUriNotSupported => "request_uri_not_supported", BAD_REQUEST, "OIDC Core §3.1.2.6";
    RegistrationNotSupported => "registration_not_supported", BAD_REQUEST, "OIDC Core §3.1.2.6";
    // RFC 6750 §3.1 (the bearer token of `/userinfo`).
    InvalidToken => "invalid_token", UNAUTHORIZED, "RFC 6750 §3.1";
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_spelled_as_the_rfcs() {
        for e in OAuthError::ALL {
            let s = e.as_str();
            // RFC 6749 §A.7: error = 1*NQSCHAR; all registered codes are lower snake case.
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(e.status().is_client_error() || e.status().is_server_error());
            assert!(e.rfc().starts_with("RFC") || e.rfc().starts_with("OIDC"));
        }
        let rows: &[(OAuthError, &str, u16)] = &[
            (OAuthError::InvalidClient, "invalid_client", 401),
            (OAuthError::InvalidGrant, "invalid_grant", 400),
            (OAuthError::InvalidRequest, "invalid_request", 400),
            (
                OAuthError::UnsupportedGrantType,
                "unsupported_grant_type",
                400,
            ),
            (OAuthError::InvalidToken, "invalid_token", 401),
            (OAuthError::AccessDenied, "access_denied", 403),
        ];
        for (e, code, status) in rows {
            assert_eq!(e.as_str(), *code);
            assert_eq!(e.status().as_u16(), *status);
        }
    }
}
