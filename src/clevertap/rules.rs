//! CleverTap's rules for records, with the error codes CleverTap answers when one is broken
//! and the page that documents each: one table ([`RULES`]) that both sides keep to.
//!
//! `mapping` checks records against these rules before sending them, and the sandbox (and
//! `tapline replay`, through `clevertap::records`) judges records by them as CleverTap does.
//! Sources are named as in docs/clevertap-api.md: [DOC] a developer.clevertap.com page,
//! [REC] a recorded real response, [CT-CODE] CleverTap's own code.
//!
//! Kept in one file though it is long: the table is read as one list (by `tapline rules`,
//! by the tests that hold each rule to its page, and by whoever checks it against
//! CleverTap's docs), and the checks beside it are the table's own.

/// One of CleverTap's rules for records.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// A short name, for the table and tests.
    pub name: &'static str,
    /// CleverTap's per-record error code when a record breaks it (509–535), or 0 when
    /// CleverTap has none (tapline reports `invalid_record`).
    pub code: u16,
    /// What it asks of a record.
    pub asks: &'static str,
    /// Where CleverTap documents it.
    pub source: &'static str,
}

impl Rule {
    /// A violation of this rule, with a message naming the key and value.
    pub fn broken(&'static self, message: impl Into<String>) -> Violation {
        Violation {
            rule: self,
            code: self.code,
            message: message.into(),
        }
    }
}

/// Profile property names (and the columns that become them).
pub static KEY_NAME: Rule = Rule {
    name: "key name",
    code: 0,
    asks: "a profile key is 1 to 120 bytes, without % > < ! | & . : ; $ ' \" \\ # or control characters",
    source: "[DOC] upload-user-profiles-api (120), platform-considerations (\"User Profiles\": characters); control characters: tapline's own",
};
/// Event property names: a profile key's rules, but `#` is allowed.
pub static EVENT_KEY_NAME: Rule = Rule {
    name: "event key name",
    code: 0,
    asks: "an event property name is 1 to 120 bytes, without % > < ! | & . : ; $ ' \" \\ or control characters (`#` is allowed)",
    source: "[DOC] upload-events-api (120), platform-considerations (\"Events → General Constraints\": characters); control characters: tapline's own",
};
/// Property values.
pub static VALUE_LENGTH: Rule = Rule {
    name: "value length",
    code: 0,
    asks: "a string value is at most 512 bytes",
    source: "[DOC] upload-user-profiles-api, upload-events-api",
};
/// Identities.
pub static IDENTITY: Rule = Rule {
    name: "identity",
    code: 523,
    asks: "a record names its user by `identity`, `objectId`, `FBID` or `GPID`, a string or number under 120 characters (no control characters: tapline's own)",
    source: "[DOC] api-errors (523); [REC] clevertap-ruby cassettes (\"under 120 chars\")",
};
/// The record's type.
pub static RECORD_TYPE: Rule = Rule {
    name: "record type",
    code: 524,
    asks: "`type` is `profile`, `event` or `token`, and `profileData` an object",
    source: "[DOC] api-errors (524)",
};
/// `ts`.
pub static TIMESTAMP: Rule = Rule {
    name: "timestamp",
    code: 525,
    asks: "`ts` is Unix epoch seconds, above 0",
    source: "[DOC] upload-user-profiles-api, upload-events-api, api-errors (525); [REC] clevertap-ruby cassettes (`ts: 0`)",
};
/// Event names.
pub static EVENT_NAME: Rule = Rule {
    name: "event name",
    code: 509,
    asks: "an event has an `evtName`",
    source: "[DOC] api-errors (509); [REC] clevertap-ruby cassettes",
};
/// The characters of event names.
pub static EVENT_NAME_CHARACTERS: Rule = Rule {
    name: "event name characters",
    code: 512,
    asks: "an event name keeps a key name's rules, but `#` is allowed",
    source: "[DOC] platform-considerations (Corrections 7); the code is tapline's choice: CleverTap documents none for it",
};
/// System events.
pub static SYSTEM_EVENT: Rule = Rule {
    name: "system event",
    code: 513,
    asks: "an upload does not raise a system event (`App Launched`, `Notification Sent`, ...)",
    source: "[DOC] api-errors (513), platform-considerations (reserved events); [REC] rudder-server error_reporting_test",
};
/// Discarded events.
pub static DISCARDED_EVENT: Rule = Rule {
    name: "discarded event",
    code: 528,
    asks: "an upload does not raise an event the account discarded",
    source: "[DOC] api-errors (528)",
};
/// The shape of event data.
pub static EVENT_STRUCTURE: Rule = Rule {
    name: "event structure",
    code: 512,
    asks: "`evtData` is an object of plain values; only the Charged event has `Items`, a list of at most 256 objects (CleverTap's SDKs send at most 50, code 522)",
    source: "[DOC] api-errors (512), platform-considerations (Items, 256; Corrections 4); [CT-CODE] web SDK validator.js, Android ValidationError.CHARGED_EVENT_TOO_MANY_ITEMS (50)",
};
/// Profile values that are objects.
pub static PROFILE_COMMAND: Rule = Rule {
    name: "profile command",
    code: 512,
    asks: "a profile value that is an object is a command: `$add`, `$remove`, `$set` with strings, `$incr`, `$decr` with a number",
    source: "[CT-CODE] clevertap-data-upload profile_event_uploads.go (`$add`), clevertap-android-sdk Constants (the others)",
};
/// Multi-value properties.
pub static MULTI_VALUE: Rule = Rule {
    name: "multi-value property",
    code: 0,
    asks: "a multi-value property holds at most 100 values, all strings",
    source: "[DOC] platform-considerations",
};
/// Properties per event.
pub static EVENT_PROPERTIES: Rule = Rule {
    name: "event properties",
    code: 522,
    asks: "an event has at most 100 properties, unless the account has more (`limits: {event_properties: N}`)",
    source: "[DOC] upload-events-api (2026-06-30: 100 by default, configurable; Corrections 3), api-errors (522)",
};
/// `Gender`.
pub static GENDER: Rule = Rule {
    name: "Gender",
    code: 514,
    asks: "`Gender` is `M` or `F`",
    source: "[DOC] upload-user-profiles-api, api-errors (514); [REC] clevertap-ruby cassettes",
};
/// `Email`.
pub static EMAIL: Rule = Rule {
    name: "Email",
    code: 515,
    asks: "`Email` is an email address",
    source: "[DOC] api-errors (515); [REC] clevertap-ruby cassettes",
};
/// `Phone`.
pub static PHONE: Rule = Rule {
    name: "Phone",
    code: 516,
    asks: "`Phone` is `+`, the country code and the number, at most 15 digits (E.164); no minimum length is documented",
    source: "[DOC] upload-user-profiles-api (format; Corrections 8), api-errors (516)",
};
/// `Employed`.
pub static EMPLOYED: Rule = Rule {
    name: "Employed",
    code: 517,
    asks: "`Employed` is `Y` or `N`",
    source: "[DOC] upload-user-profiles-api, api-errors (517)",
};
/// `Education`.
pub static EDUCATION: Rule = Rule {
    name: "Education",
    code: 518,
    asks: "`Education` is `School`, `College` or `Graduate`",
    source: "[DOC] upload-user-profiles-api, api-errors (518)",
};
/// `Married`.
pub static MARRIED: Rule = Rule {
    name: "Married",
    code: 519,
    asks: "`Married` is `Y` or `N`",
    source: "[DOC] upload-user-profiles-api, api-errors (519)",
};
/// `Age`.
pub static AGE: Rule = Rule {
    name: "Age",
    code: 520,
    asks: "`Age` is a number, or a string of one (`\"18\"`)",
    source: "[DOC] api-errors (520); [REC] clevertap-ruby partially_succeds.yml accepted `\"Age\": \"18\"`",
};
/// Dates.
pub static DATE: Rule = Rule {
    name: "date",
    code: 0,
    asks: "a date value (`DOB`, a `type: date` column) is `$D_<epoch seconds>`",
    source: "[DOC] api-faqs",
};
/// A token's `objectId`.
pub static TOKEN_OBJECT_ID: Rule = Rule {
    name: "token objectId",
    code: 530,
    asks: "a device token names its profile by `objectId`, under 120 characters",
    source: "[DOC] upload-device-tokens-api, api-errors (530)",
};
/// `tokenData`.
pub static TOKEN_DATA: Rule = Rule {
    name: "token data",
    code: 531,
    asks: "a device token has a `tokenData` object",
    source: "[DOC] upload-device-tokens-api, api-errors (531)",
};
/// A token's `id`.
pub static TOKEN_ID: Rule = Rule {
    name: "token id",
    code: 532,
    asks: "a device token has its `id` (the token)",
    source: "[DOC] upload-device-tokens-api, api-errors (532)",
};
/// A token's `type`.
pub static TOKEN_TYPE: Rule = Rule {
    name: "token type",
    code: 533,
    asks: "a device token has a `type`",
    source: "[DOC] upload-device-tokens-api, api-errors (533)",
};
/// The token types.
pub static TOKEN_TYPE_KNOWN: Rule = Rule {
    name: "token type known",
    code: 534,
    asks: "a token's `type` is one the API takes: apns, fcm or gcm (chrome, wns and mpns are sent with a warning: the doc does not list them)",
    source: "[DOC] upload-device-tokens-api (note: \"APNS, FCM and GCM\"), api-errors (534: \"Token 'type' is not valid for 'objectId'\"); [3P] rudder-transformer ALLOWED_DEVICE_TOKEN_TYPES (the six)",
};
/// Web push keys.
pub static TOKEN_KEYS: Rule = Rule {
    name: "token keys",
    code: 535,
    asks: "a chrome token has `keys` with `p256dh` and `auth`; other tokens have none",
    source: "[DOC] upload-device-tokens-api, api-errors (535)",
};

/// Subscription changes.
pub static SUBSCRIPTION: Rule = Rule {
    name: "subscription",
    code: 0,
    asks: "a subscription change has `type` (email or phone), `value` and `status` (Unsubscribe or Resubscribe)",
    source: "[DOC] subscribe-api",
};
/// Phone disassociation.
pub static DISASSOCIATION: Rule = Rule {
    name: "disassociation",
    code: 0,
    asks: "a disassociation names a phone number in `value`",
    source: "[DOC] disassociate-api",
};
/// Profile deletion.
pub static DELETION: Rule = Rule {
    name: "deletion",
    code: 0,
    asks: "a deletion names a profile by `identity` or by `guid` (CleverTap ID), and a request holds one kind",
    source: "[DOC] delete-user-profile-api (Corrections 6)",
};

/// Every rule.
pub static RULES: [&Rule; 31] = [
    &KEY_NAME,
    &EVENT_KEY_NAME,
    &VALUE_LENGTH,
    &IDENTITY,
    &RECORD_TYPE,
    &TIMESTAMP,
    &EVENT_NAME,
    &EVENT_NAME_CHARACTERS,
    &SYSTEM_EVENT,
    &DISCARDED_EVENT,
    &EVENT_STRUCTURE,
    &PROFILE_COMMAND,
    &MULTI_VALUE,
    &EVENT_PROPERTIES,
    &GENDER,
    &EMAIL,
    &PHONE,
    &EMPLOYED,
    &EDUCATION,
    &MARRIED,
    &AGE,
    &DATE,
    &TOKEN_OBJECT_ID,
    &TOKEN_DATA,
    &TOKEN_ID,
    &TOKEN_TYPE,
    &TOKEN_TYPE_KNOWN,
    &TOKEN_KEYS,
    &SUBSCRIPTION,
    &DISASSOCIATION,
    &DELETION,
];

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

/// The device token types the upload-device-tokens API documents ([DOC]
/// upload-device-tokens-api, note; docs/clevertap-api.md, second audit, 4).
pub const TOKEN_TYPES: [&str; 3] = ["apns", "fcm", "gcm"];

/// Token types RudderStack's transformer also sends (`ALLOWED_DEVICE_TOKEN_TYPES`), which the
/// doc does not list: sent, with a warning naming where they come from.
pub const UNDOCUMENTED_TOKEN_TYPES: [&str; 3] = ["chrome", "wns", "mpns"];

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

/// A broken rule: the rule, CleverTap's code for it and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: &'static Rule,
    /// CleverTap's per-record error code (509–535), or 0 when CleverTap has none.
    pub code: u16,
    /// What is wrong, naming the key and value.
    pub message: String,
}

/// Event names are compared ignoring case and spaces ("Sign Up" = "signup").
pub fn normalize_event_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether two event names are one to CleverTap (case and spaces ignored), without
/// allocating.
pub fn same_event_name(a: &str, b: &str) -> bool {
    fn letters(name: &str) -> impl Iterator<Item = u8> + '_ {
        name.bytes()
            .filter(|byte| !byte.is_ascii_whitespace())
            .map(|byte| byte.to_ascii_lowercase())
    }
    fn chars(name: &str) -> impl Iterator<Item = char> + '_ {
        name.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
    }
    if a.is_ascii() && b.is_ascii() {
        letters(a).eq(letters(b))
    } else {
        chars(a).eq(chars(b))
    }
}

/// Whether an event name is a system event that uploads may not raise.
pub fn is_reserved_event(name: &str) -> bool {
    RESERVED_EVENTS
        .iter()
        .any(|reserved| same_event_name(reserved, name))
}

/// Checks a profile property name.
pub fn check_key(key: &str) -> Result<(), Violation> {
    check_name(key, &FORBIDDEN_KEY_BYTES, &KEY_NAME)
}

/// Checks an event property name: a profile key's rules, but `#` is allowed.
pub fn check_event_key(key: &str) -> Result<(), Violation> {
    check_name(key, &FORBIDDEN_EVENT_NAME_BYTES, &EVENT_KEY_NAME)
}

/// Checks an event name: a key name's rules, but `#` is allowed.
pub fn check_event_name(name: &str) -> Result<(), Violation> {
    check_name(name, &FORBIDDEN_EVENT_NAME_BYTES, &EVENT_NAME_CHARACTERS)
}

fn check_name(key: &str, forbidden: &[bool; 256], rule: &'static Rule) -> Result<(), Violation> {
    if key.trim().is_empty() {
        return Err(rule.broken("an empty name"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(rule.broken(format!("name `{key}` is longer than {MAX_KEY_BYTES} bytes")));
    }
    if let Some(control) = control_character(key) {
        return Err(rule.broken(format!(
            "name `{}` holds the control character {}",
            key.escape_debug(),
            control.escape_unicode()
        )));
    }
    // Every forbidden character is ASCII, so scanning bytes is exact; this runs per column
    // per row, so it looks bytes up in a table.
    if let Some(bad) = key
        .bytes()
        .find(|&b| forbidden[usize::from(b)])
        .map(char::from)
    {
        return Err(rule.broken(format!(
            "name `{key}` contains `{bad}`, which CleverTap does not allow in names"
        )));
    }
    Ok(())
}

/// Checks a string value's length.
pub fn check_value_length(key: &str, value: &str) -> Result<(), Violation> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(VALUE_LENGTH.broken(format!(
            "the value of `{key}` is {} bytes; CleverTap keeps at most {MAX_VALUE_BYTES}",
            value.len()
        )));
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
        return Err(IDENTITY.broken(format!("`{field}` is empty")));
    }
    if let Some(control) = control_character(value) {
        return Err(IDENTITY.broken(format!(
            "`{field}` holds the control character {}; remove it from the source",
            control.escape_unicode()
        )));
    }
    // A character is at least a byte: only a long value needs counting.
    if value.len() >= MAX_IDENTITY_CHARS && value.chars().count() >= MAX_IDENTITY_CHARS {
        return Err(IDENTITY.broken(format!(
            "`{field}` must be under {MAX_IDENTITY_CHARS} characters"
        )));
    }
    Ok(())
}

/// An E.164 phone number: `+`, a country code and number, at most 15 digits in all.
/// CleverTap documents no minimum length (Corrections 8), so tapline sets none.
pub fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A decimal number written as text (`18`, `-2.5`), as CleverTap takes for `Age`.
fn is_number(text: &str) -> bool {
    text.trim().parse::<f64>().is_ok_and(f64::is_finite)
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
            StandardKey::Email if !text.is_some_and(is_email) => Err(EMAIL.broken(format!("Email {value} is not a valid email address"),
            )),
            StandardKey::Phone if !text.is_some_and(is_e164) => Err(PHONE.broken(format!(
                    "Phone {value} is not a valid phone number; use E.164: `+` then country code and number, e.g. +14155551234"
                ),
            )),
            StandardKey::Gender if !one_of(&["M", "F"]) => Err(GENDER.broken(format!("Gender {value} must be `M` or `F`"),
            )),
            StandardKey::Employed if !one_of(&["Y", "N"]) => Err(EMPLOYED.broken(format!("Employed {value} must be `Y` or `N`"),
            )),
            StandardKey::Education if !one_of(&["School", "College", "Graduate"]) => {
                Err(EDUCATION.broken(format!("Education {value} must be `School`, `College` or `Graduate`"),
                ))
            }
            StandardKey::Married if !one_of(&["Y", "N"]) => Err(MARRIED.broken(format!("Married {value} must be `Y` or `N`"),
            )),
            StandardKey::Age if !value.is_number() && !text.is_some_and(is_number) => {
                Err(AGE.broken(format!("Age {value} must be a number")))
            }
            StandardKey::Dob if !text.is_some_and(is_date_value) => Err(DATE.broken(format!("DOB {value} must be a date: `$D_<epoch seconds>`, ISO-8601 or YYYY-MM-DD"),
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
mod tests;
