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
