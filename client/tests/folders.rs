//! Folder trees through the `rackpoint` CLI against real node processes: `put JOB STEP DIR`
//! keeps paths relative to the folder as object names and `get` recreates the tree byte for
//! byte (a Hugging Face model folder here; a folder DCP's `FileSystemWriter` wrote is in
//! client/python/tests/test_folders.py); names that cannot be one tree, links out of the
//! output folder and folders mixed with `--name` are refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{data, rackpoint, s, six_nodes, text};

const SHARD: u32 = 64 * 1024;

/// Every regular file below `root`, by its path relative to it.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("below").to_str().expect("utf-8").to_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A safetensors file as the format has it: an 8-byte little-endian header length, the JSON
/// header, then the tensors' bytes.
fn safetensors(name: &str, seed: u64, elements: usize) -> Vec<u8> {
    let bytes = data(seed, elements * 4);
    let header = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":[{elements}],"data_offsets":[0,{}]}}}}"#,
        elements * 4
    );
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// A model folder shaped like one from the Hugging Face hub.
fn hf_model(root: &Path) {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("config.json", br#"{"architectures":["LlamaForCausalLM"],"hidden_size":64}"#.to_vec()),
        ("generation_config.json", br#"{"do_sample":true}"#.to_vec()),
        ("model-00001-of-00002.safetensors", safetensors("model.embed.weight", 1, 150_000)),
        ("model-00002-of-00002.safetensors", safetensors("lm_head.weight", 2, 90_001)),
        (
            "model.safetensors.index.json",
            br#"{"weight_map":{"lm_head.weight":"model-00002-of-00002.safetensors"}}"#.to_vec(),
        ),
        ("tokenizer/tokenizer.json", data(3, 20_000)),
        ("tokenizer/special_tokens_map.json", b"{}".to_vec()),
        ("README.md", b"# a model\n".to_vec()),
    ];
    for (name, bytes) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
}

#[test]
fn a_model_folder_round_trips_byte_identical_and_unsafe_trees_are_refused() {
    let tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let model = tc.dir.path().join("llama");
    hf_model(&model);
    std::fs::create_dir_all(model.join("empty-folder")).expect("mkdir");

    let put = rackpoint(&cluster, &["put", "hf", "1", s(&model)]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    let ls = rackpoint(&cluster, &["--json", "ls", "hf"]);
    assert!(ls.status.success(), "ls: {}", text(&ls.stderr));

    let out = tc.dir.path().join("restored");
    let get = rackpoint(&cluster, &["get", "hf", "--out", s(&out)]);
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    assert_eq!(tree(&out), tree(&model), "every file back at its path, byte for byte");
    assert!(
        text(&get.stdout).contains(s(&out.join("tokenizer/tokenizer.json"))),
        "{}",
        text(&get.stdout)
    );

    // A second get over the tree needs --force; with it, the tree is rewritten in place.
    let again = rackpoint(&cluster, &["get", "hf", "--out", s(&out)]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    let forced = rackpoint(&cluster, &["get", "hf", "--out", s(&out), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(tree(&out), tree(&model));

    // A link where the tree has a folder is never followed, with or without --force.
    let linked = tc.dir.path().join("linked");
    let elsewhere = tc.dir.path().join("elsewhere");
    std::fs::create_dir_all(&linked).expect("mkdir");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, linked.join("tokenizer")).expect("link");
    let through = rackpoint(&cluster, &["get", "hf", "--out", s(&linked), "--force"]);
    assert_eq!(through.status.code(), Some(1), "{}", text(&through.stderr));
    assert!(text(&through.stderr).contains("symbolic link"), "{}", text(&through.stderr));
    assert_eq!(
        std::fs::read_dir(&elsewhere).expect("read").count(),
        0,
        "nothing written through it"
    );
    assert_eq!(tree(&linked), BTreeMap::new(), "and nothing restored beside it");

    // Two folders whose trees share a name, and --name with a folder, are refused up front.
    let other = tc.dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("config.json"), b"{}").expect("write");
    let clash = rackpoint(&cluster, &["put", "hf", "2", s(&model), s(&other)]);
    assert_eq!(clash.status.code(), Some(1), "{}", text(&clash.stderr));
    assert!(text(&clash.stderr).contains("config.json"), "{}", text(&clash.stderr));
    let named = rackpoint(&cluster, &["put", "hf", "2", s(&other), "--name", "x"]);
    assert_eq!(named.status.code(), Some(2), "{}", text(&named.stderr));
    let empty = tc.dir.path().join("nothing");
    std::fs::create_dir_all(empty.join("inside")).expect("mkdir");
    let none = rackpoint(&cluster, &["put", "hf", "2", s(&empty)]);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none.stderr));
    let ls = rackpoint(&cluster, &["ls", "hf", "--step", "2"]);
    assert!(
        !text(&ls.stdout).lines().any(|l| l.trim_start().starts_with('2')),
        "{}",
        text(&ls.stdout)
    );
}
