//! Reading (and, for driver rebinds, writing) sysfs under a root directory, following sysfs's
//! relative symlinks ourselves so that no path, however linked, leads outside that root.
//!
//! Paths are given relative to the root with `/` separators (`class/infiniband/mlx5_0/node_guid`)
//! and appear in errors the same way, so messages do not depend on where the root is.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Why a sysfs path could not be used. `path` is relative to the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysfsError {
    #[error("{path}: missing")]
    Missing { path: String },
    #[error("{path}: symlink to {target:?} leads outside --sysfs-root, refused")]
    Escapes { path: String, target: String },
    #[error("{path}: more than {MAX_LINK_HOPS} symlinks deep (a loop?)")]
    Loop { path: String },
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
}

impl SysfsError {
    pub fn path(&self) -> &str {
        match self {
            SysfsError::Missing { path }
            | SysfsError::Escapes { path, .. }
            | SysfsError::Loop { path }
            | SysfsError::Io { path, .. } => path,
        }
    }

    fn io(path: &str, e: &io::Error) -> SysfsError {
        match e.kind() {
            io::ErrorKind::NotFound => SysfsError::Missing { path: path.to_string() },
            kind => SysfsError::Io { path: path.to_string(), detail: kind.to_string() },
        }
    }
}

/// A sysfs tree at `root` (`/sys` on a node, a temporary directory in tests).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `rel` inside the root: every symlink on the way is read and its (relative) target
    /// applied to the path walked so far. Returns the resolved path relative to the root, which
    /// contains no symlinks. Absolute targets and `..` above the root are refused.
    pub fn resolve(&self, rel: &str) -> Result<String, SysfsError> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: VecDeque<String> = components(rel).collect();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Err(SysfsError::Escapes { path: rel.to_string(), target: "..".into() });
                    }
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let here = self.root.join(done.join("/"));
            let meta = match fs::symlink_metadata(&here) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(SysfsError::Missing { path: rel.to_string() });
                }
                Err(e) => return Err(SysfsError::io(&done.join("/"), &e)),
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(SysfsError::Loop { path: rel.to_string() });
            }
            let link = done.join("/");
            let target = fs::read_link(&here).map_err(|e| SysfsError::io(&link, &e))?;
            let target_text = target.to_string_lossy().into_owned();
            if target.is_absolute() {
                return Err(SysfsError::Escapes { path: link, target: target_text });
            }
            // The target is relative to the directory holding the link.
            done.pop();
            let ups = components(&target_text).take_while(|c| c == "..").count();
            if ups > done.len() {
                return Err(SysfsError::Escapes { path: link, target: target_text });
            }
            for (i, t) in components(&target_text).enumerate() {
                todo.insert(i, t);
            }
        }
        Ok(done.join("/"))
    }

    /// The absolute path of `rel` after resolution.
    pub fn path(&self, rel: &str) -> Result<PathBuf, SysfsError> {
        Ok(self.root.join(self.resolve(rel)?))
    }

    /// A sysfs attribute's text, trailing newline and spaces removed.
    pub fn read(&self, rel: &str) -> Result<String, SysfsError> {
        let p = self.path(rel)?;
        let bytes = fs::read(p).map_err(|e| SysfsError::io(rel, &e))?;
        match String::from_utf8(bytes) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(_) => Err(SysfsError::Io { path: rel.to_string(), detail: "not text".into() }),
        }
    }

    /// `Ok(None)` when the attribute does not exist, which is normal for optional attributes.
    pub fn read_optional(&self, rel: &str) -> Result<Option<String>, SysfsError> {
        match self.read(rel) {
            Ok(s) => Ok(Some(s)),
            Err(SysfsError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names in a directory, sorted. Entries are not resolved.
    pub fn list(&self, rel: &str) -> Result<Vec<String>, SysfsError> {
        let p = self.path(rel)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&p).map_err(|e| SysfsError::io(rel, &e))? {
            let entry = entry.map_err(|e| SysfsError::io(rel, &e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// `Ok(vec![])` when the directory does not exist.
    pub fn list_optional(&self, rel: &str) -> Result<Vec<String>, SysfsError> {
        match self.list(rel) {
            Err(SysfsError::Missing { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Whether `rel` resolves to something that exists.
    pub fn exists(&self, rel: &str) -> Result<bool, SysfsError> {
        match self.resolve(rel) {
            Ok(_) => Ok(true),
            Err(SysfsError::Missing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The last component of the path `rel` resolves to: the PCI address behind `device` or
    /// `virtfn0`, the driver name behind `driver`. `Ok(None)` when the link does not exist.
    pub fn link_name(&self, rel: &str) -> Result<Option<String>, SysfsError> {
        let resolved = match self.resolve(rel) {
            Ok(r) => r,
            Err(SysfsError::Missing { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(resolved.rsplit('/').next().filter(|s| !s.is_empty()).map(str::to_string))
    }

    /// Writes `value` to an existing attribute (never creates one), as `echo value > attr` does.
    pub fn write(&self, rel: &str, value: &str) -> Result<(), SysfsError> {
        let p = self.path(rel)?;
        let mut f = fs::OpenOptions::new().write(true).truncate(true).open(&p).map_err(|e| SysfsError::io(rel, &e))?;
        f.write_all(value.as_bytes()).map_err(|e| SysfsError::io(rel, &e))
    }
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/').filter(|c| !c.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, Sysfs) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sys");
        fs::create_dir_all(root.join("devices/pci0000:00/0000:3b:00.0/infiniband/mlx5_0")).unwrap();
        fs::write(root.join("devices/pci0000:00/0000:3b:00.0/infiniband/mlx5_0/node_guid"), "0c42:a103:0016:5e40\n")
            .unwrap();
        fs::create_dir_all(root.join("class/infiniband")).unwrap();
        symlink("../../devices/pci0000:00/0000:3b:00.0/infiniband/mlx5_0", root.join("class/infiniband/mlx5_0"))
            .unwrap();
        symlink("../../../0000:3b:00.0", root.join("devices/pci0000:00/0000:3b:00.0/infiniband/mlx5_0/device"))
            .unwrap();
        fs::create_dir_all(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/secret"), "dead:beef:dead:beef\n").unwrap();
        (dir, Sysfs::new(root))
    }

    #[test]
    fn relative_links_resolve_against_the_root() {
        let (_d, sys) = tree();
        assert_eq!(
            sys.resolve("class/infiniband/mlx5_0").unwrap(),
            "devices/pci0000:00/0000:3b:00.0/infiniband/mlx5_0"
        );
        assert_eq!(sys.read("class/infiniband/mlx5_0/node_guid").unwrap(), "0c42:a103:0016:5e40");
        assert_eq!(sys.link_name("class/infiniband/mlx5_0/device").unwrap().as_deref(), Some("0000:3b:00.0"));
        assert_eq!(sys.link_name("class/infiniband/mlx5_0/nothing").unwrap(), None);
    }

    #[test]
    fn absolute_and_climbing_links_are_refused() {
        let (d, sys) = tree();
        let root = sys.root().to_path_buf();
        symlink("/etc", root.join("class/infiniband/abs")).unwrap();
        symlink(d.path().join("outside"), root.join("class/infiniband/abs_real")).unwrap();
        symlink("../../../outside", root.join("class/infiniband/up")).unwrap();
        symlink("../../../../../../../../..", root.join("class/infiniband/way_up")).unwrap();
        for name in ["abs", "abs_real", "up", "way_up"] {
            let err = sys.read(&format!("class/infiniband/{name}/secret")).unwrap_err();
            assert!(matches!(err, SysfsError::Escapes { .. }), "{name}: {err}");
            assert!(err.to_string().contains("outside --sysfs-root"), "{err}");
        }
        assert!(matches!(sys.read("../outside/secret"), Err(SysfsError::Escapes { .. })));
        // `..` that stays inside is fine.
        assert_eq!(sys.read("class/../class/infiniband/mlx5_0/node_guid").unwrap(), "0c42:a103:0016:5e40");
    }

    #[test]
    fn link_loops_end_with_an_error() {
        let (_d, sys) = tree();
        symlink("b", sys.root().join("class/a")).unwrap();
        symlink("a", sys.root().join("class/b")).unwrap();
        assert!(matches!(sys.read("class/a"), Err(SysfsError::Loop { .. })));
    }

    #[test]
    fn missing_files_are_reported_relative_to_the_root() {
        let (_d, sys) = tree();
        let err = sys.read("class/infiniband/mlx5_0/ports/1/state").unwrap_err();
        assert_eq!(err.to_string(), "class/infiniband/mlx5_0/ports/1/state: missing");
        assert_eq!(sys.read_optional("class/infiniband/mlx5_0/fw_ver").unwrap(), None);
    }

    #[test]
    fn writes_go_to_existing_files_only() {
        let (_d, sys) = tree();
        fs::create_dir_all(sys.root().join("bus/pci/drivers/mlx5_core")).unwrap();
        fs::write(sys.root().join("bus/pci/drivers/mlx5_core/unbind"), "").unwrap();
        sys.write("bus/pci/drivers/mlx5_core/unbind", "0000:3b:00.2").unwrap();
        assert_eq!(fs::read_to_string(sys.root().join("bus/pci/drivers/mlx5_core/unbind")).unwrap(), "0000:3b:00.2");
        assert!(matches!(sys.write("bus/pci/drivers/mlx5_core/new_id", "x"), Err(SysfsError::Missing { .. })));
    }
}
