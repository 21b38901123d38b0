//! Phone numbers in E.164 form (`+` and up to 15 digits), the one spelling the server stores,
//! compares and sends; providers' own spellings are converted at the edges.

/// True for `+` then 7 to 15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// A number as providers write it (Plivo drops the `+`) in E.164 form, if it is one.
pub fn normalize(number: &str) -> Option<String> {
    let number = number.trim();
    let e164 = if number.starts_with('+') {
        number.to_owned()
    } else {
        format!("+{number}")
    };
    is_e164(&e164).then_some(e164)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers() {
        for good in ["+15551234567", "+442071838750", "+1234567"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "15551234567",
            "+1555-123",
            "+0123456789",
            "+1",
            "+1234567890123456",
            "",
            "+",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn provider_spellings_normalize() {
        assert_eq!(normalize("15550008888").as_deref(), Some("+15550008888"));
        assert_eq!(normalize("+15550008888").as_deref(), Some("+15550008888"));
        assert_eq!(normalize("anonymous"), None);
        assert_eq!(normalize("+1555\n"), None);
    }
}
