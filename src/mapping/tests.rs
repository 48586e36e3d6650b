//! Row → record mapping and client-side checks, case by case.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::config::model::ArrayOperation;

fn row(fields: Value) -> Row {
    let Value::Object(map) = fields else {
        panic!("a row is an object")
    };
    Row {
        line: 2,
        fields: map.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
        record: None,
    }
}

fn profiles(operation: ArrayOperation) -> Target {
    Target::Profiles {
        array_operation: operation,
    }
}

/// Maps a row and compares: `Ok(record)` or `Err(code)`.
fn check(target: Target, fields: Value, expected: Result<Value, &str>) {
    let row = row(fields.clone());
    let result = map_row(target, &row);
    match (result, expected) {
        (Ok(record), Ok(expected)) => assert_eq!(record, expected, "row {fields}"),
        (Err(invalid), Err(code)) => {
            assert_eq!(invalid.code, code, "row {fields}: {}", invalid.reason)
        }
        (result, expected) => panic!("row {fields}: got {result:?}, expected {expected:?}"),
    }
}

#[test]
fn profile_rows() {
    let replace = profiles(ArrayOperation::Replace);
    check(
        replace,
        json!({"identity": "u1", "Name": "Jo", "Email": "jo@example.com", "Empty": "", "ts": "1700000000"}),
        Ok(
            json!({"type": "profile", "identity": "u1", "profileData": {"Name": "Jo", "Email": "jo@example.com"}, "ts": 1700000000}),
        ),
    );
    check(
        replace,
        json!({"objectId": "abc", "FBID": "f1", "Age": "31", "MSG-sms": "false", "DOB": "1990-01-02"}),
        Ok(
            json!({"type": "profile", "objectId": "abc", "FBID": "f1", "profileData": {"Age": 31, "MSG-sms": false, "DOB": "$D_631238400"}}),
        ),
    );
    check(
        replace,
        json!({"objectid": "abc"}),
        Ok(json!({"type": "profile", "objectId": "abc", "profileData": {}})),
    );
    check(
        replace,
        json!({"identity": 42, "Score": 1.5, "VIP": true}),
        Ok(json!({"type": "profile", "identity": 42, "profileData": {"Score": 1.5, "VIP": true}})),
    );
    check(
        replace,
        json!({"DOB": "$D_1487576752", "identity": "u"}),
        Ok(json!({"type": "profile", "identity": "u", "profileData": {"DOB": "$D_1487576752"}})),
    );
}

#[test]
fn profile_rule_violations() {
    let replace = profiles(ArrayOperation::Replace);
    for (fields, code) in [
        (json!({"Name": "no identity"}), "523"),
        (json!({"identity": ""}), "523"),
        (json!({"identity": "x".repeat(120)}), "523"),
        (json!({"identity": "u", "Email": "not-an-email"}), "515"),
        (json!({"identity": "u", "Phone": "5551234"}), "516"),
        (json!({"identity": "u", "Gender": "Male"}), "514"),
        (json!({"identity": "u", "Employed": "yes"}), "517"),
        (json!({"identity": "u", "Education": "PhD"}), "518"),
        (json!({"identity": "u", "Married": "maybe"}), "519"),
        (json!({"identity": "u", "Age": "old"}), "520"),
        (json!({"identity": "u", "DOB": "someday"}), "invalid_record"),
        (
            json!({"identity": "u", "MSG-email": "nope"}),
            "invalid_record",
        ),
        (json!({"identity": "u", "a.b": "x"}), "invalid_record"),
        (
            json!({"identity": "u", "Bio": "x".repeat(513)}),
            "invalid_record",
        ),
        (
            json!({"identity": "u", "Nested": {"a": 1}}),
            "invalid_record",
        ),
        (json!({"identity": "u", "ts": "0"}), "525"),
        (json!({"identity": "u", "ts": "1700000000000"}), "525"),
        (json!({"identity": "u", "ts": "yesterday"}), "525"),
    ] {
        check(replace, fields, Err(code));
    }
    check(
        replace,
        json!({"identity": "u", "Bio": "x".repeat(512)}),
        Ok(json!({"type": "profile", "identity": "u", "profileData": {"Bio": "x".repeat(512)}})),
    );
}

#[test]
fn multi_value_properties_follow_the_array_operation() {
    let csv_cell = json!({"identity": "u", "Tags": "[\"a\",\"b\"]"});
    check(
        profiles(ArrayOperation::Replace),
        csv_cell.clone(),
        Ok(json!({"type": "profile", "identity": "u", "profileData": {"Tags": ["a", "b"]}})),
    );
    check(
        profiles(ArrayOperation::Append),
        csv_cell.clone(),
        Ok(
            json!({"type": "profile", "identity": "u", "profileData": {"Tags": {"$add": ["a", "b"]}}}),
        ),
    );
    check(
        profiles(ArrayOperation::Remove),
        json!({"identity": "u", "Tags": ["a"]}),
        Ok(
            json!({"type": "profile", "identity": "u", "profileData": {"Tags": {"$remove": ["a"]}}}),
        ),
    );
    check(
        profiles(ArrayOperation::Replace),
        json!({"identity": "u", "Tags": [1, 2]}),
        Err("invalid_record"),
    );
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    check(
        profiles(ArrayOperation::Replace),
        json!({"identity": "u", "Tags": many}),
        Err("invalid_record"),
    );
    check(
        profiles(ArrayOperation::Replace),
        json!({"identity": "u", "Tags": ["x".repeat(513)]}),
        Err("invalid_record"),
    );
    // Text that only looks like a list stays text.
    check(
        profiles(ArrayOperation::Replace),
        json!({"identity": "u", "Note": "[draft"}),
        Ok(json!({"type": "profile", "identity": "u", "profileData": {"Note": "[draft"}})),
    );
}

#[test]
fn event_rows() {
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Product Viewed", "ts": "2024-05-01T10:00:00Z", "Price": "59.99"}),
        Ok(
            json!({"type": "event", "identity": "u1", "evtName": "Product Viewed", "ts": 1714557600, "evtData": {"Price": "59.99"}}),
        ),
    );
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Charged", "ts": "2024-05-01 10:00:00.250", "Amount": 300,
               "Items[1].Name": "B", "Items[0].Name": "A", "Items[0].Qty": "2"}),
        Ok(
            json!({"type": "event", "identity": "u1", "evtName": "Charged", "ts": 1714557600,
                  "evtData": {"Amount": 300, "Items": [{"Name": "A", "Qty": "2"}, {"Name": "B"}]}}),
        ),
    );
    check(
        Target::Events,
        json!({"objectId": "g1", "evtName": "Charged", "Items": [{"Name": "A"}], "ts": 1714557600}),
        Ok(
            json!({"type": "event", "objectId": "g1", "evtName": "Charged", "ts": 1714557600, "evtData": {"Items": [{"Name": "A"}]}}),
        ),
    );
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Signed Up", "ts": "2024-05-01T12:00:00+02:00"}),
        Ok(
            json!({"type": "event", "identity": "u1", "evtName": "Signed Up", "ts": 1714557600, "evtData": {}}),
        ),
    );
}

#[test]
fn event_rule_violations() {
    for (fields, code) in [
        (json!({"identity": "u"}), "509"),
        (json!({"identity": "u", "evtName": ""}), "509"),
        (json!({"evtName": "Viewed"}), "523"),
        (json!({"identity": "u", "evtName": "App Launched"}), "513"),
        (
            json!({"identity": "u", "evtName": "notification clicked"}),
            "513",
        ),
        (json!({"identity": "u", "evtName": "x", "ts": "-5"}), "525"),
        (
            json!({"identity": "u", "evtName": "x", "Tags": ["a"]}),
            "512",
        ),
        (
            json!({"identity": "u", "evtName": "x", "Items": "nope"}),
            "512",
        ),
        (
            json!({"identity": "u", "evtName": "x", "Items[0].a": "1", "Items": [{"a": 1}]}),
            "512",
        ),
        (
            json!({"identity": "u", "evtName": "x", "bad!key": "1"}),
            "invalid_record",
        ),
    ] {
        check(Target::Events, fields, Err(code));
    }
}

#[test]
fn timestamps() {
    for (input, expected) in [
        (json!(1714557600), Ok(1714557600)),
        (json!("1714557600"), Ok(1714557600)),
        (json!("2024-05-01T10:00:00Z"), Ok(1714557600)),
        (json!("2024-05-01T10:00:00.5Z"), Ok(1714557600)),
        (json!("2024-05-01 10:00:00"), Ok(1714557600)),
        (json!("2024-05-01T10:00:00"), Ok(1714557600)),
        (json!("2024-05-01 10:00:00 UTC"), Ok(1714557600)),
        (json!(0), Err(())),
        (json!(1714557600000_i64), Err(())),
        (json!("May 1st"), Err(())),
        (json!(true), Err(())),
    ] {
        assert_eq!(
            parse_timestamp(&input, chrono_tz::Tz::UTC).map_err(|_| ()),
            expected,
            "{input}"
        );
    }
}

#[test]
fn operation_rows() {
    check(
        Target::DeviceTokens,
        json!({"objectId": "g1", "id": "tok", "type": "FCM", "p256dh": "", "auth": ""}),
        Ok(json!({"type": "token", "objectId": "g1", "tokenData": {"id": "tok", "type": "fcm"}})),
    );
    check(
        Target::DeviceTokens,
        json!({"objectId": "g1", "id": "https://push", "type": "chrome", "p256dh": "k", "auth": "a"}),
        Ok(
            json!({"type": "token", "objectId": "g1", "tokenData": {"id": "https://push", "type": "chrome", "keys": {"p256dh": "k", "auth": "a"}}}),
        ),
    );
    check(
        Target::Demerge,
        json!({"identity": 42, "note": "x"}),
        Ok(json!("42")),
    );
    check(
        Target::Subscriptions,
        json!({"type": "EMAIL", "value": "a@b.co", "status": "unsubscribe"}),
        Ok(json!({"type": "email", "value": "a@b.co", "status": "Unsubscribe"})),
    );
    check(
        Target::DisassociatePhone,
        json!({"value": "+14155550101"}),
        Ok(json!({"type": "phone", "value": "+14155550101"})),
    );
    // An identity is deleted exactly as an upload sent it: never trimmed.
    check(
        Target::DeleteProfiles,
        json!({"identity": " u-1 ", "guid": "", "note": "x"}),
        Ok(json!({"identity": " u-1 "})),
    );
    check(
        Target::Demerge,
        json!({"identity": " alice"}),
        Ok(json!(" alice")),
    );
    check(
        Target::Subscriptions,
        json!({"type": " email ", "value": "a@b.co", "status": " Resubscribe"}),
        Ok(json!({"type": "email", "value": "a@b.co", "status": "Resubscribe"})),
    );
    check(
        Target::DeleteProfiles,
        json!({"guid": "__a1b2"}),
        Ok(json!({"guid": "__a1b2"})),
    );
}

#[test]
fn operation_rule_violations() {
    for (target, fields, code) in [
        (
            Target::DeviceTokens,
            json!({"id": "t", "type": "fcm"}),
            "530",
        ),
        (
            Target::DeviceTokens,
            json!({"objectId": "g", "type": "fcm"}),
            "532",
        ),
        (
            Target::DeviceTokens,
            json!({"objectId": "g", "id": "t"}),
            "533",
        ),
        (
            Target::DeviceTokens,
            json!({"objectId": "g", "id": "t", "type": "sms"}),
            "534",
        ),
        (
            Target::DeviceTokens,
            json!({"objectId": "g", "id": "t", "type": "chrome"}),
            "535",
        ),
        (
            Target::DeviceTokens,
            json!({"objectId": "g", "id": "t", "type": "fcm", "p256dh": "k", "auth": "a"}),
            "535",
        ),
        (Target::Demerge, json!({"identity": ""}), "523"),
        (Target::Demerge, json!({"identity": "x".repeat(130)}), "523"),
        (Target::DeleteProfiles, json!({"note": "x"}), "523"),
        (Target::DeleteProfiles, json!({"guid": "g\u{1b}[2J"}), "523"),
        (
            Target::DeleteProfiles,
            json!({"identity": "u", "guid": "g"}),
            "invalid_record",
        ),
        (
            Target::Subscriptions,
            json!({"type": "sms", "value": "+14155550101", "status": "Unsubscribe"}),
            "invalid_record",
        ),
        (
            Target::Subscriptions,
            json!({"type": "phone", "value": "0101", "status": "Unsubscribe"}),
            "516",
        ),
        (
            Target::Subscriptions,
            json!({"type": "email", "value": "nope", "status": "Unsubscribe"}),
            "515",
        ),
        (
            Target::Subscriptions,
            json!({"type": "email", "value": "a@b.co"}),
            "invalid_record",
        ),
        (
            Target::DisassociatePhone,
            json!({"value": "14155550101"}),
            "516",
        ),
        (
            Target::DisassociatePhone,
            json!({"other": "x"}),
            "invalid_record",
        ),
    ] {
        check(target, fields, Err(code));
    }
}

#[test]
fn one_mapper_follows_rows_whose_columns_change() {
    // JSON Lines rows each name their own columns: what a column is must follow its name,
    // not its position in the previous row.
    let mut mapper = Mapper::new(profiles(ArrayOperation::Replace));
    let rows = [
        json!({"identity": "u1", "Email": "a@example.com"}),
        json!({"Email": "b@example.com", "identity": "u2"}),
        json!({"identity": "u3", "Email": "not an email"}),
        json!({"identity": "u4", "Bad.Name": "x"}),
        json!({"identity": "u5", "Good Name": "x"}),
    ];
    let results: Vec<Result<Value, String>> = rows
        .into_iter()
        .map(|fields| {
            let row = row(fields);
            mapper
                .map(&row)
                .map(Record::into_json)
                .map_err(|invalid| invalid.code.to_string())
        })
        .collect();
    assert_eq!(
        results,
        [
            Ok(
                json!({"type": "profile", "identity": "u1", "profileData": {"Email": "a@example.com"}})
            ),
            Ok(
                json!({"type": "profile", "identity": "u2", "profileData": {"Email": "b@example.com"}})
            ),
            Err("515".to_string()),
            Err("invalid_record".to_string()),
            Ok(json!({"type": "profile", "identity": "u5", "profileData": {"Good Name": "x"}})),
        ]
    );
}

#[test]
fn records_are_written_as_serde_json_writes_them() {
    // The request body is written by hand for speed; it must be the JSON serde_json writes
    // for the same value, key order included.
    let mut mapper = Mapper::new(Target::Events);
    let row = row(json!({
        "identity": "u\"1", "ts": "1700000000", "evtName": "Charged",
        "Amount": 12.5, "Note": "tab\there", "Items[0].Name": "Book"
    }));
    let record = mapper.map(&row).unwrap();
    let mut written = Vec::new();
    record.write_json(&mut written);
    assert_eq!(
        String::from_utf8(written).unwrap(),
        r#"{"type":"event","identity":"u\"1","ts":1700000000,"evtName":"Charged","evtData":{"Amount":12.5,"Note":"tab\there","Items":[{"Name":"Book"}]}}"#
    );
}

#[test]
fn records_follow_clevertap_s_current_rules() {
    let replace = profiles(ArrayOperation::Replace);
    // identity and objectId: the objectId identifies the profile, the identity is attached
    // to it as a property; an event keeps the identity alone.
    check(
        replace,
        json!({"identity": "u1", "objectId": "o1", "Name": "Jo"}),
        Ok(
            json!({"type": "profile", "objectId": "o1", "profileData": {"Name": "Jo", "identity": "u1"}}),
        ),
    );
    check(
        Target::Events,
        json!({"objectId": "o1", "identity": "u1", "evtName": "Viewed"}),
        Ok(json!({"type": "event", "identity": "u1", "evtName": "Viewed", "evtData": {}})),
    );
    check(
        Target::Events,
        json!({"objectId": "o1", "evtName": "Viewed"}),
        Ok(json!({"type": "event", "objectId": "o1", "evtName": "Viewed", "evtData": {}})),
    );
    // `Items` only on Charged.
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Viewed", "Items[0].Name": "Book"}),
        Err("512"),
    );
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "charged", "Items[0].Name": "Book"}),
        Ok(
            json!({"type": "event", "identity": "u1", "evtName": "charged", "evtData": {"Items": [{"Name": "Book"}]}}),
        ),
    );
    // `#` is allowed in event names and event property names, not in profile keys (second
    // audit, 1: platform considerations, "Events → General Constraints").
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Level #2"}),
        Ok(json!({"type": "event", "identity": "u1", "evtName": "Level #2", "evtData": {}})),
    );
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Viewed", "Tag#": "x"}),
        Ok(
            json!({"type": "event", "identity": "u1", "evtName": "Viewed", "evtData": {"Tag#": "x"}}),
        ),
    );
    check(
        Target::Events,
        json!({"identity": "u1", "evtName": "Charged", "Items[0].SKU #": "x"}),
        Ok(
            json!({"type": "event", "identity": "u1", "evtName": "Charged", "evtData": {"Items": [{"SKU #": "x"}]}}),
        ),
    );
    check(
        Target::Profiles {
            array_operation: ArrayOperation::Replace,
        },
        json!({"identity": "u1", "Tag#": "x"}),
        Err("invalid_record"),
    );
}

#[test]
fn event_properties_are_limited_to_the_account_s_limit() {
    let mut fields = serde_json::Map::new();
    fields.insert("identity".into(), json!("u1"));
    fields.insert("evtName".into(), json!("Viewed"));
    for index in 0..101 {
        fields.insert(format!("p{index}"), json!("x"));
    }
    let row = row(Value::Object(fields));
    let default = Mapper::new(Target::Events)
        .map(&row)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(default.code, "522", "{}", default.reason);
    assert!(default.reason.contains("at most 100"), "{}", default.reason);
    let raised = AccountLimits {
        event_properties: 256,
        ..AccountLimits::default()
    };
    assert!(
        Mapper::for_account(Target::Events, raised, chrono_tz::Tz::UTC)
            .map(&row)
            .is_ok()
    );
}

#[test]
fn a_column_s_own_replace_is_the_plain_list_whatever_the_target_says() {
    // The output mapping hands a column's `replace` over as `{"$set": [...]}`.
    check(
        profiles(ArrayOperation::Append),
        json!({"identity": "u1", "Tags": {"$set": ["a", "b"]}, "More": ["c"]}),
        Ok(
            json!({"type": "profile", "identity": "u1", "profileData": {"Tags": ["a", "b"], "More": {"$add": ["c"]}}}),
        ),
    );
}

#[test]
fn local_dates_and_times_are_read_in_the_source_s_zone() {
    let kolkata: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let mut mapper = Mapper::for_account(Target::Events, AccountLimits::default(), kolkata);
    let event = row(json!({"identity": "u1", "evtName": "Viewed", "ts": "2024-05-01 10:00:00"}));
    // 10:00 in Kolkata (UTC+05:30) is 04:30 UTC.
    assert_eq!(
        mapper.map(&event).unwrap().into_json()["ts"],
        json!(1_714_537_800)
    );
    // An offset, or epoch seconds, say when by themselves.
    for ts in [json!("2024-05-01T10:00:00Z"), json!(1_714_557_600)] {
        let event = row(json!({"identity": "u1", "evtName": "Viewed", "ts": ts}));
        assert_eq!(
            mapper.map(&event).unwrap().into_json()["ts"],
            json!(1_714_557_600)
        );
    }
    // A date of birth is its day's first moment there: 1990-05-01 00:00 IST.
    let mut profiles = Mapper::for_account(
        Target::Profiles {
            array_operation: ArrayOperation::Replace,
        },
        AccountLimits::default(),
        kolkata,
    );
    let profile = row(json!({"identity": "u1", "DOB": "1990-05-01"}));
    assert_eq!(
        profiles.map(&profile).unwrap().into_json()["profileData"]["DOB"],
        json!("$D_641500200")
    );
    // A time a clock change skips does not exist.
    let new_york: chrono_tz::Tz = "America/New_York".parse().unwrap();
    assert!(parse_timestamp(&json!("2024-03-10 02:30:00"), new_york).is_err());
}
