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
///
/// Numbers are read the way people and PBXs write them: national (`0911 23 96 13`, `(442)
/// 249-7851`), international with `+` or the `00` prefix, or with the country code but no `+`
/// (`34911239613`). When the plain reading is not a valid number, two more are tried, in order:
/// the digits as an international number (`33762043575`), and the digits without one or two
/// extra leading zeros that PBXs prepend for an outside line (`00762043575`, `0(442)249-7851`).
/// The first reading that is a valid number wins; none is guessed beyond that.
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
    if !bare
        .chars()
        .all(|c| c.is_ascii_digit() || " +-.()/".contains(c))
        || !bare.chars().any(|c| c.is_ascii_digit())
    {
        return Err(PhoneError::Unparsable {
            text: text.to_owned(),
        });
    }
    let valid = |candidate: &str, region: Option<Id>| {
        phonenumber::parse(region, candidate)
            .ok()
            .filter(|n| n.is_valid())
            .map(|n| Caller::Number(E164(n.format().mode(Mode::E164).to_string())))
    };
    if let Some(caller) = valid(bare, Some(region.0)) {
        return Ok(caller);
    }
    let digits: String = bare.chars().filter(char::is_ascii_digit).collect();
    if !bare.starts_with('+') {
        if let Some(caller) = valid(&format!("+{digits}"), None) {
            return Ok(caller);
        }
        for zeros in 1..=2 {
            if digits.len() > zeros && digits[..zeros].bytes().all(|b| b == b'0') {
                if let Some(caller) = valid(&digits[zeros..], Some(region.0)) {
                    return Ok(caller);
                }
            }
        }
    }
    Err(PhoneError::Invalid {
        text: text.to_owned(),
        region: region.to_string(),
    })
}

/// An E.164 number written for people, with the country's grouping: `+34 911 23 96 13`.
/// `None` when it is not a valid number.
pub fn international(e164: &str) -> Option<String> {
    let number = phonenumber::parse(None, e164).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(Mode::International).to_string())
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

    /// Every format the Intercom seed lists as accepted, per country, with that country as the
    /// default region.
    #[test]
    fn every_national_format_in_the_seed_becomes_e164() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "FR",
                "+33762043575",
                &[
                    "+33762043575",
                    "33762043575",
                    "07 62 04 35 75",
                    "+33 7 62 04 35 75",
                    "00762043575",
                    "0762043575",
                    "07.62.04.35.75",
                    "07-62-04-35-75",
                ],
            ),
            (
                "US",
                "+14422497851",
                &[
                    "+14422497851",
                    "14422497851",
                    "(442) 249-7851",
                    "+1 442 249 7851",
                    "0(442)249-7851",
                    "1 (442) 249-7851",
                    "442-249-7851",
                    "442 249 7851",
                    "4422497851",
                    "+1 442-249-7851",
                    "+1 (442) 249-7851",
                ],
            ),
            (
                "GB",
                "+442087653456",
                &[
                    "+442087653456",
                    "442087653456",
                    "020 8765 3456",
                    "+44 20 8765 3456",
                    "002087653456",
                    "(2087) 653 456",
                    "02087653456",
                    "(20876) 53456",
                    "(2087 65) 3456",
                ],
            ),
            (
                "BR",
                "+551146803559",
                &[
                    "+551146803559",
                    "551146803559",
                    "(11) 4680-3559",
                    "+55 11 4680 3559",
                    "0(11)4680-3559",
                    "11 4680-3559",
                    "11 46803559",
                    "11-4680-3559",
                    "11-46803559",
                    "+55 11 4680-3559",
                ],
            ),
            (
                "ES",
                "+34911239613",
                &[
                    "+34911239613",
                    "34911239613",
                    "911 23 96 13",
                    "+34 911 23 96 13",
                    "0911239613",
                    "911239613",
                    "911 239 613",
                    "34 9112 39613",
                    "34 911 239 613",
                ],
            ),
            (
                "DE",
                "+4917667402970",
                &[
                    "+4917667402970",
                    "4917667402970",
                    "0176 67402970",
                    "+49 176 67402970",
                    "0017667402970",
                    "01766/7402970",
                    "17667402970",
                    "017667402970",
                    "017 667 402970",
                    "+49176 67402970",
                    "004917667402970",
                ],
            ),
            (
                "AU",
                "+61281032081",
                &[
                    "+61281032081",
                    "61281032081",
                    "(02) 8103 2081",
                    "+61 2 8103 2081",
                    "0(02)81032081",
                    "(02)81032081",
                    "0281032081",
                ],
            ),
        ];
        let mut wrong = Vec::new();
        for (region, expected, formats) in cases {
            for format in *formats {
                let got = normalize(format, region.parse().unwrap());
                if got != Ok(Caller::Number(E164((*expected).to_owned()))) {
                    wrong.push(format!("{region} {format:?}: {got:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
        for text in ["hello", "+34 1", "2001", "911x239613", "+", "123"] {
            assert!(normalize(text, "ES".parse().unwrap()).is_err(), "{text}");
        }
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
