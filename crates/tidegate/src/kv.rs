//! The native gateway's KV store: flags, the valid-code list and the FAQ artefact, kept in an
//! embedded redb database on disk. The local stand-in for Workers KV.

use std::path::Path;

use anyhow::Context;
use redb::{Database, ReadableTable, TableDefinition};

const FLAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("flags");

/// An on-disk key-value store.
pub struct Kv {
    db: Database,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kv")
    }
}

impl Kv {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Kv> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
        }
        let db = Database::create(path).with_context(|| {
            format!(
                "opening KV store {} (is another tidegate using it?)",
                path.display()
            )
        })?;
        let tx = db.begin_write()?;
        tx.open_table(FLAGS)?;
        tx.commit()?;
        Ok(Kv { db })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FLAGS)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Sets `key`.
    pub fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(FLAGS)?;
            table.insert(key, value)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets `key` only when it is absent (seeding defaults).
    pub fn put_if_absent(&self, key: &str, value: &[u8]) -> anyhow::Result<bool> {
        let tx = self.db.begin_write()?;
        let inserted = {
            let mut table = tx.open_table(FLAGS)?;
            if table.get(key)?.is_some() {
                false
            } else {
                table.insert(key, value)?;
                true
            }
        };
        tx.commit()?;
        Ok(inserted)
    }

    /// Removes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut table = tx.open_table(FLAGS)?;
            let old = table.remove(key)?;
            old.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }

    /// Every key with its value size in bytes.
    pub fn list(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(FLAGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().len()));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("tidegate-kv-{}", std::process::id()));
        let path = dir.join("kv.redb");
        {
            let kv = Kv::open(&path).unwrap();
            kv.put("tier", b"economy").unwrap();
            assert!(kv.put_if_absent("promo_codes", b"A").unwrap());
            assert!(!kv.put_if_absent("promo_codes", b"B").unwrap());
        }
        let kv = Kv::open(&path).unwrap();
        assert_eq!(kv.get("tier").unwrap().as_deref(), Some(&b"economy"[..]));
        assert_eq!(kv.get("promo_codes").unwrap().as_deref(), Some(&b"A"[..]));
        assert_eq!(kv.list().unwrap().len(), 2);
        assert!(kv.delete("tier").unwrap());
        assert!(kv.get("tier").unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
