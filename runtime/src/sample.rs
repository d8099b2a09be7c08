//! Sampling from logits: greedy, temperature, top-k, top-p, min-p, repetition and presence
//! penalties, seeded so the same seed gives the same tokens on the same backend.
//!
//! The steps run in llama.cpp's default order: penalties, top-k, top-p, min-p, temperature,
//! then a draw. Top-p and min-p look at probabilities at temperature 1, so temperature only
//! reshapes the distribution among the tokens that survive them. The random numbers come from
//! a built-in xoshiro256** generator, so a seed means the same thing on every platform and
//! with every version of every dependency.
//!
//! ```
//! use moetile::sample::{Sampler, SamplerConfig};
//! let mut sampler = Sampler::new(SamplerConfig { seed: 7, ..SamplerConfig::default() })?;
//! let logits = [-1.0, 3.0, -2.0, 2.5];
//! let token = sampler.sample(&logits, &[]);
//! assert!(token == 1 || token == 3); // min-p 0.05 rules out the others here
//! assert_eq!(Sampler::new(SamplerConfig::greedy())?.sample(&logits, &[]), 1);
//! # Ok::<(), moetile::Error>(())
//! ```
//!
//! Non-finite logits: NaN counts as −∞ (the token is never chosen). If some logits are +∞,
//! the choice is among those tokens only, uniformly. If no token has a logit above −∞ (or the
//! slice is empty), [`Sampler::sample`] returns token 0 rather than panicking; a model that
//! produces that is broken, and the caller's checks on logits are the place to catch it.

use std::collections::HashMap;

use crate::{Error, Result};

/// How tokens are chosen. Each filter has a value that turns it off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 picks the most likely token (greedy) and ignores the filters.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the most likely tokens until their probability adds up to `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recent tokens by this; 1 is off.
    pub repeat_penalty: f32,
    /// Subtract this from the logit of each token present in the recent window; 0 is off.
    pub presence_penalty: f32,
    /// Subtract this times the token's count in the recent window; 0 is off.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens the penalties look at; 0 turns them off.
    pub penalty_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no penalties,
    /// window 64), with a fixed seed so runs repeat.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every value against its domain.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: f32, ok: bool, expected: &str| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(Error::InvalidSetting {
                    name: name.into(),
                    value: value.to_string(),
                    expected: expected.into(),
                })
            }
        };
        check(
            "temperature",
            self.temperature,
            self.temperature >= 0.0,
            "a number >= 0 (0 = greedy)",
        )?;
        check(
            "top_p",
            self.top_p,
            self.top_p > 0.0 && self.top_p <= 1.0,
            "a number in (0, 1] (1 = off)",
        )?;
        check(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "a number in [0, 1] (0 = off)",
        )?;
        check(
            "repeat_penalty",
            self.repeat_penalty,
            self.repeat_penalty > 0.0,
            "a number > 0 (1 = off)",
        )?;
        check(
            "presence_penalty",
            self.presence_penalty,
            true,
            "a finite number (0 = off)",
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            true,
            "a finite number (0 = off)",
        )?;
        Ok(())
    }
}

/// Chooses tokens from logits; owns the random state and reusable buffers.
#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Xoshiro256,
    logits: Vec<f32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// A sampler with `config`, seeded from `config.seed`.
    pub fn new(config: SamplerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            rng: Xoshiro256::new(config.seed),
            logits: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Restarts the random sequence from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.config.seed = seed;
        self.rng = Xoshiro256::new(seed);
    }

    /// Picks the next token from `logits` (one per vocabulary entry), given the tokens so far
    /// (`history`, oldest first; only its last `penalty_last_n` count).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let config = self.config;
        self.logits.clear();
        self.logits.extend(
            logits
                .iter()
                .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l }),
        );
        self.apply_penalties(history);
        let logits = &self.logits;

        // +inf logits: only they can be chosen, all equally.
        let candidates = &mut self.candidates;
        candidates.clear();
        if logits.contains(&f32::INFINITY) {
            candidates.extend(
                (0..logits.len() as u32)
                    .filter(|&i| logits[i as usize] == f32::INFINITY)
                    .map(|i| (i, 0.0)),
            );
        } else {
            candidates.extend(
                logits
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.is_finite())
                    .map(|(i, &l)| (i as u32, l)),
            );
        }
        if candidates.is_empty() {
            return 0;
        }
        if config.temperature == 0.0 {
            return candidates
                .iter()
                .min_by(|a, b| by_likelihood(a, b))
                .map_or(0, |c| c.0);
        }

        if config.top_k > 0 && config.top_k < candidates.len() {
            candidates.select_nth_unstable_by(config.top_k - 1, by_likelihood);
            candidates.truncate(config.top_k);
        }
        // Probabilities at temperature 1, relative to the most likely token.
        let max = candidates
            .iter()
            .map(|c| c.1)
            .fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = candidates.iter().map(|c| f64::from(c.1 - max).exp()).sum();
        // min-p compares with the most likely token only, so it commutes with top-p's
        // truncation; applying it first leaves top-p fewer tokens to sort.
        if config.min_p > 0.0 {
            let floor = config.min_p.ln();
            candidates.retain(|c| c.1 - max >= floor);
        }
        candidates.sort_unstable_by(by_likelihood);
        if config.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = candidates
                .iter()
                .position(|c| {
                    cumulative += f64::from(c.1 - max).exp() / total;
                    cumulative >= f64::from(config.top_p)
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep);
        }

        let inv_t = 1.0 / f64::from(config.temperature);
        let weight = |l: f32| (f64::from(l - max) * inv_t).exp();
        let sum: f64 = candidates.iter().map(|c| weight(c.1)).sum();
        let mut target = self.rng.next_f64() * sum;
        for &(id, l) in candidates.iter() {
            target -= weight(l);
            if target < 0.0 {
                return id;
            }
        }
        // Rounding left a sliver past the last token.
        candidates.last().map_or(0, |c| c.0)
    }

    /// Repetition, presence and frequency penalties over the recent window, in place.
    fn apply_penalties(&mut self, history: &[u32]) {
        let c = &self.config;
        let off =
            c.repeat_penalty == 1.0 && c.presence_penalty == 0.0 && c.frequency_penalty == 0.0;
        if off || c.penalty_last_n == 0 {
            return;
        }
        let window = &history[history.len().saturating_sub(c.penalty_last_n)..];
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &id in window {
            *counts.entry(id).or_default() += 1;
        }
        for (id, count) in counts {
            let Some(l) = self.logits.get_mut(id as usize) else {
                continue;
            };
            *l = if *l > 0.0 {
                *l / c.repeat_penalty
            } else {
                *l * c.repeat_penalty
            };
            *l -= c.presence_penalty + c.frequency_penalty * count as f32;
        }
    }
}

/// Most likely first; equal logits in id order, so results never depend on sort stability.
fn by_likelihood(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64 as its authors recommend.
#[derive(Clone, Debug)]
pub(crate) struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub(crate) fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut splitmix = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [splitmix(), splitmix(), splitmix(), splitmix()],
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::f32::consts::LN_2;

    fn sampler(config: SamplerConfig) -> Sampler {
        Sampler::new(config).unwrap()
    }

    /// Plain sampling: no filters, temperature 1.
    fn plain(seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplerConfig::default()
        }
    }

    fn argmax(logits: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-10.0..10.0)).collect()
    }

    /// Draws `n` tokens and counts them; pearson's chi-square against `expected` probabilities.
    fn chi_square(config: SamplerConfig, logits: &[f32], expected: &[f64], n: usize) -> f64 {
        let mut s = sampler(config);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[s.sample(logits, &[]) as usize] += 1;
        }
        let mut chi = 0.0;
        for (i, (&c, &p)) in counts.iter().zip(expected).enumerate() {
            if p == 0.0 {
                assert_eq!(c, 0, "token {i} has probability 0 but was drawn {c} times");
            } else {
                let e = p * n as f64;
                chi += (c as f64 - e).powi(2) / e;
            }
        }
        chi
    }

    /// Probabilities 1/2, 1/4, 1/8, 1/8.
    const HALVES: [f32; 4] = [-LN_2, -2.0 * LN_2, -3.0 * LN_2, -3.0 * LN_2];
    /// Chi-square at p = 0.001: 3 degrees of freedom 16.27, 1 degree 10.83.
    const CHI_3: f64 = 16.27;
    const CHI_1: f64 = 10.83;

    #[test]
    fn greedy_is_argmax() {
        for seed in 0..50 {
            let logits = random_logits(seed, 1000);
            assert_eq!(
                sampler(SamplerConfig::greedy()).sample(&logits, &[]),
                argmax(&logits),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn top_k_one_is_greedy() {
        for seed in 0..50 {
            let logits = random_logits(seed, 1000);
            let config = SamplerConfig {
                top_k: 1,
                ..plain(seed)
            };
            assert_eq!(
                sampler(config).sample(&logits, &[]),
                argmax(&logits),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits = vec![0.0; 1000];
        let draw = |seed| {
            let mut s = sampler(plain(seed));
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        let mut s = sampler(plain(42));
        let first = s.sample(&logits, &[]);
        s.reseed(42);
        assert_eq!(s.sample(&logits, &[]), first);
    }

    #[test]
    fn generator_matches_the_reference_sequence() {
        // Pins the generator so a seed keeps its meaning: SplitMix64(0) seeds xoshiro256**
        // (values from an independent Python transcription of both algorithms).
        let mut rng = Xoshiro256::new(0);
        assert_eq!(rng.s[0], 0xE220_A839_7B1D_CDAF);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                0x99EC_5F36_CB75_F2B4,
                0xBF6E_1F78_4956_452A,
                0x1A5F_849D_4933_E6E0
            ]
        );
    }

    #[test]
    fn draws_follow_the_softmax() {
        let chi = chi_square(plain(1), &HALVES, &[0.5, 0.25, 0.125, 0.125], 20_000);
        assert!(chi < CHI_3, "chi-square {chi}");
        // A skewed sampler fails the same test: the check has teeth.
        let chi = chi_square(plain(1), &HALVES, &[0.4, 0.3, 0.15, 0.15], 20_000);
        assert!(chi > CHI_3, "chi-square {chi}");
    }

    #[test]
    fn temperature_sharpens() {
        // T = 0.5 squares the probabilities: 1/4, 1/16, 1/64, 1/64 normalised.
        let p = [16.0 / 22.0, 4.0 / 22.0, 1.0 / 22.0, 1.0 / 22.0];
        let chi = chi_square(
            SamplerConfig {
                temperature: 0.5,
                ..plain(2)
            },
            &HALVES,
            &p,
            20_000,
        );
        assert!(chi < CHI_3, "chi-square {chi}");
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        // top-k 2 and top-p 0.7 keep {0, 1} (0.5 < 0.7 <= 0.75); min-p 0.3 keeps p >= 0.15.
        let keep_two = [2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0];
        for config in [
            SamplerConfig {
                top_k: 2,
                ..plain(3)
            },
            SamplerConfig {
                top_p: 0.7,
                ..plain(3)
            },
            SamplerConfig {
                min_p: 0.3,
                ..plain(3)
            },
        ] {
            let chi = chi_square(config, &HALVES, &keep_two, 20_000);
            assert!(chi < CHI_1, "{config:?}: chi-square {chi}");
        }
        // top-p 0.5 keeps exactly the first token.
        let mut s = sampler(SamplerConfig {
            top_p: 0.5,
            ..plain(4)
        });
        assert!((0..100).all(|_| s.sample(&HALVES, &[]) == 0));
    }

    #[test]
    fn penalties_change_the_choice() {
        let greedy = SamplerConfig::greedy();
        // Positive logits are divided: 2.0 / 1.1 < 1.9.
        let mut s = sampler(SamplerConfig {
            repeat_penalty: 1.1,
            ..greedy
        });
        assert_eq!(s.sample(&[2.0, 1.9], &[]), 0);
        assert_eq!(s.sample(&[2.0, 1.9], &[0]), 1);
        // Negative logits are multiplied: -1.0 * 1.1 < -1.05.
        assert_eq!(s.sample(&[-1.0, -1.05], &[0]), 1);
        // Presence counts once, frequency per occurrence.
        let mut s = sampler(SamplerConfig {
            presence_penalty: 0.2,
            ..greedy
        });
        assert_eq!(s.sample(&[1.0, 0.9], &[0, 0, 0]), 1);
        let mut s = sampler(SamplerConfig {
            frequency_penalty: 0.04,
            ..greedy
        });
        assert_eq!(s.sample(&[1.0, 0.9], &[0, 0]), 0);
        assert_eq!(s.sample(&[1.0, 0.9], &[0, 0, 0]), 1);
        // Only the last `penalty_last_n` tokens count.
        let mut s = sampler(SamplerConfig {
            repeat_penalty: 1.1,
            penalty_last_n: 2,
            ..greedy
        });
        assert_eq!(s.sample(&[2.0, 1.9], &[0, 1, 1]), 0);
        assert_eq!(s.sample(&[2.0, 1.9], &[1, 0, 0]), 1);
        // Ids in the history beyond the vocabulary are ignored.
        assert_eq!(s.sample(&[2.0, 1.9], &[7, 9]), 0);
    }

    #[test]
    fn nan_and_infinite_logits_are_handled() {
        for config in [SamplerConfig::greedy(), plain(5), SamplerConfig::default()] {
            let mut s = sampler(config);
            let nan = f32::NAN;
            assert_eq!(s.sample(&[nan, 1.0, nan], &[]), 1, "{config:?}");
            assert_eq!(s.sample(&[nan, nan], &[]), 0);
            assert_eq!(s.sample(&[f32::NEG_INFINITY, f32::NEG_INFINITY], &[]), 0);
            assert_eq!(s.sample(&[], &[]), 0);
            for _ in 0..20 {
                let id = s.sample(&[1.0, f32::INFINITY, nan, f32::INFINITY], &[]);
                assert!(id == 1 || id == 3, "{config:?}: {id}");
            }
        }
    }

    #[test]
    fn invalid_settings_are_refused_by_name() {
        for (config, name) in [
            (
                SamplerConfig {
                    temperature: -1.0,
                    ..SamplerConfig::default()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    temperature: f32::NAN,
                    ..SamplerConfig::default()
                },
                "temperature",
            ),
            (
                SamplerConfig {
                    top_p: 0.0,
                    ..SamplerConfig::default()
                },
                "top_p",
            ),
            (
                SamplerConfig {
                    min_p: 1.5,
                    ..SamplerConfig::default()
                },
                "min_p",
            ),
            (
                SamplerConfig {
                    repeat_penalty: 0.0,
                    ..SamplerConfig::default()
                },
                "repeat_penalty",
            ),
            (
                SamplerConfig {
                    presence_penalty: f32::INFINITY,
                    ..SamplerConfig::default()
                },
                "presence_penalty",
            ),
        ] {
            let err = Sampler::new(config).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
