//! Phone numbers, parsed once at the edge into E.164.
//!
//! Callers and clients send numbers in whatever form their system prints: `+1 (415) 555-0100`,
//! `415.555.0100`, `00 44 20 7946 0958`. [`PhoneParser`] parses them with the `phonenumber` crate
//! (Google's libphonenumber metadata), using the configured default region for national formats, and
//! keeps an extension (`x12`, `ext. 12`) apart from the number.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

use phonenumber::{Mode, country};

/// Longest input accepted before parsing (formatting characters included).
const MAX_INPUT_CHARS: usize = 64;

/// A valid phone number in E.164 form, with its extension if one was given.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    extension: Option<String>,
}

impl PhoneNumber {
    /// The number in E.164, e.g. `+14155550100`.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The extension digits, if any.
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }
}

/// Numbers are PII: `Debug` shows only the country calling code and the last two digits.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", redact(&self.e164))
    }
}

/// A log-safe rendering of an E.164 number: `+1…00`.
pub fn redact(e164: &str) -> String {
    let tail: String = e164
        .chars()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = e164.chars().take(2).collect();
    format!("{head}…{tail}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is required")]
    Empty,
    #[error("must be at most {MAX_INPUT_CHARS} characters")]
    TooLong,
    #[error("is not a phone number")]
    Unparseable,
    #[error("is not a valid number for its country")]
    Invalid,
    #[error("extension must be 1 to 10 digits")]
    BadExtension,
}

/// Parses numbers with a default region for national formats.
#[derive(Clone, Copy, Debug)]
pub struct PhoneParser {
    region: country::Id,
}

impl PhoneParser {
    pub fn new(region: country::Id) -> Self {
        Self { region }
    }

    /// Parses a region code such as `US` or `gb`.
    pub fn for_region(code: &str) -> Result<Self, String> {
        country::Id::from_str(&code.trim().to_ascii_uppercase())
            .map(Self::new)
            .map_err(|_| format!("unknown region code {code:?}"))
    }

    /// Parses `input`; an extension in the text is kept, an explicit `extension` wins over it.
    pub fn parse(&self, input: &str, extension: &str) -> Result<PhoneNumber, PhoneError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(PhoneError::Empty);
        }
        if input.chars().count() > MAX_INPUT_CHARS {
            return Err(PhoneError::TooLong);
        }
        let (e164, parsed_extension) = self.parse_cached(input)?;
        let extension = match extension.trim() {
            "" => parsed_extension,
            explicit => Some(explicit.to_owned()),
        };
        if let Some(ext) = &extension
            && (ext.is_empty() || ext.len() > 10 || !ext.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(PhoneError::BadExtension);
        }
        Ok(PhoneNumber { e164, extension })
    }

    /// libphonenumber's parse and validation (regular expressions over the metadata) cost tens of
    /// microseconds, the biggest share of a hot screen pop; callers repeat, so results are memoized.
    /// The memo is bounded: it is emptied when it reaches [`MEMO_CAPACITY`] entries.
    fn parse_cached(&self, input: &str) -> Result<(String, Option<String>), PhoneError> {
        let key = (self.region, input.to_owned());
        if let Some(hit) = MEMO.lock().ok().and_then(|memo| memo.get(&key).cloned()) {
            return hit;
        }
        let result = phonenumber::parse(Some(self.region), input)
            .map_err(|_| PhoneError::Unparseable)
            .and_then(|parsed| {
                if !phonenumber::is_valid(&parsed) {
                    return Err(PhoneError::Invalid);
                }
                Ok((
                    parsed.format().mode(Mode::E164).to_string(),
                    parsed.extension().map(|ext| ext.to_string()),
                ))
            });
        if let Ok(mut memo) = MEMO.lock() {
            if memo.len() >= MEMO_CAPACITY {
                memo.clear();
            }
            memo.insert(key, result.clone());
        }
        result
    }
}

const MEMO_CAPACITY: usize = 100_000;

type Memo = HashMap<(country::Id, String), Result<(String, Option<String>), PhoneError>>;

static MEMO: LazyLock<Mutex<Memo>> = LazyLock::new(|| Mutex::new(HashMap::new()));

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> PhoneParser {
        PhoneParser::for_region("US").expect("US is a region")
    }

    #[test]
    fn common_formats_normalize_to_the_same_e164() {
        for input in [
            "+14155550100",
            "+1 (415) 555-0100",
            "415-555-0100",
            "(415) 555 0100",
            "415.555.0100",
            "1 415 555 0100",
            "011 1 415 555 0100",
        ] {
            let number = us()
                .parse(input, "")
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(number.e164(), "+14155550100", "{input}");
            assert_eq!(number.extension(), None);
        }
    }

    #[test]
    fn international_numbers_keep_their_country() {
        let uk = us().parse("+44 20 7946 0958", "").expect("valid UK number");
        assert_eq!(uk.e164(), "+442079460958");
        let from_uk = PhoneParser::for_region("gb")
            .expect("GB")
            .parse("020 7946 0958", "");
        assert_eq!(from_uk.expect("valid").e164(), "+442079460958");
    }

    #[test]
    fn extensions_are_kept_apart() {
        let n = us().parse("415-555-0100 ext. 123", "").expect("valid");
        assert_eq!((n.e164(), n.extension()), ("+14155550100", Some("123")));
        let n = us().parse("+14155550100", "77").expect("valid");
        assert_eq!(n.extension(), Some("77"));
        assert_eq!(
            us().parse("+14155550100", "12a"),
            Err(PhoneError::BadExtension)
        );
    }

    #[test]
    fn garbage_and_impossible_numbers_are_rejected() {
        assert_eq!(us().parse("   ", ""), Err(PhoneError::Empty));
        assert_eq!(us().parse("hello", ""), Err(PhoneError::Unparseable));
        assert_eq!(us().parse("+1 123", ""), Err(PhoneError::Invalid));
        assert_eq!(us().parse(&"1".repeat(80), ""), Err(PhoneError::TooLong));
    }

    #[test]
    fn debug_and_redact_hide_the_subscriber_number() {
        let n = us().parse("+14155550100", "").expect("valid");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+1…00)");
    }
}
