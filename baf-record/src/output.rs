//! Where recordings go: one file, or a directory of files named by the time
//! they were started; split by size or time, and at most `--max-files` of
//! them kept (the oldest removed).

use crate::file::{Compression, McapFile};
use anyhow::{Context, Result};
use baf::error::Kind;
use std::path::{Path, PathBuf};

/// The recordings' place and names.
#[derive(Debug)]
pub struct Output {
    dir: PathBuf,
    /// `-o FILE`: the first file's name (later ones get `-NNNN`).
    single: Option<PathBuf>,
    prefix: String,
    compression: Compression,
    max_files: Option<usize>,
    /// Files made by this run.
    made: u32,
}

/// `unix_ns` as a file-name stamp: `20250131T120000Z`.
pub fn stamp(unix_ns: i128) -> String {
    let t = baf::format::rfc3339(unix_ns);
    let (date, time) = t.split_once('T').unwrap_or((&t, ""));
    let secs = time.split('.').next().unwrap_or("");
    format!("{}T{}Z", date.replace('-', ""), secs.replace(':', ""))
}

fn unwritable(dir: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    Kind::Invalid.error(format!(
        "cannot write recordings in {}: {e}; choose a directory this user may write (-o DIR)",
        dir.display()
    ))
}

impl Output {
    /// `-o target`: an existing directory (or a path ending in `/`, made if
    /// missing) holds files named `PREFIX-STAMP-NNNN.mcap`; anything else
    /// is the first file's name. Checks that the directory can be written
    /// (by making and removing a probe file), so a bad `-o` is an error
    /// before anything is recorded.
    pub fn new(
        target: &Path,
        prefix: &str,
        compression: Compression,
        max_files: Option<usize>,
    ) -> Result<Self> {
        let as_dir = target.is_dir() || target.as_os_str().to_string_lossy().ends_with('/');
        let (dir, single) = if as_dir {
            if !target.exists() {
                std::fs::create_dir_all(target).map_err(|e| unwritable(target, e))?;
            }
            (target.to_path_buf(), None)
        } else {
            let dir = match target.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if target.exists() {
                return Err(Kind::Invalid.error(format!(
                    "{} exists: baf-record never overwrites a file; remove it or choose another name",
                    target.display()
                )));
            }
            (dir, Some(target.to_path_buf()))
        };
        if !dir.is_dir() {
            return Err(unwritable(&dir, "no such directory"));
        }
        let probe = dir.join(format!(".baf-record-probe-{}", std::process::id()));
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| unwritable(&dir, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            dir,
            single,
            prefix: prefix.to_string(),
            compression,
            max_files,
            made: 0,
        })
    }

    /// The name of the next file, started at `unix_ns`.
    pub fn next_path(&self, unix_ns: i128) -> PathBuf {
        match &self.single {
            Some(p) if self.made == 0 => p.clone(),
            Some(p) => {
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                let ext = p.extension().map(|s| s.to_string_lossy().into_owned());
                let name = format!(
                    "{}-{:04}.{}",
                    stem.unwrap_or_default(),
                    self.made,
                    ext.unwrap_or_else(|| "mcap".into())
                );
                p.with_file_name(name)
            }
            None => self.dir.join(format!(
                "{}-{}-{:04}.mcap",
                self.prefix,
                stamp(unix_ns),
                self.made
            )),
        }
    }

    /// Starts the next file, then removes the oldest ones past
    /// `--max-files` (the new one counted).
    pub fn open(&mut self, unix_ns: i128) -> Result<McapFile> {
        let path = self.next_path(unix_ns);
        let file = McapFile::create(&path, self.compression)?;
        self.made += 1;
        self.prune(&path)?;
        Ok(file)
    }

    /// The recordings in the directory that belong to this output, oldest
    /// first (names sort by time).
    pub fn files(&self) -> Vec<PathBuf> {
        let (prefix, ext) = match &self.single {
            Some(p) => (
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p.extension()
                    .map(|s| format!(".{}", s.to_string_lossy()))
                    .unwrap_or_default(),
            ),
            None => (format!("{}-", self.prefix), ".mcap".to_string()),
        };
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(&ext))
            })
            .collect();
        if self.single.is_some() {
            // `name.mcap` before `name-0001.mcap`.
            out.sort_by_key(|p| (p.to_string_lossy().len(), p.clone()));
        } else {
            out.sort();
        }
        out
    }

    /// Removes the oldest recordings past `--max-files`, never `current`.
    fn prune(&self, current: &Path) -> Result<()> {
        let Some(max) = self.max_files else {
            return Ok(());
        };
        let files = self.files();
        let extra = files.len().saturating_sub(max.max(1));
        for old in files.iter().filter(|p| p.as_path() != current).take(extra) {
            std::fs::remove_file(old)
                .with_context(|| format!("cannot remove the old recording {}", old.display()))?;
        }
        Ok(())
    }
}
