//! Card data never stored (PCI DSS): masking applied to free text (agent notes, feedback) before it
//! reaches PostgreSQL, Redis, logs or any event.
//!
//! - A run of 13 to 19 digits, with a single space, dash, dot or slash between digit groups
//!   (`4111 1111 1111 1111`, `4111-1111-1111-1111`, `4111.1111.1111.1111`, `4111/1111/1111/1111`,
//!   `3782.822463.10005`), that passes the Luhn check is a card number: every digit but the last four becomes `*`. Within a longer run of
//!   groups ("4111 1111 1111 1111 2025"), any consecutive groups that form a card number are masked.
//! - A security-code phrase ("CVV 123", "cvc: 1234", "security code is 123", "CID 1234") loses its
//!   digits.
//!
//! Phone numbers (at most 15 digits, and nearly never Luhn-valid at 13+), dates, and order numbers
//! that fail the Luhn check are left alone. A 13-19 digit reference that happens to pass Luhn is
//! masked: the safe direction to be wrong in.

use std::borrow::Cow;

const SECURITY_CODE_WORDS: &[&str] = &[
    "cvv2",
    "cvc2",
    "cvv",
    "cvc",
    "cid",
    "csc",
    "security code",
    "verification code",
    "card code",
];

/// The text with card numbers and security codes masked; borrowed when nothing was found.
pub fn mask(text: &str) -> Cow<'_, str> {
    let mut chars: Vec<char> = text.chars().collect();
    let mut changed = mask_card_numbers(&mut chars);
    changed |= mask_security_codes(&mut chars);
    if changed {
        Cow::Owned(chars.into_iter().collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// A key-value pair masked as one (call events' attached data, where an IVR stores what the caller
/// keyed in under a name): both are masked, and when the key names a security code (`cvv`,
/// `security code`, ...) every digit of the value is, since the value is the code itself.
pub fn mask_entry(key: &str, value: &str) -> (String, String) {
    // "card_security_code", "security-code" and "Security Code" name the same thing.
    let lower: String = key
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, '_' | '-' | '.') { ' ' } else { c })
        .collect();
    let names_a_code = SECURITY_CODE_WORDS.iter().any(|word| {
        lower.match_indices(word).any(|(at, _)| {
            !lower[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
        })
    });
    let value = if names_a_code {
        value
            .chars()
            .map(|c| if c.is_ascii_digit() { '*' } else { c })
            .collect()
    } else {
        mask(value).into_owned()
    };
    (mask(key).into_owned(), value)
}

fn luhn_valid(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Digit groups of one run: (start, end) char positions of each group of consecutive digits.
fn runs(chars: &[char]) -> Vec<Vec<(usize, usize)>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut groups = Vec::new();
        loop {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i));
            let separated = i + 1 < chars.len()
                && matches!(chars[i], ' ' | '-' | '.' | '/')
                && chars[i + 1].is_ascii_digit();
            if !separated {
                break;
            }
            i += 1;
        }
        runs.push(groups);
    }
    runs
}

fn mask_card_numbers(chars: &mut [char]) -> bool {
    let mut changed = false;
    for groups in runs(chars) {
        let mut first = 0;
        while first < groups.len() {
            let mut masked_through = None;
            let mut digits: Vec<u32> = Vec::new();
            for (last, &(start, end)) in groups.iter().enumerate().skip(first) {
                digits.extend(chars[start..end].iter().filter_map(|c| c.to_digit(10)));
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && luhn_valid(&digits) {
                    masked_through = Some(last);
                }
            }
            match masked_through {
                Some(last) => {
                    let positions: Vec<usize> = groups[first..=last]
                        .iter()
                        .flat_map(|&(s, e)| s..e)
                        .collect();
                    for &p in &positions[..positions.len() - 4] {
                        chars[p] = '*';
                    }
                    changed = true;
                    first = last + 1;
                }
                None => first += 1,
            }
        }
    }
    changed
}

fn mask_security_codes(chars: &mut [char]) -> bool {
    let lower: Vec<char> = chars.iter().flat_map(|c| c.to_lowercase()).collect();
    if lower.len() != chars.len() {
        // A character whose lower case is longer: fall back to a position-safe comparison.
        return mask_security_codes_ascii(chars);
    }
    mask_phrases(chars, &lower)
}

fn mask_security_codes_ascii(chars: &mut [char]) -> bool {
    let lower: Vec<char> = chars.iter().map(|c| c.to_ascii_lowercase()).collect();
    mask_phrases(chars, &lower)
}

fn mask_phrases(chars: &mut [char], lower: &[char]) -> bool {
    let mut changed = false;
    for word in SECURITY_CODE_WORDS {
        let word: Vec<char> = word.chars().collect();
        let mut i = 0;
        while i + word.len() <= lower.len() {
            let at_boundary = i == 0 || !lower[i - 1].is_alphanumeric();
            if !(at_boundary && lower[i..i + word.len()] == word[..]) {
                i += 1;
                continue;
            }
            // Skip separators and an optional "is" / "was" / "number" between the phrase and the code.
            let mut j = i + word.len();
            loop {
                while j < lower.len() && matches!(lower[j], ' ' | ':' | '=' | '#' | '-' | '.') {
                    j += 1;
                }
                let rest: String = lower[j..lower.len().min(j + 7)].iter().collect();
                match ["is ", "was ", "number ", "no "]
                    .iter()
                    .find(|w| rest.starts_with(**w))
                {
                    Some(w) => j += w.len(),
                    None => break,
                }
            }
            let start = j;
            while j < lower.len() && lower[j].is_ascii_digit() {
                j += 1;
            }
            let followed_by_digit_or_letter = j < lower.len() && lower[j].is_alphanumeric();
            if (3..=4).contains(&(j - start)) && !followed_by_digit_or_letter {
                chars[start..j].fill('*');
                changed = true;
            }
            i = j.max(i + 1);
        }
    }
    changed
}

/// Every string field of every request that is stored as free text, as `Message.field`: each is
/// masked with [`mask`] before it is stored (most through
/// [`crate::validation::Violations::masked_text`] or `free_text` then `mask`, at the edge or in the
/// context's service logic). A test walks the descriptor set and fails when a string field of a
/// request is neither here nor exempt by name in [`EXEMPT`].
pub const MASKED: &[&str] = &[
    "AddCaseCommentRequest.text",
    "CallEvent.attached_data",
    "Campaign.name",
    "Campaign.offer_text",
    "Case.description",
    "Case.subject",
    "CompleteWrapUpRequest.notes",
    "ContactPoint.label",
    "CreateCustomerRequest.company",
    "CreateCustomerRequest.display_name",
    "CreateWebhookRequest.description",
    "Customer.company",
    "Customer.display_name",
    "Disposition.label",
    "ImportRow.company",
    "ImportRow.display_name",
    "LogInteractionRequest.notes",
    "LogInteractionRequest.outcome",
    "NewContactPoint.label",
    "OpenCaseRequest.description",
    "OpenCaseRequest.subject",
    "RecordServiceEventRequest.description",
    "SetAgentStateRequest.reason",
    "SubmitFeedbackRequest.text",
    "UpsertAgentRequest.display_name",
    "UpdateFeedbackStatusRequest.resolution",
    "UpdateWebhookRequest.description",
];

const IDENTIFIER: &str = "an identifier or key (UUID, agent id, a system's own id, a page token): \
parsed at the edge, not free text, and a match key that masking would break";
const NUMBER: &str = "a phone number or email address: parsed and normalized (E.164, RFC 5321), \
so it holds no card number in any form that passes parsing";
const CODE: &str = "a code or short name from a catalog (queue, team, status, category, currency, \
language, time zone): compared exactly, so masking would change its meaning";
const FILTER: &str = "a read filter: compared with stored values, never stored";

/// String fields exempt from masking, by field name, each with its reason.
pub const EXEMPT: &[(&str, &str)] = &[
    ("actor", IDENTIFIER),
    ("after_cursor", IDENTIFIER),
    ("agent_id", IDENTIFIER),
    ("assignee_agent_id", IDENTIFIER),
    ("call_id", IDENTIFIER),
    ("campaign_id", IDENTIFIER),
    ("case_id", IDENTIFIER),
    ("contact_point_id", IDENTIFIER),
    ("customer_id", IDENTIFIER),
    ("duplicate_id", IDENTIFIER),
    ("event_id", IDENTIFIER),
    ("external_id", IDENTIFIER),
    ("gateway_id", IDENTIFIER),
    ("id", IDENTIFIER),
    ("ids", IDENTIFIER),
    ("interaction_id", IDENTIFIER),
    ("lease_id", IDENTIFIER),
    ("order_id", IDENTIFIER),
    ("page_token", IDENTIFIER),
    ("request_id", IDENTIFIER),
    ("sip_user", IDENTIFIER),
    ("survivor_id", IDENTIFIER),
    ("target_agent_id", IDENTIFIER),
    ("caller_number", NUMBER),
    ("dialed_number", NUMBER),
    ("dialed_numbers", NUMBER),
    ("email", NUMBER),
    ("emails", NUMBER),
    ("extension", NUMBER),
    ("phone", NUMBER),
    ("phones", NUMBER),
    ("value", NUMBER),
    ("assignee_team", CODE),
    ("category", CODE),
    ("code", CODE),
    ("currency", CODE),
    ("default_time_zone", CODE),
    ("disposition_code", CODE),
    ("follow_up_on", CODE),
    ("languages", CODE),
    ("owner", CODE),
    ("preferred_language", CODE),
    ("queue", CODE),
    ("queues", CODE),
    ("segment", CODE),
    ("segments", CODE),
    ("status", CODE),
    ("system", CODE),
    ("target_queue", CODE),
    ("team", CODE),
    ("time_zone", CODE),
    ("topics", CODE),
    ("agents", FILTER),
    ("name_prefix", FILTER),
    ("update_mask", CODE),
    (
        "url",
        "a webhook URL: parsed and checked at the edge (http or https, a public host, no user or \
         password), and masking would change where deliveries go",
    ),
    (
        "secret",
        "a webhook signing secret: parsed at the edge (\"whsec_\" and base64), stored to sign, \
         never shown again or logged",
    ),
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn card_numbers_in_common_formats_keep_only_their_last_four() {
        assert_eq!(mask("card 4111111111111111 ok"), "card ************1111 ok");
        assert_eq!(mask("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(mask("amex 3782-822463-10005."), "amex ****-******-*0005.");
        assert_eq!(mask("4111 1111 1111 1111 2025"), "**** **** **** 1111 2025");
        assert_eq!(mask("4111.1111.1111.1111"), "****.****.****.1111");
        assert_eq!(mask("4111/1111/1111/1111"), "****/****/****/1111");
        assert_eq!(mask("3782.822463.10005"), "****.******.*0005");
        assert_eq!(mask("pan=4111-1111.1111/1111;"), "pan=****-****.****/1111;");
    }

    #[test]
    fn a_value_under_a_security_code_key_loses_every_digit() {
        assert_eq!(mask_entry("CVV", "123"), ("CVV".into(), "***".into()));
        assert_eq!(
            mask_entry("card_security_code", "4 5 6"),
            ("card_security_code".into(), "* * *".into())
        );
        assert_eq!(
            mask_entry("pan 4111.1111.1111.1111", "menu 2"),
            ("pan ****.****.****.1111".into(), "menu 2".into())
        );
        // "cid" inside another word is no security code.
        assert_eq!(mask_entry("acid", "12"), ("acid".into(), "12".into()));
        assert_eq!(
            mask_entry("account", "12345"),
            ("account".into(), "12345".into())
        );
    }

    #[test]
    fn security_codes_lose_their_digits() {
        assert_eq!(mask("CVV 123"), "CVV ***");
        assert_eq!(mask("cvc: 1234, thanks"), "cvc: ****, thanks");
        assert_eq!(
            mask("the security code is 987."),
            "the security code is ***."
        );
        assert_eq!(mask("CVV2=321"), "CVV2=***");
    }

    #[test]
    fn phones_dates_and_order_numbers_are_left_alone() {
        for text in [
            "call back on +1 415 555 0100 or 415-555-0100",
            "order 100234567 shipped 2024-05-01",
            "ticket 4111111111111112 (fails Luhn)",
            "security code question answered",
            "cvv 12345678",
            "version 1.2.3, due 2024.05.01 or 01/05/2024, total 1234.56",
        ] {
            assert!(matches!(mask(text), Cow::Borrowed(_)), "{text}");
        }
    }

    /// A Luhn-valid number of `len` digits starting with `prefix`.
    fn card(prefix: &str, len: usize, body: &[u32]) -> String {
        let mut digits: Vec<u32> = prefix.chars().filter_map(|c| c.to_digit(10)).collect();
        digits.extend(body.iter().copied().take(len - 1 - digits.len()));
        while digits.len() < len - 1 {
            digits.push(0);
        }
        let check = (0..10).find(|c| {
            let mut all = digits.clone();
            all.push(*c);
            luhn_valid(&all)
        });
        digits.push(check.unwrap_or(0));
        digits
            .iter()
            .map(|d| char::from_digit(*d, 10).unwrap_or('0'))
            .collect()
    }

    fn formatted(number: &str, style: u8) -> String {
        match style {
            0 => number.to_owned(),
            1..=4 => {
                let sep = [" ", "-", ".", "/"][usize::from(style - 1)];
                number
                    .as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(sep)
            }
            _ => number.to_owned(),
        }
    }

    fn decoy() -> impl Strategy<Value = String> {
        prop_oneof![
            (200u32..999, 200u32..999, 0u32..9999)
                .prop_map(|(a, b, c)| format!("+1 {a} {b} {c:04}")),
            (200u32..999, 200u32..999, 0u32..9999)
                .prop_map(|(a, b, c)| format!("({a}) {b}-{c:04}")),
            (2000u32..2040, 1u32..13, 1u32..29).prop_map(|(y, m, d)| format!("{y}-{m:02}-{d:02}")),
            (10_000_000u64..999_999_999_999).prop_map(|n| format!("order {n}")),
        ]
    }

    proptest! {
        #[test]
        fn generated_notes_never_keep_a_card_number_and_keep_every_decoy(
            words in prop::collection::vec("[a-z]{1,8}", 1..8),
            body in prop::collection::vec(0u32..10, 18),
            prefix in prop::sample::select(vec!["4", "51", "37", "6011", "35"]),
            len in 13usize..=19,
            style in 0u8..5,
            decoys in prop::collection::vec(decoy(), 1..4),
            code in 100u32..9999,
        ) {
            let number = card(prefix, len, &body);
            let mut note = words.join(" ");
            note.push_str(&format!(" card {} ", formatted(&number, style)));
            for decoy in &decoys {
                note.push_str(&format!(" {decoy} ;"));
            }
            note.push_str(&format!(" CVV {code}"));
            let masked = mask(&note).into_owned();
            let masked_digits: String = masked.chars().filter(|c| c.is_ascii_digit() || *c == '*').collect();
            prop_assert!(!masked_digits.contains(&number[..number.len() - 4]), "{masked}");
            prop_assert!(masked_digits.contains(&number[number.len() - 4..]), "last four kept: {masked}");
            prop_assert!(!masked.ends_with(&code.to_string()), "{masked}");
            for decoy in &decoys {
                prop_assert!(masked.contains(decoy.as_str()), "{decoy} kept in {masked}");
            }
        }
    }
}

/// The masking table against the descriptor set (as `auth::permissions` does for RPCs).
#[cfg(test)]
mod every_field {
    use std::collections::{BTreeSet, HashMap};

    use prost::Message as _;
    use prost_types::field_descriptor_proto::Type;
    use prost_types::{DescriptorProto, FileDescriptorSet};

    use super::{EXEMPT, MASKED};

    /// Every string field reachable from any request of a `switchboard.v1` RPC, as
    /// `Message.field` (a `map<string, string>` counts as one field).
    fn request_string_fields() -> BTreeSet<(String, String)> {
        let set =
            FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        fn add(prefix: &str, m: &DescriptorProto, all: &mut HashMap<String, DescriptorProto>) {
            let name = format!("{prefix}.{}", m.name());
            for nested in &m.nested_type {
                add(&name, nested, all);
            }
            all.insert(name, m.clone());
        }
        let mut messages = HashMap::new();
        for file in &set.file {
            for m in &file.message_type {
                add(&format!(".{}", file.package()), m, &mut messages);
            }
        }
        let mut stack: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "switchboard.v1")
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .map(|m| m.input_type().to_owned())
            .collect();
        let (mut seen, mut fields) = (BTreeSet::new(), BTreeSet::new());
        while let Some(name) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(message) = messages.get(&name) else {
                continue;
            };
            let short = name.trim_start_matches(".switchboard.v1.").to_owned();
            for field in &message.field {
                let nested = messages.get(field.type_name());
                let is_map =
                    nested.is_some_and(|n| n.options.as_ref().is_some_and(|o| o.map_entry()));
                match field.r#type() {
                    Type::String => {
                        fields.insert((short.clone(), field.name().to_owned()));
                    }
                    Type::Message if is_map => {
                        fields.insert((short.clone(), field.name().to_owned()));
                    }
                    Type::Message if field.type_name().starts_with(".switchboard.v1.") => {
                        stack.push(field.type_name().to_owned());
                    }
                    _ => {}
                }
            }
        }
        fields
    }

    #[test]
    fn every_request_string_field_is_masked_or_exempt_with_a_reason() {
        let fields = request_string_fields();
        assert!(fields.len() > 100, "the walk found the requests' fields");
        let unlisted: Vec<String> = fields
            .iter()
            .map(|(message, field)| (format!("{message}.{field}"), field))
            .filter(|(full, field)| {
                !MASKED.contains(&full.as_str()) && !EXEMPT.iter().any(|(name, _)| name == field)
            })
            .map(|(full, _)| full)
            .collect();
        assert!(
            unlisted.is_empty(),
            "free-text fields neither masked nor exempt (add each to card_data::MASKED, and mask \
             it, or to EXEMPT with its reason): {unlisted:?}"
        );
        let full: BTreeSet<String> = fields.iter().map(|(m, f)| format!("{m}.{f}")).collect();
        let stale: Vec<&&str> = MASKED.iter().filter(|m| !full.contains(**m)).collect();
        assert!(
            stale.is_empty(),
            "masked entries naming no field: {stale:?}"
        );
        for (name, _) in EXEMPT {
            assert!(
                fields.iter().any(|(_, field)| field == name),
                "exemption {name} names no field"
            );
            assert!(
                !MASKED.iter().any(|m| m.ends_with(&format!(".{name}"))),
                "{name} is both masked and exempt"
            );
        }
    }
}
