//! Every input format the core reads, fed hand-made bad files: truncated, wrong types, missing
//! fields, non-UTF-8 bytes, a 10 MB line, duplicate ids, ids out of range, empty, tensors of the
//! wrong shape or dtype, GGUF offsets past the end and headers claiming huge sizes. Each must be an
//! error naming the file (and line, field or tensor), short enough to read.

use std::path::Path;

use soft_core::data::{amazon2023, recbole, windows, Catalog};
use soft_core::model::formats::gguf::llama::load_llama_gguf;
use soft_core::model::formats::gguf::writer::{write_gguf, Out};
use soft_core::model::formats::gguf::{GgufFile, MetaValue};
use soft_core::model::formats::hf::load_hf_checkpoint;
use soft_core::model::formats::tokenizer::{check_vocab_fits, load_tokenizer};
use soft_core::model::weights::FloatEncoding;
use soft_core::train::checkpoint::Checkpoints;
use soft_core::train::distill::load_jsonl;

use crate::support::*;

/// The number of cases below; the README's "Failure behaviour" section quotes it.
pub const BAD_INPUTS: usize = 115;

/// A set of files that loads as a whole: `setup` writes a valid set into a directory, `load`
/// reads it back.
pub struct Format {
    pub name: &'static str,
    pub setup: fn(&Path),
    pub load: fn(&Path) -> soft_core::Result<()>,
}

pub const PROCESSED: Format = Format {
    name: "processed data",
    setup: |d| {
        std::fs::write(d.join("id2name.json"), catalog_json()).unwrap();
        std::fs::write(d.join("sequences.csv"), sequences_csv()).unwrap();
    },
    load: |d| {
        let catalog = Catalog::load(&d.join("id2name.json"))?;
        windows::load_sequences(&d.join("sequences.csv"), &catalog).map(drop)
    },
};

pub const AMAZON: Format = Format {
    name: "Amazon Reviews 2023",
    setup: |d| {
        std::fs::write(d.join("interaction.csv"), interaction_csv()).unwrap();
        std::fs::write(d.join("metadata.jsonl"), metadata_jsonl()).unwrap();
    },
    load: |d| amazon2023::load_dir(d, 2).map(drop),
};

pub const RECBOLE: Format = Format {
    name: "RecBole atomic files",
    setup: |d| {
        std::fs::write(d.join("x.inter"), recbole_inter()).unwrap();
        std::fs::write(d.join("x.item"), recbole_item()).unwrap();
    },
    load: |d| recbole::load(&d.join("x.inter"), &d.join("x.item"), 2).map(drop),
};

pub const DISTILLED: Format = Format {
    name: "distilled.jsonl",
    setup: |d| std::fs::write(d.join("distilled.jsonl"), distilled_jsonl()).unwrap(),
    load: |d| load_jsonl(&d.join("distilled.jsonl")).map(drop),
};

pub const TOKENIZER: Format = Format {
    name: "tokenizer.json",
    setup: |d| std::fs::write(d.join("tokenizer.json"), tokenizer_json()).unwrap(),
    load: |d| {
        let path = d.join("tokenizer.json");
        check_vocab_fits(&load_tokenizer(&path)?, VOCAB, &path)
    },
};

pub const HF: Format =
    Format { name: "Hugging Face checkpoint", setup: write_hf_dir, load: |d| load_hf_checkpoint(d).map(drop) };

pub const PEFT: Format =
    Format { name: "PEFT adapter", setup: write_adapter, load: |d| small_model().load_adapter(d).map(drop) };

/// A LLaRA adapter: the PEFT files and `projector.safetensors` (the item table and projector).
pub const LLARA: Format =
    Format { name: "LLaRA adapter", setup: write_llara_adapter, load: |d| llara_model().load_adapter(d).map(drop) };

pub const GGUF: Format = Format {
    name: "GGUF",
    setup: |d| std::fs::write(d.join("m.gguf"), gguf_bytes()).unwrap(),
    load: |d| {
        let file = GgufFile::open(&d.join("m.gguf"))?;
        file.tensors.keys().try_for_each(|name| file.tensor(name).map(drop))
    },
};

/// A Llama GGUF's hyper-parameters (the tensors are checked after them).
pub const GGUF_LLAMA: Format = Format {
    name: "GGUF Llama",
    setup: |d| std::fs::write(d.join("m.gguf"), gguf_bytes()).unwrap(),
    load: |d| load_llama_gguf(&d.join("m.gguf")).map(drop),
};

/// An epoch checkpoint as a resume reads it: checksums, state, optimizer state, adapter.
pub const CHECKPOINT: Format = Format {
    name: "checkpoint",
    setup: |d| {
        write_checkpoint(d);
    },
    load: |d| {
        let Some((dir, _)) = Checkpoints::new(d, "small").latest::<f32, ()>()? else { return Ok(()) };
        fresh_trainer().load_optimizer(&dir.join("optimizer.bpk"))?;
        small_model().load_adapter(&dir.join("adapter")).map(drop)
    },
};

/// One bad file: `format`'s valid set with `file` replaced by `bytes`; with `reseal`, the
/// checkpoint's checksums are rewritten afterwards so that the file's own loader is reached.
pub struct Case {
    pub format: &'static Format,
    pub file: &'static str,
    pub what: &'static str,
    pub bytes: Vec<u8>,
    pub needles: &'static [&'static str],
    pub reseal: bool,
    /// The file the error must name when it is not `file` (a claim checked against another file).
    pub named: Option<&'static str>,
}

impl Case {
    fn naming(self, file: &'static str) -> Self {
        Case { named: Some(file), ..self }
    }
}

fn case(
    format: &'static Format,
    file: &'static str,
    what: &'static str,
    bytes: impl Into<Vec<u8>>,
    needles: &'static [&'static str],
) -> Case {
    Case { format, file, what, bytes: bytes.into(), needles, reseal: false, named: None }
}

fn resealed(
    file: &'static str,
    what: &'static str,
    bytes: impl Into<Vec<u8>>,
    needles: &'static [&'static str],
) -> Case {
    Case { reseal: true, ..case(&CHECKPOINT, file, what, bytes, needles) }
}

fn cut(bytes: &[u8], keep: usize) -> Vec<u8> {
    bytes[..keep.min(bytes.len())].to_vec()
}

/// `text` cut `extra` bytes after the first `marker`.
fn cut_after(text: &str, marker: &str, extra: usize) -> Vec<u8> {
    let at = text.find(marker).expect("the marker is in the fixture") + marker.len() + extra;
    cut(text.as_bytes(), at)
}

fn with_long_line(head: &str, fill: u8, tail: &str) -> Vec<u8> {
    [head.as_bytes(), &long_line(TEN_MB, fill), tail.as_bytes()].concat()
}

/// A GGUF whose one tensor is described by `dims`, `type_id` and `offset`, with `data` after it.
fn gguf_tensor(dims: &[u64], type_id: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes()); // tensors
    out.extend(0u64.to_le_bytes()); // metadata
    out.extend(1u64.to_le_bytes());
    out.extend(b"t");
    out.extend((dims.len() as u32).to_le_bytes());
    dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
    out.extend(type_id.to_le_bytes());
    out.extend(offset.to_le_bytes());
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.extend(data);
    out
}

/// A GGUF header whose first metadata entry is `key` of type `ty` followed by `rest`.
fn gguf_meta(n_tensors: u64, n_kv: u64, key: &str, ty: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(n_tensors.to_le_bytes());
    out.extend(n_kv.to_le_bytes());
    out.extend((key.len() as u64).to_le_bytes());
    out.extend(key.as_bytes());
    out.extend(ty.to_le_bytes());
    out.extend(rest);
    out
}

fn llama_gguf(meta: Vec<(&str, MetaValue)>) -> Vec<u8> {
    let values: Vec<f32> = vec![0.5; 64];
    write_gguf(
        &meta,
        &[Out {
            name: "token_embd.weight".into(),
            shape: vec![2, 32],
            type_id: 0,
            bytes: FloatEncoding::F32.encode(&values),
        }],
        32,
    )
}

fn llama_meta() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("general.architecture", MetaValue::Str("llama".into())),
        ("llama.block_count", MetaValue::U32(1)),
        ("llama.context_length", MetaValue::U32(64)),
        ("llama.embedding_length", MetaValue::U32(32)),
        ("llama.feed_forward_length", MetaValue::U32(64)),
        ("llama.attention.head_count", MetaValue::U32(2)),
        ("llama.attention.head_count_kv", MetaValue::U32(1)),
        ("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5)),
    ]
}

fn replace_meta(key: &str, value: MetaValue) -> Vec<(&'static str, MetaValue)> {
    llama_meta().into_iter().map(|(k, v)| if k == key { (k, value.clone()) } else { (k, v) }).collect()
}

/// `bytes` (a safetensors file) with tensor `name` swapped for zeros of another shape or dtype.
fn swap_tensor(bytes: &[u8], name: &str, dtype: safetensors::Dtype, shape: Vec<usize>) -> Vec<u8> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let size = dtype.bitsize() / 8;
    let replacement = vec![0u8; shape.iter().product::<usize>() * size];
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> =
        file.tensors().into_iter().filter(|(n, _)| n != name).collect();
    tensors.push((name.to_string(), safetensors::tensor::TensorView::new(dtype, shape, &replacement).unwrap()));
    safetensors::serialize(tensors, None).unwrap()
}

/// File `file` of the set `setup` writes, read back.
fn fixture(setup: fn(&Path), file: &str) -> Vec<u8> {
    let dir = scratch("fixture");
    setup(&dir);
    let bytes = std::fs::read(dir.join(file)).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    bytes
}

/// The adapter file of [`write_adapter`] with tensor `name` swapped.
fn adapter_with(name: &str, dtype: safetensors::Dtype, shape: Vec<usize>) -> Vec<u8> {
    swap_tensor(&fixture(write_adapter, "adapter_model.safetensors"), name, dtype, shape)
}

/// The projector file of [`write_llara_adapter`] with tensor `name` swapped.
fn projector_with(name: &str, dtype: safetensors::Dtype, shape: Vec<usize>) -> Vec<u8> {
    swap_tensor(&fixture(write_llara_adapter, "projector.safetensors"), name, dtype, shape)
}

/// The projector file of [`write_llara_adapter`] with every value of tensor `name` set to `value`.
fn projector_filled(name: &str, value: f32) -> Vec<u8> {
    let bytes = fixture(write_llara_adapter, "projector.safetensors");
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = file.tensor(name).unwrap().shape().to_vec();
    let filled: Vec<u8> = std::iter::repeat_n(value.to_le_bytes(), shape.iter().product()).flatten().collect();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> =
        file.tensors().into_iter().filter(|(n, _)| n != name).collect();
    tensors.push((
        name.to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &filled).unwrap(),
    ));
    safetensors::serialize(tensors, None).unwrap()
}

/// The optimizer state of [`write_optimizer`] with its tensors' `param_id` key renamed (the same
/// length, so every offset stays valid): burn-optim panics on such a record (found by the
/// corruption suite's random cases).
fn optimizer_without_param_ids() -> Vec<u8> {
    let dir = scratch("optimizer-fixture");
    write_optimizer(&dir.join("optimizer.bpk"));
    let mut bytes = std::fs::read(dir.join("optimizer.bpk")).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let key = b"param_id";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("the record names its parameters");
    bytes[at + 2] = b'R';
    bytes
}

const Q_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";

pub fn cases() -> Vec<Case> {
    use safetensors::Dtype;
    let gguf = gguf_bytes();
    let st = model_safetensors();
    let projector = fixture(write_llara_adapter, "projector.safetensors");
    let adapter_cfg = {
        let d = scratch("adapter-config-fixture");
        write_adapter(&d);
        let text = std::fs::read_to_string(d.join("adapter_config.json")).unwrap();
        std::fs::remove_dir_all(d).unwrap();
        text
    };
    let q4 = |v: &str| adapter_cfg.replacen("\"r\": 8", v, 1);
    vec![
        // Processed data: sequences.csv.
        case(&PROCESSED, "sequences.csv", "empty file", "", &[":1:", "missing column"]),
        case(&PROCESSED, "sequences.csv", "header only", "user_id,item_ids,timestamp\n", &["no windows"]),
        case(&PROCESSED, "sequences.csv", "missing column", "user_id,items,timestamp\nu,\"[1, 2]\",1\n", &[":1:", "item_ids"]),
        case(&PROCESSED, "sequences.csv", "truncated mid-record", "user_id,item_ids,timestamp\nu1,\"[1, 2]\",10\nu2,\"[1, 2", &[":3:"]),
        case(&PROCESSED, "sequences.csv", "missing field", "user_id,item_ids,timestamp\nu1,\"[1, 2]\"\n", &[":2:", "fields"]),
        case(&PROCESSED, "sequences.csv", "item id of the wrong type", "user_id,item_ids,timestamp\nu,\"[1, x]\",1\n", &[":2:", "`x`"]),
        case(&PROCESSED, "sequences.csv", "negative item id", "user_id,item_ids,timestamp\nu,\"[1, -2]\",1\n", &[":2:", "-2"]),
        case(&PROCESSED, "sequences.csv", "timestamp of the wrong type", "user_id,item_ids,timestamp\nu,\"[1, 2]\",noon\n", &[":2:", "timestamp"]),
        case(&PROCESSED, "sequences.csv", "item id out of range", "user_id,item_ids,timestamp\nu,\"[1, 5]\",1\n", &[":2:", "item id 5"]),
        case(&PROCESSED, "sequences.csv", "item id past u32", "user_id,item_ids,timestamp\nu,\"[1, 99999999999]\",1\n", &[":2:", "99999999999"]),
        case(&PROCESSED, "sequences.csv", "no history", "user_id,item_ids,timestamp\nu,\"[2]\",1\n", &[":2:", "empty history"]),
        case(&PROCESSED, "sequences.csv", "non-UTF-8 user", b"user_id,item_ids,timestamp\n\xff\xfe,\"[1, 2]\",1\n".to_vec(), &[":2:", "UTF-8"]),
        case(&PROCESSED, "sequences.csv", "10 MB item list", with_long_line("user_id,item_ids,timestamp\nu,\"[", b'7', "]\",1\n"), &[":2:"]),
        case(&PROCESSED, "sequences.csv", "10 MB timestamp", with_long_line("user_id,item_ids,timestamp\nu,\"[1, 2]\",", b'x', "\n"), &[":2:", "timestamp"]),
        // Processed data: id2name.json.
        case(&PROCESSED, "id2name.json", "empty file", "", &[":1:"]),
        case(&PROCESSED, "id2name.json", "empty object", "{}", &["no items"]),
        case(&PROCESSED, "id2name.json", "truncated", cut(catalog_json().as_bytes(), 20), &["id2name.json:"]),
        case(&PROCESSED, "id2name.json", "title of the wrong type", "{\n\"1\": \"A\",\n\"2\": 7\n}", &[":3:"]),
        case(&PROCESSED, "id2name.json", "array instead of object", "[\"A\", \"B\"]", &[":1:"]),
        case(&PROCESSED, "id2name.json", "id not a number", "{\n\"1\": \"A\",\n\"two\": \"B\"\n}", &[":3:", "`two`"]),
        case(&PROCESSED, "id2name.json", "id zero", "{\"0\": \"A\", \"1\": \"B\"}", &["`0`"]),
        case(&PROCESSED, "id2name.json", "duplicate id", "{\n\"1\": \"A\",\n\"2\": \"B\",\n\"1\": \"C\"\n}", &[":4:", "item id 1 appears twice"]),
        case(&PROCESSED, "id2name.json", "the same id written twice", "{\n\"1\": \"A\",\n\"01\": \"C\"\n}", &[":3:", "appears twice"]),
        case(&PROCESSED, "id2name.json", "non-UTF-8 title", b"{\n\"1\": \"A\xff\"\n}".to_vec(), &[":2:", "UTF-8"]),
        case(&PROCESSED, "id2name.json", "10 MB id", with_long_line("{\"", b'9', "\": \"A\"}"), &["not a positive integer"]),
        // Amazon Reviews 2023.
        case(&AMAZON, "interaction.csv", "empty file", "", &["interaction.csv:1:"]),
        case(&AMAZON, "interaction.csv", "missing column", "user_id,rating,timestamp\nA,5,1\n", &[":1:", "parent_asin"]),
        case(&AMAZON, "interaction.csv", "timestamp of the wrong type", "user_id,parent_asin,rating,timestamp\nA,x1,5,soon\n", &[":2:", "timestamp"]),
        case(&AMAZON, "interaction.csv", "missing field", "user_id,parent_asin,rating,timestamp\nA,x1,5\n", &[":2:"]),
        case(&AMAZON, "interaction.csv", "non-UTF-8 user", b"user_id,parent_asin,rating,timestamp\n\xff,x1,5,1\n".to_vec(), &[":2:", "UTF-8"]),
        case(&AMAZON, "interaction.csv", "10 MB timestamp", with_long_line("user_id,parent_asin,rating,timestamp\nA,x1,5,", b'x', "\n"), &[":2:", "timestamp"]),
        case(&AMAZON, "interaction.csv", "no item left", "user_id,parent_asin,rating,timestamp\nA,zz,5,1\n", &["interactions"]),
        case(&AMAZON, "metadata.jsonl", "not JSON", "{\"parent_asin\": \"x1\", \"title\": \"A\"}\nnot json\n", &[":2:"]),
        case(&AMAZON, "metadata.jsonl", "missing field", "{\"title\": \"A\"}\n", &[":1:", "parent_asin"]),
        case(&AMAZON, "metadata.jsonl", "field of the wrong type", "{\"parent_asin\": 7, \"title\": \"A\"}\n", &[":1:", "parent_asin"]),
        case(&AMAZON, "metadata.jsonl", "truncated line", "{\"parent_asin\": \"x1\", \"tit", &[":1:"]),
        case(&AMAZON, "metadata.jsonl", "non-UTF-8 title", b"{\"parent_asin\": \"x1\", \"title\": \"\xff\"}\n".to_vec(), &[":1:", "UTF-8"]),
        case(&AMAZON, "metadata.jsonl", "10 MB line", with_long_line("{\"parent_asin\": \"x1\", \"title\": \"", b'a', "\n"), &[":1:"]),
        // RecBole atomic files.
        case(&RECBOLE, "x.inter", "empty file", "", &["empty file"]),
        case(&RECBOLE, "x.inter", "missing column", "user_id:token\ttimestamp:float\n1\t2\n", &[":1:", "item_id"]),
        case(&RECBOLE, "x.inter", "missing field", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\n", &[":2:", "fields"]),
        case(&RECBOLE, "x.inter", "timestamp of the wrong type", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tlate\n", &[":2:", "timestamp"]),
        case(&RECBOLE, "x.inter", "non-UTF-8 line", b"user_id:token\titem_id:token\ttimestamp:float\n1\t\xff\t3\n".to_vec(), &[":2:", "UTF-8"]),
        case(&RECBOLE, "x.inter", "10 MB line", with_long_line("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t", b'5', "x\n"), &[":2:", "timestamp"]),
        case(&RECBOLE, "x.inter", "item ids out of range of the catalog", "user_id:token\titem_id:token\ttimestamp:float\n1\t77\t3\n", &["no interactions left"]),
        case(&RECBOLE, "x.item", "missing title column", "item_id:token\tgenre:token\n1\tx\n", &[":1:", "movie_title"]),
        case(&RECBOLE, "x.item", "empty file", "", &["empty file"]),
        // distilled.jsonl.
        case(&DISTILLED, "distilled.jsonl", "empty file", "", &["no distilled examples"]),
        case(&DISTILLED, "distilled.jsonl", "truncated", cut(distilled_jsonl().as_bytes(), 60), &[":1:"]),
        case(&DISTILLED, "distilled.jsonl", "missing field", "{\"prompt\": \"p\", \"target\": 1, \"real\": \"r\", \"distilled\": \"d\"}\n", &[":1:", "grounds_to_target"]),
        case(&DISTILLED, "distilled.jsonl", "target of the wrong type", "{\"prompt\": \"p\", \"target\": \"1\", \"real\": \"r\", \"distilled\": \"d\", \"grounds_to_target\": true}\n", &[":1:"]),
        case(&DISTILLED, "distilled.jsonl", "target out of range", "{\"prompt\": \"p\", \"target\": -1, \"real\": \"r\", \"distilled\": \"d\", \"grounds_to_target\": true}\n", &[":1:"]),
        case(&DISTILLED, "distilled.jsonl", "non-UTF-8 line", b"{\"prompt\": \"\xff\"}\n".to_vec(), &[":1:", "UTF-8"]),
        case(&DISTILLED, "distilled.jsonl", "10 MB line", with_long_line("{\"prompt\": \"", b'p', "\n"), &[":1:"]),
        // tokenizer.json.
        case(&TOKENIZER, "tokenizer.json", "empty file", "", &[]),
        case(&TOKENIZER, "tokenizer.json", "truncated", cut(tokenizer_json().as_bytes(), 200), &[]),
        // Regressions found by the corruption suite: the tokenizers crate panicked ("Helper: EOF
        // while parsing", "key must be a string") on files damaged inside its decoder section.
        case(&TOKENIZER, "tokenizer.json", "truncated in the decoder", cut_after(&tokenizer_json(), "\"decoder\":", 5), &["not a tokenizer.json"]),
        case(&TOKENIZER, "tokenizer.json", "a number as a key in the decoder", tokenizer_json().replacen("\"decoder\":{\"", "\"decoder\":{7:\"", 1), &["not a tokenizer.json"]),
        case(&TOKENIZER, "tokenizer.json", "wrong type", "{\"model\": 7}", &[]),
        case(&TOKENIZER, "tokenizer.json", "non-UTF-8", b"{\"version\": \"\xff\"}".to_vec(), &[]),
        case(&TOKENIZER, "tokenizer.json", "ids past the model's vocabulary", tokenizer_json().replacen("\"<|endoftext|>\":0", "\"<|endoftext|>\":4000", 1), &[]),
        // Hugging Face checkpoint.
        case(&HF, "config.json", "empty file", "", &["config.json"]),
        case(&HF, "config.json", "missing field", hf_config_json().replace("\"hidden_size\":32,", ""), &["hidden_size"]),
        case(&HF, "config.json", "field of the wrong type", hf_config_json().replace("\"num_hidden_layers\":2", "\"num_hidden_layers\":\"two\""), &["invalid type"]),
        case(&HF, "config.json", "huge vocabulary", hf_config_json().replace("\"vocab_size\":300", "\"vocab_size\":1000000000000"), &["model.embed_tokens.weight", "shape"]).naming("model.safetensors"),
        case(&HF, "model.safetensors", "truncated", cut(&st, st.len() / 2), &[]),
        case(&HF, "model.safetensors", "header claiming a huge size", [u64::MAX / 2].iter().flat_map(|n| n.to_le_bytes()).chain(*b"{}").collect::<Vec<u8>>(), &[]),
        case(&HF, "model.safetensors", "tensor of the wrong shape", swap_tensor(&st, "model.norm.weight", Dtype::F32, vec![3]), &["model.norm.weight", "shape"]),
        case(&HF, "model.safetensors", "tensor of the wrong dtype", swap_tensor(&st, "model.norm.weight", Dtype::I32, vec![32]), &["model.norm.weight", "dtype"]),
        case(&HF, "tokenizer.json", "truncated", cut(tokenizer_json().as_bytes(), 100), &[]),
        // PEFT adapter.
        case(&PEFT, "adapter_config.json", "empty file", "", &[]),
        case(&PEFT, "adapter_config.json", "missing field", adapter_cfg.replacen("\"r\": 8,", "", 1), &["`r`"]),
        case(&PEFT, "adapter_config.json", "rank of the wrong type", q4("\"r\": \"eight\""), &[]),
        case(&PEFT, "adapter_config.json", "rank that does not match the tensors", q4("\"r\": 4"), &[Q_A, "shape"]).naming("adapter_model.safetensors"),
        case(&PEFT, "adapter_model.safetensors", "empty file", "", &[]),
        case(&PEFT, "adapter_model.safetensors", "tensor of the wrong shape", adapter_with(Q_A, Dtype::F32, vec![8, 31]), &[Q_A, "shape"]),
        case(&PEFT, "adapter_model.safetensors", "tensor of the wrong dtype", adapter_with(Q_A, Dtype::I64, vec![8, 32]), &[Q_A, "dtype"]),
        case(&PEFT, "adapter_model.safetensors", "a tensor this model has no place for", adapter_with("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", Dtype::F32, vec![8, 32]), &["layers.9"]),
        // LLaRA's projector beside the adapter.
        case(&LLARA, "projector.safetensors", "empty file", "", &[]),
        case(&LLARA, "projector.safetensors", "truncated", cut(&projector, projector.len() / 2), &[]),
        case(&LLARA, "projector.safetensors", "no item table", swap_tensor(&projector, "item_table", Dtype::F32, vec![0]), &["item_table"]),
        case(&LLARA, "projector.safetensors", "layer of the wrong width", projector_with("projector.0.weight", Dtype::F32, vec![31, 6]), &["projector.0.weight", "shape"]),
        case(&LLARA, "projector.safetensors", "layer of the wrong dtype", projector_with("projector.2.bias", Dtype::I64, vec![32]), &["projector.2.bias", "dtype"]),
        case(&LLARA, "projector.safetensors", "a NaN weight", projector_filled("projector.2.weight", f32::NAN), &["projector.2.weight", "finite"]),
        case(&LLARA, "projector.safetensors", "a tensor a projector has no place for", projector_with("projector.4.weight", Dtype::F32, vec![2, 2]), &["projector.4.weight"]),
        // GGUF.
        case(&GGUF, "m.gguf", "empty file", "", &["truncated"]),
        case(&GGUF, "m.gguf", "bad magic", b"GGUX\x03\0\0\0".to_vec(), &["magic"]),
        case(&GGUF, "m.gguf", "truncated in the metadata", cut(&gguf, 60), &["truncated"]),
        case(&GGUF, "m.gguf", "truncated in the tensor data", cut(&gguf, gguf.len() - 1), &["d.q8_0", "past the end"]),
        case(&GGUF, "m.gguf", "tensor offset past the end", gguf_tensor(&[32], 0, 1 << 40, &[0; 128]), &["`t`", "past the end"]),
        case(&GGUF, "m.gguf", "dimensions whose product overflows", gguf_tensor(&[u64::MAX / 2, 4], 0, 0, &[]), &["`t`", "too large"]),
        case(&GGUF, "m.gguf", "huge tensor, tiny file", gguf_tensor(&[1 << 20, 1 << 20], 0, 0, &[0; 64]), &["`t`", "past the end"]),
        case(&GGUF, "m.gguf", "five dimensions", gguf_tensor(&[1, 1, 1, 1, 1], 0, 0, &[0; 4]), &["`t`", "dimensions"]),
        case(&GGUF, "m.gguf", "unknown tensor type", gguf_tensor(&[32], 99, 0, &[0; 128]), &["`t`", "not supported"]),
        case(&GGUF, "m.gguf", "array claiming 2^60 elements", gguf_meta(0, 1, "k", 9, &[&4u32.to_le_bytes()[..], &(1u64 << 60).to_le_bytes()].concat()), &["truncated"]),
        case(&GGUF, "m.gguf", "string claiming 2^60 bytes", gguf_meta(0, 1, "k", 8, &(1u64 << 60).to_le_bytes()), &["truncated"]),
        case(&GGUF, "m.gguf", "2^63 metadata entries", gguf_meta(0, 1 << 63, "k", 4, &7u32.to_le_bytes()), &["truncated"]),
        case(&GGUF, "m.gguf", "unknown metadata type", gguf_meta(0, 1, "k", 77, &[]), &["`k`", "unknown value type"]),
        case(&GGUF, "m.gguf", "bool that is not 0 or 1", gguf_meta(0, 1, "k", 7, &[5]), &["`k`", "bool"]),
        case(&GGUF, "m.gguf", "non-UTF-8 key", gguf_meta(0, 1, "k\u{ff}", 4, &7u32.to_le_bytes()).into_iter().map(|b| if b == 0xc3 { 0xff } else { b }).collect::<Vec<u8>>(), &["UTF-8"]),
        case(&GGUF_LLAMA, "m.gguf", "missing hyper-parameter", llama_gguf(llama_meta().into_iter().filter(|(k, _)| *k != "llama.block_count").collect()), &["llama.block_count", "missing"]),
        case(&GGUF_LLAMA, "m.gguf", "hyper-parameter of the wrong type", llama_gguf(replace_meta("llama.embedding_length", MetaValue::Str("32".into()))), &["llama.embedding_length"]),
        case(&GGUF_LLAMA, "m.gguf", "architecture not llama", llama_gguf(replace_meta("general.architecture", MetaValue::Str("gpt2".into()))), &["general.architecture"]),
        case(&GGUF_LLAMA, "m.gguf", "missing layer tensors", llama_gguf(llama_meta()), &["missing"]),
        case(&GGUF_LLAMA, "m.gguf", "2^40 layers claimed", llama_gguf(replace_meta("llama.block_count", MetaValue::U64(1 << 40))), &[]),
        // Checkpoints: the checksums catch any change; resealed ones reach each file's loader.
        case(&CHECKPOINT, "epoch-001/checksums.json", "no checksums", Vec::new(), &["checksums.json"]),
        case(&CHECKPOINT, "epoch-001/checksums.json", "checksums of the wrong type", "{\"sha256\": [1, 2]}", &["checksums.json"]),
        case(&CHECKPOINT, "epoch-001/adapter/adapter_model.safetensors", "truncated adapter", b"\x08\0\0\0\0\0\0\0{}".to_vec(), &["checksum mismatch"]),
        case(&CHECKPOINT, "epoch-001/optimizer.bpk", "empty optimizer state", "", &["checksum mismatch"]),
        resealed("epoch-001/state.json", "state missing a field", "{\"epoch\": 1, \"steps\": 1, \"best\": null, \"extra\": null}", &["records"]),
        resealed("epoch-001/state.json", "state of the wrong type", "{\"epoch\": \"one\", \"steps\": 1, \"records\": [1.0], \"best\": null, \"extra\": null}", &["invalid type"]),
        resealed("epoch-001/state.json", "records that do not match the epoch", "{\"epoch\": 3, \"steps\": 1, \"records\": [1.0], \"best\": null, \"extra\": null}", &["corrupted"]),
        resealed("epoch-001/optimizer.bpk", "truncated optimizer state", b"BPK".to_vec(), &[]),
        resealed("epoch-001/optimizer.bpk", "optimizer state without parameter ids", optimizer_without_param_ids(), &["not an optimizer state"]),
        resealed("epoch-001/adapter/adapter_model.safetensors", "adapter tensor of the wrong shape", adapter_with(Q_A, Dtype::F32, vec![8, 31]), &[Q_A, "shape"]),
    ]
}

/// Writes `case` over its format's valid set in a fresh directory and checks the loader's error.
pub fn check(case: &Case) {
    let dir = scratch("bad");
    (case.format.setup)(&dir);
    let path = dir.join(case.file);
    let named = dir.join(case.named.unwrap_or(case.file));
    if case.bytes.is_empty() && case.file.ends_with("checksums.json") && case.what == "no checksums" {
        std::fs::remove_file(&path).unwrap();
    } else {
        std::fs::write(&path, &case.bytes).unwrap();
    }
    if case.reseal {
        soft_core::checksums::write_manifest(&dir.join("epoch-001")).unwrap();
    }
    let result = std::panic::catch_unwind(|| (case.format.load)(&dir));
    let result =
        result.unwrap_or_else(|_| panic!("{} / {} ({}): the loader panicked", case.format.name, case.file, case.what));
    // The error names the bad file itself, or for a missing manifest the manifest's path.
    let err = expect_error(result, &named, case.needles);
    assert!(
        err.len() < 2_000,
        "{} / {}: an unreadably long message ({} bytes)",
        case.format.name,
        case.what,
        err.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_bad_input_is_an_error_naming_the_file() {
    let cases = cases();
    assert_eq!(cases.len(), BAD_INPUTS, "update BAD_INPUTS and the README's count");
    for case in &cases {
        check(case);
    }
    eprintln!("{} bad inputs, each refused with an error naming its file", cases.len());
}

/// The valid sets themselves load: the cases above fail for their one bad file, not the set.
#[test]
fn every_valid_set_loads() {
    for format in [&PROCESSED, &AMAZON, &RECBOLE, &DISTILLED, &TOKENIZER, &HF, &PEFT, &LLARA, &GGUF, &CHECKPOINT] {
        let dir = scratch("valid");
        (format.setup)(&dir);
        (format.load)(&dir).unwrap_or_else(|e| panic!("{}: {e}", format.name));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
