//! Where a source's `path` points: a file on this machine, or an object in S3 or an
//! S3-compatible store (`s3://bucket/key`). The one place that tells them apart; reading an
//! object is `crate::source::object`'s.

use std::path::Path;

/// Address schemes of object stores tapline does not read yet, with their store's name.
const NOT_YET: [(&str, &str); 7] = [
    ("gs://", "Google Cloud Storage"),
    ("az://", "Azure Blob Storage"),
    ("abfs://", "Azure Data Lake Storage"),
    ("abfss://", "Azure Data Lake Storage"),
    ("adl://", "Azure Data Lake Storage"),
    ("http://", "a web server"),
    ("https://", "a web server"),
];

/// Where a source's `path` points: a local file, or an object in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location<'a> {
    /// A file on this machine.
    Local(&'a Path),
    /// An object in S3 or an S3-compatible store.
    Object(ObjectUrl),
}

impl<'a> Location<'a> {
    /// Reads a source's `path`: `s3://bucket/key` is an object, a scheme tapline does not
    /// read yet is an error saying so, and anything else a local path.
    pub fn of(path: &'a Path) -> Result<Location<'a>, String> {
        let Some(text) = path.to_str() else {
            return Ok(Location::Local(path));
        };
        if let Some(url) = ObjectUrl::parse(text) {
            return url.map(Location::Object);
        }
        let lower = text.to_ascii_lowercase();
        match NOT_YET.iter().find(|(scheme, _)| lower.starts_with(scheme)) {
            Some((scheme, store)) => Err(format!(
                "`{text}`: tapline reads files on this machine and in S3 (`s3://bucket/key`), not yet from {store} (`{scheme}`)"
            )),
            None => Ok(Location::Local(path)),
        }
    }

    /// Whether `path` is written as an object's address (`s3://`), valid or not.
    pub fn is_object(path: &Path) -> bool {
        path.to_str().is_some_and(|text| {
            text.get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("s3://"))
        })
    }
}

/// An object's address: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    /// The bucket.
    pub bucket: String,
    /// The key in the bucket (may hold `*` and `?` in its last part, as a pattern).
    pub key: String,
}

impl ObjectUrl {
    /// `None` when `text` is not an `s3://` address; else the address, or why it is not one.
    pub fn parse(text: &str) -> Option<Result<ObjectUrl, String>> {
        let rest = text
            .get(..5)
            .filter(|scheme| scheme.eq_ignore_ascii_case("s3://"))
            .map(|_| &text[5..])?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        Some(if !valid_bucket {
            Err(format!(
                "`{text}`: `{bucket}` is not a bucket name (3 to 63 lowercase letters, digits, `-` and `.`)"
            ))
        } else if key.is_empty() || key.ends_with('/') {
            Err(format!(
                "`{text}` names a bucket or folder, not an object: write its key too, e.g. `s3://{bucket}/exports/users.csv`"
            ))
        } else if key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            Err(format!(
                "`{text}`: the key has an empty, `.` or `..` part, which object stores keep as written and tapline does not read"
            ))
        } else if key.chars().any(char::is_control) {
            Err(format!(
                "`{text}`: the key holds a control character, which tapline does not read"
            ))
        } else {
            Ok(ObjectUrl {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
        })
    }

    /// The key's folder: everything before its last `/` (empty at the bucket's top).
    pub fn folder(&self) -> &str {
        self.key.rsplit_once('/').map_or("", |(folder, _)| folder)
    }

    /// The key's last part (the file name).
    pub fn name(&self) -> &str {
        self.key
            .rsplit_once('/')
            .map_or(&self.key, |(_, name)| name)
    }

    /// The same bucket with another key.
    pub fn with_key(&self, key: &str) -> ObjectUrl {
        ObjectUrl {
            bucket: self.bucket.clone(),
            key: key.to_string(),
        }
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_local_files_or_objects() {
        let url = |text: &str| match Location::of(Path::new(text)) {
            Ok(Location::Object(url)) => Ok((url.bucket, url.key)),
            Ok(Location::Local(path)) => Err(format!("local {}", path.display())),
            Err(error) => Err(error),
        };
        assert_eq!(
            url("s3://drops/in/users.csv.gz"),
            Ok(("drops".into(), "in/users.csv.gz".into()))
        );
        assert_eq!(
            url("S3://drops/a.csv"),
            Ok(("drops".into(), "a.csv".into()))
        );
        assert_eq!(url("data/users.csv"), Err("local data/users.csv".into()));
        assert!(url("s3://drops").unwrap_err().contains("not an object"));
        assert!(url("s3://drops/in/").unwrap_err().contains("not an object"));
        assert!(
            url("s3://Drops/a.csv")
                .unwrap_err()
                .contains("not a bucket name")
        );
        assert!(url("s3://drops//a.csv").unwrap_err().contains("empty"));
        assert!(
            url("s3://drops/a\tb.csv")
                .unwrap_err()
                .contains("control character")
        );
        assert!(
            url("gs://drops/a.csv")
                .unwrap_err()
                .contains("Google Cloud Storage")
        );
        assert!(url("az://c/a.csv").unwrap_err().contains("Azure"));
        let parsed = ObjectUrl::parse("s3://drops/in/day/*.csv")
            .unwrap()
            .unwrap();
        assert_eq!((parsed.folder(), parsed.name()), ("in/day", "*.csv"));
        let top = ObjectUrl::parse("s3://drops/a.csv").unwrap().unwrap();
        assert_eq!((top.folder(), top.name()), ("", "a.csv"));
        assert_eq!(top.to_string(), "s3://drops/a.csv");
    }
}
