//! A small mutation fuzzer that runs on stable Rust, as a test. Coverage-guided fuzzers need
//! what this machine lacks (cargo-fuzz and libFuzzer a nightly compiler; AFL++ its own
//! instrumenting toolchain), so this is the fallback the issue allows: large generated corpora.
//! Inputs are mutated from seeds (real files and calls) and from a kept corpus, and an input
//! that ends in a new *outcome* — an error message not seen before, with its numbers
//! blanked — joins the working corpus: behaviour diversity stands in for coverage.
//!
//! Each target runs for `TARN_FUZZ_SECONDS` (default 2) from `TARN_FUZZ_SEED` (default: the
//! clock, printed). The kept corpus, `tests/fuzz/<target>/`, runs first every time: a failure
//! found once is fixed and its input copied there, so it stays fixed. A failure is a panic, or
//! a broken invariant the target asserts (by panicking); its input is written to the temp
//! folder and shown.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's `tests/fuzz/<target>/`.
fn kept_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz")
        .join(target)
}

/// Every file under `dir` with one of `extensions`, read (for seeds from the YAML corpus).
pub fn files_under(dir: &Path, extensions: &[&str]) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| extensions.contains(&x))
                && let Ok(bytes) = std::fs::read(&p)
            {
                out.push(bytes);
            }
        }
    }
    out.sort();
    out
}

/// An outcome with what it quotes of the input dropped and its digits blanked, so that
/// "line 3: 'abc' is not…" and "line 4: 'xyz' is not…" are one outcome.
fn shape(outcome: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in outcome.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '\'' | '"' | '`') => {
                quote = Some(c);
                out.push('~');
            }
            None if c.is_ascii_digit() => out.push('#'),
            None => out.push(c),
        }
        if out.len() >= 100 {
            break;
        }
    }
    out
}

struct Mutator<'a> {
    rng: fastrand::Rng,
    dictionary: &'a [&'a [u8]],
}

impl Mutator<'_> {
    fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..self.rng.usize(1..=4) {
            let at = |rng: &mut fastrand::Rng, len: usize| rng.usize(0..=len);
            match self.rng.u8(0..8) {
                // A byte flipped, set to an interesting value, removed or inserted.
                0 if !out.is_empty() => {
                    let i = self.rng.usize(0..out.len());
                    out[i] ^= 1 << self.rng.u8(0..8);
                }
                1 if !out.is_empty() => {
                    let i = self.rng.usize(0..out.len());
                    out[i] = *self
                        .rng
                        .choice(&[0u8, b'\n', b' ', b'"', b'\'', b'\\', 0xff, 0xc3, b'{', b'['])
                        .unwrap();
                }
                2 if !out.is_empty() => {
                    let i = self.rng.usize(0..out.len());
                    let n = self.rng.usize(1..=(out.len() - i).min(16));
                    out.drain(i..i + n);
                }
                // A token of the target's grammar inserted.
                3 | 4 if !self.dictionary.is_empty() => {
                    let token = self.rng.choice(self.dictionary).unwrap();
                    let i = at(&mut self.rng, out.len());
                    out.splice(i..i, token.iter().copied());
                }
                // A piece of the input repeated (long values, deep nesting).
                5 if !out.is_empty() => {
                    let i = self.rng.usize(0..out.len());
                    let n = self.rng.usize(1..=(out.len() - i).min(32));
                    let piece = out[i..i + n].to_vec();
                    let times = self.rng.usize(1..=64);
                    for _ in 0..times {
                        out.splice(i..i, piece.iter().copied());
                    }
                }
                // Spliced with another input.
                6 if !other.is_empty() => {
                    let i = at(&mut self.rng, out.len());
                    let j = self.rng.usize(0..other.len());
                    out.truncate(i);
                    out.extend_from_slice(&other[j..]);
                }
                // A number made extreme.
                _ => {
                    let i = at(&mut self.rng, out.len());
                    let n = *self
                        .rng
                        .choice(&["-1", "0", "99999999999999999999", "1e309", "-0", "NaN"])
                        .unwrap();
                    out.splice(i..i, n.bytes());
                }
            }
        }
        out.truncate(1 << 16);
        out
    }
}

/// Fuzzes `run` (which returns the input's outcome, and panics on a broken invariant).
pub fn fuzz(
    target: &str,
    seeds: Vec<Vec<u8>>,
    dictionary: &[&[u8]],
    run: impl Fn(&[u8]) -> String + std::panic::RefUnwindSafe,
) {
    let seconds: u64 = std::env::var("TARN_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("TARN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let attempt = |input: &[u8]| -> Result<String, String> {
        std::panic::catch_unwind(|| run(input)).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    };
    let fail = |input: &[u8], why: &str| -> ! {
        let file = std::env::temp_dir().join(format!("tarn-fuzz-{target}-{seed}"));
        let _ = std::fs::write(&file, input);
        panic!(
            "fuzz target {target} (TARN_FUZZ_SEED={seed}) failed on the input in {}: {why}\ninput: {:?}",
            file.display(),
            String::from_utf8_lossy(&input[..input.len().min(2000)])
        );
    };
    // Quiet: the panics caught along the way are the fuzzer's business.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut corpus: Vec<Vec<u8>> = vec![];
    let mut seen = HashSet::new();
    let kept = files_under(&kept_dir(target), &["txt", "yml", "yaml", "json", "bin"]);
    let kept_count = kept.len();
    for input in kept.into_iter().chain(seeds) {
        match attempt(&input) {
            Ok(outcome) => {
                seen.insert(shape(&outcome));
            }
            Err(why) => {
                std::panic::set_hook(hook);
                fail(&input, &why)
            }
        }
        corpus.push(input);
    }
    assert!(!corpus.is_empty(), "fuzz target {target} has no seeds");
    let mut mutator = Mutator {
        rng: fastrand::Rng::with_seed(seed),
        dictionary,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let a = mutator.rng.usize(0..corpus.len());
        let b = mutator.rng.usize(0..corpus.len());
        let input = mutator.mutate(&corpus[a], &corpus[b]);
        runs += 1;
        match attempt(&input) {
            Ok(outcome) => {
                if seen.insert(shape(&outcome)) && corpus.len() < 5000 {
                    corpus.push(input);
                }
            }
            Err(why) => {
                std::panic::set_hook(hook);
                fail(&input, &why)
            }
        }
    }
    std::panic::set_hook(hook);
    eprintln!(
        "fuzz {target}: {runs} inputs in {seconds} s (seed {seed}), {kept_count} kept, {} outcomes",
        seen.len()
    );
}
