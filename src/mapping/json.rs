//! Writing records as JSON text: the strings that make up most of a request body go out
//! with one check and one copy; anything that needs escaping takes serde_json's path, so
//! the output is byte for byte what serde_json writes.

use serde_json::Value;

/// Appends `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escaping(text.as_bytes()) {
        serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Appends `value` as JSON.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => write_str(out, text),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
        other => serde_json::to_writer(out, other).expect("writing to a Vec cannot fail"),
    }
}

/// `name` as an object key with its colon (`"name":`), to be written many times.
pub fn encoded_key(name: &str) -> Box<[u8]> {
    let mut key = Vec::with_capacity(name.len() + 3);
    write_str(&mut key, name);
    key.push(b':');
    key.into_boxed_slice()
}

/// Whether JSON needs any of these bytes escaped: a quote, a backslash or a control
/// character. Written as a fold without an early exit so that it runs on whole vectors.
fn needs_escaping(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &byte| {
        found | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_serde_json_writes() {
        for value in [
            json!("plain text"),
            json!(""),
            json!("quote \" backslash \\ tab \t newline \n bell \u{7} del \u{7f}"),
            json!("ünïcödé ✓ 😀"),
            json!(42),
            json!(-1.5),
            json!(true),
            json!(false),
            json!(null),
            json!(["a", "b\"c"]),
            json!({"$add": ["x"], "k\"ey": 1}),
        ] {
            let mut ours = Vec::new();
            write_value(&mut ours, &value);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    #[test]
    fn finds_every_byte_that_needs_escaping_wherever_it_is() {
        let plain = |byte: u8| byte >= 0x20 && byte != b'"' && byte != b'\\';
        for length in 0..20 {
            for position in 0..length {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; length];
                    text[position] = byte;
                    assert_eq!(
                        needs_escaping(&text),
                        !plain(byte),
                        "byte {byte:#04x} at {position} of {length}"
                    );
                }
            }
        }
        assert!(!needs_escaping("ünïcödé ✓ 😀".as_bytes()));
    }

    #[test]
    fn encodes_keys_once() {
        assert_eq!(&*encoded_key("Customer Type"), br#""Customer Type":"#);
        assert_eq!(&*encoded_key("a\"b"), br#""a\"b":"#);
    }
}
