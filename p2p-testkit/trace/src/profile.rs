//! Named priority profiles: the serializable stand-in for a priority function.

use p2p_core::{Decision, Kind, Priority, PriorityFnRef};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A priority function that a trace can name, so a replay can rebuild it.
///
/// Its text form (used in trace headers and on the command line) is one of:
/// - `fetch-all`: [`PriorityFnRef::fetch_all`];
/// - `by-kind:<kind>=<prio>,...;default=<fetch:<prio>|later|drop>`: [`PriorityFnRef::by_kind`],
///   for example `by-kind:1=255,2=0;default=drop` (the table may be empty: `by-kind:;default=later`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PriorityProfile {
    /// Fetch every advert at [`Priority::NORMAL`].
    FetchAll,
    /// Fetch each listed kind at its priority; other kinds get `default`.
    ByKind {
        /// Kinds and their priorities (each kind at most once).
        table: Vec<(Kind, Priority)>,
        /// The decision for kinds not in the table.
        default: Decision,
    },
}

/// Why a priority profile name could not be parsed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ProfileError {
    /// The name is not one of the known profiles.
    #[error("unknown priority profile {0:?} (expected `fetch-all` or `by-kind:...;default=...`)")]
    Unknown(String),
    /// A `by-kind` profile without its `;default=` part.
    #[error("priority profile {0:?} lacks `;default=<fetch:p|later|drop>`")]
    MissingDefault(String),
    /// A table entry is not `<kind>=<prio>` with a kind in 0..=65535 and a priority in 0..=255.
    #[error("bad entry {entry:?} in priority profile: expected <kind 0-65535>=<priority 0-255>")]
    BadEntry {
        /// The entry.
        entry: String,
    },
    /// A kind listed twice.
    #[error("kind {0} listed twice in priority profile")]
    DuplicateKind(u16),
    /// The default is not `fetch:<prio>`, `later` or `drop`.
    #[error("bad default {0:?} in priority profile: expected fetch:<0-255>, later or drop")]
    BadDefault(String),
}

impl PriorityProfile {
    /// Builds the priority function this profile names.
    pub fn to_fn(&self) -> PriorityFnRef {
        match self {
            PriorityProfile::FetchAll => PriorityFnRef::fetch_all(),
            PriorityProfile::ByKind { table, default } => {
                PriorityFnRef::by_kind(table.clone(), *default)
            }
        }
    }
}

impl fmt::Display for PriorityProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriorityProfile::FetchAll => f.write_str("fetch-all"),
            PriorityProfile::ByKind { table, default } => {
                f.write_str("by-kind:")?;
                for (i, (k, p)) in table.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}={}", k.0, p.0)?;
                }
                match default {
                    Decision::Fetch(p) => write!(f, ";default=fetch:{}", p.0),
                    Decision::Later => f.write_str(";default=later"),
                    Decision::Drop => f.write_str(";default=drop"),
                }
            }
        }
    }
}

impl FromStr for PriorityProfile {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, ProfileError> {
        if s == "fetch-all" {
            return Ok(PriorityProfile::FetchAll);
        }
        let Some(rest) = s.strip_prefix("by-kind:") else {
            return Err(ProfileError::Unknown(s.to_owned()));
        };
        let Some((entries, default)) = rest.split_once(";default=") else {
            return Err(ProfileError::MissingDefault(s.to_owned()));
        };
        let mut table: Vec<(Kind, Priority)> = Vec::new();
        for entry in entries.split(',').filter(|e| !e.is_empty()) {
            let bad = || ProfileError::BadEntry {
                entry: entry.to_owned(),
            };
            let (k, p) = entry.split_once('=').ok_or_else(bad)?;
            let kind = Kind(k.trim().parse::<u16>().map_err(|_| bad())?);
            let prio = Priority(p.trim().parse::<u8>().map_err(|_| bad())?);
            if table.iter().any(|(k, _)| *k == kind) {
                return Err(ProfileError::DuplicateKind(kind.0));
            }
            table.push((kind, prio));
        }
        let default = match default {
            "later" => Decision::Later,
            "drop" => Decision::Drop,
            d => {
                let p = d
                    .strip_prefix("fetch:")
                    .and_then(|p| p.parse::<u8>().ok())
                    .ok_or_else(|| ProfileError::BadDefault(d.to_owned()))?;
                Decision::Fetch(Priority(p))
            }
        };
        Ok(PriorityProfile::ByKind { table, default })
    }
}

impl Serialize for PriorityProfile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PriorityProfile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2p_core::{Advert, ArtifactId, Bytes};

    fn advert(kind: u16) -> Advert {
        Advert {
            id: ArtifactId([0; 32]),
            kind: Kind(kind),
            size: 1,
            attr: Bytes::new(),
        }
    }

    #[test]
    fn by_kind_profile_round_trips_through_its_name_and_decides_by_kind() {
        let name = "by-kind:1=255,2=0;default=fetch:7";
        let p: PriorityProfile = name.parse().unwrap();
        assert_eq!(p.to_string(), name);
        let f = p.to_fn();
        assert_eq!(f.0.decide(&advert(1)), Decision::Fetch(Priority(255)));
        assert_eq!(f.0.decide(&advert(2)), Decision::Fetch(Priority(0)));
        assert_eq!(f.0.decide(&advert(3)), Decision::Fetch(Priority(7)));
        let empty: PriorityProfile = "by-kind:;default=later".parse().unwrap();
        assert_eq!(empty.to_fn().0.decide(&advert(1)), Decision::Later);
        assert_eq!(empty.to_string(), "by-kind:;default=later");
    }

    #[test]
    fn malformed_profile_names_are_typed_errors() {
        let e = |s: &str| s.parse::<PriorityProfile>().unwrap_err();
        assert_eq!(e("fetch-some"), ProfileError::Unknown("fetch-some".into()));
        assert!(matches!(e("by-kind:1=2"), ProfileError::MissingDefault(_)));
        assert!(matches!(
            e("by-kind:1=256;default=drop"),
            ProfileError::BadEntry { .. }
        ));
        assert!(matches!(
            e("by-kind:x;default=drop"),
            ProfileError::BadEntry { .. }
        ));
        assert_eq!(
            e("by-kind:1=2,1=3;default=drop"),
            ProfileError::DuplicateKind(1)
        );
        assert!(matches!(
            e("by-kind:;default=fetch:x"),
            ProfileError::BadDefault(_)
        ));
    }
}
