//! Signed links to a voicemail, pure (no I/O, the time passed in): what Intercom notes, webhook
//! payloads, Klaviyo events and Zendesk voice comments carry instead of the file, and what the
//! admin HTTP server checks before it serves one.
//!
//! - The signature is HMAC-SHA256 under sipdesk's media key over `voicemail:<call id>:<expires>`
//!   (Unix seconds), written as lowercase hex. The call id and the expiry are both signed, so a
//!   link cannot be moved to another recording or stretched.
//! - A link is `<public_url>/voicemail/<call id>.wav?expires=<unix>&signature=<hex>`; the call id
//!   is percent-encoded as a path segment.
//! - Checking verifies the signature first, in constant time (the `hmac` crate's
//!   `verify_slice`), and only then the expiry, so "expired" is never said of a link sipdesk did
//!   not sign; a link whose expiry or signature cannot be read is refused the same way as a wrong
//!   one.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

/// The smallest media key sipdesk accepts (it makes 32 bytes).
pub const MIN_KEY_BYTES: usize = 16;

/// Why a link is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the link has expired")]
    Expired,
    #[error("the link's signature is wrong")]
    BadSignature,
}

fn mac(key: &[u8], call_id: &str, expires: i64) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the key file's length is checked where it is read.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("voicemail:{call_id}:{expires}").as_bytes());
    mac
}

/// The signature of a link to `call_id`'s voicemail that works until `expires` (Unix seconds).
pub fn sign(key: &[u8], call_id: &str, expires: i64) -> String {
    mac(key, call_id, expires)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a link's `expires` and `signature`, as given in its query, open `call_id`'s voicemail
/// at `now`.
pub fn check(
    key: &[u8],
    call_id: &str,
    expires: &str,
    signature: &str,
    now: Timestamp,
) -> Result<(), Refused> {
    let expires: i64 = expires.parse().map_err(|_| Refused::BadSignature)?;
    let Some(given) = hex(signature) else {
        return Err(Refused::BadSignature);
    };
    mac(key, call_id, expires)
        .verify_slice(&given)
        .map_err(|_| Refused::BadSignature)?;
    if now.as_second() > expires {
        return Err(Refused::Expired);
    }
    Ok(())
}

/// The link itself, under `public_url` (without a trailing slash).
pub fn url(public_url: &str, key: &[u8], call_id: &str, expires: i64) -> String {
    format!(
        "{public_url}/voicemail/{}.wav?expires={expires}&signature={}",
        segment(call_id),
        sign(key, call_id, expires)
    )
}

/// Lowercase or uppercase hex to bytes; `None` for anything else.
fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A path segment: unreserved characters as they are, every other byte percent-encoded.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_signed_link_opens_its_own_recording_until_it_expires() {
        let signature = sign(KEY, "c1", 1_000);
        assert_eq!(signature.len(), 64);
        assert_eq!(check(KEY, "c1", "1000", &signature, at(999)), Ok(()));
        assert_eq!(check(KEY, "c1", "1000", &signature, at(1_000)), Ok(()));
        assert_eq!(
            check(KEY, "c1", "1000", &signature, at(1_001)),
            Err(Refused::Expired)
        );
        // Another call, a stretched expiry, another key, a changed byte: all refused.
        assert_eq!(
            check(KEY, "c2", "1000", &signature, at(0)),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(KEY, "c1", "2000", &signature, at(0)),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            check(
                b"another key, just as long as it",
                "c1",
                "1000",
                &signature,
                at(0)
            ),
            Err(Refused::BadSignature)
        );
        let mut tampered = signature.clone().into_bytes();
        tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            check(KEY, "c1", "1000", &tampered, at(0)),
            Err(Refused::BadSignature)
        );
        for (expires, signature) in [("soon", signature.as_str()), ("1000", "zz"), ("1000", "")] {
            assert_eq!(
                check(KEY, "c1", expires, signature, at(0)),
                Err(Refused::BadSignature)
            );
        }
        // Hex is read in either case.
        assert_eq!(
            check(KEY, "c1", "1000", &signature.to_uppercase(), at(0)),
            Ok(())
        );
    }

    #[test]
    fn the_link_names_the_call_as_a_path_segment() {
        let link = url("https://sipdesk.example.com", KEY, "a b/c", 5);
        assert!(
            link.starts_with(
                "https://sipdesk.example.com/voicemail/a%20b%2Fc.wav?expires=5&signature="
            ),
            "{link}"
        );
        assert!(link.ends_with(&sign(KEY, "a b/c", 5)));
    }
}
