//! Phone numbers, parsed once at the edge into E.164.
//!
//! Callers and clients send numbers in whatever form their system prints: `+1 (415) 555-0100`,
//! `415.555.0100`, `00 44 20 7946 0958`. [`PhoneParser`] parses them with the `phonenumber` crate
//! (Google's libphonenumber metadata), using the configured default region for national formats, and
//! keeps an extension (`x12`, `ext. 12`, `;ext=12`) apart from the number.
//!
//! Phone systems hand numbers over in their own forms, and [`PhoneParser::parse_caller`] takes
//! them all before parsing:
//! 1. a name-addr (RFC 3261 §25.1 `name-addr = [ display-name ] LAQUOT addr-spec RAQUOT`): the
//!    display name is dropped and the URI between the angle brackets is read;
//! 2. a `sip:` or `sips:` URI (RFC 3261 §19.1.1): the user part, percent-decoded, without its
//!    user parameters (RFC 3261 §19.1.6 and RFC 3966 for `user=phone` users, whose `;ext=` is kept),
//!    URI parameters or headers; a `tel:` URI (RFC 3966 §3): the number before its parameters,
//!    with `;ext=`;
//! 3. a withheld caller: `anonymous` (RFC 3323 §4.1.1.3 `sip:anonymous@anonymous.invalid`),
//!    `restricted`, `unavailable`, `unknown`, `private`, `withheld`, in any case, or nothing at all:
//!    [`Caller::Withheld`], which is normal, not an error;
//! 4. a SIP user that is not a number (`sip:alice@example.com`): [`Caller::NotANumber`];
//! 5. full-width digits and signs (`＋１ ４１５…`) become ASCII, and the international prefixes
//!    `00` and `011` are read as `+` when the number does not parse as national.
//!
//! Control characters and inputs over 256 characters stay errors.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

use phonenumber::{Mode, country};

/// Longest number accepted for parsing (formatting characters included), once any URI or
/// name-addr around it is removed.
const MAX_INPUT_CHARS: usize = 64;
/// Longest input accepted at all (a name-addr with a display name and URI parameters).
const MAX_RAW_CHARS: usize = 256;
/// What phone systems send for a withheld caller ID (compared in lower case).
const WITHHELD: &[&str] = &[
    "anonymous",
    "restricted",
    "unavailable",
    "unknown",
    "private",
    "withheld",
];

/// Who is calling, as far as the number says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Number(PhoneNumber),
    /// The caller withheld the number (or the network has none): nothing to look up.
    Withheld,
    /// A SIP user that is not a telephone number (`sip:alice@example.com`): nothing to look up.
    NotANumber,
}

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
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("is withheld (anonymous), not a number")]
    Withheld,
    #[error("is a SIP user, not a phone number")]
    NotANumber,
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

    /// Parses `input` in any of the forms in the module doc; an extension in the text is kept, an
    /// explicit `extension` wins over it. A withheld caller or a SIP user that is not a number is
    /// an error here: where a number must be stored, these are not one.
    pub fn parse(&self, input: &str, extension: &str) -> Result<PhoneNumber, PhoneError> {
        if input.trim().is_empty() {
            return Err(PhoneError::Empty);
        }
        match self.parse_with(input, extension)? {
            Caller::Number(number) => Ok(number),
            Caller::Withheld => Err(PhoneError::Withheld),
            Caller::NotANumber => Err(PhoneError::NotANumber),
        }
    }

    /// Reads the caller of a call (a screen pop, a call event): a number, or a withheld caller
    /// (empty input included), or a SIP user that is not a number. Malformed input is an error.
    pub fn parse_caller(&self, input: &str) -> Result<Caller, PhoneError> {
        self.parse_with(input, "")
    }

    fn parse_with(&self, input: &str, extension: &str) -> Result<Caller, PhoneError> {
        let input = input.trim();
        if input.chars().count() > MAX_RAW_CHARS {
            return Err(PhoneError::TooLong);
        }
        if input.chars().any(char::is_control) {
            return Err(PhoneError::ControlCharacters);
        }
        let (number, uri_extension) = match unwrap(input) {
            Unwrapped::Number(number, ext) => (number, ext),
            Unwrapped::Withheld => return Ok(Caller::Withheld),
            Unwrapped::NotANumber => return Ok(Caller::NotANumber),
        };
        if number.chars().count() > MAX_INPUT_CHARS {
            return Err(PhoneError::TooLong);
        }
        let (e164, parsed_extension) = match self.parse_cached(&number) {
            Err(error) => match international(&number) {
                Some(plus) => self.parse_cached(&plus).map_err(|_| error)?,
                None => return Err(error),
            },
            ok => ok?,
        };
        let extension = match extension.trim() {
            "" => uri_extension.or(parsed_extension),
            explicit => Some(explicit.to_owned()),
        };
        if let Some(ext) = &extension
            && (ext.is_empty() || ext.len() > 10 || !ext.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(PhoneError::BadExtension);
        }
        Ok(Caller::Number(PhoneNumber { e164, extension }))
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

/// What is inside a caller form.
enum Unwrapped {
    /// The number's text, and an extension a URI parameter gave.
    Number(String, Option<String>),
    Withheld,
    NotANumber,
}

fn is_withheld(word: &str) -> bool {
    word.is_empty()
        || (word.starts_with(|c: char| c.is_ascii_alphabetic())
            && WITHHELD.iter().any(|w| word.eq_ignore_ascii_case(w)))
}

/// Reads a number out of the forms in the module doc (it never fails: what is left is parsed).
fn unwrap(input: &str) -> Unwrapped {
    // The common case, a bare number, passes through untouched.
    if is_withheld(input) {
        return Unwrapped::Withheld;
    }
    if input.is_ascii() && !input.contains(['<', ':', '@', ';', '"']) {
        return Unwrapped::Number(input.to_owned(), None);
    }
    let narrow = narrow(input);
    // name-addr: the URI between the angle brackets; the display name is not the number.
    let addr = match (narrow.find('<'), narrow.rfind('>')) {
        (Some(open), Some(close)) if open < close => narrow[open + 1..close].trim(),
        _ => narrow.trim(),
    };
    let lower = addr.to_ascii_lowercase();
    let (number_part, is_sip) = if let Some(rest) = strip_scheme(&lower, addr, "tel:") {
        (rest, false)
    } else if let Some(rest) =
        strip_scheme(&lower, addr, "sips:").or_else(|| strip_scheme(&lower, addr, "sip:"))
    {
        // Headers (`?...`) go; the user part is what stands before `@` (no `@`: no user).
        let rest = rest.split('?').next().unwrap_or_default();
        match rest.rsplit_once('@') {
            Some((user, _host)) => (user, true),
            None => {
                let host = rest.split(';').next().unwrap_or_default();
                // `sip:+14155550100;user=phone` names a number without a host.
                if host.starts_with(['+', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
                    (host, true)
                } else {
                    return Unwrapped::NotANumber;
                }
            }
        }
    } else {
        (addr, false)
    };
    let decoded = if is_sip {
        percent_decode(number_part)
    } else {
        number_part.to_owned()
    };
    let mut params = decoded.split(';');
    let number = params.next().unwrap_or_default().trim().to_owned();
    let extension = params
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("ext"))
        .map(|(_, value)| value.trim().to_owned());
    if is_withheld(&number) {
        return Unwrapped::Withheld;
    }
    if is_sip && number.chars().any(|c| c.is_alphabetic()) {
        return Unwrapped::NotANumber;
    }
    Unwrapped::Number(number, extension)
}

/// `rest` of `original` after `scheme` when `lower` (its lower case) starts with it.
fn strip_scheme<'a>(lower: &str, original: &'a str, scheme: &str) -> Option<&'a str> {
    lower
        .starts_with(scheme)
        .then(|| original.get(scheme.len()..))
        .flatten()
}

/// Full-width digits and signs (U+FF01..U+FF5E) and the ideographic space become ASCII.
fn narrow(input: &str) -> String {
    input
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            c => c,
        })
        .collect()
}

/// `%XX` escapes decoded (RFC 3261 §19.1.2: `+` may arrive as `%2B`); a bad escape stays as is.
fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The number with an international prefix (`00`, `011`) read as `+`, when it has one.
fn international(number: &str) -> Option<String> {
    let digits_from = number.find(|c: char| c.is_ascii_digit())?;
    let (before, rest) = number.split_at(digits_from);
    if !before.trim().is_empty() {
        return None;
    }
    let compact: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.'))
        .collect();
    ["011", "00"]
        .iter()
        .find_map(|prefix| compact.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty())
        .map(|rest| format!("+{rest}"))
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
    fn every_form_a_gateway_sends_reads_as_the_caller() {
        use Caller::{NotANumber, Withheld};
        let number = |e164: &str, ext: Option<&str>| {
            Caller::Number(PhoneNumber {
                e164: e164.into(),
                extension: ext.map(Into::into),
            })
        };
        let ada = number("+14155550100", None);
        let cases: &[(&str, Caller)] = &[
            ("+14155550100", ada.clone()),
            ("sip:+14155550100@pbx.example.com", ada.clone()),
            ("sip:+14155550100@pbx.example.com;user=phone", ada.clone()),
            (
                "sips:+14155550100@pbx.example.com:5061;transport=tls",
                ada.clone(),
            ),
            ("SIP:%2B14155550100@10.0.0.1", ada.clone()),
            ("sip:4155550100@10.0.0.1", ada.clone()),
            ("sip:+14155550100;user=phone", ada.clone()),
            (
                "sip:+1-415-555-0100;ext=12@pbx;user=phone",
                number("+14155550100", Some("12")),
            ),
            ("sip:+14155550100@pbx?subject=hello", ada.clone()),
            ("tel:+1-415-555-0100", ada.clone()),
            (
                "tel:+1-415-555-0100;ext=12",
                number("+14155550100", Some("12")),
            ),
            ("tel:4155550100;phone-context=+1", ada.clone()),
            ("\"Ada\" <sip:4155550100@10.0.0.1>", ada.clone()),
            ("Ada Lovelace <sip:+14155550100@pbx>;tag=abc", ada.clone()),
            ("<tel:+14155550100>", ada.clone()),
            ("+1 415 555 0100;ext=7", number("+14155550100", Some("7"))),
            ("415-555-0100 x12", number("+14155550100", Some("12"))),
            ("415-555-0100 ext. 12", number("+14155550100", Some("12"))),
            ("＋１ ４１５ ５５５ ０１００", ada.clone()),
            ("４１５−５５５−０１００", ada.clone()),
            ("011 1 415 555 0100", ada.clone()),
            ("00 1 415 555 0100", ada.clone()),
            ("0044 20 7946 0958", number("+442079460958", None)),
            ("011 44 20 7946 0958", number("+442079460958", None)),
            ("", Withheld),
            ("   ", Withheld),
            ("anonymous", Withheld),
            ("Anonymous", Withheld),
            ("RESTRICTED", Withheld),
            ("unavailable", Withheld),
            ("Unknown", Withheld),
            ("private", Withheld),
            ("sip:anonymous@anonymous.invalid", Withheld),
            (
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1",
                Withheld,
            ),
            ("tel:restricted", Withheld),
            ("sip:alice@example.com", NotANumber),
            ("\"Alice\" <sips:alice@example.com>", NotANumber),
            ("sip:example.com", NotANumber),
        ];
        for (input, expected) in cases {
            assert_eq!(us().parse_caller(input).as_ref(), Ok(expected), "{input:?}");
        }
        // Where a number must be stored, the same forms parse, and the others are errors.
        assert_eq!(
            us().parse("sip:+14155550100@pbx", "").map(|n| n.e164),
            Ok("+14155550100".to_owned())
        );
        assert_eq!(us().parse("anonymous", ""), Err(PhoneError::Withheld));
        assert_eq!(
            us().parse("sip:alice@example.com", ""),
            Err(PhoneError::NotANumber)
        );
        assert_eq!(us().parse("", ""), Err(PhoneError::Empty));
    }

    #[test]
    fn malformed_callers_stay_errors() {
        assert_eq!(
            us().parse_caller("+1415\u{0}5550100"),
            Err(PhoneError::ControlCharacters)
        );
        assert_eq!(
            us().parse_caller("sip:+1415\n5550100@pbx"),
            Err(PhoneError::ControlCharacters)
        );
        assert_eq!(
            us().parse_caller(&"1".repeat(100_000)),
            Err(PhoneError::TooLong)
        );
        assert_eq!(us().parse_caller(&"1".repeat(80)), Err(PhoneError::TooLong));
        assert_eq!(us().parse_caller("hello"), Err(PhoneError::Unparseable));
        assert_eq!(us().parse_caller("tel:+1 123"), Err(PhoneError::Invalid));
        assert_eq!(
            us().parse_caller("sip:+1 123@pbx"),
            Err(PhoneError::Invalid)
        );
    }

    #[test]
    fn debug_and_redact_hide_the_subscriber_number() {
        let n = us().parse("+14155550100", "").expect("valid");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+1…00)");
    }
}
