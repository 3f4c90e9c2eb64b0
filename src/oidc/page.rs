//! The sign-in pages (askama templates under `templates/oidc/`, HTML-escaped) and the
//! security headers every answer of the provider carries.
//!
//! Headers: a CSP with no inline script or style (`script-src 'self'`, `style-src 'self'`),
//! `frame-ancestors 'none'` and `X-Frame-Options: DENY` (no clickjacking of the form),
//! `form-action 'self'`, `Referrer-Policy: no-referrer` (the redirect carrying the code
//! leaks nothing to a third party, and the page URL leaks nothing to the relying party),
//! `nosniff`, `Cache-Control: no-store` (a shared cache must never keep a page with a
//! session code), and HSTS when the issuer is https.

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::explain::Explanation;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Add the security headers to an answer.
pub fn secure_headers(headers: &mut HeaderMap, https: bool) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
        set(headers, header::PRAGMA, "no-cache");
    }
    if https {
        set(
            headers,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000",
        );
    }
}

/// The fields every page has (`base.html`).
pub struct Frame<'a> {
    /// The issuer's path (`""` or `/oidc`): links and assets are under it.
    pub base: &'a str,
    pub service: &'a str,
}

#[derive(Template)]
#[template(path = "oidc/address.html")]
pub struct AddressPage<'a> {
    pub base: &'a str,
    pub service: &'a str,
    pub title_fr: &'a str,
    pub client_name: &'a str,
    pub flow: &'a str,
    pub csrf: &'a str,
    pub typed: &'a str,
    pub error: Option<Explanation>,
    pub expired: bool,
}

#[derive(Template)]
#[template(path = "oidc/pending.html")]
pub struct PendingPage<'a> {
    pub base: &'a str,
    pub service: &'a str,
    pub title_fr: &'a str,
    pub flow: &'a str,
    pub csrf: &'a str,
    pub address: &'a str,
    pub code: &'a str,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "oidc/message.html")]
pub struct MessagePage<'a> {
    pub base: &'a str,
    pub service: &'a str,
    pub title_fr: &'a str,
    pub title_en: &'a str,
    pub body_fr: &'a str,
    pub body_en: &'a str,
    /// DSFR alert kind: `error`, `warning`, `info`, `success`.
    pub severity: &'a str,
}

/// The closed set of message pages, each with its status and both languages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    UnknownClient,
    BadRedirectUri,
    UnknownFlow,
    OtherBrowser,
    Csrf,
    FlowExpired,
    Finished,
    Unavailable,
    NotFound,
}

impl Message {
    /// (status, severity, title fr, title en, body fr, body en)
    fn text(
        self,
    ) -> (
        StatusCode,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        match self {
            Message::UnknownClient => (
                StatusCode::BAD_REQUEST,
                "error",
                "Service inconnu",
                "Unknown service",
                "Le service qui vous a envoyé ici n'est pas enregistré auprès de ce fournisseur d'identité. Vous n'avez pas été redirigé.",
                "The service that sent you here is not registered with this identity provider. You have not been redirected.",
            ),
            Message::BadRedirectUri => (
                StatusCode::BAD_REQUEST,
                "error",
                "Adresse de retour refusée",
                "Return address refused",
                "L'adresse de retour demandée ne correspond pas à celles enregistrées pour ce service. Par sécurité, vous n'avez pas été redirigé.",
                "The requested return address does not match those registered for this service. For your safety, you have not been redirected.",
            ),
            Message::UnknownFlow => (
                StatusCode::NOT_FOUND,
                "error",
                "Connexion introuvable",
                "Sign-in not found",
                "Cette connexion n'existe pas ou plus. Retournez sur le service pour recommencer.",
                "This sign-in does not exist or no longer exists. Go back to the service to start again.",
            ),
            Message::OtherBrowser => (
                StatusCode::FORBIDDEN,
                "error",
                "Connexion commencée ailleurs",
                "Sign-in started elsewhere",
                "Cette connexion a été commencée dans un autre navigateur. Pour votre sécurité, terminez-la dans le navigateur où vous l'avez commencée, ou recommencez depuis le service.",
                "This sign-in was started in another browser. For your safety, finish it in the browser where you started it, or start again from the service.",
            ),
            Message::Csrf => (
                StatusCode::FORBIDDEN,
                "error",
                "Formulaire refusé",
                "Form refused",
                "Ce formulaire n'a pas été envoyé depuis cette page. Rechargez la page et recommencez.",
                "This form was not sent from this page. Reload the page and try again.",
            ),
            Message::FlowExpired => (
                StatusCode::OK,
                "warning",
                "Connexion expirée",
                "Sign-in expired",
                "Le délai de cette connexion est dépassé. Retournez sur le service pour recommencer.",
                "This sign-in has timed out. Go back to the service to start again.",
            ),
            Message::Finished => (
                StatusCode::OK,
                "success",
                "Connexion terminée",
                "Sign-in complete",
                "Votre adresse est confirmée et le service a été informé. Vous pouvez fermer cet onglet.",
                "Your address is confirmed and the service has been told. You can close this tab.",
            ),
            Message::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "error",
                "Service indisponible",
                "Service unavailable",
                "Le service est momentanément indisponible. Réessayez dans quelques minutes.",
                "The service is temporarily unavailable. Try again in a few minutes.",
            ),
            Message::NotFound => (
                StatusCode::NOT_FOUND,
                "error",
                "Page introuvable",
                "Page not found",
                "Cette page n'existe pas.",
                "This page does not exist.",
            ),
        }
    }

    pub fn render(self, frame: &Frame<'_>) -> Response {
        let (status, severity, title_fr, title_en, body_fr, body_en) = self.text();
        let page = MessagePage {
            base: frame.base,
            service: frame.service,
            title_fr,
            title_en,
            body_fr,
            body_en,
            severity,
        };
        html(status, page.render())
    }
}

/// An HTML answer, or a plain 500 if the template failed (it cannot, short of a bug).
pub fn html(status: StatusCode, rendered: askama::Result<String>) -> Response {
    match rendered {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "sign-in page template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ALL: &[Message] = &[
        Message::UnknownClient,
        Message::BadRedirectUri,
        Message::UnknownFlow,
        Message::OtherBrowser,
        Message::Csrf,
        Message::FlowExpired,
        Message::Finished,
        Message::Unavailable,
        Message::NotFound,
    ];

    #[test]
    fn every_message_has_both_languages_and_escapes() {
        for m in ALL {
            let (_, _, tf, te, bf, be) = m.text();
            assert!(![tf, te, bf, be].iter().any(|s| s.is_empty()), "{m:?}");
            assert_ne!(bf, be);
        }
        let page = AddressPage {
            base: "",
            service: "gatekeeper",
            title_fr: "Connexion",
            client_name: "<script>x</script>",
            flow: "f",
            csrf: "c",
            typed: "\"><img src=x>",
            error: None,
            expired: false,
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>x"));
        assert!(!page.contains("\"><img"));
        assert!(!page.contains("<script>"), "no inline script");
    }

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        secure_headers(&mut h, true);
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "no-referrer");
        assert!(h.contains_key(header::STRICT_TRANSPORT_SECURITY));
    }
}
