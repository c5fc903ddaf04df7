//! The install manifest: which files, links and directories `vpnfix install` created, each file
//! with a hash of what it wrote, so that `--uninstall` removes only what is still vpnfix's.
//!
//! Format (one entry a line, tab-separated, the path last; `#` starts a comment):
//! ```text
//! dir   /usr/local/share/vpnfix
//! file  fnv1a64:0123456789abcdef  /usr/local/bin/vpnfix
//! link  ../90-vpnfix  /etc/NetworkManager/dispatcher.d/pre-down.d/90-vpnfix
//! ```
//! Paths are the installed system's (without `--root`). Entries are sorted, so the same
//! installation always gives the same bytes and a second install finds nothing to change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What vpnfix created at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file, with the [`fnv1a64`] hash of the bytes vpnfix wrote.
    File { hash: u64 },
    /// A symbolic link with this target.
    Link { target: PathBuf },
}

/// The manifest's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Files and links, by path.
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Directories vpnfix created (removed again at uninstall when empty).
    pub dirs: BTreeSet<PathBuf>,
}

/// A line that is not a manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

const HEADER: &str = "# vpnfix install manifest: what `vpnfix install` created.\n\
# `vpnfix install --uninstall` removes each entry only while it still matches.\n";

/// FNV-1a, 64 bits: enough to tell whether a file still holds what vpnfix wrote. Not a
/// defence against a crafted collision: only root can write the files it guards.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Manifest {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.dirs.is_empty()
    }

    /// The manifest's text.
    pub fn render(&self) -> String {
        let mut s = String::from(HEADER);
        for d in &self.dirs {
            let _ = writeln!(s, "dir\t{}", d.display());
        }
        for (path, e) in &self.entries {
            let _ = match e {
                Entry::File { hash } => writeln!(s, "file\tfnv1a64:{hash:016x}\t{}", path.display()),
                Entry::Link { target } => writeln!(s, "link\t{}\t{}", target.display(), path.display()),
            };
        }
        s
    }

    /// Reads a manifest's text.
    pub fn parse(text: &str) -> Result<Manifest, ParseError> {
        let mut m = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: &str| ParseError { line: i + 1, why: why.into() };
            let fields: Vec<&str> = line.split('\t').collect();
            let path = absolute(fields.last().copied().unwrap_or("")).ok_or_else(|| err("no absolute path"))?;
            match fields.as_slice() {
                ["dir", _] => {
                    m.dirs.insert(path);
                }
                ["file", hash, _] => {
                    let hash = parse_hash(hash).ok_or_else(|| err("bad hash (want fnv1a64:16 hex digits)"))?;
                    m.entries.insert(path, Entry::File { hash });
                }
                ["link", target, _] if !target.is_empty() => {
                    m.entries.insert(path, Entry::Link { target: target.into() });
                }
                _ => return Err(err("not `dir PATH`, `file HASH PATH` or `link TARGET PATH`")),
            }
        }
        Ok(m)
    }
}

fn absolute(s: &str) -> Option<PathBuf> {
    Path::new(s).is_absolute().then(|| PathBuf::from(s))
}

fn parse_hash(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("fnv1a64:")?;
    (hex.len() == 16).then_some(())?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_values() {
        // From the FNV reference test vectors (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn render_then_parse_gives_the_same_manifest() {
        let mut m = Manifest::default();
        m.dirs.insert("/usr/local/share/vpnfix".into());
        m.entries.insert("/usr/local/bin/vpnfix".into(), Entry::File { hash: 0x0123_4567_89ab_cdef });
        m.entries.insert("/etc/a b/link".into(), Entry::Link { target: "../90-vpnfix".into() });
        let text = m.render();
        assert!(text.contains("file\tfnv1a64:0123456789abcdef\t/usr/local/bin/vpnfix\n"), "{text}");
        assert_eq!(Manifest::parse(&text), Ok(m));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("dir\trelative/path\n", 1),
            ("# c\nfile\tfnv1a64:12\t/x\n", 2),
            ("file\tsha1:0123456789abcdef\t/x\n", 1),
            ("link\t\t/x\n", 1),
            ("\nsocket\t/x\n", 2),
        ] {
            assert_eq!(Manifest::parse(text).unwrap_err().line, line, "{text:?}");
        }
    }
}
