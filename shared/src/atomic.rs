//! Files that appear whole or not at all. Every file jepa-stream writes for a reader to find
//! later (shards, manifests, configs, metrics, features, checkpoints, reports, figures) is
//! written under a temporary name beside its final one, flushed to disk and renamed into
//! place; a failure removes the temporary file and leaves whatever was there before.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::FileError;

/// The name `path` is written under before it is renamed into place, unique to this
/// process so that two writers never share one: `report.md` → `report.tmp-4242.md`,
/// `step-00000010` → `step-00000010.tmp-4242`. The extension is kept, for writers that
/// choose a format by it (image encoders).
pub fn temp_name(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    let pid = std::process::id();
    let name = match path.extension() {
        Some(extension) => format!("{stem}.tmp-{pid}.{}", extension.to_string_lossy()),
        None => format!("{stem}.tmp-{pid}"),
    };
    path.with_file_name(name)
}

/// Whether `name` is one [`temp_name`] gives (by any process).
pub fn is_temp_name(name: &str) -> bool {
    name.split(".tmp-").nth(1).is_some_and(|rest| {
        let digits = rest.split('.').next().unwrap_or_default();
        !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
    })
}

/// Calls `write` with a temporary path beside `path` (creating the folder), then flushes the
/// file it wrote to disk and renames it onto `path`. For writers that open the file
/// themselves by name; [`write_file`] hands over an open file instead.
pub fn write_path<T, E: From<FileError>>(path: &Path, write: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E> {
    let folder = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(FileError::io(folder))?;
    let temp = temp_name(path);
    let result = write(&temp).and_then(|value| {
        File::open(&temp).and_then(|file| file.sync_all()).map_err(FileError::io(&temp))?;
        std::fs::rename(&temp, path).map_err(FileError::io(path))?;
        Ok(value)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Calls `write` with a new temporary file beside `path`, then flushes and renames it onto
/// `path`.
pub fn write_file<T, E: From<FileError>>(path: &Path, write: impl FnOnce(&mut File) -> Result<T, E>) -> Result<T, E> {
    write_path(path, |temp| {
        let mut file = File::create(temp).map_err(FileError::io(temp))?;
        write(&mut file)
    })
}

/// Writes `bytes` as the whole of `path`.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_file(path, |file| file.write_all(bytes).map_err(FileError::io(path)))
}

/// Fills a temporary folder beside `folder` with `fill`, flushes every file in it and
/// renames it onto `folder`, replacing an older one of that name.
pub fn write_folder<T, E: From<FileError>>(folder: &Path, fill: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E> {
    let temp = temp_name(folder);
    if temp.exists() {
        std::fs::remove_dir_all(&temp).map_err(FileError::io(&temp))?;
    }
    std::fs::create_dir_all(&temp).map_err(FileError::io(&temp))?;
    let result = fill(&temp).and_then(|value| {
        for entry in std::fs::read_dir(&temp).map_err(FileError::io(&temp))? {
            let path = entry.map_err(FileError::io(&temp))?.path();
            File::open(&path).and_then(|file| file.sync_all()).map_err(FileError::io(&path))?;
        }
        if folder.exists() {
            std::fs::remove_dir_all(folder).map_err(FileError::io(folder))?;
        }
        std::fs::rename(&temp, folder).map_err(FileError::io(folder))?;
        Ok(value)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporary_names_keep_the_extension_and_name_the_process() {
        let pid = std::process::id();
        assert_eq!(temp_name(Path::new("a/report.md")), Path::new(&format!("a/report.tmp-{pid}.md")));
        assert_eq!(temp_name(Path::new("a/step-00000010")), Path::new(&format!("a/step-00000010.tmp-{pid}")));
        assert!(is_temp_name(&format!("step-00000010.tmp-{pid}")) && is_temp_name("report.tmp-7.md"));
        assert!(!is_temp_name("step-00000010") && !is_temp_name("notes.tmp-draft.md") && !is_temp_name("a.tmp"));
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/table.parquet");
        write_bytes(&path, b"first").unwrap();
        let failed: Result<(), FileError> = write_file(&path, |file| {
            file.write_all(b"half of the second").unwrap();
            Err(FileError::Invalid { path: path.clone(), problem: "the writer failed".into() })
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(names(path.parent().unwrap()), ["table.parquet"]);
        write_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
    }

    #[test]
    fn a_folder_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("step-1");
        write_folder(&folder, |temp| write_bytes(&temp.join("a"), b"1")).unwrap();
        let failed: Result<(), FileError> = write_folder(&folder, |temp| {
            write_bytes(&temp.join("b"), b"2")?;
            Err(FileError::Invalid { path: temp.to_path_buf(), problem: "stopped".into() })
        });
        assert!(failed.is_err());
        assert_eq!(names(&folder), ["a"]);
        assert_eq!(names(dir.path()), ["step-1"]);
    }
}
