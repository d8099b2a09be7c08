//! The tuning record: what `moetile tune` measured, kept as JSON in the user's cache folder
//! ([`TUNING_FILE`] in the folder [`crate::ContextOptions::tuning_dir`] names).
//!
//! The file is read defensively: it is only ever a hint, so a file that cannot be read or
//! parsed, was written by another version, or holds an entry with unknown fields or values that
//! are not valid widths, paths or types is ignored (the entry, or the whole file) with a
//! warning, never an error. Saving goes through a temporary file of its own (created new, so
//! nothing else is overwritten) renamed over the record.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use moetile::tile::TileWidth;
use moetile_codegen::{ActType, Path, WeightType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AdapterId, ExpertShape, MatmulRole};
use crate::error::WgpuError;

/// The record's file name in the cache folder.
pub const TUNING_FILE: &str = "tuning.json";

/// The format version this build reads and writes; a file of another is ignored.
pub const TUNING_VERSION: u32 = 1;

/// The tile widths measured for one routed-expert matmul on one adapter and path.
#[derive(Debug, Clone, PartialEq)]
pub struct TunedEntry {
    /// Where it was measured.
    pub adapter: AdapterId,
    /// The matmul path measured.
    pub path: Path,
    /// The matmul.
    pub shape: ExpertShape,
    /// The batch lengths T timed.
    pub tokens: Vec<usize>,
    /// Per width: the median milliseconds at each of `tokens`, summed.
    pub ms: Vec<(TileWidth, f64)>,
    /// The fastest width: the cap that matmul wants alone.
    pub cap: TileWidth,
}

/// A matmul path whose kernel gave wrong results on an adapter: contexts on it do not run it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnusablePath {
    /// Where it failed.
    pub adapter: AdapterId,
    /// The path.
    pub path: Path,
    /// The kernel that failed.
    pub kernel: String,
    /// How it failed (the check's message).
    pub reason: String,
}

/// The tuning record: tuned widths and unusable paths, of any number of adapters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TuningRecord {
    /// Tuned widths, one per (adapter, path, shape).
    pub entries: Vec<TunedEntry>,
    /// Paths found wrong, one per (adapter, path).
    pub unusable: Vec<UnusablePath>,
    /// What was ignored while loading, one line each (the caller decides whether to print).
    pub warnings: Vec<String>,
}

/// The file's top level; entries are read one by one, so one bad entry costs only itself.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTop<E, U> {
    version: u32,
    entries: Vec<E>,
    unusable: Vec<U>,
}

/// [`TunedEntry`] as the file spells it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    adapter: String,
    api: String,
    driver: String,
    path: String,
    role: String,
    weight: String,
    act: String,
    rows: usize,
    cols: usize,
    n_experts: usize,
    n_used: usize,
    tokens: Vec<usize>,
    /// Width (tokens) -> milliseconds.
    ms: BTreeMap<String, f64>,
    cap: usize,
}

/// [`UnusablePath`] as the file spells it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUnusable {
    adapter: String,
    api: String,
    driver: String,
    path: String,
    kernel: String,
    reason: String,
}

fn parse_path(name: &str) -> Result<Path, String> {
    Path::ALL
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| format!("unknown path {name:?}"))
}

fn parse_width(tokens: usize) -> Result<TileWidth, String> {
    TileWidth::from_tokens(tokens).ok_or_else(|| format!("{tokens} is not a tile width"))
}

fn parse_act(name: &str) -> Result<ActType, String> {
    ActType::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| format!("unknown activation type {name:?}"))
}

impl TryFrom<FileEntry> for TunedEntry {
    type Error = String;

    fn try_from(e: FileEntry) -> Result<TunedEntry, String> {
        let mut ms =
            e.ms.iter()
                .map(|(w, ms)| {
                    let width = w
                        .parse()
                        .map_err(|_| format!("{w:?} is not a tile width"))
                        .and_then(parse_width)?;
                    if !(ms.is_finite() && *ms >= 0.0) {
                        return Err(format!("{ms} ms for width {w} is not a time"));
                    }
                    Ok((width, *ms))
                })
                .collect::<Result<Vec<_>, String>>()?;
        ms.sort_by_key(|(w, _)| *w);
        if ms.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return Err("a width is timed twice".to_string());
        }
        let cap = parse_width(e.cap)?;
        if !ms.iter().any(|(w, _)| *w == cap) {
            return Err(format!("cap {cap} was not measured"));
        }
        if e.tokens.is_empty() || e.tokens.contains(&0) {
            return Err(format!("token counts {:?} are not batch lengths", e.tokens));
        }
        let shape = ExpertShape {
            role: MatmulRole::parse(&e.role)?,
            weight: WeightType::parse(&e.weight)
                .ok_or_else(|| format!("unknown weight type {:?}", e.weight))?,
            act: parse_act(&e.act)?,
            rows: e.rows,
            cols: e.cols,
            n_experts: e.n_experts,
            n_used: e.n_used,
        };
        Ok(TunedEntry {
            adapter: AdapterId {
                name: e.adapter,
                api: e.api,
                driver: e.driver,
            },
            path: parse_path(&e.path)?,
            shape,
            tokens: e.tokens,
            ms,
            cap,
        })
    }
}

impl From<&TunedEntry> for FileEntry {
    fn from(e: &TunedEntry) -> FileEntry {
        FileEntry {
            adapter: e.adapter.name.clone(),
            api: e.adapter.api.clone(),
            driver: e.adapter.driver.clone(),
            path: e.path.name().to_string(),
            role: e.shape.role.name().to_string(),
            weight: e.shape.weight.name().to_string(),
            act: e.shape.act.name().to_string(),
            rows: e.shape.rows,
            cols: e.shape.cols,
            n_experts: e.shape.n_experts,
            n_used: e.shape.n_used,
            tokens: e.tokens.clone(),
            ms: e.ms.iter().map(|(w, ms)| (w.to_string(), *ms)).collect(),
            cap: e.cap.tokens(),
        }
    }
}

impl TryFrom<FileUnusable> for UnusablePath {
    type Error = String;

    fn try_from(u: FileUnusable) -> Result<UnusablePath, String> {
        Ok(UnusablePath {
            adapter: AdapterId {
                name: u.adapter,
                api: u.api,
                driver: u.driver,
            },
            path: parse_path(&u.path)?,
            kernel: u.kernel,
            reason: u.reason,
        })
    }
}

impl From<&UnusablePath> for FileUnusable {
    fn from(u: &UnusablePath) -> FileUnusable {
        FileUnusable {
            adapter: u.adapter.name.clone(),
            api: u.adapter.api.clone(),
            driver: u.adapter.driver.clone(),
            path: u.path.name().to_string(),
            kernel: u.kernel.clone(),
            reason: u.reason.clone(),
        }
    }
}

/// Each item of `values` read as `F` and made into `T`; those that fail are skipped with a
/// warning naming their index and why.
fn read_items<F, T>(values: Vec<Value>, what: &str, warn: &mut impl FnMut(&str, String)) -> Vec<T>
where
    F: serde::de::DeserializeOwned,
    T: TryFrom<F, Error = String>,
{
    values
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| {
            match serde_json::from_value::<F>(v)
                .map_err(|e| e.to_string())
                .and_then(T::try_from)
            {
                Ok(item) => Some(item),
                Err(why) => {
                    warn(&format!("{what} {i} of "), why);
                    None
                }
            }
        })
        .collect()
}

impl TuningRecord {
    /// The record in `dir` when there is a folder, else an empty one; its warnings go to
    /// stderr (what every reader of the user's record does with them).
    pub fn load_or_default(dir: Option<&FsPath>) -> TuningRecord {
        let record = dir.map(TuningRecord::load).unwrap_or_default();
        for warning in &record.warnings {
            eprintln!("warning: {warning}");
        }
        record
    }

    /// The record in `dir`: empty when there is none; what cannot be used is left out, with a
    /// line in [`TuningRecord::warnings`].
    pub fn load(dir: &FsPath) -> TuningRecord {
        let file = dir.join(TUNING_FILE);
        let mut warnings = Vec::new();
        let mut warn = |what: &str, why: String| {
            warnings.push(format!(
                "ignoring {what}the tuning record {}: {why} (run `moetile tune` to measure again)",
                file.display()
            ))
        };
        let text = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return TuningRecord::default(),
            Err(e) => {
                warn("", format!("unreadable: {e}"));
                return TuningRecord {
                    warnings,
                    ..TuningRecord::default()
                };
            }
        };
        let top = serde_json::from_slice::<Value>(&text)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| match v.get("version").and_then(Value::as_u64) {
                Some(v) if v == u64::from(TUNING_VERSION) => Ok(v),
                Some(other) => Err(format!(
                    "written as version {other}, this moetile reads version {TUNING_VERSION}"
                )),
                None => Err("no version field".to_string()),
            })
            .and_then(|_| {
                serde_json::from_slice::<FileTop<Value, Value>>(&text)
                    .map_err(|e| format!("not a tuning record: {e}"))
            });
        let top = match top {
            Ok(top) => top,
            Err(why) => {
                warn("", why);
                return TuningRecord {
                    warnings,
                    ..TuningRecord::default()
                };
            }
        };
        let entries = read_items::<FileEntry, TunedEntry>(top.entries, "entry", &mut warn);
        let unusable =
            read_items::<FileUnusable, UnusablePath>(top.unusable, "unusable path", &mut warn);
        TuningRecord {
            entries,
            unusable,
            warnings,
        }
    }

    /// The record with `other`'s measurements over its own: an entry replaces the one of the
    /// same adapter, path and shape; the unusable paths of each (adapter, path) `tested` are
    /// replaced by `other`'s (a path that passes again is usable again).
    pub fn merge(&mut self, other: &TuningRecord, tested: &[(AdapterId, Path)]) {
        for entry in &other.entries {
            self.entries.retain(|e| {
                (&e.adapter, e.path, e.shape) != (&entry.adapter, entry.path, entry.shape)
            });
            self.entries.push(entry.clone());
        }
        self.unusable
            .retain(|u| !tested.iter().any(|(a, p)| (a, *p) == (&u.adapter, u.path)));
        self.unusable.extend(other.unusable.iter().cloned());
    }

    /// The record's own data for `adapter` alone.
    pub fn of_adapter(&self, adapter: &AdapterId) -> TuningRecord {
        TuningRecord {
            entries: self
                .entries
                .iter()
                .filter(|e| &e.adapter == adapter)
                .cloned()
                .collect(),
            unusable: self
                .unusable
                .iter()
                .filter(|u| &u.adapter == adapter)
                .cloned()
                .collect(),
            warnings: Vec::new(),
        }
    }

    /// Writes the record to [`TUNING_FILE`] in `dir` (created if missing) through a temporary
    /// file renamed over it; returns the file's path.
    pub fn save(&self, dir: &FsPath) -> Result<PathBuf, WgpuError> {
        let file = dir.join(TUNING_FILE);
        let io = |what: &str, path: &FsPath, source: std::io::Error| WgpuError::TuningRecord {
            what: format!("{what} {}", path.display()),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating the folder", dir, e))?;
        let top = FileTop {
            version: TUNING_VERSION,
            entries: self.entries.iter().map(FileEntry::from).collect(),
            unusable: self.unusable.iter().map(FileUnusable::from).collect(),
        };
        let json = serde_json::to_string_pretty(&top).expect("the record serializes");
        let tmp = dir.join(format!("{TUNING_FILE}.{}.tmp", std::process::id()));
        // `create_new`: a file already there (not ours) is an error, never overwritten.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io("creating", &tmp, e))?;
        let written = {
            use std::io::Write;
            f.write_all(json.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.sync_all())
        };
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("writing", &tmp, e));
        }
        std::fs::rename(&tmp, &file).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("replacing", &file, e)
        })?;
        Ok(file)
    }
}
