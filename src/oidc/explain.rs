//! What the sign-in page says, in French and English, when it refuses an address or cannot
//! go on: one table from each refusal to its two sentences, so every refusal the parser,
//! the policy or the challenge service can give has an explanation (tested below).

use crate::challenge::CreateError;
use crate::reason::Reason;

/// One explanation in both languages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub fr: &'static str,
    pub en: &'static str,
}

const fn ex(fr: &'static str, en: &'static str) -> Explanation {
    Explanation { fr, en }
}

/// Parser details (`address.rs`) with their own sentence; every other detail gets
/// [`MALFORMED`].
const DETAILS: &[(&str, Explanation)] = &[
    (
        "empty",
        ex(
            "Saisissez votre adresse électronique professionnelle.",
            "Type your work email address.",
        ),
    ),
    (
        "two_at",
        ex(
            "Une adresse ne contient qu'un seul « @ ».",
            "An address contains exactly one \"@\".",
        ),
    ),
    (
        "no_at",
        ex(
            "Il manque le « @ » et le domaine, par exemple prenom.nom@interieur.gouv.fr.",
            "The \"@\" and the domain are missing, for example first.last@interieur.gouv.fr.",
        ),
    ),
    (
        "whitespace",
        ex(
            "Une adresse ne contient pas d'espace.",
            "An address contains no spaces.",
        ),
    ),
    (
        "non_ascii",
        ex(
            "Seuls les caractères sans accent sont acceptés (a-z, 0-9, point, tiret).",
            "Only characters without accents are accepted (a-z, 0-9, dot, hyphen).",
        ),
    ),
    (
        "list",
        ex("Saisissez une seule adresse.", "Type a single address."),
    ),
    (
        "length",
        ex(
            "Cette adresse est trop longue.",
            "This address is too long.",
        ),
    ),
    (
        "ip_literal",
        ex(
            "Le domaine doit être un nom, pas une adresse IP.",
            "The domain must be a name, not an IP address.",
        ),
    ),
];

/// Any other parser refusal.
pub const MALFORMED: Explanation = ex(
    "Cette adresse n'est pas une adresse électronique valide.",
    "This is not a valid email address.",
);

/// Outside `policy.allowed_domains` (or the client's narrower list).
pub const DOMAIN_NOT_ALLOWED: Explanation = ex(
    "Cette adresse n'appartient pas à un domaine accepté par ce service. Utilisez votre adresse professionnelle de l'administration.",
    "This address is not in a domain this service accepts. Use your work address in the administration.",
);

pub const RATE_LIMITED: Explanation = ex(
    "Trop de demandes pour cette adresse. Réessayez dans une heure, ou répondez au message déjà reçu.",
    "Too many requests for this address. Try again in an hour, or reply to the message you already received.",
);

pub const UNAVAILABLE: Explanation = ex(
    "Le service est momentanément indisponible. Réessayez dans quelques minutes.",
    "The service is temporarily unavailable. Try again in a few minutes.",
);

/// The sentence for a refused address or a failed challenge.
pub fn create_error(e: &CreateError) -> Explanation {
    match e {
        CreateError::Refused {
            detail: Some(d), ..
        } => DETAILS
            .iter()
            .find(|(k, _)| k == d)
            .map(|(_, x)| *x)
            .unwrap_or(MALFORMED),
        CreateError::Refused { reason, .. } if *reason == Reason::DomainNotAllowed => {
            DOMAIN_NOT_ALLOWED
        }
        CreateError::Refused { .. } => MALFORMED,
        CreateError::RateLimited => RATE_LIMITED,
        CreateError::Outbound(_) | CreateError::Store(_) | CreateError::Rng(_) => UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_explained_in_both_languages() {
        let cases = [
            CreateError::Refused {
                reason: Reason::EnvelopeSyntax,
                detail: Some("two_at"),
            },
            CreateError::Refused {
                reason: Reason::EnvelopeSyntax,
                detail: Some("percent_hack"),
            },
            CreateError::Refused {
                reason: Reason::DomainNotAllowed,
                detail: None,
            },
            CreateError::RateLimited,
            CreateError::Outbound("x".into()),
        ];
        let want = [
            DETAILS[1].1,
            MALFORMED,
            DOMAIN_NOT_ALLOWED,
            RATE_LIMITED,
            UNAVAILABLE,
        ];
        for (e, w) in cases.iter().zip(want) {
            assert_eq!(create_error(e), w, "{e}");
        }
        for (_, x) in DETAILS {
            assert!(!x.fr.is_empty() && !x.en.is_empty());
            assert_ne!(x.fr, x.en);
        }
    }
}
