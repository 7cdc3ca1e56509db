//! Versioned schema migrations, run at start: each backend lists its steps, numbered
//! from 1; a store whose schema is newer than this binary knows is refused (an older
//! binary started after an upgrade must not write rows it does not understand).

/// One step of a backend's schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// The store was migrated by a newer fxprelay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the state store's schema is version {found}, newer than this fxprelay knows (up to {known}): it was written by a newer release; run that release, or point state.url at another store"
)]
pub struct TooNew {
    pub found: i64,
    pub known: i64,
}

/// The steps to run on a store at `current` (0: empty).
pub fn pending(current: i64, steps: &[Migration]) -> Result<&[Migration], TooNew> {
    let known = steps.last().map_or(0, |m| m.version);
    if current > known {
        return Err(TooNew {
            found: current,
            known,
        });
    }
    let from = steps.partition_point(|m| m.version <= current);
    Ok(&steps[from..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: [Migration; 2] = [
        Migration {
            version: 1,
            sql: "a",
        },
        Migration {
            version: 2,
            sql: "b",
        },
    ];

    #[test]
    fn only_the_steps_after_the_stores_version_run() {
        assert_eq!(pending(0, &STEPS).unwrap().len(), 2);
        assert_eq!(pending(1, &STEPS).unwrap()[0].sql, "b");
        assert!(pending(2, &STEPS).unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions() {
        let e = pending(3, &STEPS).unwrap_err();
        assert_eq!(e, TooNew { found: 3, known: 2 });
        assert!(e.to_string().contains("version 3"), "{e}");
    }
}
