//! Source paths with wildcards, for pipelines with `trigger: file_arrival`: the file name may
//! hold `*` (any run of characters) and `?` (one character); the folder (or, in a bucket,
//! the key's prefix) is written out.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use crate::config::model::is_pattern;

use super::object::{Location, ObjectVersion};

/// A file that matches a pattern, with what identifies this version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The file (an `s3://bucket/key` address for an object).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time.
    pub modified: SystemTime,
    /// An object's ETag (the store's tag of its content); empty for a local file.
    pub version: String,
}

impl Arrival {
    /// The arrival of one version of an object.
    pub fn of_object(version: &ObjectVersion) -> Arrival {
        Arrival {
            path: PathBuf::from(version.url.to_string()),
            size: version.size,
            modified: version.modified,
            version: version.etag.clone(),
        }
    }
}

/// Which of the files matching a pattern a caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Every one, oldest first (`tapline run` sends each).
    Every,
    /// The oldest so many (the daemon starts one run at a time per pipeline).
    Oldest(usize),
    /// The newest (`validate` checks its columns).
    Newest,
}

/// The matching files kept while a folder or bucket is listed: only what is [`Wanted`], so
/// the daemon's poll of a prefix of many objects holds one.
#[derive(Debug)]
pub struct Found {
    wanted: Wanted,
    kept: Vec<Arrival>,
}

impl Found {
    fn new(wanted: Wanted) -> Found {
        Found {
            wanted,
            kept: Vec::new(),
        }
    }

    /// Keeps `arrival` if it is wanted.
    pub fn offer(&mut self, arrival: Arrival) {
        let order = |arrival: &Arrival| (arrival.modified, arrival.path.clone());
        match self.wanted {
            Wanted::Every => self.kept.push(arrival),
            Wanted::Newest => {
                if self
                    .kept
                    .first()
                    .is_none_or(|kept| order(&arrival) > order(kept))
                {
                    self.kept = vec![arrival];
                }
            }
            Wanted::Oldest(most) => {
                // Few are kept (the daemon asks for 16 at most): in order, the newest last.
                let at = self
                    .kept
                    .partition_point(|kept| order(kept) <= order(&arrival));
                if at < most {
                    self.kept.insert(at, arrival);
                    self.kept.truncate(most);
                }
            }
        }
    }

    /// What was kept, oldest first.
    fn into_sorted(mut self) -> Vec<Arrival> {
        self.kept
            .sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
        self.kept
    }
}

/// The files (or objects) matching `pattern` that `handled` does not know, oldest first, as
/// many as are `wanted`; `Err`: why the folder or bucket cannot be listed.
pub fn matching(
    pattern: &Path,
    handled: &mut dyn FnMut(&Arrival) -> bool,
    wanted: Wanted,
) -> Result<Vec<Arrival>, String> {
    let mut found = Found::new(wanted);
    match Location::of(pattern)? {
        Location::Object(url) => {
            let name = url.name();
            super::object::in_folder(&url, &mut |version| {
                if wildcard_match(name, version.url.name()) {
                    let arrival = Arrival::of_object(&version);
                    if !handled(&arrival) {
                        found.offer(arrival);
                    }
                }
            })
            .map_err(|error| error.0)?
        }
        Location::Local(pattern) => {
            let files = in_folder(pattern).map_err(|error| {
                format!("cannot list the folder of `{}`: {error}", pattern.display())
            })?;
            for file in files {
                if !handled(&file) {
                    found.offer(file);
                }
            }
        }
    }
    Ok(found.into_sorted())
}

/// The files in the pattern's folder whose names match it, oldest first.
fn in_folder(pattern: &Path) -> std::io::Result<Vec<Arrival>> {
    let folder = pattern
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name_pattern = pattern
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.is_file() && wildcard_match(&name_pattern, name) {
            found.push(Arrival {
                path: folder.join(name),
                size: metadata.len(),
                modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                version: String::new(),
            });
        }
    }
    found.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
    Ok(found)
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one character).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Greedy matching with backtracking to the last `*`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_file_names() {
        for (pattern, name, expected) in [
            ("vip_*.csv", "vip_20261129.csv", true),
            ("vip_*.csv", "vip_.csv", true),
            ("vip_*.csv", "vip_20261129.csv.tmp", false),
            ("vip_*.csv", "other_1.csv", false),
            ("*.csv.gz", "a.csv.gz", true),
            ("day_??.jsonl", "day_07.jsonl", true),
            ("day_??.jsonl", "day_7.jsonl", false),
            ("*", "anything", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact.csv", "exact.csv", true),
        ] {
            assert_eq!(
                wildcard_match(pattern, name),
                expected,
                "{pattern} ~ {name}"
            );
        }
        assert!(is_pattern(Path::new("exports/vip_*.csv")));
        assert!(!is_pattern(Path::new("exports/vip.csv")));
    }

    #[test]
    fn lists_matching_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vip_b.csv", "vip_a.csv", "notes.txt"] {
            std::fs::write(dir.path().join(name), "identity\n").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let found: Vec<String> =
            matching(&dir.path().join("vip_*.csv"), &mut |_| false, Wanted::Every)
                .unwrap()
                .into_iter()
                .map(|arrival| {
                    arrival
                        .path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
        assert_eq!(found, ["vip_b.csv", "vip_a.csv"]);
        let one = |wanted| {
            matching(&dir.path().join("vip_*.csv"), &mut |_| false, wanted).unwrap()[0]
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(one(Wanted::Oldest(1)), "vip_b.csv");
        assert_eq!(one(Wanted::Newest), "vip_a.csv");
        let skipping_b = matching(
            &dir.path().join("vip_*.csv"),
            &mut |arrival| arrival.path.ends_with("vip_b.csv"),
            Wanted::Oldest(1),
        )
        .unwrap();
        assert!(skipping_b[0].path.ends_with("vip_a.csv"));
    }
}
