//! What tapline prints for people: control characters (terminal escapes, carriage returns,
//! NUL) that a source value or a file name may carry are shown escaped (`\u{1b}`) instead of
//! reaching the terminal, which would obey them. Line breaks and tabs are kept.

use std::io::Write;

/// Prints a line on stdout, control characters escaped; evaluates to the `io::Result`
/// (a reader that went away, `tapline history | head`, is for [`super::printed`] to judge).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!($crate::cli::terminal::stdout(), $($arg)*)
    }};
}

/// Prints a line on stderr, control characters escaped.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::cli::terminal::stderr(), $($arg)*);
    }};
}

pub(crate) use {errln, outln};

/// A writer that escapes control characters on their way to `inner`.
pub struct Escaping<W: Write> {
    inner: W,
    /// The last write ended with the first byte of a two-byte UTF-8 character (`0xC2`,
    /// which starts the C1 controls U+0080–U+009F).
    pending_c2: bool,
}

/// Standard output, escaped.
pub fn stdout() -> Escaping<std::io::StdoutLock<'static>> {
    Escaping::new(std::io::stdout().lock())
}

/// Standard error, escaped.
pub fn stderr() -> Escaping<std::io::StderrLock<'static>> {
    Escaping::new(std::io::stderr().lock())
}

impl<W: Write> Escaping<W> {
    /// Escapes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Escaping {
            inner,
            pending_c2: false,
        }
    }
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut clean_from = 0;
        for (index, &byte) in bytes.iter().enumerate() {
            let pending = std::mem::take(&mut self.pending_c2);
            let escape: Option<u32> = match byte {
                b'\n' | b'\t' => None,
                0x00..=0x1f | 0x7f => Some(u32::from(byte)),
                0x80..=0x9f if pending => Some(u32::from(byte)),
                0xc2 => {
                    self.pending_c2 = true;
                    None
                }
                _ => None,
            };
            let Some(code) = escape else { continue };
            // A C1 control's 0xC2 came just before it: leave it out (it was written already
            // when it ended the last write; then the escape follows a stray byte, which the
            // terminal shows as a replacement character, harmlessly).
            let clean_to = if code >= 0x80 && index > 0 {
                index - 1
            } else {
                index
            };
            self.inner
                .write_all(&bytes[clean_from..clean_to.max(clean_from)])?;
            write!(self.inner, "\\u{{{code:x}}}")?;
            clean_from = index + 1;
        }
        self.inner.write_all(&bytes[clean_from..])?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut writer = Escaping::new(Vec::new());
        writer.write_all(text.as_bytes()).unwrap();
        String::from_utf8(writer.inner).unwrap()
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(
            escaped("plain text, ünïcode\n\tindented\n"),
            "plain text, ünïcode\n\tindented\n"
        );
        assert_eq!(escaped("a\u{1b}[31mred\u{7}"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(escaped("cr\rnul\0"), "cr\\u{d}nul\\u{0}");
        assert_eq!(escaped("c1 \u{9b}31m"), "c1 \\u{9b}31m");
        assert_eq!(escaped("Â©"), "Â©");
    }
}
