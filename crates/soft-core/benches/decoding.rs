//! Free against constrained beam search on the real SmolLM2 and the Amazon Books catalog:
//! prints both times, and one step's candidate selection alone; every constrained answer must
//! be a catalog title. `cargo bench -p soft-core --bench decoding`; skipped, with a note, when
//! the GGUF (scripts/fetch-smollm2.sh) or the catalog is missing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Tensor};
use soft_core::data::{prompt, Catalog, Domain};
use soft_core::eval::decoding::title_trie;
use soft_core::eval::llm::history_prompt;
use soft_core::model::decoding::generate::{allowed_candidates, beam_search, top_candidates, Beam, BeamConfig};
use soft_core::model::formats::pretrained::load_path;
use soft_core::model::formats::tokenizer::encode_prompt;

const PROMPTS: usize = 8;
const BEAMS: usize = 4;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_path = root.join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let catalog_path = root.join("data/amazon-books/id2name.json");
    for path in [&model_path, &catalog_path] {
        if !path.exists() {
            eprintln!("decoding bench skipped: {} not found", path.display());
            return;
        }
    }
    let pretrained = load_path(&model_path, &Device::flex()).unwrap();
    let (model, tokenizer, special) = (pretrained.model, pretrained.tokenizer, pretrained.special);
    let catalog = Catalog::load(&catalog_path).unwrap();

    let start = Instant::now();
    let trie = title_trie(&tokenizer, &special, &catalog).unwrap();
    println!("trie: {trie:?}, built in {:.2?}", start.elapsed());
    let prompts: Vec<Vec<u32>> = (0..PROMPTS as u32)
        .map(|i| {
            let history: Vec<u32> = (1..=5).map(|j| 1 + i * 50 + j * 7).collect();
            encode_prompt(&tokenizer, &special, &history_prompt(&catalog, Domain::Books, &history)).unwrap()
        })
        .collect();
    let free = BeamConfig { num_beams: BEAMS, num_return_sequences: BEAMS, ..BeamConfig::new(special.eos) };
    let constrained = BeamConfig { constraint: Some(Arc::new(trie)), ..free.clone() };
    for (name, config) in [("free", &free), ("constrained", &constrained)] {
        let start = Instant::now();
        let results = beam_search(&model, &prompts, config).unwrap();
        let lens: Vec<usize> = results.iter().map(|h| h[0].tokens.len()).collect();
        println!("{name}: {:.2?} for {PROMPTS} prompts x {BEAMS} beams, best lengths {lens:?}", start.elapsed());
        for hyps in &results {
            println!("  {:?}", tokenizer.decode(&hyps[0].tokens, true).unwrap());
        }
        if config.constraint.is_some() {
            let titles: Vec<String> =
                catalog.grounding_ids().iter().map(|&id| prompt::response(catalog.title(id).unwrap())).collect();
            for h in results.iter().flatten().filter(|h| h.finished) {
                assert!(titles.contains(&tokenizer.decode(&h.tokens, true).unwrap()), "{h:?}");
            }
        }
    }

    // One step's candidate selection alone, every row of the real vocabulary, every beam at the
    // opening quote (the widest node: every title's first word follows it).
    let trie = constrained.constraint.as_deref().unwrap();
    let quote = trie.children(trie.root()).iter().map(|e| e.1).max_by_key(|&n| trie.children(n).len()).unwrap();
    let vocab = model.config().vocab_size;
    let running: Vec<Vec<Beam>> = (0..PROMPTS)
        .map(|_| (0..BEAMS).map(|_| Beam { tokens: Vec::new(), sum_logprob: -1.0, node: quote }).collect())
        .collect();
    let active: Vec<usize> = (0..PROMPTS).collect();
    let logprobs =
        log_softmax(Tensor::<2>::random([PROMPTS * BEAMS, vocab], Distribution::Default, &model.device()), 1);
    let _ = logprobs.clone().into_data();
    let time = |f: &dyn Fn() -> Vec<Vec<(f32, usize)>>| -> Duration {
        let start = Instant::now();
        (0..20).for_each(|_| drop(f()));
        start.elapsed() / 20
    };
    let n = 2 * BEAMS;
    let free_step = time(&|| top_candidates(logprobs.clone(), &active, &running, n, vocab).unwrap());
    let allowed_step = time(&|| allowed_candidates(logprobs.clone(), &active, &running, trie, n, vocab).unwrap());
    println!(
        "candidate selection per step: top-k {free_step:.2?}, trie ({} allowed per beam) {allowed_step:.2?}",
        trie.children(quote).len()
    );
}
