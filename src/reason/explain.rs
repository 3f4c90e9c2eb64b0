//! What a refusal means for the person whose reply was refused, in French and English
//! (SPEC §4 "Explanations"): one row per reason code, in plain words, with what the person
//! can do. The SMTP session quotes both lines in every refusal after MAIL (the bounce the
//! person's own mail server writes carries them), and `GET /v1/challenges/{id}` shows them
//! as `last_rejection.explanation`.
//!
//! The lines are SMTP reply text, so they are printable US-ASCII (RFC 5321 §4.2
//! `textstring`; gatekeeper does not offer SMTPUTF8): the French is written without
//! accents rather than risk a reply some relay mangles or refuses. No line names the token
//! or the session code: the reply is read by whoever gets the bounce.

use super::Reason;

/// One explanation in both languages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub fr: &'static str,
    pub en: &'static str,
}

const fn ex(fr: &'static str, en: &'static str) -> Explanation {
    Explanation { fr, en }
}

impl Reason {
    /// The French and English explanation of this reason (SPEC §4 "Explanations").
    pub fn explanation(self) -> Explanation {
        use Reason::*;
        match self {
            ConnLimit => ex(
                "Le service est tres sollicite ; votre serveur de messagerie reessaiera automatiquement.",
                "The service is busy; your mail server will try again on its own.",
            ),
            ClientNetwork => ex(
                "Votre serveur de messagerie n'est pas autorise a joindre ce service : contactez votre service informatique.",
                "Your mail server is not allowed to reach this service: contact your IT department.",
            ),
            EnvelopeSyntax => ex(
                "L'adresse d'expedition utilisee par votre serveur n'est pas une adresse simple : contactez votre service informatique.",
                "The sender address your mail server used is not a plain address: contact your IT department.",
            ),
            EnvelopeNullSender => ex(
                "Ce message a ete envoye sans expediteur (message automatique) : repondez vous-meme au message de confirmation.",
                "This message was sent without a sender (an automatic message): reply to the confirmation message yourself.",
            ),
            DomainNotAllowed => ex(
                "Votre domaine de messagerie n'est pas accepte par ce service : utilisez votre adresse professionnelle.",
                "Your mail domain is not accepted by this service: use your work address.",
            ),
            TlsRequired => ex(
                "Votre serveur de messagerie doit chiffrer la connexion (STARTTLS) : contactez votre service informatique.",
                "Your mail server must encrypt the connection (STARTTLS): contact your IT department.",
            ),
            RcptUnknown => ex(
                "L'adresse de destination n'existe pas : repondez directement au message de confirmation recu.",
                "The destination address does not exist: reply directly to the confirmation message you received.",
            ),
            TokenUnknown => ex(
                "Cette adresse de confirmation est inconnue : repondez au dernier message de confirmation recu, sans modifier le destinataire.",
                "This confirmation address is unknown: reply to the latest confirmation message, without changing the recipient.",
            ),
            TokenExpired => ex(
                "Le delai pour confirmer est depasse : recommencez la demande pour recevoir un nouveau message.",
                "The time to confirm has run out: start the request again to receive a new message.",
            ),
            TokenUsed => ex(
                "Cette confirmation a deja ete utilisee : recommencez la demande si besoin.",
                "This confirmation was already used: start the request again if you need to.",
            ),
            RcptTooMany => ex(
                "Envoyez votre reponse a la seule adresse de confirmation, sans autre destinataire.",
                "Send your reply to the confirmation address only, with no other recipient.",
            ),
            SmtpBareLf
            | SmtpBareCr
            | SmtpNul
            | SmtpPipelinedStarttls
            | SmtpSyntax
            | SmtpUnknownCommand
            | SmtpBadSequence
            | SmtpLineTooLong => ex(
                "Votre serveur de messagerie a envoye une commande incorrecte : contactez votre service informatique.",
                "Your mail server sent an incorrect command: contact your IT department.",
            ),
            SmtpTooManyErrors => ex(
                "Trop d'erreurs dans cette connexion : contactez votre service informatique.",
                "Too many errors in this connection: contact your IT department.",
            ),
            SmtpTooManyTransactions => ex(
                "Trop de messages dans une seule connexion ; votre serveur reessaiera automatiquement.",
                "Too many messages in one connection; your mail server will try again on its own.",
            ),
            SmtpTimeout => ex(
                "La connexion a ete trop lente ; votre serveur de messagerie reessaiera automatiquement.",
                "The connection was too slow; your mail server will try again on its own.",
            ),
            SmtpShutdown => ex(
                "Le service redemarre ; votre serveur de messagerie reessaiera automatiquement.",
                "The service is restarting; your mail server will try again on its own.",
            ),
            SmtpBusy => ex(
                "Le service recoit trop de messages en meme temps ; votre serveur de messagerie reessaiera automatiquement.",
                "The service is receiving too many messages at once; your mail server will try again on its own.",
            ),
            MessageTooLarge => ex(
                "Votre reponse est trop volumineuse : repondez sans piece jointe.",
                "Your reply is too large: reply without attachments.",
            ),
            HeaderMalformed | HeaderDuplicate => ex(
                "L'en-tete de votre message est mal forme : repondez depuis votre messagerie habituelle, sans outil de transfert.",
                "Your message's header is malformed: reply from your usual mail program, without a forwarding tool.",
            ),
            HeaderFromCount | HeaderFromSyntax => ex(
                "L'expediteur de votre message doit etre votre seule adresse : repondez depuis votre messagerie habituelle.",
                "Your message's sender must be your one address: reply from your usual mail program.",
            ),
            HeaderSenderMismatch => ex(
                "Ce message a ete envoye au nom de quelqu'un d'autre (delegation) : repondez depuis votre propre boite.",
                "This message was sent on someone else's behalf (delegation): reply from your own mailbox.",
            ),
            HeaderResent => ex(
                "Un message transfere ne peut pas confirmer : repondez directement au message de confirmation.",
                "A forwarded message cannot confirm: reply directly to the confirmation message.",
            ),
            EnvelopeMismatch => ex(
                "Votre serveur a envoye le message sous une autre adresse que la votre : contactez votre service informatique.",
                "Your mail server sent the message under another address than yours: contact your IT department.",
            ),
            SpfFail | SpfSoftfail | SpfNeutral | SpfNone | SpfPermerror => ex(
                "Le serveur qui a envoye votre message n'est pas declare par votre domaine (SPF) : contactez votre service informatique.",
                "The server that sent your message is not listed by your domain (SPF): contact your IT department.",
            ),
            DkimNone | DkimFail | DkimPartial | DkimFromUnsigned => ex(
                "Votre serveur de messagerie n'a pas signe ce message (DKIM) : contactez votre service informatique.",
                "Your mail server did not sign this message (DKIM): contact your IT department.",
            ),
            DkimUnaligned => ex(
                "Votre message est signe (DKIM) au nom d'un autre domaine que le votre : contactez votre service informatique.",
                "Your message is signed (DKIM) for another domain than yours: contact your IT department.",
            ),
            DkimWeak | DkimTesting => ex(
                "La signature DKIM de votre domaine est trop faible ou en test : contactez votre service informatique.",
                "Your domain's DKIM signature is too weak or in testing mode: contact your IT department.",
            ),
            IprevFail => ex(
                "Le nom du serveur qui a envoye votre message ne correspond pas a son adresse : contactez votre service informatique.",
                "The name of the server that sent your message does not match its address: contact your IT department.",
            ),
            DateStale => ex(
                "La date de votre message est trop ancienne ou dans le futur : verifiez l'heure de votre poste et repondez de nouveau.",
                "Your message's date is too old or in the future: check your computer's clock and reply again.",
            ),
            BindingMismatch => ex(
                "Vous avez repondu depuis une autre adresse que celle a confirmer : repondez depuis cette adresse.",
                "You replied from another address than the one to confirm: reply from that address.",
            ),
            BindingTokenUnsigned | BindingNotAReply => ex(
                "Ce message n'est pas une reponse au message de confirmation : utilisez Repondre sur ce message.",
                "This message is not a reply to the confirmation message: use Reply on that message.",
            ),
            BindingSessionCode => ex(
                "Le code affiche a l'ecran manque dans votre reponse : recopiez-le dans le texte et repondez de nouveau.",
                "The code shown on screen is missing from your reply: copy it into the text and reply again.",
            ),
            MessageAutoSubmitted => ex(
                "Une reponse automatique (absence, regle) ne peut pas confirmer : repondez vous-meme au message.",
                "An automatic reply (out of office, rule) cannot confirm: reply to the message yourself.",
            ),
            MessageReport => ex(
                "Un accuse de lecture ou de remise ne peut pas confirmer : repondez vous-meme au message.",
                "A read or delivery receipt cannot confirm: reply to the message yourself.",
            ),
            DnsTemperror | SpfTemperror | DkimTemperror => ex(
                "Les informations de votre domaine n'ont pas pu etre lues pour l'instant ; votre serveur reessaiera automatiquement.",
                "Your domain's records could not be read for now; your mail server will try again on its own.",
            ),
            StoreUnavailable | OutboundUnavailable => ex(
                "Le service rencontre un incident temporaire ; votre serveur reessaiera automatiquement.",
                "The service has a temporary fault; your mail server will try again on its own.",
            ),
            ChallengeRateLimited => ex(
                "Trop de demandes pour cette adresse : attendez un moment avant de recommencer.",
                "Too many requests for this address: wait a while before trying again.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including its CRLF.
    const MAX_REPLY_LINE: usize = 512;

    /// Every reason has both lines, in printable ASCII, that fit an SMTP reply line with
    /// the longest prefix the session writes (`550-5.7.23 FR: `), and say what to do.
    #[test]
    fn every_reason_is_explained_in_both_languages_within_smtp_limits() {
        for r in Reason::ALL {
            let e = r.explanation();
            let reply = r.reply();
            for (lang, line) in [("FR", e.fr), ("EN", e.en)] {
                assert!(line.len() > 20, "{r} {lang} too short: {line:?}");
                assert!(
                    line.bytes().all(|b| (32..=126).contains(&b)),
                    "{r} {lang} not printable ASCII: {line:?}"
                );
                let wire = format!("{}-{} {lang}: {line}\r\n", reply.code, reply.enhanced);
                assert!(
                    wire.len() <= MAX_REPLY_LINE,
                    "{r} {lang}: {} octets",
                    wire.len()
                );
                // Plain words: no placeholder, no reason code, no protocol jargon beyond the
                // names of the mechanisms a helpdesk will look up.
                assert!(!line.contains('{') && !line.contains('}'), "{r} {lang}");
                assert!(!line.contains(r.as_str()), "{r} {lang} names its code");
            }
            assert_ne!(e.fr, e.en, "{r}: both lines the same");
        }
    }

    #[test]
    fn rows() {
        let rows: &[(Reason, &str, &str)] = &[
            (
                Reason::DkimNone,
                "n'a pas signe ce message (DKIM)",
                "did not sign this message (DKIM)",
            ),
            (
                Reason::BindingSessionCode,
                "code affiche",
                "code shown on screen",
            ),
            (
                Reason::MessageAutoSubmitted,
                "reponse automatique",
                "automatic reply",
            ),
            (Reason::DnsTemperror, "reessaiera", "try again on its own"),
        ];
        for (r, fr, en) in rows {
            let e = r.explanation();
            assert!(e.fr.contains(fr), "{r}: {}", e.fr);
            assert!(e.en.contains(en), "{r}: {}", e.en);
        }
    }
}
