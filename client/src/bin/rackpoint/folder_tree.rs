//! `put DIR`: the regular files below a folder, named by their paths relative to it (`/` as
//! the only separator), and the check that a part's object names can all be files of one
//! tree (no name twice, none inside another).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rackpoint_proto::ObjectName;

/// Every regular file below `root` (symbolic links to files followed; a link to a folder, a
/// socket, a FIFO or a device refused), as (object name, path), sorted by name.
pub fn files_below(root: &Path) -> anyhow::Result<Vec<(ObjectName, PathBuf)>> {
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(ObjectName, PathBuf)>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            bail!("{} has a name that is not UTF-8: it cannot be an object name", path.display());
        };
        let name = format!("{prefix}{file_name}");
        let kind = entry.file_type().with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, &format!("{name}/"), out)?;
            continue;
        }
        let target =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if !target.is_file() {
            let what =
                if target.is_dir() { "a symbolic link to a folder" } else { "not a regular file" };
            bail!("{} is {what}: only regular files below a folder are saved", path.display());
        }
        let object = ObjectName::new(name).with_context(|| format!("{}", path.display()))?;
        out.push((object, path));
    }
    Ok(())
}

/// Refuses a part whose objects could not all be files of one tree: a name given twice, or
/// a name that is a folder of another (`a` and `a/b`).
pub fn check_names<'a>(names: impl Iterator<Item = &'a ObjectName>) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n.as_str()) {
            bail!("two objects would be named {n}: save them under different names");
        }
    }
    for n in &seen {
        let mut folder = String::new();
        for c in n.split('/').collect::<Vec<_>>().split_last().map_or(&[][..], |(_, f)| f) {
            folder.push_str(c);
            if seen.contains(folder.as_str()) {
                bail!("object {n} would be inside object {folder}, which is a file");
            }
            folder.push('/');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<ObjectName> {
        list.iter().map(|n| ObjectName::new(*n).expect("valid")).collect()
    }

    #[test]
    fn a_tree_is_named_by_relative_paths_and_links_to_files_are_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("model");
        std::fs::create_dir_all(root.join("tokenizer/extra")).expect("mkdir");
        std::fs::create_dir_all(root.join("empty")).expect("mkdir");
        std::fs::write(root.join("config.json"), b"{}").expect("write");
        std::fs::write(root.join("tokenizer/extra/vocab.txt"), b"v").expect("write");
        std::fs::write(dir.path().join("blob"), b"b").expect("write");
        std::os::unix::fs::symlink(dir.path().join("blob"), root.join("model.safetensors"))
            .expect("link");
        let got: Vec<String> =
            files_below(&root).expect("walk").into_iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(got, ["config.json", "model.safetensors", "tokenizer/extra/vocab.txt"]);
    }

    #[test]
    fn a_link_to_a_folder_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("model");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::os::unix::fs::symlink(dir.path(), root.join("loop")).expect("link");
        let err = files_below(&root).expect_err("a link to a folder");
        assert!(err.to_string().contains("symbolic link to a folder"), "{err}");
    }

    #[test]
    fn names_that_cannot_share_a_tree_are_refused() {
        assert!(check_names(names(&["a", "b/a", "b/c/d"]).iter()).is_ok());
        assert!(check_names(names(&["a", "a"]).iter()).is_err());
        let err = check_names(names(&["b/c", "b"]).iter()).expect_err("b is a file");
        assert!(err.to_string().contains("inside object b"), "{err}");
        assert!(check_names(names(&["b/c/d", "b/c"]).iter()).is_err());
    }
}
