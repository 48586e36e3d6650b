//! CleverTap's rules for records, with the error codes CleverTap answers when one is broken.
//!
//! Both sides use these: `mapping` checks records before sending them, and the sandbox
//! rejects records the way CleverTap does. Sources: docs/clevertap-api.md §2.

/// The longest key (property or column name), in bytes.
pub const MAX_KEY_BYTES: usize = 120;
/// The longest property value, in bytes.
pub const MAX_VALUE_BYTES: usize = 512;
/// An identity must be shorter than this many characters.
pub const MAX_IDENTITY_CHARS: usize = 120;
/// The most values a multi-value property keeps.
pub const MAX_MULTI_VALUES: usize = 100;
/// The most items in a Charged event's `Items`.
pub const MAX_CHARGED_ITEMS: usize = 256;
/// The most properties of one event, unless the account has more ([DOC] upload-events-api,
/// 2026-06-30: "100 by default, configurable"; older pages said 256).
pub const DEFAULT_EVENT_PROPERTIES: usize = 100;
/// The most records in one `/1/upload` request.
pub const MAX_UPLOAD_RECORDS: usize = 1000;

/// The device token types CleverTap accepts.
pub const TOKEN_TYPES: [&str; 6] = ["fcm", "apns", "gcm", "chrome", "wns", "mpns"];

/// The record fields that identify a user; every record needs one.
pub const IDENTITY_FIELDS: [&str; 4] = ["identity", "objectId", "FBID", "GPID"];

/// Characters CleverTap refuses in key names ([DOC] platform-considerations).
pub const FORBIDDEN_KEY_CHARS: &[char] = &[
    '%', '>', '<', '!', '|', '&', '.', ':', ';', '$', '\'', '"', '\\', '#',
];

/// Characters CleverTap refuses in event names: those of key names but `#`
/// ([DOC] platform-considerations; docs/clevertap-api.md, Corrections 7).
pub const FORBIDDEN_EVENT_NAME_CHARS: &[char] = &[
    '%', '>', '<', '!', '|', '&', '.', ':', ';', '$', '\'', '"', '\\',
];

/// A set of characters as a lookup table by byte (every one is ASCII).
const fn byte_table(chars: &[char]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut index = 0;
    while index < chars.len() {
        table[chars[index] as usize] = true;
        index += 1;
    }
    table
}

const FORBIDDEN_KEY_BYTES: [bool; 256] = byte_table(FORBIDDEN_KEY_CHARS);
const FORBIDDEN_EVENT_NAME_BYTES: [bool; 256] = byte_table(FORBIDDEN_EVENT_NAME_CHARS);

/// System event names an upload may not raise (513). Compared ignoring case and spaces.
pub const RESERVED_EVENTS: &[&str] = &[
    "Notification Sent",
    "Notification Viewed",
    "Notification Clicked",
    "Notification Delivered",
    "Notification Replied",
    "UTM Visited",
    "App Launched",
    "App Uninstalled",
    "App Version Changed",
    "Stayed",
    "Reply Sent",
    "Experiment Rendered",
    "Reachable By",
    "Identity Reset",
    "Identity Set",
    "Identity Error",
    "Web Page Viewed",
    "Channel Unsubscribed",
];

/// A broken rule: CleverTap's code for it and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// CleverTap's per-record error code (509–535), or 0 when CleverTap has none.
    pub code: u16,
    /// What is wrong, naming the key and value.
    pub message: String,
}

impl Violation {
    /// A violation with a code and a message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Violation {
            code,
            message: message.into(),
        }
    }
}

/// Event names are compared ignoring case and spaces ("Sign Up" = "signup").
pub fn normalize_event_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether an event name is a system event that uploads may not raise.
pub fn is_reserved_event(name: &str) -> bool {
    let normalized = normalize_event_name(name);
    RESERVED_EVENTS
        .iter()
        .any(|reserved| normalize_event_name(reserved) == normalized)
}

/// Checks a property or column name.
pub fn check_key(key: &str) -> Result<(), Violation> {
    check_name(key, &FORBIDDEN_KEY_BYTES)
}

/// Checks an event name: a key name's rules, but `#` is allowed.
pub fn check_event_name(name: &str) -> Result<(), Violation> {
    check_name(name, &FORBIDDEN_EVENT_NAME_BYTES)
}

fn check_name(key: &str, forbidden: &[bool; 256]) -> Result<(), Violation> {
    if key.trim().is_empty() {
        return Err(Violation::new(0, "an empty property name"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Violation::new(
            0,
            format!("property name `{key}` is longer than {MAX_KEY_BYTES} bytes"),
        ));
    }
    if let Some(control) = control_character(key) {
        return Err(Violation::new(
            0,
            format!(
                "name `{}` holds the control character {}",
                key.escape_debug(),
                control.escape_unicode()
            ),
        ));
    }
    // Every forbidden character is ASCII, so scanning bytes is exact; this runs per column
    // per row, so it looks bytes up in a table.
    if let Some(bad) = key
        .bytes()
        .find(|&b| forbidden[usize::from(b)])
        .map(char::from)
    {
        return Err(Violation::new(
            0,
            format!(
                "property name `{key}` contains `{bad}`, which CleverTap does not allow in names"
            ),
        ));
    }
    Ok(())
}

/// Checks a string value's length.
pub fn check_value_length(key: &str, value: &str) -> Result<(), Violation> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Violation::new(
            0,
            format!(
                "the value of `{key}` is {} bytes; CleverTap keeps at most {MAX_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The first control character (NUL, escape, a line break, U+0080–U+009F, ...) of a text.
/// Such characters in an identity or a name are never what was meant (a broken export, or
/// terminal escapes smuggled in) and would be stored as they are.
pub fn control_character(text: &str) -> Option<char> {
    // ASCII first, as it is nearly always all there is.
    match text.bytes().find(|byte| byte.is_ascii_control()) {
        Some(byte) => Some(char::from(byte)),
        None if text.is_ascii() => None,
        None => text.chars().find(|c| c.is_control()),
    }
}

/// Checks an identity value (523 when too long, empty or holding control characters).
pub fn check_identity(field: &str, value: &str) -> Result<(), Violation> {
    if value.chars().all(char::is_whitespace) {
        return Err(Violation::new(523, format!("`{field}` is empty")));
    }
    if let Some(control) = control_character(value) {
        return Err(Violation::new(
            523,
            format!(
                "`{field}` holds the control character {}; remove it from the source",
                control.escape_unicode()
            ),
        ));
    }
    // A character is at least a byte: only a long value needs counting.
    if value.len() >= MAX_IDENTITY_CHARS && value.chars().count() >= MAX_IDENTITY_CHARS {
        return Err(Violation::new(
            523,
            format!("`{field}` must be under {MAX_IDENTITY_CHARS} characters"),
        ));
    }
    Ok(())
}

/// An E.164 phone number: `+`, a country code and number, 8 to 15 digits in all.
pub fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A plausible email address: one `@`, a local part, a dotted domain, no spaces.
pub fn is_email(email: &str) -> bool {
    // One pass over the bytes (this runs for every profile with an email).
    let mut at = None;
    let mut dots = 0;
    let mut label_start = true;
    for (index, &byte) in email.as_bytes().iter().enumerate() {
        // `char::is_whitespace` on ASCII: space, and tab to carriage return.
        if byte == b' ' || (b'\t'..=b'\r').contains(&byte) {
            return false;
        }
        match (at, byte) {
            (None, b'@') if index == 0 => return false,
            (None, b'@') => at = Some(index),
            (None, _) => {}
            // In the domain: no second `@`, at least one dot, no empty label.
            (Some(_), b'@') => return false,
            (Some(_), b'.') if label_start => return false,
            (Some(_), b'.') => {
                dots += 1;
                label_start = true;
            }
            (Some(_), _) => label_start = false,
        }
    }
    at.is_some()
        && dots > 0
        && !label_start
        && (email.is_ascii() || !email.contains(char::is_whitespace))
}

/// A date value as CleverTap wants it: `$D_<epoch seconds>` (negative before 1970).
pub fn is_date_value(value: &str) -> bool {
    let digits = value
        .strip_prefix("$D_")
        .map(|rest| rest.strip_prefix('-').unwrap_or(rest));
    digits.is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// A standard profile property whose value CleverTap checks (Email, Phone, Gender, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandardKey {
    /// `Email`: an email address (515).
    Email,
    /// `Phone`: E.164 (516).
    Phone,
    /// `Gender`: `M` or `F` (514).
    Gender,
    /// `Employed`: `Y` or `N` (517).
    Employed,
    /// `Education`: `School`, `College` or `Graduate` (518).
    Education,
    /// `Married`: `Y` or `N` (519).
    Married,
    /// `Age`: a number (520).
    Age,
    /// `DOB`: a `$D_<epoch seconds>` date.
    Dob,
}

impl StandardKey {
    /// The standard property a key names, if it names one.
    pub fn of(key: &str) -> Option<Self> {
        Some(match key {
            "Email" => StandardKey::Email,
            "Phone" => StandardKey::Phone,
            "Gender" => StandardKey::Gender,
            "Employed" => StandardKey::Employed,
            "Education" => StandardKey::Education,
            "Married" => StandardKey::Married,
            "Age" => StandardKey::Age,
            "DOB" => StandardKey::Dob,
            _ => return None,
        })
    }

    /// Checks the JSON value that would be sent.
    pub fn check(self, value: &serde_json::Value) -> Result<(), Violation> {
        let text = value.as_str();
        let one_of = |allowed: &[&str]| text.is_some_and(|t| allowed.contains(&t));
        match self {
            StandardKey::Email if !text.is_some_and(is_email) => Err(Violation::new(
                515,
                format!("Email {value} is not a valid email address"),
            )),
            StandardKey::Phone if !text.is_some_and(is_e164) => Err(Violation::new(
                516,
                format!(
                    "Phone {value} is not a valid phone number; use E.164: `+` then country code and number, e.g. +14155551234"
                ),
            )),
            StandardKey::Gender if !one_of(&["M", "F"]) => Err(Violation::new(
                514,
                format!("Gender {value} must be `M` or `F`"),
            )),
            StandardKey::Employed if !one_of(&["Y", "N"]) => Err(Violation::new(
                517,
                format!("Employed {value} must be `Y` or `N`"),
            )),
            StandardKey::Education if !one_of(&["School", "College", "Graduate"]) => {
                Err(Violation::new(
                    518,
                    format!("Education {value} must be `School`, `College` or `Graduate`"),
                ))
            }
            StandardKey::Married if !one_of(&["Y", "N"]) => Err(Violation::new(
                519,
                format!("Married {value} must be `Y` or `N`"),
            )),
            StandardKey::Age if !value.is_number() => {
                Err(Violation::new(520, format!("Age {value} must be a number")))
            }
            StandardKey::Dob if !text.is_some_and(is_date_value) => Err(Violation::new(
                0,
                format!("DOB {value} must be a date: `$D_<epoch seconds>`, ISO-8601 or YYYY-MM-DD"),
            )),
            _ => Ok(()),
        }
    }
}

/// Checks a standard profile property (Email, Phone, Gender, ...). `value` is the JSON
/// value that would be sent. Other keys pass.
pub fn check_standard_profile_key(key: &str, value: &serde_json::Value) -> Result<(), Violation> {
    StandardKey::of(key).map_or(Ok(()), |standard| standard.check(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phone_numbers() {
        for (phone, valid) in [
            ("+14155551234", true),
            ("+919213231415", true),
            ("14155551234", false),
            ("+44+441234", false),
            ("223", false),
            ("+0123456789", false),
            ("+1234567890123456", false),
        ] {
            assert_eq!(is_e164(phone), valid, "{phone}");
        }
    }

    #[test]
    fn emails() {
        for (email, valid) in [
            ("jack@gmail.com", true),
            ("a.b+c@sub.example.co", true),
            ("$$$$$", false),
            ("a@b", false),
            ("a @b.com", false),
            ("@b.com", false),
            ("a@b..com", false),
            ("a@.b.com", false),
            ("a@b.com.", false),
            ("a\u{b}b@c.com", false),
            ("a\u{a0}b@c.com", false),
            ("ünï@cödé.com", true),
        ] {
            assert_eq!(is_email(email), valid, "{email}");
        }
    }

    #[test]
    fn standard_profile_keys() {
        let code = |key: &str, value: serde_json::Value| {
            check_standard_profile_key(key, &value)
                .err()
                .map(|v| v.code)
        };
        assert_eq!(code("Gender", json!("M")), None);
        assert_eq!(code("Gender", json!("Male")), Some(514));
        assert_eq!(code("Email", json!("$$$$$")), Some(515));
        assert_eq!(code("Phone", json!("223")), Some(516));
        assert_eq!(code("Employed", json!("yes")), Some(517));
        assert_eq!(code("Education", json!("PhD")), Some(518));
        assert_eq!(code("Married", json!("Y")), None);
        assert_eq!(code("Age", json!("aa")), Some(520));
        assert_eq!(code("Age", json!(31)), None);
        assert_eq!(code("DOB", json!("$D_1487576752")), None);
        assert_eq!(code("DOB", json!("1990-01-01")), Some(0));
        assert_eq!(code("Customer Type", json!("anything")), None);
    }

    #[test]
    fn keys_and_reserved_events() {
        assert!(check_key("Customer Type").is_ok());
        assert!(check_key("a.b").is_err());
        assert!(check_key(&"k".repeat(121)).is_err());
        assert!(is_reserved_event("app launched"));
        assert!(is_reserved_event("AppLaunched"));
        assert!(!is_reserved_event("Product Viewed"));
    }
}
