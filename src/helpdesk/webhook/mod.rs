//! The signed webhook connector (`kind = "webhook"`): one JSON POST per finished call, signed as
//! the Standard Webhooks specification says, for the systems no vendor integrates with.
//!
//! - Headers: `webhook-id` (`msg_` and a hash of the delivery's id: the same on every retry, so
//!   a receiver drops repeats, and free of anything an admin typed), `webhook-timestamp` (Unix
//!   seconds of the moment the attempt leaves, taken after any wait for the rate limit) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The secret is
//!   `whsec_` followed by the base64 of 24 to 64 random bytes, the form the specification's
//!   libraries read; several secrets (one per line) sign each request with each, so a
//!   receiver's secret can be rotated without losing a call.
//! - The body ([`payload`]) is built once, saved before it is first sent, and every retry sends
//!   those very bytes; only the timestamp and signature are new. A voicemail's signed link is
//!   made then (it works for `[media] link_lifetime` from the first attempt); with
//!   `inline_audio = true` the recording itself goes in the body too (base64, about 1.4 times
//!   the WAV: some 2 MB a minute), and is saved with it — up to [`MAX_INLINE_AUDIO`] (10 MB of
//!   WAV, about 10 minutes): a larger recording is left out, the payload saying so
//!   (`audio_omitted: "too_large"`, with its size) beside its length and link, and the log
//!   warns. The cap keeps one body, held in memory and in the database, reasonable.
//! - Any 2xx is success, whatever the body. 410 (the receiver says the endpoint is gone) and 413
//!   (the payload is too large for it) fail the delivery at once; everything else — a 400 or
//!   401 while a receiver deploys or rotates its secret, 404, 429, 5xx, timeouts, no
//!   connection — is retried through the outbox until `give_up_after` (three days by default,
//!   as the specification's schedule suggests). A redirect fails the delivery (it is not
//!   followed: the URL must be the receiver's own).

pub mod payload;

use std::time::Duration;

use base64::Engine;
use base64::alphabet::STANDARD as ALPHABET;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use reqwest::Method;
use sha2::{Digest, Sha256};

use super::http::{Credentials, Http, Vendor, error_message, no_rate_headers};
use super::{Attachable, Delivered, HelpdeskError, Job};
use crate::config::{HelpdeskSettings, Secret, WebhookSettings};
use crate::store::tags::Retag;
use crate::tickets::Rules;

/// A webhook integration.
pub struct Webhook {
    http: Http,
    name: String,
    rules: Rules,
    /// One key per secret given (several while a secret is rotated).
    keys: Vec<Vec<u8>>,
    /// Whether a voicemail's audio goes in the payload.
    inline_audio: bool,
}

/// The request a delivery saved before it was first sent: the body's very bytes, marked as a
/// webhook's so that one saved by another kind of connector is never sent.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Saved {
    Webhook { body: String },
}

/// The signing keys the secret holds: one `whsec_…` per line (or separated by spaces); `Err`
/// says what is wrong with them.
pub fn signing_keys(secret: &Secret) -> Result<Vec<Vec<u8>>, String> {
    secret
        .expose()
        .split_whitespace()
        .map(signing_key)
        .collect::<Result<Vec<_>, _>>()
}

/// The key one `whsec_…` secret holds (base64, padded or not, as the reference libraries read
/// it).
fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err("the webhook secret must start with whsec_ (generate one with: echo \"whsec_$(head -c 32 /dev/urandom | base64)\")".to_owned());
    };
    let lenient = GeneralPurpose::new(
        &ALPHABET,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let key = lenient
        .decode(encoded)
        .map_err(|e| format!("the webhook secret after whsec_ is not base64: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the webhook secret holds {} bytes; use 24 to 64 random bytes",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-id` of a delivery: stable across retries, with nothing an admin typed in it.
pub fn message_id(delivery_id: &str) -> String {
    let digest = Sha256::digest(delivery_id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// The `webhook-signature` value for one attempt: a `v1,` signature per key, space-separated.
pub fn signatures(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    keys.iter()
        .map(|key| signature(key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `v1,` signature.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The largest recording a webhook carries inline (`inline_audio`): 10 MB of WAV (some 13 MB of
/// base64), about ten minutes at 8 kHz. The body is built in memory and saved in the database
/// until it is delivered; a larger recording is left out (the payload says so).
pub const MAX_INLINE_AUDIO: u64 = 10_000_000;

impl Webhook {
    pub fn new(
        settings: &HelpdeskSettings,
        webhook: &WebhookSettings,
        secret: &Secret,
    ) -> Result<Webhook, String> {
        let keys = signing_keys(secret)?;
        let http = Http::new(
            &settings.name,
            &webhook.url,
            Vendor {
                credentials: Credentials::None,
                rate_headers: no_rate_headers,
                json_answers: false,
                pass_through: &[401, 403],
                write_weight: 1,
            },
            settings.requests_per_minute,
            settings.request_timeout,
        )?;
        Ok(Webhook {
            http,
            name: settings.name.clone(),
            rules: settings.rules.clone(),
            keys,
            inline_audio: webhook.inline_audio,
        })
    }

    /// Carries out one delivery: the saved body, or a new one saved first, signed and posted.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
        // The voicemail's link and audio are read only for a body not saved yet.
        let (link, audio) = if job.delivery.request.is_none() && job.call.voicemail.is_some() {
            let audio = if self.inline_audio {
                job.voicemail_within(MAX_INLINE_AUDIO, "the webhook's inline audio")
                    .await?
            } else {
                Attachable::None
            };
            (job.voicemail_link()?, audio)
        } else {
            (None, Attachable::None)
        };
        self.post(job, || {
            let mut body = payload::payload(&self.name, &self.rules, job.call, &job.party);
            if job.call.sms.is_none() {
                body["data"]["voicemail"] = payload::voicemail(job.call, link.as_ref(), &audio);
            }
            body
        })
        .await
    }

    /// Tags added or removed after the call: a `call.tagged` event.
    pub async fn retag(&self, job: &Job<'_>, retag: &Retag) -> Result<Delivered, HelpdeskError> {
        // When the tags changed: when the change was queued, not when it could be sent.
        self.post(job, || {
            payload::tagged(&self.name, job.call, retag, job.delivery.created_at)
        })
        .await
    }

    /// Posts the delivery's saved body, or `build`'s saved first, signed.
    async fn post(
        &self,
        job: &Job<'_>,
        build: impl FnOnce() -> serde_json::Value,
    ) -> Result<Delivered, HelpdeskError> {
        let saved = job
            .delivery
            .request
            .as_deref()
            .and_then(|text| match serde_json::from_str::<Saved>(text) {
                Ok(Saved::Webhook { body }) => Some(body),
                // Saved by another kind of connector (the entry's kind changed on a reload):
                // not ours to send.
                Err(_) => {
                    tracing::warn!(delivery = %job.delivery.id, "ignoring a saved request that is not a webhook's");
                    None
                }
            });
        let body = match saved {
            Some(body) => body,
            None => {
                let body = build().to_string();
                let saved = serde_json::to_string(&Saved::Webhook { body: body.clone() })
                    .map_err(|e| HelpdeskError::Permanent(format!("cannot save the body: {e}")))?;
                job.remember_request(Some(&saved)).await?;
                body
            }
        };
        let id = message_id(&job.delivery.id);
        let url = reqwest::Url::parse(self.http.base()).map_err(|e| {
            HelpdeskError::Permanent(format!("{} is not a URL: {e}", self.http.base()))
        })?;
        let reply = self
            .http
            .send_signed(
                Method::POST,
                url,
                Some(body),
                &[("webhook-id", &id)],
                |body| {
                    // Signed when the request leaves, after any wait for the rate limit.
                    let timestamp = Timestamp::now().as_second();
                    vec![
                        ("webhook-timestamp", timestamp.to_string()),
                        (
                            "webhook-signature",
                            signatures(&self.keys, &id, timestamp, body),
                        ),
                    ]
                },
            )
            .await?;
        let status = reply.status.as_u16();
        match status {
            200..=299 => Ok(Delivered::Ticket {
                id,
                detail: format!(
                    "posted {} (receiver answered {status})",
                    if job.delivery.action.is_some() {
                        "the tag change"
                    } else {
                        "the call"
                    }
                ),
            }),
            413 => Err(HelpdeskError::Permanent(format!(
                "POST: the receiver refused the payload as too large (413 {})",
                error_message(&reply.body)
            ))),
            401 | 403 => Err(HelpdeskError::Retry {
                reason: format!(
                    "POST: the receiver refused the signature ({status} {}); check that it has the same secret and that both clocks are right",
                    error_message(&reply.body)
                ),
                after: None,
            }),
            410 => Err(HelpdeskError::Permanent(format!(
                "POST: the receiver says this endpoint is gone (410 {}); fix url and retry the delivery",
                error_message(&reply.body)
            ))),
            _ => Err(HelpdeskError::Retry {
                reason: format!("POST: {status} {}", error_message(&reply.body)),
                after: reply
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(3600))),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_in_the_whsec_form_and_checked() {
        let keys = signing_keys(&Secret::new(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nwhsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAA"
                .to_owned(),
        ))
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].len(), 24);
        assert_eq!(keys[1].len(), 25, "unpadded base64 is read too");
        for (secret, says) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
            ("whsec_not base64!", "is not base64"),
            ("whsec_c2hvcnQ=", "holds 5 bytes"),
        ] {
            let error = signing_keys(&Secret::new(secret.to_owned())).unwrap_err();
            assert!(error.contains(says), "{secret}: {error}");
        }
    }

    #[test]
    fn the_signature_is_the_specifications_example() {
        // The example of the Standard Webhooks specification (and of its reference libraries'
        // tests): this key, id, timestamp and body sign to this value.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Two keys, two signatures.
        let both = signatures(
            &[key.clone(), key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(both.split(' ').count(), 2);
    }

    #[test]
    fn message_ids_are_stable_and_plain() {
        let id = message_id("0192f5c3a1b2-1:soporte-españa\n");
        assert_eq!(id, message_id("0192f5c3a1b2-1:soporte-españa\n"));
        assert_ne!(id, message_id("0192f5c3a1b2-1:other"));
        assert!(id.starts_with("msg_") && id.len() == 36);
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
