//! Phone numbers as routing and the helpdesks see them: E.164 (`+34911239613`), whatever form
//! the PBX sent (national, international with `00`, `tel:` or `sip:` URI user parts), with the
//! configured default region deciding what a national number means.

use std::fmt;
use std::str::FromStr;

use phonenumber::Mode;
use phonenumber::country::Id;
use serde::Serialize;

/// A country whose national number format applies to numbers without a `+`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(Id);

/// Why a text is not a usable phone number or region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("\"{text}\" is not a phone number")]
    Unparsable { text: String },
    #[error("\"{text}\" is not a valid number in {region} or internationally")]
    Invalid { text: String, region: String },
    #[error(
        "\"{text}\" is not an ISO 3166 country code; write two capital letters, e.g. \"ES\", \"GB\", \"BR\""
    )]
    UnknownRegion { text: String },
}

impl FromStr for Region {
    type Err = PhoneError;

    fn from_str(text: &str) -> Result<Region, PhoneError> {
        let unknown = || PhoneError::UnknownRegion {
            text: text.to_owned(),
        };
        if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        Id::from_str(text).map(Region).map_err(|_| unknown())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }
}

/// A phone number in E.164 form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is calling, as far as a number tells.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Caller {
    Number(E164),
    /// Withheld or anonymous (RFC 3323 `anonymous`, `restricted`, an empty number…).
    Anonymous,
}

/// The words PBXs and carriers use in place of a withheld number.
const WITHHELD: [&str; 7] = [
    "anonymous",
    "restricted",
    "private",
    "unknown",
    "unavailable",
    "withheld",
    "",
];

/// Loads the phone number metadata now, so the first call does not wait for it (building it
/// takes tens of milliseconds, hundreds in a debug build).
pub fn warm_up() {
    let _ = phonenumber::parse(Some(Id::ES), "911239613");
}

/// Normalises a calling number to E.164, or recognises it as withheld.
pub fn normalize(text: &str, region: Region) -> Result<Caller, PhoneError> {
    let trimmed = text.trim();
    let bare = trimmed
        .strip_prefix("tel:")
        .or_else(|| trimmed.strip_prefix("sip:"))
        .or_else(|| trimmed.strip_prefix("sips:"))
        .unwrap_or(trimmed);
    let bare = bare.split(['@', ';']).next().unwrap_or(bare);
    if WITHHELD.iter().any(|w| bare.eq_ignore_ascii_case(w)) {
        return Ok(Caller::Anonymous);
    }
    let number = phonenumber::parse(Some(region.0), bare).map_err(|_| PhoneError::Unparsable {
        text: text.to_owned(),
    })?;
    if !number.is_valid() {
        return Err(PhoneError::Invalid {
            text: text.to_owned(),
            region: region.to_string(),
        });
    }
    Ok(Caller::Number(E164(
        number.format().mode(Mode::E164).to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(text: &str, region: &str) -> String {
        match normalize(text, region.parse().unwrap()) {
            Ok(Caller::Number(n)) => n.0,
            other => panic!("{text} in {region}: {other:?}"),
        }
    }

    #[test]
    fn national_and_international_forms_become_e164() {
        assert_eq!(e164("911 23 96 13", "ES"), "+34911239613");
        assert_eq!(e164("+34 911 23 96 13", "ES"), "+34911239613");
        assert_eq!(e164("0034911239613", "ES"), "+34911239613");
        assert_eq!(e164("tel:+34911239613", "GB"), "+34911239613");
        assert_eq!(
            e164("sip:+34911239613@pbx.example.com;user=phone", "ES"),
            "+34911239613"
        );
    }

    #[test]
    fn withheld_numbers_are_anonymous() {
        for text in [
            "anonymous",
            "Anonymous",
            "sip:anonymous@anonymous.invalid",
            "restricted",
            "",
        ] {
            assert_eq!(
                normalize(text, "ES".parse().unwrap()),
                Ok(Caller::Anonymous),
                "{text:?}"
            );
        }
    }

    #[test]
    fn garbage_is_refused_not_guessed() {
        assert!(normalize("hello", "ES".parse().unwrap()).is_err());
        assert!(normalize("+34 1", "ES".parse().unwrap()).is_err());
    }

    #[test]
    fn regions_are_iso_codes() {
        assert!("ES".parse::<Region>().is_ok());
        assert!("GB".parse::<Region>().is_ok());
        for bad in ["UK", "es", "ESP", ""] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }
}
