//! The signed webhook connector (`kind = "webhook"`): one JSON POST per finished call, signed as
//! the Standard Webhooks specification says, for the systems no vendor integrates with.
//!
//! - Headers: `webhook-id` (the delivery's id, the same on every retry, so a receiver drops
//!   repeats), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature:
//!   v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The secret is `whsec_` followed by the
//!   base64 of 24 to 64 random bytes, the form the specification's libraries read.
//! - The body ([`payload`]) is built once, saved before it is first sent, and every retry sends
//!   those very bytes; only the timestamp and signature are new.
//! - Any 2xx is success, whatever the body. 400, 413 and 422 fail the delivery at once (the
//!   receiver refuses this payload; an admin retries it once the receiver is fixed); 410 too
//!   (the receiver says the endpoint is gone); everything else (404 while a receiver deploys,
//!   409, 429, 5xx, timeouts, no connection) is retried through the outbox.

pub mod payload;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use reqwest::Method;
use sha2::Sha256;

use super::http::{Credentials, Http, Vendor, error_message, no_rate_headers};
use super::{Delivered, HelpdeskError, Job};
use crate::config::{HelpdeskSettings, Secret, WebhookSettings};
use crate::tickets::Rules;

/// A webhook integration.
pub struct Webhook {
    http: Http,
    name: String,
    rules: Rules,
    key: Vec<u8>,
}

/// The request a delivery saved before it was first sent: the body's very bytes, marked as a
/// webhook's so that one saved by another kind of connector is never sent.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Saved {
    Webhook { body: String },
}

/// The signing key a `whsec_…` secret holds; `Err` says what is wrong with it.
pub fn signing_key(secret: &Secret) -> Result<Vec<u8>, String> {
    let Some(encoded) = secret.expose().strip_prefix("whsec_") else {
        return Err("the webhook secret must start with whsec_ (generate one with: echo \"whsec_$(head -c 32 /dev/urandom | base64)\")".to_owned());
    };
    let key = BASE64
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

/// The `webhook-signature` value for one attempt.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(
        settings: &HelpdeskSettings,
        webhook: &WebhookSettings,
        secret: &Secret,
    ) -> Result<Webhook, String> {
        let key = signing_key(secret)?;
        let http = Http::new(
            &settings.name,
            &webhook.url,
            Vendor {
                credentials: Credentials::None,
                rate_headers: no_rate_headers,
                json_answers: false,
            },
            settings.requests_per_minute,
            settings.request_timeout,
        )?;
        Ok(Webhook {
            http,
            name: settings.name.clone(),
            rules: settings.rules.clone(),
            key,
        })
    }

    /// Carries out one delivery: the saved body, or a new one saved first, signed and posted.
    pub async fn deliver(&self, job: &Job<'_>) -> Result<Delivered, HelpdeskError> {
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
                let value = payload::payload(&self.name, &self.rules, job.call, &job.party);
                let body = value.to_string();
                let saved = serde_json::to_string(&Saved::Webhook { body: body.clone() })
                    .map_err(|e| HelpdeskError::Permanent(format!("cannot save the body: {e}")))?;
                job.remember_request(Some(&saved)).await?;
                body
            }
        };
        let id = job.delivery.id.as_str();
        let timestamp = Timestamp::now().as_second();
        let signature = signature(&self.key, id, timestamp, &body);
        let url = reqwest::Url::parse(self.http.base()).map_err(|e| {
            HelpdeskError::Permanent(format!("{} is not a URL: {e}", self.http.base()))
        })?;
        let timestamp = timestamp.to_string();
        let reply = self
            .http
            .send_text(
                Method::POST,
                url,
                Some(body),
                &[
                    ("webhook-id", id),
                    ("webhook-timestamp", &timestamp),
                    ("webhook-signature", &signature),
                ],
            )
            .await?;
        let status = reply.status.as_u16();
        match status {
            200..=299 => Ok(Delivered::Ticket {
                id: id.to_owned(),
                detail: format!("posted the call (receiver answered {status})"),
            }),
            400 | 413 | 422 => Err(HelpdeskError::Permanent(format!(
                "POST: the receiver refused the payload ({status} {})",
                error_message(&reply.body)
            ))),
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
        let key = signing_key(&Secret::new(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ))
        .unwrap();
        assert_eq!(key.len(), 24);
        for (secret, says) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
            ("whsec_not base64!", "is not base64"),
            ("whsec_c2hvcnQ=", "holds 5 bytes"),
        ] {
            let error = signing_key(&Secret::new(secret.to_owned())).unwrap_err();
            assert!(error.contains(says), "{secret}: {error}");
        }
    }

    #[test]
    fn the_signature_is_the_specifications_example() {
        // The example of the Standard Webhooks specification (and of its reference libraries'
        // tests): this key, id, timestamp and body sign to this value.
        let key = signing_key(&Secret::new(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ))
        .unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
