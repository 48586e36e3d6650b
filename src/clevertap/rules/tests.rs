//! Tests of the rule table: each rule's check, its code and the page that documents it.

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
        ("+6834002", true),
        ("+", false),
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
    assert_eq!(code("Age", json!("18")), None);
    assert_eq!(code("DOB", json!("$D_1487576752")), None);
    assert_eq!(code("DOB", json!("1990-01-01")), Some(0));
    assert_eq!(code("Customer Type", json!("anything")), None);
}

#[test]
fn every_rule_names_its_source_and_its_code_once() {
    for rule in RULES {
        assert!(
            ["[DOC]", "[REC]", "[CT-CODE]"]
                .iter()
                .any(|kind| rule.source.contains(kind)),
            "{rule:?}"
        );
        assert!(!rule.asks.is_empty() && !rule.name.is_empty());
    }
    let named: std::collections::HashSet<&str> = RULES.iter().map(|rule| rule.name).collect();
    assert_eq!(named.len(), RULES.len(), "two rules share a name");
    assert_eq!(check_key("a.b").unwrap_err().rule, &KEY_NAME);
    assert_eq!(
        check_event_name("a.b").unwrap_err().rule,
        &EVENT_NAME_CHARACTERS
    );
    assert_eq!(
        check_standard_profile_key("Phone", &serde_json::json!("1"))
            .unwrap_err()
            .rule,
        &PHONE
    );
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
