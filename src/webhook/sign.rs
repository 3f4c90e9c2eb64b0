//! The Standard Webhooks signature: `v1,` and the base64 of HMAC-SHA256(secret,
//! `"{webhook-id}.{webhook-timestamp}.{body}"`), the secret being the bytes after `whsec_`
//! (ring's HMAC; nothing hand-rolled).

use crate::config::WebhookSecret;

/// The `webhook-signature` header value for one attempt.
pub fn signature(secret: &WebhookSecret, id: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    format!("v1,{}", data_encoding::BASE64.encode(ctx.sign().as_ref()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference libraries'
    /// tests): this secret, id, timestamp and body give this signature.
    #[test]
    fn the_specification_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let table: &[(&str, i64, &str, &str)] = &[(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )];
        for (id, ts, body, want) in table {
            assert_eq!(signature(&secret, id, *ts, body), *want);
        }
    }
}
