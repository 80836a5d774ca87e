//! The RFC 6962 Merkle tree over a tenant's entries: leaf =
//! SHA-256(0x00 ‖ entry bytes), node = SHA-256(0x01 ‖ left ‖ right), with
//! inclusion and consistency proofs (RFC 6962 §2.1.1 and §2.1.2).
//!
//! Proofs are computed from the leaf hashes (the store keeps them); the
//! incremental [`Frontier`] gives the root after each append in O(log n).

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of one leaf (an entry's canonical bytes).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root of the tree over these leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of the first `size`
/// leaves (RFC 6962 PATH).
pub fn inclusion_proof(leaves: &[Hash], index: usize, size: usize) -> Option<Vec<Hash>> {
    if index >= size || size > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, &leaves[..size], &mut out);
    Some(out)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The consistency proof between the trees of the first `old` and `new`
/// leaves (RFC 6962 PROOF).
pub fn consistency_proof(leaves: &[Hash], old: usize, new: usize) -> Option<Vec<Hash>> {
    if old == 0 || old > new || new > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    subproof(old, &leaves[..new], true, &mut out);
    Some(out)
}

fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    fr == *old_root && sr == *new_root && s_n == 0
}

/// The right edge of a growing tree: the roots of its perfect subtrees,
/// largest first. Appending and taking the root are O(log n).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (subtree size, subtree root), sizes strictly decreasing.
    stack: Vec<(u64, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        self.size += 1;
        self.stack.push((1, leaf));
        while self.stack.len() >= 2 {
            let n = self.stack.len();
            if self.stack[n - 1].0 != self.stack[n - 2].0 {
                break;
            }
            let (s, right) = self.stack.pop().unwrap_or((0, [0; 32]));
            let (_, left) = self.stack.pop().unwrap_or((0, [0; 32]));
            self.stack.push((s * 2, node_hash(&left, &right)));
        }
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some((_, last)) = iter.next() else {
            return empty_root();
        };
        let mut acc = *last;
        for (_, h) in iter {
            acc = node_hash(h, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn frontier_matches_the_recursive_root() {
        let l = leaves(70);
        let mut f = Frontier::default();
        for (i, h) in l.iter().enumerate() {
            f.push(*h);
            assert_eq!(f.root(), root(&l[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn proofs_verify_and_wrong_ones_do_not() {
        let l = leaves(37);
        for size in 1..=37 {
            let r = root(&l[..size]);
            for i in 0..size {
                let p = inclusion_proof(&l, i, size).expect("proof");
                assert!(verify_inclusion(&l[i], i as u64, size as u64, &p, &r));
                assert!(
                    !verify_inclusion(&l[(i + 1) % 37], i as u64, size as u64, &p, &r)
                        || size == 1 && i == 0 && l[(i + 1) % 37] == l[i]
                );
            }
            for old in 1..=size {
                let p = consistency_proof(&l, old, size).expect("proof");
                let or = root(&l[..old]);
                assert!(
                    verify_consistency(old as u64, size as u64, &or, &r, &p),
                    "{old} {size}"
                );
                if old < size {
                    assert!(!verify_consistency(old as u64, size as u64, &r, &r, &p));
                }
            }
        }
    }
}
