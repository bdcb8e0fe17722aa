//! A prefix trie of the token sequences a constrained decoder may write (D3, "Decoding Matters"):
//! beam search keeps one node per beam and may only extend it along the trie's edges, so every
//! finished answer is exactly one of the sequences, i.e. a real item's title.
//!
//! Nodes are numbered, with their edges stored flat (one slice per node, sorted by token), so a
//! beam carries a plain `usize` and stepping it is a binary search over a few edges.

/// Token sequences as a trie whose complete sequences may be followed by `eos`.
#[derive(Clone, PartialEq, Eq)]
pub struct TitleTrie {
    eos: u32,
    /// Node `n`'s edges are `edges[offsets[n]..offsets[n + 1]]`, sorted by token.
    offsets: Vec<usize>,
    edges: Vec<(u32, usize)>,
    /// Whether a sequence ends at each node, so that EOS may follow it.
    ends: Vec<bool>,
    sequences: usize,
    max_len: usize,
}

impl TitleTrie {
    /// The trie of `sequences`, each one allowed complete answer (duplicates are harmless). A
    /// sequence is cut at its first `eos`: decoding stops there, so nothing after it could ever
    /// be written.
    pub fn new(sequences: impl IntoIterator<Item = Vec<u32>>, eos: u32) -> Self {
        let mut children: Vec<Vec<(u32, usize)>> = vec![Vec::new()];
        let mut ends = vec![false];
        let (mut count, mut max_len) = (0, 0);
        for sequence in sequences {
            let sequence = sequence.split(|&t| t == eos).next().unwrap_or_default();
            let mut node = 0;
            for &token in sequence {
                node = match children[node].binary_search_by_key(&token, |e| e.0) {
                    Ok(i) => children[node][i].1,
                    Err(i) => {
                        let child = children.len();
                        children[node].insert(i, (token, child));
                        children.push(Vec::new());
                        ends.push(false);
                        child
                    }
                };
            }
            ends[node] = true;
            count += 1;
            max_len = max_len.max(sequence.len());
        }
        let mut offsets = Vec::with_capacity(children.len() + 1);
        offsets.push(0);
        let mut edges = Vec::with_capacity(children.len().saturating_sub(1));
        for c in children {
            edges.extend(c);
            offsets.push(edges.len());
        }
        Self { eos, offsets, edges, ends, sequences: count, max_len }
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The node before any token.
    pub fn root(&self) -> usize {
        0
    }

    /// How many sequences went in (with duplicates).
    pub fn num_sequences(&self) -> usize {
        self.sequences
    }

    pub fn num_nodes(&self) -> usize {
        self.ends.len()
    }

    /// The longest sequence's length, EOS not counted: decoding needs one more new token than
    /// this for every sequence to be able to finish.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The largest token on any edge (EOS not counted); `None` for an empty trie.
    pub fn max_token(&self) -> Option<u32> {
        self.edges.iter().map(|e| e.0).max()
    }

    /// `node`'s outgoing `(token, child)` edges, sorted by token; EOS is never among them.
    pub fn children(&self, node: usize) -> &[(u32, usize)] {
        &self.edges[self.offsets[node]..self.offsets[node + 1]]
    }

    pub fn child(&self, node: usize, token: u32) -> Option<usize> {
        let edges = self.children(node);
        edges.binary_search_by_key(&token, |e| e.0).ok().map(|i| edges[i].1)
    }

    /// Whether a complete sequence ends at `node`, so that EOS may come next.
    pub fn is_end(&self, node: usize) -> bool {
        self.ends[node]
    }

    /// The tokens that may follow `node`: its edges' tokens, then EOS if a sequence ends there.
    pub fn allowed(&self, node: usize) -> impl Iterator<Item = u32> + '_ {
        self.children(node).iter().map(|e| e.0).chain(self.is_end(node).then_some(self.eos))
    }

    /// The node reached by `prefix` from the root, if `prefix` starts some sequence.
    pub fn walk(&self, prefix: &[u32]) -> Option<usize> {
        prefix.iter().try_fold(self.root(), |node, &t| self.child(node, t))
    }
}

// A trie can have hundreds of thousands of nodes; printing them would swamp any `BeamConfig`
// debug output.
impl std::fmt::Debug for TitleTrie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TitleTrie")
            .field("sequences", &self.sequences)
            .field("nodes", &self.num_nodes())
            .field("max_len", &self.max_len)
            .field("eos", &self.eos)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOS: u32 = 0;

    fn allowed(trie: &TitleTrie, prefix: &[u32]) -> Vec<u32> {
        trie.allowed(trie.walk(prefix).unwrap()).collect()
    }

    #[test]
    fn shared_prefixes_share_nodes() {
        let trie = TitleTrie::new([vec![5, 6, 7], vec![5, 6, 9], vec![5, 8], vec![3]], EOS);
        // root, 5, 5-6, 5-6-7, 5-6-9, 5-8, 3
        assert_eq!(trie.num_nodes(), 7);
        assert_eq!(trie.num_sequences(), 4);
        assert_eq!((trie.max_len(), trie.max_token()), (3, Some(9)));
        assert_eq!(allowed(&trie, &[]), [3, 5]);
        assert_eq!(allowed(&trie, &[5]), [6, 8]);
        assert_eq!(allowed(&trie, &[5, 6]), [7, 9]);
        assert_eq!(trie.walk(&[5, 7]), None);
        assert_eq!(trie.walk(&[4]), None);
        let n = trie.child(trie.root(), 5).unwrap();
        assert_eq!(trie.children(n).iter().map(|e| e.0).collect::<Vec<_>>(), [6, 8]);
        assert_eq!(trie.child(n, 8), trie.walk(&[5, 8]));
    }

    #[test]
    fn eos_only_after_complete_sequences() {
        let trie = TitleTrie::new([vec![5, 6, 7], vec![3]], EOS);
        assert!(!trie.is_end(trie.root()));
        assert_eq!(allowed(&trie, &[5]), [6]);
        assert_eq!(allowed(&trie, &[5, 6]), [7]);
        assert_eq!(allowed(&trie, &[5, 6, 7]), [EOS]);
        assert_eq!(allowed(&trie, &[3]), [EOS]);
        // EOS is never an edge: nothing follows a finished answer.
        assert_eq!(trie.child(trie.walk(&[3]).unwrap(), EOS), None);
    }

    #[test]
    fn a_sequence_that_prefixes_another_allows_eos_and_continuing() {
        let trie = TitleTrie::new([vec![5, 6, 7], vec![5, 6]], EOS);
        assert_eq!(allowed(&trie, &[5, 6]), [7, EOS]);
        assert!(trie.is_end(trie.walk(&[5, 6]).unwrap()));
        assert_eq!(allowed(&trie, &[5, 6, 7]), [EOS]);
    }

    #[test]
    fn sequences_are_cut_at_eos_and_an_empty_trie_allows_nothing() {
        let trie = TitleTrie::new([vec![5, EOS, 6]], EOS);
        assert_eq!(allowed(&trie, &[5]), [EOS]);
        assert_eq!(trie.max_len(), 1);
        let empty = TitleTrie::new(Vec::<Vec<u32>>::new(), EOS);
        assert_eq!(allowed(&empty, &[]), Vec::<u32>::new());
        assert_eq!(empty.max_token(), None);
    }
}
